//! Nightly audits: `[[schedule]]` entries (a cron pattern in a time zone), their slots, a
//! controllable clock, and the scheduler's decisions as pure functions over a [`RunLedger`].
//!
//! A scheduled run has a natural key, `(schedule, scheduled_for)`: the slot it was scheduled
//! for, as a UTC instant. The ledger claims a slot with one atomic insert-if-absent, so two
//! scheduler ticks, two natkey processes on one store, or a restart at the wrong moment never
//! produce two runs for one slot.
//!
//! What the scheduler decides, given the latest claimed slot and "now" ([`decide`]):
//!
//! - **One run per slot**, claimed before it starts ([`RunLedger::claim`]).
//! - **Catch-up once**: after natkey was down across several slots, only the latest missed slot
//!   runs, once, flagged with a [`CatchUp`] that says how many slots were missed.
//! - **No overlap**: while a run of a schedule is still running, its next due slot waits; when the
//!   run ends, the latest due slot runs (flagged as a catch-up if it is late by then).
//! - **Failures do not stop a schedule**: a failed run is recorded with its reason and the next
//!   slot runs as usual.
//!
//! Daylight saving time (the schedule's zone, via `croner`): a fixed-time slot that falls in
//! the gap of a spring-forward day (02:30 in Europe/Berlin on the last Sunday of March) runs
//! at the first instant after the gap (03:00 CEST), once. A fixed-time slot that falls in the
//! hour repeated on a fall-back day (02:30 in Europe/Berlin, 01:30 in America/New_York) runs
//! once, at its first occurrence (summer time). Patterns with wildcards or steps in the time
//! fields (`*/15 * * * *`) run at every real instant they match: skipped in a gap, twice in a
//! repeated hour (each occurrence is its own slot, with its own UTC instant).

pub mod diff;
mod ledger;
pub mod sqlite_ledger;

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use crate::config::TableName;

pub use ledger::{
    ClaimOutcome, LedgerError, LedgerState, MemoryRunLedger, RunLedger, RunStatus, ScheduledRun,
    SlotClaim,
};

/// One `[[schedule]]` entry as written in `natkey.toml` (or entered on the Schedules page).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    /// The `[[warehouse]]` it audits, by name.
    pub warehouse: String,
    /// Five fields: minute hour day-of-month month day-of-week (`0 2 * * *`).
    pub cron: String,
    /// An IANA zone (`Europe/Berlin`); the cron pattern is read on this zone's wall clock.
    pub timezone: String,
    /// Only these schemas (the warehouse's own selection when empty).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Only these tables (`schema.table` or `table`; every table when empty).
    #[serde(default)]
    pub tables: Vec<String>,
    /// `[[notify]]` targets, by name.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// A schedule whose cron pattern and time zone have been checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub warehouse: String,
    /// The pattern as written.
    pub cron_text: String,
    cron: Cron,
    pub timezone: Tz,
    pub schemas: Vec<String>,
    /// Parsed as `natkey audit --table` parses them.
    pub tables: Vec<TableName>,
    pub notify: Vec<String>,
    /// When the schedule was made on the Schedules page: no slot before this instant ever runs
    /// (a schedule made at 10:00 does not "catch up" the 02:00 slot of that morning). `None` for
    /// `[[schedule]]` entries of `natkey.toml`.
    pub since: Option<DateTime<Utc>>,
}

/// A `[[schedule]]` entry natkey cannot use; the message names the schedule and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {schedule:?}: {field} must not be empty")]
    Empty {
        schedule: String,
        field: &'static str,
    },
    #[error("schedule {schedule:?}: cron {pattern:?}: {message}")]
    Cron {
        schedule: String,
        pattern: String,
        message: String,
    },
    #[error(
        "schedule {schedule:?}: timezone: unknown time zone {zone:?} (an IANA name such as \"Europe/Berlin\" or \"UTC\")"
    )]
    TimeZone { schedule: String, zone: String },
    #[error("schedule {schedule:?}: tables: {message}")]
    Table { schedule: String, message: String },
    #[error(
        "schedule {schedule:?}: notify: unknown target {target:?} (no [[notify]] entry has this name)"
    )]
    UnknownTarget { schedule: String, target: String },
    #[error("schedule {schedule:?}: warehouse: no [[warehouse]] is named {warehouse:?}")]
    UnknownWarehouse { schedule: String, warehouse: String },
    #[error("schedule {schedule:?}: cron {pattern:?}: {message}")]
    Search {
        schedule: String,
        pattern: String,
        message: String,
    },
}

