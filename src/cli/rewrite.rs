//! `natkey rewrite`: is a load task idempotent, and the minimal edit that makes it so.
//! natkey reads task files and (with `--warehouse`) catalogs; it never runs task SQL.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use natkey::keys::KeySource;
use natkey::rewrite::discover::{self, Discovered};
use natkey::rewrite::{
    self, Dialect, FileReport, KnownKeys, LearnedKey, SqlError, TableKeys, learn_keys,
};
use natkey::warehouse::{SessionSettings, Warehouse, WarehouseUrl};
use serde::Serialize;

use super::Format;

#[derive(clap::Args)]
pub struct RewriteArgs {
    /// Task SQL files, or folders (every `.sql` file inside, recursively).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// postgres, mysql, sqlite, snowflake, bigquery, redshift or databricks [default: the
    /// warehouse's engine, else postgres].
    #[arg(long, value_parser = parse_dialect)]
    dialect: Option<Dialect>,
    /// A table's natural key: `schema.table=col1,col2` (repeatable).
    #[arg(long = "natural-key", value_name = "TABLE=COLUMNS", value_parser = rewrite::parse_natural_key_flag)]
    natural_keys: Vec<TableKeys>,
    /// natkey.toml (default: ./natkey.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Learn keys, surrogate columns and nullability from this warehouse (read-only).
    #[arg(long, env = "NATKEY_WAREHOUSE_URL", hide_env_values = true)]
    warehouse: Option<String>,
    /// Learn natural keys and survivor rules from an existing dedupe job (repeatable).
    #[arg(long = "dedupe-job", value_name = "FILE")]
    dedupe_jobs: Vec<PathBuf>,
    /// Analyse the INSERT/UPDATE/MERGE statements pg_stat_statements recorded (PostgreSQL).
    #[arg(long, requires = "warehouse")]
    discover: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

fn parse_dialect(text: &str) -> Result<Dialect, String> {
    text.parse()
}

/// One analysed input: its report and the text it was made from (for the diff).
struct Analysed {
    report: FileReport,
    original: Option<String>,
}

pub async fn run(args: RewriteArgs) -> Result<ExitCode, String> {
    if args.paths.is_empty() && !args.discover && args.dedupe_jobs.is_empty() {
        return Err(
            "nothing to analyse: give task files or folders, --discover --warehouse URL, or \
             --dedupe-job FILE"
                .to_string(),
        );
    }
    let config = super::audit::load_config(args.config.as_deref())?;
    // A URL, or a [[warehouse]] name of natkey.toml.
    let url = match args.warehouse.as_deref() {
        Some(warehouse) => {
            let (url, _) = super::audit::resolve_warehouse(Some(warehouse), &config)?;
            Some(WarehouseUrl::parse(&url).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let dialect = args
        .dialect
        .or(url.as_ref().map(|u| Dialect::from(u.engine())))
        .unwrap_or(Dialect::Postgres);

    let files = task_files(&args.paths)?;
    let many = files.len() > 1 || args.paths.iter().any(|p| p.is_dir());
    let mut inputs: Vec<(String, Result<String, String>)> = files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            let text = rewrite::read_task_file(path).map_err(|e| e.to_string());
            (name, text)
        })
        .collect();

    let mut learned: Vec<LearnedKey> = Vec::new();
    for job in &args.dedupe_jobs {
        let text = rewrite::read_task_file(job).map_err(|e| e.to_string())?;
        let keys =
            learn_keys(&text, dialect).map_err(|e| format!("dedupe job {}: {e}", job.display()))?;
        learned.extend(keys);
    }

    let mut keys = KnownKeys::new();
    for k in args.natural_keys {
        keys.add(k);
    }
    keys.add_config(&config);

    let mut discovery_failed = false;
    if let Some(url) = &url {
        let mut warehouse = Warehouse::connect(url, SessionSettings::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut found: Vec<Discovered> = Vec::new();
        if args.discover {
            match discover::discover(&mut warehouse).await {
                Ok(discovery) => {
                    let statements = discovery.statements;
                    eprintln!(
                        "natkey: pg_stat_statements holds {} write statement{} to tables of {url}{}",
                        statements.len(),
                        if statements.len() == 1 { "" } else { "s" },
                        if discovery.hidden > 0 {
                            format!(
                                " ({} statements of other roles are hidden from this role: \
                                 grant pg_read_all_stats to see them)",
                                discovery.hidden
                            )
                        } else {
                            String::new()
                        }
                    );
                    found = statements;
                }
                Err(message) => {
                    eprintln!("natkey: {message}");
                    discovery_failed = true;
                }
            }
        }
        let mut targets = Vec::new();
        for (name, text) in &inputs {
            if let Ok(text) = text {
                targets.extend(rewrite::write_targets_of(name, text, dialect));
            }
        }
        for d in &found {
            targets.extend(rewrite::write_targets(&d.query, Dialect::Postgres));
        }
        let mut from_warehouse = KnownKeys::new();
        let warnings =
            discover::learn_warehouse_keys(&mut warehouse, &config, &targets, &mut from_warehouse)
                .await?;
        for w in warnings {
            eprintln!("natkey: warning: {w}");
        }
        // Key resolution order: config > declared > dedupe job > inferred.
        let (trusted, inferred): (Vec<TableKeys>, Vec<TableKeys>) = from_warehouse
            .tables()
            .iter()
            .cloned()
            .partition(|k| matches!(k.source, KeySource::Config | KeySource::Declared));
        for k in trusted {
            keys.add(k);
        }
        keys.add_learned(&learned);
        for k in inferred {
            keys.add(k);
        }
        for d in found {
            inputs.push((
                format!(
                    "pg_stat_statements queryid {} ({} calls)",
                    d.queryid, d.calls
                ),
                Ok(d.query),
            ));
        }
    } else {
        keys.add_learned(&learned);
    }

    if inputs.is_empty() {
        if discovery_failed {
            return Ok(ExitCode::from(2));
        }
        if args.discover {
            print(&args.format, &Vec::<FileReport>::new(), "")?;
            return Ok(ExitCode::SUCCESS);
        }
        print_learned(&learned, args.format)?;
        return Ok(ExitCode::SUCCESS);
    }

    let analysed: Vec<Analysed> = inputs
        .into_iter()
        .map(|(name, text)| match text {
            Ok(text) => Analysed {
                report: rewrite::analyze(&name, &text, dialect, &keys),
                original: Some(text),
            },
            Err(message) => Analysed {
                report: FileReport {
                    file: name,
                    dialect,
                    idempotent: false,
                    findings: Vec::new(),
                    errors: vec![SqlError {
                        line: 0,
                        column: 0,
                        message,
                    }],
                    rewritten: None,
                },
                original: None,
            },
        })
        .collect();

    if !many
        && analysed.len() == 1
        && let (Some(e), None) = (analysed[0].report.errors.first(), &analysed[0].original)
    {
        // A single file natkey cannot read is a plain error, like a bad URL.
        return Err(e.message.clone());
    }
    let reports: Vec<FileReport> = analysed.iter().map(|a| a.report.clone()).collect();
    let originals: Vec<Option<String>> = analysed.iter().map(|a| a.original.clone()).collect();
    let text = match args.format {
        Format::Json => String::new(),
        Format::Table if many || reports.len() > 1 => rewrite::render_summary(&reports, &originals),
        Format::Table => rewrite::render_file(&reports[0], originals[0].as_deref()),
    };
    if many || reports.len() > 1 {
        print(&args.format, &reports, &text)?;
    } else {
        print(&args.format, &reports[0], &text)?;
    }
    Ok(
        if discovery_failed || reports.iter().any(|r| !r.errors.is_empty()) {
            ExitCode::from(2)
        } else if reports.iter().any(|r| !r.findings.is_empty()) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// The files to analyse: files as given, folders searched for `.sql` files (sorted).
fn task_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = files.len();
            collect_sql(path, &mut files)?;
            if files.len() == before {
                return Err(format!("{}: no .sql files in this folder", path.display()));
            }
        } else if path.exists() {
            files.push(path.clone());
        } else {
            return Err(format!("{}: no such file or folder", path.display()));
        }
    }
    Ok(files)
}

fn collect_sql(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_sql(&p, out)?;
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("sql")) {
            out.push(p);
        }
    }
    Ok(())
}

