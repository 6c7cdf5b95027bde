//! Bad input: exit code 2 and a short message on stderr that names the problem and never
//! shows a password.

use crate::common::{TempDir, TestDb, assert_clean_error, natkey};
use crate::fixtures;

fn audit_in(dir: &std::path::Path, url: &str, extra: &[&str]) -> crate::common::Run {
    let mut args = vec!["audit", "--warehouse", url, "--format", "json"];
    args.extend_from_slice(extra);
    natkey(dir, &args, &[])
}

#[test]
fn unreachable_warehouse_is_a_short_error() {
    let dir = TempDir::new();
    let run = audit_in(&dir.0, "postgres://postgres@127.0.0.1:1/x", &[]);
    assert_clean_error(&run, &["127.0.0.1"]);
}

#[test]
fn password_in_an_unreachable_url_is_never_shown() {
    let dir = TempDir::new();
    let secret = "Sup3rSecretPassw0rdXyz";
    let url = format!("postgres://postgres:{secret}@127.0.0.1:1/x");
    let run = audit_in(&dir.0, &url, &[]);
    assert_clean_error(&run, &["127.0.0.1"]);
    assert!(
        !run.stderr.contains(secret),
        "stderr shows the password\n{}",
        run.describe()
    );
    assert!(!run.stdout.contains(secret), "stdout shows the password");

    // The same through the environment variable.
    let run = natkey(
        &dir.0,
        &["audit", "--format", "json"],
        &[("NATKEY_WAREHOUSE_URL", &url)],
    );
    assert_clean_error(&run, &["127.0.0.1"]);
    assert!(
        !run.stderr.contains(secret),
        "stderr shows the password\n{}",
        run.describe()
    );
    assert!(!run.stdout.contains(secret), "stdout shows the password");

    // And a MySQL URL.
    let url = format!("mysql://root:{secret}@127.0.0.1:1/shop");
    let run = audit_in(&dir.0, &url, &[]);
    assert_clean_error(&run, &["127.0.0.1"]);
    assert!(
        !run.stderr.contains(secret),
        "stderr shows the password\n{}",
        run.describe()
    );
    assert!(!run.stdout.contains(secret), "stdout shows the password");
}

/// Every run below must keep `secret` out of stdout and stderr.
fn assert_secret_hidden(run: &crate::common::Run, secret: &str) {
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "the password {secret:?} is shown\n{}",
        run.describe()
    );
}

#[test]
fn passwords_in_query_parameters_raw_delimiters_and_malformed_urls_are_never_shown() {
    let dir = TempDir::new();
    let secret = "Qu3ryS3cretXyz";
    for url in [
        format!("postgres://postgres@127.0.0.1:1/x?password={secret}"),
        format!("postgres://postgres@127.0.0.1:1/x?sslmode=disable&sslpassword={secret}"),
        format!("mysql://root@127.0.0.1:1/shop?password={secret}"),
        // Raw delimiters in the password: not a valid URL, or one with a different host.
        format!("postgres://postgres:a/{secret}@127.0.0.1:1/x"),
        format!("postgres://postgres:a?{secret}@127.0.0.1:1/x"),
        format!("postgres://postgres:a#{secret}@127.0.0.1:1/x"),
        // No `//` after the scheme: taken for a [[warehouse]] name.
        format!("postgres:/postgres:{secret}@127.0.0.1:1/x"),
        format!("postgres:postgres:{secret}@127.0.0.1:1/x"),
    ] {
        let run = audit_in(&dir.0, &url, &[]);
        assert_eq!(run.code, 2, "{}", run.describe());
        assert_secret_hidden(&run, secret);
    }
}

#[tokio::test]
async fn a_password_query_parameter_never_reaches_the_report_or_stderr() {
    let db = TestDb::postgres().await;
    db.exec(&fixtures::currencies(&db, "public")).await;
    // The test server trusts local connections, so the password is accepted and ignored.
    let secret = "Qu3ryS3cretAbc";
    let url = format!("{}?password={secret}", db.url());
    let run = audit_in(&db.dir, &url, &[]);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_secret_hidden(&run, secret);
    let report = run.json();
    let shown = report["warehouse"].as_str().unwrap_or_default();
    assert!(shown.ends_with("?password=***"), "warehouse field: {shown}");
}

#[tokio::test]
async fn wrong_mysql_password_is_a_short_error_without_the_password() {
    let db = TestDb::mysql().await;
    let user = crate::common::unique_name("natkey_pw");
    let user = &user[..user.len().min(60)];
    let right = "R1ghtPassw0rdAbc";
    let wrong = "Wr0ngPassw0rdDef";
    db.admin(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{right}'; GRANT SELECT ON `{}`.* TO '{user}'@'%';",
        db.name
    ))
    .await;
    db.on_drop(format!("DROP USER IF EXISTS '{user}'@'%'"));
    let url = crate::common::url_with(
        &crate::common::mysql_admin_url(),
        Some(&db.name),
        Some(user),
        Some(wrong),
    );
    let run = audit_in(&db.dir, &url, &[]);
    assert_clean_error(&run, &["127.0.0.1"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !all.contains(wrong),
        "the wrong password is shown\n{}",
        run.describe()
    );
    assert!(
        !all.contains(right),
        "the password is shown\n{}",
        run.describe()
    );
    let low = run.stderr.lines().last().unwrap_or("").to_lowercase();
    assert!(
        low.contains("denied") || low.contains("password") || low.contains("auth"),
        "stderr should say authentication failed\n{}",
        run.describe()
    );
}

