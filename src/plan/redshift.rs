//! Redshift: UNIQUE is informational (the planner trusts it; nothing checks it); the cleanup
//! replaces the table's rows in one transaction.

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
    let enforce = vec![format!(
        "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({})",
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