impl Schedule {
    /// Checks an entry: non-empty name and warehouse, a five-field cron pattern, a known zone.
    pub fn parse(config: &ScheduleConfig) -> Result<Schedule, ScheduleError> {
        let schedule = config.name.clone();
        if config.name.trim().is_empty() {
            return Err(ScheduleError::Empty {
                schedule,
                field: "name",
            });
        }
        if config.warehouse.trim().is_empty() {
            return Err(ScheduleError::Empty {
                schedule,
                field: "warehouse",
            });
        }
        let cron = parse_cron(&config.cron).map_err(|message| ScheduleError::Cron {
            schedule: schedule.clone(),
            pattern: config.cron.clone(),
            message,
        })?;
        let timezone =
            Tz::from_str(config.timezone.trim()).map_err(|_| ScheduleError::TimeZone {
                schedule: schedule.clone(),
                zone: config.timezone.clone(),
            })?;
        let tables = config
            .tables
            .iter()
            .map(|t| t.parse::<TableName>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ScheduleError::Table {
                schedule: schedule.clone(),
                message,
            })?;
        Ok(Schedule {
            name: config.name.clone(),
            warehouse: config.warehouse.clone(),
            cron_text: config.cron.clone(),
            cron,
            timezone,
            schemas: config.schemas.clone(),
            tables,
            notify: config.notify.clone(),
            since: None,
        })
    }

    /// Checks an entry and the names it refers to: [`Schedule::parse`], then its `warehouse`
    /// among `warehouses` and its `notify` names among `targets` (the `[[warehouse]]` and
    /// `[[notify]]` names). natkey.toml's entries and the Schedules page's are checked alike.
    pub fn check(
        config: &ScheduleConfig,
        warehouses: &[&str],
        targets: &[&str],
    ) -> Result<Schedule, ScheduleError> {
        let schedule = Schedule::parse(config)?;
        schedule.check_targets(targets)?;
        if !warehouses.contains(&config.warehouse.as_str()) {
            return Err(ScheduleError::UnknownWarehouse {
                schedule: config.name.clone(),
                warehouse: config.warehouse.clone(),
            });
        }
        Ok(schedule)
    }

    /// Checks that every `notify` name is one of `targets` (the `[[notify]]` names).
    pub fn check_targets(&self, targets: &[&str]) -> Result<(), ScheduleError> {
        match self.notify.iter().find(|n| !targets.contains(&n.as_str())) {
            Some(unknown) => Err(ScheduleError::UnknownTarget {
                schedule: self.name.clone(),
                target: unknown.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.timezone), false)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.search_error(e))
    }

    /// The next `count` slots strictly after `after`, in the schedule's zone (for "next runs"
    /// on the Schedules page and `GET /api/schedules`).
    pub fn next_runs(
        &self,
        after: DateTime<Utc>,
        count: usize,
    ) -> Result<Vec<DateTime<Tz>>, ScheduleError> {
        let mut out = Vec::with_capacity(count);
        let mut cursor = after;
        for _ in 0..count {
            cursor = self.next_after(cursor)?;
            out.push(cursor.with_timezone(&self.timezone));
        }
        Ok(out)
    }