#[tokio::test]
async fn unknown_table_is_an_error_naming_it() {
    let db = TestDb::postgres().await;
    db.exec(&fixtures::currencies(&db, "public")).await;
    let run = db.audit(&["--table", "no_such_table"]);
    assert_clean_error(&run, &["no_such_table"]);

    let db = TestDb::sqlite().await;
    db.exec(&fixtures::currencies(&db, "")).await;
    let run = db.audit(&["--table", "no_such_table"]);
    assert_clean_error(&run, &["no_such_table"]);
}

#[tokio::test]
async fn a_schema_that_matches_nothing_is_an_error_naming_it_on_every_engine() {
    for db in [
        TestDb::postgres().await,
        TestDb::mysql().await,
        TestDb::sqlite().await,
    ] {
        db.exec(&fixtures::currencies(&db, "public")).await;
        let run = db.audit(&["--schema", "pubilc_typo"]);
        assert_clean_error(&run, &["pubilc_typo", "schema"]);
        assert!(
            run.stdout.is_empty(),
            "no report is printed\n{}",
            run.describe()
        );
        // The real schema next to the typo still fails: every --schema must match.
        let schema = db.schema("public");
        let run = db.audit(&["--schema", &schema, "--schema", "pubilc_typo"]);
        assert_clean_error(&run, &["pubilc_typo"]);
        // And the real schema alone audits.
        let report = db.report(&["--schema", &schema], 0);
        assert_eq!(crate::common::tables(&report).len(), 1, "{report}");
    }
}

#[test]
fn malformed_urls_are_errors_naming_the_url() {
    let dir = TempDir::new();
    let run = audit_in(&dir.0, "postgres//oops", &[]);
    assert_clean_error(&run, &["postgres//oops"]);
    let run = audit_in(&dir.0, "ftp://x", &[]);
    assert_clean_error(&run, &["ftp"]);
}

#[test]
fn missing_sqlite_file_is_an_error_and_is_not_created() {
    let dir = TempDir::new();
    let run = audit_in(&dir.0, "sqlite://./does_not_exist.sqlite", &[]);
    assert_clean_error(&run, &["does_not_exist.sqlite"]);
    assert!(
        !dir.0.join("does_not_exist.sqlite").exists(),
        "natkey created the SQLite file it was asked to audit"
    );
}

/// A SQLite warehouse with a daily_revenue_summary table, for config errors.
async fn summary_db() -> TestDb {
    let db = TestDb::sqlite().await;
    let (sql, _) = fixtures::revenue_summary(&db, "", "daily_revenue_summary", false);
    db.exec(&sql).await;
    db
}

#[tokio::test]
async fn config_with_bad_toml_is_an_error_naming_the_file() {
    let db = summary_db().await;
    let cfg = db.write_file(
        "broken-natkey.toml",
        "[[table]\nname = \"daily_revenue_summary\n",
    );
    let run = db.audit(&["--config", &cfg]);
    assert_clean_error(&run, &["broken-natkey.toml"]);
}

#[tokio::test]
async fn config_with_an_unknown_key_is_an_error_naming_it() {
    let db = summary_db().await;
    let cfg = db.write_file(
        "natkey.toml",
        "[[table]]\nname = \"daily_revenue_summary\"\nnatural_kee = [\"revenue_date\"]\n",
    );
    let run = db.audit(&["--config", &cfg]);
    assert_clean_error(&run, &["natural_kee"]);
}

#[tokio::test]
async fn config_with_an_unknown_survivor_rule_is_an_error_naming_it() {
    let db = summary_db().await;
    let cfg = db.write_file(
        "natkey.toml",
        "[[table]]\nname = \"daily_revenue_summary\"\nnatural_key = [\"revenue_date\"]\nsurvivor = \"bogus\"\n",
    );
    let run = db.audit(&["--config", &cfg]);
    assert_clean_error(&run, &["bogus"]);
}

#[tokio::test]
async fn config_naming_a_missing_column_is_an_error_naming_it() {
    let db = summary_db().await;
    let cfg = db.write_file(
        "natkey.toml",
        "[[table]]\nname = \"daily_revenue_summary\"\nnatural_key = [\"revenue_day_nope\"]\n",
    );
    let run = db.audit(&["--config", &cfg]);
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    assert!(
        run.stderr.contains("revenue_day_nope") || run.stdout.contains("revenue_day_nope"),
        "the error should name the missing column\n{}",
        run.describe()
    );
}
