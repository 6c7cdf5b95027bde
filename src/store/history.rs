//! The history side of the store: runs recorded by `natkey audit --save`, the runs of a
//! schedule, the previous run a run is compared with, per-table trends, paused schedules,
//! retention, and the figures `/metrics` exports.

use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use super::{RUN_COLUMNS, Run, Store, StoreError, now, run_from_row};
use crate::audit::report::{MeasureFigures, Report};

/// One run's figures for one table, for the table page's trend chart.
#[derive(Debug, Clone, PartialEq)]
pub struct TableTrendPoint {
    pub run_id: i64,
    pub finished_at: String,
    pub status: String,
    pub excess_rows: Option<i64>,
    pub measures: Vec<MeasureFigures>,
}

/// What `/metrics` exports, read in one go.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// (warehouse, status, runs).
    pub runs_by_status: Vec<(String, String, i64)>,
    /// (target, status, notifications).
    pub notifications_by_status: Vec<(String, String, i64)>,
    /// The latest succeeded run of each warehouse.
    pub latest: Vec<LatestRun>,
}

/// A warehouse's latest succeeded run and its per-table figures.
#[derive(Debug, Clone)]
pub struct LatestRun {
    pub warehouse: String,
    pub run_id: i64,
    pub finished_at: String,
    /// Seconds from start to finish, when both are known.
    pub duration_secs: Option<f64>,
    pub tables: Vec<TableTrendPoint>,
    /// (schema, table) of each entry of `tables`, in the same order.
    pub names: Vec<(String, String)>,
}

