//! `random-surrogate-in-insert`: the task itself writes `gen_random_uuid()`, `uuid()`,
//! `newid()`, `random()` or `nextval(...)` into a column. Every run mints new keys for the same
//! facts, so nothing can recognise a retried row. The rewrite writes a hash of the natural key.

use sqlparser::ast::Expr;

use super::{Conflict, FileContext, Hit};
use crate::rewrite::Dialect;
use crate::rewrite::edit::Edit;

pub const NAME: &str = "random-surrogate-in-insert";

const RANDOM_FUNCTIONS: [&str; 10] = [
    "gen_random_uuid",
    "uuid_generate_v4",
    "uuid",
    "newid",
    "random",
    "rand",
    "nextval",
    "uuid_string",
    "generate_uuid",
    "randomblob",
];

/// True for a call of a function that returns a new value on every call.
pub(crate) fn is_random(e: &Expr) -> bool {
    match e {
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
            RANDOM_FUNCTIONS
                .iter()
                .any(|r| i.value.eq_ignore_ascii_case(r))
        }),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => is_random(expr),
        _ => false,
    }
}

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    for view in super::inserts(cx) {
        // Behind a conflict clause on the natural key (or a partition replace) a random key
        // is harmless for retries.
        if view.conflicts_on_key()
            || matches!(
                view.conflict,
                Conflict::Overwrite | Conflict::Unnamed { .. }
            )
        {
            continue;
        }
        for column in &view.columns {
            let Some(random) = view.values_for(column).into_iter().find(|e| is_random(e)) else {
                continue;
            };
            let range = cx.extent(random);
            let call = cx.text.get(range.clone()).unwrap_or("");
            let message = format!(
                "{call} writes a new {column} on every run: a retry stores the same facts under \
                 new keys, so nothing (no constraint, no MERGE) recognises them as already \
                 loaded."
            );
            let key_exprs: Option<Vec<&str>> = view.keys.and_then(|k| {
                if k.natural_key.is_empty() || k.is_key(column) {
                    return None;
                }
                k.natural_key
                    .iter()
                    .map(|n| view.values_for(n).first().map(|e| cx.text_of(*e)))
                    .collect()
            });
            let hash = key_exprs.and_then(|exprs| deterministic_key(cx.dialect, &exprs));
            match hash {
                Some(hash) if !range.is_empty() => out.push(Hit {
                    rule: NAME,
                    at: range.start,
                    message,
                    fix: format!(
                        "Write a deterministic key, a hash of the natural key: `{hash}`; the \
                         same fact then gets the same {column} on every run."
                    ),
                    edits: vec![Edit::replace(range, hash)],
                }),
                _ => out.push(Hit {
                    rule: NAME,
                    at: range.start,
                    message,
                    fix: match view.keys.filter(|k| !k.natural_key.is_empty()) {
                        Some(_) => format!(
                            "Write a deterministic key, a hash of the natural key (e.g. \
                             md5(concat_ws('|', key columns))), into {column}."
                        ),
                        None => format!(
                            "Write a hash of the natural key instead. {}.",
                            super::unknown_key(&view.target)
                        ),
                    },
                    edits: Vec::new(),
                }),
            }
        }
    }
}

/// A hash of the key expressions, typed like the dialect's UUIDs where it has them.
fn deterministic_key(dialect: Dialect, exprs: &[&str]) -> Option<String> {
    let list = exprs.join(", ");
    match dialect {
        Dialect::Postgres => Some(format!("md5(concat_ws('|', {list}))::uuid")),
        Dialect::MySql | Dialect::Snowflake | Dialect::Redshift | Dialect::Databricks => {
            Some(format!("md5(concat_ws('|', {list}))"))
        }
        Dialect::BigQuery => Some(format!(
            "to_hex(md5(array_to_string([{}], '|')))",
            exprs
                .iter()
                .map(|e| format!("cast({e} as string)"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        // SQLite has no hash function built in.
        Dialect::Sqlite => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::rewrite::Dialect;
    use crate::rewrite::test_support::*;

    const RANDOM: &str = "INSERT INTO sales.daily_orders (surrogate_key, order_id, line_item_id)\n\
        SELECT gen_random_uuid(), o.order_id, o.line_item_id FROM staging.orders o;";

    #[test]
    fn a_random_key_becomes_a_hash_of_the_natural_key() {
        let report = run(RANDOM);
        assert!(rules_of(&report).contains(&super::NAME), "{report:#?}");
        let text = rewritten(&report);
        assert!(
            text.contains(
                "SELECT md5(concat_ws('|', o.order_id, o.line_item_id))::uuid, o.order_id"
            ),
            "{text}"
        );
    }

    #[test]
    fn sqlite_has_no_hash_so_the_fix_is_advice() {
        let report = run_in(RANDOM, Dialect::Sqlite);
        let f = report
            .findings
            .iter()
            .find(|f| f.rule == super::NAME)
            .expect("reported");
        assert!(f.fix.contains("deterministic"), "{f:#?}");
    }

    #[test]
    fn a_random_key_behind_a_natural_key_conflict_is_fine() {
        let report = run(&RANDOM.replace(";", " ON CONFLICT (order_id, line_item_id) DO NOTHING;"));
        assert!(report.idempotent, "{report:#?}");
        let report = run("INSERT INTO t (id, a) VALUES (md5('a'), 1) ON CONFLICT DO NOTHING;");
        assert!(!rules_of(&report).contains(&super::NAME), "{report:#?}");
    }
}
