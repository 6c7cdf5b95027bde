//! The run ledger: scheduled runs by their natural key `(schedule, scheduled_for)`.

use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::CatchUp;

/// Where a scheduled run is. A run is `Running` from the moment its slot is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// It was running when natkey stopped.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            other => return Err(format!("unknown scheduled run status {other:?}")),
        })
    }
}

/// One scheduled run as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRun {
    pub id: i64,
    pub schedule: String,
    /// The slot: the natural key is `(schedule, scheduled_for)`.
    pub scheduled_for: DateTime<Utc>,
    pub status: RunStatus,
    /// Set when the slot ran late; `missed_slots` of them passed and only this one ran.
    pub catch_up: Option<u32>,
    /// Why it failed (or was interrupted).
    pub reason: Option<String>,
    pub owner: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What the scheduler needs to know about one schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// The latest slot ever claimed (whatever became of its run).
    pub last_slot: Option<DateTime<Utc>>,
    /// The slot of a run that is still running.
    pub running: Option<DateTime<Utc>>,
}

/// A request to run a slot.
#[derive(Debug, Clone)]
pub struct SlotClaim {
    pub schedule: String,
    pub slot: DateTime<Utc>,
    pub catch_up: Option<CatchUp>,
    pub owner: String,
    pub at: DateTime<Utc>,
}

/// How a claim ended. Only `Claimed` may start a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(ScheduledRun),
    /// The slot, or a later one, is already claimed.
    Taken,
    /// A run of this schedule is still running (no overlap).
    Busy {
        running: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("natkey's run ledger: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("natkey's run ledger: no scheduled run {0}")]
    NoSuchRun(i64),
    #[error("natkey's run ledger: scheduled run {id} holds {message}")]
    Corrupt { id: i64, message: String },
}

/// Records scheduled runs by their natural key. Implementations make [`RunLedger::claim`] one
/// atomic step: the slot is inserted only if it is absent, no later slot is claimed, and no run
/// of the schedule is running. (SQLite: one `INSERT ... SELECT ... WHERE NOT EXISTS` under a
/// `UNIQUE (schedule, scheduled_for)` constraint.)
pub trait RunLedger: Send + Sync {
    fn state(
        &self,
        schedule: &str,
    ) -> impl Future<Output = Result<LedgerState, LedgerError>> + Send;

    fn claim(
        &self,
        claim: &SlotClaim,
    ) -> impl Future<Output = Result<ClaimOutcome, LedgerError>> + Send;

    /// Ends a running run: `Succeeded`, or `Failed`/`Interrupted` with a reason. A run that has
    /// already ended keeps its first outcome (a retried `finish` changes nothing).
    fn finish(
        &self,
        id: i64,
        status: RunStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Marks every running run `interrupted` (at start, when this process owns the store).
    fn interrupt_running(
        &self,
        reason: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, LedgerError>> + Send;

    /// A schedule's runs, latest slot first.
    fn runs(
        &self,
        schedule: &str,
    ) -> impl Future<Output = Result<Vec<ScheduledRun>, LedgerError>> + Send;
}

/// A ledger in memory, for tests and for a scheduler without a store.
#[derive(Debug, Default)]
pub struct MemoryRunLedger {
    runs: Mutex<Vec<ScheduledRun>>,
}

impl MemoryRunLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ScheduledRun>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RunLedger for MemoryRunLedger {
    async fn state(&self, schedule: &str) -> Result<LedgerState, LedgerError> {
        let runs = self.lock();
        let mine = runs.iter().filter(|r| r.schedule == schedule);
        Ok(LedgerState {
            last_slot: mine.clone().map(|r| r.scheduled_for).max(),
            running: mine
                .filter(|r| r.status == RunStatus::Running)
                .map(|r| r.scheduled_for)
                .max(),
        })
    }

    async fn claim(&self, claim: &SlotClaim) -> Result<ClaimOutcome, LedgerError> {
        let mut runs = self.lock();
        let mine = || runs.iter().filter(|r| r.schedule == claim.schedule);
        if mine().any(|r| r.scheduled_for >= claim.slot) {
            return Ok(ClaimOutcome::Taken);
        }
        if let Some(running) = mine().find(|r| r.status == RunStatus::Running) {
            return Ok(ClaimOutcome::Busy {
                running: running.scheduled_for,
            });
        }
        let run = ScheduledRun {
            id: runs.len() as i64 + 1,
            schedule: claim.schedule.clone(),
            scheduled_for: claim.slot,
            status: RunStatus::Running,
            catch_up: claim.catch_up.map(|c| c.missed_slots),
            reason: None,
            owner: claim.owner.clone(),
            started_at: claim.at,
            finished_at: None,
        };
        runs.push(run.clone());
        Ok(ClaimOutcome::Claimed(run))
    }

    async fn finish(
        &self,
        id: i64,
        status: RunStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut runs = self.lock();
        let run = runs
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(LedgerError::NoSuchRun(id))?;
        if run.status == RunStatus::Running {
            run.status = status;
            run.reason = reason.map(str::to_string);
            run.finished_at = Some(at);
        }
        Ok(())
    }

    async fn interrupt_running(&self, reason: &str, at: DateTime<Utc>) -> Result<u64, LedgerError> {
        let mut n = 0;
        for run in self.lock().iter_mut() {
            if run.status == RunStatus::Running {
                run.status = RunStatus::Interrupted;
                run.reason = Some(reason.to_string());
                run.finished_at = Some(at);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn runs(&self, schedule: &str) -> Result<Vec<ScheduledRun>, LedgerError> {
        let mut out: Vec<ScheduledRun> = self
            .lock()
            .iter()
            .filter(|r| r.schedule == schedule)
            .cloned()
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.scheduled_for));
        Ok(out)
    }
}

impl<L: RunLedger + ?Sized> RunLedger for std::sync::Arc<L> {
    fn state(
        &self,
        schedule: &str,
    ) -> impl Future<Output = Result<LedgerState, LedgerError>> + Send {
        (**self).state(schedule)
    }

    fn claim(
        &self,
        claim: &SlotClaim,
    ) -> impl Future<Output = Result<ClaimOutcome, LedgerError>> + Send {
        (**self).claim(claim)
    }

    fn finish(
        &self,
        id: i64,
        status: RunStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send {
        (**self).finish(id, status, reason, at)
    }

    fn interrupt_running(
        &self,
        reason: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, LedgerError>> + Send {
        (**self).interrupt_running(reason, at)
    }

    fn runs(
        &self,
        schedule: &str,
    ) -> impl Future<Output = Result<Vec<ScheduledRun>, LedgerError>> + Send {
        (**self).runs(schedule)
    }
}
