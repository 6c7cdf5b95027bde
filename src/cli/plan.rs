//! `natkey plan`: the migration SQL for audited tables, from a live audit or a saved report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use natkey::audit::report::{Report, Status, TableReport};
use natkey::config::TableName;
use natkey::dialect::Dialect;
use natkey::plan::{self, PlanInput};

use super::audit::{AuditScope, load_config, parse_table_name, resolve_warehouse, run_audit};

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Audit this warehouse now (postgres://..., mysql://..., sqlite://PATH, or a [[warehouse]]
    /// name of natkey.toml).
    #[arg(
        long,
        env = "NATKEY_WAREHOUSE_URL",
        hide_env_values = true,
        conflicts_with = "report"
    )]
    warehouse: Option<String>,
    /// Plan from a saved `natkey audit --format json` report instead (offline).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The table to plan: `table` or `schema.table` (repeatable).
    #[arg(long = "table", value_name = "NAME", value_parser = parse_table_name)]
    tables: Vec<TableName>,
    /// Plan every table with duplicates, one file each in --output-dir.
    #[arg(long, conflicts_with = "tables", requires = "output_dir")]
    all: bool,
    /// postgres, mysql, sqlite, snowflake, bigquery, redshift or databricks
    /// [default: the audited warehouse's].
    #[arg(long, value_parser = parse_dialect)]
    dialect: Option<Dialect>,
    /// The load task's SQL, to put its idempotent version in the plan.
    #[arg(long, value_name = "FILE")]
    task_sql: Option<PathBuf>,
    /// Print only the rollback script (drop the constraint, restore the backed-up rows).
    #[arg(long)]
    rollback: bool,
    /// Rows per cleanup transaction on MySQL/MariaDB: a cleanup of more excess rows runs in
    /// batches of this many.
    #[arg(long, value_name = "N", default_value_t = natkey::plan::DEFAULT_BATCH_ROWS,
          value_parser = clap::value_parser!(u64).range(1..))]
    batch_rows: u64,
    /// Write the plan to this file instead of standard output.
    #[arg(long, short, value_name = "FILE", conflicts_with = "output_dir")]
    output: Option<PathBuf>,
    /// Write one file per table into this folder.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// natkey.toml (default: ./natkey.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Learn natural keys and survivor rules from an existing dedupe job (repeatable; with
    /// --warehouse).
    #[arg(long = "dedupe-job", value_name = "FILE", requires = "warehouse")]
    dedupe_jobs: Vec<PathBuf>,
}

fn parse_dialect(text: &str) -> Result<Dialect, String> {
    text.parse()
}

