//! The scheduler `natkey serve` runs in-process: every few seconds it asks
//! [`crate::schedule::Scheduler`] whether a `[[schedule]]` slot is due, and for each slot it
//! claims (atomically, in the store's `scheduled_runs`), it starts an audit through the web
//! app's runner, records the outcome, notifies the schedule's `[[notify]]` targets when the run
//! failed or found new or increased duplicates, and applies retention.
//!
//! The clock is injected, so tests drive [`NightlyAudits::tick`] with a manual clock and await
//! the runs it started; nothing here sleeps except [`NightlyAudits::run_forever`] between ticks.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;

use super::AppState;
use super::runs::{RunRequest, start_run_with};
use crate::notify::sqlite_ledger::SqliteNotificationLedger;
use crate::notify::{Delivery, Notification, Notifier, RetryPolicy, Target};
use crate::schedule::sqlite_ledger::SqliteRunLedger;
use crate::schedule::{
    Clock, RunLedger, RunStatus as SlotStatus, Schedule, ScheduledRun, Scheduler, Tick,
};
use crate::store::{Run, RunStatus, RunTrigger};

/// How often a finished audit is looked for, and the longest pause between two ticks.
const POLL: Duration = Duration::from_millis(250);
const MAX_TICK_INTERVAL: Duration = Duration::from_secs(20);

/// The in-process scheduler: one per `natkey serve`.
pub struct NightlyAudits {
    state: AppState,
    scheduler: Scheduler<SqliteRunLedger, Arc<dyn Clock>>,
    notifier: Notifier<SqliteNotificationLedger>,
    keep_runs: u32,
}

/// How a scheduled slot ended, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOutcome {
    pub schedule: String,
    pub slot: DateTime<Utc>,
    /// The audit run the slot started (or joined).
    pub run: Option<i64>,
    pub status: SlotStatus,
    pub reason: Option<String>,
    /// Per notified target: its name and what became of the message.
    pub notifications: Vec<(String, Delivery)>,
}

/// Who claims slots: this host and process, so a later start can tell its own dead runs.
pub fn owner_name() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether the process that claimed a slot is gone: on this host, its pid no longer exists.
/// A claim of another host is never judged (natkey cannot see that host's processes).
fn owner_is_gone(owner: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    if host != host_name() || pid == std::process::id().to_string() {
        return false;
    }
    let proc_root = std::path::Path::new("/proc");
    proc_root.join("self").exists() && !proc_root.join(pid).exists()
}

impl NightlyAudits {
    /// A scheduler over the app's store, schedules and targets, on `clock`.
    pub fn new(state: AppState, clock: Arc<dyn Clock>, policy: RetryPolicy) -> Self {
        let pool = state.inner.store.pool().clone();
        let keep_runs = state.inner.config.store.keep_runs();
        NightlyAudits {
            scheduler: Scheduler::new(
                SqliteRunLedger::new(pool.clone()),
                clock.clone(),
                owner_name(),
            ),
            notifier: Notifier::new(SqliteNotificationLedger::new(pool), clock, policy),
            keep_runs,
            state,
        }
    }

    /// Start-up chores: slots whose claiming process died (on this host) are marked
    /// `interrupted`, and notifications a previous process left pending are re-sent with
    /// their idempotency keys.
    pub async fn recover(&self) {
        let now = self.scheduler.clock().now();
        for schedule in &self.state.inner.schedules {
            let runs = match self.scheduler.ledger().runs(&schedule.name).await {
                Ok(runs) => runs,
                Err(e) => {
                    tracing::error!("schedule {:?}: {e}", schedule.name);
                    continue;
                }
            };
            for run in runs
                .iter()
                .filter(|r| r.status == SlotStatus::Running && owner_is_gone(&r.owner))
            {
                let reason = "natkey stopped while this scheduled audit ran";
                match self
                    .scheduler
                    .ledger()
                    .finish(run.id, SlotStatus::Interrupted, Some(reason), now)
                    .await
                {
                    Ok(()) => eprintln!(
                        "natkey: schedule {:?}: the run of {} was interrupted by a restart",
                        schedule.name,
                        schedule.local(run.scheduled_for)
                    ),
                    Err(e) => tracing::error!("schedule {:?}: {e}", schedule.name),
                }
            }
        }
        match self
            .notifier
            .resend_pending(&self.state.inner.targets)
            .await
        {
            Ok(sent) if !sent.is_empty() => {
                eprintln!("natkey: re-sent {} pending notification(s)", sent.len())
            }
            Ok(_) => {}
            Err(e) => tracing::error!("re-sending pending notifications: {e}"),
        }
    }

