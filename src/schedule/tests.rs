use std::sync::Arc;

use chrono::{TimeZone, Utc};

use super::*;

fn config(cron: &str, timezone: &str) -> ScheduleConfig {
    ScheduleConfig {
        name: "nightly-dw".into(),
        warehouse: "dw".into(),
        cron: cron.into(),
        timezone: timezone.into(),
        schemas: vec![],
        tables: vec![],
        notify: vec!["data-oncall".into()],
    }
}

fn schedule(cron: &str, timezone: &str) -> Schedule {
    Schedule::parse(&config(cron, timezone)).expect("valid schedule")
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("valid time")
}

#[test]
fn a_cron_pattern_with_four_fields_is_an_error_naming_schedule_and_field() {
    let err = Schedule::parse(&config("0 2 * *", "Europe/Berlin")).expect_err("an error");
    let text = err.to_string();
    assert!(
        text.starts_with(r#"schedule "nightly-dw": cron "0 2 * *": "#),
        "{text}"
    );
    assert!(text.contains("expected 5 fields"), "{text}");
}

#[test]
fn an_hour_out_of_range_is_an_error_naming_the_cron_field() {
    let text = Schedule::parse(&config("0 25 * * *", "UTC"))
        .expect_err("an error")
        .to_string();
    assert!(
        text.starts_with(r#"schedule "nightly-dw": cron "0 25 * * *": "#),
        "{text}"
    );
}

#[test]
fn an_unknown_time_zone_is_an_error_naming_the_zone() {
    let text = Schedule::parse(&config("0 2 * * *", "Europe/Berln"))
        .expect_err("an error")
        .to_string();
    assert!(
        text.contains(r#"schedule "nightly-dw": timezone: unknown time zone "Europe/Berln""#),
        "{text}"
    );
}

#[test]
fn a_table_filter_is_parsed_like_the_table_option() {
    let mut c = config("0 2 * * *", "UTC");
    c.tables = vec!["sales.daily_orders".into(), "\"my.schema\".t".into()];
    let s = Schedule::parse(&c).expect("valid");
    assert_eq!(s.tables[1].schema.as_deref(), Some("my.schema"));
    c.tables = vec!["\"unterminated".into()];
    let text = Schedule::parse(&c).expect_err("an error").to_string();
    assert!(
        text.starts_with(r#"schedule "nightly-dw": tables: unterminated quote"#),
        "{text}"
    );
}

#[test]
fn an_unknown_notify_target_is_an_error() {
    let s = schedule("0 2 * * *", "UTC");
    assert!(s.check_targets(&["data-oncall"]).is_ok());
    let text = s
        .check_targets(&["other"])
        .expect_err("an error")
        .to_string();
    assert!(
        text.contains(r#"notify: unknown target "data-oncall""#),
        "{text}"
    );
}

#[test]
fn next_runs_stay_on_the_berlin_wall_clock_across_spring_forward() {
    // 2026-03-29: Europe/Berlin jumps from 02:00 CET to 03:00 CEST (01:00 UTC).
    let s = schedule("0 2 * * *", "Europe/Berlin");
    let runs = s.next_runs(utc(2026, 3, 27, 12, 0), 3).expect("next runs");
    let utc_runs: Vec<_> = runs.iter().map(|t| t.with_timezone(&Utc)).collect();
    // 02:00 CET is 01:00 UTC; on the 29th 02:00 does not exist and the run is at 03:00 CEST
    // (01:00 UTC, the first instant after the gap); from the 30th 02:00 CEST is 00:00 UTC.
    assert_eq!(
        utc_runs,
        [
            utc(2026, 3, 28, 1, 0),
            utc(2026, 3, 29, 1, 0),
            utc(2026, 3, 30, 0, 0)
        ]
    );
    assert_eq!(s.local(utc_runs[1]), "2026-03-29 03:00 CEST");
}

#[test]
fn a_0230_slot_on_the_spring_forward_day_runs_once_at_0300_cest() {
    let s = schedule("30 2 * * *", "Europe/Berlin");
    let runs = s.next_runs(utc(2026, 3, 28, 12, 0), 2).expect("next runs");
    assert_eq!(runs[0].with_timezone(&Utc), utc(2026, 3, 29, 1, 0));
    assert_eq!(
        s.local(runs[0].with_timezone(&Utc)),
        "2026-03-29 03:00 CEST"
    );
    assert_eq!(
        s.local(runs[1].with_timezone(&Utc)),
        "2026-03-30 02:30 CEST"
    );
}

#[test]
fn a_0230_slot_on_the_berlin_fall_back_day_runs_once_at_its_first_occurrence() {
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens at 00:30 and 01:30 UTC.
    let s = schedule("30 2 * * *", "Europe/Berlin");
    let runs = s.next_runs(utc(2026, 10, 24, 12, 0), 2).expect("next runs");
    assert_eq!(runs[0].with_timezone(&Utc), utc(2026, 10, 25, 0, 30));
    assert_eq!(s.local(utc(2026, 10, 25, 0, 30)), "2026-10-25 02:30 CEST");
    assert_eq!(runs[1].with_timezone(&Utc), utc(2026, 10, 26, 1, 30));
    // A tick during the repeated 02:30 (CET) finds nothing due: the slot already ran.
    assert_eq!(
        s.latest_slot(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 45))
            .expect("search"),
        None
    );
}

#[test]
fn a_0130_slot_on_the_new_york_fall_back_day_runs_once() {
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 is 05:30 and 06:30 UTC.
    let s = schedule("30 1 * * *", "America/New_York");
    let runs = s.next_runs(utc(2026, 10, 31, 12, 0), 2).expect("next runs");
    assert_eq!(runs[0].with_timezone(&Utc), utc(2026, 11, 1, 5, 30));
    assert_eq!(runs[1].with_timezone(&Utc), utc(2026, 11, 2, 6, 30));
}

#[test]
fn an_interval_pattern_runs_at_every_real_instant_of_the_repeated_hour() {
    let s = schedule("*/30 * * * *", "Europe/Berlin");
    let runs: Vec<_> = s
        .next_runs(utc(2026, 10, 24, 23, 50), 4)
        .expect("next runs")
        .iter()
        .map(|t| t.with_timezone(&Utc))
        .collect();
    assert_eq!(
        runs,
        [
            utc(2026, 10, 25, 0, 0),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1, 0),
            utc(2026, 10, 25, 1, 30)
        ]
    );
}

#[test]
fn decide_runs_the_latest_of_three_missed_slots_once_as_a_catch_up() {
    let s = schedule("0 2 * * *", "Europe/Berlin");
    // Last run: 1 Dec 02:00 CET. natkey was down across 2, 3 and 4 Dec 02:00, back at 10:00 on the 4th.
    let state = LedgerState {
        last_slot: Some(utc(2026, 12, 1, 1, 0)),
        running: None,
    };
    let now = utc(2026, 12, 4, 9, 0);
    let decision = decide(&s, &state, utc(2026, 11, 1, 0, 0), now).expect("decide");
    assert_eq!(
        decision,
        Decision::Run {
            slot: utc(2026, 12, 4, 1, 0),
            catch_up: Some(CatchUp {
                missed_slots: 3,
                late_by: TimeDelta::hours(8)
            })
        }
    );
    let message = catch_up_message(
        &s,
        utc(2026, 12, 4, 1, 0),
        CatchUp {
            missed_slots: 3,
            late_by: TimeDelta::hours(8),
        },
    );
    assert!(
        message.contains(
            "missed 3 scheduled runs; running only the latest, 2026-12-04 02:00 CET, once"
        ),
        "{message}"
    );
}

#[test]
fn decide_on_time_is_not_a_catch_up_and_a_busy_schedule_waits() {
    let s = schedule("0 2 * * *", "Europe/Berlin");
    let state = LedgerState {
        last_slot: Some(utc(2026, 12, 1, 1, 0)),
        running: None,
    };
    assert_eq!(
        decide(
            &s,
            &state,
            state.last_slot.unwrap_or_default(),
            utc(2026, 12, 2, 1, 0)
        ),
        Ok(Decision::Run {
            slot: utc(2026, 12, 2, 1, 0),
            catch_up: None
        })
    );
    let busy = LedgerState {
        running: Some(utc(2026, 12, 1, 1, 0)),
        ..state.clone()
    };
    assert_eq!(
        decide(&s, &busy, utc(2026, 11, 1, 0, 0), utc(2026, 12, 2, 1, 0)),
        Ok(Decision::Busy {
            due: utc(2026, 12, 2, 1, 0),
            running: utc(2026, 12, 1, 1, 0)
        })
    );
    assert_eq!(
        decide(&s, &state, utc(2026, 11, 1, 0, 0), utc(2026, 12, 1, 18, 0)),
        Ok(Decision::Wait {
            next: utc(2026, 12, 2, 1, 0)
        })
    );
}

#[test]
fn a_very_long_outage_of_a_minutely_schedule_still_finds_the_latest_slot() {
    let s = schedule("* * * * *", "UTC");
    let found = s
        .latest_slot(
            utc(2026, 12, 1, 0, 0),
            utc(2026, 12, 11, 7, 3) + TimeDelta::seconds(20),
        )
        .expect("search");
    assert_eq!(found, Some((utc(2026, 12, 11, 7, 3), MAX_COUNTED_SLOTS)));
}

type TestScheduler = Scheduler<Arc<MemoryRunLedger>, Arc<ManualClock>>;

fn scheduler(start: DateTime<Utc>) -> (TestScheduler, Arc<ManualClock>, Arc<MemoryRunLedger>) {
    let clock = Arc::new(ManualClock::new(start));
    let ledger = Arc::new(MemoryRunLedger::new());
    (
        Scheduler::new(ledger.clone(), clock.clone(), "test"),
        clock,
        ledger,
    )
}

fn started(tick: Tick) -> ScheduledRun {
    match tick {
        Tick::Started(run) => run,
        other => panic!("expected a started run, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_schedule_waits_for_its_first_slot_instead_of_running_a_past_one() {
    let s = schedule("0 2 * * *", "Europe/Berlin");
    let (scheduler, clock, _) = scheduler(utc(2026, 12, 1, 9, 0));
    assert_eq!(
        scheduler.tick(&s).await.expect("tick"),
        Tick::Waiting {
            next: utc(2026, 12, 2, 1, 0)
        }
    );
    clock.set(utc(2026, 12, 2, 1, 0) + TimeDelta::seconds(5));
    let run = started(scheduler.tick(&s).await.expect("tick"));
    assert_eq!(run.scheduled_for, utc(2026, 12, 2, 1, 0));
    assert_eq!(run.catch_up, None);
}

#[test]
fn a_schedule_made_on_the_page_never_runs_a_slot_from_before_it_was_made() {
    // natkey has watched since 1 December; the schedule was made on 4 December at 10:00, after
    // that morning's 02:00 (01:00 UTC) slot, and again after a slot of an earlier schedule of
    // the same name: neither the morning's slot nor the old schedule's missed ones run.
    let mut s = schedule("0 2 * * *", "Europe/Berlin");
    s.since = Some(utc(2026, 12, 4, 9, 0));
    let now = utc(2026, 12, 4, 9, 30);
    for last_slot in [None, Some(utc(2026, 12, 1, 1, 0))] {
        let state = LedgerState {
            last_slot,
            running: None,
        };
        assert_eq!(
            decide(&s, &state, utc(2026, 12, 1, 0, 0), now).expect("decide"),
            Decision::Wait {
                next: utc(2026, 12, 5, 1, 0)
            },
            "last slot {last_slot:?}"
        );
    }
    // Its first slot runs on time.
    let state = LedgerState {
        last_slot: None,
        running: None,
    };
    let at = utc(2026, 12, 5, 1, 0) + TimeDelta::seconds(5);
    assert_eq!(
        decide(&s, &state, utc(2026, 12, 1, 0, 0), at).expect("decide"),
        Decision::Run {
            slot: utc(2026, 12, 5, 1, 0),
            catch_up: None
        }
    );
}

#[tokio::test]
async fn a_running_run_is_never_overlapped_and_its_successor_runs_when_it_ends() {
    let s = schedule("0 * * * *", "UTC");
    let (scheduler, clock, ledger) = scheduler(utc(2026, 12, 1, 0, 30));
    clock.set(utc(2026, 12, 1, 1, 0));
    let first = started(scheduler.tick(&s).await.expect("tick"));
    // The audit takes longer than an hour: the 02:00 slot is due but waits.
    clock.set(utc(2026, 12, 1, 2, 0));
    assert_eq!(
        scheduler.tick(&s).await.expect("tick"),
        Tick::Busy {
            due: utc(2026, 12, 1, 2, 0),
            running: utc(2026, 12, 1, 1, 0)
        }
    );
    clock.set(utc(2026, 12, 1, 2, 10));
    scheduler.finish(first.id, Ok(())).await.expect("finish");
    let second = started(scheduler.tick(&s).await.expect("tick"));
    assert_eq!(second.scheduled_for, utc(2026, 12, 1, 2, 0));
    assert_eq!(second.catch_up, Some(1), "ten minutes late: flagged");
    let runs = ledger.runs("nightly-dw").await.expect("runs");
    assert_eq!(runs.len(), 2);
}

#[tokio::test]
async fn a_failed_run_keeps_its_reason_and_the_next_slot_runs_as_usual() {
    let s = schedule("0 2 * * *", "Europe/Berlin");
    let (scheduler, clock, ledger) = scheduler(utc(2026, 12, 1, 0, 0));
    clock.set(utc(2026, 12, 1, 1, 0));
    let run = started(scheduler.tick(&s).await.expect("tick"));
    clock.advance(TimeDelta::minutes(3));
    scheduler
        .finish(
            run.id,
            Err("connecting to warehouse \"dw\": connection refused".into()),
        )
        .await
        .expect("finish");
    assert_eq!(
        scheduler.tick(&s).await.expect("tick"),
        Tick::Waiting {
            next: utc(2026, 12, 2, 1, 0)
        },
        "a failed slot is not retried in a loop"
    );
    clock.set(utc(2026, 12, 2, 1, 0));
    let next = started(scheduler.tick(&s).await.expect("tick"));
    scheduler.finish(next.id, Ok(())).await.expect("finish");
    let runs = ledger.runs("nightly-dw").await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[1].status, RunStatus::Failed);
    assert_eq!(
        runs[1].reason.as_deref(),
        Some("connecting to warehouse \"dw\": connection refused")
    );
}

#[tokio::test]
async fn after_downtime_across_three_slots_one_catch_up_run_starts() {
    let s = schedule("0 2 * * *", "Europe/Berlin");
    let (scheduler, clock, ledger) = scheduler(utc(2026, 11, 30, 12, 0));
    clock.set(utc(2026, 12, 1, 1, 0));
    let run = started(scheduler.tick(&s).await.expect("tick"));
    scheduler.finish(run.id, Ok(())).await.expect("finish");
    // Down from the 1st to the 4th at 10:00 CET: 2, 3 and 4 Dec 02:00 were missed.
    clock.set(utc(2026, 12, 4, 9, 0));
    let catch_up = started(scheduler.tick(&s).await.expect("tick"));
    assert_eq!(catch_up.scheduled_for, utc(2026, 12, 4, 1, 0));
    assert_eq!(catch_up.catch_up, Some(3));
    scheduler.finish(catch_up.id, Ok(())).await.expect("finish");
    assert!(matches!(
        scheduler.tick(&s).await.expect("tick"),
        Tick::Waiting { .. }
    ));
    assert_eq!(ledger.runs("nightly-dw").await.expect("runs").len(), 2);
}

#[tokio::test]
async fn claiming_a_slot_twice_gives_one_run() {
    let s = schedule("0 2 * * *", "UTC");
    let ledger = MemoryRunLedger::new();
    let claim = SlotClaim {
        schedule: s.name.clone(),
        slot: utc(2026, 12, 1, 2, 0),
        catch_up: None,
        owner: "a".into(),
        at: utc(2026, 12, 1, 2, 0),
    };
    assert!(matches!(
        ledger.claim(&claim).await.expect("claim"),
        ClaimOutcome::Claimed(_)
    ));
    assert_eq!(
        ledger.claim(&claim).await.expect("claim"),
        ClaimOutcome::Taken
    );
}