pub async fn run(args: PlanArgs) -> Result<ExitCode, String> {
    if args.tables.is_empty() && !args.all {
        return Err("name the table to plan with --table (or --all with --output-dir)".into());
    }
    let report = match (&args.report, &args.warehouse) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading report {}: {e}", path.display()))?;
            plan::read_report(&text).map_err(|e| format!("report {}: {e}", path.display()))?
        }
        (None, Some(warehouse)) => {
            let config = load_config(args.config.as_deref())?;
            let (url, _) = resolve_warehouse(Some(warehouse), &config)?;
            let scope = AuditScope {
                tables: args.tables.clone(),
                dedupe_jobs: args.dedupe_jobs.clone(),
                ..AuditScope::default()
            };
            run_audit(&url, &config, scope, None, None).await?
        }
        (None, None) => {
            return Err(
                "give --warehouse URL to audit now, or --report FILE to plan offline".into(),
            );
        }
    };
    let tables = select(&report, &args)?;
    let task_sql = match &args.task_sql {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading task SQL {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let dialect = args.dialect.unwrap_or(report.dialect.into());
    let mut scripts = Vec::new();
    for table in &tables {
        let (task, notes) = match (&task_sql, &args.task_sql) {
            (Some(text), Some(path)) => {
                let (task, notes) = rewrite_task(text, &path.display().to_string(), table, dialect);
                (Some(task), notes)
            }
            _ => (None, Vec::new()),
        };
        let mut input = PlanInput::from_report(&report, table, dialect, task.as_deref());
        input.task_notes = notes;
        input.batch_rows = args.batch_rows;
        let plan = plan::plan_table(&input).map_err(|e| e.to_string())?;
        let text = if args.rollback {
            plan.render_rollback()
        } else {
            plan.render()
        };
        scripts.push((*table, text));
    }
    match (&args.output_dir, &args.output) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let tables: Vec<&TableReport> = scripts.iter().map(|(t, _)| *t).collect();
            let names = file_names(&tables, dialect, args.rollback);
            for ((_, text), name) in scripts.iter().zip(names) {
                let path = dir.join(name);
                write(&path, text)?;
                eprintln!("natkey: wrote {}", path.display());
            }
            if scripts.is_empty() {
                eprintln!("natkey: no table has duplicates: nothing to plan");
            }
        }
        (None, Some(path)) => write(path, &joined(&scripts))?,
        (None, None) => print!("{}", joined(&scripts)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The user's load task made idempotent by the rewriter, with the table's key from the report;
/// the notes say what changed, or what has no automatic rewrite.
fn rewrite_task(
    text: &str,
    file: &str,
    table: &TableReport,
    dialect: Dialect,
) -> (String, Vec<String>) {
    use natkey::rewrite::{KnownKeys, TableKeys, analyze};
    let mut keys = KnownKeys::new();
    if let Some(known) = TableKeys::from_report(table) {
        keys.add(known);
    }
    let report = analyze(file, text, dialect, &keys);
    let mut notes = Vec::new();
    let task = match (&report.rewritten, report.idempotent) {
        (Some(rewritten), _) => {
            notes.push(format!(
                "Your load task ({file}), rewritten by natkey rewrite:"
            ));
            rewritten.clone()
        }
        (None, true) => {
            notes.push(format!("Your load task ({file}) is already idempotent:"));
            text.to_string()
        }
        (None, false) => {
            notes.push(format!(
                "Your load task ({file}) as it is: natkey has no automatic rewrite for it."
            ));
            text.to_string()
        }
    };
    for f in &report.findings {
        notes.push(format!("{} (line {}): {}", f.rule, f.line, f.message));
        notes.push(format!("fix: {}", f.fix));
    }
    for e in &report.errors {
        notes.push(format!(
            "does not parse (line {}, column {}): {}",
            e.line, e.column, e.message
        ));
    }
    let notes = notes
        .iter()
        .flat_map(|n| n.lines().map(str::to_string))
        .collect();
    (task, notes)
}

fn joined(scripts: &[(&TableReport, String)]) -> String {
    scripts
        .iter()
        .map(|(_, text)| text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The tables to plan: those named (each must be in the report), or with --all every table
/// with duplicates.
fn select<'r>(report: &'r Report, args: &PlanArgs) -> Result<Vec<&'r TableReport>, String> {
    if args.all {
        return Ok(report
            .tables
            .iter()
            .filter(|t| t.status == Status::Duplicates)
            .collect());
    }
    let mut selected = Vec::new();
    for name in &args.tables {
        let found: Vec<&TableReport> = report
            .tables
            .iter()
            .filter(|t| name.name == t.name && name.schema.as_ref().is_none_or(|s| *s == t.schema))
            .collect();
        match found.as_slice() {
            [] => {
                return Err(format!(
                    "unknown table {name}: the report has no such table"
                ));
            }
            [one] => selected.push(*one),
            _ => {
                return Err(format!(
                    "table name {name} is ambiguous: name its schema ({})",
                    found
                        .iter()
                        .map(|t| format!("{}.{}", t.schema, t.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(selected)
}

/// File names safe on every file system, whatever the tables are called, and apart: a name
/// whose table or schema had to be cleaned or shortened, or that would collide with another
/// (also when only letter case differs, for case-insensitive file systems), gets a short hash
/// of the real names.
fn file_names(tables: &[&TableReport], dialect: Dialect, rollback: bool) -> Vec<String> {
    let part = |s: &str| {
        let clean: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        let exact = clean == s;
        (clean, exact)
    };
    let bases: Vec<(String, bool)> = tables
        .iter()
        .map(|t| {
            let (schema, schema_exact) = part(&t.schema);
            let (name, name_exact) = part(&t.name);
            (format!("{schema}.{name}"), schema_exact && name_exact)
        })
        .collect();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (base, _) in &bases {
        *seen.entry(base.to_lowercase()).or_default() += 1;
    }
    tables
        .iter()
        .zip(&bases)
        .map(|(t, (base, exact))| {
            let hashed = if *exact && seen[&base.to_lowercase()] == 1 {
                String::new()
            } else {
                format!("-{:08x}", fnv1a(&format!("{}\u{0}{}", t.schema, t.name)))
            };
            format!(
                "{base}{hashed}.{dialect}{}.sql",
                if rollback { ".rollback" } else { "" }
            )
        })
        .collect()
}

/// FNV-1a: stable across builds and platforms.
fn fnv1a(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}
