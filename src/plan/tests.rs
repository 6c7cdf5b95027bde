//! Plans for a fixed report, per dialect: snapshots of the whole script, and every exported
//! dialect's statements (and load template) parsed by sqlparser in that dialect. Execution on
//! real PostgreSQL, MariaDB and SQLite is in tests/it/plan.rs.

use rust_decimal::Decimal;
use sqlparser::parser::Parser;

use super::*;
use crate::audit::report::{Amount, MeasureFigures};
use crate::keys::{KeySource, NaturalKey};

fn column(name: &str, data_type: &str, nullable: bool) -> ColumnReport {
    ColumnReport {
        name: name.into(),
        data_type: data_type.into(),
        nullable,
        computed: false,
    }
}

/// A summary table with exact and conflicting groups, a surrogate key and a nullable key part.
fn report(conflicting: i64) -> TableReport {
    let mut t = TableReport::new("finance", "daily_revenue_summary");
    t.status = Status::Duplicates;
    t.rows = Some(120);
    t.columns = vec![
        column("summary_id", "integer", false),
        column("revenue_date", "date", false),
        column("region", "text", true),
        column("gross_cents", "bigint", true),
        column("computed_at", "timestamp without time zone", true),
    ];
    t.surrogate_key = vec!["summary_id".into()];
    t.load_metadata = vec!["computed_at".into()];
    t.payload = vec!["revenue_date".into(), "region".into(), "gross_cents".into()];
    t.natural_key = Some(NaturalKey {
        columns: vec!["revenue_date".into(), "region".into()],
        source: KeySource::Config,
        confidence: 1.0,
        enforced: false,
        candidates: vec![],
    });
    t.survivor = Some(SurvivorRule::Latest("computed_at".into()));
    t.duplicate_groups = Some(6);
    t.rows_in_duplicate_groups = Some(13);
    t.excess_rows = Some(7);
    t.exact_groups = Some(6 - conflicting);
    t.conflicting_groups = Some(conflicting);
    t.null_key_groups = Some(1);
    t.measures = vec![MeasureFigures {
        column: "gross_cents".into(),
        total: Amount(Decimal::from(1_000_000)),
        overcount: Amount(Decimal::from(40_000)),
        overcount_min: Amount(Decimal::from(50_000)),
        overcount_max: Amount(Decimal::from(90_000)),
        overcount_survivor: Some(Amount(Decimal::from(60_000))),
    }];
    t
}

fn plan_for(table: &TableReport, dialect: Dialect) -> Plan {
    plan_with_version(table, dialect, "150020")
}

#[test]
fn plans_are_stable_per_dialect() {
    let table = report(2);
    for dialect in Dialect::ALL {
        let plan = plan_for(&table, dialect);
        insta::assert_snapshot!(format!("plan_{dialect}"), plan.render());
    }
}

/// The reports every dialect's output is parsed for: conflicting groups with a nullable key
/// part (the base), exact groups only (append-only templates), no duplicates (enforce only),
/// a key without nullable columns, hostile names, a partitioned table, PostgreSQL 14.
fn variants() -> Vec<(&'static str, TableReport, &'static str)> {
    let base = report(2);
    let mut exact = report(0);
    exact.survivor = None;
    let mut clean = report(0);
    clean.status = Status::Clean;
    clean.duplicate_groups = Some(0);
    clean.excess_rows = Some(0);
    let mut not_null = report(2);
    for c in &mut not_null.columns {
        c.nullable = false;
    }
    let mut hostile = report(2);
    hostile.schema = "Weird \"Schema\"; <b>x</b> `tick` 'q'".into();
    hostile.name = "Weird \"Table\" ; DROP TABLE x; -- `t` 'n' %s".into();
    let rename = |c: &str| format!("{c} \"odd\" `col`; 'x' %I");
    for c in &mut hostile.columns {
        c.name = rename(&c.name);
    }
    for list in [
        &mut hostile.surrogate_key,
        &mut hostile.load_metadata,
        &mut hostile.payload,
    ] {
        *list = list.iter().map(|c| rename(c)).collect();
    }
    if let Some(key) = hostile.natural_key.as_mut() {
        key.columns = key.columns.iter().map(|c| rename(c)).collect();
    }
    hostile.survivor = Some(SurvivorRule::Latest(rename("computed_at")));
    // sqlparser does not read BigQuery's backslash escape of a backtick in a quoted name, so
    // BigQuery gets the hostile names without backticks (the other dialects get both).
    let mut hostile_no_backtick = hostile.clone();
    let strip = |c: &mut String| *c = c.replace('`', "");
    strip(&mut hostile_no_backtick.schema);
    strip(&mut hostile_no_backtick.name);
    for c in &mut hostile_no_backtick.columns {
        strip(&mut c.name);
    }
    for list in [
        &mut hostile_no_backtick.surrogate_key,
        &mut hostile_no_backtick.load_metadata,
        &mut hostile_no_backtick.payload,
    ] {
        list.iter_mut().for_each(strip);
    }
    if let Some(key) = hostile_no_backtick.natural_key.as_mut() {
        key.columns.iter_mut().for_each(strip);
    }
    hostile_no_backtick.survivor =
        Some(SurvivorRule::Latest(rename("computed_at").replace('`', "")));
    let mut partitioned = report(2);
    partitioned.partitioned = true;
    partitioned.partition_key = vec!["computed_at".into()];
    vec![
        ("base", base.clone(), "150020"),
        ("exact", exact, "150020"),
        ("clean", clean, "150020"),
        ("not_null", not_null, "150020"),
        ("hostile", hostile, "150020"),
        ("hostile_no_backtick", hostile_no_backtick, "150020"),
        ("partitioned", partitioned, "150020"),
        ("postgres_14", base, "140011"),
    ]
}

