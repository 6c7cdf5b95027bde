//! Audits of SQLite warehouses (schema `main`).

use crate::checks;
use crate::common::{TestDb, assert_envelope, natkey, set_of, strings, table, table_set};
use crate::fixtures::{self, Surrogate};

#[tokio::test]
async fn sqlite_audit_reports_retried_days_as_exact_duplicates() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::daily_orders(
        &db,
        "",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    db.exec(&fixtures::revenue_view(
        &db,
        "",
        "daily_revenue_v",
        "daily_orders",
    ))
    .await;
    let report = db.report(&[], 1);
    assert_envelope(&report, &["sqlite"]);
    assert_eq!(
        table_set(&report),
        set_of(&[("main", "daily_orders")]),
        "only the base table is audited; the view is downstream"
    );
    let t = table(&report, "main", "daily_orders");
    checks::daily_orders(t, &e);
    let downstream = strings(&t["downstream"]);
    assert!(
        downstream.iter().any(|v| v == "main.daily_revenue_v"),
        "downstream {downstream:?} should name the view main.daily_revenue_v"
    );
}

#[tokio::test]
async fn sqlite_audit_reports_a_reloaded_batch_by_event_id() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::customer_events(&db, "", "customer_events");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    assert_envelope(&report, &["sqlite"]);
    checks::customer_events(table(&report, "main", "customer_events"), &e);
}

#[tokio::test]
async fn sqlite_audit_prices_conflicting_summary_rows_with_the_configured_key() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::revenue_summary(&db, "", "daily_revenue_summary", false);
    db.exec(&sql).await;
    let config = db.write_file(
        "audit.toml",
        &fixtures::revenue_summary_config("main.daily_revenue_summary", "gross_cents"),
    );
    let report = db.report(&["--config", &config], 1);
    assert_envelope(&report, &["sqlite"]);
    checks::revenue_summary(
        table(&report, "main", "daily_revenue_summary"),
        &e,
        "gross_cents",
    );
}

#[tokio::test]
async fn sqlite_audit_exits_zero_for_an_enforced_dimension_and_a_clean_history() {
    let db = TestDb::sqlite().await;
    db.exec(&fixtures::currencies(&db, "")).await;
    let (sql, rows) = fixtures::order_status_history(&db, "");
    db.exec(&sql).await;
    let report = db.report(&[], 0);
    assert_envelope(&report, &["sqlite"]);
    assert_eq!(report["summary"]["with_duplicates"], 0);
    checks::enforced_with_rows(
        table(&report, "main", "currencies"),
        &["code"],
        fixtures::CURRENCY_ROWS,
    );
    checks::history(table(&report, "main", "order_status_history"), &rows);
}

#[tokio::test]
async fn sqlite_audit_round_trips_hostile_table_and_column_names() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::hostile(&db);
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    assert_envelope(&report, &["sqlite"]);
    assert_eq!(
        table_set(&report),
        set_of(&[("main", fixtures::HOSTILE_TABLE)])
    );
    checks::hostile(
        table(&report, "main", fixtures::HOSTILE_TABLE),
        &e,
        fixtures::HOSTILE_KEY,
        fixtures::hostile_amount(&db),
    );
}

#[tokio::test]
async fn sqlite_audit_scans_a_nullable_unique_key_and_counts_null_groups() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::nullable_unique(&db, "", "account_regions", false);
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    checks::nullable(table(&report, "main", "account_regions"), &e);
}

#[tokio::test]
async fn sqlite_audit_reports_a_declared_natural_key_next_to_a_rowid_as_enforced() {
    let db = TestDb::sqlite().await;
    db.exec(&fixtures::enforced_order_lines(&db, "", "order_lines"))
        .await;
    let report = db.report(&[], 0);
    checks::enforced(
        table(&report, "main", "order_lines"),
        &["order_id", "line_item_id"],
    );
}

#[tokio::test]
async fn sqlite_audit_reports_a_free_text_log_as_no_key() {
    let db = TestDb::sqlite().await;
    db.exec(&fixtures::app_log(&db, "")).await;
    let report = db.report(&[], 0);
    checks::no_key(table(&report, "main", "app_log"));
}

