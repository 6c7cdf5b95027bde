//! What the warehouses that do not enforce keys (Snowflake, BigQuery, Redshift, Databricks)
//! share: none has a row identity to delete single rows by, so the cleanup keeps row 1 of each
//! natural key and the losers go to the backup first; the load becomes a MERGE over a
//! deduplicated source.

use super::{DialectPlan, Table};
use crate::config::SurvivorRule;
use crate::dialect::Dialect;

/// The rows of the table ranked by the survivor rule, filtered by `natkey_rn {condition}`.
pub(super) fn survivors(t: &Table, condition: &str) -> String {
    let tiebreak: Vec<String> = t
        .report
        .surrogate_key
        .iter()
        .map(|s| format!("{} ASC", t.q(s)))
        .collect();
    format!(
        "SELECT {cols} FROM (SELECT {cols}, {rn} AS natkey_rn FROM {table}) AS natkey_ranked\n\
         WHERE natkey_ranked.natkey_rn {condition}",
        cols = t.column_list(""),
        rn = t.row_number(&tiebreak),
        table = t.qualified
    )
}

pub(super) fn backup_losers(t: &Table) -> String {
    format!(
        "INSERT INTO {} ({})\n{}",
        t.backup,
        t.column_list(""),
        survivors(t, "> 1")
    )
}

/// The first line of every warehouse's Enforce step.
pub(super) const INFORMATIONAL: &str =
    "Informational only: documents the key for people and the optimizer; it rejects nothing.";

/// How a warehouse's informational constraint is added, rerun and dropped.
pub(super) struct Constraint {
    /// The statements of the Enforce step (a guard first where the engine has one).
    pub enforce: Vec<String>,
    pub why: Vec<String>,
    /// The rollback's drop (guarded where the engine has `IF EXISTS`).
    pub drop: Option<String>,
}

/// The engine's transaction around several statements, when it has one.
pub(super) fn transaction(d: Dialect) -> Option<(&'static str, &'static str)> {
    match d {
        Dialect::Snowflake => Some(("BEGIN TRANSACTION", "COMMIT")),
        Dialect::BigQuery => Some(("BEGIN TRANSACTION", "COMMIT TRANSACTION")),
        Dialect::Redshift => Some(("BEGIN", "COMMIT")),
        _ => None,
    }
}

/// Assembles the plan around the dialect's cleanup and constraint statements.
pub(super) fn plan(t: &Table, cleanup: Vec<String>, constraint: Constraint) -> DialectPlan {
    let columns = t.column_list("");
    let mut backup = Vec::new();
    if let Some(schema) = &t.backup_schema {
        backup.push(format!("CREATE SCHEMA IF NOT EXISTS {}", t.q(schema)));
    }
    backup.push(match t.d {
        Dialect::Redshift => format!(
            "CREATE TABLE IF NOT EXISTS {} (LIKE {})",
            t.backup, t.qualified
        ),
        Dialect::BigQuery => format!(
            "CREATE TABLE IF NOT EXISTS {} AS SELECT {columns} FROM {} LIMIT 0",
            t.backup, t.qualified
        ),
        _ => format!(
            "CREATE TABLE IF NOT EXISTS {} AS SELECT {columns} FROM {} WHERE 1 = 0",
            t.backup, t.qualified
        ),
    });

    let load_columns = t.load_columns();
    let cols: Vec<String> = load_columns.iter().map(|c| t.q(&c.name)).collect();
    let on: Vec<String> = t
        .key
        .columns
        .iter()
        .map(|k| {
            t.null_safe_eq(
                &format!("natkey_target.{}", t.q(k)),
                &format!("natkey_source.{}", t.q(k)),
            )
        })
        .collect();
    let updates: Vec<String> = t
        .updated_columns()
        .iter()
        .map(|c| format!("{0} = natkey_source.{0}", t.q(&c.name)))
        .collect();
    // Which source row of a key the MERGE applies: the survivor rule's when the source has
    // its column, then every column, so a retry over the same source picks the same row.
    let mut order: Vec<String> = match &t.survivor {
        Some(SurvivorRule::Latest(c) | SurvivorRule::Earliest(c))
            if load_columns.iter().any(|l| &l.name == c) =>
        {
            let direction = match &t.survivor {
                Some(SurvivorRule::Latest(_)) => "DESC",
                _ => "ASC",
            };
            vec![
                format!("CASE WHEN {} IS NULL THEN 1 ELSE 0 END", t.q(c)),
                format!("{} {direction}", t.q(c)),
            ]
        }
        _ => Vec::new(),
    };
    order.extend(cols.iter().cloned());
    let mut when = Vec::new();
    if t.mutable && !updates.is_empty() {
        when.push(format!(
            "WHEN MATCHED THEN UPDATE SET {}",
            updates.join(", ")
        ));
    } else if t.d == Dialect::Redshift {
        // Redshift's MERGE requires a WHEN MATCHED clause: a no-op update.
        let k = t.q(&t.key.columns[0]);
        when.push(format!(
            "WHEN MATCHED THEN UPDATE SET {k} = natkey_source.{k}"
        ));
    }
    when.push(format!(
        "WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        cols.join(", "),
        cols.iter()
            .map(|c| format!("natkey_source.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let load = vec![format!(
        "MERGE INTO {table} AS natkey_target\n\
         USING (SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {order}) AS natkey_rn\n\
         FROM {staging}) AS natkey_dedup WHERE natkey_dedup.natkey_rn = 1) AS natkey_source\n\
         ON {on}\n{when}",
        table = t.qualified,
        cols = cols.join(", "),
        key = t.key_list(""),
        staging = t.staging(),
        order = order.join(", "),
        on = on.join(" AND "),
        when = when.join("\n"),
    )];
    let mut load_why = vec![
        "MERGE on the natural key over a source deduplicated first (a MERGE whose source holds a"
            .into(),
        "key twice fails, or double-applies; the row kept is the survivor rule's, so retries"
            .into(),
        "apply the same one), with NULL-safe key matches. Replace the staging".into(),
        "relation with your task's source. A partition-overwrite load (replace the day's".into(),
        "partition as a whole) is the other idempotent shape for tables loaded per day.".into(),
    ];
    if !t.report.surrogate_key.is_empty() {
        load_why.push(format!(
            "The surrogate key ({}) is left out: derive it from the natural key (a hash) if the",
            t.report.surrogate_key.join(", ")
        ));
        load_why.push("table needs one, never from a random function.".into());
    }

    let mut rollback: Vec<String> = constraint.drop.into_iter().collect();
    if t.has_duplicates {
        let restore = [
            format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM {}",
                t.qualified, t.backup
            ),
            format!("DELETE FROM {} WHERE TRUE", t.backup),
        ];
        match transaction(t.d) {
            Some((begin, commit)) => {
                rollback.push(begin.into());
                rollback.extend(restore);
                rollback.push(commit.into());
            }
            None => rollback.extend(restore),
        }
    }
    DialectPlan {
        notes: Vec::new(),
        session: Vec::new(),
        prepare: Vec::new(),
        backup,
        cleanup,
        cleanup_why: vec![
            "Copies every row but the survivor of each natural key to the backup, then rewrites"
                .into(),
            "the table with the survivors only.".into(),
        ],
        enforce: constraint.enforce,
        enforce_why: constraint.why,
        load,
        load_why,
        rollback,
    }
}
