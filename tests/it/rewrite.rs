//! `natkey rewrite`: the proof that a rewrite makes retries converge. Each fixture task is
//! rendered with its template variables and run for real: the original twice (the state
//! differs from one run), then the rewrite once, twice and three times (the state equals one
//! run). Plus the CLI contract (JSON, exit codes, folders, dedupe jobs, `--warehouse` key
//! learning, bad input) and a bounded fuzz run of the analyzer.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;

use crate::common::{Engine, Run, TempDir, TestDb, assert_clean_error, natkey};

const DS: &str = "2026-11-02";
const KEYS: [&str; 4] = [
    "--natural-key",
    "daily_orders=order_id,line_item_id",
    "--natural-key",
    "daily_totals=day",
];

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rewrite")
        .join(path)
}

fn fixture_text(path: &str) -> String {
    std::fs::read_to_string(fixture(path)).expect("fixture exists")
}

/// What the orchestrator does before running a task: fill in the template variables.
fn render(sql: &str) -> String {
    sql.replace("{{ ds }}", DS)
}

fn dialect_of(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "postgres",
        Engine::MySql => "mysql",
        Engine::Sqlite => "sqlite",
    }
}

/// `natkey rewrite FILE --format json` with the fixture keys.
fn rewrite(dir: &std::path::Path, args: &[&str]) -> Run {
    let mut all = vec!["rewrite", "--format", "json"];
    all.extend_from_slice(args);
    natkey(dir, &all, &[])
}

fn json(run: &Run) -> Value {
    run.json()
}

/// The staging rows every fixture loads from: two days, one NULL line item.
fn setup(db: &TestDb, surrogate: bool, unique_key: bool) -> String {
    let id_type = match db.engine {
        Engine::Postgres => "uuid",
        _ => "varchar(64)",
    };
    let surrogate_column = if surrogate {
        format!("surrogate_key {id_type},\n")
    } else {
        String::new()
    };
    let unique = if unique_key {
        ",\n UNIQUE (order_id, line_item_id)"
    } else {
        ""
    };
    format!(
        "CREATE TABLE staging_orders (order_id int NOT NULL, line_item_id int NOT NULL, \
         order_date date NOT NULL, quantity int NOT NULL, amount_cents bigint NOT NULL);\n\
         INSERT INTO staging_orders VALUES\n\
         (1001, 1, '2026-11-02', 2, 2500), (1001, 2, '2026-11-02', 1, 990),\n\
         (1002, 1, '2026-11-02', 5, 12000), (1003, 1, '2026-11-03', 1, 450);\n\
         CREATE TABLE daily_orders ({surrogate_column}order_id int NOT NULL, \
         line_item_id int NOT NULL, order_date date NOT NULL, quantity int NOT NULL, \
         amount_cents bigint NOT NULL{unique});\n\
         CREATE TABLE daily_totals (day date NOT NULL PRIMARY KEY, total_cents bigint NOT NULL);\n"
    )
}

/// The whole content of the fixture tables as one text, rows sorted; `with_surrogate` includes
/// the surrogate key column (a deterministic key must be equal between runs too).
async fn state(db: &TestDb, with_surrogate: bool) -> String {
    let text = |e: &str| match db.engine {
        Engine::MySql => format!("CAST({e} AS CHAR)"),
        _ => format!("CAST({e} AS TEXT)"),
    };
    let concat = |parts: &[String]| match db.engine {
        Engine::MySql => format!("CONCAT_WS('|', {})", parts.join(", ")),
        _ => parts.join(" || '|' || "),
    };
    let agg = |row: String, table: &str| match db.engine {
        Engine::Postgres => format!(
            "SELECT coalesce(string_agg(r, ',' ORDER BY r), '') FROM (SELECT {row} AS r FROM {table}) x"
        ),
        Engine::MySql => format!(
            "SELECT coalesce(GROUP_CONCAT(r ORDER BY r SEPARATOR ','), '') FROM (SELECT {row} AS r FROM {table}) x"
        ),
        Engine::Sqlite => format!(
            "SELECT coalesce(group_concat(r, ','), '') FROM (SELECT {row} AS r FROM {table} ORDER BY r) x"
        ),
    };
    let mut order_cols: Vec<String> = [
        "order_id",
        "line_item_id",
        "order_date",
        "quantity",
        "amount_cents",
    ]
    .iter()
    .map(|c| text(c))
    .collect();
    if with_surrogate {
        order_cols.insert(0, text("surrogate_key"));
    }
    let orders = db
        .scalar_text(&agg(concat(&order_cols), "daily_orders"))
        .await
        .unwrap_or_default();
    let totals = db
        .scalar_text(&agg(
            concat(&[text("day"), text("total_cents")]),
            "daily_totals",
        ))
        .await
        .unwrap_or_default();
    format!("daily_orders: {orders}\ndaily_totals: {totals}")
}

