//! Audits of PostgreSQL warehouses.

use crate::checks;
use crate::common::{
    TestDb, assert_clean_error, assert_envelope, natkey, set_of, table, table_set,
};
use crate::expect::{assert_amount, assert_figures};
use crate::fixtures::{self, Surrogate};

#[tokio::test]
async fn audit_reports_retried_days_as_exact_duplicates() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    db.exec(&fixtures::revenue_view(
        &db,
        "sales",
        "daily_revenue_v",
        "daily_orders",
    ))
    .await;

    let report = db.report(&[], 1);
    assert_envelope(&report, &["postgres"]);
    assert_eq!(
        table_set(&report),
        set_of(&[("sales", "daily_orders")]),
        "only the base table is audited; the view is downstream"
    );
    assert_eq!(report["summary"]["with_duplicates"], 1);
    assert_eq!(report["summary"]["excess_rows"], e.excess);
    assert_eq!(report["summary"]["errors"], 0);
    let t = table(&report, "sales", "daily_orders");
    checks::daily_orders(t, &e);
    // By construction: day 4 (2026-11-04) loaded twice, day 8 (2026-11-08) three times.
    let days: Vec<&String> = e
        .by_day
        .as_ref()
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    assert_eq!(days, ["2026-11-04", "2026-11-08"]);
    assert!(
        crate::common::strings(&t["downstream"]).contains(&"sales.daily_revenue_v".to_string()),
        "downstream {}",
        t["downstream"]
    );
}

#[tokio::test]
async fn audit_detects_uuid_surrogates_written_by_the_task_without_a_default() {
    let db = TestDb::postgres().await;
    let (sql_uuid, e_uuid) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders_uuid",
        Surrogate::UuidNoDefault,
        &fixtures::standard_copies,
    );
    let (sql_text, e_text) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders_text",
        Surrogate::TextUuidNoDefault,
        &fixtures::standard_copies,
    );
    db.exec(&sql_uuid).await;
    db.exec(&sql_text).await;

    let report = db.report(&[], 1);
    assert_envelope(&report, &["postgres"]);
    assert_eq!(
        table_set(&report),
        set_of(&[
            ("sales", "daily_orders_uuid"),
            ("sales", "daily_orders_text")
        ])
    );
    checks::daily_orders(table(&report, "sales", "daily_orders_uuid"), &e_uuid);
    checks::daily_orders(table(&report, "sales", "daily_orders_text"), &e_text);
}

#[tokio::test]
async fn audit_reports_a_reloaded_batch_by_event_id() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::customer_events(&db, "events", "customer_events");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    assert_envelope(&report, &["postgres"]);
    // One batch of 30 events loaded twice.
    assert_eq!((e.dup_groups, e.excess, e.rows), (30, 30, 150));
    checks::customer_events(table(&report, "events", "customer_events"), &e);
}

#[tokio::test]
async fn audit_prices_conflicting_summary_rows_with_the_configured_key() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::revenue_summary(&db, "finance", "daily_revenue_summary", false);
    let (sql_dec, e_dec) =
        fixtures::revenue_summary(&db, "finance", "daily_revenue_summary_dec", true);
    db.exec(&sql).await;
    db.exec(&sql_dec).await;
    let config = db.write_file(
        "audit.toml",
        &(fixtures::revenue_summary_config("finance.daily_revenue_summary", "gross_cents")
            + &fixtures::revenue_summary_config("finance.daily_revenue_summary_dec", "gross")),
    );
    let report = db.report(&["--config", &config], 1);
    assert_envelope(&report, &["postgres"]);
    // 3 exact pairs, 2 conflicting pairs, 1 conflicting triple.
    assert_eq!(
        (e.dup_groups, e.exact, e.conflicting, e.excess),
        (6, 3, 3, 7)
    );
    checks::revenue_summary(
        table(&report, "finance", "daily_revenue_summary"),
        &e,
        "gross_cents",
    );
    checks::revenue_summary(
        table(&report, "finance", "daily_revenue_summary_dec"),
        &e_dec,
        "gross",
    );
}

#[tokio::test]
async fn audit_reports_a_natural_primary_key_as_enforced() {
    let db = TestDb::postgres().await;
    db.exec(&fixtures::currencies(&db, "public")).await;
    let report = db.report(&[], 0);
    assert_envelope(&report, &["postgres"]);
    checks::enforced_with_rows(
        table(&report, "public", "currencies"),
        &["code"],
        fixtures::CURRENCY_ROWS,
    );
}

#[tokio::test]
async fn audit_keeps_a_history_table_clean() {
    let db = TestDb::postgres().await;
    let (sql, rows) = fixtures::order_status_history(&db, "sales");
    db.exec(&sql).await;
    let report = db.report(&[], 0);
    assert_envelope(&report, &["postgres"]);
    checks::history(table(&report, "sales", "order_status_history"), &rows);
}

