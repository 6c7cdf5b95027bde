//! `natkey plan`, proven on real databases: each test builds a table with duplicates, audits it,
//! writes the plan from the saved report, and runs the plan as an admin with the engine's own
//! client (psql, mariadb, sqlite3), as people would. The expected contents after the cleanup
//! (one survivor per natural key, chosen by the survivor rule) are computed from the fixture,
//! never from natkey's output. Then the script runs a second time (nothing changes), the
//! rollback restores the original rows exactly, and a second rollback restores nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{Engine, TestDb, assert_clean_error, mysql_admin_url, natkey, pg_admin_url};
use crate::fixtures::{self, Surrogate, lit, toml_str};

// ---------------------------------------------------------------------------------------------
// The engine's own client

struct ClientRun {
    what: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl ClientRun {
    fn describe(&self) -> String {
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "{}\nexit code: {}\n--- stderr (tail) ---\n{}\n--- stdout (tail) ---\n{}",
            self.what,
            self.code,
            tail(&self.stderr),
            tail(&self.stdout)
        )
    }

    fn ok(self) -> ClientRun {
        assert_eq!(self.code, 0, "client failed\n{}", self.describe());
        self
    }
}

/// The server's host, port, user and password, from the admin URL the harness uses.
fn server(url: &str, default_port: u16, default_user: &str) -> (String, u16, String, String) {
    let u = url::Url::parse(url).expect("test server URL parses");
    let host = u.host_str().unwrap_or("127.0.0.1").to_string();
    let port = u.port().unwrap_or(default_port);
    let user = if u.username().is_empty() {
        default_user.to_string()
    } else {
        u.username().to_string()
    };
    let password = u.password().unwrap_or("").to_string();
    (host, port, user, password)
}

/// `psql` / `mariadb` / `sqlite3` connected to the test database as admin, stopping at the
/// first error; `query` adds the options that print bare tab-separated rows.
fn client(db: &TestDb, query: bool) -> Command {
    match db.engine {
        Engine::Postgres => {
            let (host, port, user, password) = server(&pg_admin_url(), 5432, "postgres");
            let mut c = Command::new("psql");
            c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", &host, "-p"])
                .arg(port.to_string())
                .args(["-U", &user, "-d", &db.name]);
            if !password.is_empty() {
                c.env("PGPASSWORD", password);
            }
            if query {
                c.args(["-A", "-t", "-F", "\t", "-P", "null=NULL"]);
            }
            c
        }
        Engine::MySql => {
            let (host, port, user, password) = server(&mysql_admin_url(), 3306, "root");
            let mut c = Command::new("mariadb");
            c.arg(format!("-h{host}"))
                .arg(format!("-P{port}"))
                .arg(format!("-u{user}"))
                .args(["--protocol=TCP", "--batch"]);
            if !password.is_empty() {
                c.env("MYSQL_PWD", password);
            }
            if query {
                c.arg("-N");
            }
            c.arg(&db.name);
            c
        }
        Engine::Sqlite => {
            let mut c = Command::new("sqlite3");
            c.args(["-bail", "-batch"]);
            if query {
                c.args(["-noheader", "-separator", "\t", "-nullvalue", "NULL"]);
            }
            c.arg(db.sqlite_path());
            c
        }
    }
}

fn finish(mut c: Command, what: String, stdin: Option<&Path>) -> ClientRun {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    match stdin {
        Some(p) => {
            c.stdin(std::fs::File::open(p).expect("open script"));
        }
        None => {
            c.stdin(Stdio::null());
        }
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e} (is the client installed?)"));
    ClientRun {
        what,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a script file as people would: `psql -f`, `mariadb < file`, `sqlite3 -bail < file`.
fn run_script(db: &TestDb, path: &str) -> ClientRun {
    let mut c = client(db, false);
    let what = format!("{:?} client running {path}", db.engine);
    match db.engine {
        Engine::Postgres => {
            c.args(["-f", path]);
            finish(c, what, None)
        }
        _ => finish(c, what, Some(Path::new(path))),
    }
}

/// Runs one SQL text through the client.
fn try_sql(db: &TestDb, sql: &str) -> ClientRun {
    let mut c = client(db, true);
    match db.engine {
        Engine::Postgres => {
            c.args(["-c", sql]);
        }
        Engine::MySql => {
            c.args(["-e", sql]);
        }
        Engine::Sqlite => {
            c.arg(sql);
        }
    }
    finish(c, format!("{:?} client: {sql}", db.engine), None)
}

/// The rows of a query, each a list of text values (`NULL` for NULL), sorted.
fn query(db: &TestDb, sql: &str) -> Vec<Vec<String>> {
    let run = try_sql(db, sql).ok();
    let mut rows: Vec<Vec<String>> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    rows.sort();
    rows
}

/// Every row of `table` (an SQL name), the given columns as text, sorted.
fn snapshot(db: &TestDb, table: &str, columns: &[String]) -> Vec<Vec<String>> {
    let cols: Vec<String> = columns.iter().map(|c| db.q(c)).collect();
    query(db, &format!("SELECT {} FROM {table}", cols.join(", ")))
}

/// The table's columns (with types and nullability), indexes and constraints, as text: the
/// rollback must leave exactly what was there before the plan.
fn structure(db: &TestDb, schema: &str, table: &str) -> Vec<Vec<String>> {
    let sl = |s: &str| format!("'{}'", s.replace('\'', "''"));
    match db.engine {
        Engine::Postgres => {
            let rel = sl(&db.qt(schema, table));
            let mut rows = query(
                db,
                &format!(
                    "SELECT 'column', attname, format_type(atttypid, atttypmod), attnotnull::text \
                     FROM pg_attribute WHERE attrelid = {rel}::regclass AND attnum > 0 AND NOT attisdropped"
                ),
            );
            rows.extend(query(
                db,
                &format!(
                    "SELECT 'index', c.relname, pg_get_indexdef(i.indexrelid), '' FROM pg_index i \
                     JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = {rel}::regclass"
                ),
            ));
            rows.extend(query(
                db,
                &format!(
                    "SELECT 'constraint', conname, pg_get_constraintdef(oid), '' FROM pg_constraint \
                     WHERE conrelid = {rel}::regclass"
                ),
            ));
            rows
        }
        Engine::MySql => {
            let mut rows = query(
                db,
                &format!(
                    "SELECT 'column', COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, EXTRA FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                    sl(&db.name),
                    sl(table)
                ),
            );
            rows.extend(query(
                db,
                &format!(
                    "SELECT 'index', INDEX_NAME, COLUMN_NAME, SEQ_IN_INDEX, NON_UNIQUE FROM information_schema.STATISTICS \
                     WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                    sl(&db.name),
                    sl(table)
                ),
            ));
            rows
        }
        Engine::Sqlite => query(
            db,
            &format!(
                "SELECT type, name, replace(sql, char(10), ' ') FROM sqlite_master \
                 WHERE tbl_name = {} AND name NOT LIKE 'sqlite_autoindex%'",
                sl(table)
            ),
        ),
    }
}

/// The message with which the engine rejects a duplicate key.
fn unique_violation(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "duplicate key value violates unique constraint",
        Engine::MySql => "Duplicate entry",
        Engine::Sqlite => "UNIQUE constraint failed",
    }
}

fn assert_rejected_as_duplicate(db: &TestDb, insert: &str) {
    let run = try_sql(db, insert);
    assert_ne!(
        run.code,
        0,
        "the database accepted a new duplicate of the natural key\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains(unique_violation(db.engine)),
        "the insert failed, but not as a duplicate key\n{}",
        run.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Expectations from the fixture

fn index_of(columns: &[String], name: &str) -> usize {
    columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("test: {name:?} is not one of the snapshot columns {columns:?}"))
}

fn key_of(row: &[String], key: &[usize]) -> Vec<String> {
    key.iter().map(|&i| row[i].clone()).collect()
}

/// Which row of a group the survivor rule keeps.
#[derive(Clone, Debug)]
enum Keep {
    /// `latest:COL`: the greatest value (timestamps compare as text).
    Latest(String),
    /// `earliest:COL`: the smallest value.
    Earliest(String),
    /// `lowest_surrogate`: the smallest integer in this column.
    Lowest(String),
}

impl Keep {
    fn column(&self) -> &str {
        match self {
            Keep::Latest(c) | Keep::Earliest(c) | Keep::Lowest(c) => c,
        }
    }
}

/// One row per natural key: the one the survivor rule keeps (unique within its group by the
/// fixture's construction).
fn survivors(rows: &[Vec<String>], key: &[usize], keep: &Keep, at: usize) -> Vec<Vec<String>> {
    // Larger is better.
    let rank = |r: &Vec<String>| -> (i64, String) {
        match keep {
            Keep::Latest(_) => (0, r[at].clone()),
            Keep::Earliest(_) => (0, String::new()),
            Keep::Lowest(_) => (
                -r[at]
                    .parse::<i64>()
                    .unwrap_or_else(|_| panic!("fixture: surrogate {:?} is not an integer", r[at])),
                String::new(),
            ),
        }
    };
    let mut groups: BTreeMap<Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
    for r in rows {
        groups.entry(key_of(r, key)).or_default().push(r);
    }
    let mut out: Vec<Vec<String>> = groups
        .values()
        .map(|g| {
            let winners: Vec<&Vec<String>> = match keep {
                Keep::Earliest(_) => {
                    let best = g.iter().map(|r| &r[at]).min().expect("non-empty group");
                    g.iter().copied().filter(|r| &r[at] == best).collect()
                }
                _ => {
                    let best = g.iter().map(|r| rank(r)).max().expect("non-empty group");
                    g.iter().copied().filter(|r| rank(r) == best).collect()
                }
            };
            assert_eq!(
                winners.len(),
                1,
                "fixture: the survivor column ties within a group: {g:?}"
            );
            winners[0].clone()
        })
        .collect();
    out.sort();
    out
}

/// `a` minus `b`, as multisets (both sorted).
fn minus(a: &[Vec<String>], b: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut counts: BTreeMap<&Vec<String>, i64> = BTreeMap::new();
    for r in b {
        *counts.entry(r).or_default() += 1;
    }
    let mut out = Vec::new();
    for r in a {
        match counts.get_mut(r) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(r.clone()),
        }
    }
    out
}

fn sorted(mut v: Vec<Vec<String>>) -> Vec<Vec<String>> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// The proof

/// One table to plan and prove.
struct Case<'a> {
    db: &'a TestDb,
    /// The schema on PostgreSQL (ignored elsewhere).
    pg_schema: &'a str,
    table: &'a str,
    /// The `--table` argument of `natkey plan`.
    table_arg: String,
    /// Every column of the table, as the fixture created it.
    columns: Vec<String>,
    key: Vec<String>,
    /// The row the survivor rule keeps.
    keep: Keep,
    /// Rows and excess rows, from the fixture's construction.
    rows: i64,
    excess: i64,
    /// A `natkey.toml` for the audit.
    config: Option<String>,
    /// Plan as if the audited server were this version (`server_version` of the report).
    server_version: Option<&'a str>,
    /// INSERTs of a key that already exists: the database must reject each after the plan.
    duplicates: Vec<String>,
    /// `natkey plan --batch-rows`: where the engine cleans up in batches, this many rows each.
    batch_rows: Option<u64>,
}

