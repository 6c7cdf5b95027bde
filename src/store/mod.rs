//! natkey's own SQLite store: audit runs, their reports and per-table figures, the natural keys
//! people confirmed on the table page, and the ledgers of nightly audits (scheduled slots,
//! notifications, paused schedules). Opened in WAL mode and written in transactions, so a kill at any moment
//! leaves it consistent; migrations (`migrations/`) are embedded in the binary and applied on
//! open.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use crate::audit::report::Report;

mod history;
mod lease;
mod saved_schedules;

use history::write_run_tables;
pub use history::{LatestRun, MetricsSnapshot, TableTrendPoint};
pub use lease::{HEARTBEAT, LEASE, Swept, host_name};
pub use saved_schedules::SavedSchedule;

/// A failure of natkey's own store, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening natkey's store {path}: {message}")]
    Open { path: String, message: String },
    #[error("natkey's store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("natkey's store holds an unreadable report for run {run}: {message}")]
    BadReport { run: i64, message: String },
    /// The run is no longer this process's to change: it already ended, or another natkey
    /// marked it interrupted because this process's lease had expired.
    #[error(
        "audit run {run} is no longer running under this natkey ({status}); its outcome is not recorded"
    )]
    NotOwner { run: i64, status: String },
}

/// Where a run is in its life. `Interrupted`: it was queued or running when natkey stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// Whether the run will still change.
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            other => return Err(format!("unknown run status {other:?}")),
        })
    }
}

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunTrigger {
    /// A person, on the web app or through the API.
    Manual,
    /// The scheduler, for a slot of a `[[schedule]]`.
    Schedule,
    /// `natkey audit --save`.
    Cli,
}

impl RunTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Manual => "manual",
            RunTrigger::Schedule => "schedule",
            RunTrigger::Cli => "cli",
        }
    }
}

impl FromStr for RunTrigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "manual" => RunTrigger::Manual,
            "schedule" => RunTrigger::Schedule,
            "cli" => RunTrigger::Cli,
            other => return Err(format!("unknown run trigger {other:?}")),
        })
    }
}

/// One audit run as the store keeps it (the report itself is loaded separately).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: i64,
    pub warehouse: String,
    pub status: RunStatus,
    pub trigger: RunTrigger,
    /// The schedule the run belongs to (a slot of it, or its "Run now").
    pub schedule: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub tables_done: i64,
    pub tables_total: Option<i64>,
    pub current_table: Option<String>,
    pub error: Option<String>,
    pub tables: Option<i64>,
    pub with_duplicates: Option<i64>,
    pub excess_rows: Option<i64>,
}

/// A natural key confirmed or changed by a person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyOverride {
    pub warehouse: String,
    pub schema: String,
    pub table: String,
    pub natural_key: Vec<String>,
    pub updated_at: String,
    pub updated_by: Option<String>,
}

/// The store: a small pool of SQLite connections, and the instance this process is
/// recorded as (the owner of the runs it starts).
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    instance: std::sync::Arc<lease::Instance>,
}

const RUN_COLUMNS: &str = "id, warehouse, status, trigger, schedule, created_at, started_at, \
     finished_at, tables_done, tables_total, current_table, error, tables, with_duplicates, \
     excess_rows";