#[tokio::test]
async fn audit_exits_zero_on_a_warehouse_without_duplicates() {
    let db = TestDb::postgres().await;
    db.exec(&fixtures::currencies(&db, "public")).await;
    let (sql, rows) = fixtures::order_status_history(&db, "sales");
    db.exec(&sql).await;
    let report = db.report(&[], 0);
    assert_envelope(&report, &["postgres"]);
    assert_eq!(report["summary"]["with_duplicates"], 0);
    assert_eq!(report["summary"]["excess_rows"], 0);
    assert_eq!(report["summary"]["tables"], 2);
    checks::enforced_with_rows(
        table(&report, "public", "currencies"),
        &["code"],
        fixtures::CURRENCY_ROWS,
    );
    checks::history(table(&report, "sales", "order_status_history"), &rows);
}

#[tokio::test]
async fn audit_round_trips_hostile_schema_table_and_column_names() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::hostile(&db);
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    assert_envelope(&report, &["postgres"]);
    assert_eq!(
        table_set(&report),
        set_of(&[(fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE)])
    );
    let t = table(&report, fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE);
    checks::hostile(t, &e, fixtures::HOSTILE_KEY, fixtures::hostile_amount(&db));
    // The hostile names did not run as SQL: the table is still there with all its rows.
    let n = db
        .scalar_text(&format!(
            "SELECT count(*)::text FROM {}",
            db.qt(fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE)
        ))
        .await;
    assert_eq!(n, Some(e.rows.to_string()));
}

#[tokio::test]
async fn audit_narrows_to_a_quoted_table_name_containing_a_dot() {
    let db = TestDb::postgres().await;
    // Two tables in schema `my.schema`, both with duplicates; the key column has a dot.
    let mut sql = String::from("CREATE SCHEMA \"my.schema\";\n");
    for t in ["my table", "other.table"] {
        sql.push_str(&format!(
            "CREATE TABLE \"my.schema\".\"{t}\" (\"ref.code\" varchar(20) NOT NULL, qty int NOT NULL, loaded_at timestamp NOT NULL DEFAULT now());\n"
        ));
    }
    // 25 codes; codes 0..5 loaded twice: 5 groups, 5 excess rows; qty = code index % 4 + 1.
    let mut total = 0i64;
    let mut over = 0i64;
    let mut values = Vec::new();
    for i in 0..25i64 {
        let copies = if i < 5 { 2 } else { 1 };
        for _ in 0..copies {
            values.push(format!("('R.{i:03}', {})", i % 4 + 1));
            total += i % 4 + 1;
        }
        if copies == 2 {
            over += i % 4 + 1;
        }
    }
    for t in ["my table", "other.table"] {
        sql.push_str(&format!(
            "INSERT INTO \"my.schema\".\"{t}\" (\"ref.code\", qty) VALUES {};\n",
            values.join(", ")
        ));
    }
    db.exec(&sql).await;
    let config = db.write_file(
        "natkey-quoted.toml",
        "[[table]]\nname = '\"my.schema\".\"my table\"'\nnatural_key = [\"ref.code\"]\nmeasures = [\"qty\"]\n",
    );
    let report = db.report(
        &["--config", &config, "--table", "\"my.schema\".\"my table\""],
        1,
    );
    assert_envelope(&report, &["postgres"]);
    assert_eq!(table_set(&report), set_of(&[("my.schema", "my table")]));
    let t = table(&report, "my.schema", "my table");
    assert_eq!(t["natural_key"]["source"], "config");
    assert_eq!(
        crate::common::strings(&t["natural_key"]["columns"]),
        ["ref.code"]
    );
    assert_eq!(t["rows"], 30);
    assert_eq!(t["duplicate_groups"], 5);
    assert_eq!(t["excess_rows"], 5);
    assert_eq!(t["exact_groups"], 5);
    let m = &t["measures"][0];
    assert_eq!(m["column"], "qty");
    assert_eq!(m["total"], total);
    assert_eq!(m["overcount"], over);
}

#[tokio::test]
async fn audit_scans_a_nullable_unique_key_and_counts_null_groups() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::nullable_unique(&db, "crm", "account_regions", false);
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    assert_envelope(&report, &["postgres"]);
    checks::nullable(table(&report, "crm", "account_regions"), &e);
}

#[tokio::test]
async fn audit_treats_a_nulls_not_distinct_unique_key_as_enforced() {
    let db = TestDb::postgres().await;
    let (sql, _) = fixtures::nullable_unique(&db, "crm", "account_regions", true);
    db.exec(&sql).await;
    let report = db.report(&[], 0);
    checks::enforced(
        table(&report, "crm", "account_regions"),
        &["account_id", "region"],
    );
}

