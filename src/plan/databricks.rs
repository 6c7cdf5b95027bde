//! Databricks (Delta): primary keys are informational (Unity Catalog) and need NOT NULL
//! columns; `INSERT OVERWRITE` replaces the table's rows atomically, but there is no
//! transaction around the backup and the overwrite: each statement commits on its own.

use super::warehouse::INFORMATIONAL;
use super::{DialectPlan, Table, warehouse};

pub(super) fn plan(t: &Table) -> DialectPlan {
    let survivors = warehouse::survivors(t, "= 1");
    let cleanup = vec![
        warehouse::backup_losers(t),
        format!("INSERT OVERWRITE {}\n{survivors}", t.qualified),
    ];
    let drop = format!(
        "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
        t.qualified,
        t.q(&t.constraint)
    );
    let constraint = if t.nullable_key.is_empty() {
        warehouse::Constraint {
            enforce: vec![
                drop.clone(),
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({}) NOT ENFORCED",
                    t.qualified,
                    t.q(&t.constraint),
                    t.key_list("")
                ),
            ],
            why: vec![
                INFORMATIONAL.into(),
                "Dropped first if present, so a rerun succeeds.".into(),
            ],
            drop: Some(drop),
        }
    } else {
        warehouse::Constraint {
            enforce: Vec::new(),
            why: vec![
                format!(
                    "No constraint: Databricks refuses a PRIMARY KEY on nullable columns ({}), and",
                    t.nullable_key
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "has no informational UNIQUE. The load SQL and a scheduled natkey audit are all"
                    .into(),
                "the enforcement there is.".into(),
            ],
            drop: None,
        }
    };
    let mut plan = warehouse::plan(t, cleanup, constraint);
    plan.cleanup_why.extend([
        "Databricks has no transaction around the two statements: each commits on its own. If"
            .to_string(),
        "the overwrite fails after the backup, do not rerun the backup (it would copy the".into(),
        "losers twice): rerun the INSERT OVERWRITE alone. The table's previous version stays"
            .into(),
        "reachable with Delta time travel (DESCRIBE HISTORY, RESTORE TABLE ... TO VERSION AS OF)."
            .into(),
    ]);
    plan
}