    /// One pass over every schedule that is not paused: claims the due slots and starts their
    /// audits. Each returned task ends when its run is recorded and notified.
    pub async fn tick(self: &Arc<Self>) -> Vec<JoinHandle<SlotOutcome>> {
        let paused = match self.state.inner.store.paused_schedules().await {
            Ok(paused) => paused,
            Err(e) => {
                tracing::error!("reading paused schedules: {e}");
                return Vec::new();
            }
        };
        let mut started = Vec::new();
        for schedule in &self.state.inner.schedules {
            if paused.contains(&schedule.name) {
                continue;
            }
            match self.scheduler.tick(schedule).await {
                Ok(Tick::Started(slot)) => {
                    if slot.catch_up.is_some() {
                        eprintln!(
                            "natkey: {}",
                            catch_up_line(schedule, &slot, self.scheduler.clock().now())
                        );
                    }
                    let this = self.clone();
                    let schedule = schedule.clone();
                    started.push(tokio::spawn(
                        async move { this.run_slot(schedule, slot).await },
                    ));
                }
                Ok(Tick::Waiting { .. } | Tick::Taken { .. } | Tick::Busy { .. }) => {}
                Err(e) => tracing::error!("schedule {:?}: {e}", schedule.name),
            }
        }
        started
    }

    /// Ticks until the process ends: at the next slot, and at least every 20 seconds.
    pub async fn run_forever(self: Arc<Self>) {
        self.recover().await;
        loop {
            // Runs finish on their own tasks; the loop only claims slots.
            drop(self.tick().await);
            let now = self.scheduler.clock().now();
            let next = self
                .state
                .inner
                .schedules
                .iter()
                .filter_map(|s| s.next_after(now).ok())
                .min();
            let wait = next
                .and_then(|n| (n - now + TimeDelta::milliseconds(500)).to_std().ok())
                .unwrap_or(MAX_TICK_INTERVAL)
                .clamp(Duration::from_secs(1), MAX_TICK_INTERVAL);
            tokio::time::sleep(wait).await;
        }
    }

