//! Read-only connections to the warehouses natkey audits, their catalogs, and the one place
//! where identifiers become SQL.
//!
//! Every value natkey reads from a warehouse is cast to text *in SQL* and decoded as
//! `Option<String>`; numbers are then parsed exactly (see `audit::figures`). One decoding path
//! serves three engines and every column type, and money never passes through a float.

mod catalog;
mod mysql;
mod postgres;
mod sqlite;
mod url;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::{Connection, Row};

pub use self::catalog::{Column, ColumnKind, Generated, TableInfo, TableRef, UniqueKey, kind_of};
pub use self::url::{WarehouseUrl, redact};

/// One row of a query whose every column was cast to text.
pub type TextRow = Vec<Option<String>>;

/// The engines natkey connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    #[serde(rename = "mysql")]
    MySql,
    Sqlite,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MySql => "mysql",
            Engine::Sqlite => "sqlite",
        }
    }

    /// Quotes an identifier for this engine. **Invariant:** this is the only function that turns
    /// a name into SQL text; every schema, table and column name goes through it.
    pub fn quote_ident(self, ident: &str) -> String {
        match self {
            Engine::Postgres | Engine::Sqlite => format!("\"{}\"", ident.replace('"', "\"\"")),
            Engine::MySql => format!("`{}`", ident.replace('`', "``")),
        }
    }

    /// `"schema"."table"`, quoted.
    pub fn qualified(self, table: &TableRef) -> String {
        format!(
            "{}.{}",
            self.quote_ident(&table.schema),
            self.quote_ident(&table.name)
        )
    }

    /// The bind placeholder for the `n`th (1-based) parameter.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Engine::Postgres => format!("${n}"),
            Engine::MySql | Engine::Sqlite => "?".to_string(),
        }
    }

    /// `CAST(expr AS <text type>)`.
    pub fn to_text(self, expr: &str) -> String {
        match self {
            Engine::Postgres | Engine::Sqlite => format!("CAST({expr} AS TEXT)"),
            Engine::MySql => format!("CAST({expr} AS CHAR)"),
        }
    }

    /// The calendar day of a date or timestamp expression.
    pub fn to_day(self, expr: &str) -> String {
        match self {
            Engine::Postgres | Engine::MySql => format!("CAST({expr} AS DATE)"),
            Engine::Sqlite => format!("date({expr})"),
        }
    }

    /// A JSON array of the expressions, as text: used to carry a composite key value out of an
    /// aggregate and back into a query. Give it [`Engine::key_text`] parts, never raw values:
    /// JSON numbers lose digits and JSON holds no arrays of the engine's types or BLOBs.
    pub fn json_array(self, exprs: &[String]) -> String {
        let list = exprs.join(", ");
        match self {
            Engine::Postgres => format!("CAST(json_build_array({list}) AS TEXT)"),
            Engine::MySql => format!("CAST(JSON_ARRAY({list}) AS CHAR)"),
            Engine::Sqlite => format!("json_array({list})"),
        }
    }

    /// One part of a key value as text that [`Engine::key_part_eq`] turns back into exactly
    /// that value: the engine's own text form (PostgreSQL, MySQL), which every type has and which
    /// keeps every digit of a decimal; on SQLite `quote()`, which also keeps the storage class
    /// (`1`, `'1'` and `X'31'` are three keys there) and turns a BLOB into text.
    pub fn key_text(self, expr: &str) -> String {
        match self {
            Engine::Postgres | Engine::MySql => self.to_text(expr),
            Engine::Sqlite => format!("quote({expr})"),
        }
    }

    /// Whether a column holds the key part `param` (a bind holding [`Engine::key_text`] of the
    /// value, or NULL), with GROUP BY's equality: NULL matches NULL; PostgreSQL casts the text
    /// back to the column's type; MySQL compares text columns under their own collation, as
    /// GROUP BY does, and other columns by their text.
    pub fn key_part_eq(
        self,
        column_sql: &str,
        data_type: &str,
        kind: ColumnKind,
        param: &str,
    ) -> String {
        match self {
            Engine::Postgres => {
                format!("{column_sql} IS NOT DISTINCT FROM CAST({param} AS {data_type})")
            }
            Engine::MySql if kind == ColumnKind::Text => format!("{column_sql} <=> {param}"),
            Engine::MySql => format!("{} <=> {param}", self.to_text(column_sql)),
            Engine::Sqlite => format!("quote({column_sql}) IS {param}"),
        }
    }

    /// An expression whose order is total and agrees with exact equality of the column's values
    /// (two values that differ never tie): the text on PostgreSQL, the bytes on MySQL (whose
    /// collations tie `'a'` with `'A'` and `'a '`), `quote()` on SQLite.
    pub fn exact_order(self, expr: &str) -> String {
        match self {
            Engine::Postgres => self.to_text(expr),
            Engine::MySql => format!("CAST({expr} AS BINARY)"),
            Engine::Sqlite => format!("quote({expr})"),
        }
    }
}