/// Writes a succeeded run's per-table figures (in the transaction that stores its report).
pub async fn write_run_tables(
    tx: &mut Transaction<'_, Sqlite>,
    run: i64,
    report: &Report,
) -> Result<(), StoreError> {
    for t in &report.tables {
        let measures = serde_json::to_string(&t.measures).map_err(|e| StoreError::BadReport {
            run,
            message: e.to_string(),
        })?;
        sqlx::query(
            "INSERT OR REPLACE INTO run_tables \
                 (run_id, schema_name, table_name, status, excess_rows, measures) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(run)
        .bind(&t.schema)
        .bind(&t.name)
        .bind(t.status.as_str())
        .bind(t.excess_rows)
        .bind(measures)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn seconds_between(start: Option<&str>, end: Option<&str>) -> Option<f64> {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let (start, end) = (parse(start?)?, parse(end?)?);
    Some((end - start).num_milliseconds() as f64 / 1000.0)
}

impl Run {
    /// Seconds from start to finish, when the run has both.
    pub fn duration_secs(&self) -> Option<f64> {
        seconds_between(self.started_at.as_deref(), self.finished_at.as_deref())
    }
}

impl Store {
    /// Records a run `natkey audit --save` made: already finished, with its report when it
    /// succeeded or its reason when it failed. Returns the run's id.
    pub async fn record_cli_run(
        &self,
        warehouse: &str,
        schedule: Option<&str>,
        started_at: &str,
        outcome: Result<&Report, &str>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let finished_at = now();
        let id: i64 = match outcome {
            Ok(report) => {
                let json = serde_json::to_string(report).map_err(|e| StoreError::BadReport {
                    run: 0,
                    message: e.to_string(),
                })?;
                let tables = report.tables.len() as i64;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO runs (warehouse, status, trigger, schedule, created_at, \
                         started_at, finished_at, tables_done, tables_total, tables, \
                         with_duplicates, excess_rows) \
                     VALUES (?, 'succeeded', 'cli', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(warehouse)
                .bind(schedule)
                .bind(started_at)
                .bind(started_at)
                .bind(&finished_at)
                .bind(tables)
                .bind(tables)
                .bind(report.summary.tables as i64)
                .bind(report.summary.with_duplicates as i64)
                .bind(report.summary.excess_rows)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO reports (run_id, json) VALUES (?, ?)")
                    .bind(id)
                    .bind(json)
                    .execute(&mut *tx)
                    .await?;
                write_run_tables(&mut tx, id, report).await?;
                id
            }
            Err(reason) => {
                sqlx::query_scalar(
                    "INSERT INTO runs (warehouse, status, trigger, schedule, created_at, \
                         started_at, finished_at, error) \
                     VALUES (?, 'failed', 'cli', ?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(warehouse)
                .bind(schedule)
                .bind(started_at)
                .bind(started_at)
                .bind(&finished_at)
                .bind(reason)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(id)
    }

    /// Links a claimed slot (`scheduled_runs.id`) to the audit run it started.
    pub async fn link_slot(&self, slot: i64, run: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE scheduled_runs SET run_id = ? WHERE id = ?")
            .bind(run)
            .bind(slot)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A schedule's latest `limit` runs, newest first: runs started for it, and runs its slots
    /// joined (an audit of the warehouse already under way when the slot came).
    pub async fn runs_of_schedule(
        &self,
        schedule: &str,
        limit: i64,
    ) -> Result<Vec<Run>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE schedule = ?1 \
                OR id IN (SELECT run_id FROM scheduled_runs WHERE schedule = ?1) \
             ORDER BY id DESC LIMIT ?2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(schedule)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The slot each of a schedule's runs was started for: run id -> (slot, missed slots when
    /// it ran late).
    pub async fn slots_of_schedule(
        &self,
        schedule: &str,
    ) -> Result<std::collections::HashMap<i64, (String, Option<i64>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, scheduled_for, catch_up FROM scheduled_runs              WHERE schedule = ? AND run_id IS NOT NULL",
        )
        .bind(schedule)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("run_id")?,
                    (r.try_get("scheduled_for")?, r.try_get("catch_up")?),
                ))
            })
            .collect()
    }

    /// The run `run` is compared with: the previous succeeded run of the same schedule, or for
    /// a run outside any schedule, the previous succeeded run of the same warehouse.
    pub async fn previous_succeeded(&self, run: &Run) -> Result<Option<i64>, StoreError> {
        let id = match &run.schedule {
            Some(schedule) => {
                sqlx::query_scalar(
                    "SELECT id FROM runs WHERE status = 'succeeded' AND id < ?1 AND \
                       (schedule = ?2 OR id IN (SELECT run_id FROM scheduled_runs WHERE schedule = ?2)) \
                     ORDER BY id DESC LIMIT 1",
                )
                .bind(run.id)
                .bind(schedule)
                .fetch_optional(&self.pool)
                .await?
            }
            None => {
                sqlx::query_scalar(
                    "SELECT id FROM runs WHERE status = 'succeeded' AND id < ? AND warehouse = ? \
                     ORDER BY id DESC LIMIT 1",
                )
                .bind(run.id)
                .bind(&run.warehouse)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        Ok(id)
    }

    /// The schedules paused on the Schedules page.
    pub async fn paused_schedules(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT schedule FROM schedule_pauses ORDER BY schedule")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Pauses or resumes a schedule (pausing twice, or resuming a running one, changes nothing).
    pub async fn set_paused(
        &self,
        schedule: &str,
        paused: bool,
        by: Option<&str>,
    ) -> Result<(), StoreError> {
        if paused {
            sqlx::query(
                "INSERT INTO schedule_pauses (schedule, paused_at, paused_by) VALUES (?, ?, ?) \
                 ON CONFLICT (schedule) DO NOTHING",
            )
            .bind(schedule)
            .bind(now())
            .bind(by)
            .execute(&self.pool)
            .await?;
        } else {
            sqlx::query("DELETE FROM schedule_pauses WHERE schedule = ?")
                .bind(schedule)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// One table's figures over the latest `limit` succeeded runs of a warehouse, oldest first.
    pub async fn table_trend(
        &self,
        warehouse: &str,
        schema: &str,
        table: &str,
        limit: i64,
    ) -> Result<Vec<TableTrendPoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.run_id, r.finished_at, t.status, t.excess_rows, t.measures \
             FROM run_tables AS t JOIN runs AS r ON r.id = t.run_id \
             WHERE r.warehouse = ? AND t.schema_name = ? AND t.table_name = ? \
               AND r.status = 'succeeded' \
             ORDER BY t.run_id DESC LIMIT ?",
        )
        .bind(warehouse)
        .bind(schema)
        .bind(table)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut points = rows
            .iter()
            .map(trend_point)
            .collect::<Result<Vec<_>, _>>()?;
        points.reverse();
        Ok(points)
    }

    /// Retention: deletes the finished runs of `warehouse` beyond the latest `keep` (with their
    /// reports, per-table figures and delivered notifications). The latest succeeded run is
    /// always kept, and so is a run with a notification still pending. Slot rows stay (they are
    /// the schedule's natural keys); their link to a deleted run becomes NULL. Returns how many
    /// runs were deleted.
    pub async fn prune(&self, warehouse: &str, keep: u32) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let victims: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE warehouse = ?1 \
               AND status NOT IN ('queued', 'running') \
               AND id NOT IN (SELECT id FROM runs WHERE warehouse = ?1 ORDER BY id DESC LIMIT ?2) \
               AND id <> COALESCE((SELECT MAX(id) FROM runs \
                                   WHERE warehouse = ?1 AND status = 'succeeded'), -1) \
               AND id NOT IN (SELECT run_id FROM notifications WHERE status = 'pending')",
        )
        .bind(warehouse)
        .bind(i64::from(keep))
        .fetch_all(&mut *tx)
        .await?;
        for id in &victims {
            for sql in [
                "DELETE FROM reports WHERE run_id = ?",
                "DELETE FROM notifications WHERE run_id = ?",
                "DELETE FROM runs WHERE id = ?",
            ] {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(victims.len() as u64)
    }

    /// Everything `/metrics` exports.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, StoreError> {
        let count_rows = |rows: Vec<sqlx::sqlite::SqliteRow>| -> Result<_, StoreError> {
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<(String, String, i64)>, StoreError>>()
        };
        let runs_by_status = count_rows(
            sqlx::query(
                "SELECT warehouse, status, COUNT(*) FROM runs \
                 GROUP BY warehouse, status ORDER BY warehouse, status",
            )
            .fetch_all(&self.pool)
            .await?,
        )?;
        let notifications_by_status = count_rows(
            sqlx::query(
                "SELECT target, status, COUNT(*) FROM notifications \
                 GROUP BY target, status ORDER BY target, status",
            )
            .fetch_all(&self.pool)
            .await?,
        )?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id IN \
               (SELECT MAX(id) FROM runs WHERE status = 'succeeded' GROUP BY warehouse) \
             ORDER BY warehouse"
        );
        let latest_runs = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(run_from_row)
            .collect::<Result<Vec<Run>, _>>()?;
        let mut latest = Vec::new();
        for run in latest_runs {
            let rows = sqlx::query(
                "SELECT t.run_id, r.finished_at, t.status, t.excess_rows, t.measures, \
                        t.schema_name, t.table_name \
                 FROM run_tables AS t JOIN runs AS r ON r.id = t.run_id \
                 WHERE t.run_id = ? ORDER BY t.schema_name, t.table_name",
            )
            .bind(run.id)
            .fetch_all(&self.pool)
            .await?;
            let mut tables = Vec::new();
            let mut names = Vec::new();
            for r in &rows {
                tables.push(trend_point(r)?);
                names.push((r.try_get("schema_name")?, r.try_get("table_name")?));
            }
            latest.push(LatestRun {
                duration_secs: run.duration_secs(),
                warehouse: run.warehouse,
                run_id: run.id,
                finished_at: run.finished_at.unwrap_or_default(),
                tables,
                names,
            });
        }
        Ok(MetricsSnapshot {
            runs_by_status,
            notifications_by_status,
            latest,
        })
    }
}

fn trend_point(r: &sqlx::sqlite::SqliteRow) -> Result<TableTrendPoint, StoreError> {
    let run_id: i64 = r.try_get("run_id")?;
    let measures: String = r.try_get("measures")?;
    Ok(TableTrendPoint {
        run_id,
        finished_at: r
            .try_get::<Option<String>, _>("finished_at")?
            .unwrap_or_default(),
        status: r.try_get("status")?,
        excess_rows: r.try_get("excess_rows")?,
        measures: serde_json::from_str(&measures).map_err(|e| StoreError::BadReport {
            run: run_id,
            message: format!("per-table measures: {e}"),
        })?,
    })
}
