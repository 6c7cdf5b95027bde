//! Databricks (Delta): primary keys are informational; `INSERT OVERWRITE` replaces the table's
//! rows atomically (after the losers were copied to the backup).

use super::{DialectPlan, Table, warehouse};

pub(super) fn plan(t: &Table) -> DialectPlan {
    let survivors = warehouse::survivors(t, "= 1");
    let cleanup = vec![
        warehouse::backup_losers(t),
        format!("INSERT OVERWRITE {}\n{survivors}", t.qualified),
    ];
    let enforce = vec![format!(
        "ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({}) NOT ENFORCED",
        t.qualified,
        t.q(&t.constraint),
        t.key_list("")
    )];
    warehouse::plan(
        t,
        cleanup,
        enforce,
        format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            t.qualified,
            t.q(&t.constraint)
        ),
    )
}
