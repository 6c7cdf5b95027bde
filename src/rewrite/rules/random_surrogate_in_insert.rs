//! `random-surrogate-in-insert`: the task itself writes `gen_random_uuid()`, `uuid()`,
//! `newid()`, `random()` or `nextval(...)` into a key column (a known surrogate or natural-key
//! column, the conflict target, or a column named like a key: `id`, `uuid`, `*_id`, `*_key`).
//! Every run mints new keys for the same facts, so nothing can recognise a retried row. The
//! rewrite writes a hash of the natural key that tells NULL from any value and cannot be fooled
//! by a separator inside a value. A random value in a payload column (a sampling weight, say) is
//! not a key and is left alone.

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
        for column in view.columns.iter().filter(|c| key_like(&view, c)) {
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
                            "Write a deterministic key into {column}, a hash of the natural key \
                             that keeps NULLs and separators apart (e.g. md5 of a JSON array of \
                             the key columns)."
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

/// True when a column holds a key, so a random value in it defeats retries: a known surrogate
/// or natural-key column, a conflict target column, or a column named like a key.
fn key_like(view: &super::InsertView, column: &str) -> bool {
    let c = column.to_ascii_lowercase();
    let named_like_a_key = ["id", "uuid", "guid", "key", "sk", "pk"].contains(&c.as_str())
        || ["_id", "_key", "_uuid", "_guid", "_sk", "_pk"]
            .iter()
            .any(|suffix| c.ends_with(suffix));
    let in_conflict_target = match &view.conflict {
        Conflict::Columns { columns, .. } => columns.iter().any(|k| k.eq_ignore_ascii_case(column)),
        _ => false,
    };
    named_like_a_key
        || in_conflict_target
        || view
            .keys
            .is_some_and(|k| k.is_surrogate(column) || k.is_key(column))
}

/// A hash of the key expressions, typed like the dialect's UUIDs where it has them. Two keys
/// hash alike only when they are equal: NULL is not the empty string and `('a|b', 'c')` is not
/// `('a', 'b|c')` — a JSON array of the key where the engine has one, else each part
/// length-prefixed (`3:abc`) with `null` for NULL.
fn deterministic_key(dialect: Dialect, exprs: &[&str]) -> Option<String> {
    let list = exprs.join(", ");
    let prefixed = |cast: &str, concat: &dyn Fn(&[String]) -> String| -> Vec<String> {
        exprs
            .iter()
            .map(|e| {
                let text = format!("CAST({e} AS {cast})");
                format!(
                    "coalesce({}, 'null')",
                    concat(&[
                        format!("CAST(length({text}) AS {cast})"),
                        "':'".to_string(),
                        text
                    ])
                )
            })
            .collect()
    };
    let pipes = |parts: &[String]| parts.join(" || ");
    match dialect {
        Dialect::Postgres => Some(format!("md5(json_build_array({list})::text)::uuid")),
        Dialect::MySql => Some(format!("md5(json_array({list}))")),
        Dialect::Snowflake | Dialect::Redshift => Some(format!(
            "md5({})",
            prefixed("varchar", &pipes).join(" || '|' || ")
        )),
        Dialect::Databricks => Some(format!(
            "md5({})",
            prefixed("string", &pipes).join(" || '|' || ")
        )),
        Dialect::BigQuery => Some(format!(
            "to_hex(md5(array_to_string([{}], '|')))",
            prefixed("string", &|parts: &[String]| format!(
                "concat({})",
                parts.join(", ")
            ))
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
                "SELECT md5(json_build_array(o.order_id, o.line_item_id)::text)::uuid, o.order_id"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_dialect_hashes_the_key_null_safely_and_the_rewrite_parses() {
        for dialect in Dialect::ALL {
            let report = run_in(RANDOM, dialect);
            assert!(rules_of(&report).contains(&super::NAME), "{dialect}");
            if dialect == Dialect::Sqlite {
                continue;
            }
            let text = rewritten(&report);
            assert!(!text.contains("gen_random_uuid"), "{dialect}: {text}");
            // concat_ws skips NULLs, so (1, NULL) and (NULL, 1) would get one key.
            assert!(!text.contains("concat_ws"), "{dialect}: {text}");
            assert!(
                text.contains("json") || text.contains("'null'"),
                "{dialect}: {text}"
            );
        }
    }

    #[test]
    fn a_random_value_in_a_payload_column_is_not_a_key() {
        let report = run(
            "INSERT INTO sales.daily_orders (order_id, line_item_id, sample_weight)\n\
             SELECT o.order_id, o.line_item_id, random() FROM staging.orders o;",
        );
        assert_eq!(rules_of(&report), ["insert-without-natural-key"]);
        let report =
            run("INSERT INTO events (event_id, score) SELECT gen_random_uuid(), random() FROM s;");
        let hits: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.rule == super::NAME)
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(hits.len(), 1, "{report:#?}");
        assert!(hits[0].contains("event_id"), "{hits:?}");
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
