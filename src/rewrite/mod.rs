//! Task-SQL analysis and rewriting: is running this load task twice the same as running it once,
//! and if not, the smallest edit of the user's text that makes retries converge.
//!
//! **Invariant:** the rewriter never executes SQL. It parses task text with sqlparser, reports
//! findings, and returns edited text; the only warehouse access is reading catalogs (key
//! learning) and `pg_stat_statements` (discovery) through the read-only [`Warehouse`].
//!
//! Module map:
//! - `jinja.rs`: Jinja placeholders substituted before parsing (same byte length, so every
//!   offset of the parsed text is an offset of the user's text) and dbt `config()` reading.
//! - `source.rs`: splitting a file into statements (one unparseable statement never hides the
//!   others), byte offsets of parser spans, table names as written.
//! - `edit.rs`: minimal text edits located by source spans, applied to the user's text.
//! - `rules/`: one file per rule, its tests beside it.
//! - `dedupe.rs`: natural keys and survivor rules learned from an existing dedupe job.
//! - `discover.rs`: write statements found in `pg_stat_statements`.
//! - `diff.rs`: the unified diff shown for a rewrite; `render.rs`: the terminal output.
//!
//! [`Warehouse`]: crate::warehouse::Warehouse

pub mod dedupe;
mod diff;
pub mod discover;
mod edit;
mod jinja;
mod render;
pub mod rules;
mod source;

use std::path::Path;

use serde::Serialize;

use crate::config::{Config, SurvivorRule, TableName};
use crate::keys::KeySource;

pub use self::dedupe::{LearnedKey, learn_keys};
pub use self::diff::unified_diff;
pub use self::render::{render_file, render_summary};
pub use self::source::TableTarget;

use self::edit::Edit;
use self::source::FileContext;

/// The largest task file natkey reads. Task SQL is small; a bigger file is almost certainly a
/// data dump passed by mistake.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;

/// The dialects the rewriter reads and writes: natkey's one [`crate::dialect::Dialect`]
/// (parsing, identifier quoting), shared with the planner.
pub use crate::dialect::Dialect;

/// `BEGIN` / `COMMIT` as a dialect spells them, when it has multi-statement transactions.
pub(crate) fn transaction_words(dialect: Dialect) -> Option<(&'static str, &'static str)> {
    match dialect {
        Dialect::Postgres | Dialect::Sqlite | Dialect::Redshift | Dialect::Snowflake => {
            Some(("BEGIN;", "COMMIT;"))
        }
        Dialect::MySql => Some(("START TRANSACTION;", "COMMIT;")),
        Dialect::BigQuery => Some(("BEGIN TRANSACTION;", "COMMIT TRANSACTION;")),
        Dialect::Databricks => None,
    }
}

/// What natkey knows about one table the task SQL writes to.
#[derive(Debug, Clone, PartialEq)]
pub struct TableKeys {
    pub table: TableName,
    /// The columns that identify one logical record (empty when unknown).
    pub natural_key: Vec<String>,
    /// Columns generated per insert.
    pub surrogate_key: Vec<String>,
    /// Columns that may hold NULL (from the catalog, or `nullable` in natkey.toml).
    pub nullable: Vec<String>,
    pub source: KeySource,
    pub survivor: Option<SurvivorRule>,
}

impl TableKeys {
    pub fn new(table: TableName, natural_key: Vec<String>, source: KeySource) -> Self {
        TableKeys {
            table,
            natural_key,
            surrogate_key: Vec::new(),
            nullable: Vec::new(),
            source,
            survivor: None,
        }
    }

    /// The keys of an audited table: its natural key (with source), surrogate key, nullable
    /// columns and survivor rule; `None` when the audit found no natural key.
    pub fn from_report(table: &crate::audit::report::TableReport) -> Option<Self> {
        let key = table.natural_key.as_ref()?;
        let mut known = TableKeys::new(
            TableName {
                schema: Some(table.schema.clone()),
                name: table.name.clone(),
            },
            key.columns.clone(),
            key.source,
        );
        known.surrogate_key = table.surrogate_key.clone();
        known.nullable = table
            .columns
            .iter()
            .filter(|c| c.nullable)
            .map(|c| c.name.clone())
            .collect();
        known.survivor = table.survivor.clone();
        Some(known)
    }

