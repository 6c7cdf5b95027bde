//! Scheduled runs and their notifications, against real SQLite files and a local HTTP receiver.
//! No test sleeps: the scheduler runs on a manual clock, and notification backoff is a
//! millisecond.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use natkey::notify::sqlite_ledger::SqliteNotificationLedger;
use natkey::notify::{
    Delivery, Format, MemoryNotificationLedger, Notification, NotificationKind, NotificationLedger,
    NotificationStatus, Notifier, RetryPolicy, Target,
};
use natkey::schedule::sqlite_ledger::SqliteRunLedger;
use natkey::schedule::{
    ManualClock, RunLedger, RunStatus, Schedule, ScheduleConfig, Scheduler, Tick,
};
use natkey::store::Store;
use serde_json::Value;
use sqlx::sqlite::SqlitePool;

use crate::common::TempDir;

pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("valid time")
}

/// A pool on natkey's store in a SQLite file, opened (and migrated) as `natkey serve` opens it.
async fn pool(path: &Path) -> SqlitePool {
    Store::open(path)
        .await
        .expect("open natkey's store")
        .pool()
        .clone()
}

fn hourly() -> Schedule {
    Schedule::parse(&ScheduleConfig {
        name: "hourly-dw".into(),
        warehouse: "dw".into(),
        cron: "0 * * * *".into(),
        timezone: "Europe/Berlin".into(),
        schemas: vec![],
        tables: vec![],
        notify: vec![],
    })
    .expect("valid schedule")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_on_one_sqlite_store_run_each_slot_exactly_once() {
    let dir = TempDir::new();
    let file = dir.0.join("natkey.db");
    let clock = Arc::new(ManualClock::new(utc(2026, 12, 1, 0, 30)));
    let mut schedulers = Vec::new();
    for owner in ["natkey-a", "natkey-b"] {
        // Each instance has its own pool, as two natkey processes would.
        let pool = pool(&file).await;
        schedulers.push(Arc::new(Scheduler::new(
            SqliteRunLedger::new(pool),
            clock.clone(),
            owner,
        )));
    }
    let schedule = Arc::new(hourly());
    for hour in 1..=12 {
        clock.set(utc(2026, 12, 1, hour, 0) + TimeDelta::seconds(3));
        // Both instances tick twice, all at once.
        let mut tasks = Vec::new();
        for scheduler in schedulers.iter().chain(schedulers.iter()) {
            let (scheduler, schedule) = (scheduler.clone(), schedule.clone());
            tasks.push(tokio::spawn(async move { scheduler.tick(&schedule).await }));
        }
        let mut started = Vec::new();
        for task in tasks {
            match task.await.expect("join").expect("tick") {
                Tick::Started(run) => started.push(run),
                Tick::Taken { slot } => assert_eq!(slot, utc(2026, 12, 1, hour, 0)),
                Tick::Waiting { .. } | Tick::Busy { .. } => {}
            }
        }
        assert_eq!(started.len(), 1, "hour {hour}: {started:?}");
        assert_eq!(started[0].scheduled_for, utc(2026, 12, 1, hour, 0));
        schedulers[0]
            .finish(started[0].id, Ok(()))
            .await
            .expect("finish");
    }
    let runs = schedulers[1]
        .ledger()
        .runs("hourly-dw")
        .await
        .expect("runs");
    assert_eq!(runs.len(), 12);
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
    // The constraint itself refuses a second row for a slot.
    let check = pool(&file).await;
    let dup = sqlx::query(
        "INSERT INTO scheduled_runs (schedule, scheduled_for, status, owner, started_at)
         VALUES ('hourly-dw', '2026-12-01T01:00:00Z', 'running', 'x', '2026-12-01T01:00:00Z')",
    )
    .execute(&check)
    .await;
    assert!(dup.is_err(), "UNIQUE (schedule, scheduled_for) must hold");
}

#[tokio::test]
async fn the_sqlite_ledger_keeps_a_run_s_first_outcome_and_marks_running_runs_interrupted() {
    let dir = TempDir::new();
    let pool = pool(&dir.0.join("natkey.db")).await;
    let clock = Arc::new(ManualClock::new(utc(2026, 12, 1, 0, 30)));
    let scheduler = Scheduler::new(SqliteRunLedger::new(pool), clock.clone(), "natkey-a");
    let schedule = hourly();
    clock.set(utc(2026, 12, 1, 1, 0));
    let Tick::Started(first) = scheduler.tick(&schedule).await.expect("tick") else {
        panic!("the 01:00 slot should start");
    };
    scheduler
        .finish(first.id, Err("warehouse \"dw\": timeout".into()))
        .await
        .expect("finish");
    scheduler
        .finish(first.id, Ok(()))
        .await
        .expect("finish again");
    clock.set(utc(2026, 12, 1, 2, 0));
    let Tick::Started(second) = scheduler.tick(&schedule).await.expect("tick") else {
        panic!("the 02:00 slot should start after a failed 01:00");
    };
    // Still running at 03:00: the 03:00 slot waits, from either process.
    clock.set(utc(2026, 12, 1, 3, 0));
    assert_eq!(
        scheduler.tick(&schedule).await.expect("tick"),
        Tick::Busy {
            due: utc(2026, 12, 1, 3, 0),
            running: utc(2026, 12, 1, 2, 0)
        }
    );
    assert_eq!(
        scheduler
            .ledger()
            .interrupt_running("natkey stopped", utc(2026, 12, 1, 3, 5))
            .await
            .expect("interrupt"),
        1
    );
    let runs = scheduler.ledger().runs("hourly-dw").await.expect("runs");
    assert_eq!(runs[0].id, second.id);
    assert_eq!(runs[0].status, RunStatus::Interrupted);
    assert_eq!(runs[1].status, RunStatus::Failed);
    assert_eq!(runs[1].reason.as_deref(), Some("warehouse \"dw\": timeout"));
}

// ---------------------------------------------------------------------------------------------
// Notifications against a local receiver

/// A webhook receiver that answers `fail_with` to its first `fail_first` calls and dedupes
/// messages by `Idempotency-Key`.
#[derive(Default)]
pub struct Receiver {
    calls: AtomicU32,
    pub fail_first: u32,
    pub fail_with: u16,
    keys: Mutex<Vec<String>>,
    messages: Mutex<HashMap<String, Value>>,
}

impl Receiver {
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn messages(&self) -> HashMap<String, Value> {
        self.messages.lock().expect("lock").clone()
    }

    pub fn keys(&self) -> Vec<String> {
        self.keys.lock().expect("lock").clone()
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let call = receiver.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    receiver.keys.lock().expect("lock").push(key.to_string());
    if call <= receiver.fail_first {
        return StatusCode::from_u16(receiver.fail_with).expect("status");
    }
    let Ok(json) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    // Dedupe: a key seen before is acknowledged and not delivered again.
    receiver
        .messages
        .lock()
        .expect("lock")
        .entry(key.to_string())
        .or_insert(json);
    StatusCode::OK
}

/// Starts a receiver on 127.0.0.1:0; returns its webhook URL (with a secret path).
pub async fn start_receiver(receiver: Arc<Receiver>) -> String {
    let app = axum::Router::new()
        .route("/hooks/{secret}", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hooks/T0000-SECRET-TOKEN")
}

pub fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        timeout: Duration::from_secs(5),
    }
}

fn failed_run(run_id: i64) -> Notification {
    Notification {
        run_id,
        schedule: "nightly-dw".into(),
        scheduled_for: Some(utc(2026, 12, 3, 1, 0)),
        warehouse: "dw".into(),
        kind: NotificationKind::Failed {
            reason: "connecting to warehouse \"dw\": connection refused".into(),
        },
    }
}

fn notifier<L: NotificationLedger>(ledger: L) -> Notifier<L> {
    Notifier::new(
        ledger,
        Arc::new(ManualClock::new(utc(2026, 12, 3, 1, 5))),
        fast(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_retried_after_503s_is_delivered_exactly_once() {
    let receiver = Arc::new(Receiver {
        fail_first: 2,
        fail_with: 503,
        ..Receiver::default()
    });
    let url = start_receiver(receiver.clone()).await;
    let target = Target::new("data-oncall", &url, Format::Json).expect("target");
    let notifier = notifier(MemoryNotificationLedger::new());
    let delivery = notifier.send(&target, &failed_run(42)).await.expect("send");
    assert_eq!(delivery, Delivery::Delivered { attempts: 3 });
    assert_eq!(receiver.calls(), 3);
    assert_eq!(receiver.keys(), vec!["natkey:42:data-oncall"; 3]);
    let messages = receiver.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages["natkey:42:data-oncall"];
    assert_eq!(message["status"], "failed");
    assert_eq!(message["run_id"], 42);
    assert_eq!(message["warehouse"], "dw");
    // Sending the same notification again sends nothing: the ledger says it was delivered.
    assert_eq!(
        notifier.send(&target, &failed_run(42)).await.expect("send"),
        Delivery::AlreadyDelivered
    );
    assert_eq!(receiver.calls(), 3);
    let row = notifier
        .ledger()
        .get("natkey:42:data-oncall")
        .await
        .expect("ledger")
        .expect("row");
    assert_eq!(row.status, NotificationStatus::Succeeded);
    assert_eq!(row.attempts, 3);
    assert!(
        row.last_error.as_deref().is_some_and(|e| e.contains("503")),
        "{row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_fails_the_notification_without_retry_and_without_leaking_the_url() {
    let receiver = Arc::new(Receiver {
        fail_first: u32::MAX,
        fail_with: 404,
        ..Receiver::default()
    });
    let url = start_receiver(receiver.clone()).await;
    let target = Target::new("data-oncall", &url, Format::Slack).expect("target");
    let notifier = notifier(MemoryNotificationLedger::new());
    let delivery = notifier.send(&target, &failed_run(7)).await.expect("send");
    let Delivery::Failed { attempts, error } = delivery else {
        panic!("a 404 should fail: {delivery:?}");
    };
    assert_eq!(attempts, 1);
    assert_eq!(receiver.calls(), 1);
    assert!(error.contains("404"), "{error}");
    assert!(
        !error.contains("SECRET"),
        "the URL's secret leaked: {error}"
    );
    assert!(!format!("{target:?}").contains("SECRET"));
    let row = notifier
        .ledger()
        .get("natkey:7:data-oncall")
        .await
        .expect("ledger")
        .expect("row");
    assert_eq!(row.status, NotificationStatus::Failed);
    // A failed notification is not re-sent by a later send.
    assert!(matches!(
        notifier.send(&target, &failed_run(7)).await.expect("send"),
        Delivery::AlreadyFailed { .. }
    ));
    assert_eq!(receiver.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_call_and_the_ledger_update_resends_with_the_same_key_once() {
    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone()).await;
    let target = Target::new("data-oncall", &url, Format::Json).expect("target");
    let dir = TempDir::new();
    let file = dir.0.join("natkey.db");

    // First life: the call reaches the receiver...
    let first = pool(&file).await;
    let notifier_a = notifier(SqliteNotificationLedger::new(first.clone()));
    let delivery = notifier_a
        .send(&target, &failed_run(9))
        .await
        .expect("send");
    assert_eq!(delivery, Delivery::Delivered { attempts: 1 });
    // ...but natkey is killed before the ledger says so: the row is still pending.
    sqlx::query("UPDATE notifications SET status = 'pending' WHERE idempotency_key = ?")
        .bind("natkey:9:data-oncall")
        .execute(&first)
        .await
        .expect("simulate the kill");
    first.close().await;

    // Second life, on the same store: pending notifications are re-sent.
    let second = pool(&file).await;
    let notifier_b = notifier(SqliteNotificationLedger::new(second));
    let resent = notifier_b.resend_pending(&[target]).await.expect("resend");
    assert_eq!(
        resent,
        vec![(
            "natkey:9:data-oncall".to_string(),
            Delivery::Delivered { attempts: 2 }
        )]
    );
    assert_eq!(receiver.calls(), 2, "the message was sent twice");
    assert_eq!(receiver.keys(), vec!["natkey:9:data-oncall"; 2]);
    assert_eq!(receiver.messages().len(), 1, "and delivered once");
    assert!(
        notifier_b
            .ledger()
            .pending()
            .await
            .expect("pending")
            .is_empty()
    );
    assert!(
        notifier_b
            .resend_pending(&[])
            .await
            .expect("resend")
            .is_empty(),
        "nothing is left to re-send"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_notification_of_a_removed_target_fails_and_the_others_are_still_resent() {
    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone()).await;
    let kept = Target::new("data-oncall", &url, Format::Json).expect("target");
    let removed = Target::new("old-channel", &url, Format::Json).expect("target");
    let notifier = notifier(MemoryNotificationLedger::new());
    // natkey stopped before either message went out: both rows are pending.
    for (target, run) in [(&removed, 3), (&kept, 4)] {
        let record = natkey::notify::NotificationRecord {
            key: format!("natkey:{run}:{}", target.name),
            run_id: run,
            target: target.name.clone(),
            status: NotificationStatus::Pending,
            attempts: 0,
            last_error: None,
            body: failed_run(run).body(Format::Json, &format!("natkey:{run}:{}", target.name)),
            created_at: utc(2026, 12, 3, 1, 0),
            updated_at: utc(2026, 12, 3, 1, 0),
        };
        notifier.ledger().begin(&record).await.expect("pending row");
    }
    // "old-channel" was removed from natkey.toml before the restart.
    let resent = notifier
        .resend_pending(std::slice::from_ref(&kept))
        .await
        .expect("resend");
    assert_eq!(resent.len(), 2, "{resent:?}");
    assert_eq!(receiver.keys(), vec!["natkey:4:data-oncall"]);
    let row = notifier
        .ledger()
        .get("natkey:3:old-channel")
        .await
        .expect("ledger")
        .expect("row");
    assert_eq!(row.status, NotificationStatus::Failed);
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no longer configured")),
        "{row:?}"
    );
    assert!(
        notifier
            .ledger()
            .pending()
            .await
            .expect("pending")
            .is_empty()
    );
}