#[tokio::test]
async fn audit_reports_a_partitioned_table_once_as_its_parent() {
    let db = TestDb::postgres().await;
    let dates = [
        fixtures::date(2026, 10, 5),
        fixtures::date(2026, 10, 20),
        fixtures::date(2026, 11, 5),
        fixtures::date(2026, 11, 20),
        fixtures::date(2026, 12, 5),
        fixtures::date(2026, 12, 20),
    ];
    // Retries in every partition: 10-20 twice, 11-05 three times, 12-20 twice.
    let copies = |d: usize| match d {
        1 | 5 => 2,
        2 => 3,
        _ => 1,
    };
    let (rows, e) = fixtures::daily_order_loads(&dates, &copies);
    let mut sql = String::from(
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders_partitioned (
            order_id bigint NOT NULL, line_item_id int NOT NULL, order_date date NOT NULL,
            customer_id bigint NOT NULL, quantity int NOT NULL, amount_cents bigint NOT NULL,
            loaded_at timestamp NOT NULL DEFAULT now()) PARTITION BY RANGE (order_date);
         CREATE TABLE sales.orders_partitioned_2026_10 PARTITION OF sales.orders_partitioned
            FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
         CREATE TABLE sales.orders_partitioned_2026_11 PARTITION OF sales.orders_partitioned
            FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
         CREATE TABLE sales.orders_partitioned_2026_12 PARTITION OF sales.orders_partitioned
            FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');\n",
    );
    for chunk in rows.chunks(200) {
        let v: Vec<String> = chunk
            .iter()
            .map(|r| format!("({})", r.join(", ")))
            .collect();
        sql.push_str(&format!(
            "INSERT INTO sales.orders_partitioned (order_id, line_item_id, order_date, customer_id, quantity, amount_cents, loaded_at) VALUES {};\n",
            v.join(", ")
        ));
    }
    db.exec(&sql).await;
    // Self-check: every partition holds duplicates.
    for p in ["2026_10", "2026_11", "2026_12"] {
        let dups = db
            .scalar_text(&format!(
                "SELECT count(*)::text FROM (SELECT 1 FROM sales.orders_partitioned_{p} GROUP BY order_id, line_item_id HAVING count(*) > 1) g"
            ))
            .await;
        assert_ne!(
            dups.as_deref(),
            Some("0"),
            "fixture: partition {p} has duplicates"
        );
    }

    let report = db.report(&[], 1);
    assert_envelope(&report, &["postgres"]);
    assert_eq!(
        table_set(&report),
        set_of(&[("sales", "orders_partitioned")]),
        "partitions must not be reported as tables of their own"
    );
    let t = table(&report, "sales", "orders_partitioned");
    assert_eq!(t["status"], "duplicates");
    assert_eq!(
        crate::common::strings(&t["natural_key"]["columns"]),
        ["order_id", "line_item_id"]
    );
    assert_figures(t, &e);
}

#[tokio::test]
async fn audit_reports_a_declared_natural_key_next_to_a_surrogate_primary_key_as_enforced() {
    let db = TestDb::postgres().await;
    db.exec(&fixtures::enforced_order_lines(&db, "sales", "order_lines"))
        .await;
    let report = db.report(&[], 0);
    assert_envelope(&report, &["postgres"]);
    checks::enforced(
        table(&report, "sales", "order_lines"),
        &["order_id", "line_item_id"],
    );
}

#[tokio::test]
async fn audit_reports_a_free_text_log_as_no_key() {
    let db = TestDb::postgres().await;
    db.exec(&fixtures::app_log(&db, "ops")).await;
    let report = db.report(&[], 0);
    assert_envelope(&report, &["postgres"]);
    checks::no_key(table(&report, "ops", "app_log"));
}

