//! `upsert-duplicate-source`: an upsert (`ON CONFLICT DO UPDATE`) or a MERGE whose source can
//! hold the same key twice. PostgreSQL then fails with "ON CONFLICT DO UPDATE command cannot
//! affect row a second time", Snowflake with "Duplicate row detected during DML action" (or,
//! worse, picks one row arbitrarily): a retry is not guaranteed to end where the first run did.

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, Query, SetExpr, Statement, TableFactor, With, visit_expressions,
};

use super::{Conflict, FileContext, Hit};
use crate::config::SurvivorRule;
use crate::rewrite::Dialect;
use crate::rewrite::edit::Edit;

pub const NAME: &str = "upsert-duplicate-source";

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    for view in super::inserts(cx) {
        let Conflict::Columns {
            columns,
            do_update: true,
        } = &view.conflict
        else {
            continue;
        };
        let Some(query) = view.insert.source.as_deref() else {
            continue;
        };
        let key_items: Vec<&Expr> = columns
            .iter()
            .filter_map(|c| view.values_for(c).first().copied())
            .collect();
        if deduplicated(query) || values_are_distinct(cx, query, &view.columns, columns) {
            continue;
        }
        let message = format!(
            "The rows this upsert reads can hold the same ({}) twice: PostgreSQL then aborts \
             with \"ON CONFLICT DO UPDATE command cannot affect row a second time\", so the task \
             fails on exactly the data a retry would repeat.",
            columns.join(", ")
        );
        let select = view.select();
        // Which duplicate the upsert keeps must not be left to chance, or a retry over the same
        // source can keep another row: ORDER BY the key, then the survivor rule when known.
        let survivor = view
            .keys
            .and_then(|k| k.survivor.as_ref())
            .and_then(|rule| {
                let (column, direction) = match rule {
                    SurvivorRule::Latest(c) => (c, "DESC NULLS LAST"),
                    SurvivorRule::Earliest(c) => (c, "ASC NULLS LAST"),
                    SurvivorRule::LowestSurrogate => return None,
                };
                let expr = view.values_for(column).first().map(|e| cx.text_of(*e))?;
                (!expr.is_empty()).then(|| (format!("{expr} {direction}"), rule))
            });
        let rewrite = match (cx.dialect, select) {
            (Dialect::Postgres, Some(s))
                if s.distinct.is_none()
                    && query.order_by.is_none()
                    && query.limit_clause.is_none()
                    && query.fetch.is_none()
                    && key_items.len() == columns.len() =>
            {
                let exprs: Vec<&str> = key_items.iter().map(|e| cx.text_of(*e)).collect();
                let at = cx.extent(&s.select_token.0).end;
                let end = cx.extent(query).end;
                let mut order = exprs.join(", ");
                if let Some((by, _)) = &survivor {
                    order.push_str(&format!(", {by}"));
                }
                (!exprs.iter().any(|e| e.is_empty()) && at < end).then(|| {
                    vec![
                        Edit::insert(at, format!(" DISTINCT ON ({})", exprs.join(", "))),
                        Edit::insert(end, format!(" ORDER BY {order}")),
                    ]
                })
            }
            _ => None,
        };
        let kept = match &survivor {
            Some((_, rule)) => format!(
                "ORDER BY the key then the survivor rule ({rule}) chooses the row each key keeps, \
                 so every retry keeps the same one."
            ),
            None => format!(
                "natkey does not know which duplicate should win, so the row each key keeps is \
                 arbitrary: add the column that decides after the key in the ORDER BY (e.g. \
                 loaded_at DESC), or declare survivor = \"latest:COL\" for {} in natkey.toml.",
                view.target
            ),
        };
        let at = cx.extent(query).start;
        match rewrite {
            Some(edits) => out.push(Hit {
                rule: NAME,
                at,
                message,
                fix: format!(
                    "Added DISTINCT ON (key) to the source so each key is upserted once; {kept}"
                ),
                edits,
            }),
            None => out.push(Hit {
                rule: NAME,
                at,
                message,
                fix: "Deduplicate the source on the key first: GROUP BY the key, or keep \
                      ROW_NUMBER() OVER (PARTITION BY key ORDER BY <latest first>) = 1."
                    .to_string(),
                edits: Vec::new(),
            }),
        }
    }
    for stmt in &cx.statements {
        let Statement::Merge(m) = &stmt.ast else {
            continue;
        };
        if relation_deduplicated(&m.source, stmt.with.as_ref(), 0) {
            continue;
        }
        let at = cx.extent(&m.source).start;
        out.push(Hit {
            rule: NAME,
            at,
            message: "This MERGE reads a source that can hold the same key twice: Snowflake \
                      and BigQuery abort (\"Duplicate row detected during DML action\") or \
                      update the row twice, so a retry is not guaranteed to converge."
                .to_string(),
            fix: "MERGE from a deduplicated source: USING (SELECT * FROM source QUALIFY \
                  ROW_NUMBER() OVER (PARTITION BY key ORDER BY <latest first>) = 1) s, or a \
                  subquery that GROUPs BY the key."
                .to_string(),
            edits: Vec::new(),
        });
    }
}

