//! `conflict-on-surrogate`: `ON CONFLICT (id)` where `id` is generated per insert. A new value
//! never conflicts, so the clause protects nothing and retries append copies. The same for a
//! MERGE whose ON matches the target on a surrogate column, or on only part of the natural key
//! (then one logical record overwrites another, and the source's retried rows still meet more
//! than one target row).

use sqlparser::ast::{BinaryOperator, ConflictTarget, Expr, OnInsert, Statement, TableFactor};

use super::{Conflict, FileContext, Hit, column_list};
use crate::rewrite::edit::Edit;

pub const NAME: &str = "conflict-on-surrogate";

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    check_merges(cx, out);
    for view in super::inserts(cx) {
        let Conflict::Columns { columns, .. } = &view.conflict else {
            continue;
        };
        // A column is generated per insert when natkey knows it as a surrogate, when this
        // task writes a random value into it, or when the task leaves it to its default
        // while naming the natural key columns.
        let generated: Vec<&String> = columns
            .iter()
            .filter(|c| {
                view.keys.is_some_and(|k| k.is_surrogate(c))
                    || view
                        .values_for(c)
                        .iter()
                        .any(|e| super::random_surrogate_in_insert::is_random(e))
                    || (!view.columns.is_empty()
                        && !view.columns.iter().any(|x| x.eq_ignore_ascii_case(c))
                        && view.keys.is_some_and(|k| {
                            !k.natural_key.is_empty()
                                && k.natural_key
                                    .iter()
                                    .all(|n| view.columns.iter().any(|x| x.eq_ignore_ascii_case(n)))
                        }))
            })
            .collect();
        if generated.is_empty() || view.conflicts_on_key() {
            continue;
        }
        let Some(OnInsert::OnConflict(oc)) = &view.insert.on else {
            continue;
        };
        let Some(ConflictTarget::Columns {
            columns: idents, ..
        }) = &oc.conflict_target
        else {
            continue;
        };
        let (Some(first), Some(last)) = (idents.first(), idents.last()) else {
            continue;
        };
        let start = cx.span_extent(first.span).start;
        let end = cx.span_extent(last.span).end;
        let names = generated
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!(
            "ON CONFLICT ({names}) names a key generated per insert: a retried row gets a new \
             value, never conflicts, and is appended as a copy."
        );
        match view.keys.filter(|k| !k.natural_key.is_empty()) {
            Some(keys) if start < end => out.push(Hit {
                rule: NAME,
                at: start,
                message,
                fix: format!(
                    "Conflict on the natural key ({}) instead; it needs a unique constraint on \
                     it (`natkey plan` writes it).",
                    keys.natural_key.join(", ")
                ),
                edits: vec![Edit::replace(
                    start..end,
                    column_list(cx, &keys.natural_key),
                )],
            }),
            _ => out.push(Hit {
                rule: NAME,
                at: start,
                message,
                fix: format!(
                    "Conflict on the natural key instead. {}.",
                    super::unknown_key(&view.target)
                ),
                edits: Vec::new(),
            }),
        }
    }
}

