//! Shared helpers: throw-away warehouses on the three engines, running the natkey binary,
//! and reading its JSON report.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MySql,
    Sqlite,
}

pub fn pg_admin_url() -> String {
    std::env::var("NATKEY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub fn mysql_admin_url() -> String {
    std::env::var("NATKEY_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_string())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `prefix_<pid>_<counter>_<nanos>`: unique across parallel tests and test processes.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// `base` with the database (path), user and password replaced where given.
pub fn url_with(
    base: &str,
    db: Option<&str>,
    user: Option<&str>,
    password: Option<&str>,
) -> String {
    let mut u = url::Url::parse(base).expect("test server URL parses");
    if let Some(db) = db {
        u.set_path(&format!("/{db}"));
    }
    if let Some(user) = user {
        u.set_username(user).expect("URL takes a user name");
    }
    if let Some(p) = password {
        u.set_password(Some(p)).expect("URL takes a password");
    }
    u.to_string()
}

async fn pg_exec(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await?;
    c.close().await
}

async fn my_exec(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    let mut c = sqlx::MySqlConnection::connect(url).await?;
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await?;
    c.close().await
}

fn short(sql: &str) -> String {
    if sql.len() > 600 {
        let mut end = 600;
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &sql[..end])
    } else {
        sql.to_string()
    }
}

/// Quote one identifier for PostgreSQL / SQLite.
pub fn dq(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quote one identifier for MySQL / MariaDB.
pub fn bq(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// A throw-away warehouse: a database on the PostgreSQL or MariaDB server (dropped on drop),
/// or a SQLite file, plus a private temporary working folder for natkey (its current folder, so
/// no stray `natkey.toml` is picked up; config files and the SQLite file live there).
pub struct TestDb {
    pub engine: Engine,
    pub name: String,
    pub dir: PathBuf,
    after_drop: Mutex<Vec<String>>,
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        let name = unique_name("natkey_it");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("create temporary folder");
        let db = TestDb {
            engine,
            name,
            dir,
            after_drop: Mutex::new(Vec::new()),
        };
        match engine {
            Engine::Postgres => db.admin(&format!("CREATE DATABASE {}", dq(&db.name))).await,
            Engine::MySql => db.admin(&format!("CREATE DATABASE {}", bq(&db.name))).await,
            Engine::Sqlite => {
                db.exec("CREATE TABLE _natkey_it_probe (x int); DROP TABLE _natkey_it_probe;")
                    .await
            }
        }
        db
    }

    pub async fn postgres() -> TestDb {
        TestDb::new(Engine::Postgres).await
    }

    pub async fn mysql() -> TestDb {
        TestDb::new(Engine::MySql).await
    }

    pub async fn sqlite() -> TestDb {
        TestDb::new(Engine::Sqlite).await
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.join("warehouse.sqlite")
    }

    /// The URL natkey is given (natkey runs with `self.dir` as its current folder).
    pub fn url(&self) -> String {
        match self.engine {
            Engine::Postgres => url_with(&pg_admin_url(), Some(&self.name), None, None),
            Engine::MySql => url_with(&mysql_admin_url(), Some(&self.name), None, None),
            Engine::Sqlite => "sqlite://./warehouse.sqlite".to_string(),
        }
    }

    /// The schema name natkey reports for a table that lives in `pg_schema` on PostgreSQL
    /// (MySQL: the test database; SQLite: `main`).
    pub fn schema(&self, pg_schema: &str) -> String {
        match self.engine {
            Engine::Postgres => pg_schema.to_string(),
            Engine::MySql => self.name.clone(),
            Engine::Sqlite => "main".to_string(),
        }
    }

    /// The `schema.table` that names a table in the JSON report and in `downstream`.
    pub fn qualified(&self, pg_schema: &str, table: &str) -> String {
        format!("{}.{}", self.schema(pg_schema), table)
    }

    /// Quote one identifier for this engine.
    pub fn q(&self, ident: &str) -> String {
        match self.engine {
            Engine::MySql => bq(ident),
            _ => dq(ident),
        }
    }

    /// The SQL name of a table (schema-qualified on PostgreSQL only).
    pub fn qt(&self, pg_schema: &str, table: &str) -> String {
        match self.engine {
            Engine::Postgres => format!("{}.{}", dq(pg_schema), dq(table)),
            _ => self.q(table),
        }
    }

    /// `CREATE SCHEMA` on PostgreSQL, nothing elsewhere.
    pub fn create_schema(&self, pg_schema: &str) -> String {
        match self.engine {
            Engine::Postgres => format!("CREATE SCHEMA IF NOT EXISTS {};\n", dq(pg_schema)),
            _ => String::new(),
        }
    }

    /// Runs admin SQL against the server (not the test database).
    pub async fn admin(&self, sql: &str) {
        let r = match self.engine {
            Engine::Postgres => pg_exec(&pg_admin_url(), sql).await,
            Engine::MySql => my_exec(&mysql_admin_url(), sql).await,
            Engine::Sqlite => Ok(()),
        };
        if let Err(e) = r {
            panic!("admin SQL failed: {e}\n{}", short(sql));
        }
    }

    /// Admin SQL to run after the database is dropped (e.g. `DROP ROLE`).
    pub fn on_drop(&self, sql: String) {
        self.after_drop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sql);
    }

    fn admin_db_url(&self) -> String {
        match self.engine {
            Engine::Postgres => url_with(&pg_admin_url(), Some(&self.name), None, None),
            Engine::MySql => url_with(&mysql_admin_url(), Some(&self.name), None, None),
            Engine::Sqlite => String::new(),
        }
    }

    async fn sqlite_conn(&self) -> sqlx::SqliteConnection {
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.sqlite_path())
            .create_if_missing(true)
            .connect()
            .await
            .expect("open the SQLite fixture file")
    }

    /// Runs a (multi-statement) fixture script as admin inside the test database.
    pub async fn exec(&self, sql: &str) {
        let r = match self.engine {
            Engine::Postgres => pg_exec(&self.admin_db_url(), sql).await,
            Engine::MySql => my_exec(&self.admin_db_url(), sql).await,
            Engine::Sqlite => {
                let mut c = self.sqlite_conn().await;
                let r = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .map(|_| ());
                let _ = c.close().await;
                r
            }
        };
        if let Err(e) = r {
            panic!("fixture SQL failed: {e}\n{}", short(sql));
        }
    }

    /// One text value (the first column of the first row; cast in SQL).
    pub async fn scalar_text(&self, sql: &str) -> Option<String> {
        let q = || AssertSqlSafe(sql.to_string());
        let r: Result<Option<String>, sqlx::Error> = match self.engine {
            Engine::Postgres => {
                async {
                    let mut c = sqlx::PgConnection::connect(&self.admin_db_url()).await?;
                    let row = sqlx::query(q()).fetch_one(&mut c).await?;
                    let v = row.try_get::<Option<String>, _>(0)?;
                    c.close().await?;
                    Ok(v)
                }
                .await
            }
            Engine::MySql => {
                async {
                    let mut c = sqlx::MySqlConnection::connect(&self.admin_db_url()).await?;
                    let row = sqlx::query(q()).fetch_one(&mut c).await?;
                    let v = row.try_get::<Option<String>, _>(0)?;
                    c.close().await?;
                    Ok(v)
                }
                .await
            }
            Engine::Sqlite => {
                async {
                    let mut c = self.sqlite_conn().await;
                    let row = sqlx::query(q()).fetch_one(&mut c).await?;
                    let v = row.try_get::<Option<String>, _>(0)?;
                    c.close().await?;
                    Ok(v)
                }
                .await
            }
        };
        r.unwrap_or_else(|e| panic!("query failed: {e}\n{}", short(sql)))
    }

    /// Writes a file into the working folder; returns its absolute path.
    pub fn write_file(&self, name: &str, contents: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).expect("write file");
        p.to_string_lossy().into_owned()
    }

    /// `natkey audit --warehouse URL --format json ARGS...` in the working folder.
    pub fn audit(&self, args: &[&str]) -> Run {
        let url = self.url();
        let mut all = vec!["audit", "--warehouse", url.as_str(), "--format", "json"];
        all.extend_from_slice(args);
        natkey(&self.dir, &all, &[])
    }

    /// Audits, asserts the exit code, and returns the parsed JSON report.
    pub fn report(&self, args: &[&str], expected_code: i32) -> Value {
        let run = self.audit(args);
        assert_eq!(
            run.code,
            expected_code,
            "unexpected exit code\n{}",
            run.describe()
        );
        run.json()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("NATKEY_TEST_KEEP").is_some() {
            eprintln!(
                "NATKEY_TEST_KEEP: keeping {:?} {} in {}",
                self.engine,
                self.name,
                self.dir.display()
            );
            return;
        }
        let engine = self.engine;
        let name = self.name.clone();
        let extra = std::mem::take(&mut *self.after_drop.lock().unwrap_or_else(|e| e.into_inner()));
        if engine != Engine::Sqlite {
            // Drop may run inside the test's runtime (or while unwinding a failed assertion):
            // clean up on a fresh thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let (url, drop_db) = match engine {
                        Engine::Postgres => (
                            pg_admin_url(),
                            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", dq(&name)),
                        ),
                        _ => (
                            mysql_admin_url(),
                            format!("DROP DATABASE IF EXISTS {}", bq(&name)),
                        ),
                    };
                    let run = |sql: String| {
                        let url = url.clone();
                        async move {
                            let r = match engine {
                                Engine::Postgres => pg_exec(&url, &sql).await,
                                _ => my_exec(&url, &sql).await,
                            };
                            if let Err(e) = r {
                                eprintln!("cleanup failed: {e}: {sql}");
                            }
                        }
                    };
                    run(drop_db).await;
                    for sql in extra {
                        run(sql).await;
                    }
                });
            })
            .join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The outcome of one natkey run.
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn describe(&self) -> String {
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            let from = lines.len().saturating_sub(40);
            lines[from..].join("\n")
        };
        format!(
            "natkey {:?}\nexit code: {}\n--- stderr (tail) ---\n{}\n--- stdout (tail) ---\n{}",
            self.args,
            self.code,
            tail(&self.stderr),
            tail(&self.stdout)
        )
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not a JSON report: {e}\n{}", self.describe()))
    }
}