/// True when a query yields each key at most once as far as its shape shows: GROUP BY,
/// DISTINCT, or a `ROW_NUMBER() ... = 1` filter (QUALIFY or an outer WHERE).
pub(crate) fn deduplicated(query: &Query) -> bool {
    deduplicated_in(query, None, 0)
}

/// How deep CTEs and subqueries are followed (a recursive CTE names itself).
const MAX_DEPTH: usize = 16;

/// [`deduplicated`], reading the CTEs of `outer` (or of the query itself) where a FROM names
/// one.
fn deduplicated_in(query: &Query, outer: Option<&With>, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let with = query.with.as_ref().or(outer);
    match query.body.as_ref() {
        SetExpr::Select(s) => {
            let grouped = match &s.group_by {
                GroupByExpr::Expressions(e, _) => !e.is_empty(),
                GroupByExpr::All(_) => true,
            };
            let distinct = matches!(s.distinct, Some(Distinct::Distinct | Distinct::On(_)));
            let filtered = s.qualify.is_some() || s.selection.as_ref().is_some_and(rank_filter);
            let from_dedup = s.from.len() == 1
                && s.from[0].joins.is_empty()
                && relation_deduplicated(&s.from[0].relation, with, depth + 1);
            grouped || distinct || filtered || from_dedup
        }
        SetExpr::Query(q) => deduplicated_in(q, with, depth + 1),
        SetExpr::SetOperation {
            op: sqlparser::ast::SetOperator::Union,
            set_quantifier,
            ..
        } => !matches!(set_quantifier, sqlparser::ast::SetQuantifier::All),
        _ => false,
    }
}

/// True when a FROM item yields each key at most once: a deduplicated subquery, or a CTE of
/// `with` that is one.
pub(crate) fn relation_deduplicated(
    relation: &TableFactor,
    with: Option<&With>,
    depth: usize,
) -> bool {
    match relation {
        TableFactor::Derived { subquery, .. } => deduplicated_in(subquery, with, depth + 1),
        TableFactor::Table { name, .. } if name.0.len() == 1 => {
            let Some(cte_name) = name.0[0].as_ident() else {
                return false;
            };
            with.and_then(|w| {
                w.cte_tables
                    .iter()
                    .find(|c| c.alias.name.value.eq_ignore_ascii_case(&cte_name.value))
            })
            .is_some_and(|c| deduplicated_in(&c.query, with, depth + 1))
        }
        _ => false,
    }
}

