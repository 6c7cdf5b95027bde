//! Nightly audits wired end to end: `NightlyAudits` (the scheduler `natkey serve` runs) on a
//! manual clock, over a real store, real warehouses (the SQLite demo warehouse, PostgreSQL) and
//! a local webhook receiver; the Schedules page and API, run history and its difference from
//! the previous run, trends, `/metrics`, and `natkey audit --save`. No test sleeps for a slot:
//! the clock is moved, and each tick's runs are awaited.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use natkey::config::Config;
use natkey::notify::Delivery;
use natkey::schedule::{ManualClock, RunStatus as SlotStatus};
use natkey::store::Store;
use natkey::web::nightly::SlotOutcome;
use natkey::web::{AppState, AuthSettings, NightlyAudits};
use serde_json::Value;
use sqlx::Connection;

use crate::common::{TempDir, TestDb, natkey};
use crate::fixtures::toml_str;
use crate::schedule::{Receiver, fast, start_receiver, utc};
use crate::web::{get, post_form, post_json, texts};

/// natkey.toml for one warehouse `dw` at `url`, an hourly schedule notifying `data-oncall`.
fn config_text(url: &str, hook: &str, extra: &str) -> String {
    format!(
        "{demo}\n[[warehouse]]\nname = \"dw\"\nurl = {url}\n\n\
         [[schedule]]\nname = \"hourly-dw\"\nwarehouse = \"dw\"\ncron = \"0 * * * *\"\n\
         timezone = \"Europe/Berlin\"\nnotify = [\"data-oncall\"]\n\n\
         [[notify]]\nname = \"data-oncall\"\nurl = {hook}\nformat = \"json\"\n{extra}",
        demo = natkey::demo::DEMO_CONFIG,
        url = toml_str(url),
        hook = toml_str(hook),
    )
}

async fn state(dir: &Path, url: &str, config: &str) -> AppState {
    let config = Config::parse(config, Path::new("natkey.toml")).expect("config parses");
    crate::web::state_for(dir, "dw", url, config, AuthSettings::default()).await
}

/// A store, a SQLite warehouse `dw` (the demo warehouse when `create`), a webhook receiver,
/// and the scheduler on a manual clock at 2026-12-01 00:30 UTC.
struct Setup {
    dir: TempDir,
    warehouse: std::path::PathBuf,
    receiver: Arc<Receiver>,
    state: AppState,
    clock: Arc<ManualClock>,
    nightly: Arc<NightlyAudits>,
}

async fn setup(file: &str, create: bool) -> Setup {
    let dir = TempDir::new();
    let warehouse = dir.0.join(file);
    if create {
        natkey::demo::create_demo_warehouse(&warehouse)
            .await
            .expect("demo warehouse");
    }
    let url = format!("sqlite://{}", warehouse.display());
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(receiver.clone()).await;
    let state = state(&dir.0, &url, &config_text(&url, &hook, "")).await;
    let clock = Arc::new(ManualClock::new(utc(2026, 12, 1, 0, 30)));
    let nightly = Arc::new(NightlyAudits::new(state.clone(), clock.clone(), fast()));
    Setup {
        dir,
        warehouse,
        receiver,
        state,
        clock,
        nightly,
    }
}

/// Ticks once at `at` and waits for every run the tick started.
async fn tick_at(
    nightly: &Arc<NightlyAudits>,
    clock: &ManualClock,
    at: DateTime<Utc>,
) -> Vec<SlotOutcome> {
    clock.set(at);
    let mut out = Vec::new();
    for handle in nightly.tick().await {
        out.push(
            tokio::time::timeout(Duration::from_secs(240), handle)
                .await
                .expect("the scheduled audit ends")
                .expect("join"),
        );
    }
    out
}

