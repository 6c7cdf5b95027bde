//! MySQL 8 and MariaDB 10.6+: an online `ADD UNIQUE KEY`, guarded by catalog checks so the
//! script reruns; rows addressed by the surrogate key (or a temporary auto-increment column).
//! MySQL's UNIQUE lets NULLs repeat, so a nullable key column enters the key through two
//! virtual columns: its value with NULL replaced, and an `IS NULL` flag.

use super::{DialectPlan, Table, object_name, stand_in};
use crate::audit::report::ColumnReport;
use crate::warehouse::{ColumnKind, kind_of};

const ROW_ID: &str = "natkey_row_id";

/// Runs `statement` only when `condition` (a SELECT returning a count) is 0: MySQL has no
/// `IF NOT EXISTS` for indexes and columns, MariaDB does, this works on both.
fn guarded(condition: &str, statement: &str) -> Vec<String> {
    let text = statement.replace('\\', "\\\\").replace('\'', "''");
    vec![
        format!("SET @natkey_sql = IF(({condition}) = 0, '{text}', 'DO 0')"),
        "PREPARE natkey_statement FROM @natkey_sql".into(),
        "EXECUTE natkey_statement".into(),
        "DEALLOCATE PREPARE natkey_statement".into(),
    ]
}

/// The type of a virtual key column: the column's own when the audit read MySQL, else a MySQL
/// type for its kind (a report from another engine spells types its own way).
fn column_type(t: &Table, c: &ColumnReport) -> String {
    if t.same_engine {
        return c.data_type.clone();
    }
    match kind_of(&c.data_type) {
        ColumnKind::Integer | ColumnKind::Boolean => "BIGINT".into(),
        ColumnKind::Decimal => "DECIMAL(38, 10)".into(),
        ColumnKind::Float => "DOUBLE".into(),
        ColumnKind::Date => "DATE".into(),
        ColumnKind::Timestamp => "DATETIME(6)".into(),
        _ => "VARCHAR(255)".into(),
    }
}

