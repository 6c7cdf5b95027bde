//! `conflict-on-surrogate`: `ON CONFLICT (id)` where `id` is generated per insert. A new value
//! never conflicts, so the clause protects nothing and retries append copies.

use sqlparser::ast::{ConflictTarget, OnInsert};

use super::{Conflict, FileContext, Hit, column_list};
use crate::rewrite::edit::Edit;

pub const NAME: &str = "conflict-on-surrogate";

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
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
    fn a_conflict_on_the_natural_key_is_fine() {
        let report = run(
            "INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 2)\n\
             ON CONFLICT (line_item_id, order_id) DO NOTHING;",
        );
        assert!(report.idempotent, "{report:#?}");
    }
}