fn message_for(receiver: &Receiver, run: i64) -> Value {
    receiver
        .messages()
        .remove(&format!("natkey:{run}:data-oncall"))
        .unwrap_or_else(|| panic!("no message for run {run}: {:?}", receiver.keys()))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            format!(
                "{}.{}",
                c["schema"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Copies one more day of `daily_orders` under new surrogate keys: a retried load.
async fn retry_a_load(warehouse: &Path) {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", warehouse.display()))
        .await
        .expect("open the warehouse to write");
    sqlx::query(
        "INSERT INTO daily_orders (surrogate_key, order_id, line_item_id, order_date, customer_id, \
             quantity, amount_cents, loaded_at) \
         SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || \
             substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' || \
             hex(randomblob(6))), order_id, line_item_id, order_date, customer_id, quantity, \
             amount_cents, '2026-12-01 01:07:00' \
         FROM daily_orders WHERE order_date = (SELECT MIN(order_date) FROM daily_orders)",
    )
    .execute(&mut conn)
    .await
    .expect("retry a load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_slots_record_history_show_the_difference_and_notify_only_when_worse() {
    let Setup {
        dir: _dir,
        warehouse,
        receiver,
        state,
        clock,
        nightly,
    } = setup("dw.sqlite", true).await;

    // Nothing is due before the first slot after the scheduler started.
    assert!(
        tick_at(&nightly, &clock, utc(2026, 12, 1, 0, 45))
            .await
            .is_empty()
    );

    // 01:00: the first run. Every table with duplicates is new: one message.
    let slot1 = tick_at(
        &nightly,
        &clock,
        utc(2026, 12, 1, 1, 0) + TimeDelta::seconds(3),
    )
    .await;
    assert_eq!(slot1.len(), 1, "{slot1:?}");
    assert_eq!(slot1[0].status, SlotStatus::Succeeded, "{slot1:?}");
    assert_eq!(slot1[0].slot, utc(2026, 12, 1, 1, 0));
    let run1 = slot1[0].run.expect("a run");
    assert_eq!(
        slot1[0].notifications,
        vec![(
            "data-oncall".to_string(),
            Delivery::Delivered { attempts: 1 }
        )]
    );
    let first = message_for(&receiver, run1);
    assert_eq!(first["status"], "duplicates");
    assert_eq!(first["schedule"], "hourly-dw");
    assert_eq!(first["scheduled_for"], "2026-12-01T01:00:00Z");
    assert!(names(&first["new_duplicates"]).contains(&"main.daily_orders".to_string()));
    // A second tick in the same slot starts nothing.
    assert!(
        tick_at(
            &nightly,
            &clock,
            utc(2026, 12, 1, 1, 0) + TimeDelta::seconds(30)
        )
        .await
        .is_empty()
    );

    // 02:00: the same duplicates. Recorded, not notified.
    let slot2 = tick_at(
        &nightly,
        &clock,
        utc(2026, 12, 1, 2, 0) + TimeDelta::seconds(3),
    )
    .await;
    assert_eq!(slot2[0].status, SlotStatus::Succeeded);
    assert!(slot2[0].notifications.is_empty(), "{slot2:?}");
    let run2 = slot2[0].run.expect("a run");
    assert_eq!(receiver.calls(), 1);

    // A load is retried; 03:00 finds daily_orders worse and says so.
    retry_a_load(&warehouse).await;
    let slot3 = tick_at(
        &nightly,
        &clock,
        utc(2026, 12, 1, 3, 0) + TimeDelta::seconds(3),
    )
    .await;
    let run3 = slot3[0].run.expect("a run");
    assert_eq!(slot3[0].notifications.len(), 1, "{slot3:?}");
    let third = message_for(&receiver, run3);
    assert_eq!(
        names(&third["worse"]),
        vec!["main.daily_orders".to_string()]
    );
    assert_eq!(receiver.calls(), 2);

    // The API lists the schedule's runs, newest first, with their slots.
    let runs = get(&state, "/api/runs?schedule=hourly-dw").await.json();
    let runs = runs["runs"].as_array().expect("runs").clone();
    let ids: Vec<i64> = runs.iter().map(|r| r["id"].as_i64().unwrap_or(0)).collect();
    assert_eq!(ids, vec![run3, run2, run1]);
    assert_eq!(runs[0]["scheduled_for"], "2026-12-01T03:00:00Z");
    assert_eq!(runs[0]["trigger"], "schedule");
    assert_eq!(runs[0]["status"], "succeeded");
    assert!(runs[0]["duration_secs"].as_f64().is_some());

    // Each run's difference from the previous run of the schedule.
    let api = get(&state, &format!("/api/runs/{run3}")).await.json();
    assert_eq!(api["previous_run"], run2);
    assert_eq!(
        names(&api["diff"]["worse"]),
        vec!["main.daily_orders".to_string()]
    );
    let page = get(&state, &format!("/runs/{run3}")).await.html();
    let worse = texts(&page, "#diff ul.bad li");
    assert!(
        worse.iter().any(|l| l.starts_with("main.daily_orders:")),
        "{worse:?}"
    );
    let page2 = get(&state, &format!("/runs/{run2}")).await.html();
    assert!(
        texts(&page2, "#diff p.good-message")
            .iter()
            .any(|t| t.contains("No table changed")),
        "{}",
        page2.html()
    );

    // The table page charts the table over past audits: excess rows and each measure.
    let report = get(&state, &format!("/api/runs/{run3}")).await.json()["report"].clone();
    let index = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .position(|t| t["name"] == "daily_orders")
        .expect("daily_orders audited");
    let table = get(&state, &format!("/runs/{run3}/tables/{index}"))
        .await
        .html();
    let labels = texts(&table, "#past-audits .trend .label");
    assert!(
        labels.contains(&"excess rows, past audits".to_string()),
        "{labels:?}"
    );
    assert!(
        labels.contains(&"amount_cents overcount, past audits".to_string()),
        "{labels:?}"
    );
    assert_eq!(
        table
            .select(&crate::web::sel("#past-audits svg"))
            .next()
            .map(|svg| svg.select(&crate::web::sel("circle")).count()),
        Some(3)
    );

    // /metrics: the latest figures per table, runs and notifications by status.
    let metrics = get(&state, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let excess = report["tables"][index]["excess_rows"]
        .as_i64()
        .expect("excess");
    assert!(
        metrics.body.contains(&format!(
            "natkey_table_excess_rows{{warehouse=\"dw\",schema=\"main\",table=\"daily_orders\"}} {excess}\n"
        )),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("natkey_runs{warehouse=\"dw\",status=\"succeeded\"} 3\n")
    );
    assert!(
        metrics
            .body
            .contains("natkey_notifications{target=\"data-oncall\",status=\"succeeded\"} 2\n")
    );
    assert!(
        metrics
            .body
            .contains("natkey_last_success_timestamp_seconds{warehouse=\"dw\"} ")
    );
    assert!(metrics.body.contains(
        "natkey_table_overcount{warehouse=\"dw\",schema=\"main\",table=\"daily_orders\",measure=\"amount_cents\"} "
    ));

    // The Schedules page and API.
    let list = get(&state, "/api/schedules").await.json();
    assert_eq!(list[0]["name"], "hourly-dw");
    assert_eq!(list[0]["paused"], false);
    assert_eq!(list[0]["next_runs"].as_array().map(Vec::len), Some(3));
    assert_eq!(list[0]["last_run"]["id"], run3);
    let page = get(&state, "/schedules").await.html();
    assert_eq!(texts(&page, ".schedule h2"), vec!["hourly-dw".to_string()]);
    assert_eq!(texts(&page, ".schedule table.runs tbody tr").len(), 3);
    assert_eq!(texts(&page, ".schedule .next-run").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_slot_is_recorded_and_notified_the_next_runs_and_missed_slots_run_once() {
    let Setup {
        dir: _dir,
        warehouse,
        receiver,
        state,
        clock,
        nightly,
    } = setup("not-yet.sqlite", false).await;

    // The warehouse is not there: the run fails with its reason, and the on-call hears of it.
    let failed = tick_at(
        &nightly,
        &clock,
        utc(2026, 12, 1, 1, 0) + TimeDelta::seconds(3),
    )
    .await;
    assert_eq!(failed[0].status, SlotStatus::Failed, "{failed:?}");
    let reason = failed[0].reason.clone().expect("a reason");
    assert!(reason.contains("not-yet.sqlite"), "{reason}");
    let message = message_for(&receiver, failed[0].run.expect("a run"));
    assert_eq!(message["status"], "failed");
    assert_eq!(message["reason"], reason.as_str());

    // The next slot runs as usual once the warehouse is back.
    natkey::demo::create_demo_warehouse(&warehouse)
        .await
        .expect("demo warehouse");
    let next = tick_at(
        &nightly,
        &clock,
        utc(2026, 12, 1, 2, 0) + TimeDelta::seconds(3),
    )
    .await;
    assert_eq!(next[0].status, SlotStatus::Succeeded, "{next:?}");

    // natkey is down from 02:10 to 07:20 (five slots): the new process runs 07:00 once.
    let restarted = Arc::new(NightlyAudits::new(state.clone(), clock.clone(), fast()));
    restarted.recover().await;
    let caught_up = tick_at(&restarted, &clock, utc(2026, 12, 1, 7, 20)).await;
    assert_eq!(caught_up.len(), 1, "{caught_up:?}");
    assert_eq!(caught_up[0].slot, utc(2026, 12, 1, 7, 0));
    assert!(
        tick_at(&restarted, &clock, utc(2026, 12, 1, 7, 21))
            .await
            .is_empty()
    );
    let runs = get(&state, "/api/runs?schedule=hourly-dw").await.json();
    assert_eq!(runs["runs"][0]["missed_slots"], 5, "{runs}");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(3));
    let page = get(&state, "/schedules").await.html();
    let notes = texts(&page, ".schedule table.runs td:last-child");
    assert_eq!(notes[0], "ran late, once for 5 missed slots");
    assert!(notes[2].contains("not-yet.sqlite"), "{notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_left_running_by_a_gone_process_or_an_ended_run_are_released_and_the_next_runs() {
    let Setup {
        dir: _dir,
        state,
        clock,
        nightly,
        ..
    } = setup("dw.sqlite", true).await;
    let pool = state.inner.store.pool();
    // A natkey in another container (another host name, PID 1, as this process might be)
    // claimed the 00:00 slot and died; its lease ran out long ago.
    sqlx::query(
        "INSERT INTO instances (id, host, pid, started_at, heartbeat_at, lease_until) \
         VALUES ('pod-a:1:1', 'pod-a', 1, '2026-12-01T00:00:00Z', '2026-12-01T00:00:00Z', \
             '2026-12-01T00:01:00Z')",
    )
    .execute(pool)
    .await
    .expect("instance");
    sqlx::query(
        "INSERT INTO scheduled_runs (schedule, scheduled_for, status, owner, started_at) \
         VALUES ('hourly-dw', '2026-12-01T00:00:00Z', 'running', 'pod-a:1:1', \
             '2026-12-01T00:00:00Z')",
    )
    .execute(pool)
    .await
    .expect("slot");
    let next = tick_at(
        &nightly,
        &clock,
        utc(2026, 12, 1, 1, 0) + TimeDelta::seconds(3),
    )
    .await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].slot, utc(2026, 12, 1, 1, 0));
    assert_eq!(next[0].status, SlotStatus::Succeeded, "{next:?}");
    let status = |slot: &'static str| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT status FROM scheduled_runs WHERE schedule = 'hourly-dw' AND scheduled_for = ?",
        )
        .bind(slot)
        .fetch_one(pool)
        .await
        .expect("slot status")
    };
    assert_eq!(status("2026-12-01T00:00:00Z").await, "interrupted");

    // A slot of this (live) process whose audit run ended while nothing waited for it.
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO runs (warehouse, status, trigger, schedule, created_at, finished_at, error) \
         VALUES ('dw', 'failed', 'schedule', 'hourly-dw', '2026-12-01T02:00:00Z', \
             '2026-12-01T02:00:09Z', 'connection lost') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("run");
    sqlx::query(
        "INSERT INTO scheduled_runs (schedule, scheduled_for, status, owner, started_at, run_id) \
         VALUES ('hourly-dw', '2026-12-01T02:00:00Z', 'running', ?, '2026-12-01T02:00:00Z', ?)",
    )
    .bind(state.inner.store.instance())
    .bind(run)
    .execute(pool)
    .await
    .expect("slot");
    let next = tick_at(
        &nightly,
        &clock,
        utc(2026, 12, 1, 3, 0) + TimeDelta::seconds(3),
    )
    .await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].slot, utc(2026, 12, 1, 3, 0));
    assert_eq!(status("2026-12-01T02:00:00Z").await, "failed");
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT reason FROM scheduled_runs WHERE scheduled_for = '2026-12-01T02:00:00Z'",
    )
    .fetch_one(pool)
    .await
    .expect("reason");
    assert_eq!(reason.as_deref(), Some("connection lost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_schedules_do_not_run_and_run_now_records_a_run_of_the_schedule() {
    let Setup {
        dir: _dir,
        warehouse: _,
        receiver: _,
        state,
        clock,
        nightly,
    } = setup("dw.sqlite", true).await;

    let paused = post_json(&state, "/api/schedules/hourly-dw/pause", "").await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    assert_eq!(paused.json()["paused"], true);
    assert!(
        tick_at(
            &nightly,
            &clock,
            utc(2026, 12, 1, 1, 0) + TimeDelta::seconds(3)
        )
        .await
        .is_empty()
    );
    assert_eq!(
        get(&state, "/api/schedules").await.json()[0]["paused"],
        true
    );
    let page = get(&state, "/schedules").await.html();
    assert_eq!(
        texts(&page, ".schedule button.resume"),
        vec!["Resume".to_string()]
    );

    // Resumed, the slot natkey skipped while paused runs once.
    post_json(&state, "/api/schedules/hourly-dw/resume", "").await;
    let resumed = tick_at(&nightly, &clock, utc(2026, 12, 1, 1, 10)).await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].slot, utc(2026, 12, 1, 1, 0));

    // Run now: an audit of the schedule's warehouse, listed among the schedule's runs.
    let started = post_json(&state, "/api/schedules/hourly-dw/run", "").await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.json()["id"].as_i64().expect("an id");
    let mut run = Value::Null;
    for _ in 0..2400 {
        run = get(&state, &format!("/api/runs/{id}")).await.json();
        if run["status"] != "queued" && run["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["schedule"], "hourly-dw");
    assert_eq!(run["trigger"], "manual");
    let runs = get(&state, "/api/runs?schedule=hourly-dw").await.json();
    assert_eq!(runs["runs"][0]["id"], id);
    assert_eq!(runs["runs"][0]["scheduled_for"], Value::Null);

    // Unknown names and bad queries are clear errors.
    let unknown = post_json(&state, "/api/schedules/nope/run", "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown.body.contains("no schedule named \\\"nope\\\""),
        "{}",
        unknown.body
    );
    let neither = get(&state, "/api/runs").await;
    assert_eq!(neither.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_connection_terminated_mid_audit_fails_the_run_and_the_next_slot_succeeds() {
    let db = TestDb::postgres().await;
    db.exec(
        "CREATE TABLE public.orders (id serial PRIMARY KEY, order_id int, amount_cents int);
         INSERT INTO public.orders (order_id, amount_cents)
         SELECT g % 50, 100 FROM generate_series(1, 80) AS g;",
    )
    .await;
    let dir = TempDir::new();
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(receiver.clone()).await;
    let extra = "\n[[table]]\nname = \"public.orders\"\nnatural_key = [\"order_id\"]\n";
    let state = state(&dir.0, &db.url(), &config_text(&db.url(), &hook, extra)).await;
    let clock = Arc::new(ManualClock::new(utc(2026, 12, 1, 0, 30)));
    let nightly = Arc::new(NightlyAudits::new(state.clone(), clock.clone(), fast()));

    // Another session holds the table, so natkey's audit waits on it...
    let mut holder = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .expect("lock");
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .expect("pid");
    clock.set(utc(2026, 12, 1, 1, 0) + TimeDelta::seconds(3));
    let handles = nightly.tick().await;
    assert_eq!(handles.len(), 1);
    // ...until an administrator terminates natkey's session.
    let mut admin = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    let mut terminated = false;
    for _ in 0..1200 {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1",
        )
        .bind(holder_pid)
        .fetch_all(&mut admin)
        .await
        .expect("pg_stat_activity");
        if let Some(pid) = pids.first() {
            terminated = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&mut admin)
                .await
                .expect("terminate");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(terminated, "natkey's audit never waited on the lock");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.expect("join"));
    }
    assert_eq!(outcomes[0].status, SlotStatus::Failed, "{outcomes:?}");
    let reason = outcomes[0].reason.clone().expect("a reason");
    assert!(
        reason.contains("terminating connection due to administrator command"),
        "{reason}"
    );
    assert_eq!(
        message_for(&receiver, outcomes[0].run.expect("a run"))["status"],
        "failed"
    );

    // The scheduler keeps going: the next slot succeeds.
    let next = tick_at(
        &nightly,
        &clock,
        utc(2026, 12, 1, 2, 0) + TimeDelta::seconds(3),
    )
    .await;
    assert_eq!(next[0].status, SlotStatus::Succeeded, "{next:?}");
    let api = get(
        &state,
        &format!("/api/runs/{}", next[0].run.expect("a run")),
    )
    .await
    .json();
    assert_eq!(api["report"]["summary"]["excess_rows"], 30);
}

#[test]
fn audit_save_records_cli_runs_into_the_history_serve_shows() {
    let dir = TempDir::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(natkey::demo::create_demo_warehouse(
        &dir.0.join("dw.sqlite"),
    ))
    .expect("demo warehouse");
    let config = format!(
        "{}\n[[warehouse]]\nname = \"dw\"\nurl = \"sqlite://./dw.sqlite\"\n\n\
         [[warehouse]]\nname = \"gone\"\nurl = \"sqlite://./gone.sqlite\"\n\n\
         [[schedule]]\nname = \"airflow-dw\"\nwarehouse = \"dw\"\ncron = \"0 2 * * *\"\ntimezone = \"UTC\"\n\n\
         [store]\npath = \"history/natkey.db\"\nkeep_runs = 2\n",
        natkey::demo::DEMO_CONFIG
    );
    std::fs::write(dir.0.join("natkey.toml"), config).expect("write config");
    let saved = natkey(
        &dir.0,
        &[
            "audit",
            "--warehouse",
            "dw",
            "--save",
            "--schedule",
            "airflow-dw",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(saved.code, 1, "{}", saved.describe());
    assert!(
        saved.stderr.contains("recorded as run 1 of dw"),
        "{}",
        saved.describe()
    );
    let failed = natkey(&dir.0, &["audit", "--warehouse", "gone", "--save"], &[]);
    assert_eq!(failed.code, 2, "{}", failed.describe());
    assert!(
        failed.stderr.contains("recorded as run 2 of gone"),
        "{}",
        failed.describe()
    );
    // Clear errors before anything is audited.
    let unknown = natkey(
        &dir.0,
        &["audit", "--warehouse", "dw", "--save", "--schedule", "nope"],
        &[],
    );
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no [[schedule]] named \"nope\""),
        "{}",
        unknown.describe()
    );
    let by_url = natkey(
        &dir.0,
        &["audit", "--warehouse", "sqlite://./other.sqlite", "--save"],
        &[],
    );
    assert_eq!(by_url.code, 2);
    assert!(
        by_url
            .stderr
            .contains("--save records runs under a [[warehouse]] name"),
        "{}",
        by_url.describe()
    );

    rt.block_on(async {
        let store = Store::open(&dir.0.join("history/natkey.db"))
            .await
            .expect("store");
        let runs = store
            .runs_of_schedule("airflow-dw", 10)
            .await
            .expect("runs");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].trigger.as_str(), "cli");
        assert_eq!(runs[0].status.as_str(), "succeeded");
        let report = store
            .report(runs[0].id)
            .await
            .expect("read")
            .expect("a report");
        assert_eq!(
            saved.json()["summary"]["excess_rows"],
            report.summary.excess_rows
        );
        let gone = store.runs_of("gone", 10).await.expect("runs");
        assert_eq!(gone[0].status.as_str(), "failed");
        assert!(
            gone[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("gone.sqlite"),
            "{:?}",
            gone[0].error
        );
    });

    // Retention (keep_runs = 2): two more failing runs of dw push the oldest out, but the
    // latest succeeded run of dw (run 1) is always kept.
    std::fs::rename(dir.0.join("dw.sqlite"), dir.0.join("moved.sqlite")).expect("move");
    for _ in 0..3 {
        let run = natkey(&dir.0, &["audit", "--save", "--warehouse", "dw"], &[]);
        assert_eq!(run.code, 2, "{}", run.describe());
    }
    rt.block_on(async {
        let store = Store::open(&dir.0.join("history/natkey.db"))
            .await
            .expect("store");
        let ids: Vec<i64> = store
            .runs_of("dw", 10)
            .await
            .expect("runs")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![5, 4, 1]);
    });
}

