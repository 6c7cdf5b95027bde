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
use crate::schedule::{Clock, RunStatus as SlotStatus, Schedule, ScheduledRun, Scheduler, Tick};
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

impl NightlyAudits {
    /// A scheduler over the app's store, schedules and targets, on `clock`.
    pub fn new(state: AppState, clock: Arc<dyn Clock>, policy: RetryPolicy) -> Self {
        let pool = state.inner.store.pool().clone();
        let keep_runs = state.inner.config.store.keep_runs();
        NightlyAudits {
            scheduler: Scheduler::new(
                SqliteRunLedger::new(pool.clone()),
                clock.clone(),
                // Slots are owned like audit runs: by this process's lease in the store.
                state.inner.store.instance(),
            ),
            notifier: Notifier::new(SqliteNotificationLedger::new(pool), clock, policy),
            keep_runs,
            state,
        }
    }

    /// Start-up chores: slots whose claiming process is gone are marked `interrupted`, slots
    /// whose audit run ended are released (see [`NightlyAudits::release`]), and notifications
    /// a previous process left pending are re-sent with their idempotency keys.
    pub async fn recover(&self) {
        self.release().await;
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
        self.release().await;
        let paused = match self.state.inner.store.paused_schedules().await {
            Ok(paused) => paused,
            Err(e) => {
                tracing::error!("reading paused schedules: {e}");
                return Vec::new();
            }
        };
        // Read afresh each tick: schedules made or deleted on the Schedules page take effect at
        // the next tick.
        let schedules = match self.state.schedules().await {
            Ok(book) => book.schedules,
            Err(e) => {
                tracing::error!("reading schedules: {e}");
                return Vec::new();
            }
        };
        let mut started = Vec::new();
        for (schedule, _) in &schedules {
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

    /// Frees schedules from slots that would otherwise stay `running` for ever: slots (and
    /// audit runs) whose owning process is gone — its lease expired, or it ran on this host and
    /// its pid is dead — become `interrupted`, and slots whose linked audit run has ended take
    /// that run's outcome.
    async fn release(&self) {
        let store = &self.state.inner.store;
        let now = self.scheduler.clock().now();
        match store.sweep(chrono::Utc::now()).await {
            Ok(swept) if swept.slots > 0 => eprintln!(
                "natkey: {} scheduled run(s) of a stopped natkey marked interrupted",
                swept.slots
            ),
            Ok(_) => {}
            Err(e) => tracing::error!("sweeping runs of stopped processes: {e}"),
        }
        if let Err(e) = store.release_ended_slots(now).await {
            tracing::error!("releasing scheduled runs whose audit ended: {e}");
        }
    }

    /// Ticks until the process ends: at the next slot, and at least every 20 seconds.
    pub async fn run_forever(self: Arc<Self>) {
        self.recover().await;
        loop {
            // Runs finish on their own tasks; the loop only claims slots.
            drop(self.tick().await);
            let now = self.scheduler.clock().now();
            let schedules = self.state.schedules().await.map(|b| b.schedules);
            let next = (schedules.iter().flatten())
                .filter_map(|(s, _)| s.next_after(now).ok())
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