    /// The latest slot at or before `now`, found by walking forward from `after` (exclusive), so
    /// that the slot is the same instant the forward search gives everywhere else (DST
    /// included). `None` when no slot lies in `(after, now]`. Also counts those slots, up to
    /// `MAX_COUNTED_SLOTS`: a long outage of a minutely schedule is not walked slot by slot
    /// forever (the count then says "at least").
    pub fn latest_slot(
        &self,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<(DateTime<Utc>, u32)>, ScheduleError> {
        let first = self.next_after(after)?;
        if first > now {
            return Ok(None);
        }
        let mut latest = first;
        let mut count: u32 = 1;
        loop {
            if count >= MAX_COUNTED_SLOTS {
                // Jump to the latest occurrence at or before `now`, then take the forward
                // search's instant for it, so that the slot is the same everywhere.
                let back = self
                    .cron
                    .find_previous_occurrence(&now.with_timezone(&self.timezone), true)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| self.search_error(e))?;
                let forward = self.next_after(back - TimeDelta::seconds(1))?;
                let slot = if forward <= now { forward } else { back };
                return Ok(Some((slot.max(latest), count)));
            }
            let next = self.next_after(latest)?;
            if next > now {
                return Ok(Some((latest, count)));
            }
            latest = next;
            count += 1;
        }
    }

    /// A slot shown on the schedule's own wall clock (`2026-03-29 03:00 CEST`).
    pub fn local(&self, slot: DateTime<Utc>) -> String {
        slot.with_timezone(&self.timezone)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    fn search_error(&self, e: croner::errors::CronError) -> ScheduleError {
        ScheduleError::Search {
            schedule: self.name.clone(),
            pattern: self.cron_text.clone(),
            message: format!("no next run time: {e}"),
        }
    }
}

/// How many slots of one outage are counted one by one.
pub const MAX_COUNTED_SLOTS: u32 = 10_000;

fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if fields != 5 && !text.trim_start().starts_with('@') {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| e.to_string())
}

/// A slot as stored: UTC, whole seconds (`2026-03-29T01:00:00Z`), so text order is time order.
pub fn slot_text(slot: DateTime<Utc>) -> String {
    slot.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Reads a stored slot or timestamp back.
pub fn parse_slot(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What time it is, for the scheduler. Tests drive a [`ManualClock`]; `natkey serve` uses the
/// [`SystemClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(now))
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

/// A slot that runs later than its time because natkey was not running then (or a previous
/// run was still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Slots that passed since the last claimed one, including the slot that now runs; only
    /// the latest of them runs. At least this many when it equals [`MAX_COUNTED_SLOTS`].
    pub missed_slots: u32,
    /// How late the run starts.
    pub late_by: TimeDelta,
}

/// What the scheduler does about one schedule now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Claim this slot and run it.
    Run {
        slot: DateTime<Utc>,
        /// Set when the slot is late: natkey was down (or busy) across it.
        catch_up: Option<CatchUp>,
    },
    /// Nothing is due before `next`.
    Wait { next: DateTime<Utc> },
    /// `due` is due, but the run of `running` has not ended: no overlap, `due` waits.
    Busy {
        due: DateTime<Utc>,
        running: DateTime<Utc>,
    },
}

/// How late a slot may start and still count as on time (a scheduler ticks, it does not wake at
/// the exact second).
pub const ON_TIME_GRACE: TimeDelta = TimeDelta::seconds(120);

/// The scheduler's decision for one schedule: pure, from the ledger's state and `now`.
///
/// `anchor` is when natkey started watching a schedule that has never run: a schedule with no
/// claimed slot does not run slots that passed before it (its first run is its first slot after
/// `anchor`). Slots before the schedule's `since` never run either.
pub fn decide(
    schedule: &Schedule,
    state: &LedgerState,
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Decision, ScheduleError> {
    let mut after = state.last_slot.unwrap_or(anchor);
    if let Some(since) = schedule.since {
        after = after.max(since);
    }
    let Some((slot, passed)) = schedule.latest_slot(after, now)? else {
        return Ok(Decision::Wait {
            next: schedule.next_after(after.max(now))?,
        });
    };
    if let Some(running) = state.running {
        return Ok(Decision::Busy { due: slot, running });
    }
    let late_by = now - slot;
    let catch_up = (passed > 1 || late_by > ON_TIME_GRACE).then_some(CatchUp {
        missed_slots: passed,
        late_by,
    });
    Ok(Decision::Run { slot, catch_up })
}

/// What one [`Scheduler::tick`] did for a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// This scheduler claimed the slot: the caller runs the audit, then calls
    /// [`Scheduler::finish`].
    Started(ScheduledRun),
    /// Another scheduler (or an earlier tick) claimed the slot, or a later one, first.
    Taken { slot: DateTime<Utc> },
    /// Nothing due before `next`.
    Waiting { next: DateTime<Utc> },
    /// A run is still running; the due slot waits for it.
    Busy {
        due: DateTime<Utc>,
        running: DateTime<Utc>,
    },
}