#[tokio::test]
async fn audit_succeeds_under_a_read_only_role_with_the_same_figures() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    let (sql_ev, e_ev) = fixtures::customer_events(&db, "events", "customer_events");
    db.exec(&sql_ev).await;
    let role = crate::common::unique_name("natkey_ro");
    db.admin(&format!("CREATE ROLE {role} LOGIN")).await;
    db.on_drop(format!("DROP ROLE IF EXISTS {role}"));
    db.exec(&format!(
        "REVOKE ALL ON DATABASE \"{db_name}\" FROM PUBLIC;
         GRANT CONNECT ON DATABASE \"{db_name}\" TO {role};
         GRANT USAGE ON SCHEMA sales, events TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA sales, events TO {role};",
        db_name = db.name
    ))
    .await;
    let url = crate::common::url_with(
        &crate::common::pg_admin_url(),
        Some(&db.name),
        Some(&role),
        None,
    );
    let run = natkey(
        &db.dir,
        &["audit", "--warehouse", &url, "--format", "json"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = run.json();
    assert_envelope(&report, &["postgres"]);
    assert_eq!(report["summary"]["errors"], 0);
    checks::daily_orders(table(&report, "sales", "daily_orders"), &e);
    checks::customer_events(table(&report, "events", "customer_events"), &e_ev);
}

/// Everything natkey may look at, as text: relations, row counts and a content hash per table.
async fn pg_snapshot(db: &TestDb, tables: &[(&str, &str)]) -> String {
    let mut s = db
        .scalar_text(
            "SELECT string_agg(format('%s.%s:%s', n.nspname, c.relname, c.relkind), ',' ORDER BY n.nspname, c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
        )
        .await
        .unwrap_or_default();
    s.push('\n');
    s.push_str(
        &db.scalar_text(
            "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%'",
        )
        .await
        .unwrap_or_default(),
    );
    for (schema, name) in tables {
        let q = db.qt(schema, name);
        s.push_str(&format!(
            "\n{schema}.{name}: {}",
            db.scalar_text(&format!(
                "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {q} t"
            ))
            .await
            .unwrap_or_default()
        ));
    }
    s
}

#[tokio::test]
async fn audit_leaves_the_warehouse_unchanged_and_summarises_every_table() {
    let db = TestDb::postgres().await;
    let (s1, e_orders) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    let (s2, e_events) = fixtures::customer_events(&db, "events", "customer_events");
    let (s3, e_summary) = fixtures::revenue_summary(&db, "finance", "daily_revenue_summary", false);
    let (s5, history_rows) = fixtures::order_status_history(&db, "sales");
    let (s7, e_null) = fixtures::nullable_unique(&db, "crm", "account_regions", false);
    let script = [
        s1,
        fixtures::revenue_view(&db, "sales", "daily_revenue_v", "daily_orders"),
        s2,
        s3,
        fixtures::currencies(&db, "public"),
        s5,
        s7,
        fixtures::enforced_order_lines(&db, "sales", "order_lines"),
        fixtures::app_log(&db, "ops"),
    ]
    .concat();
    db.exec(&script).await;
    let config = db.write_file(
        "natkey.toml",
        &fixtures::revenue_summary_config("finance.daily_revenue_summary", "gross_cents"),
    );
    let all = [
        ("sales", "daily_orders"),
        ("events", "customer_events"),
        ("finance", "daily_revenue_summary"),
        ("public", "currencies"),
        ("sales", "order_status_history"),
        ("crm", "account_regions"),
        ("sales", "order_lines"),
        ("ops", "app_log"),
    ];
    let before = pg_snapshot(&db, &all).await;

    let report = db.report(&["--config", &config], 1);

    let after = pg_snapshot(&db, &all).await;
    assert_eq!(before, after, "the audit changed the warehouse");

    assert_envelope(&report, &["postgres"]);
    assert_eq!(table_set(&report), set_of(&all));
    let s = &report["summary"];
    assert_eq!(s["tables"], 8);
    assert_eq!(s["with_duplicates"], 4);
    assert_eq!(s["errors"], 0);
    assert_eq!(
        s["excess_rows"],
        e_orders.excess + e_events.excess + e_summary.excess + e_null.excess
    );
    checks::daily_orders(table(&report, "sales", "daily_orders"), &e_orders);
    checks::customer_events(table(&report, "events", "customer_events"), &e_events);
    checks::revenue_summary(
        table(&report, "finance", "daily_revenue_summary"),
        &e_summary,
        "gross_cents",
    );
    checks::enforced_with_rows(
        table(&report, "public", "currencies"),
        &["code"],
        fixtures::CURRENCY_ROWS,
    );
    checks::history(
        table(&report, "sales", "order_status_history"),
        &history_rows,
    );
    checks::nullable(table(&report, "crm", "account_regions"), &e_null);
    checks::enforced(
        table(&report, "sales", "order_lines"),
        &["order_id", "line_item_id"],
    );
    checks::no_key(table(&report, "ops", "app_log"));
}

/// sales.daily_orders (duplicates), finance.daily_revenue_summary (duplicates, needs config),
/// public.currencies (enforced).
async fn three_schemas() -> (TestDb, String) {
    let db = TestDb::postgres().await;
    let (s1, _) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    let (s3, _) = fixtures::revenue_summary(&db, "finance", "daily_revenue_summary", false);
    db.exec(&[s1, s3, fixtures::currencies(&db, "public")].concat())
        .await;
    let config = db.write_file(
        "audit.toml",
        &fixtures::revenue_summary_config("finance.daily_revenue_summary", "gross_cents"),
    );
    (db, config)
}

#[tokio::test]
async fn table_option_narrows_the_audit_to_the_named_tables() {
    let (db, config) = three_schemas().await;
    let report = db.report(&["--config", &config, "--table", "currencies"], 0);
    assert_eq!(table_set(&report), set_of(&[("public", "currencies")]));
    assert_eq!(report["summary"]["tables"], 1);

    let report = db.report(
        &[
            "--config",
            &config,
            "--table",
            "sales.daily_orders",
            "--table",
            "currencies",
        ],
        1,
    );
    assert_eq!(
        table_set(&report),
        set_of(&[("sales", "daily_orders"), ("public", "currencies")])
    );
}

#[tokio::test]
async fn schema_option_narrows_the_audit_to_the_named_schemas() {
    let (db, config) = three_schemas().await;
    let report = db.report(&["--config", &config, "--schema", "finance"], 1);
    assert_eq!(
        table_set(&report),
        set_of(&[("finance", "daily_revenue_summary")])
    );
    let report = db.report(
        &[
            "--config", &config, "--schema", "sales", "--schema", "public",
        ],
        1,
    );
    assert_eq!(
        table_set(&report),
        set_of(&[("sales", "daily_orders"), ("public", "currencies")])
    );
    let report = db.report(&["--config", &config, "--schema", "public"], 0);
    assert_eq!(table_set(&report), set_of(&[("public", "currencies")]));
}

#[tokio::test]
async fn terminal_format_names_the_duplicated_table_and_exits_one() {
    let db = TestDb::postgres().await;
    let (sql, _) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    db.exec(&fixtures::currencies(&db, "public")).await;
    let url = db.url();
    let run = natkey(&db.dir, &["audit", "--warehouse", &url], &[]);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(run.stdout.contains("daily_orders"), "{}", run.describe());
    assert!(
        serde_json::from_str::<serde_json::Value>(&run.stdout).is_err(),
        "the default format is the readable table, not JSON"
    );
    let run = natkey(
        &db.dir,
        &["audit", "--warehouse", &url, "--format", "table"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(run.stdout.contains("daily_orders"), "{}", run.describe());
}

#[tokio::test]
async fn config_in_the_current_folder_is_used_by_default() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::revenue_summary(&db, "finance", "daily_revenue_summary", false);
    db.exec(&sql).await;
    db.write_file(
        "natkey.toml",
        &fixtures::revenue_summary_config("finance.daily_revenue_summary", "gross_cents"),
    );
    let report = db.report(&[], 1);
    checks::revenue_summary(
        table(&report, "finance", "daily_revenue_summary"),
        &e,
        "gross_cents",
    );
}

#[tokio::test]
async fn warehouse_url_can_come_from_the_environment() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::customer_events(&db, "events", "customer_events");
    db.exec(&sql).await;
    let url = db.url();
    let run = natkey(
        &db.dir,
        &["audit", "--format", "json"],
        &[("NATKEY_WAREHOUSE_URL", &url)],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    checks::customer_events(table(&run.json(), "events", "customer_events"), &e);
}

#[tokio::test]
async fn audit_keeps_elt_tool_columns_out_of_the_payload() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::elt_charges(&db, "raw", "stripe_charges");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    assert_envelope(&report, &["postgres"]);
    checks::elt_charges(table(&report, "raw", "stripe_charges"), &e);
}

#[tokio::test]
async fn audit_reports_amounts_beyond_64_bits_as_exact_decimal_strings() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::big_ledger(&db, "finance");
    db.exec(&sql).await;
    let report = db.report(&[], 1);
    checks::big_ledger(table(&report, "finance", "big_ledger"), &e);
}

