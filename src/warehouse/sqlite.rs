//! SQLite: read-only (`mode=ro`) connections and catalog queries (`sqlite_master`, pragmas).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::catalog::{Column, Generated, TableInfo, TableRef, kind_of};
use super::postgres::group_unique_keys;
use super::{ConnectFailure, Warehouse, WarehouseSql, WarehouseUrl};

/// natkey audits the main database of a SQLite file; its schema is always `main`.
pub const MAIN: &str = "main";

/// When the running statement must stop: SQLite has no statement timeout of its own, so a
/// progress handler (called every few thousand virtual-machine steps) interrupts the statement
/// once this instant has passed. `None` between statements.
pub(super) type Deadline = Arc<Mutex<Option<Instant>>>;

/// How many SQLite virtual-machine instructions run between two deadline checks.
const STEPS_PER_CHECK: i32 = 10_000;

pub(super) async fn connect(
    url: &WarehouseUrl,
) -> Result<(sqlx::SqliteConnection, Deadline), ConnectFailure> {
    let Some(path) = url.sqlite_path() else {
        return Err(ConnectFailure::Message("no database file".to_string()));
    };
    if !path.is_file() {
        return Err(ConnectFailure::Message(format!(
            "database file {} does not exist",
            path.display()
        )));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .disable_statement_logging();
    let mut conn = options.connect().await?;
    let deadline: Deadline = Arc::default();
    let watched = Arc::clone(&deadline);
    conn.lock_handle()
        .await?
        .set_progress_handler(STEPS_PER_CHECK, move || {
            // `true` lets the statement go on.
            let until = *watched.lock().unwrap_or_else(|e| e.into_inner());
            until.is_none_or(|until| Instant::now() < until)
        });
    Ok((conn, deadline))
}

/// The error of a statement the deadline interrupted, worded as PostgreSQL words its own.
pub(super) fn timed_out(timeout: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "canceling statement due to statement timeout ({}s)",
            timeout.as_secs()
        ),
    ))
}

fn sql(text: &str) -> WarehouseSql {
    WarehouseSql::new(text.to_string())
}

pub(super) async fn list_tables(
    wh: &mut Warehouse,
    schemas: &[String],
) -> Result<Vec<TableRef>, sqlx::Error> {
    if !schemas.is_empty() && !schemas.iter().any(|s| s == MAIN) {
        return Ok(Vec::new());
    }
    let rows = wh
        .query(
            &sql("SELECT name FROM sqlite_master \
                  WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                  ORDER BY name"),
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some(TableRef::new(MAIN, r.into_iter().next()??)))
        .collect())
}

pub(super) async fn describe(
    wh: &mut Warehouse,
    table: &TableRef,
) -> Result<TableInfo, sqlx::Error> {
    let binds = [Some(table.name.clone())];
    let rows = wh
        .query(
            &sql(
                "SELECT name, type, CAST(\"notnull\" AS TEXT), dflt_value, CAST(pk AS TEXT) \
                  FROM pragma_table_info(?) ORDER BY cid",
            ),
            &binds,
        )
        .await?;
    if rows.is_empty() || table.schema != MAIN {
        return Err(sqlx::Error::RowNotFound);
    }
    let pk_count = rows
        .iter()
        .filter(|r| r.get(4).cloned().flatten().is_some_and(|p| p != "0"))
        .count();
    let mut columns: Vec<Column> = Vec::new();
    for r in rows {
        let Some(name) = r.first().cloned().flatten() else {
            continue;
        };
        let data_type = r.get(1).cloned().flatten().unwrap_or_default();
        let in_pk = r.get(4).cloned().flatten().is_some_and(|p| p != "0");
        // Only a lone column declared exactly INTEGER PRIMARY KEY aliases the rowid.
        let rowid_alias = in_pk && pk_count == 1 && data_type.eq_ignore_ascii_case("INTEGER");
        columns.push(Column {
            kind: kind_of(&data_type),
            nullable: r.get(2).cloned().flatten().as_deref() == Some("0") && !rowid_alias,
            default: r.get(3).cloned().flatten(),
            generated: rowid_alias.then_some(Generated::RowidAlias),
            on_update_now: false,
            computed: false,
            name,
            data_type,
        });
    }
    let keys = wh
        .query(
            &sql("SELECT il.name, il.origin, ii.name \
                  FROM pragma_index_list(?) il JOIN pragma_index_info(il.name) ii \
                  WHERE il.\"unique\" = 1 AND il.partial = 0 \
                  ORDER BY il.name, ii.seqno"),
            &binds,
        )
        .await?;
    let mut unique_keys = group_unique_keys(keys.into_iter().map(|r| {
        (
            r.first().cloned().flatten().unwrap_or_default(),
            r.get(1).cloned().flatten().as_deref() == Some("pk"),
            true,
            r.get(2).cloned().flatten(),
        )
    }));
    if let Some(rowid) = columns
        .iter()
        .find(|c| c.generated == Some(Generated::RowidAlias))
    {
        unique_keys.insert(
            0,
            super::UniqueKey {
                name: "rowid".to_string(),
                primary: true,
                columns: vec![rowid.name.clone()],
                nulls_distinct: false,
            },
        );
    }
    // SQLite lets a PRIMARY KEY column (other than the rowid) hold NULLs unless declared NOT NULL.
    Ok(TableInfo {
        table: table.clone(),
        columns,
        unique_keys,
        estimated_rows: None,
        partitioned: false,
        partition_key: Vec::new(),
    })
}

pub(super) async fn downstream(
    wh: &mut Warehouse,
    table: &TableRef,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = wh
        .query(
            &sql("SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY name"),
            &[],
        )
        .await?;
    let name = table.name.to_lowercase();
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.get(1)
                .cloned()
                .flatten()
                .is_some_and(|sql| mentions_table(&sql.to_lowercase(), &name))
        })
        .filter_map(|r| Some(format!("{MAIN}.{}", r.first()?.as_ref()?)))
        .collect())
}

/// Whether a view's SQL names the table as a whole word (quoted or not).
fn mentions_table(sql: &str, name: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    sql.match_indices(name).any(|(i, _)| {
        let before = sql[..i].chars().next_back();
        let after = sql[i + name.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[cfg(test)]
mod tests {
    use super::mentions_table;

    #[test]
    fn a_view_mentions_a_table_only_as_a_whole_word() {
        assert!(mentions_table("select * from daily_orders", "daily_orders"));
        assert!(mentions_table(
            "select * from \"daily_orders\" o",
            "daily_orders"
        ));
        assert!(!mentions_table(
            "select * from daily_orders_v2",
            "daily_orders"
        ));
        assert!(!mentions_table(
            "select * from old_daily_orders",
            "daily_orders"
        ));
    }
}