/// Runs the natkey binary in `dir` (with no warehouse URL or password in its environment other
/// than `env`), with a generous deadline.
pub fn natkey(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natkey"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("NATKEY_WAREHOUSE_URL")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn natkey");
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let h_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let h_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for natkey") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("natkey {args:?} did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&h_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&h_err.join().unwrap_or_default()).into_owned();
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// A working folder for runs that need no database.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique_name("natkey_it_dir"));
        std::fs::create_dir_all(&p).expect("create temporary folder");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the report

pub fn tables(report: &Value) -> &Vec<Value> {
    report["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("report has no `tables` array: {report}"))
}

pub fn table_set(report: &Value) -> BTreeSet<(String, String)> {
    tables(report)
        .iter()
        .map(|t| {
            (
                t["schema"].as_str().unwrap_or("?").to_string(),
                t["name"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

pub fn set_of(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .collect()
}

/// The report entry of one table (exactly one must exist).
pub fn table<'a>(report: &'a Value, schema: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = tables(report)
        .iter()
        .filter(|t| t["schema"] == schema && t["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one report entry for {schema:?}.{name:?}; the report has {:?}",
        table_set(report)
    );
    found[0]
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of strings, got {v}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("expected a string, got {x}"))
                .to_string()
        })
        .collect()
}

pub fn string_set(v: &Value) -> BTreeSet<String> {
    strings(v).into_iter().collect()
}

pub fn sset(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The envelope every report has, whatever the warehouse.
pub fn assert_envelope(report: &Value, dialects: &[&str]) {
    assert_eq!(report["natkey_report"], 1, "natkey_report version");
    let d = report["dialect"].as_str().unwrap_or("");
    assert!(
        dialects.contains(&d),
        "dialect {d:?} not one of {dialects:?}"
    );
    let started = report["started_at"]
        .as_str()
        .expect("started_at is a string");
    let finished = report["finished_at"]
        .as_str()
        .expect("finished_at is a string");
    let s = chrono::DateTime::parse_from_rfc3339(started).expect("started_at is RFC 3339");
    let f = chrono::DateTime::parse_from_rfc3339(finished).expect("finished_at is RFC 3339");
    assert!(f >= s, "finished_at {finished} before started_at {started}");
    let n = tables(report).len() as u64;
    assert_eq!(
        report["summary"]["tables"], n,
        "summary.tables = number of table entries"
    );
    let with_dups = tables(report)
        .iter()
        .filter(|t| t["status"] == "duplicates")
        .count() as u64;
    assert_eq!(
        report["summary"]["with_duplicates"], with_dups,
        "summary.with_duplicates"
    );
    let excess: i64 = tables(report)
        .iter()
        .map(|t| t["excess_rows"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(
        report["summary"]["excess_rows"], excess,
        "summary.excess_rows"
    );
    for t in tables(report) {
        assert!(
            t["elapsed_ms"].as_u64().is_some(),
            "elapsed_ms is a non-negative integer in {}.{}",
            t["schema"],
            t["name"]
        );
    }
}

/// An error run: exit code 2, a short human message on stderr (no panic, no backtrace) that
/// contains every one of `needles` (case-insensitive).
pub fn assert_clean_error(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 2, "expected exit code 2\n{}", run.describe());
    let err = &run.stderr;
    assert!(
        !err.contains("panicked"),
        "natkey panicked\n{}",
        run.describe()
    );
    assert!(
        !err.to_lowercase().contains("stack backtrace"),
        "stderr has a backtrace\n{}",
        run.describe()
    );
    let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines >= 1, "stderr is empty\n{}", run.describe());
    assert!(
        lines <= 6,
        "stderr has {lines} lines, expected a short message\n{}",
        run.describe()
    );
    // The error itself is one line (the last; progress lines may precede it) naming what
    // failed and where.
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_lowercase();
    for n in needles {
        assert!(
            last.contains(&n.to_lowercase()),
            "the error line does not mention {n:?}\n{}",
            run.describe()
        );
    }
}