fn plan_with_version(table: &TableReport, dialect: Dialect, version: &str) -> Plan {
    plan_table(&PlanInput {
        table,
        dialect,
        audited_dialect: Dialect::Postgres,
        server_version: version,
        audited_on: "2026-12-03",
        task_sql: None,
        task_notes: Vec::new(),
        batch_rows: DEFAULT_BATCH_ROWS,
    })
    .expect("a plan")
}

/// Every statement (and the commented load template, and the rollback) parses in the
/// dialect's sqlparser dialect, for every variant — where sqlparser reads the construct (the
/// exceptions are named below and executed by the real engines in tests/it/plan.rs).
#[test]
fn every_dialect_parses_in_its_own_sqlparser_dialect() {
    for (variant, table, version) in variants() {
        for dialect in Dialect::ALL {
            if variant == "hostile" && dialect == Dialect::BigQuery {
                continue;
            }
            let plan = plan_with_version(&table, dialect, version);
            let parser = dialect.parser();
            let statements = plan
                .steps
                .iter()
                .flat_map(|s| s.statements.iter())
                .chain(plan.rollback.iter())
                // MySQL's guarded DDL is a string executed with PREPARE; the strings are
                // parsed in mysql_guarded_ddl_parses_once_unquoted.
                .filter(|s| !s.starts_with("SET @natkey_sql") && !s.contains("natkey_statement"))
                // sqlparser does not read expressions in an ON CONFLICT target (SQLite's, and
                // PostgreSQL 14's NULL-safe key).
                .filter(|s| !(dialect == Dialect::Sqlite && s.contains("ON CONFLICT (")))
                .filter(|s| !s.contains("ON CONFLICT (\"revenue_date\", (COALESCE"))
                // PostgreSQL's DO blocks are PL/pgSQL, not SQL; sqlparser does not know
                // CREATE INDEX ... ON ONLY.
                .filter(|s| !s.starts_with("DO $") && !s.contains(" ON ONLY "))
                // psql's \gexec ends a query: the query itself is parsed.
                .map(|s| s.strip_suffix(GEXEC).unwrap_or(s).to_string());
            let mut parsed = 0;
            for statement in statements {
                if let Err(e) = Parser::parse_sql(parser.as_ref(), &statement) {
                    panic!("{dialect} ({variant}): {e}\n{statement}");
                }
                parsed += 1;
            }
            assert!(
                parsed >= 3,
                "{dialect} ({variant}): only {parsed} statements parsed"
            );
        }
    }
}

/// Snapshots of the variants that change the shape of a plan most.
#[test]
fn partitioned_and_hostile_plans_are_stable() {
    for (variant, table, version) in variants() {
        if variant == "partitioned" {
            let plan = plan_with_version(&table, Dialect::Postgres, version);
            insta::assert_snapshot!("plan_postgres_partitioned", plan.render());
        }
        if variant == "hostile" {
            for dialect in [Dialect::Postgres, Dialect::MySql, Dialect::Snowflake] {
                let plan = plan_with_version(&table, dialect, version);
                insta::assert_snapshot!(format!("plan_{dialect}_hostile"), plan.render());
            }
        }
    }
}