fn migrator() -> Migrator {
    let migration = |version: i64, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(description),
            MigrationType::Simple,
            AssertSqlSafe(sql).into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            20261203000001,
            "store",
            include_str!("../../migrations/20261203000001_store.sql"),
        ),
        migration(
            20261204000001,
            "schedules",
            include_str!("../../migrations/20261204000001_schedules.sql"),
        ),
        migration(
            20261205000001,
            "instances",
            include_str!("../../migrations/20261205000001_instances.sql"),
        ),
        migration(
            20261206000001,
            "saved schedules",
            include_str!("../../migrations/20261206000001_saved_schedules.sql"),
        ),
    ])
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Store {
    /// Opens (creating and migrating) the store at `path`, registers this process as an
    /// instance with a lease, then marks the runs and slots of processes that are gone as
    /// `interrupted` ([`Store::sweep`]); runs of other live processes are left alone.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let open_error = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| open_error(format!("migrating: {e}")))?;
        let store = Store {
            pool,
            instance: std::sync::Arc::new(lease::Instance::this_process()),
        };
        let now = chrono::Utc::now();
        store.heartbeat(now).await?;
        store.sweep(now).await?;
        Ok(store)
    }

    /// The connection pool, for the ledgers of `crate::schedule` and `crate::notify`, whose
    /// tables this store's migrations create.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Queues an audit of `warehouse` owned by this process, or returns the one already queued
    /// or running (a second click joins the first). The bool says whether a new run was
    /// created. One `BEGIN IMMEDIATE` transaction: concurrent calls queue one after the other,
    /// so the second always sees the first's run; runs of gone processes are swept first, so
    /// nobody joins a dead run.
    pub async fn queue_run(
        &self,
        warehouse: &str,
        trigger: RunTrigger,
        schedule: Option<&str>,
    ) -> Result<(i64, bool), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let at = chrono::Utc::now();
        self.renew_lease(&mut tx, at).await?;
        self.sweep_on(&mut tx, at).await?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE warehouse = ? AND status IN ('queued', 'running')",
        )
        .bind(warehouse)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            return Ok((id, false));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (warehouse, status, trigger, schedule, created_at, owner) \
             VALUES (?, 'queued', ?, ?, ?, ?) RETURNING id",
        )
        .bind(warehouse)
        .bind(trigger.as_str())
        .bind(schedule)
        .bind(now())
        .bind(self.instance())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((id, true))
    }

    /// Marks this process's queued run `running`.
    pub async fn mark_running(&self, id: i64) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'running', started_at = ? \
             WHERE id = ? AND status = 'queued' AND owner = ?",
        )
        .bind(now())
        .bind(id)
        .bind(self.instance())
        .execute(&self.pool)
        .await?;
        self.owned(id, done.rows_affected()).await
    }

    /// `Ok` when an update guarded by status and owner changed the run; otherwise why not.
    async fn owned(&self, id: i64, rows_affected: u64) -> Result<(), StoreError> {
        if rows_affected > 0 {
            return Ok(());
        }
        let status = match self.run(id).await? {
            Some(run) => run.status.as_str().to_string(),
            None => "no such run".into(),
        };
        Err(StoreError::NotOwner { run: id, status })
    }

    pub async fn record_progress(
        &self,
        id: i64,
        done: i64,
        total: i64,
        current: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET tables_done = ?, tables_total = ?, current_table = ? \
             WHERE id = ? AND status = 'running'",
        )
        .bind(done)
        .bind(total)
        .bind(current)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores the report and marks the run succeeded, in one transaction: only while the run
    /// is still active and owned by this process (a run another natkey marked interrupted
    /// keeps that status, and gets no report).
    pub async fn finish_run(&self, id: i64, report: &Report) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).map_err(|e| StoreError::BadReport {
            run: id,
            message: e.to_string(),
        })?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'succeeded', finished_at = ?, current_table = NULL, \
             tables_done = ?, tables_total = ?, tables = ?, with_duplicates = ?, excess_rows = ? \
             WHERE id = ? AND status IN ('queued', 'running') AND owner = ?",
        )
        .bind(now())
        .bind(report.tables.len() as i64)
        .bind(report.tables.len() as i64)
        .bind(report.summary.tables as i64)
        .bind(report.summary.with_duplicates as i64)
        .bind(report.summary.excess_rows)
        .bind(id)
        .bind(self.instance())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            drop(tx);
            return self.owned(id, 0).await;
        }
        sqlx::query("INSERT OR REPLACE INTO reports (run_id, json) VALUES (?, ?)")
            .bind(id)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        write_run_tables(&mut tx, id, report).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks this process's active run failed with `error` (same guard as `finish_run`).
    pub async fn fail_run(&self, id: i64, error: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'failed', finished_at = ?, current_table = NULL, error = ? \
             WHERE id = ? AND status IN ('queued', 'running') AND owner = ?",
        )
        .bind(now())
        .bind(error)
        .bind(id)
        .bind(self.instance())
        .execute(&self.pool)
        .await?;
        self.owned(id, done.rows_affected()).await
    }

    pub async fn run(&self, id: i64) -> Result<Option<Run>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    /// The latest `limit` runs of a warehouse, newest first.
    pub async fn runs_of(&self, warehouse: &str, limit: i64) -> Result<Vec<Run>, StoreError> {
        let sql =
            format!("SELECT {RUN_COLUMNS} FROM runs WHERE warehouse = ? ORDER BY id DESC LIMIT ?");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(warehouse)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn report(&self, id: i64) -> Result<Option<Report>, StoreError> {
        let json: Option<String> = sqlx::query_scalar("SELECT json FROM reports WHERE run_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        json.map(|text| {
            serde_json::from_str(&text).map_err(|e| StoreError::BadReport {
                run: id,
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Saves (replacing) the natural key a person chose for a table.
    pub async fn set_key_override(
        &self,
        warehouse: &str,
        schema: &str,
        table: &str,
        natural_key: &[String],
        updated_by: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = serde_json::to_string(natural_key).map_err(|e| StoreError::BadReport {
            run: 0,
            message: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO key_overrides \
                 (warehouse, schema_name, table_name, natural_key, updated_at, updated_by) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (warehouse, schema_name, table_name) DO UPDATE SET \
                 natural_key = excluded.natural_key, updated_at = excluded.updated_at, \
                 updated_by = excluded.updated_by",
        )
        .bind(warehouse)
        .bind(schema)
        .bind(table)
        .bind(key)
        .bind(now())
        .bind(updated_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn key_overrides(&self, warehouse: &str) -> Result<Vec<KeyOverride>, StoreError> {
        let rows = sqlx::query(
            "SELECT warehouse, schema_name, table_name, natural_key, updated_at, updated_by \
             FROM key_overrides WHERE warehouse = ? ORDER BY schema_name, table_name",
        )
        .bind(warehouse)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get("natural_key")?;
                Ok(KeyOverride {
                    warehouse: r.try_get("warehouse")?,
                    schema: r.try_get("schema_name")?,
                    table: r.try_get("table_name")?,
                    natural_key: serde_json::from_str(&key).unwrap_or_default(),
                    updated_at: r.try_get("updated_at")?,
                    updated_by: r.try_get("updated_by")?,
                })
            })
            .collect()
    }
}

fn run_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Run, StoreError> {
    let status: String = r.try_get("status")?;
    let trigger: String = r.try_get("trigger")?;
    Ok(Run {
        id: r.try_get("id")?,
        warehouse: r.try_get("warehouse")?,
        status: status.parse().map_err(|message| StoreError::BadReport {
            run: r.try_get("id").unwrap_or(0),
            message,
        })?,
        trigger: trigger.parse().map_err(|message| StoreError::BadReport {
            run: r.try_get("id").unwrap_or(0),
            message,
        })?,
        schedule: r.try_get("schedule")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        tables_done: r.try_get("tables_done")?,
        tables_total: r.try_get("tables_total")?,
        current_table: r.try_get("current_table")?,
        error: r.try_get("error")?,
        tables: r.try_get("tables")?,
        with_duplicates: r.try_get("with_duplicates")?,
        excess_rows: r.try_get("excess_rows")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "natkey-store-{name}-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        dir.join("natkey.db")
    }

    fn empty_report() -> Report {
        serde_json::from_str(
            r#"{"natkey_report": 1, "warehouse": "sqlite://dw", "dialect": "sqlite",
                "server_version": "3", "started_at": "x", "finished_at": "y",
                "summary": {"tables": 0, "with_duplicates": 0, "excess_rows": 0, "errors": 0},
                "tables": []}"#,
        )
        .expect("a report")
    }

    /// Ends the lease of `store`'s instance, as if its process had stopped a while ago.
    async fn expire_lease(store: &Store) {
        sqlx::query("UPDATE instances SET lease_until = '2026-01-01T00:00:00Z' WHERE id = ?")
            .bind(store.instance())
            .execute(store.pool())
            .await
            .expect("expire the lease");
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_file_leaves_a_live_run_alone_and_joins_it() {
        let path = temp_path("live");
        let a = Store::open(&path).await.expect("opens");
        let manual = RunTrigger::Manual;
        let (run, created) = a.queue_run("dw", manual, None).await.expect("queues");
        assert!(created);
        let (again, created) = a.queue_run("dw", manual, None).await.expect("queues");
        assert_eq!((again, created), (run, false));
        a.mark_running(run).await.expect("runs");
        // Another natkey (a second serve, `audit --save`) opens the same store.
        let b = Store::open(&path).await.expect("opens again");
        let seen = b.run(run).await.expect("reads").expect("exists");
        assert_eq!(seen.status, RunStatus::Running);
        assert_eq!(
            b.sweep(chrono::Utc::now()).await.expect("sweeps"),
            Swept::default()
        );
        let (joined, created) = b.queue_run("dw", manual, None).await.expect("queues");
        assert_eq!((joined, created), (run, false), "B joins A's audit");
        // Only the owner records the outcome.
        assert!(matches!(
            b.finish_run(run, &empty_report()).await,
            Err(StoreError::NotOwner { .. })
        ));
        a.finish_run(run, &empty_report())
            .await
            .expect("A finishes");
        let done = b.run(run).await.expect("reads").expect("exists");
        assert_eq!(done.status, RunStatus::Succeeded);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[tokio::test]
    async fn a_run_whose_owner_lease_expired_is_interrupted_and_its_late_outcome_refused() {
        let path = temp_path("stale");
        let a = Store::open(&path).await.expect("opens");
        let manual = RunTrigger::Manual;
        let (run, _) = a.queue_run("dw", manual, None).await.expect("queues");
        a.mark_running(run).await.expect("runs");
        expire_lease(&a).await;
        let b = Store::open(&path).await.expect("opens again");
        let seen = b.run(run).await.expect("reads").expect("exists");
        assert_eq!(seen.status, RunStatus::Interrupted);
        assert_eq!(
            seen.error.as_deref(),
            Some("natkey stopped while this audit ran")
        );
        // A was only frozen: its late outcome does not overwrite the interruption.
        let late = a.fail_run(run, "late").await;
        assert!(matches!(late, Err(StoreError::NotOwner { .. })), "{late:?}");
        let late = a.finish_run(run, &empty_report()).await;
        assert!(matches!(late, Err(StoreError::NotOwner { .. })), "{late:?}");
        assert_eq!(
            b.run(run).await.expect("reads").expect("exists").status,
            RunStatus::Interrupted
        );
        assert!(b.report(run).await.expect("reads").is_none());
        let (next, created) = b.queue_run("dw", manual, None).await.expect("queues");
        assert!(created && next != run);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[tokio::test]
    async fn a_run_of_a_dead_process_on_this_host_is_interrupted_at_once() {
        let path = temp_path("dead");
        let store = Store::open(&path).await.expect("opens");
        let mut child = std::process::Command::new("true").spawn().expect("spawns");
        let dead_pid = child.id();
        child.wait().expect("ends");
        // Its lease would still run for an hour: the dead pid is what tells.
        let lease = chrono::Utc::now() + chrono::TimeDelta::hours(1);
        sqlx::query(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_at, lease_until) \
             VALUES ('gone', ?1, ?2, ?3, ?3, ?3)",
        )
        .bind(host_name())
        .bind(i64::from(dead_pid))
        .bind(crate::schedule::slot_text(lease))
        .execute(store.pool())
        .await
        .expect("instance");
        sqlx::query(
            "INSERT INTO runs (id, warehouse, status, created_at, owner) \
             VALUES (7, 'dw', 'running', '2026-12-01T01:00:00Z', 'gone')",
        )
        .execute(store.pool())
        .await
        .expect("run");
        let swept = store.sweep(chrono::Utc::now()).await.expect("sweeps");
        assert_eq!(swept.runs, 1);
        let run = store.run(7).await.expect("reads").expect("exists");
        assert_eq!(run.status, RunStatus::Interrupted);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[tokio::test]
    async fn a_confirmed_key_replaces_the_previous_one() {
        let path = temp_path("keys");
        let store = Store::open(&path).await.expect("opens");
        let key = |cols: &[&str]| cols.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        store
            .set_key_override("dw", "s", "t", &key(&["a"]), None)
            .await
            .expect("saves");
        store
            .set_key_override("dw", "s", "t", &key(&["a", "b"]), Some("ann"))
            .await
            .expect("saves");
        let overrides = store.key_overrides("dw").await.expect("reads");
        assert_eq!(overrides.len(), 1);
        assert_eq!(overrides[0].natural_key, key(&["a", "b"]));
        assert_eq!(overrides[0].updated_by.as_deref(), Some("ann"));
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[tokio::test]
    async fn upgrading_a_store_keeps_its_runs_and_fills_the_trend_figures_from_their_reports() {
        let path = temp_path("upgrade");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        // A store as the first release left it: only the first migration, one audited run.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.expect("opens");
        let first = migrator()
            .iter()
            .next()
            .cloned()
            .expect("a first migration");
        Migrator::with_migrations(vec![first])
            .run(&pool)
            .await
            .expect("first migration");
        sqlx::query(
            "INSERT INTO runs (id, warehouse, status, created_at, finished_at) \
             VALUES (1, 'dw', 'succeeded', '2026-12-01T01:00:00Z', '2026-12-01T01:00:09Z')",
        )
        .execute(&pool)
        .await
        .expect("run");
        let report = r#"{"tables": [{"schema": "sales", "name": "daily_orders",
            "status": "duplicates", "excess_rows": 139,
            "measures": [{"column": "amount_cents", "total": 100, "overcount": 5,
                          "overcount_min": 5, "overcount_max": 7, "overcount_survivor": null}]}]}"#;
        sqlx::query("INSERT INTO reports (run_id, json) VALUES (1, ?)")
            .bind(report)
            .execute(&pool)
            .await
            .expect("report");
        pool.close().await;

        let store = Store::open(&path).await.expect("upgrades");
        let run = store.run(1).await.expect("reads").expect("kept");
        assert_eq!(run.trigger, RunTrigger::Manual);
        assert_eq!(run.schedule, None);
        let trend = store
            .table_trend("dw", "sales", "daily_orders", 10)
            .await
            .expect("trend");
        assert_eq!(trend.len(), 1);
        assert_eq!(trend[0].excess_rows, Some(139));
        assert_eq!(trend[0].measures[0].column, "amount_cents");
        assert_eq!(
            trend[0].measures[0].overcount_max.0,
            rust_decimal::Decimal::from(7)
        );
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[tokio::test]
    async fn retention_keeps_the_latest_runs_the_latest_success_and_pending_notifications() {
        let path = temp_path("retention");
        let store = Store::open(&path).await.expect("opens");
        let report = empty_report();
        let ok = store.record_cli_run("dw", None, "2026-12-01T01:00:00Z", Ok(&report));
        let succeeded = ok.await.expect("run 1");
        let mut failed = Vec::new();
        for _ in 0..4 {
            failed.push(
                store
                    .record_cli_run("dw", None, "2026-12-01T02:00:00Z", Err("down"))
                    .await
                    .expect("failed run"),
            );
        }
        // The oldest failed run still has a notification in flight.
        sqlx::query(
            "INSERT INTO notifications (idempotency_key, run_id, target, status, body, \
                 created_at, updated_at) VALUES ('natkey:2:x', ?, 'x', 'pending', '{}', 'a', 'a')",
        )
        .bind(failed[0])
        .execute(store.pool())
        .await
        .expect("notification");
        assert_eq!(store.prune("dw", 2).await.expect("prunes"), 1);
        let ids: Vec<i64> = store
            .runs_of("dw", 10)
            .await
            .expect("runs")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![failed[3], failed[2], failed[0], succeeded]);
        assert!(store.report(succeeded).await.expect("reads").is_some());
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