    pub fn is_surrogate(&self, column: &str) -> bool {
        self.surrogate_key
            .iter()
            .any(|c| c.eq_ignore_ascii_case(column))
    }

    pub fn is_key(&self, column: &str) -> bool {
        self.natural_key
            .iter()
            .any(|c| c.eq_ignore_ascii_case(column))
    }

    pub fn is_nullable(&self, column: &str) -> bool {
        self.nullable.iter().any(|c| c.eq_ignore_ascii_case(column))
    }
}

/// Every table whose keys natkey knows, first source first: `--natural-key` flags, then
/// `natkey.toml`, then the warehouse, then a dedupe job. A later source only fills what an
/// earlier one left empty.
#[derive(Debug, Clone, Default)]
pub struct KnownKeys {
    tables: Vec<TableKeys>,
}

impl KnownKeys {
    pub fn new() -> Self {
        KnownKeys::default()
    }

    pub fn tables(&self) -> &[TableKeys] {
        &self.tables
    }

    /// Adds a table's keys; when the table is already known, only empty facts are filled.
    pub fn add(&mut self, keys: TableKeys) {
        match self.tables.iter_mut().find(|t| t.table == keys.table) {
            Some(known) => {
                if known.natural_key.is_empty() && !keys.natural_key.is_empty() {
                    known.natural_key = keys.natural_key;
                    known.source = keys.source;
                }
                if known.surrogate_key.is_empty() {
                    known.surrogate_key = keys.surrogate_key;
                }
                if known.nullable.is_empty() {
                    known.nullable = keys.nullable;
                }
                if known.survivor.is_none() {
                    known.survivor = keys.survivor;
                }
            }
            None => self.tables.push(keys),
        }
    }

    /// The `[[table]]` entries of a config that name a natural key or surrogate columns.
    pub fn add_config(&mut self, config: &Config) {
        for t in &config.tables {
            let mut keys = TableKeys::new(
                t.name.clone(),
                t.natural_key.clone().unwrap_or_default(),
                KeySource::Config,
            );
            keys.surrogate_key = t.surrogate_key.clone().unwrap_or_default();
            keys.nullable = t.nullable.clone().unwrap_or_default();
            keys.survivor = t.survivor.clone();
            self.add(keys);
        }
    }

    /// Keys learned from a dedupe job (source `dedupe_job`).
    pub fn add_learned(&mut self, learned: &[LearnedKey]) {
        for l in learned {
            let mut keys =
                TableKeys::new(l.table.clone(), l.natural_key.clone(), KeySource::DedupeJob);
            keys.survivor = l.survivor.clone();
            self.add(keys);
        }
    }

    /// The keys of a table as the SQL names it. An exact `schema.table` match wins; a name
    /// without a schema on either side matches by name. Unquoted names match case-insensitively.
    pub fn find(&self, target: &TableTarget) -> Option<&TableKeys> {
        let same = |a: &str, b: &str| {
            if target.quoted {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        };
        let name_matches = |t: &&TableKeys| same(&t.table.name, &target.name.name);
        let exact = self.tables.iter().filter(name_matches).find(|t| {
            match (&t.table.schema, &target.name.schema) {
                (Some(a), Some(b)) => same(a, b),
                _ => false,
            }
        });
        exact.or_else(|| {
            self.tables
                .iter()
                .filter(name_matches)
                .find(|t| t.table.schema.is_none() || target.name.schema.is_none())
        })
    }
}

/// Parses `schema.table=col1,col2` (the `--natural-key` flag).
pub fn parse_natural_key_flag(text: &str) -> Result<TableKeys, String> {
    let (table, columns) = text.rsplit_once('=').ok_or_else(|| {
        format!("--natural-key {text:?} should be schema.table=col1,col2 (or table=col1,col2)")
    })?;
    let table: TableName = table.parse()?;
    let columns: Vec<String> = columns
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if columns.is_empty() {
        return Err(format!(
            "--natural-key {text:?} names no column: write {table}=col1,col2"
        ));
    }
    Ok(TableKeys::new(table, columns, KeySource::Config))
}

/// One reason the task is not idempotent, where it is, and how to fix it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The kebab-case rule name (`insert-without-natural-key`).
    pub rule: &'static str,
    pub line: usize,
    pub column: usize,
    /// What goes wrong on retry.
    pub message: String,
    /// What to do about it (an automatic rewrite, or the shape to follow).
    pub fix: String,
    /// True when the returned rewrite carries an automatic fix for it (not part of the JSON
    /// contract: the fix text says so).
    #[serde(skip)]
    pub rewritten: bool,
}

