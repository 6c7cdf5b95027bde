//! The notification ledger: one row per idempotency key, written before the call.

use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Where a notification is: `Pending` from before the first call until the receiver answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    Pending,
    Succeeded,
    Failed,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Succeeded => "succeeded",
            NotificationStatus::Failed => "failed",
        }
    }
}

impl FromStr for NotificationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => NotificationStatus::Pending,
            "succeeded" => NotificationStatus::Succeeded,
            "failed" => NotificationStatus::Failed,
            other => return Err(format!("unknown notification status {other:?}")),
        })
    }
}

/// One notification as the ledger records it. It holds the target's name, never its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// `natkey:<run id>:<target>`, sent as the `Idempotency-Key` header.
    pub key: String,
    pub run_id: i64,
    pub target: String,
    pub status: NotificationStatus,
    /// Calls started. Counted before each call, so `pending` with `attempts > 0` after a crash
    /// means the receiver may already have the message: it is re-sent with the same key.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The exact body sent, so a re-send after a restart sends the same bytes.
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotificationLedgerError {
    #[error("natkey's notification ledger: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("natkey's notification ledger: no notification {0:?}")]
    NoSuchKey(String),
    #[error("natkey's notification ledger: notification {key:?} holds {message}")]
    Corrupt { key: String, message: String },
}

/// Records notifications by idempotency key. `begin` is an insert-if-absent (a UNIQUE key in
/// SQLite): a retried or restarted notification finds its row instead of making a second one.
pub trait NotificationLedger: Send + Sync {
    /// The row for `record.key`: the one already there, or `record` inserted as `pending`.
    fn begin(
        &self,
        record: &NotificationRecord,
    ) -> impl Future<Output = Result<NotificationRecord, NotificationLedgerError>> + Send;

    /// Counts one more call, before it is made; returns the new count.
    fn attempt(
        &self,
        key: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<u32, NotificationLedgerError>> + Send;

    /// Ends a pending notification (`Succeeded`, or `Failed` with the error), or notes the
    /// error of an attempt that will be retried (`Pending`).
    fn update(
        &self,
        key: &str,
        status: NotificationStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), NotificationLedgerError>> + Send;

    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<NotificationRecord>, NotificationLedgerError>> + Send;

    /// Every notification still pending (to re-send at start).
    fn pending(
        &self,
    ) -> impl Future<Output = Result<Vec<NotificationRecord>, NotificationLedgerError>> + Send;
}

/// A notification ledger in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryNotificationLedger {
    rows: Mutex<Vec<NotificationRecord>>,
}

impl MemoryNotificationLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<NotificationRecord>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(
        &self,
        key: &str,
        f: impl FnOnce(&mut NotificationRecord) -> T,
    ) -> Result<T, NotificationLedgerError> {
        let mut rows = self.lock();
        let row = rows
            .iter_mut()
            .find(|r| r.key == key)
            .ok_or_else(|| NotificationLedgerError::NoSuchKey(key.to_string()))?;
        Ok(f(row))
    }
}

impl NotificationLedger for MemoryNotificationLedger {
    async fn begin(
        &self,
        record: &NotificationRecord,
    ) -> Result<NotificationRecord, NotificationLedgerError> {
        let mut rows = self.lock();
        if let Some(existing) = rows.iter().find(|r| r.key == record.key) {
            return Ok(existing.clone());
        }
        let mut row = record.clone();
        row.status = NotificationStatus::Pending;
        rows.push(row.clone());
        Ok(row)
    }

    async fn attempt(&self, key: &str, at: DateTime<Utc>) -> Result<u32, NotificationLedgerError> {
        self.with(key, |r| {
            r.attempts += 1;
            r.updated_at = at;
            r.attempts
        })
    }

    async fn update(
        &self,
        key: &str,
        status: NotificationStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), NotificationLedgerError> {
        self.with(key, |r| {
            if r.status == NotificationStatus::Pending {
                r.status = status;
                r.last_error = error.map(str::to_string).or(r.last_error.take());
                r.updated_at = at;
            }
        })
    }

    async fn get(&self, key: &str) -> Result<Option<NotificationRecord>, NotificationLedgerError> {
        Ok(self.lock().iter().find(|r| r.key == key).cloned())
    }

    async fn pending(&self) -> Result<Vec<NotificationRecord>, NotificationLedgerError> {
        Ok(self
            .lock()
            .iter()
            .filter(|r| r.status == NotificationStatus::Pending)
            .cloned()
            .collect())
    }
}

impl<L: NotificationLedger + ?Sized> NotificationLedger for std::sync::Arc<L> {
    fn begin(
        &self,
        record: &NotificationRecord,
    ) -> impl Future<Output = Result<NotificationRecord, NotificationLedgerError>> + Send {
        (**self).begin(record)
    }

    fn attempt(
        &self,
        key: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<u32, NotificationLedgerError>> + Send {
        (**self).attempt(key, at)
    }

    fn update(
        &self,
        key: &str,
        status: NotificationStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), NotificationLedgerError>> + Send {
        (**self).update(key, status, error, at)
    }

    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<NotificationRecord>, NotificationLedgerError>> + Send
    {
        (**self).get(key)
    }

    fn pending(
        &self,
    ) -> impl Future<Output = Result<Vec<NotificationRecord>, NotificationLedgerError>> + Send {
        (**self).pending()
    }
}
