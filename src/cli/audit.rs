//! `natkey audit` and `natkey demo`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use natkey::audit::report::{Report, Status, printable, render_text};
use natkey::audit::{self, AuditOptions, Progress};
use natkey::config::{Config, TableName};
use natkey::dialect::Dialect;
use natkey::keys::KeyHint;
use natkey::warehouse::{SessionSettings, Warehouse, WarehouseUrl};

use super::Format;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// postgres://USER@HOST:PORT/DB, mysql://USER@HOST:PORT/DB, sqlite://PATH, or the name of
    /// a [[warehouse]] in natkey.toml [default: the only [[warehouse]] of natkey.toml].
    #[arg(long, env = "NATKEY_WAREHOUSE_URL", hide_env_values = true)]
    pub warehouse: Option<String>,
    /// natkey.toml (default: ./natkey.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Audit only this schema (repeatable).
    #[arg(long = "schema", value_name = "NAME")]
    schemas: Vec<String>,
    /// Audit only this table: `table` or `schema.table` (repeatable).
    #[arg(long = "table", value_name = "NAME", value_parser = parse_table_name)]
    tables: Vec<TableName>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Rows profiled per table for key inference [default: 20000, or natkey.toml].
    #[arg(long)]
    sample_rows: Option<usize>,
    /// Statement timeout in seconds for every query [default: 600, or natkey.toml].
    #[arg(long, value_name = "SECS")]
    statement_timeout: Option<u64>,
    /// Learn natural keys and survivor rules from an existing dedupe job (repeatable).
    #[arg(long = "dedupe-job", value_name = "FILE")]
    pub dedupe_jobs: Vec<PathBuf>,
    /// Record this run (its report, or why it failed) in natkey's store ([store] of
    /// natkey.toml), into the history `natkey serve` shows, under the [[warehouse]] name.
    #[arg(long)]
    save: bool,
    /// With --save: record the run as a run of this [[schedule]] (Airflow or cron runs it).
    #[arg(long, value_name = "NAME", requires = "save")]
    schedule: Option<String>,
}

/// The warehouse `--warehouse` names: a URL, or a `[[warehouse]]` name (then the URL comes from
/// natkey.toml); with no `--warehouse`, the only `[[warehouse]]`. Returns the URL and the name
/// the store records runs under.
pub(super) fn resolve_warehouse(
    arg: Option<&str>,
    config: &Config,
) -> Result<(String, Option<String>), String> {
    let by_name = |name: &str| config.warehouses.iter().find(|w| w.name == name);
    match arg {
        Some(text) if text.contains("://") => {
            // A URL: its name is the [[warehouse]] with the same URL, if any.
            let name = config
                .warehouses
                .iter()
                .find(|w| w.resolve_url().is_ok_and(|u| u == text))
                .map(|w| w.name.clone());
            Ok((text.to_string(), name))
        }
        Some(name) => match by_name(name) {
            Some(w) => Ok((w.resolve_url()?, Some(w.name.clone()))),
            None => Err(format!(
                "--warehouse {:?} is neither a URL (postgres://, mysql://, sqlite://) nor a \
                 [[warehouse]] name in natkey.toml",
                // A mistyped URL (`postgres:/u:pw@h/db`) may hold a password.
                natkey::warehouse::redact(name)
            )),
        },
        None => match config.warehouses.as_slice() {
            [only] => Ok((only.resolve_url()?, Some(only.name.clone()))),
            [] => Err(
                "--warehouse is required (a URL, or a [[warehouse]] name of natkey.toml)".into(),
            ),
            _ => Err(format!(
                "natkey.toml lists {} warehouses: choose one with --warehouse NAME",
                config.warehouses.len()
            )),
        },
    }
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo warehouse.
    #[arg(long, default_value = "natkey-data")]
    data_dir: PathBuf,
    /// Print the report in this format and exit, instead of serving the web app.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Address the web app listens on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    bind: String,
}

pub fn parse_table_name(text: &str) -> Result<TableName, String> {
    text.parse()
}