#[tokio::test]
async fn sqlite_audit_accepts_an_absolute_path() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::customer_events(&db, "", "customer_events");
    db.exec(&sql).await;
    let url = format!("sqlite://{}", db.sqlite_path().display());
    let other = crate::common::TempDir::new();
    let run = natkey(
        &other.0,
        &["audit", "--warehouse", &url, "--format", "json"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    checks::customer_events(table(&run.json(), "main", "customer_events"), &e);
}

fn folder_snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read folder")
        .map(|e| {
            let e = e.expect("folder entry");
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn sqlite_audit_leaves_the_database_file_byte_for_byte_unchanged() {
    let db = TestDb::sqlite().await;
    let (s1, e1) = fixtures::daily_orders(
        &db,
        "",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    let (s3, e3) = fixtures::revenue_summary(&db, "", "daily_revenue_summary", false);
    let (s5, _) = fixtures::order_status_history(&db, "");
    db.exec(
        &[
            s1,
            fixtures::revenue_view(&db, "", "daily_revenue_v", "daily_orders"),
            s3,
            fixtures::currencies(&db, ""),
            s5,
            fixtures::app_log(&db, ""),
        ]
        .concat(),
    )
    .await;
    db.write_file(
        "natkey.toml",
        &fixtures::revenue_summary_config("daily_revenue_summary", "gross_cents"),
    );
    let before = folder_snapshot(&db.dir);
    let report = db.report(&[], 1);
    let after = folder_snapshot(&db.dir);
    let names = |s: &[(String, Vec<u8>)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&before), names(&after), "files appeared or vanished");
    assert!(before == after, "the audit changed the database file");
    assert_envelope(&report, &["sqlite"]);
    assert_eq!(
        table_set(&report),
        set_of(&[
            ("main", "daily_orders"),
            ("main", "daily_revenue_summary"),
            ("main", "currencies"),
            ("main", "order_status_history"),
            ("main", "app_log"),
        ])
    );
    assert_eq!(report["summary"]["with_duplicates"], 2);
    assert_eq!(report["summary"]["excess_rows"], e1.excess + e3.excess);
    checks::revenue_summary(
        table(&report, "main", "daily_revenue_summary"),
        &e3,
        "gross_cents",
    );
}

#[tokio::test]
async fn sqlite_audit_keeps_elt_tool_columns_out_of_the_payload() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::elt_charges(&db, "", "stripe_charges");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    checks::elt_charges(table(&report, "main", "stripe_charges"), &e);
}

#[tokio::test]
async fn sqlite_audit_reports_amounts_beyond_64_bits_as_exact_decimal_strings() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::big_ledger(&db, "");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    checks::big_ledger(table(&report, "main", "big_ledger"), &e);
}

#[tokio::test]
async fn sqlite_audit_skips_internal_tables_and_enforces_a_without_rowid_key() {
    let db = TestDb::sqlite().await;
    let (sql, e) = fixtures::retried_events_behind(
        &db,
        "",
        "events_auto",
        "INTEGER PRIMARY KEY AUTOINCREMENT",
    );
    db.exec(&sql).await;
    db.exec(
        "CREATE TABLE regions (code text PRIMARY KEY, name text NOT NULL) WITHOUT ROWID;
         INSERT INTO regions VALUES ('eu', 'Europe'), ('us', 'United States'), ('apac', 'Asia Pacific');",
    )
    .await;
    // Self-check: AUTOINCREMENT made SQLite create its internal sqlite_sequence table.
    let n = db
        .scalar_text(
            "SELECT CAST(count(*) AS TEXT) FROM sqlite_master WHERE name = 'sqlite_sequence'",
        )
        .await;
    assert_eq!(n.as_deref(), Some("1"));
    let report = db.report(&[], 1);
    assert_eq!(
        table_set(&report),
        set_of(&[("main", "events_auto"), ("main", "regions")]),
        "SQLite's internal tables are not audited"
    );
    let t = table(&report, "main", "events_auto");
    assert_eq!(strings(&t["surrogate_key"]), ["sk"]);
    assert_eq!(strings(&t["natural_key"]["columns"]), ["event_id"]);
    crate::expect::assert_figures(t, &e);
    checks::enforced(table(&report, "main", "regions"), &["code"]);
}

#[tokio::test]
async fn sqlite_samples_cap_rows_per_group_so_a_big_null_group_crowds_out_no_other() {
    let db = TestDb::sqlite().await;
    db.exec(&fixtures::crowded_events(&db, "")).await;
    let config = db.write_file(
        "audit.toml",
        &fixtures::crowded_events_config("crowded_events"),
    );
    let report = db.report(&["--config", &config], 1);
    checks::crowded_events(table(&report, "main", "crowded_events"));
}

#[tokio::test]
async fn sqlite_audit_scans_and_samples_a_blob_key() {
    let db = TestDb::sqlite().await;
    // X'00FF' twice, X'0102' three times (exact groups), X'03' once; 1 and '1' are two keys.
    db.exec(
        "CREATE TABLE blobs (k BLOB, amount_cents INTEGER NOT NULL);
         INSERT INTO blobs VALUES (X'00FF', 5), (X'00FF', 5), (X'0102', 7), (X'0102', 7),
                                  (X'0102', 7), (X'03', 9), (1, 4), ('1', 4);",
    )
    .await;
    let config = db.write_file(
        "audit.toml",
        "[[table]]\nname = \"blobs\"\nnatural_key = [\"k\"]\n",
    );
    let report = db.report(&["--config", &config], 1);
    let t = table(&report, "main", "blobs");
    assert_eq!(t["status"], "duplicates", "{t}");
    assert_eq!(t["duplicate_groups"], 2);
    assert_eq!(t["excess_rows"], 1 + 2);
    let mut sizes: Vec<usize> = t["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| s["rows"].as_array().map_or(0, Vec::len))
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [2, 3],
        "both groups are sampled with all their rows: {t}"
    );
}

/// Connects natkey's read-only session with a one-second statement timeout.
async fn session_with_a_one_second_timeout(url: &str) -> natkey::warehouse::Warehouse {
    let settings = natkey::warehouse::SessionSettings {
        statement_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let url = natkey::warehouse::WarehouseUrl::parse(url).expect("valid URL");
    natkey::warehouse::Warehouse::connect(&url, settings)
        .await
        .expect("connects")
}

#[tokio::test]
async fn sqlite_statement_timeout_interrupts_a_slow_query_and_the_session_goes_on() {
    let db = TestDb::sqlite().await;
    db.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
        .await;
    let url = format!("sqlite://{}", db.sqlite_path().display());
    let mut wh = session_with_a_one_second_timeout(&url).await;
    // Counting to ten billion takes minutes.
    let slow = natkey::warehouse::WarehouseSql::new(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000000) \
         SELECT CAST(COUNT(*) AS TEXT) FROM n"
            .to_string(),
    );
    let started = std::time::Instant::now();
    let err = wh
        .query(&slow, &[])
        .await
        .expect_err("the query is cut off");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "stopped after {took:?}"
    );
    assert!(
        natkey::warehouse::describe_sqlx_error(&err).contains("statement timeout"),
        "{err}"
    );
    // The next statement has its own second.
    let quick = natkey::warehouse::WarehouseSql::new("SELECT CAST(COUNT(*) AS TEXT) FROM t".into());
    let rows = wh
        .query(&quick, &[])
        .await
        .expect("the session still answers");
    assert_eq!(rows, vec![vec![Some("1".to_string())]]);
}

