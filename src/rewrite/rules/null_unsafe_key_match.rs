//! `null-unsafe-key-match`: a MERGE (or an anti-join guarding an INSERT) that matches rows on
//! a nullable natural-key column with `=`. `NULL = NULL` is not true, so a row whose key holds a
//! NULL never matches the copy already loaded, and every retry inserts it again. The rewrite
//! uses the dialect's null-safe equality ([`crate::dialect::Dialect::null_safe_eq`]).
//!
//! Also a JOIN of the target in the INSERT's source (`LEFT JOIN target t ON t.k = s.k WHERE
//! t.k IS NULL`). Nullability comes from the catalog (`--warehouse`) or `nullable = [...]` in a
//! natkey.toml `[[table]]`; without either the rule stays silent rather than guess.

use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, Query, SetExpr, Statement, TableFactor,
};

use super::{FileContext, Hit, same_table};
use crate::rewrite::TableKeys;
use crate::rewrite::edit::Edit;

pub const NAME: &str = "null-unsafe-key-match";

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    for stmt in &cx.statements {
        match &stmt.ast {
            Statement::Merge(m) => {
                let TableFactor::Table { name, .. } = &m.table else {
                    continue;
                };
                if let Some(keys) = cx.keys.find(&cx.table(name)) {
                    check_predicate(cx, &m.on, keys, out);
                }
            }
            Statement::Insert(_) => {}
            _ => {}
        }
    }
    for view in super::inserts(cx) {
        let (Some(keys), Some(query)) = (view.keys, view.insert.source.as_deref()) else {
            continue;
        };
        if let Some(select) = view.select() {
            for join in select.from.iter().flat_map(|t| &t.joins) {
                let on_target = matches!(&join.relation, TableFactor::Table { name, .. }
                    if same_table(&cx.table(name), &view.target));
                let constraint = match &join.join_operator {
                    JoinOperator::Join(c)
                    | JoinOperator::Inner(c)
                    | JoinOperator::Left(c)
                    | JoinOperator::LeftOuter(c)
                    | JoinOperator::LeftAnti(c)
                    | JoinOperator::Anti(c) => Some(c),
                    _ => None,
                };
                if let (true, Some(JoinConstraint::On(on))) = (on_target, constraint) {
                    check_predicate(cx, on, keys, out);
                }
            }
        }
        for sub in anti_join_subqueries(query) {
            let SetExpr::Select(s) = sub.body.as_ref() else {
                continue;
            };
            let reads = s.from.iter().any(|t| match &t.relation {
                TableFactor::Table { name, .. } => same_table(&cx.table(name), &view.target),
                _ => false,
            });
            if let (true, Some(selection)) = (reads, &s.selection) {
                check_predicate(cx, selection, keys, out);
            }
        }
    }
}

/// The subqueries of `NOT EXISTS (...)` in a query's WHERE.
fn anti_join_subqueries(query: &Query) -> Vec<&Query> {
    let mut out = Vec::new();
    if let SetExpr::Select(s) = query.body.as_ref()
        && let Some(w) = &s.selection
    {
        collect_not_exists(w, &mut out);
    }
    out
}

fn collect_not_exists<'a>(e: &'a Expr, out: &mut Vec<&'a Query>) {
    match e {
        Expr::Exists {
            subquery,
            negated: true,
        } => out.push(subquery),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            collect_not_exists(left, out);
            collect_not_exists(right, out);
        }
        Expr::Nested(inner) => collect_not_exists(inner, out),
        _ => {}
    }
}