#[tokio::test]
async fn audit_prices_the_survivor_under_configured_earliest_and_lowest_surrogate_rules() {
    let db = TestDb::postgres().await;
    let (s1, e_earliest) =
        fixtures::revenue_summary_under(&db, "finance", "summary_earliest", false, "earliest");
    let (s2, e_lowest) =
        fixtures::revenue_summary_under(&db, "finance", "summary_lowest", true, "lowest_surrogate");
    db.exec(&(s1 + &s2)).await;
    let config = db.write_file(
        "audit.toml",
        &(fixtures::revenue_summary_config_with(
            "finance.summary_earliest",
            "gross_cents",
            "earliest:computed_at",
        ) + &fixtures::revenue_summary_config_with(
            "finance.summary_lowest",
            "gross",
            "lowest_surrogate",
        )),
    );
    // The three rules keep different rows, so the survivor figures differ.
    let (_, e_latest) = fixtures::revenue_summary(&db, "finance", "x", false);
    assert_ne!(e_earliest.figs[0].survivor, e_latest.figs[0].survivor);
    let report = db.report(&["--config", &config], 1);
    let t = table(&report, "finance", "summary_earliest");
    assert_eq!(t["survivor"], "earliest:computed_at");
    assert_figures(t, &e_earliest);
    let t = table(&report, "finance", "summary_lowest");
    assert_eq!(t["survivor"], "lowest_surrogate");
    assert_figures(t, &e_lowest);
}