/// A MERGE must match on exactly the natural key.
fn check_merges(cx: &FileContext, out: &mut Vec<Hit>) {
    for stmt in &cx.statements {
        let Statement::Merge(m) = &stmt.ast else {
            continue;
        };
        let TableFactor::Table { name, alias, .. } = &m.table else {
            continue;
        };
        let target = cx.table(name);
        let Some(keys) = cx.keys.find(&target) else {
            continue;
        };
        let qualifier = alias
            .as_ref()
            .map(|a| a.name.value.clone())
            .unwrap_or_else(|| target.name.name.clone());
        let mut matched: Vec<String> = Vec::new();
        target_columns_matched(&m.on, &qualifier, &mut matched);
        if matched.is_empty() {
            continue;
        }
        let surrogate: Vec<&String> = matched.iter().filter(|c| keys.is_surrogate(c)).collect();
        let missing: Vec<&String> = keys
            .natural_key
            .iter()
            .filter(|k| !matched.iter().any(|c| c.eq_ignore_ascii_case(k)))
            .collect();
        let message = if !surrogate.is_empty() {
            format!(
                "This MERGE matches {target} on {}, a key generated per insert: a retried source \
                 row never matches the copy already loaded, so WHEN NOT MATCHED inserts it again.",
                join(&surrogate)
            )
        } else if !keys.natural_key.is_empty() && !missing.is_empty() {
            format!(
                "This MERGE matches {target} on part of its natural key (not {}): records that \
                 differ only there are taken for one, so they overwrite each other or the MERGE \
                 fails on a source row meeting several target rows.",
                join(&missing)
            )
        } else {
            continue;
        };
        let source = match &m.source {
            TableFactor::Table { alias: Some(a), .. }
            | TableFactor::Derived { alias: Some(a), .. } => a.name.value.clone(),
            TableFactor::Table { name, .. } => name.to_string(),
            _ => "source".to_string(),
        };
        let fix = if keys.natural_key.is_empty() {
            format!(
                "Match on the natural key instead. {}.",
                super::unknown_key(&target)
            )
        } else {
            let on = keys
                .natural_key
                .iter()
                .map(|k| {
                    let c = cx.dialect.quote_ident(k);
                    let (t, s) = (format!("{qualifier}.{c}"), format!("{source}.{c}"));
                    if keys.is_nullable(k) {
                        cx.dialect.null_safe_eq(&t, &s)
                    } else {
                        format!("{t} = {s}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND ");
            format!("Match on the whole natural key: ON {on}.")
        };
        out.push(Hit {
            rule: NAME,
            at: cx.extent(m.on.as_ref()).start,
            message,
            fix,
            edits: Vec::new(),
        });
    }
}

fn join(columns: &[&String]) -> String {
    columns
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The target columns an ON predicate compares (`t.col = ...`, `t.col IS NOT DISTINCT FROM
/// ...`, `t.col <=> ...`), read through AND.
fn target_columns_matched(e: &Expr, qualifier: &str, out: &mut Vec<String>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            target_columns_matched(left, qualifier, out);
            target_columns_matched(right, qualifier, out);
        }
        Expr::Nested(inner) => target_columns_matched(inner, qualifier, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq | BinaryOperator::Spaceship,
            right,
        }
        | Expr::IsNotDistinctFrom(left, right) => {
            for side in [left, right] {
                if super::qualifier(side).is_some_and(|q| q.eq_ignore_ascii_case(qualifier))
                    && let Some(c) = super::column_name(side)
                {
                    out.push(c);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::rewrite::test_support::*;

    #[test]
    fn a_conflict_on_the_surrogate_is_moved_to_the_natural_key() {
        let report = run(
            "INSERT INTO sales.daily_orders (surrogate_key, order_id, line_item_id)\n\
             SELECT gen_random_uuid(), order_id, line_item_id FROM s\n\
             ON CONFLICT (surrogate_key) DO NOTHING;",
        );
        assert!(rules_of(&report).contains(&super::NAME), "{report:#?}");
        let text = rewritten(&report);
        assert!(
            text.contains("ON CONFLICT (\"order_id\", \"line_item_id\") DO NOTHING"),
            "{text}"
        );
    }

    #[test]
    fn a_column_left_to_its_default_counts_as_generated() {
        let report = run(
            "INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 2)\n\
             ON CONFLICT (id) DO NOTHING;",
        );
        assert_eq!(rules_of(&report), [super::NAME]);
    }

    #[test]
    fn a_merge_on_the_surrogate_or_on_part_of_the_key_is_reported() {
        let report = run(
            "MERGE INTO sales.daily_orders d USING (SELECT DISTINCT * FROM s) src\n\
             ON d.surrogate_key = src.surrogate_key\n\
             WHEN NOT MATCHED THEN INSERT (order_id, line_item_id) VALUES (src.order_id, src.line_item_id);",
        );
        assert_eq!(rules_of(&report), [super::NAME], "{report:#?}");
        assert!(report.findings[0].message.contains("surrogate_key"));
        assert_eq!(report.findings[0].line, 2);
        let report = run(
            "MERGE INTO sales.daily_orders d USING (SELECT DISTINCT * FROM s) src\n\
             ON d.order_id = src.order_id\n\
             WHEN MATCHED THEN UPDATE SET amount = src.amount;",
        );
        assert_eq!(rules_of(&report), [super::NAME], "{report:#?}");
        assert!(
            report.findings[0].message.contains("(not line_item_id)"),
            "{report:#?}"
        );
        assert!(
            report.findings[0]
                .fix
                .contains(
                    "ON d.\"order_id\" = src.\"order_id\" AND d.\"line_item_id\" IS NOT DISTINCT FROM src.\"line_item_id\"."
                ),
            "{report:#?}"
        );
    }

    #[test]
    fn a_merge_on_the_whole_natural_key_is_fine() {
        let report = run(
            "MERGE INTO sales.daily_orders d USING (SELECT DISTINCT * FROM s) src\n\
             ON src.order_id = d.order_id AND d.line_item_id IS NOT DISTINCT FROM src.line_item_id\n\
             WHEN MATCHED THEN UPDATE SET amount = src.amount;",
        );
        assert!(report.idempotent, "{report:#?}");
    }

    #[test]
    fn a_conflict_on_the_natural_key_is_fine() {
        let report = run(
            "INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 2)\n\
             ON CONFLICT (line_item_id, order_id) DO NOTHING;",
        );
        assert!(report.idempotent, "{report:#?}");
    }
}
