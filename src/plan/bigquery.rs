//! BigQuery: keys are `NOT ENFORCED` by definition; the cleanup keeps the table (and its
//! partitioning and clustering) and replaces its rows in one multi-statement transaction.

use super::{DialectPlan, Table, warehouse};

pub(super) fn plan(t: &Table) -> DialectPlan {
    let survivors = warehouse::survivors(t, "= 1");
    let columns = t.column_list("");
    let cleanup = vec![
        "BEGIN TRANSACTION".to_string(),
        warehouse::backup_losers(t),
        format!("CREATE TEMP TABLE natkey_survivors AS\n{survivors}"),
        format!("DELETE FROM {} WHERE TRUE", t.qualified),
        format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM natkey_survivors",
            t.qualified
        ),
        "COMMIT TRANSACTION".to_string(),
    ];
    let enforce = vec![format!(
        "ALTER TABLE {} ADD PRIMARY KEY ({}) NOT ENFORCED",
        t.qualified,
        t.key_list("")
    )];
    warehouse::plan(
        t,
        cleanup,
        enforce,
        format!("ALTER TABLE {} DROP PRIMARY KEY", t.qualified),
    )
}