/// A statement natkey could not read, with the parser's own words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SqlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The analysis of one task file: the `--format json` contract of `natkey rewrite`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileReport {
    pub file: String,
    pub dialect: Dialect,
    /// True when no finding was reported and every statement was read.
    pub idempotent: bool,
    pub findings: Vec<Finding>,
    pub errors: Vec<SqlError>,
    /// The whole file with the fixes applied; `None` when nothing needs rewriting or no
    /// automatic rewrite exists.
    pub rewritten: Option<String>,
}

/// Why a file could not be analysed at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: {message}")]
    Unreadable { file: String, message: String },
}

/// Reads a task file: refuses a file over [`MAX_FILE_BYTES`], an empty file and a binary file
/// with a message that says which.
pub fn read_task_file(path: &Path) -> Result<String, InputError> {
    let file = path.display().to_string();
    let fail = |message: String| InputError::Unreadable {
        file: file.clone(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(fail(format!(
            "is {} MB; natkey reads task files up to {} MB (is this a data file?)",
            meta.len() / (1024 * 1024),
            MAX_FILE_BYTES / (1024 * 1024)
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    task_text(&bytes).map_err(fail)
}

/// The text of a task file's bytes, or why it is not SQL text.
pub fn task_text(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!(
            "is {} MB; natkey reads task files up to {} MB (is this a data file?)",
            bytes.len() / (1024 * 1024),
            MAX_FILE_BYTES / (1024 * 1024)
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("is empty: there is no SQL to analyse".to_string());
    }
    if bytes.contains(&0) {
        return Err("is a binary file, not SQL text".to_string());
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// What one rule found: a finding plus the edits that fix it (none when no automatic rewrite
/// exists).
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub rule: &'static str,
    /// Byte offset in the file the finding points at.
    pub at: usize,
    pub message: String,
    pub fix: String,
    pub edits: Vec<Edit>,
}

/// The tables a task writes to (INSERT, UPDATE, DELETE, MERGE targets; a dbt model's own
/// table), as the SQL names them: the tables whose keys matter.
pub fn write_targets(text: &str, dialect: Dialect) -> Vec<TableTarget> {
    write_targets_of("task.sql", text, dialect)
}

/// [`write_targets`] for a named file (its stem names a dbt model).
pub fn write_targets_of(file: &str, text: &str, dialect: Dialect) -> Vec<TableTarget> {
    use sqlparser::ast::{FromTable, Statement, TableFactor, TableObject};
    let keys = KnownKeys::new();
    let cx = FileContext::new(file, text, dialect, &keys);
    let mut out: Vec<TableTarget> = Vec::new();
    let mut push = |t: TableTarget| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    for stmt in &cx.statements {
        match &stmt.ast {
            Statement::Insert(i) => {
                if let TableObject::TableName(name) = &i.table {
                    push(cx.table(name));
                }
            }
            Statement::Update(u) => {
                if let TableFactor::Table { name, .. } = &u.table.relation {
                    push(cx.table(name));
                }
            }
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
                for t in from {
                    if let TableFactor::Table { name, .. } = &t.relation {
                        push(cx.table(name));
                    }
                }
            }
            Statement::Merge(m) => {
                if let TableFactor::Table { name, .. } = &m.table {
                    push(cx.table(name));
                }
            }
            _ => {}
        }
    }
    if let (Some(_), Some(model)) = (&cx.dbt, &cx.model) {
        push(TableTarget {
            name: TableName {
                schema: None,
                name: model.clone(),
            },
            quoted: false,
        });
    }
    out
}

/// Analyses one task file. `file` names it in the report (its stem names a dbt model).
/// Never panics on any input; statements that do not parse are reported in `errors` and the
/// others are still analysed.
pub fn analyze(file: &str, text: &str, dialect: Dialect, keys: &KnownKeys) -> FileReport {
    let cx = FileContext::new(file, text, dialect, keys);
    let mut hits = rules::check_all(&cx);
    hits.sort_by_key(|h| h.at);
    // Inside a data-modifying CTE an edit made for a whole statement (a BEGIN before it, a
    // clause after it) would land inside the parentheses: the fix is left to the user.
    for h in &mut hits {
        let in_cte = cx
            .statements
            .iter()
            .any(|s| s.in_cte && s.range.contains(&h.at));
        if in_cte && !h.edits.is_empty() {
            h.edits.clear();
            h.fix = format!(
                "{} (natkey does not rewrite a statement inside a WITH clause: make this \
                 change by hand.)",
                h.fix
            );
        }
    }
    let findings: Vec<Finding> = hits
        .iter()
        .map(|h| {
            let (line, column) = cx.source.line_col(h.at);
            Finding {
                rule: h.rule,
                line,
                column,
                message: h.message.clone(),
                fix: h.fix.clone(),
                rewritten: !h.edits.is_empty(),
            }
        })
        .collect();
    let mut findings = findings;
    let mut errors = cx.errors.clone();
    let edits: Vec<Edit> = hits.into_iter().flat_map(|h| h.edits).collect();
    let rewritten = if edits.is_empty() {
        None
    } else {
        let text_after = edit::apply(text, edits);
        // A rewrite that does not parse is worse than none: check it like the original.
        let check = FileContext::new(file, &text_after, dialect, keys);
        if check.errors.len() > cx.errors.len() {
            errors.push(SqlError {
                line: 1,
                column: 1,
                message: format!(
                    "natkey's rewrite of this file does not parse in {dialect} ({}); it is \
                     withheld — please report this",
                    check.errors[0].message
                ),
            });
            for f in &mut findings {
                f.rewritten = false;
            }
            None
        } else {
            Some(text_after)
        }
    };
    FileReport {
        file: file.to_string(),
        dialect,
        idempotent: findings.is_empty() && errors.is_empty(),
        findings,
        errors,
        rewritten,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Keys for `sales.daily_orders` (order_id, line_item_id; surrogate `surrogate_key`).
    pub fn orders_keys() -> KnownKeys {
        let mut keys = KnownKeys::new();
        let mut t = TableKeys::new(
            "sales.daily_orders".parse().expect("valid"),
            vec!["order_id".into(), "line_item_id".into()],
            KeySource::Config,
        );
        t.surrogate_key = vec!["surrogate_key".into()];
        t.nullable = vec!["line_item_id".into()];
        keys.add(t);
        let mut t = TableKeys::new(
            "daily_totals".parse().expect("valid"),
            vec!["day".into()],
            KeySource::Config,
        );
        t.nullable = vec!["day".into()];
        keys.add(t);
        keys
    }

    pub fn run(sql: &str) -> FileReport {
        run_in(sql, Dialect::Postgres)
    }

    pub fn run_in(sql: &str, dialect: Dialect) -> FileReport {
        analyze("task.sql", sql, dialect, &orders_keys())
    }

    pub fn rules_of(report: &FileReport) -> Vec<&'static str> {
        report.findings.iter().map(|f| f.rule).collect()
    }

    /// The rewritten text, asserting that it parses in the dialect.
    pub fn rewritten(report: &FileReport) -> String {
        let text = report
            .rewritten
            .clone()
            .unwrap_or_else(|| panic!("expected a rewrite: {report:#?}"));
        let again = analyze("again.sql", &text, report.dialect, &orders_keys());
        assert!(
            again.errors.is_empty(),
            "the rewrite does not parse: {:?}\n{text}",
            again.errors
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn natural_key_flags_parse_and_explain_mistakes() {
        let k = parse_natural_key_flag("sales.daily_orders=order_id, line_item_id").expect("ok");
        assert_eq!(k.table.schema.as_deref(), Some("sales"));
        assert_eq!(k.natural_key, ["order_id", "line_item_id"]);
        assert!(parse_natural_key_flag("sales.daily_orders").is_err());
        assert!(parse_natural_key_flag("t=").is_err());
    }

    #[test]
    fn bad_bytes_are_refused_with_a_reason() {
        assert!(task_text(b"  \n").expect_err("empty").contains("empty"));
        assert!(
            task_text(b"SELECT\0\x01")
                .expect_err("binary")
                .contains("binary")
        );
        assert!(
            task_text(&[0xff, 0xfe, b'a'])
                .expect_err("utf8")
                .contains("UTF-8")
        );
        let big = vec![b' '; MAX_FILE_BYTES + 1];
        assert!(task_text(&big).expect_err("big").contains("10 MB"));
    }

    #[test]
    fn an_unparseable_statement_does_not_hide_the_others() {
        let report = run("SELEC oops FROM;\n\
             INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 1);\n");
        assert_eq!(report.errors.len(), 1, "{report:#?}");
        assert_eq!(report.errors[0].line, 1);
        assert!(report.errors[0].message.contains("Expected"), "{report:#?}");
        assert!(!report.errors[0].message.contains("Line:"), "{report:#?}");
        assert_eq!(rules_of(&report), ["insert-without-natural-key"]);
        assert!(!report.idempotent);
    }

    #[test]
    fn a_tokenizer_error_is_located_and_the_statements_around_it_are_analysed() {
        let report = run(
            "INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 1);\n\
             INSERT INTO t (a) VALUES ('never closed);\n\
             INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (2, 1);\n",
        );
        assert_eq!(report.errors.len(), 1, "{report:#?}");
        let e = &report.errors[0];
        assert_eq!((e.line, e.column), (2, 27), "{report:#?}");
        assert!(e.message.contains("Unterminated"), "{report:#?}");
        let lines: Vec<(&str, usize)> = report.findings.iter().map(|f| (f.rule, f.line)).collect();
        assert_eq!(
            lines,
            [
                ("insert-without-natural-key", 1),
                ("insert-without-natural-key", 3)
            ]
        );

        // An unterminated comment runs to the end: the statement before it is still read.
        let report = run(
            "INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 1);\n\
             /* never closed\nSELECT 1;",
        );
        assert_eq!(report.errors.len(), 1, "{report:#?}");
        assert_eq!(rules_of(&report), ["insert-without-natural-key"]);
    }

    #[test]
    fn an_edit_never_lands_inside_a_multi_line_jinja_expression() {
        // Found by the fuzzer: the placeholder covers only the first line of the construct.
        let jinja = "{{ source('staging',\n             'totals') }}";
        let report = run(&format!(
            "INSERT INTO daily_totals (day, total_cents)\nSELECT day, total_cents FROM {jinja}"
        ));
        let text = rewritten(&report);
        assert!(text.contains(jinja), "{text}");
        assert!(
            text.ends_with(&format!("{jinja} ON CONFLICT (\"day\") DO NOTHING")),
            "{text}"
        );
    }

    #[test]
    fn keys_match_by_schema_then_by_name() {
        let keys = orders_keys();
        let target = |s: &str| TableTarget {
            name: s.parse().expect("valid"),
            quoted: false,
        };
        assert!(keys.find(&target("sales.daily_orders")).is_some());
        assert!(keys.find(&target("DAILY_ORDERS")).is_some());
        assert!(keys.find(&target("other.daily_orders")).is_none());
        assert!(keys.find(&target("x.daily_totals")).is_some());
    }
}
