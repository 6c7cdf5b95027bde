//! The audit: for every table, resolve its natural key, run the duplicate scan in the
//! warehouse, and price the overcount of its measures.

pub mod report;
mod scan;

use std::time::Instant;

use self::report::{Amount, Report, SampleGroup, Status, Summary, TableReport};
use self::scan::{ScanFigures, ScanSpec};
use crate::config::{Config, TableConfig, TableName};
use crate::keys::{
    self, Candidate, ColumnRoles, InferOptions, KeySource, NaturalKey, Resolution, Sample,
};
use crate::warehouse::{
    TableInfo, TableRef, Warehouse, WarehouseError, WarehouseSql, describe_sqlx_error,
};

/// What to audit and how.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Only these schemas (all non-system schemas when empty).
    pub schemas: Vec<String>,
    /// Only these tables (all when empty). A name that matches no table is an error.
    pub tables: Vec<TableName>,
    /// Rows profiled per table for key inference.
    pub sample_rows: usize,
    pub infer: InferOptions,
    /// How many duplicate groups the report shows per table.
    pub sample_groups: usize,
    /// Keys learned from existing dedupe jobs (source `dedupe_job`).
    pub dedupe_keys: Vec<keys::KeyHint>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            schemas: Vec::new(),
            tables: Vec::new(),
            sample_rows: 20_000,
            infer: InferOptions::default(),
            sample_groups: 5,
            dedupe_keys: Vec::new(),
        }
    }
}

/// What an audit reports while it runs (the CLI prints it to stderr; the web app shows it).
pub enum Progress<'a> {
    Warning(String),
    Started {
        index: usize,
        total: usize,
        table: &'a TableRef,
    },
    Finished {
        index: usize,
        total: usize,
        report: &'a TableReport,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("{0}")]
    UnknownTables(String),
    #[error("{0}")]
    UnknownSchemas(String),
    #[error("lost the connection to the warehouse while auditing {table}: {message}")]
    ConnectionLost { table: String, message: String },
}