/// What a proof leaves for further checks.
struct Proof {
    plan: String,
    backup: String,
    structure_after_plan: Vec<Vec<String>>,
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The backup table the plan creates, as the script names it (quoted, qualified).
fn backup_name(db: &TestDb, plan: &str) -> String {
    let line = plan
        .lines()
        .find(|l| l.starts_with("CREATE TABLE IF NOT EXISTS "))
        .unwrap_or_else(|| panic!("the plan creates no backup table\n{plan}"));
    let rest = &line["CREATE TABLE IF NOT EXISTS ".len()..];
    let end = rest
        .find(" AS SELECT ")
        .unwrap_or_else(|| panic!("unexpected backup statement: {line}"));
    let name = rest[..end].to_string();
    let expected_prefix = match db.engine {
        Engine::Postgres => "\"natkey_backup\".\"",
        Engine::MySql => "`natkey_backup`.`",
        Engine::Sqlite => "\"natkey_backup__",
    };
    assert!(
        name.starts_with(expected_prefix),
        "the backup table {name} is not in natkey_backup"
    );
    name
}

/// Audits the warehouse, writes the plan and its rollback from the saved report, runs them
/// with the engine's client and checks every promise of the plan.
fn prove(case: &Case) -> Proof {
    let db = case.db;
    let qt = db.qt(case.pg_schema, case.table);
    let key: Vec<usize> = case
        .key
        .iter()
        .map(|k| index_of(&case.columns, k))
        .collect();
    let at = index_of(&case.columns, case.keep.column());

    // Before: the fixture's rows and the table's structure.
    let before = snapshot(db, &qt, &case.columns);
    assert_eq!(before.len() as i64, case.rows, "fixture: row count");
    let structure_before = structure(db, case.pg_schema, case.table);
    let expected_after = survivors(&before, &key, &case.keep, at);
    assert_eq!(
        expected_after.len() as i64,
        case.rows - case.excess,
        "fixture: rows - excess_rows = number of natural keys"
    );
    let expected_backup = minus(&before, &expected_after);

    // Audit, plan and rollback from the saved report.
    let mut audit_args = Vec::new();
    if let Some(cfg) = &case.config {
        audit_args.extend(["--config", cfg.as_str()]);
    }
    let audit = db.audit(&audit_args);
    assert_eq!(
        audit.code,
        1,
        "audit should find duplicates\n{}",
        audit.describe()
    );
    let mut report_json: serde_json::Value =
        serde_json::from_str(&audit.stdout).expect("the audit prints a JSON report");
    if let Some(version) = case.server_version {
        report_json["server_version"] = version.into();
    }
    let report = db.write_file("report.json", &report_json.to_string());
    let batch_rows = case.batch_rows.map(|b| b.to_string());
    let mut plan_args = vec!["plan", "--report", &report, "--table", &case.table_arg];
    if let Some(b) = &batch_rows {
        plan_args.extend(["--batch-rows", b.as_str()]);
    }
    let plan_run = natkey(&db.dir, &plan_args, &[]);
    assert_eq!(
        plan_run.code,
        0,
        "natkey plan failed\n{}",
        plan_run.describe()
    );
    plan_args.push("--rollback");
    let rollback_run = natkey(&db.dir, &plan_args, &[]);
    assert_eq!(
        rollback_run.code,
        0,
        "natkey plan --rollback failed\n{}",
        rollback_run.describe()
    );
    // MySQL/MariaDB clean up in batches when there are more excess rows than a batch holds.
    let batched = db.engine == Engine::MySql
        && case.excess as u64 > case.batch_rows.unwrap_or(natkey::plan::DEFAULT_BATCH_ROWS);
    assert_eq!(
        plan_run.stdout.contains("CALL "),
        batched,
        "batched cleanup expected: {batched}\n{}",
        plan_run.stdout
    );
    let plan_path = db.write_file("plan.sql", &plan_run.stdout);
    let rollback_path = db.write_file("rollback.sql", &rollback_run.stdout);
    let backup = backup_name(db, &plan_run.stdout);
    if db.engine == Engine::MySql {
        // natkey_backup is shared by every test on the server.
        db.on_drop(format!("DROP TABLE IF EXISTS {backup}"));
    }

    // The plan, run as an admin.
    run_script(db, &plan_path).ok();
    let after = snapshot(db, &qt, &case.columns);
    assert_eq!(
        after.len() as i64,
        case.rows - case.excess,
        "rows after the cleanup = rows - excess_rows"
    );
    let keys_before: BTreeSet<Vec<String>> = before.iter().map(|r| key_of(r, &key)).collect();
    let keys_after: BTreeSet<Vec<String>> = after.iter().map(|r| key_of(r, &key)).collect();
    assert_eq!(keys_after, keys_before, "the set of natural keys changed");
    assert_eq!(
        after, expected_after,
        "the cleanup did not keep the survivor rule's row ({:?}) of each group",
        case.keep
    );
    let backed_up = snapshot(db, &backup, &case.columns);
    assert_eq!(
        backed_up, expected_backup,
        "the backup does not hold exactly the removed rows"
    );
    assert_eq!(
        sorted([after.clone(), backed_up.clone()].concat()),
        before,
        "rows lost: kept + backed up != original"
    );
    for insert in &case.duplicates {
        assert_rejected_as_duplicate(db, insert);
    }
    let structure_after_plan = structure(db, case.pg_schema, case.table);

    // A second run succeeds and changes nothing.
    run_script(db, &plan_path).ok();
    assert_eq!(
        snapshot(db, &qt, &case.columns),
        after,
        "a second run of the plan changed the table"
    );
    assert_eq!(
        snapshot(db, &backup, &case.columns),
        backed_up,
        "a second run of the plan changed the backup"
    );
    assert_eq!(
        structure(db, case.pg_schema, case.table),
        structure_after_plan,
        "a second run of the plan changed the table's structure"
    );

    // The rollback restores the original rows exactly, and only once.
    run_script(db, &rollback_path).ok();
    assert_eq!(
        snapshot(db, &qt, &case.columns),
        before,
        "the rollback did not restore the original rows"
    );
    assert!(
        snapshot(db, &backup, &case.columns).is_empty(),
        "the rollback leaves rows in the backup"
    );
    assert_eq!(
        structure(db, case.pg_schema, case.table),
        structure_before,
        "the rollback did not restore the table's structure (constraint, index, columns)"
    );
    run_script(db, &rollback_path).ok();
    assert_eq!(
        snapshot(db, &qt, &case.columns),
        before,
        "a second rollback changed the table (restored rows twice?)"
    );

    // The plan once more, then its load template: a retry of a load whose source holds keys
    // already loaded (every one, NULL keys included, with their retried copies) and keys
    // that are missing, run twice, leaves one row per natural key.
    run_script(db, &plan_path).ok();
    assert_eq!(
        snapshot(db, &qt, &case.columns),
        after,
        "the plan rerun after the rollback"
    );
    load_template_converges(db, case, &qt, &plan_run.stdout, &backup, &key, &after);
    Proof {
        plan: plan_run.stdout,
        backup,
        structure_after_plan,
    }
}

/// The load template of a plan (step "Idempotent load task"), uncommented.
fn load_template(plan: &str) -> String {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in plan.lines() {
        if let Some(title) = step_title(line) {
            inside = title.starts_with("Idempotent load task");
        } else if inside && let Some(sql) = line.strip_prefix("--   ") {
            lines.push(sql);
        }
    }
    assert!(!lines.is_empty(), "the plan has no load template\n{plan}");
    lines.join("\n")
}

/// The staging relation the template reads (`"staging_..."`, quoted as the engine quotes).
fn staging_name(template: &str) -> String {
    let at = template
        .find("\"staging_")
        .or_else(|| template.find("`staging_"))
        .unwrap_or_else(|| panic!("the template reads no staging relation\n{template}"));
    let quote = &template[at..at + 1];
    let end = template[at + 1..]
        .find(quote)
        .unwrap_or_else(|| panic!("unterminated name in\n{template}"));
    template[at..at + end + 2].to_string()
}

/// Stages every row of the cleaned table (each natural key once) — for append-only facts
/// also the removed copies from the backup, so keys repeat — deletes every third key from the
/// table, and runs the load template twice. The table must end with exactly one row per
/// natural key of the fixture, and the rows the load did not need to write unchanged.
fn load_template_converges(
    db: &TestDb,
    case: &Case,
    qt: &str,
    plan: &str,
    backup: &str,
    key: &[usize],
    after: &[Vec<String>],
) {
    let template = load_template(plan);
    let staging = staging_name(&template);
    let cols: Vec<String> = case.columns.iter().map(|c| db.q(c)).collect();
    let cols = cols.join(", ");
    let updates = template.contains("DO UPDATE") || template.contains("VALUES(");
    let mut setup = format!(
        "CREATE TABLE {staging} AS SELECT {cols} FROM {qt} WHERE 1 = 0;\n\
         INSERT INTO {staging} ({cols}) SELECT {cols} FROM {qt};\n"
    );
    if !updates {
        setup.push_str(&format!(
            "INSERT INTO {staging} ({cols}) SELECT {cols} FROM {backup};\n"
        ));
    }
    let missing: Vec<&Vec<String>> = after.iter().step_by(3).take(40).collect();
    let predicates: Vec<String> = missing
        .iter()
        .map(|row| {
            let parts: Vec<String> = key
                .iter()
                .map(|&i| {
                    let column = db.q(&case.columns[i]);
                    match row[i].as_str() {
                        "NULL" => format!("{column} IS NULL"),
                        value => format!("{column} = {}", lit(value)),
                    }
                })
                .collect();
            format!("({})", parts.join(" AND "))
        })
        .collect();
    setup.push_str(&format!(
        "DELETE FROM {qt} WHERE {};\n",
        predicates.join(" OR ")
    ));
    let path = db.write_file("load-setup.sql", &setup);
    run_script(db, &path).ok();
    if db.engine == Engine::MySql {
        db.on_drop(format!("DROP TABLE IF EXISTS {staging}"));
    }
    assert_eq!(
        snapshot(db, qt, &case.columns).len(),
        after.len() - missing.len(),
        "test: the setup deleted one row per missing key"
    );
    let missing_keys: BTreeSet<Vec<String>> = missing.iter().map(|r| key_of(r, key)).collect();
    let untouched: Vec<Vec<String>> = after
        .iter()
        .filter(|r| !missing_keys.contains(&key_of(r, key)))
        .cloned()
        .collect();
    let key_cols: Vec<String> = case.key.iter().map(|k| db.q(k)).collect();
    let key_cols = key_cols.join(", ");
    let path = db.write_file("load.sql", &format!("{template};\n"));
    for run in 1..=2 {
        run_script(db, &path).ok();
        let rows = snapshot(db, qt, &case.columns);
        assert_eq!(
            rows.len() as i64,
            case.rows - case.excess,
            "load run {run}: rows != one per natural key\n{template}"
        );
        assert_eq!(
            query(
                db,
                &format!(
                    "SELECT count(*) FROM (SELECT {key_cols} FROM {qt} GROUP BY {key_cols} HAVING count(*) > 1) natkey_g"
                )
            ),
            vec![vec!["0".to_string()]],
            "load run {run}: a duplicate group appeared\n{template}"
        );
        let keys: BTreeSet<Vec<String>> = rows.iter().map(|r| key_of(r, key)).collect();
        let expected: BTreeSet<Vec<String>> = after.iter().map(|r| key_of(r, key)).collect();
        assert_eq!(keys, expected, "load run {run}: the set of natural keys");
        let kept: Vec<Vec<String>> = rows
            .iter()
            .filter(|r| !missing_keys.contains(&key_of(r, key)))
            .cloned()
            .collect();
        assert_eq!(
            kept, untouched,
            "load run {run}: rows already loaded were changed\n{template}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn daily_orders_case<'a>(
    db: &'a TestDb,
    pg_schema: &'a str,
    e: &crate::expect::Expected,
) -> Case<'a> {
    let t = db.qt(pg_schema, "daily_orders");
    // (1300, 1) was loaded twice (the 4th day), (1000, 1) once (the 1st day): both a key of a
    // former duplicate group and a key loaded once must be rejected.
    Case {
        db,
        pg_schema,
        table: "daily_orders",
        table_arg: "daily_orders".into(),
        columns: columns(&fixtures::DAILY_ORDERS_COLUMNS),
        key: columns(&["order_id", "line_item_id"]),
        keep: Keep::Latest("loaded_at".into()),
        rows: e.rows,
        excess: e.excess,
        config: None,
        server_version: None,
        batch_rows: None,
        duplicates: vec![
            format!(
                "INSERT INTO {t} (order_id, line_item_id, order_date, customer_id, quantity, amount_cents) \
                 VALUES (1000, 1, '2026-11-01', 1, 1, 1)"
            ),
            format!(
                "INSERT INTO {t} (order_id, line_item_id, order_date, customer_id, quantity, amount_cents) \
                 VALUES (1300, 1, '2026-11-04', 1, 1, 1)"
            ),
        ],
    }
}

async fn retried_daily_load(db: &TestDb) {
    let (sql, e) = fixtures::daily_orders(
        db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    // Day 4 twice, day 8 three times.
    assert!(e.excess > 0 && e.exact == e.dup_groups);
    prove(&daily_orders_case(db, "sales", &e));
}

async fn conflicting_summary(db: &TestDb, rule: &str, keep: Keep) {
    let (sql, e) = fixtures::revenue_summary(db, "finance", "daily_revenue_summary", false);
    db.exec(&sql).await;
    assert_eq!((e.dup_groups, e.conflicting, e.excess), (6, 3, 7));
    let name = match db.engine {
        Engine::Postgres => "finance.daily_revenue_summary",
        _ => "daily_revenue_summary",
    };
    let config = db.write_file(
        "natkey.toml",
        &fixtures::revenue_summary_config_with(name, "gross_cents", rule),
    );
    let t = db.qt("finance", "daily_revenue_summary");
    prove(&Case {
        db,
        pg_schema: "finance",
        table: "daily_revenue_summary",
        table_arg: "daily_revenue_summary".into(),
        columns: columns(&[
            "summary_id",
            "revenue_date",
            "gross_cents",
            "order_count",
            "computed_at",
        ]),
        key: columns(&["revenue_date"]),
        keep,
        rows: e.rows,
        excess: e.excess,
        config: Some(config),
        server_version: None,
        batch_rows: None,
        duplicates: vec![
            // Day 15 (2026-10-16) held three conflicting rows; day 0 one.
            format!(
                "INSERT INTO {t} (revenue_date, gross_cents, order_count, computed_at) \
                 VALUES ('2026-10-16', 1, 1, '2026-10-20 00:00:00')"
            ),
            format!(
                "INSERT INTO {t} (revenue_date, gross_cents, order_count, computed_at) \
                 VALUES ('2026-10-01', 1, 1, '2026-10-20 00:00:00')"
            ),
        ],
    });
}

/// `UNIQUE (account_id, region)` with region nullable, and no surrogate key: (1, NULL) twice
/// with equal payload, (2, NULL) three times with credit limits 100, 250, 100 where the 250 is
/// the latest `updated_at` (neither first nor last inserted), plus rows that are unique.
async fn nullable_unique_key(db: &TestDb, server_version: Option<&str>) -> Proof {
    let data: [(i64, Option<&str>, i64, &str); 10] = [
        (1, Some("eu"), 1000, "2026-11-01 08:00:00"),
        (2, None, 100, "2026-11-01 08:00:00"),
        (1, Some("us"), 1200, "2026-11-01 08:00:00"),
        (1, None, 500, "2026-11-01 09:00:00"),
        (2, None, 250, "2026-11-03 08:00:00"),
        (3, Some("eu"), 800, "2026-11-01 08:00:00"),
        (3, None, 900, "2026-11-01 08:00:00"),
        (1, None, 500, "2026-11-02 09:00:00"),
        (2, None, 100, "2026-11-02 08:00:00"),
        (4, Some("apac"), 700, "2026-11-01 08:00:00"),
    ];
    let keys: BTreeSet<(i64, Option<&str>)> = data.iter().map(|(a, r, _, _)| (*a, *r)).collect();
    let (rows, excess) = (data.len() as i64, (data.len() - keys.len()) as i64);
    assert_eq!((rows, excess), (10, 3));
    let ts = match db.engine {
        Engine::MySql => "datetime",
        _ => "timestamp",
    };
    let t = db.qt("crm", "account_regions");
    let values: Vec<String> = data
        .iter()
        .map(|(a, r, c, u)| {
            format!(
                "({a}, {}, {c}, {})",
                r.map(lit).unwrap_or_else(|| "NULL".into()),
                lit(u)
            )
        })
        .collect();
    db.exec(&format!(
        "{}CREATE TABLE {t} (account_id bigint NOT NULL, region varchar(20), credit_limit bigint NOT NULL, \
         updated_at {ts} NOT NULL, UNIQUE (account_id, region));\n\
         INSERT INTO {t} (account_id, region, credit_limit, updated_at) VALUES {};\n",
        db.create_schema("crm"),
        values.join(", ")
    ))
    .await;
    prove(&Case {
        db,
        pg_schema: "crm",
        table: "account_regions",
        table_arg: "account_regions".into(),
        columns: columns(&["account_id", "region", "credit_limit", "updated_at"]),
        key: columns(&["account_id", "region"]),
        keep: Keep::Latest("updated_at".into()),
        rows,
        excess,
        config: None,
        server_version,
        batch_rows: None,
        duplicates: vec![
            // A NULL key that was duplicated, one that was unique, and a non-NULL key.
            format!(
                "INSERT INTO {t} (account_id, region, credit_limit, updated_at) VALUES (2, NULL, 1, '2026-12-01 00:00:00')"
            ),
            format!(
                "INSERT INTO {t} (account_id, region, credit_limit, updated_at) VALUES (3, NULL, 1, '2026-12-01 00:00:00')"
            ),
            format!(
                "INSERT INTO {t} (account_id, region, credit_limit, updated_at) VALUES (1, 'eu', 1, '2026-12-01 00:00:00')"
            ),
        ],
    })
}

/// `fixtures::hostile`: the schema, table and columns have spaces, double quotes, a semicolon
/// and markup (MariaDB: a backtick in the amount column).
async fn hostile_names(db: &TestDb) {
    let (sql, e) = fixtures::hostile(db);
    db.exec(&sql).await;
    let amount = fixtures::hostile_amount(db);
    let t = db.qt(fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE);
    let table_arg = match db.engine {
        Engine::Postgres => format!("{}.{}", fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE),
        _ => fixtures::HOSTILE_TABLE.to_string(),
    };
    let proof = prove(&Case {
        db,
        pg_schema: fixtures::HOSTILE_SCHEMA,
        table: fixtures::HOSTILE_TABLE,
        table_arg,
        columns: columns(&["row id", fixtures::HOSTILE_KEY, amount, "loaded_at"]),
        key: columns(&[fixtures::HOSTILE_KEY]),
        keep: Keep::Latest("loaded_at".into()),
        rows: e.rows,
        excess: e.excess,
        config: None,
        server_version: None,
        batch_rows: None,
        duplicates: [9001, 9007, 9030]
            .iter()
            .map(|k| {
                format!(
                    "INSERT INTO {t} ({}, {}) VALUES ({k}, 1)",
                    db.q(fixtures::HOSTILE_KEY),
                    db.q(amount)
                )
            })
            .collect(),
    });
    // natkey names its own objects with letters, digits and underscores only.
    let inner = proof
        .backup
        .rsplit(['.', '`', '"'])
        .find(|p| !p.is_empty())
        .unwrap_or_default();
    assert!(
        inner.starts_with("natkey_backup__") || db.engine != Engine::Sqlite,
        "backup {}",
        proof.backup
    );
    assert!(
        !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "the backup table of a hostile table should get a sanitized name: {}",
        proof.backup
    );
}

/// A table whose name holds a newline followed by SQL: the plan's comments (header, step
/// notes) must not let that line escape and run. (`DELETE`, not `DROP`: the injected line
/// succeeds on every run, so the whole proof completes and the damage is checked at the end.)
async fn newline_in_table_name(db: &TestDb) {
    let name = "orders\nDELETE FROM victim; --";
    let t = db.qt("public", name);
    let mut sql = String::from("CREATE TABLE victim (x int);\nINSERT INTO victim VALUES (1);\n");
    let ts = "timestamp";
    sql.push_str(&format!(
        "CREATE TABLE {t} (order_id bigint NOT NULL, amount_cents bigint NOT NULL, loaded_at {ts} NOT NULL);\n"
    ));
    let mut values = Vec::new();
    let mut keys = BTreeSet::new();
    for i in 1..=30i64 {
        let copies = if i % 5 == 0 { 2 } else { 1 };
        for k in 0..copies {
            values.push(format!(
                "({}, {}, '2026-11-02 03:{k:02}:{:02}')",
                500 + i,
                [990, 1500, 2500][(i % 3) as usize],
                i % 60
            ));
        }
        keys.insert(i);
    }
    sql.push_str(&format!(
        "INSERT INTO {t} (order_id, amount_cents, loaded_at) VALUES {};\n",
        values.join(", ")
    ));
    db.exec(&sql).await;
    let rows = values.len() as i64;
    let config = db.write_file(
        "natkey.toml",
        &format!(
            "[[table]]\nname = {}\nnatural_key = [\"order_id\"]\n",
            toml_str(name).replace('\n', "\\n")
        ),
    );
    let victim_intact = || query(db, "SELECT count(*) FROM victim") == vec![vec!["1".to_string()]];
    prove(&Case {
        db,
        pg_schema: "public",
        table: name,
        table_arg: name.to_string(),
        columns: columns(&["order_id", "amount_cents", "loaded_at"]),
        key: columns(&["order_id"]),
        keep: Keep::Latest("loaded_at".into()),
        rows,
        excess: rows - keys.len() as i64,
        config: Some(config),
        server_version: None,
        batch_rows: None,
        duplicates: vec![format!(
            "INSERT INTO {t} (order_id, amount_cents, loaded_at) VALUES (505, 1, '2026-12-01 00:00:00')"
        )],
    });
    assert!(
        victim_intact(),
        "running the plan emptied the table `victim`: the newline in the table name ended a \
         comment of the plan and the rest of the name ran as SQL"
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn postgres_plan_removes_retried_copies_keeps_the_latest_and_rolls_back_exactly() {
    let db = TestDb::postgres().await;
    retried_daily_load(&db).await;
}

#[tokio::test]
async fn postgres_plan_keeps_the_latest_computed_row_of_conflicting_summary_groups() {
    let db = TestDb::postgres().await;
    conflicting_summary(
        &db,
        "latest:computed_at",
        Keep::Latest("computed_at".into()),
    )
    .await;
}

#[tokio::test]
async fn postgres_plan_keeps_the_earliest_computed_row_under_an_earliest_rule() {
    let db = TestDb::postgres().await;
    conflicting_summary(
        &db,
        "earliest:computed_at",
        Keep::Earliest("computed_at".into()),
    )
    .await;
}

#[tokio::test]
async fn postgres_plan_makes_duplicate_null_keys_of_a_nullable_unique_key_collide() {
    let db = TestDb::postgres().await;
    nullable_unique_key(&db, None).await;
}

/// PostgreSQL before 15 has no NULLS NOT DISTINCT: the plan for a report of a 14 server must
/// make NULL keys collide another way (an index on the NULL-replaced value and an IS NULL
/// flag), and that plan runs on this server too.
#[tokio::test]
async fn postgres_14_plan_makes_duplicate_null_keys_collide_through_an_index_on_expressions() {
    let db = TestDb::postgres().await;
    let proof = nullable_unique_key(&db, Some("140011")).await;
    assert!(
        !proof.plan.contains("NULLS NOT DISTINCT") && proof.plan.contains("COALESCE("),
        "a plan for PostgreSQL 14 cannot use NULLS NOT DISTINCT\n{}",
        proof.plan
    );
    assert!(
        !proof.plan.contains("SET NOT NULL"),
        "rows with a NULL key are legitimate facts: the plan must not require NOT NULL\n{}",
        proof.plan
    );
}

#[tokio::test]
async fn postgres_plan_quotes_hostile_schema_table_and_column_names() {
    let db = TestDb::postgres().await;
    hostile_names(&db).await;
}

#[tokio::test]
async fn postgres_plan_comments_cannot_be_escaped_by_a_newline_in_a_table_name() {
    let db = TestDb::postgres().await;
    newline_in_table_name(&db).await;
}

#[tokio::test]
async fn postgres_plan_for_a_partitioned_table_cleans_every_partition_and_enforces_the_key() {
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
    // Order 1100 (day 2026-10-20, loaded twice) and order 1000 (loaded once), line 1 each.
    let insert = |order: i64, day: &str| {
        format!(
            "INSERT INTO sales.orders_partitioned (order_id, line_item_id, order_date, customer_id, quantity, amount_cents) \
             VALUES ({order}, 1, '{day}', 1, 1, 1)"
        )
    };
    let proof = prove(&Case {
        db: &db,
        pg_schema: "sales",
        table: "orders_partitioned",
        table_arg: "sales.orders_partitioned".into(),
        columns: columns(&fixtures::DAILY_ORDERS_PAYLOAD)
            .into_iter()
            .chain(["loaded_at".to_string()])
            .collect(),
        key: columns(&["order_id", "line_item_id"]),
        keep: Keep::Latest("loaded_at".into()),
        rows: e.rows,
        excess: e.excess,
        config: None,
        server_version: None,
        batch_rows: None,
        duplicates: vec![insert(1100, "2026-10-20"), insert(1000, "2026-10-05")],
    });
    assert!(
        proof.plan.contains("partitioned"),
        "the plan should say the table is partitioned"
    );
    // prove() ended with the rollback: run the plan once more, then every partition is clean.
    let path = db.write_file("partitioned-again.sql", &proof.plan);
    let run = run_script(&db, &path);
    assert_eq!(run.code, 0, "{}", run.describe());
    // Lock-safe: every partition's index is built CONCURRENTLY and attached to the parent's,
    // and the parent's is then valid.
    assert!(
        proof.plan.contains("ON ONLY") && proof.plan.contains("ATTACH PARTITION"),
        "the plan should build the partitions' indexes one by one and attach them\n{}",
        proof.plan
    );
    let partition_indexes = || {
        query(
            &db,
            "SELECT c.relname, x.relname, i.indisvalid::text, i.indisunique::text \
             FROM pg_inherits a JOIN pg_index i ON i.indexrelid = a.inhrelid \
             JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid \
             WHERE a.inhparent = 'sales.orders_partitioned__natural_key'::regclass",
        )
    };
    let attached = partition_indexes();
    assert_eq!(
        attached
            .iter()
            .map(|r| (r[0].as_str(), r[2].as_str(), r[3].as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("orders_partitioned_2026_10", "true", "true"),
            ("orders_partitioned_2026_11", "true", "true"),
            ("orders_partitioned_2026_12", "true", "true"),
        ],
        "each partition has a valid unique index attached to the parent's"
    );
    let parent_valid = || {
        query(
            &db,
            "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'sales.orders_partitioned__natural_key'::regclass",
        )
    };
    assert_eq!(parent_valid(), vec![vec!["true".to_string()]]);
    // An interrupted run: the parent's index is there, one partition's is an INVALID leftover
    // (wrong definition) and not attached. The plan drops the leftover and finishes the job.
    let leftover = &attached[1][1];
    db.exec(&format!(
        "DROP INDEX sales.orders_partitioned__natural_key;\n\
         CREATE UNIQUE INDEX orders_partitioned__natural_key ON ONLY sales.orders_partitioned (order_id, line_item_id, order_date);\n\
         CREATE INDEX \"{leftover}\" ON sales.orders_partitioned_2026_11 (customer_id);\n\
         UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'sales.\"{leftover}\"'::regclass;"
    ))
    .await;
    assert_eq!(parent_valid(), vec![vec!["false".to_string()]]);
    run_script(&db, &path).ok();
    assert_eq!(
        partition_indexes(),
        attached,
        "the rerun rebuilt the indexes"
    );
    assert_eq!(parent_valid(), vec![vec!["true".to_string()]]);
    for p in ["2026_10", "2026_11", "2026_12"] {
        assert_eq!(
            query(
                &db,
                &format!(
                    "SELECT count(*) FROM (SELECT 1 FROM sales.orders_partitioned_{p} \
                     GROUP BY order_id, line_item_id HAVING count(*) > 1) g"
                )
            ),
            vec![vec!["0".to_string()]]
        );
    }
}

/// An interrupted `CREATE INDEX CONCURRENTLY` leaves an INVALID index under the plan's name;
/// the plan must drop it and build the index again (an `IF NOT EXISTS` alone would keep the
/// useless one and the constraint could not be added).
#[tokio::test]
async fn postgres_plan_drops_an_invalid_index_left_by_an_interrupted_run_and_builds_it_again() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    let audit = db.audit(&[]);
    assert_eq!(audit.code, 1, "{}", audit.describe());
    let report = db.write_file("report.json", &audit.stdout);
    let run = natkey(
        &db.dir,
        &["plan", "--report", &report, "--table", "sales.daily_orders"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let index = "daily_orders__natural_key";
    assert!(
        run.stdout
            .contains(&format!("CONCURRENTLY IF NOT EXISTS \"{index}\"")),
        "the plan's index is named {index}\n{}",
        run.stdout
    );
    // The leftover: same name, wrong definition, marked invalid (as an interrupted build is).
    db.exec(&format!(
        "CREATE INDEX \"{index}\" ON sales.daily_orders (customer_id);\n\
         UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'sales.\"{index}\"'::regclass;"
    ))
    .await;
    let path = db.write_file("plan.sql", &run.stdout);
    run_script(&db, &path).ok();
    let definition = query(
        &db,
        &format!(
            "SELECT i.indisvalid::text, i.indisunique::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indexrelid = 'sales.\"{index}\"'::regclass"
        ),
    );
    assert_eq!(definition.len(), 1, "{definition:?}");
    assert_eq!(
        definition[0][..2],
        ["true".to_string(), "true".to_string()],
        "the index is not valid and unique: {definition:?}"
    );
    assert!(
        definition[0][2].ends_with("(order_id, line_item_id)"),
        "the leftover was kept: {definition:?}"
    );
    assert_eq!(
        query(&db, "SELECT count(*) FROM sales.daily_orders"),
        vec![vec![(e.rows - e.excess).to_string()]]
    );
    for insert in &daily_orders_case(&db, "sales", &e).duplicates {
        assert_rejected_as_duplicate(&db, insert);
    }
}

/// `--dedupe-job` on audit and plan: the dedupe job some team wrote says the natural key and
/// which row to keep (here the earliest, not natkey's default); `--task-sql`: the plan carries
/// the user's load task rewritten to be idempotent, and that task converges when run twice
/// after the plan.
#[tokio::test]
async fn plan_learns_the_key_from_a_dedupe_job_and_carries_the_rewritten_task() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::revenue_summary(&db, "finance", "daily_revenue_summary", false);
    db.exec(&sql).await;
    assert_eq!((e.dup_groups, e.conflicting, e.excess), (6, 3, 7));
    let dedupe = db.write_file(
        "dedupe_revenue.sql",
        "-- the nightly cleanup
         DELETE FROM finance.daily_revenue_summary WHERE summary_id IN (
           SELECT summary_id FROM (
             SELECT summary_id, ROW_NUMBER() OVER (
               PARTITION BY revenue_date ORDER BY computed_at ASC) AS rn
             FROM finance.daily_revenue_summary) ranked
           WHERE rn > 1);
",
    );
    let report = db.report(&["--dedupe-job", &dedupe], 1);
    let t = crate::common::table(&report, "finance", "daily_revenue_summary");
    assert_eq!(t["natural_key"]["source"], "dedupe_job", "{t:#}");
    assert_eq!(
        t["natural_key"]["columns"],
        serde_json::json!(["revenue_date"])
    );
    assert_eq!(t["survivor"], "earliest:computed_at", "{t:#}");
    assert_eq!(t["excess_rows"], e.excess);

    let task = db.write_file(
        "load_revenue.sql",
        "INSERT INTO finance.daily_revenue_summary (revenue_date, gross_cents, order_count, computed_at)
         SELECT revenue_date, gross_cents, order_count, computed_at FROM staging.revenue;
",
    );
    let url = db.url();
    let run = natkey(
        &db.dir,
        &[
            "plan",
            "--warehouse",
            &url,
            "--table",
            "finance.daily_revenue_summary",
            "--dedupe-job",
            &dedupe,
            "--task-sql",
            &task,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let plan = &run.stdout;
    for needle in [
        "natural key: (revenue_date) from dedupe_job",
        "survivor rule: earliest:computed_at",
        "\"computed_at\" ASC",
        "load_revenue.sql",
    ] {
        assert!(plan.contains(needle), "the plan lacks {needle:?}\n{plan}");
    }
    let rewritten = load_template(plan);
    assert!(
        rewritten.contains("FROM staging.revenue")
            && rewritten.contains("ON CONFLICT (\"revenue_date\") DO NOTHING"),
        "the plan should carry the user's task, made idempotent on the natural key\n{rewritten}"
    );

    // The plan, then the rewritten task twice over a source holding a day already loaded and
    // a new day: one row per day.
    let path = db.write_file("plan.sql", plan);
    run_script(&db, &path).ok();
    let days = || {
        query(
            &db,
            "SELECT count(*), count(DISTINCT revenue_date) FROM finance.daily_revenue_summary",
        )
    };
    let keys = e.rows - e.excess;
    assert_eq!(days(), vec![vec![keys.to_string(), keys.to_string()]]);
    db.exec(
        "CREATE SCHEMA staging;
         CREATE TABLE staging.revenue AS SELECT revenue_date, gross_cents, order_count, computed_at          FROM finance.daily_revenue_summary ORDER BY revenue_date LIMIT 1;
         INSERT INTO staging.revenue VALUES ('2027-01-01', 5, 1, '2027-01-02 00:00:00');",
    )
    .await;
    let path = db.write_file("task.sql", &format!("{rewritten};\n"));
    for _ in 0..2 {
        run_script(&db, &path).ok();
        assert_eq!(
            days(),
            vec![vec![(keys + 1).to_string(), (keys + 1).to_string()]],
            "the rewritten task does not converge\n{rewritten}"
        );
    }
}

/// The title of a step heading of a rendered plan (`-- 3. Cleanup`).
fn step_title(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("-- ")?;
    let (n, title) = rest.split_once(". ")?;
    n.parse::<u32>().ok()?;
    Some(title)
}

/// A partitioned table whose schema, table, partition and column names hold quotes, `%`
/// (the per-partition statements are generated with format()) and semicolons.
#[tokio::test]
async fn postgres_plan_for_a_partitioned_table_with_hostile_names_runs() {
    let db = TestDb::postgres().await;
    let schema = "Odd %s 'sch'; x";
    let table = "Part %I 't' ;";
    let key = "order \"no\" %s";
    let day = "day 'd' %I";
    let amount = "amount%";
    let t = db.qt(schema, table);
    let mut values = Vec::new();
    let mut keys = BTreeSet::new();
    for i in 1..=20i64 {
        let copies = if i % 4 == 0 { 2 } else { 1 };
        let d = if i <= 10 { "2026-10-05" } else { "2026-11-05" };
        for k in 0..copies {
            values.push(format!(
                "({i}, '{d}', {}, '2026-11-06 01:{k:02}:00')",
                100 * i
            ));
        }
        keys.insert(i);
    }
    db.exec(&format!(
        "CREATE SCHEMA {s};\n\
         CREATE TABLE {t} ({k} bigint NOT NULL, {d} date NOT NULL, {a} bigint NOT NULL, loaded_at timestamp NOT NULL) \
         PARTITION BY RANGE ({d});\n\
         CREATE TABLE {p1} PARTITION OF {t} FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');\n\
         CREATE TABLE {p2} PARTITION OF {t} FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');\n\
         INSERT INTO {t} ({k}, {d}, {a}, loaded_at) VALUES {v};\n",
        s = db.q(schema),
        k = db.q(key),
        d = db.q(day),
        a = db.q(amount),
        p1 = db.qt(schema, "p1 %s 'x'"),
        p2 = db.qt(schema, "p2 %% \"y\""),
        v = values.join(", ")
    ))
    .await;
    let config = db.write_file(
        "natkey.toml",
        &format!(
            "[[table]]\nname = {}\nnatural_key = [{}]\n",
            toml_str(&format!("{schema}.{table}")),
            toml_str(key)
        ),
    );
    let rows = values.len() as i64;
    let insert = |order: i64, d: &str| {
        format!(
            "INSERT INTO {t} ({}, {}, {}, loaded_at) VALUES ({order}, '{d}', 1, '2026-12-01 00:00:00')",
            db.q(key),
            db.q(day),
            db.q(amount)
        )
    };
    let proof = prove(&Case {
        db: &db,
        pg_schema: schema,
        table,
        table_arg: format!("{schema}.{table}"),
        columns: columns(&[key, day, amount, "loaded_at"]),
        key: columns(&[key]),
        keep: Keep::Latest("loaded_at".into()),
        rows,
        excess: rows - keys.len() as i64,
        config: Some(config),
        server_version: None,
        batch_rows: None,
        duplicates: vec![insert(4, "2026-10-05"), insert(13, "2026-11-05")],
    });
    assert!(proof.plan.contains("ATTACH PARTITION"), "{}", proof.plan);
}

/// Step titles of a rendered plan.
fn step_titles(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(step_title)
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn postgres_plan_for_a_table_without_duplicates_says_so_and_only_enforces_the_key() {
    let db = TestDb::postgres().await;
    let (sql, e) = fixtures::daily_orders(&db, "sales", "daily_orders", Surrogate::Default, &|_| 1);
    db.exec(&sql).await;
    assert_eq!(e.excess, 0);
    let audit = db.audit(&[]);
    assert_eq!(audit.code, 0, "{}", audit.describe());
    let report = db.write_file("report.json", &audit.stdout);
    let run = natkey(
        &db.dir,
        &["plan", "--report", &report, "--table", "sales.daily_orders"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let plan = &run.stdout;
    assert!(
        plan.contains("0 duplicate groups") && plan.contains("0 excess rows"),
        "the plan should say the table has no duplicates\n{plan}"
    );
    let titles = step_titles(plan);
    assert!(
        !titles
            .iter()
            .any(|t| t.contains("Backup") || t.contains("Cleanup")),
        "a table without duplicates needs no backup or cleanup: steps {titles:?}"
    );
    assert!(
        titles.iter().any(|t| t.starts_with("Enforce")),
        "the plan should enforce the key: steps {titles:?}"
    );
    assert!(
        !plan.lines().any(|l| l.starts_with("DELETE")),
        "the plan deletes rows\n{plan}"
    );
    // The index build must not queue behind a long transaction (and every query behind it):
    // the session settings come before it even though there is no backup step.
    let position = |needle: &str| {
        plan.find(needle)
            .unwrap_or_else(|| panic!("the plan has no {needle:?}\n{plan}"))
    };
    assert!(
        position("SET lock_timeout") < position("CREATE UNIQUE INDEX")
            && position("SET statement_timeout") < position("CREATE UNIQUE INDEX"),
        "lock_timeout and statement_timeout must be set before the index build\n{plan}"
    );
    let before = snapshot(
        &db,
        "sales.daily_orders",
        &columns(&fixtures::DAILY_ORDERS_COLUMNS),
    );
    let path = db.write_file("plan.sql", plan);
    run_script(&db, &path).ok();
    let unique = || {
        query(
            &db,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'sales.daily_orders'::regclass AND contype = 'u'",
        )
    };
    assert_eq!(
        unique(),
        vec![vec!["1".to_string()]],
        "the constraint exists"
    );
    let case = daily_orders_case(&db, "sales", &e);
    for insert in &case.duplicates {
        assert_rejected_as_duplicate(&db, insert);
    }
    run_script(&db, &path).ok();
    assert_eq!(unique(), vec![vec!["1".to_string()]]);
    assert_eq!(
        snapshot(
            &db,
            "sales.daily_orders",
            &columns(&fixtures::DAILY_ORDERS_COLUMNS)
        ),
        before,
        "the plan changed the rows of a table without duplicates"
    );
    // Its rollback only drops the constraint.
    let rollback = natkey(
        &db.dir,
        &[
            "plan",
            "--report",
            &report,
            "--table",
            "sales.daily_orders",
            "--rollback",
        ],
        &[],
    );
    assert_eq!(rollback.code, 0, "{}", rollback.describe());
    let path = db.write_file("rollback.sql", &rollback.stdout);
    run_script(&db, &path).ok();
    run_script(&db, &path).ok();
    assert_eq!(
        unique(),
        vec![vec!["0".to_string()]],
        "the rollback drops the constraint"
    );
    assert_eq!(
        snapshot(
            &db,
            "sales.daily_orders",
            &columns(&fixtures::DAILY_ORDERS_COLUMNS)
        ),
        before,
        "the rollback changed the rows of a table without duplicates"
    );
}

#[tokio::test]
async fn plan_all_writes_one_safely_named_file_per_table_with_duplicates() {
    let db = TestDb::postgres().await;
    let (orders, _) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    let (hostile, _) = fixtures::hostile(&db);
    db.exec(&orders).await;
    db.exec(&hostile).await;
    db.exec(&fixtures::currencies(&db, "public")).await;
    db.exec(&fixtures::app_log(&db, "ops")).await;
    let url = db.url();
    let run = natkey(
        &db.dir,
        &[
            "plan",
            "--warehouse",
            &url,
            "--all",
            "--output-dir",
            "plans",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let dir = db.dir.join("plans");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the output folder exists")
        .map(|e| {
            e.expect("folder entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        2,
        "one file per table with duplicates (daily_orders and the hostile table): {files:?}"
    );
    for f in &files {
        assert!(
            f.ends_with(".sql")
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "unsafe file name {f:?}"
        );
    }
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).expect("read plan"))
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("-- natkey plan for sales.daily_orders ")),
        "no plan for sales.daily_orders in {files:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains(&db.qt(fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE))),
        "no plan for the hostile table in {files:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// MariaDB

#[tokio::test]
async fn mariadb_plan_removes_retried_copies_keeps_the_latest_and_rolls_back_exactly() {
    let db = TestDb::mysql().await;
    retried_daily_load(&db).await;
}

#[tokio::test]
async fn mariadb_plan_in_batches_removes_retried_copies_and_rolls_back_exactly() {
    let db = TestDb::mysql().await;
    let (sql, e) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    assert!(e.excess > 6, "several batches of 3: {}", e.excess);
    let proof = prove(&Case {
        batch_rows: Some(3),
        ..daily_orders_case(&db, "sales", &e)
    });
    assert!(
        proof.plan.contains("3 rows per transaction"),
        "{}",
        proof.plan
    );
}

#[tokio::test]
async fn mariadb_plan_keeps_the_latest_computed_row_of_conflicting_summary_groups() {
    let db = TestDb::mysql().await;
    conflicting_summary(
        &db,
        "latest:computed_at",
        Keep::Latest("computed_at".into()),
    )
    .await;
}

#[tokio::test]
async fn mariadb_plan_keeps_the_lowest_surrogate_under_a_lowest_surrogate_rule() {
    let db = TestDb::mysql().await;
    conflicting_summary(&db, "lowest_surrogate", Keep::Lowest("summary_id".into())).await;
}

#[tokio::test]
async fn mariadb_plan_makes_duplicate_null_keys_of_a_nullable_unique_key_collide() {
    let db = TestDb::mysql().await;
    nullable_unique_key(&db, None).await;
}

#[tokio::test]
async fn mariadb_plan_quotes_hostile_table_and_column_names() {
    let db = TestDb::mysql().await;
    hostile_names(&db).await;
}

#[tokio::test]
async fn mariadb_plan_quotes_backticks_and_single_quotes_in_names() {
    backticks_and_quotes(None).await;
}

#[tokio::test]
async fn mariadb_plan_in_batches_quotes_backticks_and_single_quotes_in_names() {
    backticks_and_quotes(Some(2)).await;
}

async fn backticks_and_quotes(batch_rows: Option<u64>) {
    let db = TestDb::mysql().await;
    let table = "it's a `retried` \"load\"; <script>x</script>";
    let key = "order `no` 'n'";
    let amount = "amount'); DROP TABLE x; --";
    let t = db.qt("", table);
    let mut values = Vec::new();
    let mut keys = BTreeSet::new();
    for i in 1..=24i64 {
        let copies = match i % 6 {
            0 => 3,
            1 => 2,
            _ => 1,
        };
        for k in 0..copies {
            values.push(format!(
                "({}, {}, '2026-11-03 04:{k:02}:{:02}')",
                700 + i,
                [100, 200, 300][(i % 3) as usize],
                i
            ));
        }
        keys.insert(i);
    }
    db.exec(&format!(
        "CREATE TABLE {t} ({} bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, {} bigint NOT NULL, {} bigint NOT NULL, loaded_at datetime NOT NULL);\n\
         INSERT INTO {t} ({}, {}, loaded_at) VALUES {};\n",
        db.q("id `sk`"),
        db.q(key),
        db.q(amount),
        db.q(key),
        db.q(amount),
        values.join(", ")
    ))
    .await;
    let config = db.write_file(
        "natkey.toml",
        &format!(
            "[[table]]\nname = {}\nnatural_key = [{}]\n",
            toml_str(table),
            toml_str(key)
        ),
    );
    let rows = values.len() as i64;
    prove(&Case {
        db: &db,
        pg_schema: "",
        table,
        table_arg: table.to_string(),
        columns: columns(&["id `sk`", key, amount, "loaded_at"]),
        key: columns(&[key]),
        keep: Keep::Latest("loaded_at".into()),
        rows,
        excess: rows - keys.len() as i64,
        config: Some(config),
        server_version: None,
        batch_rows,
        duplicates: vec![format!(
            "INSERT INTO {t} ({}, {}, loaded_at) VALUES (706, 1, '2026-12-01 00:00:00')",
            db.q(key),
            db.q(amount)
        )],
    });
}

#[tokio::test]
async fn mariadb_plan_for_a_table_without_a_surrogate_key_drops_its_temporary_row_id_after_the_cleanup()
 {
    without_a_surrogate_key(None).await;
}

#[tokio::test]
async fn mariadb_plan_in_batches_for_a_table_without_a_surrogate_key_walks_its_temporary_row_id() {
    without_a_surrogate_key(Some(3)).await;
}

async fn without_a_surrogate_key(batch_rows: Option<u64>) {
    let db = TestDb::mysql().await;
    let mut values = Vec::new();
    let mut keys = BTreeSet::new();
    for i in 1..=40i64 {
        let copies = if i % 4 == 0 { 2 } else { 1 };
        for k in 0..copies {
            values.push(format!(
                "({}, {}, '2026-11-0{} 02:{k:02}:{:02}')",
                5000 + i,
                [5, 10, 25][(i % 3) as usize],
                1 + i % 3,
                i
            ));
        }
        keys.insert(i);
    }
    db.exec(&format!(
        "CREATE TABLE events (event_id bigint NOT NULL, points int NOT NULL, loaded_at datetime NOT NULL);\n\
         INSERT INTO events (event_id, points, loaded_at) VALUES {};\n",
        values.join(", ")
    ))
    .await;
    let rows = values.len() as i64;
    let config = db.write_file(
        "natkey.toml",
        "[[table]]\nname = \"events\"\nnatural_key = [\"event_id\"]\n",
    );
    let proof = prove(&Case {
        db: &db,
        pg_schema: "",
        table: "events",
        table_arg: "events".into(),
        columns: columns(&["event_id", "points", "loaded_at"]),
        key: columns(&["event_id"]),
        keep: Keep::Latest("loaded_at".into()),
        rows,
        excess: rows - keys.len() as i64,
        config: Some(config),
        server_version: None,
        batch_rows,
        duplicates: vec![
            "INSERT INTO events (event_id, points, loaded_at) VALUES (5004, 1, '2026-12-01 00:00:00')"
                .into(),
            "INSERT INTO events (event_id, points, loaded_at) VALUES (5001, 1, '2026-12-01 00:00:00')"
                .into(),
        ],
    });
    assert!(
        proof.plan.contains("natkey_row_id"),
        "the plan should address rows through a temporary natkey_row_id column"
    );
    assert!(
        !proof
            .structure_after_plan
            .iter()
            .any(|r| r.get(1).map(String::as_str) == Some("natkey_row_id")),
        "after the plan the temporary natkey_row_id column should be gone: {:?}",
        proof.structure_after_plan
    );
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_plan_removes_retried_copies_keeps_the_latest_and_rolls_back_exactly() {
    let db = TestDb::sqlite().await;
    retried_daily_load(&db).await;
}

#[tokio::test]
async fn sqlite_plan_keeps_the_latest_computed_row_of_conflicting_summary_groups() {
    let db = TestDb::sqlite().await;
    conflicting_summary(
        &db,
        "latest:computed_at",
        Keep::Latest("computed_at".into()),
    )
    .await;
}

#[tokio::test]
async fn sqlite_plan_keeps_the_lowest_surrogate_under_a_lowest_surrogate_rule() {
    let db = TestDb::sqlite().await;
    conflicting_summary(&db, "lowest_surrogate", Keep::Lowest("summary_id".into())).await;
}

#[tokio::test]
async fn sqlite_plan_makes_duplicate_null_keys_of_a_nullable_unique_key_collide() {
    let db = TestDb::sqlite().await;
    nullable_unique_key(&db, None).await;
}

#[tokio::test]
async fn sqlite_plan_quotes_hostile_table_and_column_names() {
    let db = TestDb::sqlite().await;
    hostile_names(&db).await;
}

#[tokio::test]
async fn sqlite_plan_comments_cannot_be_escaped_by_a_newline_in_a_table_name() {
    let db = TestDb::sqlite().await;
    newline_in_table_name(&db).await;
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn plan_for_a_table_without_a_natural_key_names_natkey_toml_and_natural_key() {
    let db = TestDb::sqlite().await;
    db.exec(&fixtures::app_log(&db, "")).await;
    let url = db.url();
    let run = natkey(
        &db.dir,
        &["plan", "--warehouse", &url, "--table", "app_log"],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    for needle in ["app_log", "natkey.toml", "natural_key"] {
        assert!(
            run.stderr.contains(needle),
            "the error should name {needle:?}\n{}",
            run.describe()
        );
    }
    assert!(
        run.stdout.is_empty(),
        "no plan on stdout\n{}",
        run.describe()
    );
}

#[tokio::test]
async fn plan_with_an_unknown_dialect_is_a_one_line_error() {
    let db = TestDb::sqlite().await;
    let (sql, _) = fixtures::daily_orders(
        &db,
        "",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    let audit = db.audit(&[]);
    assert_eq!(audit.code, 1, "{}", audit.describe());
    let report = db.write_file("report.json", &audit.stdout);
    let run = natkey(
        &db.dir,
        &[
            "plan",
            "--report",
            &report,
            "--table",
            "daily_orders",
            "--dialect",
            "oracle",
        ],
        &[],
    );
    assert_clean_error(&run, &["oracle"]);
}

#[tokio::test]
async fn plan_for_an_unknown_table_is_a_one_line_error() {
    let db = TestDb::sqlite().await;
    let (sql, _) = fixtures::daily_orders(
        &db,
        "",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    let audit = db.audit(&[]);
    assert_eq!(audit.code, 1, "{}", audit.describe());
    let report = db.write_file("report.json", &audit.stdout);
    let run = natkey(
        &db.dir,
        &["plan", "--report", &report, "--table", "no_such_table"],
        &[],
    );
    assert_clean_error(&run, &["no_such_table"]);
    let url = db.url();
    let run = natkey(
        &db.dir,
        &["plan", "--warehouse", &url, "--table", "no_such_table"],
        &[],
    );
    assert_clean_error(&run, &["no_such_table"]);
}

#[tokio::test]
async fn plan_for_conflicting_groups_without_a_survivor_rule_names_survivor() {
    let db = TestDb::sqlite().await;
    // No surrogate key and no load-metadata timestamp: nothing to derive a survivor rule from.
    db.exec(
        "CREATE TABLE daily_totals (revenue_date date NOT NULL, gross_cents bigint NOT NULL, order_count int NOT NULL);
         INSERT INTO daily_totals VALUES
           ('2026-10-01', 1000, 10), ('2026-10-02', 2000, 20), ('2026-10-02', 2500, 21),
           ('2026-10-03', 3000, 30), ('2026-10-03', 3000, 30), ('2026-10-04', 4000, 40);",
    )
    .await;
    let config = db.write_file(
        "natkey.toml",
        "[[table]]\nname = \"daily_totals\"\nnatural_key = [\"revenue_date\"]\n",
    );
    let audit = db.audit(&["--config", &config]);
    assert_eq!(audit.code, 1, "{}", audit.describe());
    let report = db.write_file("report.json", &audit.stdout);
    let run = natkey(
        &db.dir,
        &["plan", "--report", &report, "--table", "daily_totals"],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    for needle in ["daily_totals", "survivor", "natkey.toml"] {
        assert!(
            run.stderr.contains(needle),
            "the error should name {needle:?}\n{}",
            run.describe()
        );
    }
    assert!(
        run.stdout.is_empty(),
        "no plan on stdout\n{}",
        run.describe()
    );
}

/// A report edited by hand can name impossible keys; each is a one-line error (exit 2), never
/// a panic, whatever the dialect.
#[tokio::test]
async fn plan_from_a_hand_edited_report_with_an_impossible_key_is_a_one_line_error() {
    let db = TestDb::sqlite().await;
    let (sql, _) = fixtures::daily_orders(
        &db,
        "",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    let audit = db.audit(&[]);
    assert_eq!(audit.code, 1, "{}", audit.describe());
    let original: serde_json::Value =
        serde_json::from_str(&audit.stdout).expect("the audit prints a JSON report");
    type Edit = fn(&mut serde_json::Value);
    let edits: [(Edit, &[&str]); 4] = [
        (
            |t| t["natural_key"]["columns"] = serde_json::json!([]),
            &["natural_key.columns", "empty"],
        ),
        (
            |t| t["natural_key"]["columns"] = serde_json::json!(["order_id", "order_id"]),
            &["order_id", "twice"],
        ),
        (
            |t| t["survivor"] = "latest:no_such_column".into(),
            &["no_such_column"],
        ),
        (
            |t| t["surrogate_key"] = serde_json::json!(["ghost"]),
            &["ghost"],
        ),
    ];
    for (i, (edit, needles)) in edits.iter().enumerate() {
        let mut report = original.clone();
        let tables = report["tables"].as_array_mut().expect("tables");
        let table = tables
            .iter_mut()
            .find(|t| t["name"] == "daily_orders")
            .expect("daily_orders in the report");
        edit(table);
        let path = db.write_file(&format!("edited-{i}.json"), &report.to_string());
        for dialect in ["mysql", "snowflake", "sqlite"] {
            let run = natkey(
                &db.dir,
                &[
                    "plan",
                    "--report",
                    &path,
                    "--table",
                    "daily_orders",
                    "--dialect",
                    dialect,
                ],
                &[],
            );
            assert_clean_error(&run, needles);
        }
    }
}

/// `--output-dir`: tables whose names clean up to the same file name (`a b` and `a_b`), or
/// differ only in letter case (one file on a case-insensitive file system), get a file each.
#[tokio::test]
async fn plan_all_gives_tables_with_similar_names_a_file_each() {
    let db = TestDb::postgres().await;
    let names = ["a b", "a_b", "Orders", "orders"];
    for name in names {
        let (sql, _) = fixtures::daily_orders(
            &db,
            "sales",
            name,
            Surrogate::Default,
            &fixtures::standard_copies,
        );
        db.exec(&sql).await;
    }
    let url = db.url();
    let run = natkey(
        &db.dir,
        &[
            "plan",
            "--warehouse",
            &url,
            "--all",
            "--output-dir",
            "plans",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let dir = db.dir.join("plans");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the output folder exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let lowercase: BTreeSet<String> = files.iter().map(|f| f.to_lowercase()).collect();
    assert_eq!(
        lowercase.len(),
        names.len(),
        "one file per table, apart even without letter case: {files:?}"
    );
    let headers: BTreeSet<String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).expect("read plan");
            text.lines().next().unwrap_or_default().to_string()
        })
        .collect();
    let expected: BTreeSet<String> = names
        .iter()
        .map(|n| format!("-- natkey plan for sales.{n} (postgres dialect)"))
        .collect();
    assert_eq!(headers, expected, "each table's plan is in its own file");
}