pub async fn audit(args: AuditArgs) -> Result<ExitCode, String> {
    let config = load_config(args.config.as_deref())?;
    let (url, name) = resolve_warehouse(args.warehouse.as_deref(), &config)?;
    let (schemas, tables) = scope_of(&config, name.as_deref(), &args);
    // With --save, the store is opened before the audit: a store natkey cannot write is an
    // error before minutes of auditing, not after.
    let save = match args.save {
        false => None,
        true => {
            let Some(name) = name else {
                return Err(format!(
                    "--save records runs under a [[warehouse]] name: add this warehouse to \
                     natkey.toml (or pass --warehouse NAME); {} is not listed there",
                    WarehouseUrl::parse(&url)
                        .map(|u| u.redacted().to_string())
                        .unwrap_or_else(|_| "the URL".into())
                ));
            };
            if let Some(schedule) = &args.schedule
                && !config.schedules.iter().any(|s| &s.name == schedule)
            {
                return Err(format!(
                    "--schedule: no [[schedule]] named {schedule:?} in natkey.toml"
                ));
            }
            let store = natkey::store::Store::open(&config.store.path())
                .await
                .map_err(|e| e.to_string())?;
            Some((store, name))
        }
    };
    // A run recorded in the history uses the keys confirmed in the web app, as serve's runs do.
    let config = match &save {
        Some((store, name)) => natkey::web::config_with_key_overrides(&config, store, name)
            .await
            .map_err(|e| e.to_string())?,
        None => config,
    };
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let result = run_audit(
        &url,
        &config,
        AuditScope {
            schemas,
            tables,
            dedupe_jobs: args.dedupe_jobs,
        },
        args.sample_rows,
        args.statement_timeout,
    )
    .await;
    if let Some((store, name)) = &save {
        let id = store
            .record_cli_run(
                name,
                args.schedule.as_deref(),
                &started_at,
                result.as_ref().map_err(String::as_str),
            )
            .await
            .map_err(|e| format!("recording the run with --save: {e}"))?;
        store
            .prune(name, config.store.keep_runs())
            .await
            .map_err(|e| format!("retention after --save: {e}"))?;
        eprintln!(
            "natkey: recorded as run {id} of {name} in {}",
            config.store.path().display()
        );
    }
    let report = result?;
    print_report(&report, args.format)?;
    Ok(exit_code(&report))
}

/// What the audit covers: `--schema`/`--table` when given, else the `--schedule`'s filters,
/// else the `[[warehouse]]`'s `schemas`/`tables` — the same narrowing `natkey serve` applies,
/// so a run recorded with `--save` covers what the web app's runs of it cover.
fn scope_of(
    config: &Config,
    warehouse: Option<&str>,
    args: &AuditArgs,
) -> (Vec<String>, Vec<TableName>) {
    let entry = warehouse.and_then(|n| config.warehouses.iter().find(|w| w.name == n));
    let schedule = (args.schedule.as_deref())
        .and_then(|n| config.schedules.iter().find(|s| s.name == n))
        .and_then(|s| natkey::schedule::Schedule::parse(s).ok());
    let schemas = match (&schedule, entry) {
        _ if !args.schemas.is_empty() => args.schemas.clone(),
        (Some(s), _) if !s.schemas.is_empty() => s.schemas.clone(),
        (_, Some(w)) => w.schemas.clone(),
        _ => Vec::new(),
    };
    let tables = match (&schedule, entry) {
        _ if !args.tables.is_empty() => args.tables.clone(),
        (Some(s), _) if !s.tables.is_empty() => s.tables.clone(),
        (_, Some(w)) => w.tables.clone(),
        _ => Vec::new(),
    };
    (schemas, tables)
}

/// The config file named, else `./natkey.toml` when it exists, else the defaults.
pub fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None if Path::new("natkey.toml").is_file() => {
            Config::load(Path::new("natkey.toml")).map_err(|e| e.to_string())
        }
        None => Ok(Config::default()),
    }
}

/// What to audit.
#[derive(Default)]
pub struct AuditScope {
    pub schemas: Vec<String>,
    pub tables: Vec<TableName>,
    /// Dedupe jobs to learn natural keys from (source `dedupe_job`).
    pub dedupe_jobs: Vec<PathBuf>,
}

/// Reads dedupe jobs and learns the natural keys and survivor rules they reveal.
fn learn_from_dedupe_jobs(paths: &[PathBuf], dialect: Dialect) -> Result<Vec<KeyHint>, String> {
    let mut hints = Vec::new();
    for path in paths {
        let sql = natkey::rewrite::read_task_file(path).map_err(|e| e.to_string())?;
        let learned = natkey::rewrite::learn_keys(&sql, dialect)
            .map_err(|e| format!("dedupe job {}: {e}", path.display()))?;
        if learned.is_empty() {
            return Err(format!(
                "dedupe job {}: no natural key found (expected ROW_NUMBER() OVER (PARTITION BY ...), \
                 DELETE ... USING a self-join, or NOT IN (SELECT MIN(...) ... GROUP BY ...))",
                path.display()
            ));
        }
        hints.extend(learned.into_iter().map(|l| KeyHint {
            table: l.table,
            natural_key: l.natural_key,
            survivor: l.survivor,
        }));
    }
    Ok(hints)
}