/// Audits the warehouse. One table's failure is recorded in its report and never stops the
/// others; only failing to list the tables (or naming a table that does not exist), or losing
/// the connection, is an error.
pub async fn run(
    warehouse: &mut Warehouse,
    config: &Config,
    options: &AuditOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, AuditError> {
    let started_at = now();
    let listing = warehouse.list_tables(&options.schemas).await?;
    // A mistyped --schema must not pass a CI gate as "0 tables, no duplicates".
    let empty: Vec<&str> = options
        .schemas
        .iter()
        .filter(|s| {
            !listing
                .tables
                .iter()
                .chain(&listing.unreadable)
                .any(|t| &t.schema == *s)
        })
        .map(String::as_str)
        .collect();
    if !empty.is_empty() {
        return Err(AuditError::UnknownSchemas(format!(
            "--schema {}: no such schema, or it holds no table natkey can see{}",
            empty
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            match warehouse.engine() {
                crate::warehouse::Engine::Sqlite => " (a SQLite warehouse has one schema: main)",
                _ => "",
            }
        )));
    }
    let all = listing.tables;
    if !listing.unreadable.is_empty() {
        let named: Vec<String> = listing
            .unreadable
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        progress(Progress::Warning(format!(
            "skipping {} table(s) this role may not SELECT from: {}{}",
            listing.unreadable.len(),
            named.join(", "),
            if listing.unreadable.len() > 5 {
                ", ..."
            } else {
                ""
            }
        )));
    }
    let tables = select_tables(&all, &listing.unreadable, options)?;
    if options.tables.is_empty() {
        for entry in &config.tables {
            if options.schemas.is_empty() && !all.iter().any(|t| entry.name.matches(t)) {
                progress(Progress::Warning(format!(
                    "config [[table]] {} matches no table in this warehouse",
                    entry.name
                )));
            }
        }
    }
    let total = tables.len();
    let mut reports = Vec::with_capacity(total);
    for (i, table) in tables.iter().enumerate() {
        progress(Progress::Started {
            index: i + 1,
            total,
            table,
        });
        let report = audit_table(warehouse, table, config, options).await;
        if report.status == Status::Error && warehouse.ping().await.is_err() {
            // The session is gone (the server restarted, an administrator terminated it): every
            // table after this one would fail the same way, so the audit fails, with the cause.
            return Err(AuditError::ConnectionLost {
                table: table.to_string(),
                message: report.message.unwrap_or_default(),
            });
        }
        progress(Progress::Finished {
            index: i + 1,
            total,
            report: &report,
        });
        reports.push(report);
    }
    reports.sort_by(|a, b| {
        rank(a.status)
            .cmp(&rank(b.status))
            .then(b.worst_overcount().cmp(&a.worst_overcount()))
            .then(b.excess_rows.cmp(&a.excess_rows))
            .then((&a.schema, &a.name).cmp(&(&b.schema, &b.name)))
    });
    let summary = Summary {
        tables: reports.len(),
        with_duplicates: reports
            .iter()
            .filter(|r| r.status == Status::Duplicates)
            .count(),
        excess_rows: reports.iter().filter_map(|r| r.excess_rows).sum(),
        errors: reports.iter().filter(|r| r.status == Status::Error).count(),
    };
    Ok(Report {
        natkey_report: report::REPORT_VERSION,
        warehouse: warehouse.url().redacted().to_string(),
        dialect: warehouse.engine(),
        server_version: warehouse.server_version().to_string(),
        started_at,
        finished_at: now(),
        summary,
        tables: reports,
    })
}

fn rank(status: Status) -> u8 {
    match status {
        Status::Duplicates => 0,
        Status::Error => 1,
        Status::NoKey => 2,
        Status::Clean => 3,
        Status::Enforced => 4,
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn select_tables(
    all: &[TableRef],
    unreadable: &[TableRef],
    options: &AuditOptions,
) -> Result<Vec<TableRef>, AuditError> {
    if options.tables.is_empty() {
        return Ok(all.to_vec());
    }
    let forbidden: Vec<String> = options
        .tables
        .iter()
        .filter(|name| !all.iter().any(|t| name.matches(t)))
        .filter(|name| unreadable.iter().any(|t| name.matches(t)))
        .map(ToString::to_string)
        .collect();
    if !forbidden.is_empty() {
        return Err(AuditError::UnknownTables(format!(
            "this role may not SELECT from {}: grant it SELECT (natkey only reads)",
            forbidden.join(", ")
        )));
    }
    let unknown: Vec<String> = options
        .tables
        .iter()
        .filter(|name| !all.iter().any(|t| name.matches(t)))
        .map(ToString::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(AuditError::UnknownTables(format!(
            "unknown table{} {} (natkey sees {} table{} it may read{})",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", "),
            all.len(),
            if all.len() == 1 { "" } else { "s" },
            if options.schemas.is_empty() {
                String::new()
            } else {
                format!(" in schema {}", options.schemas.join(", "))
            }
        )));
    }
    Ok(all
        .iter()
        .filter(|t| options.tables.iter().any(|n| n.matches(t)))
        .cloned()
        .collect())
}

/// Audits one table; failures become a report with status `error`.
pub async fn audit_table(
    warehouse: &mut Warehouse,
    table: &TableRef,
    config: &Config,
    options: &AuditOptions,
) -> TableReport {
    let started = Instant::now();
    let mut report = TableReport::new(&table.schema, &table.name);
    // One snapshot for all of the table's statements: figures agree while loads run.
    let filled = match warehouse.begin_snapshot().await {
        Ok(()) => fill_table_report(warehouse, table, config, options, &mut report).await,
        Err(e) => Err(e.to_string()),
    };
    warehouse.end_snapshot().await;
    if let Err(message) = filled {
        report = TableReport {
            status: Status::Error,
            message: Some(message),
            ..TableReport::new(&table.schema, &table.name)
        };
    }
    report.elapsed_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    report
}

async fn fill_table_report(
    wh: &mut Warehouse,
    table: &TableRef,
    config: &Config,
    options: &AuditOptions,
    report: &mut TableReport,
) -> Result<(), String> {
    let info = wh.describe(table).await.map_err(|e| e.to_string())?;
    report.columns = info
        .columns
        .iter()
        .map(|c| report::ColumnReport {
            name: c.name.clone(),
            data_type: c.data_type.clone(),
            nullable: c.nullable,
            computed: c.computed,
        })
        .collect();
    report.partitioned = info.partitioned;
    report.partition_key = info.partition_key.clone();
    let table_config = config.table(table);
    if let Some(tc) = table_config {
        check_table_config(&info, tc)?;
    }
    let sample = fetch_sample(wh, &info, options.sample_rows).await?;
    let roles = keys::detect_roles(&info, table_config, &sample);
    report.surrogate_key = roles.surrogate_key.clone();
    report.load_metadata = roles.load_metadata.clone();
    report.payload = roles.payload.clone();
    let hint = options.dedupe_keys.iter().find(|h| h.table.matches(table));
    if let Some(h) = hint {
        let survivor_column = h.survivor.as_ref().and_then(|s| s.column());
        for column in h
            .natural_key
            .iter()
            .map(String::as_str)
            .chain(survivor_column)
        {
            if info.column(column).is_none() {
                return Err(format!(
                    "the dedupe job for {} names column {column:?}, which the table does not have",
                    h.table
                ));
            }
        }
    }
    // Survivor rule: the config's, else the dedupe job's ORDER BY, else the default.
    report.survivor = table_config
        .and_then(|c| c.survivor.clone())
        .or_else(|| hint.and_then(|h| h.survivor.clone()))
        .or_else(|| keys::survivor(&info, &roles, &sample, None));

    let ctx = TableContext {
        info: &info,
        roles: &roles,
        config: table_config,
        sample: &sample,
    };
    let (key, figures) =
        match keys::resolve(&info, &roles, table_config, hint, &sample, &options.infer) {
            Resolution::NoKey(reason) => {
                report.status = Status::NoKey;
                report.message = Some(reason);
                return Ok(());
            }
            Resolution::Known(key) if key.enforced => {
                report.rows = Some(count_rows(wh, &info).await?);
                for figure in [
                    &mut report.duplicate_groups,
                    &mut report.rows_in_duplicate_groups,
                    &mut report.excess_rows,
                    &mut report.exact_groups,
                    &mut report.conflicting_groups,
                    &mut report.null_key_groups,
                ] {
                    *figure = Some(0);
                }
                report.natural_key = Some(key);
                report.status = Status::Enforced;
                return Ok(());
            }
            Resolution::Known(key) => {
                let figures = scan(wh, &ctx, &key.columns, false, report).await?;
                (key, figures)
            }
            Resolution::Inferred(candidates) => {
                match confirm_inferred(wh, &ctx, candidates, report).await? {
                    Some(found) => found,
                    None => return Ok(()),
                }
            }
        };

    report.rows = Some(figures.rows);
    report.duplicate_groups = Some(figures.duplicate_groups);
    report.rows_in_duplicate_groups = Some(figures.rows_in_duplicate_groups);
    report.excess_rows = Some(figures.excess_rows());
    report.exact_groups = Some(figures.exact_groups);
    report.conflicting_groups = Some(figures.conflicting_groups());
    report.null_key_groups = Some(figures.null_key_groups);
    report.measures = figures.measures.clone();
    report.by_day = figures.by_day.clone();
    report.status = if figures.duplicate_groups > 0 {
        Status::Duplicates
    } else {
        Status::Clean
    };

    if let Some(rule) = report.survivor.clone() {
        let survivor_overcount: Option<Vec<Amount>> = if figures.conflicting_groups() == 0
            || report.measures.is_empty()
        {
            // Every group is exact: whichever row survives, the excess is the same.
            Some(report.measures.iter().map(|m| m.overcount).collect())
        } else {
            let measures: Vec<String> = report.measures.iter().map(|m| m.column.clone()).collect();
            match scan::survivor_sql(
                wh.engine(),
                &info,
                &key.columns,
                &measures,
                &rule,
                &roles.surrogate_key,
            ) {
                Some(query) => {
                    let rows = wh
                        .query_heavy(&query.sql, &[])
                        .await
                        .map_err(|e| query_error("computing the survivor overcount", &e))?;
                    Some(query.parse(&rows).map_err(|e| e.to_string())?)
                }
                None => None,
            }
        };
        if let Some(values) = survivor_overcount {
            for (m, v) in report.measures.iter_mut().zip(values) {
                m.overcount_survivor = Some(v);
            }
        }
    }

    if figures.duplicate_groups > 0 {
        // Samples are evidence, not figures: failing to fetch them keeps the figures.
        match sample_groups(wh, &ctx, &key.columns, &figures, options.sample_groups).await {
            Ok(samples) => report.samples = samples,
            Err(message) => tracing::warn!("{table}: no sample duplicate groups: {message}"),
        }
    }
    report.natural_key = Some(key);
    // Views are context, not the audit itself: a catalog that hides them is not an error.
    report.downstream = wh.downstream(table).await.unwrap_or_default();
    Ok(())
}

/// What the per-table steps share.
struct TableContext<'a> {
    info: &'a TableInfo,
    roles: &'a ColumnRoles,
    config: Option<&'a TableConfig>,
    sample: &'a Sample,
}

fn query_error(what: &str, err: &sqlx::Error) -> String {
    format!("{what}: {}", describe_sqlx_error(err))
}

/// Every column named in the table's config entry must exist.
fn check_table_config(info: &TableInfo, tc: &TableConfig) -> Result<(), String> {
    let lists = [
        ("natural_key", tc.natural_key.as_deref()),
        ("surrogate_key", tc.surrogate_key.as_deref()),
        ("load_metadata", tc.load_metadata.as_deref()),
        ("measures", tc.measures.as_deref()),
    ];
    let survivor_column = tc
        .survivor
        .as_ref()
        .and_then(|s| s.column().map(|c| [c.to_string()]));
    let survivor = survivor_column.as_ref().map(|c| c.as_slice());
    for (field, columns) in lists.into_iter().chain([("survivor", survivor)]) {
        for column in columns.unwrap_or_default() {
            if info.column(column).is_none() {
                return Err(format!(
                    "config [[table]] {}: {field} names column {column:?}, which {} does not have \
                     (it has: {})",
                    tc.name,
                    info.table,
                    info.columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(())
}

async fn fetch_sample(
    wh: &mut Warehouse,
    info: &TableInfo,
    limit: usize,
) -> Result<Sample, String> {
    let engine = wh.engine();
    let columns: Vec<String> = info
        .columns
        .iter()
        .map(|c| engine.to_text(&engine.quote_ident(&c.name)))
        .collect();
    let sql = WarehouseSql::new(format!(
        "SELECT {} FROM {} LIMIT {limit}",
        columns.join(", "),
        engine.qualified(&info.table)
    ));
    let rows = wh
        .query(&sql, &[])
        .await
        .map_err(|e| query_error("sampling rows", &e))?;
    Ok(Sample {
        complete: rows.len() < limit,
        rows,
    })
}

async fn count_rows(wh: &mut Warehouse, info: &TableInfo) -> Result<i64, String> {
    let engine = wh.engine();
    let sql = WarehouseSql::new(format!(
        "SELECT {} FROM {}",
        engine.to_text("COUNT(*)"),
        engine.qualified(&info.table)
    ));
    let rows = wh
        .query_heavy(&sql, &[])
        .await
        .map_err(|e| query_error("counting rows", &e))?;
    crate::warehouse::first_text(rows)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| "counting rows: no count returned".to_string())
}

/// Runs the duplicate scan for one key and fills the report's measure and day columns.
async fn scan(
    wh: &mut Warehouse,
    ctx: &TableContext<'_>,
    key: &[String],
    inferred: bool,
    report: &mut TableReport,
) -> Result<ScanFigures, String> {
    let measures = keys::measures(ctx.info, ctx.roles, key, ctx.config);
    let day_column = keys::day_column(ctx.info, ctx.roles, key, ctx.sample);
    let compared = ctx
        .roles
        .payload
        .iter()
        .filter(|c| !key.contains(c))
        .filter_map(|c| ctx.info.column(c))
        .map(|col| scan::Compared {
            name: &col.name,
            kind: col.kind,
            nullable: col.nullable,
        })
        .collect();
    let mut spec = ScanSpec {
        engine: wh.engine(),
        info: ctx.info,
        key,
        compared,
        measures: &measures,
        day_column: day_column.as_deref(),
        exact_only: true,
    };
    let queries = scan::scan_queries(&spec);
    let duplicates = wh
        .query_heavy(&queries.duplicates, &[])
        .await
        .map_err(|e| query_error("running the duplicate scan", &e))?;
    let totals = wh
        .query_heavy(&queries.totals, &[])
        .await
        .map_err(|e| query_error("adding up the table's totals", &e))?;
    let mut figures =
        scan::parse_scan(&queries, &duplicates, &totals, &measures).map_err(|e| e.to_string())?;
    if queries.exact_only && figures.conflicting_groups() > 0 && !measures.is_empty() {
        // Conflicting groups need per-group sums for the overcount range: scan again with them.
        // (Inferred keys skip this: a conflict rejects the candidate.)
        if inferred {
            report.day_column = day_column;
            return Ok(figures);
        }
        spec.exact_only = false;
        let queries = scan::scan_queries(&spec);
        let duplicates = wh
            .query_heavy(&queries.duplicates, &[])
            .await
            .map_err(|e| query_error("running the duplicate scan", &e))?;
        figures = scan::parse_scan(&queries, &duplicates, &totals, &measures)
            .map_err(|e| e.to_string())?;
    }
    report.day_column = day_column;
    Ok(figures)
}

/// Scans with the inferred candidates in turn and keeps the first the whole table confirms: no
/// two rows share it with different payloads. Records `no_key` when none holds.
async fn confirm_inferred(
    wh: &mut Warehouse,
    ctx: &TableContext<'_>,
    candidates: Vec<Candidate>,
    report: &mut TableReport,
) -> Result<Option<(NaturalKey, ScanFigures)>, String> {
    const MAX_TRIES: usize = 3;
    let mut rejected: Vec<String> = Vec::new();
    for (i, candidate) in candidates.iter().enumerate().take(MAX_TRIES) {
        let figures = scan(wh, ctx, &candidate.columns, true, report).await?;
        if figures.conflicting_groups() == 0 {
            let key = NaturalKey {
                columns: candidate.columns.clone(),
                source: KeySource::Inferred,
                confidence: candidate.confidence,
                enforced: false,
                candidates: candidates
                    .iter()
                    .enumerate()
                    // Earlier candidates were rejected by the scan; later ones are runner-ups.
                    .filter(|(j, _)| *j > i)
                    .map(|(_, c)| c.clone())
                    .collect(),
            };
            return Ok(Some((key, figures)));
        }
        rejected.push(format!(
            "({}) is shared by rows with different payloads in {} group(s)",
            candidate.columns.join(", "),
            figures.conflicting_groups()
        ));
    }
    report.status = Status::NoKey;
    report.day_column = None;
    report.message = Some(format!(
        "no inferred key holds on the whole table: {}; declare the natural key in natkey.toml \
         ([[table]] natural_key = [...]) if the table has one",
        rejected.join("; ")
    ));
    Ok(None)
}

/// Fetches the rows of a few duplicate groups with one filtered scan, at most
/// `ROWS_PER_GROUP` per group. A group is `exact` when the scan found it so: its sample may
/// show only some of its rows.
async fn sample_groups(
    wh: &mut Warehouse,
    ctx: &TableContext<'_>,
    key: &[String],
    figures: &ScanFigures,
    groups: usize,
) -> Result<Vec<SampleGroup>, String> {
    const ROWS_PER_GROUP: usize = 10;
    let keys: Vec<String> = figures.sample_keys.iter().take(groups).cloned().collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let compared: Vec<String> = ctx
        .roles
        .payload
        .iter()
        .filter(|c| !key.contains(c))
        .cloned()
        .collect();
    let query = scan::samples_query(wh.engine(), ctx.info, key, &compared, &keys, ROWS_PER_GROUP);
    let rows = wh
        .query_heavy(&query.sql, &query.binds)
        .await
        .map_err(|e| query_error("fetching sample duplicate groups", &e))?;
    let mut by_group: Vec<Vec<Vec<Option<String>>>> = vec![Vec::new(); keys.len()];
    for mut row in rows {
        if row.is_empty() {
            continue;
        }
        let group = row.remove(0).and_then(|g| g.parse::<usize>().ok());
        if let Some(rows) = group.and_then(|g| by_group.get_mut(g)) {
            rows.push(row);
        }
    }
    let columns: Vec<String> = ctx.info.columns.iter().map(|c| c.name.clone()).collect();
    let mut samples = Vec::new();
    for (k, rows) in keys.into_iter().zip(by_group) {
        if rows.is_empty() {
            continue;
        }
        let differing_columns: Vec<String> = columns
            .iter()
            .enumerate()
            .filter(|(i, _)| rows.iter().any(|r| r.get(*i) != rows[0].get(*i)))
            .map(|(_, c)| c.clone())
            .collect();
        // The key as the rows show it (the scan's key text is SQLite's quote() there).
        let key_map = key
            .iter()
            .map(|c| {
                let value = columns
                    .iter()
                    .position(|n| n == c)
                    .and_then(|i| rows[0].get(i).cloned().flatten());
                (c.clone(), value.map_or(serde_json::Value::Null, Into::into))
            })
            .collect();
        samples.push(SampleGroup {
            key: key_map,
            exact: !figures.conflicting_sample_keys.contains(&k),
            columns: columns.clone(),
            differing_columns,
            rows,
        });
    }
    Ok(samples)
}
