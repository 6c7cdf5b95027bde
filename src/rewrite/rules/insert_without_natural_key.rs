//! `insert-without-natural-key`: an INSERT into a table with a natural key and no conflict
//! handling, partition overwrite or MERGE. Every retry appends the rows again.

use super::{Conflict, FileContext, Hit, cleared_before, column_list};
use crate::keys::KeySource;
use crate::rewrite::Dialect;
use crate::rewrite::edit::Edit;

pub const NAME: &str = "insert-without-natural-key";

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    for view in super::inserts(cx) {
        if view.conflict != Conflict::None
            || cleared_before(cx, &view).is_some()
            || super::anti_join_on_key(cx, &view)
            || super::partition_append::partition_filter(cx, &view).is_some()
        {
            continue;
        }
        let target = &view.target;
        let at = view.stmt.range.start;
        let Some(keys) = view.keys.filter(|k| !k.natural_key.is_empty()) else {
            out.push(Hit {
                rule: NAME,
                at,
                message: format!(
                    "A retry of this INSERT appends every row to {target} again. {}.",
                    super::unknown_key(target)
                ),
                fix: "Declare the natural key; then natkey adds ON CONFLICT (key) DO NOTHING \
                      (or a MERGE where the engine does not enforce keys)."
                    .to_string(),
                edits: Vec::new(),
            });
            continue;
        };
        let key = keys.natural_key.join(", ");
        let retry = if keys.source == KeySource::Declared {
            format!(
                "A retry of this INSERT fails on {target}'s unique key ({key}), so the task can \
                 never be re-run after a partial failure."
            )
        } else {
            format!(
                "A retry inserts these rows into {target} again, one more copy of every \
                 ({key}) each time{}.",
                if keys.surrogate_key.is_empty() {
                    String::new()
                } else {
                    format!(
                        " — under new surrogate keys ({}), so nothing complains",
                        keys.surrogate_key.join(", ")
                    )
                }
            )
        };
        let list = column_list(cx, &keys.natural_key);
        let (fix, edits) = match cx.dialect {
            Dialect::Postgres | Dialect::Sqlite if view.insert.returning.is_none() => {
                // SQLite reads `FROM t ON CONFLICT` as a join constraint unless the SELECT
                // has a WHERE: its documentation asks for `WHERE true`.
                let ambiguous = cx.dialect == Dialect::Sqlite
                    && view.select().is_some_and(|s| {
                        !s.from.is_empty()
                            && s.selection.is_none()
                            && s.having.is_none()
                            && matches!(&s.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty())
                    })
                    && view
                        .insert
                        .source
                        .as_deref()
                        .is_some_and(|q| q.order_by.is_none() && q.limit_clause.is_none());
                let guard = if ambiguous { " WHERE true" } else { "" };
                let clause = format!("{guard} ON CONFLICT ({list}) DO NOTHING");
                (
                    format!(
                        "Added `{}` so that a retry keeps the rows already loaded. It needs a \
                         unique constraint on ({list}) (`natkey plan` writes it); use DO UPDATE \
                         SET col = EXCLUDED.col if the task should refresh them.",
                        clause.trim()
                    ),
                    vec![Edit::insert(view.stmt.range.end, clause)],
                )
            }
            Dialect::MySql => {
                // Qualified: in INSERT ... SELECT a bare name would be ambiguous.
                let first = format!(
                    "{}.{}",
                    cx.text_of(view.name),
                    cx.dialect.quote_ident(&keys.natural_key[0])
                );
                let clause = format!(" ON DUPLICATE KEY UPDATE {first} = {first}");
                (
                    format!(
                        "Added `{}`, a no-op on a row that is already there. It needs a unique \
                         key on ({list}) (`natkey plan` writes it).",
                        clause.trim()
                    ),
                    vec![Edit::insert(view.stmt.range.end, clause)],
                )
            }
            Dialect::Postgres | Dialect::Sqlite => (
                format!(
                    "Add ON CONFLICT ({list}) DO NOTHING before RETURNING (natkey does not \
                     rewrite statements with RETURNING); it needs a unique constraint on \
                     ({list})."
                ),
                Vec::new(),
            ),
            _ => (
                format!(
                    "{} does not enforce unique keys: load with MERGE INTO {target} USING (the \
                     rows, deduplicated on ({list})) ON the key, WHEN NOT MATCHED THEN INSERT; \
                     or delete the rows' partition first in the same transaction.",
                    cx.dialect
                ),
                Vec::new(),
            ),
        };
        out.push(Hit {
            rule: NAME,
            at,
            message: retry,
            fix,
            edits,
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::rewrite::Dialect;
    use crate::rewrite::test_support::*;

    const APPEND: &str = "-- load the day's orders\n\
        INSERT INTO sales.daily_orders (order_id, line_item_id, amount_cents)\n\
        SELECT order_id, line_item_id, amount_cents\n  FROM staging.orders;\n";

    #[test]
    fn a_plain_append_is_reported_and_gets_on_conflict() {
        let report = run(APPEND);
        assert_eq!(rules_of(&report), [super::NAME]);
        let f = &report.findings[0];
        assert_eq!((f.line, f.column), (2, 1));
        assert!(f.message.contains("again"), "{}", f.message);
        let text = rewritten(&report);
        insta::assert_snapshot!(text, @r#"
        -- load the day's orders
        INSERT INTO sales.daily_orders (order_id, line_item_id, amount_cents)
        SELECT order_id, line_item_id, amount_cents
          FROM staging.orders ON CONFLICT ("order_id", "line_item_id") DO NOTHING;
        "#);
    }

    #[test]
    fn sqlite_gets_where_true_so_on_conflict_is_not_read_as_a_join() {
        let text = rewritten(&run_in(APPEND, Dialect::Sqlite));
        assert!(
            text.contains("FROM staging.orders WHERE true ON CONFLICT (\"order_id\", \"line_item_id\") DO NOTHING;"),
            "{text}"
        );
    }

    #[test]
    fn mysql_gets_a_no_op_on_duplicate_key_update() {
        let report = run_in(APPEND, Dialect::MySql);
        let text = rewritten(&report);
        assert!(
            text.contains(
                "FROM staging.orders ON DUPLICATE KEY UPDATE \
                 sales.daily_orders.`order_id` = sales.daily_orders.`order_id`;"
            ),
            "{text}"
        );
    }

    #[test]
    fn engines_without_enforced_keys_get_the_merge_shape_and_no_rewrite() {
        let report = run_in(APPEND, Dialect::Snowflake);
        assert_eq!(rules_of(&report), [super::NAME]);
        assert!(report.findings[0].fix.contains("MERGE"), "{report:#?}");
        assert_eq!(report.rewritten, None);
    }

    #[test]
    fn returning_gets_advice_instead_of_a_rewrite() {
        let report = run(
            "INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 1) \
                          RETURNING order_id;",
        );
        assert_eq!(rules_of(&report), [super::NAME]);
        assert!(
            report.findings[0].fix.contains("before RETURNING"),
            "{report:#?}"
        );
        assert_eq!(report.rewritten, None);
    }

    #[test]
    fn an_unknown_key_is_said_rather_than_guessed() {
        let report = run("INSERT INTO audit_log (msg) VALUES ('x');");
        assert_eq!(rules_of(&report), [super::NAME]);
        assert!(
            report.findings[0]
                .message
                .contains("does not know the natural key")
        );
        assert_eq!(report.rewritten, None);
    }

    #[test]
    fn a_delete_or_a_read_that_does_not_cover_the_load_guards_nothing() {
        for (sql, rule) in [
            // NOT EXISTS on part of the key: a second line item of a loaded order is skipped,
            // a NULL-free retry of a new one is not.
            (
                "INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
                 SELECT s.order_id, s.line_item_id FROM s WHERE NOT EXISTS (\n\
                 SELECT 1 FROM sales.daily_orders d WHERE d.order_id = s.order_id);",
                super::NAME,
            ),
            // Reading the target is not an anti-join.
            (
                "INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
                 SELECT s.order_id, s.line_item_id FROM s\n\
                 WHERE s.order_id > (SELECT avg(order_id) FROM sales.daily_orders);",
                super::NAME,
            ),
            // Deleting other rows first replaces nothing.
            (
                "DELETE FROM sales.daily_orders WHERE status = 'void';\n\
                 INSERT INTO sales.daily_orders (order_id, line_item_id) SELECT order_id, line_item_id FROM s;",
                super::NAME,
            ),
            // Deleting another day than the one loaded.
            (
                "BEGIN;\nDELETE FROM sales.daily_orders WHERE order_date = '2024-01-02';\n\
                 INSERT INTO sales.daily_orders SELECT * FROM s WHERE order_date = '2024-01-01';\nCOMMIT;",
                "partition-append",
            ),
        ] {
            let report = run(sql);
            assert_eq!(rules_of(&report), [rule], "{sql}\n{report:#?}");
        }
    }

    #[test]
    fn idempotent_shapes_are_not_reported() {
        for sql in [
            "INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 1) \
             ON CONFLICT (order_id, line_item_id) DO NOTHING;",
            "TRUNCATE sales.daily_orders;\nINSERT INTO sales.daily_orders SELECT * FROM s;",
            "BEGIN;\nDELETE FROM sales.daily_orders WHERE order_date = '2024-01-01';\n\
             INSERT INTO sales.daily_orders SELECT * FROM s WHERE order_date = '2024-01-01';\nCOMMIT;",
            "CREATE TEMP TABLE stage AS SELECT 1 AS a;\nINSERT INTO stage SELECT 2;",
            "INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
             SELECT s.order_id, s.line_item_id FROM s WHERE NOT EXISTS (\n\
             SELECT 1 FROM sales.daily_orders d WHERE d.order_id = s.order_id\n\
             AND d.line_item_id IS NOT DISTINCT FROM s.line_item_id);",
            "INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
             SELECT s.order_id, s.line_item_id FROM s WHERE (s.order_id, s.line_item_id) NOT IN (\n\
             SELECT order_id, line_item_id FROM sales.daily_orders);",
            "INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
             SELECT s.order_id, s.line_item_id FROM s LEFT JOIN sales.daily_orders d\n\
             ON d.order_id = s.order_id AND d.line_item_id = s.line_item_id WHERE d.order_id IS NULL;",
            "INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
             SELECT order_id, line_item_id FROM s EXCEPT SELECT order_id, line_item_id FROM sales.daily_orders;",
            "DELETE FROM sales.daily_orders WHERE (order_id, line_item_id) IN (SELECT order_id, line_item_id FROM s);\n\
             INSERT INTO sales.daily_orders (order_id, line_item_id) SELECT order_id, line_item_id FROM s;",
            "CREATE OR REPLACE TABLE daily AS SELECT * FROM s;",
            "MERGE INTO sales.daily_orders d USING s ON d.order_id = s.order_id \
             AND d.line_item_id = s.line_item_id WHEN NOT MATCHED THEN INSERT (order_id, \
             line_item_id) VALUES (s.order_id, s.line_item_id);",
        ] {
            let report = run(sql);
            assert!(
                !rules_of(&report).contains(&super::NAME),
                "{sql}\n{report:#?}"
            );
            assert!(report.errors.is_empty(), "{sql}\n{report:#?}");
        }
        let report = run_in(
            "INSERT OVERWRITE TABLE daily PARTITION (dt = '2024-01-01') SELECT a FROM s;",
            Dialect::Databricks,
        );
        assert!(report.idempotent, "{report:#?}");
    }
}
