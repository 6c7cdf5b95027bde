//! Snowflake: standard tables do not enforce UNIQUE; the constraint is informational (NOT
//! ENFORCED, Snowflake's default), and the cleanup rewrites the table with one row per key.

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
    let enforce = vec![format!(
        "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({}) NOT ENFORCED",
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