/// SQL text built by natkey for a warehouse. **Invariant:** it is assembled only from
/// natkey's own fixed fragments and identifiers passed through [`Engine::quote_ident`];
/// values go in as bind parameters. Executing it is the one place that asserts this to sqlx.
#[derive(Debug, Clone)]
pub struct WarehouseSql(String);

impl WarehouseSql {
    pub fn new(text: String) -> Self {
        WarehouseSql(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("invalid warehouse URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("connecting to warehouse {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{context}: {message}")]
    Query { context: String, message: String },
}

impl WarehouseError {
    pub fn query(context: impl Into<String>, err: &sqlx::Error) -> Self {
        WarehouseError::Query {
            context: context.into(),
            message: describe_sqlx_error(err),
        }
    }
}

/// sqlx's messages, shortened to what a person needs.
pub fn describe_sqlx_error(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_string(),
        other => other.to_string(),
    }
}

/// Settings for the sessions natkey opens.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    /// PostgreSQL `work_mem` for natkey's own aggregates (`SET LOCAL` in its read-only
    /// transaction), so the scan sorts millions of keys in memory instead of on disk.
    pub work_mem: String,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            statement_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(15),
            work_mem: "512MB".to_string(),
        }
    }
}

enum Conn {
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
    Sqlite(sqlx::SqliteConnection, sqlite::Deadline),
}

/// A read-only session on one warehouse.
///
/// **Invariant:** the session is read-only before natkey sends its first query: PostgreSQL
/// `default_transaction_read_only=on` (and every query in a `READ ONLY` transaction), MySQL/MariaDB
/// `SET SESSION TRANSACTION READ ONLY`, SQLite `mode=ro`. natkey never writes to a warehouse.
pub struct Warehouse {
    url: WarehouseUrl,
    conn: Conn,
    settings: SessionSettings,
    server_version: String,
    /// Inside [`Warehouse::begin_snapshot`]: statements share one transaction's snapshot.
    in_snapshot: bool,
}

impl Warehouse {
    /// Opens a read-only session. Errors name the warehouse (password redacted) and the cause.
    pub async fn connect(
        url: &WarehouseUrl,
        settings: SessionSettings,
    ) -> Result<Warehouse, WarehouseError> {
        // A driver's message may quote the URL or the password: scrub it.
        let fail = |message: String| WarehouseError::Connect {
            url: url.redacted().to_string(),
            message: url.scrub(&message),
        };
        let connecting = async {
            match url.engine() {
                Engine::Postgres => postgres::connect(url, &settings).await.map(Conn::Postgres),
                Engine::MySql => mysql::connect(url, &settings).await.map(Conn::MySql),
                Engine::Sqlite => sqlite::connect(url)
                    .await
                    .map(|(conn, deadline)| Conn::Sqlite(conn, deadline)),
            }
        };
        let conn = match tokio::time::timeout(settings.connect_timeout, connecting).await {
            Err(_) => {
                return Err(fail(format!(
                    "no answer within {}s",
                    settings.connect_timeout.as_secs()
                )));
            }
            Ok(Err(ConnectFailure::Message(m))) => return Err(fail(m)),
            Ok(Err(ConnectFailure::Sqlx(e))) => return Err(fail(describe_sqlx_error(&e))),
            Ok(Ok(conn)) => conn,
        };
        let mut warehouse = Warehouse {
            url: url.clone(),
            conn,
            settings,
            server_version: String::new(),
            in_snapshot: false,
        };
        let version_sql = match url.engine() {
            Engine::Postgres => "SELECT current_setting('server_version_num')",
            Engine::MySql => "SELECT VERSION()",
            Engine::Sqlite => "SELECT sqlite_version()",
        };
        let rows = warehouse
            .query(&WarehouseSql::new(version_sql.to_string()), &[])
            .await
            .map_err(|e| fail(describe_sqlx_error(&e)))?;
        warehouse.server_version = rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_default();
        if url.engine() == Engine::MySql {
            mysql::set_statement_timeout(&mut warehouse)
                .await
                .map_err(|e| fail(describe_sqlx_error(&e)))?;
        }
        Ok(warehouse)
    }