#[test]
fn audit_save_uses_the_keys_confirmed_in_the_web_app() {
    let dir = TempDir::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(natkey::demo::create_demo_warehouse(
        &dir.0.join("dw.sqlite"),
    ))
    .expect("demo warehouse");
    let config = format!(
        "{}\n[[warehouse]]\nname = \"dw\"\nurl = \"sqlite://./dw.sqlite\"\n\n\
         [store]\npath = \"history/natkey.db\"\n",
        natkey::demo::DEMO_CONFIG
    );
    std::fs::write(dir.0.join("natkey.toml"), config).expect("write config");
    // Someone confirmed a key for daily_orders on the table page.
    rt.block_on(async {
        let store = Store::open(&dir.0.join("history/natkey.db"))
            .await
            .expect("store");
        store
            .set_key_override("dw", "main", "daily_orders", &["order_id".into()], None)
            .await
            .expect("override");
    });
    let key_of = |report: &Value| {
        let table = report["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["name"] == "daily_orders")
            .expect("daily_orders")
            .clone();
        (
            table["natural_key"]["columns"].clone(),
            table["natural_key"]["source"].clone(),
        )
    };
    let args = ["audit", "--warehouse", "dw", "--format", "json"];
    let unsaved = natkey(&dir.0, &args, &[]);
    assert_eq!(unsaved.code, 1, "{}", unsaved.describe());
    assert_ne!(key_of(&unsaved.json()).0, serde_json::json!(["order_id"]));
    let saved = natkey(&dir.0, &[&args[..], &["--save"]].concat(), &[]);
    assert_eq!(saved.code, 1, "{}", saved.describe());
    assert_eq!(
        key_of(&saved.json()),
        (serde_json::json!(["order_id"]), serde_json::json!("config"))
    );
}

/// `application/x-www-form-urlencoded` (and path-segment) encoding of one value.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn schedule_form(name: &str, cron: &str, timezone: &str, tables: &str) -> String {
    format!(
        "name={}&warehouse=dw&cron={}&timezone={}&schemas=&tables={}&notify=data-oncall",
        enc(name),
        enc(cron),
        enc(timezone),
        enc(tables)
    )
}

