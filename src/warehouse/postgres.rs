//! PostgreSQL (and engines that speak its protocol): read-only sessions and catalog queries.

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use super::catalog::{Column, Generated, TableInfo, TableRef, UniqueKey, kind_of};
use super::{ConnectFailure, SessionSettings, Warehouse, WarehouseSql, WarehouseUrl};

pub(super) async fn connect(
    url: &WarehouseUrl,
    settings: &SessionSettings,
) -> Result<sqlx::PgConnection, ConnectFailure> {
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    let (driver_url, query_password) = url.driver_url();
    let mut options = PgConnectOptions::from_str(&driver_url)?;
    if let Some(password) = &query_password {
        options = options.password(password);
    }
    let options = options
        .application_name("natkey")
        // Read-only from the first statement on: the server refuses writes in this session.
        .options([
            ("default_transaction_read_only", "on"),
            ("statement_timeout", timeout_ms.as_str()),
            ("lock_timeout", "30000"),
            ("idle_in_transaction_session_timeout", "600000"),
        ])
        .disable_statement_logging();
    Ok(options.connect().await?)
}

/// Runs one statement in the current transaction; a heavy one (natkey's scans) first raises
/// `work_mem` and makes parallel workers cheap, for the rest of the transaction (`SET LOCAL`).
pub(super) async fn statement(
    conn: &mut sqlx::PgConnection,
    text: sqlx::AssertSqlSafe<String>,
    binds: &[Option<String>],
    heavy: bool,
    settings: &SessionSettings,
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    if heavy {
        let work_mem = setting_literal(&settings.work_mem);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET LOCAL work_mem = {work_mem}; \
             SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0"
        )))
        .execute(&mut *conn)
        .await?;
    }
    let mut query = sqlx::query(text);
    for b in binds {
        query = query.bind(b.clone());
    }
    query.fetch_all(&mut *conn).await
}

/// A `SET` value as a quoted literal (`'256MB'`); the value comes from natkey's config.
fn setting_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn sql(text: &str) -> WarehouseSql {
    WarehouseSql::new(text.to_string())
}

/// `pg_class` OID of a table, as a subquery on bind parameters $1 (schema) and $2 (name).
const TABLE_OID: &str = "(SELECT c.oid FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2)";