    async fn run_slot(self: Arc<Self>, schedule: Schedule, slot: ScheduledRun) -> SlotOutcome {
        let request = RunRequest {
            warehouse: schedule.warehouse.clone(),
            trigger: RunTrigger::Schedule,
            schedule: Some(schedule.name.clone()),
            schemas: schedule.schemas.clone(),
            tables: schedule.tables.clone(),
        };
        let store = &self.state.inner.store;
        let mut outcome = SlotOutcome {
            schedule: schedule.name.clone(),
            slot: slot.scheduled_for,
            run: None,
            status: SlotStatus::Failed,
            reason: None,
            notifications: Vec::new(),
        };
        let run = match start_run_with(&self.state, request).await {
            Ok(id) => {
                outcome.run = Some(id);
                if let Err(e) = store.link_slot(slot.id, id).await {
                    tracing::error!("schedule {:?}: {e}", schedule.name);
                }
                self.wait_for(id).await
            }
            Err(e) => Err(e.to_string()),
        };
        let result: Result<Run, String> = match run {
            Ok(run) if run.status == RunStatus::Succeeded => Ok(run),
            Ok(run) => Err(run
                .error
                .clone()
                .unwrap_or_else(|| format!("the audit ended {}", run.status.as_str()))),
            Err(e) => Err(e),
        };
        let finished = self
            .scheduler
            .finish(slot.id, result.as_ref().map(|_| ()).map_err(Clone::clone))
            .await;
        if let Err(e) = finished {
            tracing::error!("schedule {:?}: {e}", schedule.name);
        }
        match &result {
            Ok(_) => outcome.status = SlotStatus::Succeeded,
            Err(reason) => {
                outcome.reason = Some(reason.clone());
                eprintln!(
                    "natkey: schedule {:?}: the audit of {} failed: {reason}",
                    schedule.name,
                    schedule.local(slot.scheduled_for)
                );
            }
        }
        if let Some(id) = outcome.run {
            outcome.notifications = self.notify(&schedule, &slot, id, &result).await;
            match store.prune(&schedule.warehouse, self.keep_runs).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!("retention: pruned {n} old run(s) of {}", schedule.warehouse)
                }
                Err(e) => tracing::error!("retention: {e}"),
            }
        }
        outcome
    }

    /// Waits until an audit run has ended.
    async fn wait_for(&self, id: i64) -> Result<Run, String> {
        loop {
            match self.state.inner.store.run(id).await {
                Ok(Some(run)) if !run.status.is_active() => return Ok(run),
                Ok(Some(_)) => tokio::time::sleep(POLL).await,
                Ok(None) => return Err(format!("audit run {id} vanished from the store")),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Sends the run's notification (if it deserves one) to each of the schedule's targets.
    async fn notify(
        &self,
        schedule: &Schedule,
        slot: &ScheduledRun,
        run_id: i64,
        result: &Result<Run, String>,
    ) -> Vec<(String, Delivery)> {
        if schedule.notify.is_empty() {
            return Vec::new();
        }
        let store = &self.state.inner.store;
        let notification = match result {
            Err(reason) => Notification::for_run(
                run_id,
                &schedule.name,
                Some(slot.scheduled_for),
                &schedule.warehouse,
                None,
                Err(reason),
            ),
            Ok(run) => {
                let current = match self.state.report(run.id).await {
                    Ok(Some(report)) => report,
                    Ok(None) => return Vec::new(),
                    Err(e) => {
                        tracing::error!("run {run_id}: {e}");
                        return Vec::new();
                    }
                };
                let previous = match store.previous_succeeded(run).await {
                    Ok(Some(prev)) => self.state.report(prev).await.ok().flatten(),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!("run {run_id}: {e}");
                        None
                    }
                };
                Notification::for_run(
                    run_id,
                    &schedule.name,
                    Some(slot.scheduled_for),
                    &schedule.warehouse,
                    previous.as_deref(),
                    Ok(&current),
                )
            }
        };
        let Some(notification) = notification else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in &schedule.notify {
            let Some(target) = self.state.inner.targets.iter().find(|t| &t.name == name) else {
                continue;
            };
            match self.notifier.send(target, &notification).await {
                Ok(delivery) => out.push((name.clone(), delivery)),
                Err(e) => tracing::error!("notifying {name}: {e}"),
            }
        }
        out
    }
}

/// What natkey says when a slot runs late.
fn catch_up_line(schedule: &Schedule, slot: &ScheduledRun, now: DateTime<Utc>) -> String {
    let missed = slot.catch_up.unwrap_or(1);
    crate::schedule::catch_up_message(
        schedule,
        slot.scheduled_for,
        crate::schedule::CatchUp {
            missed_slots: missed,
            late_by: now - slot.scheduled_for,
        },
    )
}

/// Reads `[[schedule]]` and `[[notify]]` (URLs from the environment where `url_env` says so).
pub fn schedules_from_config(
    config: &crate::config::Config,
) -> Result<(Vec<Schedule>, Vec<Target>), String> {
    let targets = config
        .notify
        .iter()
        .map(|t| Target::resolve(t).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let schedules = config
        .schedules
        .iter()
        .map(|s| Schedule::parse(s).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((schedules, targets))
}