fn print<T: Serialize>(format: &Format, value: &T, text: &str) -> Result<(), String> {
    let out = match format {
        Format::Json => serde_json::to_string_pretty(value).map_err(|e| e.to_string())? + "\n",
        Format::Table => text.to_string(),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`natkey rewrite ... | head`) is not worth a panic.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

#[derive(Serialize)]
struct LearnedJson<'a> {
    table: String,
    natural_key: &'a [String],
    survivor: Option<String>,
    source: &'static str,
}

fn print_learned(learned: &[LearnedKey], format: Format) -> Result<(), String> {
    let rows: Vec<LearnedJson> = learned
        .iter()
        .map(|l| LearnedJson {
            table: l.table.to_string(),
            natural_key: &l.natural_key,
            survivor: l.survivor.as_ref().map(ToString::to_string),
            source: KeySource::DedupeJob.as_str(),
        })
        .collect();
    let mut text = String::new();
    for r in &rows {
        text.push_str(&format!(
            "{}: natural key ({}), survivor {} (source: dedupe_job)\n",
            natkey::audit::report::printable(&r.table),
            natkey::audit::report::printable(&r.natural_key.join(", ")),
            r.survivor.as_deref().unwrap_or("unknown")
        ));
    }
    print(&format, &serde_json::json!({ "learned_keys": rows }), &text)
}