#[test]
fn mysql_guarded_ddl_parses_once_unquoted() {
    for (variant, table, version) in variants() {
        mysql_guarded_ddl_parses(variant, &plan_with_version(&table, Dialect::MySql, version));
    }
}

fn mysql_guarded_ddl_parses(variant: &str, plan: &Plan) {
    let guarded: Vec<String> = plan
        .steps
        .iter()
        .flat_map(|s| s.statements.iter())
        .chain(plan.rollback.iter())
        .filter_map(|s| s.strip_prefix("SET @natkey_sql = IF(("))
        .map(|s| {
            let start = s.find(", '").map(|i| i + 3).unwrap_or(0);
            let end = s.rfind("', 'DO 0')").unwrap_or(s.len());
            s[start..end].replace("''", "'").replace("\\\\", "\\")
        })
        .collect();
    assert!(guarded.len() >= 2, "{variant}: {guarded:?}");
    for ddl in guarded {
        Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, &ddl)
            .unwrap_or_else(|e| panic!("{variant}: {e}\n{ddl}"));
    }
}

#[test]
fn a_table_without_duplicates_only_enforces() {
    let mut table = report(0);
    table.status = Status::Clean;
    table.duplicate_groups = Some(0);
    table.excess_rows = Some(0);
    let plan = plan_for(&table, Dialect::Postgres);
    let titles: Vec<&str> = plan.steps.iter().map(|s| s.title.as_str()).collect();
    assert!(
        !titles.contains(&"Backup") && !titles.contains(&"Cleanup"),
        "{titles:?}"
    );
    assert!(titles.contains(&"Enforce the natural key"), "{titles:?}");
    assert!(plan.rollback.iter().all(|s| !s.contains("INSERT")));
}

/// The session settings live in their own first step, not in the backup a clean table skips.
#[test]
fn a_table_without_duplicates_still_sets_lock_timeouts_before_enforcing() {
    let mut table = report(0);
    table.status = Status::Clean;
    table.duplicate_groups = Some(0);
    table.excess_rows = Some(0);
    for (dialect, settings) in [
        (
            Dialect::Postgres,
            &["SET lock_timeout", "SET statement_timeout"][..],
        ),
        (Dialect::MySql, &["SET SESSION lock_wait_timeout"][..]),
    ] {
        let text = plan_for(&table, dialect).render();
        let enforce = text
            .find("Enforce the natural key")
            .expect("an enforce step");
        for setting in settings {
            let at = text
                .find(setting)
                .unwrap_or_else(|| panic!("{dialect}: no {setting}\n{text}"));
            assert!(
                at < enforce,
                "{dialect}: {setting} after the enforce step\n{text}"
            );
        }
    }
}

/// The MERGE keeps one source row per key: the survivor rule's (then the whole row), never
/// an arbitrary one a retry could choose differently.
#[test]
fn the_merge_template_deduplicates_its_source_by_the_survivor_rule() {
    let mut table = report(2);
    for (rule, order) in [
        (
            SurvivorRule::Latest("computed_at".into()),
            "ORDER BY CASE WHEN computed_at IS NULL THEN 1 ELSE 0 END, computed_at DESC, revenue_date",
        ),
        (
            SurvivorRule::Earliest("computed_at".into()),
            "ORDER BY CASE WHEN computed_at IS NULL THEN 1 ELSE 0 END, computed_at ASC, revenue_date",
        ),
    ] {
        table.survivor = Some(rule);
        let plan = plan_for(&table, Dialect::Snowflake);
        let merge = plan
            .steps
            .iter()
            .find(|s| s.commented)
            .map(|s| s.statements[0].clone())
            .expect("a load template");
        assert!(merge.contains(order), "{merge}");
    }
}

#[test]
fn an_enforced_key_needs_no_plan() {
    let mut table = report(0);
    table.status = Status::Enforced;
    if let Some(key) = table.natural_key.as_mut() {
        key.enforced = true;
    }
    let plan = plan_for(&table, Dialect::MySql);
    assert!(plan.steps.is_empty());
    assert!(plan.render().contains("already enforces"));
}