#[tokio::test]
async fn a_table_whose_audit_fails_is_an_error_and_the_other_tables_are_still_audited() {
    let db = TestDb::postgres().await;
    let role = crate::common::unique_name("natkey_ro");
    db.admin(&format!("CREATE ROLE {role} LOGIN")).await;
    db.on_drop(format!("DROP ROLE IF EXISTS {role}"));
    // Row-level security (which applies to the read-only role, not to the owner) makes one
    // table slow (50 ms per row, 200 rows) and another fail outright.
    db.exec(&format!(
        "CREATE SCHEMA app;
         CREATE TABLE app.ok_t (item_id bigint NOT NULL, qty int NOT NULL);
         INSERT INTO app.ok_t SELECT g, g % 3 FROM generate_series(1, 50) g;
         INSERT INTO app.ok_t SELECT g, g % 3 FROM generate_series(1, 5) g;
         CREATE TABLE app.slow_t (item_id bigint NOT NULL, qty int NOT NULL);
         INSERT INTO app.slow_t SELECT g, g % 3 FROM generate_series(1, 200) g;
         CREATE TABLE app.broken_t (item_id bigint NOT NULL, qty int NOT NULL);
         INSERT INTO app.broken_t SELECT g, g % 3 FROM generate_series(1, 50) g;
         CREATE FUNCTION app.slow_ok() RETURNS boolean LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.05); RETURN true; END $$;
         CREATE FUNCTION app.boom(x bigint) RETURNS boolean LANGUAGE plpgsql AS
           $$ BEGIN IF x > 10 THEN RAISE EXCEPTION 'boom from the policy'; END IF; RETURN true; END $$;
         ALTER TABLE app.slow_t ENABLE ROW LEVEL SECURITY;
         CREATE POLICY p ON app.slow_t USING (app.slow_ok());
         ALTER TABLE app.broken_t ENABLE ROW LEVEL SECURITY;
         CREATE POLICY p ON app.broken_t USING (app.boom(item_id));
         GRANT USAGE ON SCHEMA app TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA app TO {role};
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA app TO {role};"
    ))
    .await;
    let url = crate::common::url_with(
        &crate::common::pg_admin_url(),
        Some(&db.name),
        Some(&role),
        None,
    );
    let qty_total: i64 = (1..=50).map(|g| g % 3).sum::<i64>() + (1..=5).map(|g| g % 3).sum::<i64>();
    let qty_over: i64 = (1..=5).map(|g| g % 3).sum();
    let check = |run: crate::common::Run| {
        assert_eq!(
            run.code,
            2,
            "a failed table means exit code 2\n{}",
            run.describe()
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
        let report = run.json();
        assert_envelope(&report, &["postgres"]);
        assert_eq!(report["summary"]["errors"], 2);
        assert_eq!(report["summary"]["tables"], 3);
        let ok = table(&report, "app", "ok_t");
        assert_eq!(ok["status"], "duplicates");
        assert_eq!(
            crate::common::strings(&ok["natural_key"]["columns"]),
            ["item_id"]
        );
        assert_eq!(
            (
                ok["rows"].as_i64(),
                ok["duplicate_groups"].as_i64(),
                ok["excess_rows"].as_i64()
            ),
            (Some(55), Some(5), Some(5))
        );
        assert_eq!(ok["measures"][0]["column"], "qty");
        assert_eq!(ok["measures"][0]["total"], qty_total);
        assert_eq!(ok["measures"][0]["overcount"], qty_over);
        for (name, needle) in [("slow_t", "timeout"), ("broken_t", "boom from the policy")] {
            let t = table(&report, "app", name);
            assert_eq!(t["status"], "error", "{name}");
            let msg = t["message"].as_str().unwrap_or("");
            assert!(
                msg.to_lowercase().contains(needle),
                "{name}: message {msg:?} should say what failed ({needle})"
            );
            for f in ["duplicate_groups", "excess_rows", "exact_groups"] {
                assert!(
                    t[f].is_null(),
                    "{name}: {f} of an error table should be null"
                );
            }
        }
    };
    let started = std::time::Instant::now();
    check(natkey(
        &db.dir,
        &[
            "audit",
            "--warehouse",
            &url,
            "--format",
            "json",
            "--statement-timeout",
            "1",
        ],
        &[],
    ));
    // The same timeout from the config file.
    let config = db.write_file("timeout.toml", "[audit]\nstatement_timeout_secs = 1\n");
    check(natkey(
        &db.dir,
        &[
            "audit",
            "--warehouse",
            &url,
            "--format",
            "json",
            "--config",
            &config,
        ],
        &[],
    ));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the statement timeout did not stop the slow table's queries"
    );
}

#[tokio::test]
async fn audit_never_keeps_an_inferred_key_that_the_whole_table_contradicts() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::mostly_single_line_orders(&db, "order_lines");
    db.exec(&sql).await;
    // Whole table profiled: the key is found and confirmed.
    let report = db.report(&[], 1);
    let t = table(&report, "public", "order_lines");
    assert_eq!(
        crate::common::strings(&t["natural_key"]["columns"]),
        ["order_id", "line_item_id"]
    );
    assert_figures(t, &e);
    // A 20-row sample sees order_id as unique; the confirmation on the whole table must reject
    // it: the result is the real key or no key, never order_id with conflicting "duplicates".
    let run = db.audit(&["--sample-rows", "20"]);
    let report = run.json();
    let t = table(&report, "public", "order_lines");
    match t["status"].as_str() {
        Some("no_key") => {
            assert_eq!(run.code, 0, "{}", run.describe());
            assert!(t["natural_key"].is_null());
        }
        _ => {
            assert_eq!(run.code, 1, "{}", run.describe());
            assert_eq!(
                crate::common::strings(&t["natural_key"]["columns"]),
                ["order_id", "line_item_id"],
                "{}",
                run.describe()
            );
            assert_figures(t, &e);
        }
    }
}

