//! The notification ledger in natkey's SQLite store: table `notifications`, one row per
//! idempotency key (UNIQUE).
//!
//! The table is created by the store's migrations (`migrations/20261204000001_schedules.sql`):
//! open a [`crate::store::Store`] and pass its pool.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::ledger::{
    NotificationLedger, NotificationLedgerError, NotificationRecord, NotificationStatus,
};
use crate::schedule::{parse_slot, slot_text};

/// [`NotificationLedger`] over natkey's SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteNotificationLedger {
    pool: SqlitePool,
}

impl SqliteNotificationLedger {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteNotificationLedger { pool }
    }
}

fn from_row(row: &SqliteRow) -> Result<NotificationRecord, NotificationLedgerError> {
    let key: String = row.try_get("idempotency_key")?;
    let corrupt = |message: String| NotificationLedgerError::Corrupt {
        key: key.clone(),
        message,
    };
    let time = |column: &str| -> Result<DateTime<Utc>, NotificationLedgerError> {
        let text: String = row.try_get(column)?;
        parse_slot(&text).ok_or_else(|| corrupt(format!("{column} {text:?}")))
    };
    let status: String = row.try_get("status")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(NotificationRecord {
        run_id: row.try_get("run_id")?,
        target: row.try_get("target")?,
        status: status.parse().map_err(corrupt)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error: row.try_get("last_error")?,
        body: row.try_get("body")?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        key,
    })
}

impl NotificationLedger for SqliteNotificationLedger {
    async fn begin(
        &self,
        record: &NotificationRecord,
    ) -> Result<NotificationRecord, NotificationLedgerError> {
        sqlx::query(
            "INSERT INTO notifications
                 (idempotency_key, run_id, target, status, attempts, body, created_at, updated_at)
             VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&record.key)
        .bind(record.run_id)
        .bind(&record.target)
        .bind(&record.body)
        .bind(slot_text(record.created_at))
        .bind(slot_text(record.updated_at))
        .execute(&self.pool)
        .await?;
        self.get(&record.key)
            .await?
            .ok_or_else(|| NotificationLedgerError::NoSuchKey(record.key.clone()))
    }

    async fn attempt(&self, key: &str, at: DateTime<Utc>) -> Result<u32, NotificationLedgerError> {
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE notifications SET attempts = attempts + 1, updated_at = ?
             WHERE idempotency_key = ? RETURNING attempts",
        )
        .bind(slot_text(at))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let attempts = attempts.ok_or_else(|| NotificationLedgerError::NoSuchKey(key.into()))?;
        Ok(u32::try_from(attempts).unwrap_or(u32::MAX))
    }

    async fn update(
        &self,
        key: &str,
        status: NotificationStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), NotificationLedgerError> {
        sqlx::query(
            "UPDATE notifications
             SET status = ?, last_error = COALESCE(?, last_error), updated_at = ?
             WHERE idempotency_key = ? AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(slot_text(at))
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<NotificationRecord>, NotificationLedgerError> {
        let row = sqlx::query("SELECT * FROM notifications WHERE idempotency_key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    async fn pending(&self) -> Result<Vec<NotificationRecord>, NotificationLedgerError> {
        let rows = sqlx::query("SELECT * FROM notifications WHERE status = 'pending' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }
}