/// Drops the temporary row identity if it is there.
fn drop_row_id(t: &Table, column_exists: &str) -> Vec<String> {
    guarded(
        &format!("SELECT 1 - LEAST(1, ({column_exists}))"),
        &format!("ALTER TABLE {} DROP COLUMN {}", t.qualified, t.q(ROW_ID)),
    )
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// The cleanup of a table with more excess rows than one transaction should hold: the losers
/// listed once (numbered), then a procedure that copies and deletes them batch by batch, each
/// batch in its own transaction. Rows are addressed by the surrogate key or `natkey_row_id`,
/// which are never reused, so a later batch can never meet a row that was not listed.
fn batched_cleanup(t: &Table, rid: &str, columns: &str, with_row_id: bool) -> Vec<String> {
    let mut qualified_columns = t.column_list("natkey_t.");
    if with_row_id {
        qualified_columns.push_str(&format!(", natkey_t.{}", t.q(ROW_ID)));
    }
    let procedure = format!(
        "{}.{}",
        t.q("natkey_backup"),
        t.q(&object_name(
            &["natkey_cleanup", &t.report.schema, &t.report.name],
            64
        ))
    );
    let batch = t.batch_rows;
    // In the backup database: inside the procedure, an unqualified name is one of its database.
    let losers = format!("{}.natkey_losers", t.q("natkey_backup"));
    // User variables, not DECLAREd ones: a local variable would shadow a column of that name.
    let in_batch =
        format!("natkey_l.natkey_n > @natkey_from AND natkey_l.natkey_n <= @natkey_from + {batch}");
    let source = format!(
        "{losers} AS natkey_l JOIN {table} AS natkey_t ON natkey_t.{rid} = natkey_l.natkey_id",
        table = t.qualified
    );
    vec![
        format!("DROP TEMPORARY TABLE IF EXISTS {losers}"),
        format!(
            "CREATE TEMPORARY TABLE {losers} (PRIMARY KEY (natkey_n)) AS\n\
             SELECT ROW_NUMBER() OVER (ORDER BY natkey_ranked.natkey_id) AS natkey_n,\n\
             natkey_ranked.natkey_id FROM (SELECT {rid} AS natkey_id,\n\
             {rn} AS natkey_rn\n\
             FROM {table}) natkey_ranked\n\
             WHERE natkey_ranked.natkey_rn > 1",
            rn = t.row_number(&[format!("{rid} ASC")]),
            table = t.qualified
        ),
        format!("DROP PROCEDURE IF EXISTS {procedure}"),
        format!(
            "DELIMITER //\n\
             CREATE PROCEDURE {procedure}()\n\
             BEGIN\n\
             \x20 SET @natkey_from = 0;\n\
             \x20 SELECT COALESCE(MAX(natkey_n), 0) INTO @natkey_last FROM {losers};\n\
             \x20 WHILE @natkey_from < @natkey_last DO\n\
             \x20   START TRANSACTION;\n\
             \x20   INSERT INTO {backup} ({columns})\n\
             \x20   SELECT {qualified_columns} FROM {source}\n\
             \x20   WHERE {in_batch};\n\
             \x20   DELETE natkey_t FROM {source}\n\
             \x20   WHERE {in_batch};\n\
             \x20   COMMIT;\n\
             \x20   SET @natkey_from = @natkey_from + {batch};\n\
             \x20 END WHILE;\n\
             END //\n\
             DELIMITER ;",
            backup = t.backup,
        ),
        format!("CALL {procedure}()"),
        format!("DROP PROCEDURE IF EXISTS {procedure}"),
        format!("DROP TEMPORARY TABLE IF EXISTS {losers}"),
    ]
}

pub(super) fn plan(t: &Table) -> DialectPlan {
    let schema = literal(&t.report.schema);
    let name = literal(&t.report.name);
    let column_exists = |column: &str| {
        format!(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {schema} \
             AND TABLE_NAME = {name} AND COLUMN_NAME = {}",
            literal(column)
        )
    };
    let index_exists = format!(
        "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {schema} \
         AND TABLE_NAME = {name} AND INDEX_NAME = {}",
        literal(&t.constraint)
    );

    // A row identity: the (first) surrogate key, else a temporary auto-increment column.
    // Only needed when there is something to clean up; dropped again at the end of it.
    let (row_id, prepare) = match t.report.surrogate_key.first() {
        Some(s) => (s.clone(), Vec::new()),
        None if !t.has_duplicates => (ROW_ID.to_string(), Vec::new()),
        None => (
            ROW_ID.to_string(),
            guarded(
                &column_exists(ROW_ID),
                &format!(
                    "ALTER TABLE {} ADD COLUMN {} BIGINT NOT NULL AUTO_INCREMENT UNIQUE",
                    t.qualified,
                    t.q(ROW_ID)
                ),
            ),
        ),
    };
    let rid = t.q(&row_id);

    let session = vec![
        "SET SESSION lock_wait_timeout = 5".to_string(),
        "SET SESSION innodb_lock_wait_timeout = 5".to_string(),
    ];
    let mut backup = Vec::new();
    if let Some(s) = &t.backup_schema {
        backup.push(format!("CREATE DATABASE IF NOT EXISTS {}", t.q(s)));
    }
    // CREATE TABLE ... AS: plain columns (LIKE would copy generated columns, which refuse
    // inserted values). DDL commits implicitly in MySQL, so it runs before the transaction.
    let mut columns = t.column_list("");
    if !prepare.is_empty() {
        columns.push_str(&format!(", {}", t.q(ROW_ID)));
    }
    backup.push(format!(
        "CREATE TABLE IF NOT EXISTS {} AS SELECT {columns} FROM {} WHERE 1 = 0",
        t.backup, t.qualified
    ));

    let excess = u64::try_from(t.report.excess_rows.unwrap_or(0)).unwrap_or(0);
    let batched = excess > t.batch_rows;
    let mut cleanup = if batched {
        batched_cleanup(t, &rid, &columns, !prepare.is_empty())
    } else {
        vec![
            "DROP TEMPORARY TABLE IF EXISTS natkey_losers".to_string(),
            "START TRANSACTION".to_string(),
            format!(
                "CREATE TEMPORARY TABLE natkey_losers AS\n\
             SELECT natkey_ranked.natkey_id FROM (SELECT {rid} AS natkey_id,\n\
             {rn} AS natkey_rn\n\
             FROM {table}) natkey_ranked\n\
             WHERE natkey_ranked.natkey_rn > 1",
                rn = t.row_number(&[format!("{rid} ASC")]),
                table = t.qualified
            ),
            format!(
                "INSERT INTO {} ({columns})\nSELECT {columns} FROM {} WHERE {rid} IN (SELECT natkey_id FROM natkey_losers)",
                t.backup, t.qualified
            ),
            format!(
                "DELETE FROM {} WHERE {rid} IN (SELECT natkey_id FROM natkey_losers)",
                t.qualified
            ),
            "COMMIT".to_string(),
            "DROP TEMPORARY TABLE IF EXISTS natkey_losers".to_string(),
        ]
    };
    if !prepare.is_empty() {
        // The row identity has done its work: the table gets its own columns back (the
        // backup keeps natkey_row_id, which the rollback does not restore).
        cleanup.extend(drop_row_id(t, &column_exists(ROW_ID)));
    }
    let mut cleanup_why: Vec<String> = if batched {
        vec![
            "Keeps one row per natural key (row 1 by the survivor rule) and moves every other row"
                .into(),
            format!(
                "to the backup, {} rows per transaction (natkey plan --batch-rows): each batch",
                t.batch_rows
            ),
            "copies its rows and deletes them in one transaction, so nothing is deleted that was"
                .into(),
            "not copied, and no transaction grows InnoDB's undo log (and a replica's lag) with"
                .into(),
            format!(
                "all {excess} excess rows. The losers are listed once, in a temporary table; a"
            ),
            "stored procedure (in natkey_backup, dropped afterwards: needs CREATE ROUTINE there)"
                .into(),
            "walks it. Interrupted, the script reruns: it lists the duplicates that remain.".into(),
        ]
    } else {
        vec![
            "Keeps one row per natural key (row 1 by the survivor rule) and moves every other row"
                .into(),
            "to the backup in one transaction: nothing is deleted that was not copied first."
                .into(),
        ]
    };
    if !prepare.is_empty() {
        cleanup_why.push("Then the temporary natkey_row_id column is dropped again.".into());
    }

    let mut enforce = Vec::new();
    let mut enforce_why = vec![
        "An online unique key (ALGORITHM=INPLACE, LOCK=NONE: reads and writes go on while it"
            .into(),
        "builds), added only if missing.".into(),
    ];
    let mut key_parts: Vec<String> = Vec::new();
    let mut virtual_columns: Vec<String> = Vec::new();
    for k in &t.key.columns {
        match t.nullable_key.iter().find(|c| &c.name == k) {
            Some(c) => {
                let value = object_name(&["natkey", &c.name, "value"], 64);
                let is_null = object_name(&["natkey", &c.name, "is_null"], 64);
                for (column, definition) in [
                    (
                        &value,
                        format!(
                            "{} AS (COALESCE({}, {})) VIRTUAL",
                            column_type(t, c),
                            t.q(k),
                            stand_in(c, t.d)
                        ),
                    ),
                    (&is_null, format!("TINYINT AS ({} IS NULL) VIRTUAL", t.q(k))),
                ] {
                    enforce.extend(guarded(
                        &column_exists(column),
                        &format!(
                            "ALTER TABLE {} ADD COLUMN {} {definition}",
                            t.qualified,
                            t.q(column)
                        ),
                    ));
                    key_parts.push(t.q(column));
                    virtual_columns.push(column.clone());
                }
            }
            None => key_parts.push(t.q(k)),
        }
    }
    if !virtual_columns.is_empty() {
        enforce_why.push(
            "Key columns may be NULL and MySQL's UNIQUE lets NULL keys repeat: two virtual".into(),
        );
        enforce_why.push(
            "columns per such column (value with NULL replaced, and an IS NULL flag) enter the"
                .into(),
        );
        enforce_why.push(
            "key instead, so two NULL keys are the same key, as the audit counts them.".into(),
        );
    }
    let algorithm = if virtual_columns.is_empty() {
        ", ALGORITHM=INPLACE, LOCK=NONE"
    } else {
        // Indexes on virtual columns cannot always be built in place; let the server choose.
        ""
    };
    enforce.extend(guarded(
        &index_exists,
        &format!(
            "ALTER TABLE {} ADD UNIQUE KEY {} ({}){algorithm}",
            t.qualified,
            t.q(&t.constraint),
            key_parts.join(", ")
        ),
    ));

    let cols: Vec<String> = t.load_columns().iter().map(|c| t.q(&c.name)).collect();
    // Target columns qualified: in INSERT ... SELECT a bare name is ambiguous (ERROR 1052)
    // whenever the source has a column of that name.
    let target = |c: &str| format!("{}.{}", t.qualified, t.q(c));
    let updates: Vec<String> = if t.mutable {
        t.updated_columns()
            .iter()
            .map(|c| format!("{} = VALUES({})", target(&c.name), t.q(&c.name)))
            .collect()
    } else {
        Vec::new()
    };
    // `k = k` is MySQL's "do nothing" on a duplicate (INSERT IGNORE would also hide real errors).
    let on_duplicate = if updates.is_empty() {
        let k = target(&t.key.columns[0]);
        format!("{k} = {k}")
    } else {
        updates.join(", ")
    };
    let load = vec![format!(
        "INSERT INTO {table} ({cols})\nSELECT {cols} FROM {staging}\nON DUPLICATE KEY UPDATE {on_duplicate}",
        table = t.qualified,
        cols = cols.join(", "),
        staging = t.staging(),
    )];

    let mut rollback = vec!["SET SESSION lock_wait_timeout = 5".to_string()];
    rollback.extend(guarded(
        &format!("SELECT 1 - LEAST(1, ({index_exists}))"),
        &format!(
            "ALTER TABLE {} DROP INDEX {}",
            t.qualified,
            t.q(&t.constraint)
        ),
    ));
    for column in &virtual_columns {
        rollback.extend(guarded(
            &format!("SELECT 1 - LEAST(1, ({}))", column_exists(column)),
            &format!("ALTER TABLE {} DROP COLUMN {}", t.qualified, t.q(column)),
        ));
    }
    if t.has_duplicates {
        let columns = t.column_list("");
        rollback.push("START TRANSACTION".into());
        rollback.push(format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {}",
            t.qualified, t.backup
        ));
        rollback.push(format!("DELETE FROM {}", t.backup));
        rollback.push("COMMIT".into());
    }
    if !prepare.is_empty() {
        // Left by a plan interrupted between adding and dropping it.
        rollback.extend(drop_row_id(t, &column_exists(ROW_ID)));
    }
    DialectPlan {
        notes: vec![
            String::new(),
            "Run with the mysql/mariadb client, e.g. mariadb --batch < plan.sql.".into(),
        ],
        session,
        prepare,
        backup,
        cleanup,
        cleanup_why,
        enforce,
        enforce_why,
        load,
        load_why: super::postgres::load_why(t),
        rollback,
    }
}
