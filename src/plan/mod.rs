//! The planner: for one audited table and one dialect, the migration that makes the database
//! enforce the natural key — preflight, backup, cleanup, enforce, the idempotent load, verify,
//! rollback — as one commented script. natkey only writes it; people run it.
//!
//! Every plan is rerunnable: a second run finds no duplicate left to back up or delete, and
//! every DDL step is guarded (`IF NOT EXISTS`, catalog checks). Nothing is deleted that was not
//! first copied to the backup table in the same transaction (where the engine has transactions).

mod bigquery;
mod databricks;
mod mysql;
mod postgres;
mod redshift;
mod snowflake;
mod sqlite;
mod warehouse;

use std::fmt::Write as _;

use crate::audit::report::{ColumnReport, Report, Status, TableReport};
use crate::config::SurvivorRule;
use crate::dialect::Dialect;
use crate::keys::NaturalKey;
use crate::warehouse::{ColumnKind, kind_of};

/// Why no plan can be written.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{table}: the audit failed ({message}), so there is nothing to plan from")]
    AuditFailed { table: String, message: String },
    #[error(
        "{table} has no natural key ({reason}). Declare it in natkey.toml:\n\n[[table]]\nname = {name}\nnatural_key = [\"column\", ...]\n"
    )]
    NoKey {
        table: String,
        name: String,
        reason: String,
    },
    #[error(
        "{table} has {groups} conflicting duplicate group(s): rows that share the natural key but differ, so a survivor rule must choose which row to keep. Declare it in natkey.toml:\n\n[[table]]\nname = {name}\nsurvivor = \"latest:<timestamp column>\"   # or earliest:COL | lowest_surrogate\n"
    )]
    NoSurvivorRule {
        table: String,
        name: String,
        groups: i64,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The facts a plan is written from.
pub struct PlanInput<'a> {
    pub table: &'a TableReport,
    pub dialect: Dialect,
    /// The engine the audit read (plans for it may use its version).
    pub audited_dialect: Dialect,
    /// `server_version_num` on PostgreSQL, `VERSION()` on MySQL.
    pub server_version: &'a str,
    /// `YYYY-MM-DD` of the audit: names the backup table, so a plan is the same every time it
    /// is written from the same report.
    pub audited_on: &'a str,
    /// The rewritten load task, when the user gave one.
    pub task_sql: Option<&'a str>,
    /// What `natkey rewrite` said about the user's task (comments above it).
    pub task_notes: Vec<String>,
    /// Rows per cleanup transaction where the engine needs batches (MySQL/MariaDB: a cleanup
    /// of more excess rows than this runs in batches of this many).
    pub batch_rows: u64,
}

/// The default of [`PlanInput::batch_rows`] (`natkey plan --batch-rows`).
pub const DEFAULT_BATCH_ROWS: u64 = 10_000;

impl<'a> PlanInput<'a> {
    /// The input for one table of a report.
    pub fn from_report(
        report: &'a Report,
        table: &'a TableReport,
        dialect: Dialect,
        task_sql: Option<&'a str>,
    ) -> Self {
        PlanInput {
            table,
            dialect,
            audited_dialect: report.dialect.into(),
            server_version: &report.server_version,
            audited_on: report.started_at.get(..10).unwrap_or("1970-01-01"),
            task_sql,
            task_notes: Vec::new(),
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }
}

/// One step of a plan: what it does and why (comments), and its statements.
#[derive(Debug, Clone)]
pub struct Step {
    pub title: String,
    pub why: Vec<String>,
    pub statements: Vec<String>,
    /// Printed as comments: SQL to deploy elsewhere (the load task) or to run only to undo.
    pub commented: bool,
}

/// A migration for one table in one dialect.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dialect: Dialect,
    pub header: Vec<String>,
    pub steps: Vec<Step>,
    /// Undoes the plan: drops the constraint and restores the backed-up rows.
    pub rollback: Vec<String>,
}