#[tokio::test]
async fn sqlite_by_day_counts_a_group_on_its_earliest_day_and_every_row_of_a_day() {
    let db = TestDb::sqlite().await;
    db.exec(&fixtures::orders_by_day(&db)).await;
    let config = db.write_file("audit.toml", &fixtures::orders_by_day_config());
    let report = db.report(&["--config", &config], 1);
    checks::orders_by_day(table(&report, "main", "orders_by_day"));
}

#[tokio::test]
async fn the_terminal_table_lists_the_largest_overcount_first() {
    let db = TestDb::sqlite().await;
    // aa_small: one extra copy of 10; zz_big: one extra copy of 1000; mm_clean: no duplicates.
    // Alphabetical order would be the other way round.
    db.exec(
        "CREATE TABLE aa_small (ref TEXT NOT NULL, amount_cents INTEGER NOT NULL);
         INSERT INTO aa_small VALUES ('a', 10), ('a', 10), ('b', 3);
         CREATE TABLE mm_clean (ref TEXT NOT NULL, amount_cents INTEGER NOT NULL);
         INSERT INTO mm_clean VALUES ('a', 1), ('b', 2);
         CREATE TABLE zz_big (ref TEXT NOT NULL, amount_cents INTEGER NOT NULL);
         INSERT INTO zz_big VALUES ('a', 1000), ('a', 1000), ('b', 3);",
    )
    .await;
    let config = db.write_file(
        "audit.toml",
        &["aa_small", "mm_clean", "zz_big"]
            .map(|t| format!("[[table]]\nname = \"{t}\"\nnatural_key = [\"ref\"]\n\n"))
            .concat(),
    );
    let url = db.url();
    let run = natkey(
        &db.dir,
        &[
            "audit",
            "--warehouse",
            &url,
            "--config",
            &config,
            "--format",
            "table",
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    let at = |name: &str| {
        run.stdout
            .find(&format!("main.{name}"))
            .unwrap_or_else(|| panic!("{name} is not listed\n{}", run.describe()))
    };
    assert!(
        at("zz_big") < at("aa_small") && at("aa_small") < at("mm_clean"),
        "largest overcount first, clean tables last\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("amount_cents +1,000"), "{}", run.stdout);
}

#[test]
fn demo_prints_its_report_and_exits_zero() {
    let dir = crate::common::TempDir::new();
    let data = dir.0.join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let run = natkey(
        &dir.0,
        &["demo", "--data-dir", &data_arg, "--format", "json"],
        &[],
    );
    assert_eq!(
        run.code,
        0,
        "finding duplicates is the demo's point\n{}",
        run.describe()
    );
    assert!(
        data.join("demo-warehouse.sqlite").is_file(),
        "the demo warehouse is in --data-dir"
    );
    let report = run.json();
    assert_eq!(
        table(&report, "main", "daily_orders")["status"],
        "duplicates"
    );
    // natkey's demo writes twelve currencies under a declared primary key.
    checks::enforced_with_rows(table(&report, "main", "currencies"), &["code"], 12);

    let run = natkey(
        &dir.0,
        &["demo", "--data-dir", &data_arg, "--format", "table"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(run.stdout.contains("main.daily_orders"), "{}", run.stdout);
}