/// Ties [`decide`] to a ledger and a clock. It never runs audits itself: `tick` claims a slot,
/// the caller runs the audit and reports the outcome with `finish`.
pub struct Scheduler<L, C> {
    ledger: L,
    clock: C,
    /// Who claims: recorded with each run (in `natkey serve`, the store's instance id, whose
    /// lease tells other processes whether the claim is still alive).
    owner: String,
    started_at: DateTime<Utc>,
}

/// A scheduler failure: its ledger or a schedule that has no next time.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

impl<L: RunLedger, C: Clock> Scheduler<L, C> {
    /// A scheduler that starts watching now (see `anchor` in [`decide`]).
    pub fn new(ledger: L, clock: C, owner: impl Into<String>) -> Self {
        let started_at = clock.now();
        Scheduler {
            ledger,
            clock,
            owner: owner.into(),
            started_at,
        }
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Decides and, when a slot is due, claims it (atomically, in the ledger).
    pub async fn tick(&self, schedule: &Schedule) -> Result<Tick, SchedulerError> {
        let now = self.clock.now();
        let state = self.ledger.state(&schedule.name).await?;
        match decide(schedule, &state, self.started_at, now)? {
            Decision::Wait { next } => Ok(Tick::Waiting { next }),
            Decision::Busy { due, running } => Ok(Tick::Busy { due, running }),
            Decision::Run { slot, catch_up } => {
                let claim = SlotClaim {
                    schedule: schedule.name.clone(),
                    slot,
                    catch_up,
                    owner: self.owner.clone(),
                    at: now,
                };
                match self.ledger.claim(&claim).await? {
                    ClaimOutcome::Claimed(run) => {
                        if let Some(c) = catch_up {
                            tracing::info!(
                                schedule = %schedule.name,
                                "{}",
                                catch_up_message(schedule, slot, c)
                            );
                        }
                        Ok(Tick::Started(run))
                    }
                    ClaimOutcome::Taken => Ok(Tick::Taken { slot }),
                    ClaimOutcome::Busy { running } => Ok(Tick::Busy { due: slot, running }),
                }
            }
        }
    }

    /// Records how a run ended: `Ok(())` succeeded, `Err(reason)` failed with its reason.
    pub async fn finish(
        &self,
        run_id: i64,
        outcome: Result<(), String>,
    ) -> Result<(), LedgerError> {
        let now = self.clock.now();
        match outcome {
            Ok(()) => {
                self.ledger
                    .finish(run_id, RunStatus::Succeeded, None, now)
                    .await
            }
            Err(reason) => {
                self.ledger
                    .finish(run_id, RunStatus::Failed, Some(&reason), now)
                    .await
            }
        }
    }
}

/// What natkey says when it runs a late slot: how many slots it missed, and that it runs only
/// the latest.
pub fn catch_up_message(schedule: &Schedule, slot: DateTime<Utc>, c: CatchUp) -> String {
    let minutes = c.late_by.num_minutes();
    if c.missed_slots > 1 {
        let at_least = if c.missed_slots >= MAX_COUNTED_SLOTS {
            "at least "
        } else {
            ""
        };
        format!(
            "schedule {:?}: natkey missed {at_least}{} scheduled runs; running only the latest, {}, once ({minutes} min late)",
            schedule.name,
            c.missed_slots,
            schedule.local(slot)
        )
    } else {
        format!(
            "schedule {:?}: running the missed run of {} late ({minutes} min)",
            schedule.name,
            schedule.local(slot)
        )
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?} in {}, warehouse {:?})",
            self.name, self.cron_text, self.timezone, self.warehouse
        )
    }
}

#[cfg(test)]
mod tests;
