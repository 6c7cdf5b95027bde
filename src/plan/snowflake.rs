//! Snowflake: standard tables do not enforce UNIQUE; the constraint is informational (NOT
//! ENFORCED, Snowflake's default), and the cleanup rewrites the table with one row per key.

use super::warehouse::INFORMATIONAL;
use super::{DialectPlan, Table, warehouse};

pub(super) fn plan(t: &Table) -> DialectPlan {
    let survivors = warehouse::survivors(t, "= 1");
    let cleanup = vec![
        "BEGIN TRANSACTION".to_string(),
        warehouse::backup_losers(t),
        format!(
            "INSERT OVERWRITE INTO {} ({})\n{survivors}",
            t.qualified,
            t.column_list("")
        ),
        "COMMIT".to_string(),
    ];
    let constraint = warehouse::Constraint {
        enforce: vec![format!(
            "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({}) NOT ENFORCED",
            t.qualified,
            t.q(&t.constraint),
            t.key_list("")
        )],
        why: vec![
            INFORMATIONAL.into(),
            "Snowflake has no IF NOT EXISTS for constraints: on a rerun this statement fails"
                .into(),
            "because the constraint exists, after every step above has done its work; the".into(),
            "verify query below can then be run on its own.".into(),
        ],
        // Snowflake has no IF EXISTS here either: it fails when the constraint is gone.
        drop: Some(format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            t.qualified,
            t.q(&t.constraint)
        )),
    };
    warehouse::plan(t, cleanup, constraint)
}
