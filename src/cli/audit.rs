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
    /// postgres://USER@HOST:PORT/DB, mysql://USER@HOST:PORT/DB or sqlite://PATH.
    #[arg(long, env = "NATKEY_WAREHOUSE_URL", hide_env_values = true)]
    pub warehouse: String,
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
    let report = run_audit(
        &args.warehouse,
        &config,
        AuditScope {
            schemas: args.schemas,
            tables: args.tables,
            dedupe_jobs: args.dedupe_jobs,
        },
        args.sample_rows,
        args.statement_timeout,
    )
    .await?;
    print_report(&report, args.format)?;
    Ok(exit_code(&report))
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
        .map_err(|e| e.to_string())?;
    audit::run(&mut warehouse, config, &options, &mut print_progress)
        .await
        .map_err(|e| e.to_string())
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