async fn delete_json(state: &AppState, path: &str) -> crate::web::Answer {
    let req = axum::http::Request::delete(path)
        .header(axum::http::header::HOST, "natkey.test")
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::empty())
        .expect("request");
    crate::web::send(state, req).await
}

fn schedule_names(state_list: &Value) -> Vec<(String, String)> {
    state_list
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["origin"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_made_on_the_page_are_checked_kept_run_from_their_next_slot_and_deleted() {
    let Setup {
        dir,
        warehouse,
        receiver: _,
        state,
        clock,
        nightly,
    } = setup("dw.sqlite", true).await;
    // natkey.toml's hourly schedule stays out of the way.
    post_json(&state, "/api/schedules/hourly-dw/pause", "").await;
    let name = r#"Weird "Sched" <script>alert(1)</script>"#;

    // A pattern that cannot be: the page again, the reason naming the field, nothing lost.
    let refused = post_form(
        &state,
        "/schedules",
        &schedule_form(name, "0 25 * * *", "Europe/Berlin", "daily_orders"),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let page = refused.html();
    let error = texts(&page, ".new-schedule .error-message").join(" ");
    assert!(error.contains(r#"cron "0 25 * * *""#), "{error}");
    let kept = |css: &str, attr: &str| -> Vec<String> {
        page.select(&crate::web::sel(css))
            .filter_map(|e| e.value().attr(attr).map(String::from))
            .collect()
    };
    assert_eq!(kept(".schedule-form input[name=name]", "value"), vec![name]);
    assert_eq!(
        kept(".schedule-form input[name=cron]", "value"),
        vec!["0 25 * * *"]
    );
    assert_eq!(
        texts(&page, ".schedule-form textarea[name=tables]"),
        vec!["daily_orders"]
    );
    assert_eq!(
        kept(".schedule-form input[name=notify][checked]", "value"),
        vec!["data-oncall"]
    );
    // An unknown zone names its field too.
    let zone = post_form(
        &state,
        "/schedules",
        &schedule_form(name, "30 3 * * *", "Europe/Berln", ""),
    )
    .await;
    assert_eq!(zone.status, StatusCode::BAD_REQUEST);
    assert!(
        texts(&zone.html(), ".new-schedule .error-message")
            .join(" ")
            .contains(r#"timezone: unknown time zone "Europe/Berln""#),
        "{}",
        zone.body
    );
    assert_eq!(
        schedule_names(&get(&state, "/api/schedules").await.json()),
        vec![("hourly-dw".to_string(), "config".to_string())],
        "nothing refused is saved"
    );

    // A valid one is saved, listed by the page and the API, and shown as text.
    let made = post_form(
        &state,
        "/schedules",
        &schedule_form(name, "30 3 * * *", "Europe/Berlin", "daily_orders"),
    )
    .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let page = get(&state, "/schedules").await.html();
    assert_eq!(
        texts(&page, ".schedule h2"),
        vec!["hourly-dw paused".to_string(), name.to_string()]
    );
    assert_eq!(page.select(&crate::web::sel(".schedule script")).count(), 0);
    assert_eq!(
        texts(&page, ".schedule .origin"),
        vec!["natkey.toml".to_string(), "made on this page".to_string()]
    );
    assert_eq!(
        texts(&page, ".schedule button.delete"),
        vec!["Delete".to_string()],
        "only the page's schedule can be deleted there"
    );
    let listed = get(&state, "/api/schedules").await.json();
    assert_eq!(
        schedule_names(&listed),
        vec![
            ("hourly-dw".to_string(), "config".to_string()),
            (name.to_string(), "page".to_string())
        ]
    );
    assert_eq!(listed[1]["tables"], serde_json::json!(["daily_orders"]));
    assert_eq!(listed[1]["notify"], serde_json::json!(["data-oncall"]));
    assert_eq!(listed[1]["next_runs"].as_array().map(Vec::len), Some(3));

    // Names are unique across natkey.toml and the page; the API checks like the form.
    let body = |name: &str, warehouse: &str, notify: &str| {
        serde_json::json!({"name": name, "warehouse": warehouse, "cron": "0 4 * * *",
                           "timezone": "UTC", "notify": [notify]})
        .to_string()
    };
    for taken in ["hourly-dw", name] {
        let again = post_json(&state, "/api/schedules", &body(taken, "dw", "data-oncall")).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
        assert!(
            again.json()["error"]
                .as_str()
                .unwrap_or("")
                .contains("exists already")
        );
    }
    let no_warehouse = post_json(&state, "/api/schedules", &body("x", "nope", "data-oncall")).await;
    assert_eq!(no_warehouse.status, StatusCode::BAD_REQUEST);
    assert!(
        no_warehouse
            .body
            .contains(r#"warehouse: no [[warehouse]] is named \"nope\""#),
        "{}",
        no_warehouse.body
    );
    let no_target = post_json(&state, "/api/schedules", &body("x", "dw", "pager")).await;
    assert_eq!(no_target.status, StatusCode::BAD_REQUEST);
    assert!(
        no_target.body.contains("notify: unknown target"),
        "{}",
        no_target.body
    );
    let unknown_field = post_json(
        &state,
        "/api/schedules",
        r#"{"name": "x", "warehouse": "dw", "cron": "0 4 * * *", "timezone": "UTC", "cronn": 1}"#,
    )
    .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown_field.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field `cronn`"),
        "{}",
        unknown_field.body
    );
    let created = post_json(
        &state,
        "/api/schedules",
        &body("api-made", "dw", "data-oncall"),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.json()["origin"], "page");

    // A restart (another natkey on the same store) sees them.
    let config = config_text(
        &format!("sqlite://{}", warehouse.display()),
        "http://127.0.0.1:9/",
        "",
    );
    let restarted = self::state(
        &dir.0,
        &format!("sqlite://{}", warehouse.display()),
        &config,
    )
    .await;
    assert_eq!(
        schedule_names(&get(&restarted, "/api/schedules").await.json()).len(),
        3
    );
    assert_eq!(
        delete_json(&state, "/api/schedules/api-made").await.status,
        StatusCode::OK
    );

    // It never runs a slot from before it was made (the scheduler has watched since
    // 1 December), and runs its next slot, with its filters, as a run of the schedule.
    let now = Utc::now();
    assert!(
        tick_at(&nightly, &clock, now).await.is_empty(),
        "no catch-up of a slot from before the schedule existed"
    );
    let (schedule, _) = state
        .schedule(name)
        .await
        .expect("store")
        .expect("the schedule");
    let slot = schedule.next_after(now).expect("a next slot");
    let ran = tick_at(&nightly, &clock, slot + TimeDelta::seconds(3)).await;
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(ran[0].schedule, name);
    assert_eq!(ran[0].slot, slot);
    assert_eq!(ran[0].status, SlotStatus::Succeeded, "{ran:?}");
    let run = get(&state, &format!("/api/runs/{}", ran[0].run.expect("a run")))
        .await
        .json();
    assert_eq!(run["schedule"], name);
    let tables: Vec<&str> = run["report"]["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(tables, vec!["daily_orders"], "the schedule's table filter");

    // natkey.toml's schedules are changed in the file; the page's are deleted, their runs kept.
    let config_one = delete_json(&state, "/api/schedules/hourly-dw").await;
    assert_eq!(config_one.status, StatusCode::CONFLICT);
    assert!(
        config_one.body.contains("natkey.toml"),
        "{}",
        config_one.body
    );
    let deleted = post_form(&state, &format!("/schedules/{}/delete", enc(name)), "").await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert_eq!(
        schedule_names(&get(&state, "/api/schedules").await.json()),
        vec![("hourly-dw".to_string(), "config".to_string())]
    );
    assert_eq!(
        delete_json(&state, &format!("/api/schedules/{}", enc(name)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let history = get(&state, "/api/runs?warehouse=dw").await.json();
    assert!(
        history["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .any(|r| r["id"] == run["id"]),
        "{history}"
    );
}

#[tokio::test]
async fn a_saved_schedule_whose_warehouse_left_natkey_toml_is_listed_with_the_reason_and_never_runs()
 {
    let Setup {
        dir: _dir,
        warehouse: _,
        receiver: _,
        state,
        clock,
        nightly,
    } = setup("dw.sqlite", true).await;
    post_json(&state, "/api/schedules/hourly-dw/pause", "").await;
    let entry = natkey::schedule::ScheduleConfig {
        name: "old-dw".into(),
        warehouse: "retired".into(),
        cron: "* * * * *".into(),
        timezone: "UTC".into(),
        schemas: vec![],
        tables: vec![],
        notify: vec![],
    };
    assert!(
        state
            .inner
            .store
            .save_schedule(&entry, None)
            .await
            .expect("save")
    );
    let page = get(&state, "/schedules").await.html();
    assert_eq!(
        texts(&page, ".schedule.unusable h2"),
        vec!["old-dw does not run"]
    );
    assert!(
        texts(&page, ".schedule.unusable .error-message")
            .join(" ")
            .contains(r#"warehouse: no [[warehouse]] is named "retired""#)
    );
    assert!(
        tick_at(&nightly, &clock, Utc::now() + TimeDelta::minutes(5))
            .await
            .is_empty()
    );
    assert!(
        schedule_names(&get(&state, "/api/schedules").await.json())
            .iter()
            .all(|(n, _)| n != "old-dw")
    );
    let deleted = post_form(&state, "/schedules/old-dw/delete", "").await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(
        state
            .inner
            .store
            .saved_schedules()
            .await
            .expect("list")
            .is_empty()
    );
}

/// The table names of a report, sorted.
fn report_tables(report: &Value) -> Vec<String> {
    let mut names: Vec<String> = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

#[test]
fn a_warehouses_tables_and_a_schedules_filters_narrow_serve_and_cli_audits_alike() {
    let dir = TempDir::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(natkey::demo::create_demo_warehouse(
        &dir.0.join("dw.sqlite"),
    ))
    .expect("demo warehouse");
    let config = format!(
        "{}\n[[warehouse]]\nname = \"dw\"\nurl = \"sqlite://./dw.sqlite\"\n\
         tables = [\"daily_orders\", \"main.currencies\"]\n\n\
         [[schedule]]\nname = \"orders-only\"\nwarehouse = \"dw\"\ncron = \"0 2 * * *\"\n\
         timezone = \"UTC\"\ntables = [\"daily_orders\"]\n",
        natkey::demo::DEMO_CONFIG
    );
    std::fs::write(dir.0.join("natkey.toml"), &config).expect("write config");
    let json = |args: &[&str]| -> Value {
        let out = natkey(&dir.0, args, &[]);
        assert!(out.code == 0 || out.code == 1, "{}", out.describe());
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()))
    };
    let both = vec!["currencies".to_string(), "daily_orders".to_string()];
    // The CLI: the warehouse's tables, the schedule's filter, and --table over both.
    assert_eq!(
        report_tables(&json(&["audit", "--warehouse", "dw", "--format", "json"])),
        both
    );
    assert_eq!(
        report_tables(&json(&[
            "audit",
            "--warehouse",
            "dw",
            "--save",
            "--schedule",
            "orders-only",
            "--format",
            "json"
        ])),
        vec!["daily_orders"]
    );
    assert_eq!(
        report_tables(&json(&[
            "audit",
            "--warehouse",
            "dw",
            "--table",
            "app_log",
            "--format",
            "json"
        ])),
        vec!["app_log"]
    );
    // The [[warehouse]]'s URL is that warehouse; without a config, the URL audits everything.
    assert_eq!(
        report_tables(&json(&[
            "audit",
            "--warehouse",
            "sqlite://./dw.sqlite",
            "--format",
            "json"
        ])),
        both
    );
    std::fs::write(dir.0.join("empty.toml"), "").expect("write config");
    assert_eq!(
        report_tables(&json(&[
            "audit",
            "--config",
            "empty.toml",
            "--warehouse",
            "sqlite://./dw.sqlite",
            "--format",
            "json"
        ]))
        .len(),
        6
    );

    // natkey plan and natkey rewrite take the [[warehouse]] name too.
    let plan = natkey(
        &dir.0,
        &["plan", "--warehouse", "dw", "--table", "daily_orders"],
        &[],
    );
    assert_eq!(plan.code, 0, "{}", plan.describe());
    assert!(
        plan.stdout.contains("natkey plan for main.daily_orders"),
        "{}",
        plan.describe()
    );
    std::fs::write(
        dir.0.join("load.sql"),
        "INSERT INTO daily_orders (surrogate_key, order_id, line_item_id, order_date, customer_id, \
         quantity, amount_cents) SELECT lower(hex(randomblob(16))), order_id, line_item_id, \
         order_date, customer_id, quantity, amount_cents FROM staging_orders;\n",
    )
    .expect("write task");
    let rewrite = natkey(
        &dir.0,
        &[
            "rewrite",
            "load.sql",
            "--warehouse",
            "dw",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(rewrite.code, 1, "{}", rewrite.describe());
    assert!(
        rewrite.stdout.contains("insert-without-natural-key"),
        "{}",
        rewrite.describe()
    );
    let unknown = natkey(&dir.0, &["plan", "--warehouse", "dx", "--table", "t"], &[]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("nor a [[warehouse]] name"),
        "{}",
        unknown.describe()
    );

    // natkey serve: "Audit now" covers the warehouse's tables.
    rt.block_on(async {
        let config = Config::parse(&config, &dir.0.join("natkey.toml")).expect("config");
        let mut warehouses = natkey::web::warehouses_from_config(&config).expect("warehouses");
        // The store's relative URL is relative to the test's folder.
        warehouses[0].url = natkey::warehouse::WarehouseUrl::parse(&format!(
            "sqlite://{}",
            dir.0.join("dw.sqlite").display()
        ))
        .expect("URL");
        let store = Store::open(&dir.0.join("serve.db")).await.expect("store");
        let state = AppState::new(store, config, warehouses, AuthSettings::default(), None);
        let id = crate::web::audit(&state, "dw").await;
        let run = get(&state, &format!("/api/runs/{id}")).await.json();
        assert_eq!(report_tables(&run["report"]), both, "{run}");
    });

    // A table name that cannot be is an error naming the warehouse entry's line.
    std::fs::write(
        dir.0.join("bad.toml"),
        "[[warehouse]]\nname = \"dw\"\nurl = \"sqlite://./dw.sqlite\"\ntables = [\"a.b.c\"]\n",
    )
    .expect("write config");
    let bad = natkey(&dir.0, &["audit", "--config", "bad.toml"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.describe());
    assert!(
        bad.stderr
            .contains("line 4: table name \"a.b.c\" has more than two parts"),
        "{}",
        bad.describe()
    );
}