/// Connects read-only and audits, printing progress on stderr.
pub async fn run_audit(
    warehouse: &str,
    config: &Config,
    scope: AuditScope,
    sample_rows: Option<usize>,
    statement_timeout: Option<u64>,
) -> Result<Report, String> {
    let url = WarehouseUrl::parse(warehouse).map_err(|e| e.to_string())?;
    let dedupe_keys = learn_from_dedupe_jobs(&scope.dedupe_jobs, url.engine().into())?;
    let mut settings = SessionSettings::default();
    if let Some(secs) = statement_timeout.or(config.audit.statement_timeout_secs) {
        settings.statement_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(work_mem) = &config.audit.work_mem {
        settings.work_mem = work_mem.clone();
    }
    let options = AuditOptions {
        schemas: scope.schemas,
        tables: scope.tables,
        dedupe_keys,
        sample_rows: sample_rows
            .or(config.audit.sample_rows)
            .unwrap_or(20_000)
            .max(2),
        ..AuditOptions::default()
    };
    eprintln!("natkey: auditing {url}");
    let mut warehouse = Warehouse::connect(&url, settings)
        .await
        .map_err(|e| url.scrub(&e.to_string()))?;
    audit::run(&mut warehouse, config, &options, &mut print_progress)
        .await
        .map_err(|e| url.scrub(&e.to_string()))
}

pub async fn demo(args: DemoArgs) -> Result<ExitCode, String> {
    let Some(format) = args.format else {
        return super::serve::demo(&args.data_dir, &args.bind).await;
    };
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("creating {}: {e}", args.data_dir.display()))?;
    let path = args.data_dir.join("demo-warehouse.sqlite");
    eprintln!("natkey: creating the demo warehouse {}", path.display());
    natkey::demo::create_demo_warehouse(&path)
        .await
        .map_err(|e| format!("creating the demo warehouse {}: {e}", path.display()))?;
    let config = Config::parse(natkey::demo::DEMO_CONFIG, Path::new("demo natkey.toml"))
        .map_err(|e| e.to_string())?;
    let url =
        WarehouseUrl::parse(&format!("sqlite://{}", path.display())).map_err(|e| e.to_string())?;
    let mut warehouse = Warehouse::connect(&url, SessionSettings::default())
        .await
        .map_err(|e| e.to_string())?;
    let report = audit::run(
        &mut warehouse,
        &config,
        &AuditOptions::default(),
        &mut print_progress,
    )
    .await
    .map_err(|e| e.to_string())?;
    print_report(&report, format)?;
    if matches!(format, Format::Table) {
        println!(
            "\nThe demo warehouse is {}; audit it yourself with\n  natkey audit --warehouse sqlite://{}",
            path.display(),
            path.display()
        );
    }
    // The demo finding duplicates is the point, not a failure.
    Ok(ExitCode::SUCCESS)
}

fn print_progress(event: Progress) {
    let mut err = std::io::stderr().lock();
    let _ = match event {
        Progress::Warning(message) => writeln!(err, "natkey: warning: {message}"),
        Progress::Started {
            index,
            total,
            table,
        } if err.is_terminal() => write!(
            err,
            "\r\x1b[2K[{index}/{total}] {} ...",
            printable(&table.to_string())
        ),
        Progress::Started { .. } => Ok(()),
        Progress::Finished {
            index,
            total,
            report,
        } => {
            let clear = if err.is_terminal() { "\r\x1b[2K" } else { "" };
            let what = match report.status {
                Status::Duplicates => format!(
                    "{} duplicate groups, {} excess rows",
                    report.duplicate_groups.unwrap_or(0),
                    report.excess_rows.unwrap_or(0)
                ),
                Status::Error | Status::NoKey => format!(
                    "{}: {}",
                    report.status.label(),
                    report.message.as_deref().unwrap_or("")
                ),
                other => other.label().to_string(),
            };
            writeln!(
                err,
                "{clear}[{index}/{total}] {}.{}: {} ({:.1}s)",
                printable(&report.schema),
                printable(&report.name),
                printable(&what),
                report.elapsed_ms as f64 / 1000.0
            )
        }
    };
}

fn print_report(report: &Report, format: Format) -> Result<(), String> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(report).map_err(|e| e.to_string())? + "\n",
        Format::Table => render_text(report),
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`natkey audit | head`) is not worth a panic.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}

fn exit_code(report: &Report) -> ExitCode {
    if report.tables.iter().any(|t| t.status == Status::Error) {
        ExitCode::from(2)
    } else if report.tables.iter().any(|t| t.status == Status::Duplicates) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