impl Plan {
    /// The whole script: header, steps, and the rollback as comments.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "-- {}", comment_text(line, self.dialect));
        }
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(out, "\n-- {}. {}", i + 1, step.title);
            for line in &step.why {
                let _ = writeln!(out, "-- {}", comment_text(line, self.dialect));
            }
            for statement in &step.statements {
                if step.commented {
                    for line in commented_lines(statement, self.dialect) {
                        let _ = writeln!(out, "--   {line}");
                    }
                } else {
                    let _ = writeln!(out, "{}", terminated(statement));
                }
            }
        }
        if !self.rollback.is_empty() {
            let _ = writeln!(
                out,
                "\n-- Rollback: to undo this plan, run `natkey plan ... --rollback` (the same script\n\
                 -- as below, uncommented). It drops the constraint and restores the backed-up rows.\n\
                 -- >>> rollback"
            );
            for statement in &self.rollback {
                for line in commented_lines(statement, self.dialect) {
                    let _ = writeln!(out, "--   {line}");
                }
            }
            let _ = writeln!(out, "-- <<< rollback");
        }
        out
    }

    /// The rollback alone, ready to run.
    pub fn render_rollback(&self) -> String {
        let mut out = String::from(
            "-- Rollback of natkey's plan: drops the natural-key constraint and restores the\n\
             -- rows the cleanup removed, from the backup table.\n",
        );
        out.push_str(match self.dialect {
            Dialect::Databricks => {
                "-- Databricks has no transaction around the restore and the emptying of the\n\
                 -- backup: each commits on its own. If the DELETE fails after the INSERT, run the\n\
                 -- DELETE alone, not the whole rollback (it would restore the rows twice).\n"
            }
            Dialect::Snowflake | Dialect::Redshift => {
                "-- Running it twice restores nothing twice: the backup is emptied in the same\n\
                 -- transaction. (A second run stops at the DROP CONSTRAINT, which has no IF EXISTS\n\
                 -- here: the constraint is already gone.)\n"
            }
            _ => {
                "-- Running it twice restores nothing twice: the backup is emptied in the same\n\
                 -- transaction.\n"
            }
        });
        for statement in &self.rollback {
            let _ = writeln!(out, "{}", terminated(statement));
        }
        out
    }

    /// Every executable statement, in order (the commented steps left out).
    pub fn statements(&self) -> impl Iterator<Item = &str> {
        self.steps
            .iter()
            .filter(|s| !s.commented)
            .flat_map(|s| s.statements.iter().map(String::as_str))
    }
}

/// Text that stays inside a `--` comment whatever names it holds: a line break (or any control
/// character) in a catalog name would otherwise end the comment and turn the rest of the name
/// into SQL — or, in psql and the mysql client, into client commands. Control characters are
/// shown escaped, and for MySQL so are backslashes (its client reads `\` commands).
fn comment_text(text: &str, dialect: Dialect) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || (c == '\\' && dialect == Dialect::MySql) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// psql's `\gexec` (run each row of the query as a statement, outside any transaction block)
/// ends the query instead of `;`.
pub(crate) const GEXEC: &str = "\\gexec";
/// How a MySQL/MariaDB client statement that changes the delimiter starts.
pub(crate) const DELIMITER: &str = "DELIMITER ";

/// A statement with its terminator: `;`, or nothing after a psql `\gexec`.
fn terminated(statement: &str) -> String {
    // A MySQL stored procedure is written between DELIMITER lines, which end it themselves.
    if statement.ends_with(GEXEC) || statement.starts_with(DELIMITER) {
        statement.to_string()
    } else {
        format!("{statement};")
    }
}

/// A statement (plus its `;`) as comment lines: split at every line break, `\r` included,
/// since PostgreSQL also ends a `--` comment there.
fn commented_lines(statement: &str, dialect: Dialect) -> Vec<String> {
    terminated(statement)
        .split(['\n', '\r'])
        .map(|line| comment_text(line, dialect))
        .collect()
}

