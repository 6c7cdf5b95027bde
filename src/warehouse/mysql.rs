//! MySQL and MariaDB: read-only sessions and catalog queries (`information_schema`).

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;

use super::catalog::{Column, Generated, TableInfo, TableRef, kind_of};
use super::postgres::group_unique_keys;
use super::{ConnectFailure, Engine, SessionSettings, Warehouse, WarehouseSql, WarehouseUrl};

const SYSTEM_SCHEMAS: &str = "('mysql', 'information_schema', 'performance_schema', 'sys')";

pub(super) async fn connect(
    url: &WarehouseUrl,
    _settings: &SessionSettings,
) -> Result<sqlx::MySqlConnection, ConnectFailure> {
    let (driver_url, query_password) = url.driver_url();
    let mut options = MySqlConnectOptions::from_str(&driver_url)?;
    if let Some(password) = &query_password {
        options = options.password(password);
    }
    let options = options.disable_statement_logging();
    let mut conn = options.connect().await?;
    // Read-only before anything else runs; large GROUP BYs may use in-memory temp tables.
    sqlx::raw_sql(
        "SET SESSION TRANSACTION READ ONLY; \
         SET SESSION tmp_table_size = 268435456, max_heap_table_size = 268435456",
    )
    .execute(&mut conn)
    .await?;
    Ok(conn)
}

/// MariaDB and MySQL spell the statement timeout differently (seconds vs milliseconds, and
/// MySQL's applies to SELECT only, which is all natkey runs).
pub(super) async fn set_statement_timeout(wh: &mut Warehouse) -> Result<(), sqlx::Error> {
    let secs = wh.settings().statement_timeout.as_secs_f64();
    let statement = if wh.server_version().contains("MariaDB") {
        format!("SET SESSION max_statement_time = {secs:.3}")
    } else {
        format!(
            "SET SESSION max_execution_time = {}",
            (secs * 1000.0) as u64
        )
    };
    wh.query(&WarehouseSql::new(statement), &[]).await?;
    Ok(())
}

pub(super) async fn list_tables(
    wh: &mut Warehouse,
    schemas: &[String],
) -> Result<Vec<TableRef>, sqlx::Error> {
    let schemas: Vec<String> = if schemas.is_empty() {
        wh.url().database().into_iter().collect()
    } else {
        schemas.to_vec()
    };
    let (filter, binds) = if schemas.is_empty() {
        (format!("TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS}"), Vec::new())
    } else {
        let marks = vec!["?"; schemas.len()].join(", ");
        (
            format!("TABLE_SCHEMA IN ({marks})"),
            schemas.iter().cloned().map(Some).collect(),
        )
    };
    let rows = wh
        .query(
            &WarehouseSql::new(format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'BASE TABLE' AND {filter} ORDER BY 1, 2"
            )),
            &binds,
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some(TableRef::new(r.first()?.clone()?, r.get(1)?.clone()?)))
        .collect())
}

pub(super) async fn describe(
    wh: &mut Warehouse,
    table: &TableRef,
) -> Result<TableInfo, sqlx::Error> {
    let binds = [Some(table.schema.clone()), Some(table.name.clone())];
    let rows = wh
        .query(
            &WarehouseSql::new(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
                    .to_string(),
            ),
            &binds,
        )
        .await?;
    if rows.is_empty() {
        return Err(sqlx::Error::RowNotFound);
    }
    let columns = rows
        .into_iter()
        .filter_map(|r| {
            let name = r.first().cloned().flatten()?;
            let data_type = r.get(1).cloned().flatten().unwrap_or_default();
            let extra = r
                .get(4)
                .cloned()
                .flatten()
                .unwrap_or_default()
                .to_ascii_lowercase();
            // MariaDB reports "no default" as the text NULL and quotes literal defaults.
            let default = r
                .get(3)
                .cloned()
                .flatten()
                .filter(|d| !d.eq_ignore_ascii_case("null"));
            Some(Column {
                kind: kind_of(&data_type),
                nullable: r.get(2).cloned().flatten().as_deref() == Some("YES"),
                default,
                generated: extra
                    .contains("auto_increment")
                    .then_some(Generated::AutoIncrement),
                on_update_now: extra.contains("on update current_timestamp"),
                computed: extra.contains("generated") && !extra.contains("default_generated"),
                name,
                data_type,
            })
        })
        .collect();
    let keys = wh
        .query(
            &WarehouseSql::new(
                "SELECT INDEX_NAME, COLUMN_NAME, CAST(SUB_PART AS CHAR) \
                 FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
                 ORDER BY INDEX_NAME, SEQ_IN_INDEX"
                    .to_string(),
            ),
            &binds,
        )
        .await?;
    let unique_keys = group_unique_keys(keys.into_iter().map(|r| {
        let name = r.first().cloned().flatten().unwrap_or_default();
        // A prefix index (SUB_PART) is not a key over whole column values.
        let column = match r.get(2).cloned().flatten() {
            Some(_) => None,
            None => r.get(1).cloned().flatten(),
        };
        (name.clone(), name == "PRIMARY", true, column)
    }));
    let estimate = wh
        .query(
            &WarehouseSql::new(
                "SELECT CAST(TABLE_ROWS AS CHAR) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?"
                    .to_string(),
            ),
            &binds,
        )
        .await?;
    Ok(TableInfo {
        table: table.clone(),
        columns,
        unique_keys,
        estimated_rows: super::first_text(estimate).and_then(|t| t.parse().ok()),
        partitioned: false,
        partition_key: Vec::new(),
    })
}

pub(super) async fn downstream(
    wh: &mut Warehouse,
    table: &TableRef,
) -> Result<Vec<String>, sqlx::Error> {
    // MySQL stores a view's query with fully qualified, backquoted names; MariaDB likewise.
    let needle = Engine::MySql.qualified(table).to_lowercase();
    let rows = wh
        .query(
            &WarehouseSql::new(format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS \
                 WHERE TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS} ORDER BY 1, 2"
            )),
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.get(2)
                .cloned()
                .flatten()
                .is_some_and(|d| d.to_lowercase().contains(&needle))
        })
        .filter_map(|r| Some(format!("{}.{}", r.first()?.as_ref()?, r.get(1)?.as_ref()?)))
        .collect())
}