    pub fn engine(&self) -> Engine {
        self.url.engine()
    }

    pub fn url(&self) -> &WarehouseUrl {
        &self.url
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// `server_version_num` on PostgreSQL, `VERSION()` on MySQL, `sqlite_version()` on SQLite.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Whether the session still answers (after a table failed: a lost connection fails every
    /// table after it, so the audit stops instead).
    pub async fn ping(&mut self) -> Result<(), WarehouseError> {
        use sqlx::Connection;
        let answer = match &mut self.conn {
            Conn::Postgres(conn) => conn.ping().await,
            Conn::MySql(conn) => conn.ping().await,
            Conn::Sqlite(conn, _) => conn.ping().await,
        };
        answer.map_err(|e| WarehouseError::query("the warehouse connection", &e))
    }

    /// Runs one statement and returns its rows with every column decoded as text. Statements
    /// must cast their columns to text themselves ([`Engine::to_text`]).
    pub async fn query(
        &mut self,
        sql: &WarehouseSql,
        binds: &[Option<String>],
    ) -> Result<Vec<TextRow>, sqlx::Error> {
        self.run(sql, binds, false).await
    }

    /// Like [`Warehouse::query`], for natkey's scans of whole tables: on PostgreSQL the
    /// statement runs with `work_mem` raised and parallel workers made cheap, for it alone
    /// (`SET LOCAL`): the scan sorts in memory and splits the sort across the server's cores.
    pub async fn query_heavy(
        &mut self,
        sql: &WarehouseSql,
        binds: &[Option<String>],
    ) -> Result<Vec<TextRow>, sqlx::Error> {
        self.run(sql, binds, true).await
    }

    /// Until [`Warehouse::end_snapshot`], every statement reads one consistent snapshot of the
    /// warehouse, so the figures of a table (its scan, totals, survivor overcount and samples)
    /// agree even while loads run: PostgreSQL `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`,
    /// MySQL/MariaDB `START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT`. SQLite reads a
    /// file natkey holds read-only; each statement there is its own snapshot.
    pub async fn begin_snapshot(&mut self) -> Result<(), WarehouseError> {
        self.end_snapshot().await;
        let begin = match &mut self.conn {
            Conn::Postgres(conn) => {
                sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            }
            Conn::MySql(conn) => {
                sqlx::raw_sql("START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT")
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            }
            Conn::Sqlite(..) => return Ok(()),
        };
        begin.map_err(|e| WarehouseError::query("starting a read-only snapshot", &e))?;
        self.in_snapshot = true;
        Ok(())
    }

    /// Ends the snapshot of [`Warehouse::begin_snapshot`] (a rollback: natkey wrote nothing).
    pub async fn end_snapshot(&mut self) {
        if !std::mem::take(&mut self.in_snapshot) {
            return;
        }
        // A failure here means the session is gone; the next statement reports it.
        let _ = match &mut self.conn {
            Conn::Postgres(conn) => sqlx::raw_sql("ROLLBACK")
                .execute(&mut *conn)
                .await
                .map(drop),
            Conn::MySql(conn) => sqlx::raw_sql("ROLLBACK")
                .execute(&mut *conn)
                .await
                .map(drop),
            Conn::Sqlite(..) => return,
        };
    }

    async fn run(
        &mut self,
        sql: &WarehouseSql,
        binds: &[Option<String>],
        heavy: bool,
    ) -> Result<Vec<TextRow>, sqlx::Error> {
        // The text was built from quoted identifiers and natkey's own fragments (see WarehouseSql).
        let text = sqlx::AssertSqlSafe(sql.0.clone());
        match &mut self.conn {
            Conn::Postgres(conn) if self.in_snapshot => {
                // A savepoint per statement: a failing statement does not abort the snapshot,
                // and rolling back to it ends the statement's SET LOCAL settings.
                sqlx::raw_sql("SAVEPOINT natkey_statement")
                    .execute(&mut *conn)
                    .await?;
                let rows = postgres::statement(conn, text, binds, heavy, &self.settings).await;
                let restored = sqlx::raw_sql(
                    "ROLLBACK TO SAVEPOINT natkey_statement; RELEASE SAVEPOINT natkey_statement",
                )
                .execute(&mut *conn)
                .await;
                // The statement's own error says more than the rollback's.
                let rows = rows?;
                restored?;
                rows.iter().map(text_row).collect()
            }
            Conn::Postgres(conn) => {
                let mut tx = conn.begin_with("BEGIN READ ONLY").await?;
                let rows = postgres::statement(&mut tx, text, binds, heavy, &self.settings).await?;
                tx.rollback().await?;
                rows.iter().map(text_row).collect()
            }
            Conn::MySql(conn) => {
                let mut query = sqlx::query(text);
                for b in binds {
                    query = query.bind(b.clone());
                }
                let rows = query.fetch_all(&mut *conn).await?;
                rows.iter().map(text_row).collect()
            }
            Conn::Sqlite(conn, deadline) => {
                let mut query = sqlx::query(text);
                for b in binds {
                    query = query.bind(b.clone());
                }
                let timeout = self.settings.statement_timeout;
                let set = |until: Option<Instant>| {
                    *deadline.lock().unwrap_or_else(|e| e.into_inner()) = until;
                };
                set(Some(Instant::now() + timeout));
                let rows = query.fetch_all(&mut *conn).await;
                let expired = deadline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some_and(|until| Instant::now() >= until);
                set(None);
                match rows {
                    Err(_) if expired => Err(sqlite::timed_out(timeout)),
                    rows => rows?.iter().map(text_row).collect(),
                }
            }
        }
    }

    /// Every base table in the given schemas (all non-system schemas when empty) that this
    /// session may read. Partitioned PostgreSQL tables appear once, as the parent; their
    /// partitions do not.
    pub async fn list_tables(
        &mut self,
        schemas: &[String],
    ) -> Result<TableListing, WarehouseError> {
        let result = match self.engine() {
            Engine::Postgres => postgres::list_tables(self, schemas).await,
            // information_schema and sqlite_master only show what the session may read.
            Engine::MySql => mysql::list_tables(self, schemas)
                .await
                .map(|t| (t, Vec::new())),
            Engine::Sqlite => sqlite::list_tables(self, schemas)
                .await
                .map(|t| (t, Vec::new())),
        };
        result
            .map(|(tables, unreadable)| TableListing { tables, unreadable })
            .map_err(|e| WarehouseError::query("listing tables", &e))
    }

    /// Columns, defaults and unique keys of one table.
    pub async fn describe(&mut self, table: &TableRef) -> Result<TableInfo, WarehouseError> {
        let result = match self.engine() {
            Engine::Postgres => postgres::describe(self, table).await,
            Engine::MySql => mysql::describe(self, table).await,
            Engine::Sqlite => sqlite::describe(self, table).await,
        };
        result.map_err(|e| WarehouseError::query(format!("reading the catalog of {table}"), &e))
    }

    /// Views that read the table, as `schema.view`.
    pub async fn downstream(&mut self, table: &TableRef) -> Result<Vec<String>, WarehouseError> {
        let result = match self.engine() {
            Engine::Postgres => postgres::downstream(self, table).await,
            Engine::MySql => mysql::downstream(self, table).await,
            Engine::Sqlite => sqlite::downstream(self, table).await,
        };
        result.map_err(|e| WarehouseError::query(format!("finding views that read {table}"), &e))
    }
}

/// The tables of a warehouse as this session sees them.
#[derive(Debug, Clone, Default)]
pub struct TableListing {
    pub tables: Vec<TableRef>,
    /// Tables that exist but that this session may not SELECT from.
    pub unreadable: Vec<TableRef>,
}

pub(crate) enum ConnectFailure {
    Message(String),
    Sqlx(sqlx::Error),
}

impl From<sqlx::Error> for ConnectFailure {
    fn from(e: sqlx::Error) -> Self {
        ConnectFailure::Sqlx(e)
    }
}

fn text_row<R>(row: &R) -> Result<TextRow, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.columns().len())
        .map(|i| match row.try_get::<Option<String>, _>(i) {
            Ok(v) => Ok(v),
            // Some catalog columns come back as binary strings (MySQL); their bytes are text.
            Err(first) => match row.try_get_unchecked::<Option<Vec<u8>>, _>(i) {
                Ok(bytes) => Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned())),
                Err(_) => Err(first),
            },
        })
        .collect()
}

/// The text of the first column of the first row, if any.
pub(crate) fn first_text(rows: Vec<TextRow>) -> Option<String> {
    rows.into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_identifiers_are_quoted_for_each_engine() {
        let name = r#"Weird "Table" <script>`x`; DROP"#;
        assert_eq!(
            Engine::Postgres.quote_ident(name),
            r#""Weird ""Table"" <script>`x`; DROP""#
        );
        assert_eq!(
            Engine::Sqlite.quote_ident(name),
            r#""Weird ""Table"" <script>`x`; DROP""#
        );
        assert_eq!(
            Engine::MySql.quote_ident(name),
            r#"`Weird "Table" <script>``x``; DROP`"#
        );
    }
}
