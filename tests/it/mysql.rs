//! Audits of MariaDB / MySQL warehouses (a schema is a database: the test database).

use crate::checks;
use crate::common::{TestDb, assert_envelope, natkey, set_of, strings, table, table_set};
use crate::fixtures::{self, Surrogate};

const DIALECTS: &[&str] = &["mysql", "mariadb"];

#[tokio::test]
async fn mysql_audit_reports_retried_days_as_exact_duplicates() {
    let db = TestDb::mysql().await;
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
    assert_envelope(&report, DIALECTS);
    let schema = db.schema("");
    assert_eq!(
        table_set(&report),
        set_of(&[(schema.as_str(), "daily_orders")]),
        "only the base table is audited; the view is downstream"
    );
    let t = table(&report, &schema, "daily_orders");
    checks::daily_orders(t, &e);
    let view = db.qualified("", "daily_revenue_v");
    assert!(
        strings(&t["downstream"]).contains(&view),
        "downstream {} should contain {view}",
        t["downstream"]
    );
}

#[tokio::test]
async fn mysql_audit_reports_a_reloaded_batch_by_event_id() {
    let db = TestDb::mysql().await;
    let (sql, e) = fixtures::customer_events(&db, "", "customer_events");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    assert_envelope(&report, DIALECTS);
    checks::customer_events(table(&report, &db.schema(""), "customer_events"), &e);
}

#[tokio::test]
async fn mysql_audit_prices_conflicting_summary_rows_with_the_configured_key() {
    let db = TestDb::mysql().await;
    let (sql, e) = fixtures::revenue_summary(&db, "", "daily_revenue_summary", false);
    let (sql_dec, e_dec) = fixtures::revenue_summary(&db, "", "daily_revenue_summary_dec", true);
    db.exec(&sql).await;
    db.exec(&sql_dec).await;
    // Table names without a schema match in any audited schema.
    let config = db.write_file(
        "audit.toml",
        &(fixtures::revenue_summary_config("daily_revenue_summary", "gross_cents")
            + &fixtures::revenue_summary_config("daily_revenue_summary_dec", "gross")),
    );
    let report = db.report(&["--config", &config], 1);
    assert_envelope(&report, DIALECTS);
    let schema = db.schema("");
    checks::revenue_summary(
        table(&report, &schema, "daily_revenue_summary"),
        &e,
        "gross_cents",
    );
    checks::revenue_summary(
        table(&report, &schema, "daily_revenue_summary_dec"),
        &e_dec,
        "gross",
    );
}

#[tokio::test]
async fn mysql_audit_exits_zero_for_an_enforced_dimension_and_a_clean_history() {
    let db = TestDb::mysql().await;
    db.exec(&fixtures::currencies(&db, "")).await;
    let (sql, rows) = fixtures::order_status_history(&db, "");
    db.exec(&sql).await;
    let report = db.report(&[], 0);
    assert_envelope(&report, DIALECTS);
    let schema = db.schema("");
    assert_eq!(report["summary"]["with_duplicates"], 0);
    checks::enforced_with_rows(
        table(&report, &schema, "currencies"),
        &["code"],
        fixtures::CURRENCY_ROWS,
    );
    checks::history(table(&report, &schema, "order_status_history"), &rows);
}

#[tokio::test]
async fn mysql_audit_round_trips_hostile_table_and_column_names() {
    let db = TestDb::mysql().await;
    let (sql, e) = fixtures::hostile(&db);
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    assert_envelope(&report, DIALECTS);
    let schema = db.schema("");
    assert_eq!(
        table_set(&report),
        set_of(&[(schema.as_str(), fixtures::HOSTILE_TABLE)])
    );
    checks::hostile(
        table(&report, &schema, fixtures::HOSTILE_TABLE),
        &e,
        fixtures::HOSTILE_KEY,
        fixtures::hostile_amount(&db),
    );
}

