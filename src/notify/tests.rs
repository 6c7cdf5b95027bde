use std::time::Duration;

use super::*;
use crate::audit::report::{REPORT_VERSION, Status, Summary, TableReport};
use crate::warehouse::Engine;

fn table(name: &str, status: Status, excess: Option<i64>) -> TableReport {
    let mut t = TableReport::new("sales", name);
    t.status = status;
    t.excess_rows = excess;
    t
}

fn report(tables: Vec<TableReport>) -> Report {
    let excess = tables.iter().filter_map(|t| t.excess_rows).sum();
    Report {
        natkey_report: REPORT_VERSION,
        warehouse: "postgres://natkey_ro@db/dw".into(),
        dialect: Engine::Postgres,
        server_version: String::new(),
        started_at: "2026-12-03T01:00:00Z".into(),
        finished_at: "2026-12-03T01:00:41Z".into(),
        summary: Summary {
            tables: tables.len(),
            with_duplicates: tables
                .iter()
                .filter(|t| t.status == Status::Duplicates)
                .count(),
            excess_rows: excess,
            errors: 0,
        },
        tables,
    }
}

fn run(previous: Option<&Report>, current: Result<&Report, &str>) -> Option<Notification> {
    Notification::for_run(42, "nightly-dw", None, "dw", previous, current)
}

#[test]
fn a_clean_or_unchanged_run_sends_nothing() {
    let clean = report(vec![table("orders", Status::Clean, Some(0))]);
    assert_eq!(run(None, Ok(&clean)), None);
    let dirty = report(vec![table("orders", Status::Duplicates, Some(10))]);
    assert_eq!(run(Some(&dirty), Ok(&dirty)), None, "unchanged duplicates");
    assert_eq!(run(Some(&dirty), Ok(&clean)), None, "fixed only");
}

#[test]
fn new_or_increased_duplicates_and_failures_send_a_notification() {
    let before = report(vec![table("orders", Status::Duplicates, Some(10))]);
    let after = report(vec![
        table("orders", Status::Duplicates, Some(30)),
        table("refunds", Status::Duplicates, Some(2)),
    ]);
    let n = run(Some(&before), Ok(&after)).expect("worse: notify");
    let NotificationKind::Duplicates {
        diff, excess_rows, ..
    } = &n.kind
    else {
        panic!("{n:?}");
    };
    assert_eq!(*excess_rows, 32);
    assert_eq!(diff.worse.len(), 1);
    assert_eq!(diff.new_duplicates.len(), 1);
    assert!(run(Some(&before), Err("timeout")).is_some());
}

#[test]
fn the_json_body_carries_the_key_the_figures_and_the_changed_tables() {
    let before = report(vec![table("orders", Status::Duplicates, Some(10))]);
    let after = report(vec![table("orders", Status::Duplicates, Some(1200))]);
    let n = run(Some(&before), Ok(&after)).expect("notify");
    let body: serde_json::Value =
        serde_json::from_str(&n.body(Format::Json, "natkey:42:data-oncall")).expect("json");
    assert_eq!(body["natkey_notification"], 1);
    assert_eq!(body["idempotency_key"], "natkey:42:data-oncall");
    assert_eq!(body["run_id"], 42);
    assert_eq!(body["warehouse"], "dw");
    assert_eq!(body["status"], "duplicates");
    assert_eq!(body["excess_rows"], 1200);
    assert_eq!(body["worse"][0]["name"], "orders");
    assert_eq!(body["worse"][0]["previous_excess_rows"], 10);
    assert_eq!(body["new_duplicates"], serde_json::json!([]));
}

#[test]
fn the_slack_body_is_text_with_escaped_table_names() {
    let after = report(vec![table("<b>&orders", Status::Duplicates, Some(7200))]);
    let n = run(None, Ok(&after)).expect("notify");
    let body: serde_json::Value = serde_json::from_str(&n.body(Format::Slack, "k")).expect("json");
    let text = body["text"].as_str().expect("text");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1));
    assert!(
        text.contains("sales.&lt;b&gt;&amp;orders: 7,200 excess rows"),
        "{text}"
    );
    assert!(text.contains("*Newly with duplicates*"), "{text}");
}

#[test]
fn a_target_url_is_redacted_to_scheme_and_host() {
    let target = Target::new(
        "data-oncall",
        "https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc",
        Format::Slack,
    )
    .expect("target");
    assert_eq!(target.redacted_url(), "https://hooks.slack.com/***");
    let debug = format!("{target:?}");
    assert!(
        !debug.contains("SECRET") && !debug.contains("abc"),
        "{debug}"
    );
    let scrubbed = target.scrub(
        "io error connecting to https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc",
    );
    assert!(!scrubbed.contains("SECRET"), "{scrubbed}");
    let err = Target::new("x", "ftp://files/secret", Format::Json).expect_err("an error");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn a_target_needs_exactly_one_of_url_and_url_env() {
    let config = TargetConfig {
        name: "data-oncall".into(),
        url: None,
        url_env: None,
        format: Format::Json,
    };
    assert_eq!(
        Target::resolve(&config).expect_err("an error").to_string(),
        r#"[[notify]] "data-oncall": give exactly one of url or url_env"#
    );
    let config = TargetConfig {
        url_env: Some("NATKEY_TEST_SURELY_UNSET_WEBHOOK".into()),
        ..config
    };
    assert!(
        Target::resolve(&config)
            .expect_err("an error")
            .to_string()
            .contains("NATKEY_TEST_SURELY_UNSET_WEBHOOK (url_env) is not set")
    );
    let parsed: TargetConfig =
        toml::from_str("name = \"a\"\nurl = \"https://x.example/h\"\nformat = \"slack\"\n")
            .expect("toml");
    assert_eq!(parsed.format, Format::Slack);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let policy = RetryPolicy {
        max_attempts: 6,
        first_backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
    };
    let waits: Vec<_> = (1..=5).map(|n| policy.backoff(n).as_secs()).collect();
    assert_eq!(waits, [2, 4, 8, 10, 10]);
}
