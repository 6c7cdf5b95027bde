//! Redshift: UNIQUE is informational (the planner trusts it; nothing checks it); the cleanup
//! replaces the table's rows in one transaction.

use super::warehouse::INFORMATIONAL;
use super::{DialectPlan, Table, warehouse};

pub(super) fn plan(t: &Table) -> DialectPlan {
    let survivors = warehouse::survivors(t, "= 1");
    let columns = t.column_list("");
    let cleanup = vec![
        "BEGIN".to_string(),
        warehouse::backup_losers(t),
        format!("CREATE TEMP TABLE natkey_survivors AS\n{survivors}"),
        format!("DELETE FROM {}", t.qualified),
        format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM natkey_survivors",
            t.qualified
        ),
        "COMMIT".to_string(),
    ];
    let constraint = warehouse::Constraint {
        enforce: vec![format!(
            "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({})",
            t.qualified,
            t.q(&t.constraint),
            t.key_list("")
        )],
        why: vec![
            INFORMATIONAL.into(),
            "Redshift has no IF NOT EXISTS for constraints: on a rerun this statement fails".into(),
            "because the constraint exists, after every step above has done its work; the".into(),
            "verify query below can then be run on its own.".into(),
        ],
        // No IF EXISTS either: it fails when the constraint is gone.
        drop: Some(format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            t.qualified,
            t.q(&t.constraint)
        )),
    };
    warehouse::plan(t, cleanup, constraint)
}