#[tokio::test]
async fn mysql_audit_scans_a_nullable_unique_key_and_counts_null_groups() {
    let db = TestDb::mysql().await;
    let (sql, e) = fixtures::nullable_unique(&db, "", "account_regions", false);
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    checks::nullable(table(&report, &db.schema(""), "account_regions"), &e);
}

#[tokio::test]
async fn mysql_audit_reports_a_declared_natural_key_next_to_an_auto_increment_as_enforced() {
    let db = TestDb::mysql().await;
    db.exec(&fixtures::enforced_order_lines(&db, "", "order_lines"))
        .await;
    let report = db.report(&[], 0);
    checks::enforced(
        table(&report, &db.schema(""), "order_lines"),
        &["order_id", "line_item_id"],
    );
}

#[tokio::test]
async fn mysql_audit_reports_a_free_text_log_as_no_key() {
    let db = TestDb::mysql().await;
    db.exec(&fixtures::app_log(&db, "")).await;
    let report = db.report(&[], 0);
    checks::no_key(table(&report, &db.schema(""), "app_log"));
}

#[tokio::test]
async fn mysql_audit_succeeds_for_a_user_that_may_only_select() {
    let db = TestDb::mysql().await;
    let (sql, e) = fixtures::daily_orders(
        &db,
        "",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    let user = crate::common::unique_name("natkey_ro");
    let user = &user[..user.len().min(60)];
    let password = "Sel3ctOnlyPassw0rd";
    db.admin(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; GRANT SELECT ON `{}`.* TO '{user}'@'%';",
        db.name
    ))
    .await;
    db.on_drop(format!("DROP USER IF EXISTS '{user}'@'%'"));
    let url = crate::common::url_with(
        &crate::common::mysql_admin_url(),
        Some(&db.name),
        Some(user),
        Some(password),
    );
    let run = natkey(
        &db.dir,
        &["audit", "--warehouse", &url, "--format", "json"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(
        !run.stdout.contains(password),
        "the report shows the password"
    );
    assert!(!run.stderr.contains(password), "stderr shows the password");
    let report = run.json();
    assert_envelope(&report, DIALECTS);
    assert_eq!(report["summary"]["errors"], 0);
    checks::daily_orders(table(&report, &db.schema(""), "daily_orders"), &e);
}

async fn my_snapshot(db: &TestDb, tables: &[&str]) -> String {
    let mut s = db
        .scalar_text(&format!(
            "SELECT CAST(GROUP_CONCAT(CONCAT(table_name, ':', table_type) ORDER BY table_name SEPARATOR ',') AS CHAR) FROM information_schema.tables WHERE table_schema = '{}'",
            db.name
        ))
        .await
        .unwrap_or_default();
    s.push('\n');
    s.push_str(
        &db.scalar_text(
            "SELECT CAST(GROUP_CONCAT(schema_name ORDER BY schema_name) AS CHAR) FROM information_schema.schemata WHERE schema_name NOT LIKE 'natkey\\_it\\_%'",
        )
        .await
        .unwrap_or_default(),
    );
    for t in tables {
        let cols = db
            .scalar_text(&format!(
                "SELECT CAST(GROUP_CONCAT(CONCAT('`', REPLACE(column_name, '`', '``'), '`') ORDER BY ordinal_position) AS CHAR) FROM information_schema.columns WHERE table_schema = '{}' AND table_name = '{t}'",
                db.name
            ))
            .await
            .unwrap_or_default();
        s.push_str(&format!(
            "\n{t}: {}",
            db.scalar_text(&format!(
                "SELECT CAST(CONCAT(COUNT(*), ' ', COALESCE(SUM(CRC32(CONCAT_WS('|', {cols}))), 0)) AS CHAR) FROM `{t}`"
            ))
            .await
            .unwrap_or_default()
        ));
    }
    s
}

#[tokio::test]
async fn mysql_audit_leaves_the_warehouse_unchanged() {
    let db = TestDb::mysql().await;
    let (s1, e1) = fixtures::daily_orders(
        &db,
        "",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    let (s2, e2) = fixtures::customer_events(&db, "", "customer_events");
    let (s5, _) = fixtures::order_status_history(&db, "");
    db.exec(
        &[
            s1,
            fixtures::revenue_view(&db, "", "daily_revenue_v", "daily_orders"),
            s2,
            fixtures::currencies(&db, ""),
            s5,
            fixtures::app_log(&db, ""),
        ]
        .concat(),
    )
    .await;
    let all = [
        "daily_orders",
        "customer_events",
        "currencies",
        "order_status_history",
        "app_log",
    ];
    let before = my_snapshot(&db, &all).await;
    let report = db.report(&[], 1);
    let after = my_snapshot(&db, &all).await;
    assert_eq!(before, after, "the audit changed the warehouse");
    assert_envelope(&report, DIALECTS);
    let schema = db.schema("");
    let want: Vec<(&str, &str)> = all.iter().map(|t| (schema.as_str(), *t)).collect();
    assert_eq!(table_set(&report), set_of(&want));
    assert_eq!(report["summary"]["with_duplicates"], 2);
    assert_eq!(report["summary"]["excess_rows"], e1.excess + e2.excess);
}

#[tokio::test]
async fn mysql_audit_keeps_elt_tool_columns_out_of_the_payload() {
    let db = TestDb::mysql().await;
    let (sql, e) = fixtures::elt_charges(&db, "", "stripe_charges");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    checks::elt_charges(table(&report, &db.schema(""), "stripe_charges"), &e);
}

#[tokio::test]
async fn mysql_audit_reports_amounts_beyond_64_bits_as_exact_decimal_strings() {
    let db = TestDb::mysql().await;
    let (sql, e) = fixtures::big_ledger(&db, "");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    checks::big_ledger(table(&report, &db.schema(""), "big_ledger"), &e);
}

#[tokio::test]
async fn mysql_audit_without_a_database_in_the_url_covers_the_named_schemas() {
    let db1 = TestDb::mysql().await;
    let db2 = TestDb::mysql().await;
    let (sql, e) = fixtures::daily_orders(
        &db1,
        "",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db1.exec(&sql).await;
    db2.exec(&fixtures::currencies(&db2, "")).await;
    let url = crate::common::url_with(&crate::common::mysql_admin_url(), Some(""), None, None);
    let run = natkey(
        &db1.dir,
        &[
            "audit",
            "--warehouse",
            &url,
            "--format",
            "json",
            "--schema",
            &db1.name,
            "--schema",
            &db2.name,
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = run.json();
    assert_eq!(
        table_set(&report),
        set_of(&[
            (db1.name.as_str(), "daily_orders"),
            (db2.name.as_str(), "currencies")
        ])
    );
    checks::daily_orders(table(&report, &db1.name, "daily_orders"), &e);
    checks::enforced_with_rows(
        table(&report, &db2.name, "currencies"),
        &["code"],
        fixtures::CURRENCY_ROWS,
    );

    // --table schema.table picks one table out of them.
    let only = format!("{}.currencies", db2.name);
    let run = natkey(
        &db1.dir,
        &[
            "audit",
            "--warehouse",
            &url,
            "--format",
            "json",
            "--table",
            &only,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(
        table_set(&run.json()),
        set_of(&[(db2.name.as_str(), "currencies")])
    );
}

#[tokio::test]
async fn mysql_samples_cap_rows_per_group_so_a_big_null_group_crowds_out_no_other() {
    let db = TestDb::mysql().await;
    db.exec(&fixtures::crowded_events(&db, "")).await;
    let config = db.write_file(
        "audit.toml",
        &fixtures::crowded_events_config("crowded_events"),
    );
    let report = db.report(&["--config", &config], 1);
    checks::crowded_events(table(&report, &db.schema(""), "crowded_events"));
}

#[tokio::test]
async fn mysql_rows_that_differ_only_in_case_or_trailing_spaces_conflict() {
    let db = TestDb::mysql().await;
    // The default collation is case- and pad-insensitive: 'Hello' = 'hello', 'a ' = 'a'.
    // Order 1 and 2 differ in their note (conflicting), order 3 is an exact pair.
    db.exec(
        "CREATE TABLE notes (order_id bigint NOT NULL, note varchar(20) NOT NULL,
                             amount_cents bigint NOT NULL)
           CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
         INSERT INTO notes VALUES (1, 'Hello', 5), (1, 'hello', 5), (2, 'a ', 7), (2, 'a', 7),
                                  (3, 'same', 9), (3, 'same', 9);",
    )
    .await;
    let config = db.write_file(
        "audit.toml",
        "[[table]]\nname = \"notes\"\nnatural_key = [\"order_id\"]\nmeasures = [\"amount_cents\"]\n",
    );
    let report = db.report(&["--config", &config], 1);
    let t = table(&report, &db.schema(""), "notes");
    assert_eq!(t["duplicate_groups"], 3, "{t}");
    assert_eq!(t["exact_groups"], 1, "{t}");
    assert_eq!(t["conflicting_groups"], 2, "{t}");
    // Only the exact pair counts in the exact overcount; the range covers all three.
    assert_eq!(t["measures"][0]["overcount"], 9, "{t}");
    assert_eq!(t["measures"][0]["overcount_max"], 5 + 7 + 9, "{t}");
    let samples = t["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 3, "every group is sampled: {t}");
    for s in samples {
        let order = s["key"]["order_id"].as_str().unwrap_or("?");
        assert_eq!(s["exact"], order == "3", "sample of order {order}: {s}");
        let differing = crate::common::strings(&s["differing_columns"]);
        assert_eq!(differing.contains(&"note".to_string()), order != "3", "{s}");
    }
}

#[tokio::test]
async fn mysql_statement_timeout_interrupts_a_slow_query() {
    let db = TestDb::mysql().await;
    let settings = natkey::warehouse::SessionSettings {
        statement_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let url = natkey::warehouse::WarehouseUrl::parse(&db.url()).expect("valid URL");
    let mut wh = natkey::warehouse::Warehouse::connect(&url, settings)
        .await
        .expect("connects");
    let started = std::time::Instant::now();
    let slow = natkey::warehouse::WarehouseSql::new("SELECT CAST(SLEEP(20) AS CHAR)".into());
    let outcome = wh.query(&slow, &[]).await;
    let took = started.elapsed();
    // MariaDB stops the statement with an error; MySQL's SLEEP returns 1 when interrupted.
    assert!(
        outcome.is_err()
            || outcome
                .as_ref()
                .is_ok_and(|r| r == &vec![vec![Some("1".to_string())]]),
        "{outcome:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "stopped after {took:?}"
    );
}

#[tokio::test]
async fn mysql_a_snapshot_holds_the_tables_rows_still_while_a_load_runs() {
    use natkey::warehouse::{SessionSettings, Warehouse, WarehouseSql, WarehouseUrl};
    let db = TestDb::mysql().await;
    db.exec("CREATE TABLE loads (x int) ENGINE=InnoDB; INSERT INTO loads VALUES (1);")
        .await;
    let url = WarehouseUrl::parse(&db.url()).expect("valid URL");
    let mut wh = Warehouse::connect(&url, SessionSettings::default())
        .await
        .expect("connects");
    let count = WarehouseSql::new("SELECT CAST(COUNT(*) AS CHAR) FROM loads".to_string());
    let one = |v: &str| vec![vec![Some(v.to_string())]];
    wh.begin_snapshot().await.expect("snapshot");
    assert_eq!(wh.query(&count, &[]).await.expect("count"), one("1"));
    db.exec("INSERT INTO loads VALUES (2);").await;
    assert_eq!(
        wh.query(&count, &[]).await.expect("count"),
        one("1"),
        "the snapshot does not see the new row"
    );
    wh.end_snapshot().await;
    assert_eq!(wh.query(&count, &[]).await.expect("count"), one("2"));
}