/// What the per-dialect writers need, derived once from the report.
pub(crate) struct Table<'a> {
    pub d: Dialect,
    pub report: &'a TableReport,
    pub key: &'a NaturalKey,
    /// `"schema"."table"` (SQLite: `"table"` — the plan runs against the file's main schema).
    pub qualified: String,
    pub columns: Vec<&'a ColumnReport>,
    /// Key columns that may hold NULL.
    pub nullable_key: Vec<&'a ColumnReport>,
    pub survivor: Option<SurvivorRule>,
    /// Backup table, qualified; its schema (created by the plan) when the dialect has schemas.
    pub backup: String,
    pub backup_schema: Option<String>,
    /// Name of the unique index / constraint.
    pub constraint: String,
    pub has_duplicates: bool,
    pub mutable: bool,
    /// The audit read this dialect's engine, so column types are spelled as it spells them.
    pub same_engine: bool,
    /// Rows per cleanup transaction where the engine needs batches.
    pub batch_rows: u64,
}

impl Table<'_> {
    pub fn q(&self, ident: &str) -> String {
        self.d.quote_ident(ident)
    }

    pub fn key_list(&self, prefix: &str) -> String {
        self.key
            .columns
            .iter()
            .map(|c| format!("{prefix}{}", self.q(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Columns a plain INSERT may write (computed columns left out).
    pub fn insertable(&self) -> Vec<&ColumnReport> {
        self.columns
            .iter()
            .copied()
            .filter(|c| !c.computed)
            .collect()
    }

    pub fn column_list(&self, prefix: &str) -> String {
        self.insertable()
            .iter()
            .map(|c| format!("{prefix}{}", self.q(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The columns the load template writes: payload and load metadata (the task sets those,
    /// e.g. `now()`, and they may have no default); the surrogate key is left to the database.
    pub fn load_columns(&self) -> Vec<&ColumnReport> {
        self.insertable()
            .into_iter()
            .filter(|c| !self.report.surrogate_key.contains(&c.name))
            .collect()
    }

    /// The columns a retry of a mutable fact updates: the load columns outside the key.
    pub fn updated_columns(&self) -> Vec<&ColumnReport> {
        self.load_columns()
            .into_iter()
            .filter(|c| !self.key.columns.contains(&c.name))
            .collect()
    }

    /// The action of `ON CONFLICT (key)`: nothing for append-only facts; for mutable facts (the
    /// table had conflicting groups) the source's payload, `{excluded}.col`, asserted.
    pub fn on_conflict_action(&self, excluded: &str) -> String {
        let updates: Vec<String> = self
            .updated_columns()
            .iter()
            .filter(|_| self.mutable)
            .map(|c| format!("{0} = {excluded}.{0}", self.q(&c.name)))
            .collect();
        if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        }
    }

    /// `ORDER BY` of `ROW_NUMBER()` so that row 1 of each group is the survivor; `tiebreak`
    /// (the row identity) makes the choice deterministic.
    pub fn survivor_order(&self, tiebreak: &[String]) -> String {
        let nulls_last = |c: &str| format!("CASE WHEN {} IS NULL THEN 1 ELSE 0 END", self.q(c));
        let mut order: Vec<String> = match &self.survivor {
            Some(SurvivorRule::Latest(c)) => vec![nulls_last(c), format!("{} DESC", self.q(c))],
            Some(SurvivorRule::Earliest(c)) => vec![nulls_last(c), format!("{} ASC", self.q(c))],
            Some(SurvivorRule::LowestSurrogate) => self
                .report
                .surrogate_key
                .iter()
                .map(|s| format!("{} ASC", self.q(s)))
                .collect(),
            None => Vec::new(),
        };
        order.extend(tiebreak.iter().cloned());
        if order.is_empty() {
            order = self.key.columns.iter().map(|c| self.q(c)).collect();
        }
        order.join(", ")
    }

    /// `ROW_NUMBER() OVER (PARTITION BY key ORDER BY survivor)`.
    pub fn row_number(&self, tiebreak: &[String]) -> String {
        format!(
            "ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {})",
            self.key_list(""),
            self.survivor_order(tiebreak)
        )
    }

    /// A NULL-safe equality of two key columns, as the dialect spells it.
    pub fn null_safe_eq(&self, left: &str, right: &str) -> String {
        self.d.null_safe_eq(left, right)
    }

    /// The staging relation the load template reads from.
    pub fn staging(&self) -> String {
        self.q(&format!("staging_{}", sanitize(&self.report.name)))
    }
}

/// The query that must return the audit's figures before the cleanup.
fn preflight(t: &Table) -> Vec<String> {
    let mut statements = vec![format!(
        "SELECT COUNT(*) AS duplicate_groups, SUM(natkey_n) - COUNT(*) AS excess_rows\n\
         FROM (SELECT {key}, COUNT(*) AS natkey_n FROM {table} GROUP BY {key} HAVING COUNT(*) > 1) natkey_preflight",
        key = t.key_list(""),
        table = t.qualified,
    )];
    if !t.nullable_key.is_empty() {
        let condition = t
            .nullable_key
            .iter()
            .map(|c| format!("{} IS NULL", t.q(&c.name)))
            .collect::<Vec<_>>()
            .join(" OR ");
        statements.push(format!(
            "SELECT COUNT(*) AS rows_with_null_key FROM {} WHERE {condition}",
            t.qualified
        ));
    }
    statements
}

/// The query that proves the dedupe job is now a no-op.
fn verify(t: &Table) -> String {
    format!(
        "SELECT COUNT(*) AS duplicate_groups\n\
         FROM (SELECT {key} FROM {table} GROUP BY {key} HAVING COUNT(*) > 1) natkey_verify",
        key = t.key_list(""),
        table = t.qualified
    )
}

/// What each dialect writes.
pub(crate) struct DialectPlan {
    /// Extra header lines (engine specifics, NULL handling).
    pub notes: Vec<String>,
    /// Session settings that make every later step fail fast instead of waiting on locks
    /// (the first step, so a plan that only enforces has them too).
    pub session: Vec<String>,
    /// Statements before the backup (MySQL: a row identity).
    pub prepare: Vec<String>,
    pub backup: Vec<String>,
    pub cleanup: Vec<String>,
    pub cleanup_why: Vec<String>,
    pub enforce: Vec<String>,
    pub enforce_why: Vec<String>,
    pub load: Vec<String>,
    pub load_why: Vec<String>,
    pub rollback: Vec<String>,
}

/// Writes the plan for one audited table.
pub fn plan_table(input: &PlanInput) -> Result<Plan, PlanError> {
    let report = input.table;
    let display = format!("{}.{}", report.schema, report.name);
    let config_name = {
        let name = crate::config::TableName {
            schema: Some(report.schema.clone()),
            name: report.name.clone(),
        };
        // A TOML basic string: quotes and backslashes escaped.
        format!(
            "\"{}\"",
            name.to_string().replace('\\', "\\\\").replace('"', "\\\"")
        )
    };
    match report.status {
        Status::Error => {
            return Err(PlanError::AuditFailed {
                table: display,
                message: report.message.clone().unwrap_or_default(),
            });
        }
        Status::NoKey => {
            return Err(PlanError::NoKey {
                table: display,
                name: config_name,
                reason: report
                    .message
                    .clone()
                    .unwrap_or_else(|| "none found".into()),
            });
        }
        _ => {}
    }
    let Some(key) = &report.natural_key else {
        return Err(PlanError::NoKey {
            table: display,
            name: config_name,
            reason: "none found".into(),
        });
    };
    if report.columns.is_empty() {
        return Err(PlanError::Invalid(format!(
            "the report has no column list for {display}: audit again with this version of natkey"
        )));
    }
    check_report(report, key, &display)?;
    let conflicting = report.conflicting_groups.unwrap_or(0);
    if conflicting > 0 && report.survivor.is_none() {
        return Err(PlanError::NoSurvivorRule {
            table: display,
            name: config_name,
            groups: conflicting,
        });
    }
    let columns: Vec<&ColumnReport> = report.columns.iter().collect();
    let nullable_key: Vec<&ColumnReport> = key
        .columns
        .iter()
        .filter_map(|k| columns.iter().copied().find(|c| &c.name == k && c.nullable))
        .collect();
    let d = input.dialect;
    let date = input.audited_on.replace('-', "");
    let schema_of_table = (d != Dialect::Sqlite).then(|| report.schema.clone());
    let qualified = match &schema_of_table {
        Some(s) => format!("{}.{}", d.quote_ident(s), d.quote_ident(&report.name)),
        None => d.quote_ident(&report.name),
    };
    let (backup, backup_schema) = match d {
        Dialect::Sqlite => (
            d.quote_ident(&object_name(&["natkey_backup", &report.name, &date], 63)),
            None,
        ),
        _ => (
            format!(
                "{}.{}",
                d.quote_ident("natkey_backup"),
                d.quote_ident(&object_name(&[&report.schema, &report.name, &date], 63))
            ),
            Some("natkey_backup".to_string()),
        ),
    };
    let table = Table {
        d,
        report,
        key,
        qualified,
        columns,
        nullable_key,
        survivor: report.survivor.clone(),
        backup,
        backup_schema,
        constraint: object_name(&[&report.name, "natural_key"], 63),
        has_duplicates: report.duplicate_groups.unwrap_or(0) > 0,
        mutable: conflicting > 0,
        same_engine: input.audited_dialect == d,
        batch_rows: input.batch_rows.max(1),
    };

    let mut header = header(&table, input);
    if report.status == Status::Enforced && key.enforced {
        header.push(String::new());
        header.push(format!(
            "{display}: the database already enforces the natural key ({}). Nothing to do.",
            key.columns.join(", ")
        ));
        return Ok(Plan {
            dialect: d,
            header,
            steps: Vec::new(),
            rollback: Vec::new(),
        });
    }
    let dp = match d {
        Dialect::Postgres => postgres::plan(&table, input),
        Dialect::MySql => mysql::plan(&table),
        Dialect::Sqlite => sqlite::plan(&table),
        Dialect::Snowflake => snowflake::plan(&table),
        Dialect::BigQuery => bigquery::plan(&table),
        Dialect::Redshift => redshift::plan(&table),
        Dialect::Databricks => databricks::plan(&table),
    };
    header.extend(dp.notes.iter().cloned());

    let mut steps = Vec::new();
    if !dp.session.is_empty() {
        steps.push(Step {
            title: "Session settings".into(),
            why: vec![
                "Every later step waits at most a few seconds for a lock (a busy table makes it"
                    .into(),
                "fail, not queue every other query behind it), and no statement runs forever."
                    .into(),
            ],
            statements: dp.session,
            commented: false,
        });
    }
    steps.push(Step {
        title: "Preflight".into(),
        why: vec![
            format!(
                "Must return duplicate_groups = {}, excess_rows = {} (the audit of {}). More means the",
                report.duplicate_groups.unwrap_or(0),
                report.excess_rows.unwrap_or(0),
                input.audited_on
            ),
            "load task is still inserting copies: pause it first (see the deploy order above)."
                .into(),
        ],
        statements: preflight(&table),
        commented: false,
    });
    if !dp.prepare.is_empty() {
        steps.push(Step {
            title: "Row identity".into(),
            why: vec![
                "The table has no surrogate key, so single rows cannot be addressed: add a".into(),
                "temporary auto-increment column (the cleanup drops it again).".into(),
            ],
            statements: dp.prepare,
            commented: false,
        });
    }
    if table.has_duplicates {
        steps.push(Step {
            title: "Backup".into(),
            why: vec![
                format!(
                    "A table for the rows the cleanup removes, {}: every column, so the",
                    table.backup
                ),
                "rollback can restore them exactly.".into(),
            ],
            statements: dp.backup,
            commented: false,
        });
        steps.push(Step {
            title: "Cleanup".into(),
            why: dp.cleanup_why,
            statements: dp.cleanup,
            commented: false,
        });
    }
    steps.push(Step {
        title: "Enforce the natural key".into(),
        why: dp.enforce_why,
        statements: dp.enforce,
        commented: false,
    });
    let (load, load_why) = match input.task_sql {
        Some(task) => (
            vec![task.trim().trim_end_matches(';').to_string()],
            if input.task_notes.is_empty() {
                vec!["Your load task (natkey rewrite).".into()]
            } else {
                input.task_notes.clone()
            },
        ),
        None => (dp.load, dp.load_why),
    };
    steps.push(Step {
        title: "Idempotent load task (deploy with the task, not here)".into(),
        why: load_why,
        statements: load,
        commented: true,
    });
    steps.push(Step {
        title: "Verify".into(),
        why: vec![
            "Must return 0: the nightly dedupe job has nothing left to do and can be deleted."
                .into(),
        ],
        statements: vec![verify(&table)],
        commented: false,
    });
    Ok(Plan {
        dialect: d,
        header,
        steps,
        rollback: dp.rollback,
    })
}

/// What a report (perhaps edited by hand) must hold for a plan to make sense: a natural key
/// of distinct columns of the table, and surrogate, partition and survivor columns that exist.
fn check_report(report: &TableReport, key: &NaturalKey, display: &str) -> Result<(), PlanError> {
    let invalid = |what: String| {
        Err(PlanError::Invalid(format!(
            "the report for {display}: {what}"
        )))
    };
    if key.columns.is_empty() {
        return invalid("natural_key.columns is empty: name the key's columns".into());
    }
    let is_column = |c: &str| report.columns.iter().any(|col| col.name == c);
    for (i, c) in key.columns.iter().enumerate() {
        if !is_column(c) {
            return invalid(format!(
                "natural-key column {c:?} is not a column of the table"
            ));
        }
        if key.columns[..i].contains(c) {
            return invalid(format!("natural-key column {c:?} is listed twice"));
        }
    }
    for (what, list) in [
        ("surrogate_key", &report.surrogate_key),
        ("partition_key", &report.partition_key),
    ] {
        if let Some(c) = list.iter().find(|c| !is_column(c)) {
            return invalid(format!("{what} column {c:?} is not a column of the table"));
        }
    }
    match &report.survivor {
        Some(SurvivorRule::Latest(c) | SurvivorRule::Earliest(c)) if !is_column(c) => invalid(
            format!("the survivor rule's column {c:?} is not a column of the table"),
        ),
        Some(SurvivorRule::LowestSurrogate) if report.surrogate_key.is_empty() => {
            invalid("the survivor rule lowest_surrogate needs a surrogate_key".into())
        }
        _ => Ok(()),
    }
}

fn header(t: &Table, input: &PlanInput) -> Vec<String> {
    let r = t.report;
    let mut h = vec![
        format!("natkey plan for {}.{} ({} dialect)", r.schema, r.name, t.d),
        format!(
            "natural key: ({}) from {}{}",
            t.key.columns.join(", "),
            t.key.source.as_str(),
            if t.key.source == crate::keys::KeySource::Inferred {
                format!(", confidence {:.2}", t.key.confidence)
            } else {
                String::new()
            }
        ),
        format!(
            "audited {}: {} rows, {} duplicate groups ({} exact, {} conflicting), {} excess rows",
            input.audited_on,
            r.rows.unwrap_or(0),
            r.duplicate_groups.unwrap_or(0),
            r.exact_groups.unwrap_or(0),
            r.conflicting_groups.unwrap_or(0),
            r.excess_rows.unwrap_or(0)
        ),
    ];
    for m in &r.measures {
        if m.overcount_max.0.is_zero() {
            continue;
        }
        h.push(format!(
            "overcount of SUM({}): {} (exact groups), {}..{} over survivor choices{}",
            m.column,
            m.overcount,
            m.overcount_min,
            m.overcount_max,
            m.overcount_survivor
                .map(|s| format!(", {s} under the survivor rule"))
                .unwrap_or_default()
        ));
    }
    h.push(format!(
        "survivor rule: {}",
        t.survivor
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(
                || "none needed (every group is exact): an arbitrary copy is kept".into()
            )
    ));
    h.push(String::new());
    h.push("Deploy in this order:".into());
    h.push(
        "  1. Pause the load task (or run between loads): a non-idempotent task still running"
            .into(),
    );
    h.push(
        "     inserts new duplicates between the cleanup and the index build, which then fails."
            .into(),
    );
    h.push("  2. Run this script (preflight, backup, cleanup, enforce, verify).".into());
    h.push("  3. Deploy the idempotent load task of step 'Idempotent load task'".into());
    if t.d.enforces_unique() {
        h.push(
            "     (ON CONFLICT / ON DUPLICATE KEY need the unique index this script creates)."
                .into(),
        );
    } else {
        h.push("     (MERGE on the natural key over a deduplicated source).".into());
    }
    h.push("  4. Resume the task, and delete the nightly dedupe job.".into());
    if !t.d.enforces_unique() {
        h.push(String::new());
        h.push(format!(
            "{} does NOT enforce PRIMARY KEY/UNIQUE constraints: the constraint below is",
            t.d
        ));
        h.push(
            "informational only. The idempotent load SQL and a scheduled natkey audit are the"
                .into(),
        );
        h.push("enforcement: nothing in the database will reject a new duplicate.".into());
    }
    h
}

/// Lower-case letters, digits and underscores only.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    if out.is_empty() { "t".into() } else { out }
}

/// A name natkey gives an object (index, constraint, backup table): the sanitized parts joined
/// by `__`, within `max` bytes; a short hash of the original parts keeps truncated or
/// sanitized names apart.
pub(crate) fn object_name(parts: &[&str], max: usize) -> String {
    let clean: Vec<String> = parts.iter().map(|p| sanitize(p)).collect();
    let joined = clean.join("__");
    let exact = parts.iter().zip(&clean).all(|(p, c)| p == c);
    if exact && joined.len() <= max {
        return joined;
    }
    // FNV-1a: stable across builds and platforms.
    let mut hash: u32 = 0x811c_9dc5;
    for b in parts.join("\u{0}").bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let suffix = format!("_{hash:08x}");
    let keep = max.saturating_sub(suffix.len()).min(joined.len());
    format!("{}{suffix}", &joined[..keep])
}

/// A literal of the column's type that stands in for NULL in a NULL-safe unique key (the key
/// also holds an `IS NULL` flag, so it never collides with a real value).
pub(crate) fn stand_in(column: &ColumnReport, d: Dialect) -> String {
    match kind_of(&column.data_type) {
        ColumnKind::Integer | ColumnKind::Decimal | ColumnKind::Float | ColumnKind::Boolean => {
            "0".into()
        }
        ColumnKind::Date => d.quote_literal("1970-01-01"),
        ColumnKind::Timestamp => d.quote_literal("1970-01-01 00:00:01"),
        _ => "''".into(),
    }
}

/// Loads a report written by `natkey audit --format json`.
pub fn read_report(text: &str) -> Result<Report, String> {
    let report: Report =
        serde_json::from_str(text).map_err(|e| format!("not a natkey report: {e}"))?;
    if report.natkey_report != crate::audit::report::REPORT_VERSION {
        return Err(format!(
            "report version {} is not supported (this natkey reads version {})",
            report.natkey_report,
            crate::audit::report::REPORT_VERSION
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