/// Tables in the schemas (all non-system ones when empty), and separately the tables this
/// session may not read (a read-only role often sees a subset).
pub(super) async fn list_tables(
    wh: &mut Warehouse,
    schemas: &[String],
) -> Result<(Vec<TableRef>, Vec<TableRef>), sqlx::Error> {
    let rows = wh
        .query(
            &sql("SELECT n.nspname::text, c.relname::text, \
                        (has_schema_privilege(n.oid, 'USAGE') \
                         AND has_table_privilege(c.oid, 'SELECT'))::text \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
                 ORDER BY 1, 2"),
            &[],
        )
        .await?;
    let mut readable = Vec::new();
    let mut unreadable = Vec::new();
    for r in rows {
        let (Some(schema), Some(name)) =
            (r.first().cloned().flatten(), r.get(1).cloned().flatten())
        else {
            continue;
        };
        if !schemas.is_empty() && !schemas.contains(&schema) {
            continue;
        }
        let table = TableRef::new(schema, name);
        if r.get(2).cloned().flatten().as_deref() == Some("true") {
            readable.push(table);
        } else {
            unreadable.push(table);
        }
    }
    Ok((readable, unreadable))
}

pub(super) async fn describe(
    wh: &mut Warehouse,
    table: &TableRef,
) -> Result<TableInfo, sqlx::Error> {
    let binds = [Some(table.schema.clone()), Some(table.name.clone())];
    let columns = wh
        .query(
            &sql(&format!(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                        (NOT a.attnotnull)::text, pg_get_expr(d.adbin, d.adrelid), \
                        a.attidentity::text, a.attgenerated::text \
                 FROM pg_catalog.pg_attribute a \
                 LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 WHERE a.attrelid = {TABLE_OID} AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum"
            )),
            &binds,
        )
        .await?;
    if columns.is_empty() {
        return Err(sqlx::Error::RowNotFound);
    }
    let columns = columns
        .into_iter()
        .filter_map(|r| {
            let name = r.first().cloned().flatten()?;
            let data_type = r.get(1).cloned().flatten().unwrap_or_default();
            let identity = r.get(4).cloned().flatten().unwrap_or_default();
            let generated_stored = r.get(5).cloned().flatten().unwrap_or_default();
            Some(Column {
                kind: kind_of(&data_type),
                nullable: r.get(2).cloned().flatten().as_deref() == Some("true"),
                default: r.get(3).cloned().flatten(),
                generated: (identity == "a" || identity == "d").then_some(Generated::Identity),
                on_update_now: false,
                computed: generated_stored == "s",
                name,
                data_type,
            })
        })
        .collect();

    // PostgreSQL 15 added NULLS NOT DISTINCT; before it, NULLs are always distinct.
    let nulls_not_distinct = if wh.server_version().parse::<u32>().unwrap_or(0) >= 150000 {
        "i.indnullsnotdistinct::text"
    } else {
        "'false'"
    };
    let keys = wh
        .query(
            &sql(&format!(
                "SELECT ci.relname::text, i.indisprimary::text, {nulls_not_distinct}, \
                        a.attname::text \
                 FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid \
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                 LEFT JOIN pg_catalog.pg_attribute a \
                        ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = {TABLE_OID} AND i.indisunique AND i.indisvalid \
                   AND i.indpred IS NULL AND k.ord <= i.indnkeyatts \
                 ORDER BY ci.relname, k.ord"
            )),
            &binds,
        )
        .await?;
    let unique_keys = group_unique_keys(keys.into_iter().map(|r| {
        (
            r.first().cloned().flatten().unwrap_or_default(),
            r.get(1).cloned().flatten().as_deref() == Some("true"),
            r.get(2).cloned().flatten().as_deref() != Some("true"),
            // attnum 0 is an expression column: such an index is not a plain column key.
            r.get(3).cloned().flatten(),
        )
    }));

    let estimate = wh
        .query(
            &sql(&format!(
                "SELECT CAST(CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples END AS bigint)::text, \
                        (c.relkind = 'p')::text \
                 FROM pg_catalog.pg_class c WHERE c.oid = {TABLE_OID}"
            )),
            &binds,
        )
        .await?;
    let estimate = estimate.into_iter().next().unwrap_or_default();
    let partitioned = estimate.get(1).cloned().flatten().as_deref() == Some("true");
    let partition_key = if partitioned {
        wh.query(
            &sql(&format!(
                "SELECT a.attname::text FROM pg_catalog.pg_partitioned_table p \
                 CROSS JOIN LATERAL unnest(p.partattrs::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum \
                 WHERE p.partrelid = {TABLE_OID} ORDER BY k.ord"
            )),
            &binds,
        )
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
    } else {
        Vec::new()
    };
    Ok(TableInfo {
        table: table.clone(),
        columns,
        unique_keys,
        estimated_rows: estimate
            .first()
            .cloned()
            .flatten()
            .and_then(|t| t.parse().ok()),
        partitioned,
        partition_key,
    })
}

/// Folds (index, primary, nulls_distinct, column) rows, in index order, into keys; an index with
/// an expression column (`None`) is dropped.
pub(super) fn group_unique_keys(
    rows: impl Iterator<Item = (String, bool, bool, Option<String>)>,
) -> Vec<UniqueKey> {
    let mut keys: Vec<(UniqueKey, bool)> = Vec::new();
    for (name, primary, nulls_distinct, column) in rows {
        if keys.last().is_none_or(|(k, _)| k.name != name) {
            keys.push((
                UniqueKey {
                    name,
                    primary,
                    columns: Vec::new(),
                    nulls_distinct,
                },
                true,
            ));
        }
        if let Some((key, plain)) = keys.last_mut() {
            match column {
                Some(c) => key.columns.push(c),
                None => *plain = false,
            }
        }
    }
    keys.into_iter()
        .filter(|(k, plain)| *plain && !k.columns.is_empty())
        .map(|(k, _)| k)
        .collect()
}

pub(super) async fn downstream(
    wh: &mut Warehouse,
    table: &TableRef,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = wh
        .query(
            &sql(&format!(
                "SELECT DISTINCT vn.nspname::text, v.relname::text \
                 FROM pg_catalog.pg_depend d \
                 JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
                 JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
                 JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass \
                   AND d.refclassid = 'pg_catalog.pg_class'::regclass \
                   AND d.refobjid = {TABLE_OID} AND v.oid <> d.refobjid \
                   AND v.relkind IN ('v', 'm') \
                 ORDER BY 1, 2"
            )),
            &[Some(table.schema.clone()), Some(table.name.clone())],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some(format!("{}.{}", r.first()?.as_ref()?, r.get(1)?.as_ref()?)))
        .collect())
}