/// `rn = 1` where `rn` is named like a row number.
fn rank_filter(e: &Expr) -> bool {
    visit_expressions(e, |x| {
        if let Expr::BinaryOp { left, right, .. } = x {
            let named = |e: &Expr| {
                super::column_name(e).is_some_and(|n| {
                    let n = n.to_ascii_lowercase();
                    n == "rn" || n.contains("row_num") || n.contains("rank") || n == "r"
                })
            };
            if named(left) || named(right) {
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    })
    .is_break()
}

/// VALUES rows whose key items are distinct literals.
fn values_are_distinct(
    cx: &FileContext,
    query: &Query,
    columns: &[String],
    key: &[String],
) -> bool {
    let SetExpr::Values(values) = query.body.as_ref() else {
        return false;
    };
    let positions: Vec<usize> = key
        .iter()
        .filter_map(|k| columns.iter().position(|c| c.eq_ignore_ascii_case(k)))
        .collect();
    if positions.len() != key.len() {
        return values.rows.len() <= 1;
    }
    let mut seen = std::collections::HashSet::new();
    values.rows.iter().all(|row| {
        let k: Vec<&str> = positions
            .iter()
            .map(|&p| row.content.get(p).map(|e| cx.text_of(e)).unwrap_or(""))
            .collect();
        seen.insert(k)
    })
}

#[cfg(test)]
mod tests {
    use crate::rewrite::Dialect;
    use crate::rewrite::test_support::*;

    #[test]
    fn an_upsert_from_raw_rows_gets_distinct_on() {
        let report = run("INSERT INTO daily_totals (day, total)\n\
             SELECT e.day, e.total FROM events e\n\
             ON CONFLICT (day) DO UPDATE SET total = excluded.total;");
        assert_eq!(rules_of(&report), [super::NAME]);
        let text = rewritten(&report);
        assert!(
            text.contains(
                "SELECT DISTINCT ON (e.day) e.day, e.total FROM events e ORDER BY e.day\n"
            ),
            "{text}"
        );
        assert!(
            report.findings[0]
                .fix
                .contains("does not know which duplicate should win"),
            "{report:#?}"
        );
    }

    #[test]
    fn a_known_survivor_rule_orders_the_distinct_on() {
        let mut keys = orders_keys();
        let mut totals = crate::rewrite::TableKeys::new(
            "daily_totals".parse().expect("valid"),
            vec!["day".into()],
            crate::keys::KeySource::Config,
        );
        totals.survivor = Some(crate::config::SurvivorRule::Latest("computed_at".into()));
        let mut fresh = crate::rewrite::KnownKeys::new();
        fresh.add(totals);
        for t in keys.tables() {
            fresh.add(t.clone());
        }
        keys = fresh;
        let report = crate::rewrite::analyze(
            "task.sql",
            "INSERT INTO daily_totals (day, total, computed_at)\n\
             SELECT e.day, e.total, e.at FROM events e WHERE e.ok\n\
             ON CONFLICT (day) DO UPDATE SET total = excluded.total;",
            Dialect::Postgres,
            &keys,
        );
        assert_eq!(rules_of(&report), [super::NAME]);
        let text = report.rewritten.clone().expect("a rewrite");
        assert!(
            text.contains(
                "SELECT DISTINCT ON (e.day) e.day, e.total, e.at FROM events e WHERE e.ok ORDER BY e.day, e.at DESC NULLS LAST\n"
            ),
            "{text}"
        );
        assert!(
            report.findings[0].fix.contains("latest:computed_at"),
            "{report:#?}"
        );
    }

    #[test]
    fn a_merge_from_a_raw_table_is_reported_with_the_qualify_shape() {
        let report = run_in(
            "MERGE INTO daily_totals t USING staging s ON t.day = s.day \
             WHEN MATCHED THEN UPDATE SET total = s.total;",
            Dialect::Snowflake,
        );
        let f = report
            .findings
            .iter()
            .find(|f| f.rule == super::NAME)
            .expect("reported");
        assert!(f.fix.contains("QUALIFY"), "{report:#?}");
    }

    #[test]
    fn grouped_distinct_and_ranked_sources_are_fine() {
        for sql in [
            "INSERT INTO daily_totals (day, total) SELECT day, sum(a) FROM s GROUP BY day \
             ON CONFLICT (day) DO UPDATE SET total = excluded.total;",
            "INSERT INTO daily_totals (day, total) VALUES ('2024-01-01', 1), ('2024-01-02', 2) \
             ON CONFLICT (day) DO UPDATE SET total = excluded.total;",
            "MERGE INTO daily_totals t USING (SELECT day, total FROM (SELECT day, total, \
             row_number() OVER (PARTITION BY day ORDER BY at DESC) AS rn FROM s) x WHERE rn = 1) src \
             ON t.day IS NOT DISTINCT FROM src.day WHEN MATCHED THEN UPDATE SET total = src.total;",
        ] {
            let report = run(sql);
            assert!(report.idempotent, "{sql}\n{report:#?}");
        }
    }
}