#[tokio::test]
async fn audit_recognises_identity_sequence_and_uuid_ossp_surrogates() {
    let db = TestDb::postgres().await;
    db.exec("CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\"; CREATE SCHEMA sk; CREATE SEQUENCE sk.event_seq;")
        .await;
    let variants = [
        (
            "identity_always",
            "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        ),
        (
            "identity_by_default",
            "bigint GENERATED BY DEFAULT AS IDENTITY",
        ),
        (
            "explicit_sequence",
            "bigint NOT NULL DEFAULT nextval('sk.event_seq')",
        ),
        (
            "uuid_ossp",
            "uuid NOT NULL DEFAULT uuid_generate_v4() PRIMARY KEY",
        ),
    ];
    let mut expected = Vec::new();
    for (table, def) in variants {
        let (sql, e) = fixtures::retried_events_behind(&db, "sk", table, def);
        db.exec(&sql).await;
        expected.push((table, e));
    }
    let report = db.report(&[], 1);
    assert_envelope(&report, &["postgres"]);
    assert_eq!(report["summary"]["tables"], 4);
    for (name, e) in &expected {
        let t = table(&report, "sk", name);
        assert_eq!(
            crate::common::strings(&t["surrogate_key"]),
            ["sk"],
            "{name}: surrogate_key"
        );
        assert_eq!(
            crate::common::strings(&t["natural_key"]["columns"]),
            ["event_id"],
            "{name}"
        );
        assert_eq!(t["natural_key"]["source"], "inferred", "{name}");
        assert_figures(t, e);
    }
}

#[tokio::test]
async fn config_and_table_option_accept_hostile_names_unquoted() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::hostile(&db);
    db.exec(&sql).await;
    // Neither part contains a dot, so the README's `schema.table` form needs no quoting.
    let name = format!("{}.{}", fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE);
    let config = db.write_file(
        "hostile.toml",
        &format!(
            "[[table]]\nname = {}\nnatural_key = [{}]\n",
            fixtures::toml_str(&name),
            fixtures::toml_str(fixtures::HOSTILE_KEY)
        ),
    );
    let report = db.report(&["--config", &config, "--table", &name], 1);
    assert_eq!(
        table_set(&report),
        set_of(&[(fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE)])
    );
    let t = table(&report, fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE);
    assert_eq!(t["natural_key"]["source"], "config");
    assert_eq!(
        crate::common::strings(&t["natural_key"]["columns"]),
        [fixtures::HOSTILE_KEY]
    );
    assert_figures(t, &e);
}

#[tokio::test]
async fn tables_a_role_may_not_read_are_skipped_with_a_warning_and_named_when_asked_for() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    db.exec("CREATE SCHEMA hr; CREATE TABLE hr.salaries (employee_id int, amount_cents bigint);")
        .await;
    let role = crate::common::unique_name("natkey_ro");
    db.admin(&format!("CREATE ROLE {role} LOGIN")).await;
    db.on_drop(format!("DROP ROLE IF EXISTS {role}"));
    db.exec(&format!(
        "GRANT USAGE ON SCHEMA sales, hr TO {role};
         GRANT SELECT ON sales.daily_orders TO {role};"
    ))
    .await;
    let url = crate::common::url_with(
        &crate::common::pg_admin_url(),
        Some(&db.name),
        Some(&role),
        None,
    );
    let run = natkey(
        &db.dir,
        &["audit", "--warehouse", &url, "--format", "json"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(
        run.stderr.contains("skipping 1 table(s)") && run.stderr.contains("hr.salaries"),
        "{}",
        run.describe()
    );
    let report = run.json();
    assert_eq!(table_set(&report), set_of(&[("sales", "daily_orders")]));
    checks::daily_orders(table(&report, "sales", "daily_orders"), &e);

    let run = natkey(
        &db.dir,
        &["audit", "--warehouse", &url, "--table", "hr.salaries"],
        &[],
    );
    assert_clean_error(&run, &["may not SELECT", "hr.salaries"]);
}

#[tokio::test]
async fn samples_cap_rows_per_group_so_a_big_null_group_crowds_out_no_other() {
    let db = TestDb::postgres().await;
    db.exec(&fixtures::crowded_events(&db, "public")).await;
    let config = db.write_file(
        "audit.toml",
        &fixtures::crowded_events_config("crowded_events"),
    );
    let report = db.report(&["--config", &config], 1);
    checks::crowded_events(table(&report, "public", "crowded_events"));
}

#[tokio::test]
async fn array_and_wide_numeric_keys_keep_their_figures_and_samples() {
    let db = TestDb::postgres().await;
    // tagged: {1,2} twice and {3} three times (exact), {4,5} once.
    // ledger: 12345678901234567890.123 twice, 1.500 twice (exact), 2.000 once: a float
    // would round the first key to another value, and its group would match no row.
    db.exec(
        "CREATE TABLE tagged (tags integer[], amount_cents bigint NOT NULL);
         INSERT INTO tagged VALUES ('{1,2}', 5), ('{1,2}', 5), ('{3}', 7), ('{3}', 7), ('{3}', 7),
                                   ('{4,5}', 9);
         CREATE TABLE ledger (ref numeric(30,3), amount_cents bigint NOT NULL);
         INSERT INTO ledger VALUES (12345678901234567890.123, 1), (12345678901234567890.123, 1),
                                   (1.5, 2), (1.5, 2), (2, 3);",
    )
    .await;
    let config = db.write_file(
        "audit.toml",
        "[[table]]\nname = \"tagged\"\nnatural_key = [\"tags\"]\n\n\
         [[table]]\nname = \"ledger\"\nnatural_key = [\"ref\"]\n",
    );
    let report = db.report(&["--config", &config], 1);
    for (name, column, groups) in [
        ("tagged", "tags", [("{1,2}", 2), ("{3}", 3)]),
        (
            "ledger",
            "ref",
            [("12345678901234567890.123", 2), ("1.500", 2)],
        ),
    ] {
        let t = table(&report, "public", name);
        assert_eq!(t["status"], "duplicates", "{name}: {t}");
        assert_eq!(t["duplicate_groups"], 2, "{name}");
        assert_eq!(t["exact_groups"], 2, "{name}");
        let mut sampled: Vec<(String, usize)> = t["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|s| {
                (
                    s["key"][column].as_str().unwrap_or("?").to_string(),
                    s["rows"].as_array().map_or(0, Vec::len),
                )
            })
            .collect();
        sampled.sort();
        let mut want: Vec<(String, usize)> =
            groups.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        want.sort();
        assert_eq!(
            sampled, want,
            "{name}: every group is sampled with all its rows"
        );
    }
}