/// The proof for one fixture on one engine.
async fn retries_converge_after_rewrite(engine: Engine, file: &str, surrogate: bool) {
    let task = fixture_text(file);
    let dialect = dialect_of(engine);

    // The original, run twice, leaves another state than run once.
    let db = TestDb::new(engine).await;
    db.exec(&setup(&db, surrogate, false)).await;
    db.exec(&render(&task)).await;
    let once = state(&db, false).await;
    db.exec(&render(&task)).await;
    let twice = state(&db, false).await;
    assert_ne!(once, twice, "{file}: the original should not be idempotent");

    // natkey's verdict and rewrite.
    let path = fixture(file);
    let mut args = vec![path.to_str().expect("utf-8 path"), "--dialect", dialect];
    args.extend_from_slice(&KEYS);
    let run = rewrite(&db.dir, &args);
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = json(&run);
    assert_eq!(report["idempotent"], false);
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    let rewritten = report["rewritten"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: no rewrite\n{report}"))
        .to_string();
    if task.contains("{{ ds }}") {
        assert!(
            rewritten.contains("{{ ds }}"),
            "the Jinja survives: {rewritten}"
        );
    }

    // The rewrite re-parses and is idempotent by natkey's own rules.
    let again = {
        let path = db.write_file("rewritten.sql", &rewritten);
        let mut args = vec![path.as_str(), "--dialect", dialect];
        args.extend_from_slice(&KEYS);
        rewrite(&db.dir, &args)
    };
    assert_eq!(again.code, 0, "{}", again.describe());

    // The rewrite, run once, twice and three times, leaves the state of one run. Where it
    // needs a unique key (ON CONFLICT), the database has it: `natkey plan` put it there.
    let db = TestDb::new(engine).await;
    db.exec(&setup(&db, surrogate, true)).await;
    db.exec(&render(&rewritten)).await;
    let one = state(&db, surrogate).await;
    assert_eq!(
        state(&db, false).await,
        once,
        "{file}: one run of the rewrite loads what one run of the original loads"
    );
    db.exec(&render(&rewritten)).await;
    assert_eq!(state(&db, surrogate).await, one, "{file}: second run");
    db.exec(&render(&rewritten)).await;
    assert_eq!(state(&db, surrogate).await, one, "{file}: third run");
}

#[tokio::test]
async fn postgres_daily_partition_load_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::Postgres, "postgres/load_daily_orders.sql", true).await;
}

#[tokio::test]
async fn postgres_plain_append_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::Postgres, "postgres/append_orders.sql", false).await;
}

#[tokio::test]
async fn postgres_append_behind_a_with_clause_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::Postgres, "postgres/with_append_orders.sql", false)
        .await;
}

#[tokio::test]
async fn postgres_delta_upsert_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::Postgres, "postgres/daily_totals_upsert.sql", false)
        .await;
}

#[tokio::test]
async fn mariadb_daily_partition_load_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::MySql, "mysql/load_daily_orders.sql", true).await;
}

#[tokio::test]
async fn mariadb_plain_append_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::MySql, "mysql/append_orders.sql", false).await;
}

#[tokio::test]
async fn mariadb_delta_upsert_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::MySql, "mysql/daily_totals_upsert.sql", false).await;
}

#[tokio::test]
async fn sqlite_daily_partition_load_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::Sqlite, "sqlite/load_daily_orders.sql", false).await;
}

#[tokio::test]
async fn sqlite_plain_append_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::Sqlite, "sqlite/append_orders.sql", false).await;
}

#[tokio::test]
async fn sqlite_delta_upsert_converges_after_rewrite() {
    retries_converge_after_rewrite(Engine::Sqlite, "sqlite/daily_totals_upsert.sql", false).await;
}