fn check_predicate(cx: &FileContext, predicate: &Expr, keys: &TableKeys, out: &mut Vec<Hit>) {
    match predicate {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            check_predicate(cx, left, keys, out);
            check_predicate(cx, right, keys, out);
        }
        Expr::Nested(inner) => check_predicate(cx, inner, keys, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let (Some(l), Some(r)) = (super::column_name(left), super::column_name(right)) else {
                return;
            };
            let column = if keys.is_key(&l) && keys.is_nullable(&l) {
                l
            } else if keys.is_key(&r) && keys.is_nullable(&r) {
                r
            } else {
                return;
            };
            let (left_sql, right_sql) = (cx.text_of(left.as_ref()), cx.text_of(right.as_ref()));
            let range = cx.extent(predicate);
            if left_sql.is_empty() || right_sql.is_empty() || range.is_empty() {
                return;
            }
            let null_safe = cx.dialect.null_safe_eq(left_sql, right_sql);
            out.push(Hit {
                rule: NAME,
                at: cx.extent(predicate).start,
                message: format!(
                    "{column} is a nullable natural-key column of {} matched with `=`: a row \
                     whose {column} is NULL never matches the copy already there, so every \
                     retry inserts it again.",
                    keys.table
                ),
                fix: format!(
                    "Match NULL keys as equal with `{null_safe}` (two NULL keys are the same \
                     key), or make {column} NOT NULL."
                ),
                edits: vec![Edit::replace(range, null_safe)],
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::rewrite::Dialect;
    use crate::rewrite::test_support::*;

    #[test]
    fn a_merge_on_a_nullable_key_gets_null_safe_equality() {
        let sql = "MERGE INTO sales.daily_orders d\n\
             USING (SELECT DISTINCT order_id, line_item_id FROM s) src\n\
             ON d.order_id = src.order_id AND d.line_item_id = src.line_item_id\n\
             WHEN NOT MATCHED THEN INSERT (order_id, line_item_id) VALUES (src.order_id, src.line_item_id);";
        let report = run(sql);
        assert_eq!(rules_of(&report), [super::NAME]);
        let text = rewritten(&report);
        assert!(
            text.contains("ON d.order_id = src.order_id AND d.line_item_id IS NOT DISTINCT FROM src.line_item_id\n"),
            "{text}"
        );
        let text = rewritten(&run_in(sql, Dialect::MySql));
        assert!(
            text.contains("d.line_item_id <=> src.line_item_id"),
            "{text}"
        );
        // Redshift has no IS NOT DISTINCT FROM.
        let text = rewritten(&run_in(sql, Dialect::Redshift));
        assert!(
            text.contains(
                "AND (d.line_item_id = src.line_item_id OR (d.line_item_id IS NULL AND \
                 src.line_item_id IS NULL))\n"
            ),
            "{text}"
        );
        assert!(!text.contains("DISTINCT FROM"), "{text}");
    }

    #[test]
    fn an_anti_join_on_a_nullable_key_is_reported() {
        let report = run("INSERT INTO daily_totals (day, total)\n\
             SELECT s.day, s.total FROM s WHERE NOT EXISTS (\n\
               SELECT 1 FROM daily_totals t WHERE t.day = s.day);");
        assert_eq!(rules_of(&report), [super::NAME]);
        assert!(rewritten(&report).contains("t.day IS NOT DISTINCT FROM s.day"));
    }

    #[test]
    fn a_left_anti_join_on_a_nullable_key_is_reported() {
        let report = run("INSERT INTO daily_totals (day, total)\n\
             SELECT s.day, s.total FROM s LEFT JOIN daily_totals t ON t.day = s.day\n\
             WHERE t.day IS NULL;");
        assert_eq!(rules_of(&report), [super::NAME], "{report:#?}");
        assert!(
            rewritten(&report).contains("ON t.day IS NOT DISTINCT FROM s.day\n"),
            "{report:#?}"
        );
    }

    #[test]
    fn natkey_toml_declares_nullable_columns() {
        let config = crate::config::Config::parse(
            "[[table]]\nname = \"events\"\nnatural_key = [\"device_id\", \"at\"]\n\
             nullable = [\"device_id\"]\n",
            std::path::Path::new("natkey.toml"),
        )
        .expect("valid");
        let mut keys = crate::rewrite::KnownKeys::new();
        keys.add_config(&config);
        let sql = "MERGE INTO events e USING (SELECT DISTINCT device_id, at FROM s) src\n\
             ON e.device_id = src.device_id AND e.at = src.at\n\
             WHEN NOT MATCHED THEN INSERT (device_id, at) VALUES (src.device_id, src.at);";
        let report = crate::rewrite::analyze("task.sql", sql, Dialect::Postgres, &keys);
        assert_eq!(rules_of(&report), [super::NAME], "{report:#?}");
        assert!(report.findings[0].message.contains("device_id"));
        // Without the setting natkey does not guess.
        let report = crate::rewrite::analyze(
            "task.sql",
            sql,
            Dialect::Postgres,
            &crate::rewrite::KnownKeys::new(),
        );
        assert!(!rules_of(&report).contains(&super::NAME), "{report:#?}");
    }

    #[test]
    fn non_nullable_keys_and_null_safe_matches_are_fine() {
        let report = run(
            "MERGE INTO sales.daily_orders d USING (SELECT DISTINCT order_id, \
             line_item_id FROM s) src ON d.order_id = src.order_id AND d.line_item_id IS NOT \
             DISTINCT FROM src.line_item_id WHEN NOT MATCHED THEN INSERT (order_id, \
             line_item_id) VALUES (src.order_id, src.line_item_id);",
        );
        assert!(report.idempotent, "{report:#?}");
    }
}
