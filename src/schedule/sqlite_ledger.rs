//! The run ledger in natkey's SQLite store: table `scheduled_runs`, one row per claimed slot,
//! `UNIQUE (schedule, scheduled_for)`.
//!
//! The table is created by the store's migrations (`migrations/20261204000001_schedules.sql`):
//! open a [`crate::store::Store`] and pass its pool.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::ledger::{
    ClaimOutcome, LedgerError, LedgerState, RunLedger, RunStatus, ScheduledRun, SlotClaim,
};
use super::{parse_slot, slot_text};

/// [`RunLedger`] over natkey's SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteRunLedger {
    pool: SqlitePool,
}

impl SqliteRunLedger {
    /// A ledger on `pool`, natkey's store's pool (`Store::pool`).
    pub fn new(pool: SqlitePool) -> Self {
        SqliteRunLedger { pool }
    }

    async fn run(&self, id: i64) -> Result<ScheduledRun, LedgerError> {
        let row = sqlx::query("SELECT * FROM scheduled_runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(LedgerError::NoSuchRun(id))?;
        from_row(&row)
    }
}

fn from_row(row: &SqliteRow) -> Result<ScheduledRun, LedgerError> {
    let id: i64 = row.try_get("id")?;
    let corrupt = |message: String| LedgerError::Corrupt { id, message };
    let time = |column: &str| -> Result<Option<DateTime<Utc>>, LedgerError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| parse_slot(&t).ok_or_else(|| corrupt(format!("{column} {t:?}"))))
            .transpose()
    };
    let status: String = row.try_get("status")?;
    let catch_up: Option<i64> = row.try_get("catch_up")?;
    Ok(ScheduledRun {
        id,
        schedule: row.try_get("schedule")?,
        scheduled_for: time("scheduled_for")?.ok_or_else(|| corrupt("no slot".into()))?,
        status: status.parse().map_err(corrupt)?,
        catch_up: catch_up.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        reason: row.try_get("reason")?,
        owner: row.try_get("owner")?,
        started_at: time("started_at")?.ok_or_else(|| corrupt("no start".into()))?,
        finished_at: time("finished_at")?,
    })
}

impl RunLedger for SqliteRunLedger {
    async fn state(&self, schedule: &str) -> Result<LedgerState, LedgerError> {
        let row = sqlx::query(
            "SELECT MAX(scheduled_for) AS last_slot,
                    MAX(CASE WHEN status = 'running' THEN scheduled_for END) AS running
             FROM scheduled_runs WHERE schedule = ?",
        )
        .bind(schedule)
        .fetch_one(&self.pool)
        .await?;
        let slot = |column: &str| -> Result<Option<DateTime<Utc>>, LedgerError> {
            let text: Option<String> = row.try_get(column)?;
            Ok(text.as_deref().and_then(parse_slot))
        };
        Ok(LedgerState {
            last_slot: slot("last_slot")?,
            running: slot("running")?,
        })
    }

    async fn claim(&self, claim: &SlotClaim) -> Result<ClaimOutcome, LedgerError> {
        let slot = slot_text(claim.slot);
        // One statement, so one atomic step in SQLite: insert the slot only when it is absent,
        // no later slot is claimed, and no run of the schedule is running. The UNIQUE
        // constraint is the last word if another writer races between these checks.
        let inserted = sqlx::query(
            "INSERT INTO scheduled_runs (schedule, scheduled_for, status, catch_up, owner, started_at)
             SELECT ?1, ?2, 'running', ?3, ?4, ?5
             WHERE NOT EXISTS (
                 SELECT 1 FROM scheduled_runs
                 WHERE schedule = ?1 AND (scheduled_for >= ?2 OR status = 'running'))
             ON CONFLICT (schedule, scheduled_for) DO NOTHING",
        )
        .bind(&claim.schedule)
        .bind(&slot)
        .bind(claim.catch_up.map(|c| i64::from(c.missed_slots)))
        .bind(&claim.owner)
        .bind(slot_text(claim.at))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(ClaimOutcome::Claimed(
                self.run(inserted.last_insert_rowid()).await?,
            ));
        }
        let state = self.state(&claim.schedule).await?;
        Ok(match state {
            LedgerState {
                last_slot: Some(last),
                ..
            } if last >= claim.slot => ClaimOutcome::Taken,
            LedgerState {
                running: Some(running),
                ..
            } => ClaimOutcome::Busy { running },
            // The blocking row ended between the insert and this read: still not ours.
            _ => ClaimOutcome::Taken,
        })
    }

    async fn finish(
        &self,
        id: i64,
        status: RunStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let done = sqlx::query(
            "UPDATE scheduled_runs SET status = ?, reason = ?, finished_at = ?
             WHERE id = ? AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(slot_text(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            // Already ended (keeps its first outcome), or no such run.
            self.run(id).await?;
        }
        Ok(())
    }

    async fn interrupt_running(&self, reason: &str, at: DateTime<Utc>) -> Result<u64, LedgerError> {
        let done = sqlx::query(
            "UPDATE scheduled_runs SET status = 'interrupted', reason = ?, finished_at = ?
             WHERE status = 'running'",
        )
        .bind(reason)
        .bind(slot_text(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn runs(&self, schedule: &str) -> Result<Vec<ScheduledRun>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM scheduled_runs WHERE schedule = ? ORDER BY scheduled_for DESC",
        )
        .bind(schedule)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}