#[test]
fn conflicting_groups_without_a_survivor_rule_are_refused_with_the_config_to_write() {
    let mut table = report(2);
    table.survivor = None;
    let err = plan_table(&PlanInput {
        table: &table,
        dialect: Dialect::Postgres,
        audited_dialect: Dialect::Postgres,
        server_version: "150020",
        audited_on: "2026-12-03",
        task_sql: None,
        task_notes: Vec::new(),
        batch_rows: DEFAULT_BATCH_ROWS,
    })
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("survivor = ") && text.contains("finance.daily_revenue_summary"),
        "{text}"
    );
}

#[test]
fn a_table_without_a_key_is_refused_with_the_config_to_write() {
    let mut table = report(0);
    table.status = Status::NoKey;
    table.natural_key = None;
    table.name = r#"Weird "log""#.into();
    let err = plan_table(&PlanInput {
        table: &table,
        dialect: Dialect::Sqlite,
        audited_dialect: Dialect::Sqlite,
        server_version: "",
        audited_on: "2026-12-03",
        task_sql: None,
        task_notes: Vec::new(),
        batch_rows: DEFAULT_BATCH_ROWS,
    })
    .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("natural_key = ["), "{text}");
    // The suggested entry is valid TOML naming the table.
    let toml_part = &text[text.find("[[table]]").unwrap_or(0)..];
    let parsed = crate::config::Config::parse(
        &toml_part.replace("\"column\", ...", "\"message\""),
        std::path::Path::new("x"),
    )
    .expect("valid toml");
    assert_eq!(parsed.tables[0].name.name, r#"Weird "log""#);
}

/// Before 15 there is no NULLS NOT DISTINCT; NOT NULL is no answer either (the cleanup keeps
/// a row per NULL key, so SET NOT NULL would fail after it): the index is on the NULL-replaced
/// value plus an IS NULL flag, and the load template's conflict target names the same
/// expressions. (tests/it/plan.rs runs such a plan on a real server.)
#[test]
fn postgres_before_15_makes_null_keys_collide_through_an_index_on_expressions() {
    let table = report(0);
    let plan = plan_table(&PlanInput {
        table: &table,
        dialect: Dialect::Postgres,
        audited_dialect: Dialect::Postgres,
        server_version: "140011",
        audited_on: "2026-12-03",
        task_sql: None,
        task_notes: Vec::new(),
        batch_rows: DEFAULT_BATCH_ROWS,
    })
    .expect("plan");
    let text = plan.render();
    let parts = r#""revenue_date", (COALESCE("region", '')), ("region" IS NULL)"#;
    assert!(
        text.contains(&format!(
            r#"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "daily_revenue_summary__natural_key" ON "finance"."daily_revenue_summary" ({parts});"#
        )),
        "{text}"
    );
    assert!(text.contains(&format!("ON CONFLICT ({parts})")), "{text}");
    assert!(!text.contains("NULLS NOT DISTINCT"), "{text}");
    assert!(
        !text.contains("SET NOT NULL") && !text.contains("CHECK ("),
        "{text}"
    );
    // An index on expressions cannot back a constraint: none is added.
    assert!(!text.contains("USING INDEX"), "{text}");
    insta::assert_snapshot!("plan_postgres_14", text);
}