#[tokio::test]
async fn the_idempotent_fixture_really_is_idempotent_and_natkey_says_so() {
    let file = "postgres/idempotent_load.sql";
    let db = TestDb::postgres().await;
    db.exec(&setup(&db, false, false)).await;
    db.exec(&render(&fixture_text(file))).await;
    let once = state(&db, false).await;
    db.exec(&render(&fixture_text(file))).await;
    assert_eq!(state(&db, false).await, once);
    let path = fixture(file);
    let mut args = vec![path.to_str().expect("utf-8")];
    args.extend_from_slice(&KEYS);
    let run = rewrite(&db.dir, &args);
    assert_eq!(run.code, 0, "{}", run.describe());
    let report = json(&run);
    assert_eq!(report["idempotent"], true);
    assert_eq!(report["findings"], serde_json::json!([]));
    assert_eq!(report["rewritten"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// The CLI contract

#[test]
fn json_output_has_exactly_the_documented_fields() {
    let dir = TempDir::new();
    let path = fixture("postgres/append_orders.sql");
    let mut args = vec![path.to_str().expect("utf-8")];
    args.extend_from_slice(&KEYS);
    let run = rewrite(&dir.0, &args);
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = json(&run);
    let keys: Vec<&str> = report
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "file",
            "dialect",
            "idempotent",
            "findings",
            "errors",
            "rewritten"
        ]
    );
    let finding = &report["findings"][0];
    let keys: Vec<&str> = finding
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["rule", "line", "column", "message", "fix"]);
    assert_eq!(finding["rule"], "insert-without-natural-key");
    assert_eq!(
        (finding["line"].as_u64(), finding["column"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(report["dialect"], "postgres");
}

#[test]
fn an_unparseable_statement_is_exit_2_with_line_and_column_and_the_rest_is_analysed() {
    let dir = TempDir::new();
    let path = fixture("postgres/one_bad_statement.sql");
    let mut args = vec![path.to_str().expect("utf-8")];
    args.extend_from_slice(&KEYS);
    let run = rewrite(&dir.0, &args);
    assert_eq!(run.code, 2, "{}", run.describe());
    let report = json(&run);
    let errors = report["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(
        (errors[0]["line"].as_u64(), errors[0]["column"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Expected"),
        "{report}"
    );
    assert_eq!(
        report["findings"][0]["line"], 4,
        "the statement after it is analysed"
    );
}

#[test]
fn a_folder_gives_an_array_and_a_table() {
    let dir = TempDir::new();
    let folder = fixture("folder");
    let mut args = vec![folder.to_str().expect("utf-8")];
    args.extend_from_slice(&KEYS);
    let run = rewrite(&dir.0, &args);
    assert_eq!(run.code, 1, "{}", run.describe());
    let reports = json(&run);
    let files: Vec<String> = reports
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            PathBuf::from(r["file"].as_str().unwrap_or(""))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(files, ["a_idempotent.sql", "b_append.sql", "c_totals.sql"]);
    let verdicts: Vec<bool> = reports
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["idempotent"].as_bool().expect("bool"))
        .collect();
    assert_eq!(verdicts, [true, false, false]);

    let mut args = vec!["rewrite", folder.to_str().expect("utf-8")];
    args.extend_from_slice(&KEYS);
    let run = natkey(&dir.0, &args, &[]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let header = run.stdout.lines().next().unwrap_or("");
    assert!(
        header.starts_with("FILE") && header.contains("IDEMPOTENT"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 of 3 files idempotent."),
        "{}",
        run.stdout
    );
}

#[test]
fn a_clean_file_exits_0() {
    let dir = TempDir::new();
    let path = fixture("postgres/idempotent_load.sql");
    let run = natkey(&dir.0, &["rewrite", path.to_str().expect("utf-8")], &[]);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(
        run.stdout.contains("idempotent: running it twice"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_dedupe_job_teaches_the_key_and_the_survivor() {
    let dir = TempDir::new();
    for (job, survivor) in [
        ("dedupe/cleanup_orders_row_number.sql", "latest:loaded_at"),
        ("dedupe/cleanup_orders_self_join.sql", "latest:loaded_at"),
        ("dedupe/cleanup_orders_not_in.sql", "lowest_surrogate"),
    ] {
        let path = fixture(job);
        let run = rewrite(&dir.0, &["--dedupe-job", path.to_str().expect("utf-8")]);
        assert_eq!(run.code, 0, "{}", run.describe());
        let learned = &json(&run)["learned_keys"][0];
        assert_eq!(learned["table"], "daily_orders", "{job}");
        assert_eq!(
            learned["natural_key"],
            serde_json::json!(["order_id", "line_item_id"])
        );
        assert_eq!(learned["survivor"], survivor, "{job}");
        assert_eq!(learned["source"], "dedupe_job");
    }
    // ... and the key drives the rewrite of a task, with no --natural-key.
    let job = fixture("dedupe/cleanup_orders_row_number.sql");
    let task = fixture("postgres/append_orders.sql");
    let run = rewrite(
        &dir.0,
        &[
            task.to_str().expect("utf-8"),
            "--dedupe-job",
            job.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    let rewritten = json(&run)["rewritten"].as_str().unwrap_or("").to_string();
    assert!(
        rewritten.contains("ON CONFLICT (\"order_id\", \"line_item_id\") DO NOTHING"),
        "{rewritten}"
    );
}

#[test]
fn a_dbt_model_gets_unique_key() {
    let dir = TempDir::new();
    let path = fixture("models/fct_orders.sql");
    let run = rewrite(
        &dir.0,
        &[
            path.to_str().expect("utf-8"),
            "--dialect",
            "snowflake",
            "--natural-key",
            "fct_orders=order_id,line_item_id",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = json(&run);
    assert_eq!(
        report["findings"][0]["rule"],
        "dbt-incremental-without-unique-key"
    );
    let rewritten = report["rewritten"].as_str().unwrap_or("");
    assert!(
        rewritten.contains("unique_key=['order_id', 'line_item_id'], incremental_strategy='merge'"),
        "{rewritten}"
    );
    assert!(
        rewritten.contains("{% if is_incremental() %}"),
        "{rewritten}"
    );
}

#[test]
fn a_side_effect_gets_the_ledger_protocol() {
    let dir = TempDir::new();
    let path = fixture("postgres/notify_downstream.sql");
    let run = rewrite(&dir.0, &[path.to_str().expect("utf-8")]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = json(&run);
    assert_eq!(report["findings"][0]["rule"], "external-side-effect");
    assert!(
        report["findings"][0]["fix"]
            .as_str()
            .unwrap_or("")
            .contains("CREATE TABLE")
    );
    assert_eq!(report["rewritten"], Value::Null);
}

#[tokio::test]
async fn the_warehouse_supplies_the_declared_key_and_the_surrogate() {
    let db = TestDb::postgres().await;
    db.exec(
        "CREATE TABLE daily_orders (surrogate_key uuid DEFAULT gen_random_uuid() PRIMARY KEY, \
         order_id int NOT NULL, line_item_id int, order_date date NOT NULL, quantity int NOT NULL, \
         amount_cents bigint NOT NULL, UNIQUE (order_id, line_item_id));\n\
         CREATE TABLE staging_orders (order_id int, line_item_id int, order_date date, \
         quantity int, amount_cents bigint);",
    )
    .await;
    let url = db.url();
    let path = fixture("postgres/append_orders.sql");
    let run = rewrite(
        &db.dir,
        &[path.to_str().expect("utf-8"), "--warehouse", &url],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = json(&run);
    let message = report["findings"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("fails on daily_orders"), "{report}");
    assert!(message.contains("order_id, line_item_id"), "{report}");
    let rewritten = report["rewritten"].as_str().unwrap_or("");
    assert!(
        rewritten.contains("ON CONFLICT (\"order_id\", \"line_item_id\") DO NOTHING"),
        "{rewritten}"
    );
    // A conflict on the generated primary key is recognised as protecting nothing.
    let task = db.write_file(
        "conflict.sql",
        "INSERT INTO daily_orders (order_id, line_item_id, order_date, quantity, amount_cents)\n\
         SELECT order_id, line_item_id, order_date, quantity, amount_cents FROM staging_orders\n\
         ON CONFLICT (surrogate_key) DO NOTHING;\n",
    );
    let run = rewrite(&db.dir, &[&task, "--warehouse", &url]);
    let report = json(&run);
    assert_eq!(
        report["findings"][0]["rule"], "conflict-on-surrogate",
        "{report}"
    );
    // The session was read-only: the task was never run.
    assert_eq!(
        db.scalar_text("SELECT count(*)::text FROM daily_orders")
            .await
            .as_deref(),
        Some("0")
    );
}

#[tokio::test]
async fn discovery_without_pg_stat_statements_says_so_in_one_line() {
    let db = TestDb::postgres().await;
    let run = rewrite(&db.dir, &["--discover", "--warehouse", &db.url()]);
    assert_clean_error(&run, &["pg_stat_statements"]);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.describe());
}

#[test]
fn bad_inputs_are_short_errors() {
    let dir = TempDir::new();
    let empty = dir.0.join("empty.sql");
    std::fs::write(&empty, "\n  \n").expect("write");
    let binary = dir.0.join("binary.sql");
    std::fs::write(&binary, b"\x00\x01\x02SELECT").expect("write");
    let huge = dir.0.join("huge.sql");
    let file = std::fs::File::create(&huge).expect("create");
    file.set_len(50 * 1024 * 1024).expect("a sparse 50 MB file");
    for (path, needle) in [(&empty, "empty"), (&binary, "binary"), (&huge, "10 MB")] {
        let run = rewrite(&dir.0, &[path.to_str().expect("utf-8")]);
        assert_clean_error(&run, &[needle]);
    }
    let run = rewrite(&dir.0, &["missing.sql"]);
    assert_clean_error(&run, &["no such file"]);
    let run = rewrite(&dir.0, &["x.sql", "--dialect", "oracle"]);
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(run.stderr.contains("postgres"), "{}", run.describe());
    let run = rewrite(&dir.0, &[]);
    assert_clean_error(&run, &["nothing to analyse"]);

    // In a folder, an unreadable file is reported with the others and makes the exit 2.
    std::fs::copy(
        fixture("postgres/idempotent_load.sql"),
        dir.0.join("ok.sql"),
    )
    .expect("copy");
    let run = rewrite(&dir.0, &[dir.0.to_str().expect("utf-8")]);
    assert_eq!(run.code, 2, "{}", run.describe());
    assert_eq!(json(&run).as_array().map(Vec::len), Some(4));
}

// ---------------------------------------------------------------------------------------------
// Fuzzing

fn fixture_texts() -> Vec<String> {
    [
        "postgres/load_daily_orders.sql",
        "postgres/append_orders.sql",
        "postgres/daily_totals_upsert.sql",
        "postgres/idempotent_load.sql",
        "postgres/notify_downstream.sql",
        "postgres/one_bad_statement.sql",
        "mysql/daily_totals_upsert.sql",
        "models/fct_orders.sql",
        "dedupe/cleanup_orders_self_join.sql",
        "postgres/with_append_orders.sql",
    ]
    .iter()
    .map(|f| fixture_text(f))
    .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at a position (modulo the length) with another.
    Byte(usize, u8),
    /// Delete a line.
    DropLine(usize),
    /// Duplicate a line.
    RepeatLine(usize),
    /// Insert a token at a position.
    Token(usize, &'static str),
    /// Cut the text short.
    Truncate(usize),
}

const TOKENS: [&str; 16] = [
    "(",
    ")",
    ";",
    "'",
    "\"",
    "{{",
    "}}",
    "{%",
    "%}",
    " ON CONFLICT ",
    " SELECT ",
    " ,",
    "--",
    "/*",
    "$$",
    "é",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Byte(p, b)),
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::RepeatLine),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Token(p, TOKENS[t])),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let n = bytes.len().max(1);
        match *m {
            Mutation::Byte(p, b) => {
                if !bytes.is_empty() {
                    bytes[p % n] = b;
                }
            }
            Mutation::DropLine(l) | Mutation::RepeatLine(l) => {
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let i = l % lines.len();
                if matches!(m, Mutation::DropLine(_)) {
                    lines.remove(i);
                } else {
                    let line = lines[i].clone();
                    lines.insert(i, line);
                }
                bytes = lines.join(&b'\n');
            }
            Mutation::Token(p, t) => {
                let at = p % (bytes.len() + 1);
                bytes.splice(at..at, t.bytes());
            }
            Mutation::Truncate(p) => bytes.truncate(p % n),
        }
    }
    bytes
}

/// How many fuzz cases to run: 256 in the suite; `NATKEY_FUZZ_CASES=20000` for a long run.
fn fuzz_cases() -> u32 {
    std::env::var("NATKEY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    // Bounded so the suite stays fast; each case analyses in every dialect.
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// On any mutation of a fixture the analyzer does not panic, and a rewrite it returns (a)
    /// brings no parse error the original did not have and (b) is a fixpoint: analysing it
    /// again reports none of the rules whose every finding it fixed.
    #[test]
    fn rewrites_of_mutated_fixtures_parse_and_are_fixpoints(
        which in 0usize..10,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let texts = fixture_texts();
        let bytes = mutate(&texts[which % texts.len()], &mutations);
        let mut keys = natkey::rewrite::KnownKeys::new();
        keys.add(natkey::rewrite::parse_natural_key_flag("daily_orders=order_id,line_item_id").expect("valid"));
        keys.add(natkey::rewrite::parse_natural_key_flag("daily_totals=day").expect("valid"));
        let Ok(text) = natkey::rewrite::task_text(&bytes) else {
            // Empty, binary or not UTF-8: refused with a reason, which is the contract.
            return Ok(());
        };
        let lines = text.lines().count().max(1);
        for dialect in natkey::rewrite::Dialect::ALL {
            let report = natkey::rewrite::analyze("fuzz.sql", &text, dialect, &keys);
            for f in &report.findings {
                prop_assert!(f.line >= 1 && f.line <= lines + 1, "finding line {} of {}", f.line, lines);
            }
            let Some(rewritten) = &report.rewritten else {
                continue;
            };
            let again = natkey::rewrite::analyze("fuzz.sql", rewritten, dialect, &keys);
            for e in &again.errors {
                prop_assert!(
                    report.errors.iter().any(|o| o.message == e.message),
                    "{dialect}: the rewrite brings a new error {:?}\n--- original\n{text}\n--- rewrite\n{rewritten}",
                    e
                );
            }
            let fixed: Vec<&str> = report
                .findings
                .iter()
                .map(|f| f.rule)
                .filter(|rule| report.findings.iter().filter(|f| f.rule == *rule).all(|f| f.rewritten))
                .collect();
            for f in &again.findings {
                prop_assert!(
                    !fixed.contains(&f.rule),
                    "{dialect}: {} still reported after its rewrite: {}\n--- original\n{text}\n--- rewrite\n{rewritten}",
                    f.rule,
                    f.message
                );
            }
        }
    }
}

/// A private PostgreSQL cluster with `pg_stat_statements` preloaded: the shared test server
/// cannot load it without a restart, so discovery's happy path gets a server of its own
/// (initdb in a temp folder, a free port), stopped and removed on drop.
struct StatementsCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl StatementsCluster {
    fn start() -> StatementsCluster {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .max()
            .expect("a PostgreSQL version");
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let dir = std::env::temp_dir().join(crate::common::unique_name("natkey_pgss"));
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = StatementsCluster { bin, dir, port };
        // PostgreSQL refuses to run as root: as root, run it as the postgres user.
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if root {
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres", cluster.dir.to_str().expect("utf-8")])
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let pg = |tool: &str, args: &[&str]| {
            let program = cluster.bin.join(tool);
            let mut c = if root {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&program);
                c
            } else {
                std::process::Command::new(&program)
            };
            let out = c.args(args).output().expect("run a PostgreSQL tool");
            assert!(
                out.status.success(),
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let data = cluster.dir.join("data");
        let data = data.to_str().expect("utf-8");
        pg(
            "initdb",
            &[
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c shared_preload_libraries=pg_stat_statements -c fsync=off",
            cluster.port,
            cluster.dir.display()
        );
        pg(
            "pg_ctl",
            &[
                "-D",
                data,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "-l",
                &format!("{data}.log"),
                "start",
            ],
        );
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn psql(&self, sql: &str) {
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for StatementsCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let ctl = self.bin.join("pg_ctl");
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&ctl)
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::process::Command::new(&ctl)
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn discovery_analyses_the_writes_pg_stat_statements_recorded() {
    let cluster = StatementsCluster::start();
    cluster.psql(
        "CREATE EXTENSION pg_stat_statements;
         CREATE TABLE daily_orders (surrogate_key uuid DEFAULT gen_random_uuid(),
             order_id bigint NOT NULL, line_item_id int NOT NULL, amount_cents bigint,
             UNIQUE (order_id, line_item_id));
         CREATE TABLE staging_orders (order_id bigint, line_item_id int, amount_cents bigint);
         SELECT pg_stat_statements_reset();",
    );
    // The load task, as the orchestrator ran it (a retry would fail on the UNIQUE key).
    cluster.psql(
        "INSERT INTO daily_orders (order_id, line_item_id, amount_cents)
         SELECT order_id, line_item_id, amount_cents FROM staging_orders",
    );
    cluster.psql("UPDATE daily_orders SET amount_cents = amount_cents + 1 WHERE order_id = 7");
    // A write behind a WITH clause is a write too.
    cluster.psql(
        "WITH s AS (SELECT order_id, line_item_id FROM staging_orders WHERE amount_cents > 0)
         INSERT INTO daily_orders (order_id, line_item_id) SELECT order_id, line_item_id FROM s",
    );
    // A write to a table natkey does not see is not listed.
    cluster.psql("CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)");

    let dir = TempDir::new();
    let url = cluster.url();
    let run = rewrite(&dir.0, &["--discover", "--warehouse", &url]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let json = run.json();
    let reports = json
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![json.clone()]);
    let rules: Vec<String> = reports
        .iter()
        .flat_map(|r| r["findings"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["rule"].as_str().map(str::to_string))
        .collect();
    assert!(
        rules.iter().any(|r| r == "insert-without-natural-key"),
        "{rules:?}\n{}",
        run.describe()
    );
    assert!(rules.iter().any(|r| r == "delta-update"), "{rules:?}");
    assert_eq!(
        rules
            .iter()
            .filter(|r| *r == "insert-without-natural-key")
            .count(),
        2,
        "the plain INSERT and the one behind WITH: {rules:?}"
    );
    let text = serde_json::to_string(&json).unwrap_or_default();
    assert!(!text.contains("scratch"), "{text}");

    // A role without pg_read_all_stats sees other roles' statements as <insufficient
    // privilege>: that is "not readable", not "0 statements".
    cluster.psql("CREATE ROLE natkey_ro LOGIN");
    let url = url.replace("postgres://postgres@", "postgres://natkey_ro@");
    let run = rewrite(&dir.0, &["--discover", "--warehouse", &url]);
    assert_clean_error(&run, &["not readable", "pg_read_all_stats"]);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.describe());
}

#[tokio::test]
async fn postgres_hashed_keys_tell_null_bearing_keys_apart_and_repeat_on_rerun() {
    let db = TestDb::postgres().await;
    // (1, NULL) and (NULL, 1) are two facts: a hash of concat_ws('|', ...) gives both '1'.
    db.exec(
        "CREATE TABLE staging_orders (order_id int, line_item_id int, amount_cents bigint);\n\
         INSERT INTO staging_orders VALUES (1, NULL, 100), (NULL, 1, 200), (1, 1, 300);\n\
         CREATE TABLE daily_orders (surrogate_key uuid PRIMARY KEY, order_id int, \
         line_item_id int, amount_cents bigint, sample_weight float8, \
         UNIQUE NULLS NOT DISTINCT (order_id, line_item_id));",
    )
    .await;
    let task = db.write_file(
        "load.sql",
        "INSERT INTO daily_orders (surrogate_key, order_id, line_item_id, amount_cents, sample_weight)\n\
         SELECT gen_random_uuid(), order_id, line_item_id, amount_cents, random()\n\
           FROM staging_orders;\n",
    );
    let run = rewrite(
        &db.dir,
        &[&task, "--natural-key", "daily_orders=order_id,line_item_id"],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = json(&run);
    let rules: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert_eq!(
        rules,
        ["insert-without-natural-key", "random-surrogate-in-insert"],
        "{report}"
    );
    let rewritten = report["rewritten"].as_str().expect("a rewrite").to_string();
    assert!(
        rewritten.contains("amount_cents, random()"),
        "a random payload is not a key: {rewritten}"
    );

    let ids = "SELECT string_agg(coalesce(order_id::text, '-') || ',' || \
               coalesce(line_item_id::text, '-') || '=' || surrogate_key::text, ' ' \
               ORDER BY order_id NULLS FIRST, line_item_id NULLS FIRST) FROM daily_orders";
    db.exec(&rewritten).await;
    let first = db.scalar_text(ids).await;
    assert_eq!(
        db.scalar_text("SELECT count(DISTINCT surrogate_key)::text FROM daily_orders")
            .await
            .as_deref(),
        Some("3"),
        "three keys, three ids: {first:?}"
    );
    // The same facts loaded afresh get the same ids.
    db.exec("TRUNCATE daily_orders").await;
    db.exec(&rewritten).await;
    assert_eq!(db.scalar_text(ids).await, first);
    db.exec(&rewritten).await;
    assert_eq!(db.scalar_text(ids).await, first);
}

// ---------------------------------------------------------------------------------------------
// More shapes, executed on PostgreSQL

/// Runs a script, answering the database's error instead of panicking (an original task that
/// aborts is part of the proof).
async fn try_exec(db: &TestDb, sql: &str) -> Result<(), String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db.url())
        .await
        .map_err(|e| e.to_string())?;
    let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = c.close().await;
    r
}

/// One shape's proof on PostgreSQL. The original runs against `schema` and, run twice, leaves
/// another state than once (or, with `original_fails`, aborts with that message); the rewrite,
/// against `rewrite_schema` (the schema after `natkey plan`: the unique key ON CONFLICT needs),
/// is idempotent by natkey's own rules and, run once, twice and three times, leaves the state of
/// one run. Returns the rewrite and the state of one run.
async fn postgres_proof(
    task: &str,
    schema: &str,
    rewrite_schema: &str,
    args: &[&str],
    state_sql: &str,
    original_fails: Option<&str>,
) -> (String, Option<String>) {
    let db = TestDb::postgres().await;
    db.exec(schema).await;
    let mut once = None;
    match original_fails {
        Some(message) => {
            let err = try_exec(&db, task).await.expect_err("the original aborts");
            assert!(err.contains(message), "{err}");
        }
        None => {
            db.exec(task).await;
            once = db.scalar_text(state_sql).await;
            db.exec(task).await;
            assert_ne!(
                db.scalar_text(state_sql).await,
                once,
                "the original should not be idempotent"
            );
        }
    }

    let file = db.write_file("task.sql", task);
    let mut all = vec![file.as_str()];
    all.extend_from_slice(args);
    let run = rewrite(&db.dir, &all);
    assert_eq!(run.code, 1, "{}", run.describe());
    let rewritten = json(&run)["rewritten"]
        .as_str()
        .unwrap_or_else(|| panic!("no rewrite: {}", run.describe()))
        .to_string();
    let again = db.write_file("rewritten.sql", &rewritten);
    let mut all = vec![again.as_str()];
    all.extend_from_slice(args);
    let run = rewrite(&db.dir, &all);
    assert_eq!(run.code, 0, "the rewrite is idempotent: {}", run.describe());

    let db = TestDb::postgres().await;
    db.exec(rewrite_schema).await;
    db.exec(&rewritten).await;
    let one = db.scalar_text(state_sql).await;
    if original_fails.is_none() {
        assert_eq!(
            one, once,
            "one run of the rewrite loads what the original loads once"
        );
    }
    db.exec(&rewritten).await;
    assert_eq!(db.scalar_text(state_sql).await, one, "second run");
    db.exec(&rewritten).await;
    assert_eq!(db.scalar_text(state_sql).await, one, "third run");
    (rewritten, one)
}

const STAGED_LINES: &str = "CREATE TABLE staging_orders (order_id int NOT NULL, line_item_id int, \
     amount_cents bigint NOT NULL);\n\
     INSERT INTO staging_orders VALUES (1001, 1, 2500), (1001, 2, 990), (1002, NULL, 12000);\n";

const LINES_STATE: &str = "SELECT string_agg(order_id || '/' || coalesce(line_item_id::text, '-') \
     || '=' || amount_cents, ' ' ORDER BY order_id, line_item_id NULLS FIRST) FROM daily_orders";

#[tokio::test]
async fn postgres_conflict_on_the_surrogate_converges_after_rewrite() {
    let table = "CREATE TABLE daily_orders (surrogate_key uuid DEFAULT gen_random_uuid() \
                 PRIMARY KEY, order_id int NOT NULL, line_item_id int NOT NULL, amount_cents bigint";
    let staged = STAGED_LINES.replace("(1002, NULL, 12000)", "(1002, 1, 12000)");
    let (rewritten, one) = postgres_proof(
        "INSERT INTO daily_orders (order_id, line_item_id, amount_cents)\n\
         SELECT order_id, line_item_id, amount_cents FROM staging_orders\n\
         ON CONFLICT (surrogate_key) DO NOTHING;\n",
        &format!("{staged}{table});"),
        &format!("{staged}{table}, UNIQUE (order_id, line_item_id));"),
        &["--natural-key", "daily_orders=order_id,line_item_id"],
        LINES_STATE,
        None,
    )
    .await;
    assert!(
        rewritten.contains("ON CONFLICT (\"order_id\", \"line_item_id\") DO NOTHING"),
        "{rewritten}"
    );
    assert_eq!(one.as_deref(), Some("1001/1=2500 1001/2=990 1002/1=12000"));
}

#[tokio::test]
async fn postgres_upsert_from_duplicated_rows_converges_on_the_survivor_after_rewrite() {
    // Two prices for sku a: the survivor rule says the latest load wins.
    let schema = "CREATE TABLE staging_prices (sku text NOT NULL, price_cents int NOT NULL, \
                  loaded_at timestamp NOT NULL);\n\
                  INSERT INTO staging_prices VALUES ('a', 100, '2026-11-02 10:00'), \
                  ('b', 50, '2026-11-02 09:00'), ('a', 120, '2026-11-02 11:00');\n\
                  CREATE TABLE prices (sku text PRIMARY KEY, price_cents int NOT NULL, \
                  loaded_at timestamp NOT NULL);";
    let db = TestDb::postgres().await;
    let config = db.write_file(
        "natkey.toml",
        "[[table]]\nname = \"prices\"\nnatural_key = [\"sku\"]\nsurvivor = \"latest:loaded_at\"\n",
    );
    let (rewritten, one) = postgres_proof(
        "INSERT INTO prices (sku, price_cents, loaded_at)\n\
         SELECT s.sku, s.price_cents, s.loaded_at FROM staging_prices s\n\
         ON CONFLICT (sku) DO UPDATE SET price_cents = excluded.price_cents, loaded_at = excluded.loaded_at;\n",
        schema,
        schema,
        &["--config", &config],
        "SELECT string_agg(sku || '=' || price_cents, ' ' ORDER BY sku) FROM prices",
        Some("cannot affect row a second time"),
    )
    .await;
    assert!(
        rewritten.contains("SELECT DISTINCT ON (s.sku) s.sku"),
        "{rewritten}"
    );
    assert_eq!(one.as_deref(), Some("a=120 b=50"), "{rewritten}");
}

#[tokio::test]
async fn postgres_anti_join_on_a_nullable_key_converges_after_rewrite() {
    // The declared key treats NULLs as distinct, so the database lets the copy in.
    let schema = format!(
        "{STAGED_LINES}CREATE TABLE daily_orders (order_id int NOT NULL, line_item_id int, \
         amount_cents bigint NOT NULL, UNIQUE (order_id, line_item_id));"
    );
    let db = TestDb::postgres().await;
    db.exec(&schema).await;
    let url = db.url();
    let (rewritten, one) = postgres_proof(
        "INSERT INTO daily_orders (order_id, line_item_id, amount_cents)\n\
         SELECT s.order_id, s.line_item_id, s.amount_cents FROM staging_orders s\n\
         WHERE NOT EXISTS (SELECT 1 FROM daily_orders d\n\
                           WHERE d.order_id = s.order_id AND d.line_item_id = s.line_item_id);\n",
        &schema,
        &schema,
        &["--warehouse", &url],
        LINES_STATE,
        None,
    )
    .await;
    assert!(
        rewritten.contains("d.line_item_id IS NOT DISTINCT FROM s.line_item_id"),
        "{rewritten}"
    );
    assert_eq!(one.as_deref(), Some("1001/1=2500 1001/2=990 1002/-=12000"));
}
