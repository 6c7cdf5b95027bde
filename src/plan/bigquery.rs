//! BigQuery: keys are `NOT ENFORCED` by definition; the cleanup keeps the table (and its
//! partitioning and clustering) and replaces its rows in one multi-statement transaction.

use super::warehouse::INFORMATIONAL;
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
    // A scripting IF over the dataset's catalog: BigQuery has no IF NOT EXISTS for a key.
    let has_key = format!(
        "SELECT 1 FROM {}.INFORMATION_SCHEMA.TABLE_CONSTRAINTS WHERE table_name = {} AND constraint_type = 'PRIMARY KEY'",
        t.q(&t.report.schema),
        t.d.quote_literal(&t.report.name)
    );
    let constraint = warehouse::Constraint {
        enforce: vec![format!(
            "IF NOT EXISTS ({has_key}) THEN\n  ALTER TABLE {} ADD PRIMARY KEY ({}) NOT ENFORCED;\nEND IF",
            t.qualified,
            t.key_list("")
        )],
        why: vec![
            INFORMATIONAL.into(),
            "Added only if the table has no primary key yet, so a rerun succeeds.".into(),
        ],
        drop: Some(format!(
            "IF EXISTS ({has_key}) THEN\n  ALTER TABLE {} DROP PRIMARY KEY;\nEND IF",
            t.qualified
        )),
    };
    warehouse::plan(t, cleanup, constraint)
}
