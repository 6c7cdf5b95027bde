//! SQLite: rows addressed by `rowid`, a `CREATE UNIQUE INDEX IF NOT EXISTS`, and for nullable
//! key columns an index on expressions (value with NULL replaced, and an `IS NULL` flag), since
//! SQLite's UNIQUE lets NULL keys repeat.

use super::{DialectPlan, Table, stand_in};

pub(super) fn plan(t: &Table) -> DialectPlan {
    let columns = t.column_list("");
    let backup = vec![format!(
        "CREATE TABLE IF NOT EXISTS {} AS SELECT {columns} FROM {} WHERE 0",
        t.backup, t.qualified
    )];
    let cleanup = vec![
        // IMMEDIATE takes the write lock up front: no other writer between ranking and deleting.
        "BEGIN IMMEDIATE".to_string(),
        "CREATE TEMP TABLE IF NOT EXISTS natkey_losers (natkey_rowid INTEGER PRIMARY KEY)".into(),
        "DELETE FROM temp.natkey_losers".into(),
        format!(
            "INSERT INTO temp.natkey_losers\n\
             SELECT natkey_ranked.natkey_rowid FROM (SELECT rowid AS natkey_rowid,\n\
             {rn} AS natkey_rn\n\
             FROM {table}) natkey_ranked\n\
             WHERE natkey_ranked.natkey_rn > 1",
            rn = t.row_number(&["rowid".to_string()]),
            table = t.qualified
        ),
        format!(
            "INSERT INTO {} ({columns})\nSELECT {columns} FROM {} WHERE rowid IN (SELECT natkey_rowid FROM temp.natkey_losers)",
            t.backup, t.qualified
        ),
        format!(
            "DELETE FROM {} WHERE rowid IN (SELECT natkey_rowid FROM temp.natkey_losers)",
            t.qualified
        ),
        "COMMIT".into(),
    ];
    let key_parts: Vec<String> = t
        .key
        .columns
        .iter()
        .flat_map(|k| match t.nullable_key.iter().find(|c| &c.name == k) {
            Some(c) => vec![
                format!("IFNULL({}, {})", t.q(k), stand_in(c, t.d)),
                format!("{} IS NULL", t.q(k)),
            ],
            None => vec![t.q(k)],
        })
        .collect();
    let mut enforce_why =
        vec!["A unique index on the natural key, created only if missing.".to_string()];
    if !t.nullable_key.is_empty() {
        enforce_why.push(
            "Key columns may be NULL and SQLite's UNIQUE lets NULL keys repeat: the index is on"
                .into(),
        );
        enforce_why.push(
            "each such column with NULL replaced plus an IS NULL flag, so two NULL keys collide."
                .into(),
        );
    }
    let enforce = vec![format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
        t.q(&t.constraint),
        t.q(&t.report.name),
        key_parts.join(", ")
    )];

    let cols: Vec<String> = t.load_columns().iter().map(|c| t.q(&c.name)).collect();
    let conflict = t.on_conflict_action("excluded");
    // `WHERE true` keeps SQLite from reading ON CONFLICT as a join condition of the SELECT.
    let load = vec![format!(
        "INSERT INTO {table} ({cols})\nSELECT {cols} FROM {staging} WHERE true\nON CONFLICT ({target}) {conflict}",
        table = t.qualified,
        cols = cols.join(", "),
        staging = t.staging(),
        target = key_parts.join(", "),
    )];

    let mut rollback = vec![format!("DROP INDEX IF EXISTS {}", t.q(&t.constraint))];
    if t.has_duplicates {
        rollback.push("BEGIN IMMEDIATE".into());
        rollback.push(format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {}",
            t.qualified, t.backup
        ));
        rollback.push(format!("DELETE FROM {}", t.backup));
        rollback.push("COMMIT".into());
    }
    DialectPlan {
        session: Vec::new(),
        notes: vec![
            String::new(),
            "Run with the sqlite3 shell: sqlite3 warehouse.sqlite < plan.sql.".into(),
        ],
        prepare: Vec::new(),
        backup,
        cleanup,
        cleanup_why: vec![
            "Keeps one row per natural key (row 1 by the survivor rule) and moves every other row"
                .into(),
            "to the backup table, in one transaction.".into(),
        ],
        enforce,
        enforce_why,
        load,
        load_why: super::postgres::load_why(t),
        rollback,
    }
}