#[tokio::test]
async fn a_money_measure_is_summed_exactly() {
    let db = TestDb::postgres().await;
    // p1: an exact pair of 1000.50; p2: one row of 24.50; p3: a conflicting pair, 10.00 and 12.00.
    db.exec(
        "CREATE TABLE payments (payment_ref text NOT NULL, fee money NOT NULL);
         INSERT INTO payments VALUES ('p1', 1000.50), ('p1', 1000.50), ('p2', 24.50),
                                     ('p3', 10.00), ('p3', 12.00);",
    )
    .await;
    let config = db.write_file(
        "audit.toml",
        "[[table]]\nname = \"payments\"\nnatural_key = [\"payment_ref\"]\nmeasures = [\"fee\"]\n",
    );
    let report = db.report(&["--config", &config], 1);
    let t = table(&report, "public", "payments");
    assert_eq!(t["status"], "duplicates", "{t}");
    assert_eq!(
        (t["exact_groups"].as_i64(), t["conflicting_groups"].as_i64()),
        (Some(1), Some(1))
    );
    let m = &t["measures"][0];
    assert_eq!(m["column"], "fee");
    assert_amount(&m["total"], 2 * 100050 + 2450 + 1000 + 1200, 2, "total");
    assert_amount(&m["overcount"], 100050, 2, "overcount (exact groups)");
    // Keeping the larger p3 row removes 10.00; keeping the smaller removes 12.00.
    assert_amount(&m["overcount_min"], 100050 + 1000, 2, "overcount_min");
    assert_amount(&m["overcount_max"], 100050 + 1200, 2, "overcount_max");
}

#[tokio::test]
async fn by_day_counts_a_group_on_its_earliest_day_and_every_row_of_a_day() {
    let db = TestDb::postgres().await;
    db.exec(&fixtures::orders_by_day(&db)).await;
    let config = db.write_file("audit.toml", &fixtures::orders_by_day_config());
    let report = db.report(&["--config", &config], 1);
    checks::orders_by_day(table(&report, "public", "orders_by_day"));
}

#[tokio::test]
async fn a_snapshot_holds_the_tables_rows_still_while_a_load_runs() {
    use natkey::warehouse::{SessionSettings, Warehouse, WarehouseSql, WarehouseUrl};
    let db = TestDb::postgres().await;
    db.exec("CREATE TABLE loads (x int); INSERT INTO loads VALUES (1);")
        .await;
    let url = WarehouseUrl::parse(&db.url()).expect("valid URL");
    let mut wh = Warehouse::connect(&url, SessionSettings::default())
        .await
        .expect("connects");
    let sql = |t: &str| WarehouseSql::new(t.to_string());
    let count = sql("SELECT CAST(COUNT(*) AS TEXT) FROM loads");
    let work_mem = sql("SELECT current_setting('work_mem')");
    let one = |v: &str| vec![vec![Some(v.to_string())]];
    let default_work_mem = wh.query(&work_mem, &[]).await.expect("work_mem");

    wh.begin_snapshot().await.expect("snapshot");
    assert_eq!(wh.query(&count, &[]).await.expect("count"), one("1"));
    db.exec("INSERT INTO loads VALUES (2);").await;
    assert_eq!(
        wh.query(&count, &[]).await.expect("count"),
        one("1"),
        "the snapshot does not see the new row"
    );
    // A heavy statement's settings are its own, and a failing one spoils nothing.
    assert_eq!(
        wh.query_heavy(&work_mem, &[]).await.expect("work_mem"),
        one(&SessionSettings::default().work_mem)
    );
    assert_eq!(
        wh.query(&work_mem, &[]).await.expect("work_mem"),
        default_work_mem
    );
    assert!(
        wh.query(&sql("SELECT CAST(1 / 0 AS TEXT)"), &[])
            .await
            .is_err()
    );
    assert_eq!(
        wh.query(&count, &[]).await.expect("count after an error"),
        one("1")
    );
    wh.end_snapshot().await;

    assert_eq!(wh.query(&count, &[]).await.expect("count"), one("2"));
}