#[test]
fn object_names_fit_and_stay_apart() {
    assert_eq!(
        object_name(&["sales", "daily_orders", "20261203"], 63),
        "sales__daily_orders__20261203"
    );
    let hostile = object_name(&[r#"Weird "Table" <script>"#, "natural_key"], 63);
    assert!(
        hostile.starts_with("weird_table_script__natural_key_"),
        "{hostile}"
    );
    let long = "x".repeat(200);
    let a = object_name(&[&long, "a"], 63);
    let b = object_name(&[&long, "b"], 63);
    assert!(a.len() <= 63 && b.len() <= 63 && a != b);
}

/// The whole SQLite plan, then the load template twice, on a real (in-memory) SQLite database.
#[tokio::test]
async fn sqlite_load_template_converges_when_run_twice() {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .expect("sqlite");
    let setup = "CREATE TABLE daily_revenue_summary (summary_id INTEGER PRIMARY KEY, \
        revenue_date TEXT NOT NULL, region TEXT, gross_cents INTEGER, computed_at TEXT);
        INSERT INTO daily_revenue_summary (revenue_date, region, gross_cents, computed_at) VALUES
          ('2026-11-01', NULL, 100, '2026-11-02 01:00'), ('2026-11-01', NULL, 100, '2026-11-02 01:05'),
          ('2026-11-02', 'eu', 200, '2026-11-03 01:00'), ('2026-11-02', 'eu', 250, '2026-11-03 09:00');
        CREATE TABLE staging_daily_revenue_summary (revenue_date TEXT, region TEXT, gross_cents INTEGER, computed_at TEXT);
        INSERT INTO staging_daily_revenue_summary VALUES
          ('2026-11-01', NULL, 100, '2026-12-01 01:00'), ('2026-11-02', 'eu', 260, '2026-12-01 01:00'),
          ('2026-11-03', NULL, 300, '2026-12-01 01:00');";
    sqlx::raw_sql(setup)
        .execute(&mut conn)
        .await
        .expect("fixture");
    let mut table = report(1);
    table.schema = "main".into();
    let plan = plan_for(&table, Dialect::Sqlite);
    for statement in plan.statements() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{statement}"));
    }
    let load = plan
        .steps
        .iter()
        .find(|s| s.commented)
        .map(|s| s.statements[0].clone())
        .expect("a load template");
    let state = |rows: Vec<sqlx::sqlite::SqliteRow>| -> Vec<(String, Option<String>, i64)> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let query = "SELECT revenue_date, region, gross_cents FROM daily_revenue_summary ORDER BY 1, 2";
    let mut states = Vec::new();
    for _ in 0..3 {
        sqlx::raw_sql(sqlx::AssertSqlSafe(load.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{load}"));
        states.push(state(
            sqlx::query(query).fetch_all(&mut conn).await.expect("rows"),
        ));
    }
    // Mutable facts (the table had conflicting groups): the source's values win, once.
    assert_eq!(
        states[0],
        vec![
            ("2026-11-01".to_string(), None, 100),
            ("2026-11-02".to_string(), Some("eu".to_string()), 260),
            ("2026-11-03".to_string(), None, 300),
        ]
    );
    assert_eq!(states[0], states[1]);
    assert_eq!(states[1], states[2]);
}

/// A MySQL cleanup of more excess rows than a batch holds runs batch by batch in a stored
/// procedure, each batch copying and deleting in one transaction; its statements (also those
/// inside the procedure) parse as MySQL. Executed on MariaDB in tests/it/plan.rs.
#[test]
fn a_mysql_cleanup_larger_than_a_batch_runs_in_batches_of_that_many_rows() {
    for (variant, table, _) in variants() {
        if variant != "base" && variant != "hostile_no_backtick" {
            continue;
        }
        let excess = table.excess_rows.expect("excess rows") as u64;
        assert!(excess > 1, "{variant}");
        let mysql_plan = |batch_rows| {
            plan_table(&PlanInput {
                table: &table,
                dialect: Dialect::MySql,
                audited_dialect: Dialect::MySql,
                server_version: "10.11.6-MariaDB",
                audited_on: "2026-12-03",
                task_sql: None,
                task_notes: Vec::new(),
                batch_rows,
            })
            .expect("a plan")
        };
        let plan = mysql_plan(1);
        let cleanup = plan
            .steps
            .iter()
            .find(|s| s.title == "Cleanup")
            .expect("a cleanup step");
        let procedure = cleanup
            .statements
            .iter()
            .find(|s| s.starts_with(DELIMITER))
            .expect("a procedure");
        assert!(procedure.ends_with("END //\nDELIMITER ;"), "{procedure}");
        assert!(
            cleanup.statements.iter().any(|s| s.starts_with("CALL ")),
            "{:?}",
            cleanup.statements
        );
        assert!(
            cleanup
                .why
                .iter()
                .any(|l| l.contains("1 rows per transaction")),
            "{:?}",
            cleanup.why
        );
        let body = procedure
            .split_once("\nBEGIN\n")
            .and_then(|(_, rest)| rest.split_once("\nEND //"))
            .map(|(body, _)| body)
            .expect("a body");
        for statement in body.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            if statement.trim_end_matches(';') == "END WHILE" {
                continue;
            }
            let statement = statement
                .strip_prefix("WHILE @natkey_from < @natkey_last DO\n")
                .unwrap_or(statement)
                .trim();
            Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, statement)
                .unwrap_or_else(|e| panic!("{variant}: {e}\n{statement}"));
        }
        let rendered = plan.render();
        assert!(
            !rendered.contains("DELIMITER ;;"),
            "a DELIMITER line gets no terminator of its own"
        );
        // At or under the batch size: one transaction, as before.
        assert!(
            !mysql_plan(excess).render().contains("CREATE PROCEDURE"),
            "{variant}"
        );
    }
}
