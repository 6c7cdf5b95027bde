//! An audit run: starting it (the runner executes it in the background), its page with live
//! progress and the table list, the JSON API, and the exports (report JSON, findings CSV, plans
//! bundle).

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, WebError};
use super::format::{self, script_json};
use super::{AppState, LiveProgress, lock};
use crate::audit::report::{Report, Status, TableReport};
use crate::audit::{self, AuditOptions, Progress};
use crate::config::{Config, TableConfig, TableName};
use crate::dialect::Dialect;
use crate::plan::{self, PlanInput};
use crate::schedule::diff::{RunDiff, TableChange, compare};
use crate::store::{Run, RunStatus, RunTrigger};
use crate::warehouse::{SessionSettings, Warehouse};

/// What to audit, and on whose behalf.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub warehouse: String,
    pub trigger: RunTrigger,
    /// The schedule the run belongs to.
    pub schedule: Option<String>,
    /// Only these schemas (the warehouse's own `schemas` when empty).
    pub schemas: Vec<String>,
    /// Only these tables (every table when empty).
    pub tables: Vec<TableName>,
}

impl RunRequest {
    /// A whole-warehouse audit a person asked for.
    pub fn manual(warehouse: &str) -> Self {
        RunRequest {
            warehouse: warehouse.to_string(),
            trigger: RunTrigger::Manual,
            schedule: None,
            schemas: Vec::new(),
            tables: Vec::new(),
        }
    }
}

/// Queues an audit of the named warehouse and starts it in the background, or returns the run
/// already under way for it.
pub async fn start_run(state: &AppState, name: &str) -> Result<i64, WebError> {
    start_run_with(state, RunRequest::manual(name)).await
}

/// Queues the audit `request` describes and starts it in the background, or returns the run
/// already under way for that warehouse (an audit of a warehouse never overlaps another).
pub async fn start_run_with(state: &AppState, request: RunRequest) -> Result<i64, WebError> {
    let Some(entry) = state.warehouse(&request.warehouse).cloned() else {
        return Err(WebError::NotFound(format!(
            "no warehouse named {:?} in natkey.toml",
            request.warehouse
        )));
    };
    let (id, created) = state
        .inner
        .store
        .queue_run(&entry.name, request.trigger, request.schedule.as_deref())
        .await?;
    if created {
        let audit_state = state.clone();
        let handle = tokio::runtime::Handle::current();
        // The audit's progress callback is a plain `FnMut`, so the audit future is not `Send`:
        // it runs on a blocking thread that drives it to completion on the same runtime.
        let audit = tokio::task::spawn_blocking(move || {
            handle.block_on(execute(audit_state, id, entry, request));
        });
        tokio::spawn(supervise(state.clone(), id, audit));
    }
    Ok(id)
}

/// Waits for the task that runs audit `id`. If it panicked (or was cancelled), the run is
/// failed with a reason, instead of staying `running` for ever: a later "Audit now" would join
/// the dead run and its schedule would stay busy.
async fn supervise(state: AppState, id: i64, task: tokio::task::JoinHandle<()>) {
    let Err(e) = task.await else {
        return;
    };
    let reason = if e.is_panic() {
        let payload = e.into_panic();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("natkey crashed during this audit (a bug; please report it): {message}")
    } else {
        "the audit was cancelled".to_string()
    };
    tracing::error!("audit run {id}: {reason}");
    if let Err(e) = state.inner.store.fail_run(id, &reason).await {
        tracing::error!("audit run {id}: {e}");
    }
    lock(&state.inner.live).remove(&id);
}

/// The config an audit of `warehouse` uses: natkey.toml, with the keys people confirmed on the
/// table page replacing (or adding) the `natural_key` of `[[table]]` entries.
pub async fn audit_config(state: &AppState, warehouse: &str) -> Result<Config, WebError> {
    Ok(config_with_key_overrides(&state.inner.config, &state.inner.store, warehouse).await?)
}

/// `config` with the keys people confirmed on the table page for `warehouse` replacing (or
/// adding) the `natural_key` of `[[table]]` entries: what every audit recorded in the store's
/// history uses, from the web app's runner and from `natkey audit --save` alike.
pub async fn config_with_key_overrides(
    config: &Config,
    store: &crate::store::Store,
    warehouse: &str,
) -> Result<Config, crate::store::StoreError> {
    let mut config = config.clone();
    for o in store.key_overrides(warehouse).await? {
        let name = TableName {
            schema: Some(o.schema.clone()),
            name: o.table.clone(),
        };
        match config.tables.iter_mut().find(|t| t.name == name) {
            Some(entry) => entry.natural_key = Some(o.natural_key.clone()),
            None => config.tables.insert(
                0,
                TableConfig {
                    name,
                    natural_key: Some(o.natural_key.clone()),
                    surrogate_key: None,
                    load_metadata: None,
                    measures: None,
                    survivor: None,
                    nullable: None,
                },
            ),
        }
    }
    Ok(config)
}

async fn execute(state: AppState, id: i64, entry: super::WarehouseEntry, request: RunRequest) {
    let store = state.inner.store.clone();
    let outcome = async {
        store.mark_running(id).await.map_err(|e| e.to_string())?;
        let config = audit_config(&state, &entry.name)
            .await
            .map_err(|e| e.to_string())?;
        let mut settings = SessionSettings::default();
        if let Some(secs) = config.audit.statement_timeout_secs {
            settings.statement_timeout = std::time::Duration::from_secs(secs.max(1));
        }
        if let Some(work_mem) = &config.audit.work_mem {
            settings.work_mem = work_mem.clone();
        }
        let options = AuditOptions {
            schemas: if request.schemas.is_empty() {
                entry.schemas.clone()
            } else {
                request.schemas.clone()
            },
            tables: if request.tables.is_empty() {
                entry.tables.clone()
            } else {
                request.tables.clone()
            },
            sample_rows: config.audit.sample_rows.unwrap_or(20_000).max(2),
            ..AuditOptions::default()
        };
        let mut warehouse = Warehouse::connect(&entry.url, settings)
            .await
            .map_err(|e| e.to_string())?;
        let live_state = state.clone();
        let mut on_progress = move |event: Progress| {
            let (done, total, current) = match event {
                Progress::Started {
                    index,
                    total,
                    table,
                } => (index - 1, total, Some(table.to_string())),
                Progress::Finished { index, total, .. } => (index, total, None),
                Progress::Warning(message) => {
                    tracing::warn!("audit run {id}: {message}");
                    return;
                }
            };
            lock(&live_state.inner.live).insert(
                id,
                LiveProgress {
                    done,
                    total,
                    current: current.clone(),
                },
            );
            let store = live_state.inner.store.clone();
            tokio::spawn(async move {
                let _ = store
                    .record_progress(id, done as i64, total as i64, current.as_deref())
                    .await;
            });
        };
        audit::run(&mut warehouse, &config, &options, &mut on_progress)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let stored = match outcome {
        Ok(report) => store.finish_run(id, &report).await,
        Err(message) => store.fail_run(id, &message).await,
    };
    if let Err(e) = stored {
        tracing::error!("audit run {id}: {e}");
    }
    lock(&state.inner.live).remove(&id);
}

pub async fn start_from_form(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, WebError> {
    let id = start_run(&state, &name).await?;
    Ok(Redirect::to(&format!("/runs/{id}")))
}

pub async fn api_start(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = start_run(&state, &name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "url": format!("/api/runs/{id}") })),
    ))
}

async fn load_run(state: &AppState, id: i64) -> Result<Run, WebError> {
    state
        .inner
        .store
        .run(id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("there is no audit run {id}")))
}

async fn load_report(state: &AppState, id: i64) -> Result<(Run, Arc<Report>), WebError> {
    let run = load_run(state, id).await?;
    match state.report(id).await? {
        Some(report) => Ok((run, report)),
        None => Err(WebError::NotFound(format!(
            "audit run {id} has no report ({}): open /runs/{id} to see why",
            run.status.as_str()
        ))),
    }
}

#[derive(Serialize, Clone)]
pub struct ProgressJson {
    pub done: i64,
    pub total: Option<i64>,
    pub current: Option<String>,
}

fn progress_of(state: &AppState, run: &Run) -> ProgressJson {
    match lock(&state.inner.live).get(&run.id) {
        Some(live) if run.status.is_active() => ProgressJson {
            done: live.done as i64,
            total: Some(live.total as i64),
            current: live.current.clone(),
        },
        _ => ProgressJson {
            done: run.tables_done,
            total: run.tables_total,
            current: run.current_table.clone(),
        },
    }
}

pub async fn api_run(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = load_run(&state, id).await?;
    let progress = progress_of(&state, &run);
    let report = if run.status == RunStatus::Succeeded {
        state.report(id).await?
    } else {
        None
    };
    let (previous_run, diff) = match &report {
        Some(report) => {
            let (previous, diff) = diff_with_previous(&state, &run, report).await?;
            (previous, Some(diff))
        }
        None => (None, None),
    };
    Ok(Json(serde_json::json!({
        "id": run.id,
        "warehouse": run.warehouse,
        "status": run.status,
        "trigger": run.trigger,
        "schedule": run.schedule,
        "duration_secs": run.duration_secs(),
        "previous_run": previous_run,
        "diff": diff,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "error": run.error,
        "progress": progress,
        "report": report.as_deref(),
    })))
}

/// One row of the table list.
pub struct TableRow {
    pub href: String,
    pub name: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub key: String,
    pub rows: String,
    pub groups: String,
    pub excess: String,
    pub overcount: String,
}

#[derive(Template)]
#[template(path = "runs/run.html")]
struct RunPage {
    run: Run,
    active: bool,
    progress: ProgressJson,
    percent: i64,
    data_json: String,
    summary: Option<(String, String, String)>,
    rows: Vec<TableRow>,
    total_tables: usize,
    any_duplicates: bool,
    schemas: Vec<String>,
    statuses: Vec<(&'static str, &'static str)>,
    filter_status: String,
    filter_schema: String,
    dialects: Vec<&'static str>,
    report_dialect: &'static str,
    diff: Option<DiffView>,
}

/// The difference from the previous run, as the run page lists it.
struct DiffView {
    previous: Option<i64>,
    empty: bool,
    lists: Vec<(&'static str, &'static str, Vec<String>)>,
}

/// The previous succeeded run `run` is compared with, and the difference.
pub async fn diff_with_previous(
    state: &AppState,
    run: &Run,
    report: &Report,
) -> Result<(Option<i64>, RunDiff), WebError> {
    let previous = state.inner.store.previous_succeeded(run).await?;
    let before = match previous {
        Some(id) => state.report(id).await?,
        None => None,
    };
    Ok((previous, compare(before.as_deref(), report)))
}

fn diff_view(previous: Option<i64>, diff: &RunDiff) -> DiffView {
    let line = |c: &TableChange| {
        let figure = |n: Option<i64>| format::count(Some(n.unwrap_or(0)));
        format!(
            "{}.{}: {} → {} excess rows",
            c.schema,
            c.name,
            figure(c.previous_excess_rows),
            figure(c.excess_rows)
        )
    };
    let lines = |list: &Vec<TableChange>| list.iter().map(line).collect::<Vec<_>>();
    DiffView {
        previous,
        empty: diff.is_empty(),
        lists: vec![
            ("Newly with duplicates", "bad", lines(&diff.new_duplicates)),
            ("Worse", "bad", lines(&diff.worse)),
            ("Better", "good", lines(&diff.better)),
            ("Fixed", "good", lines(&diff.fixed)),
        ],
    }
}

impl RunPage {
    fn same(&self, a: &str, b: &str) -> bool {
        a == b
    }
}

#[derive(Deserialize, Default)]
pub struct RunFilter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    schema: String,
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Duplicates => "bad",
        Status::Error => "error",
        Status::NoKey => "warn",
        Status::Clean | Status::Enforced => "good",
    }
}

fn worst_measure(t: &TableReport) -> String {
    t.measures
        .iter()
        .filter(|m| m.overcount_max.0 > rust_decimal::Decimal::ZERO)
        .max_by_key(|m| m.overcount_max)
        .map(|m| {
            format!(
                "{} {}",
                m.column,
                format::overcount_range(&m.overcount_min, &m.overcount_max)
            )
        })
        .unwrap_or_else(|| "-".into())
}

pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    filter: Result<Query<RunFilter>, QueryRejection>,
) -> Result<Html<String>, WebError> {
    let Query(filter) = filter?;
    let run = load_run(&state, id).await?;
    let progress = progress_of(&state, &run);
    let report = if run.status == RunStatus::Succeeded {
        state.report(id).await?
    } else {
        None
    };
    let mut rows = Vec::new();
    let mut schemas = Vec::new();
    let mut any_duplicates = false;
    let mut total_tables = 0;
    if let Some(report) = &report {
        total_tables = report.tables.len();
        let mut order: Vec<usize> = (0..report.tables.len()).collect();
        // Worst first: the largest overcount, then the most excess rows.
        order.sort_by(|&a, &b| {
            let (ta, tb) = (&report.tables[a], &report.tables[b]);
            tb.worst_overcount()
                .cmp(&ta.worst_overcount())
                .then(
                    tb.excess_rows
                        .unwrap_or(0)
                        .cmp(&ta.excess_rows.unwrap_or(0)),
                )
                .then(a.cmp(&b))
        });
        for t in &report.tables {
            if !schemas.contains(&t.schema) {
                schemas.push(t.schema.clone());
            }
            any_duplicates |= t.status == Status::Duplicates;
        }
        schemas.sort();
        for index in order {
            let t = &report.tables[index];
            if !filter.status.is_empty() && t.status.as_str() != filter.status {
                continue;
            }
            if !filter.schema.is_empty() && t.schema != filter.schema {
                continue;
            }
            rows.push(TableRow {
                href: format!("/runs/{id}/tables/{index}"),
                name: format!("{}.{}", t.schema, t.name),
                status: t.status.label(),
                status_class: status_class(t.status),
                key: t
                    .natural_key
                    .as_ref()
                    .map(|k| format!("({}) {}", k.columns.join(", "), k.source.as_str()))
                    .unwrap_or_else(|| "-".into()),
                rows: format::count(t.rows),
                groups: format::count(t.duplicate_groups),
                excess: format::count(t.excess_rows),
                overcount: worst_measure(t),
            });
        }
    }
    let diff = match &report {
        Some(report) => {
            let (previous, diff) = diff_with_previous(&state, &run, report).await?;
            Some(diff_view(previous, &diff))
        }
        None => None,
    };
    let percent = match progress.total {
        Some(total) if total > 0 => progress.done * 100 / total,
        _ => 0,
    };
    let data = serde_json::json!({
        "id": run.id,
        "status": run.status,
        "api": format!("/api/runs/{id}"),
        "progress": &progress,
    });
    let page = RunPage {
        active: run.status.is_active(),
        summary: report.as_ref().map(|r| {
            (
                format::count(Some(r.summary.tables as i64)),
                format::count(Some(r.summary.with_duplicates as i64)),
                format::count(Some(r.summary.excess_rows)),
            )
        }),
        report_dialect: report
            .as_ref()
            .map(|r| Dialect::from(r.dialect).name())
            .unwrap_or("postgres"),
        run,
        progress,
        percent,
        data_json: script_json(&data),
        rows,
        total_tables,
        any_duplicates,
        schemas,
        statuses: vec![
            ("duplicates", "duplicates"),
            ("clean", "clean"),
            ("enforced", "enforced"),
            ("no_key", "no key"),
            ("error", "error"),
        ],
        filter_status: filter.status,
        filter_schema: filter.schema,
        dialects: Dialect::ALL.iter().map(|d| d.name()).collect(),
        diff,
    };
    Ok(Html(page.render()?))
}

/// A file download: the body, its type, and a file name made safe for the header.
pub fn attachment(body: String, content_type: &'static str, file_name: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

pub async fn export_json(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    let (run, report) = load_report(&state, id).await?;
    let body =
        serde_json::to_string_pretty(&*report).map_err(|e| WebError::Internal(e.to_string()))?;
    let name = format::file_name(&["natkey", &run.warehouse, &format!("run{id}")], "json");
    Ok(attachment(body + "\n", "application/json", &name))
}

/// A CSV cell: quoted when needed, and a leading `=`, `+`, `-` or `@` neutralised so a
/// spreadsheet never runs an identifier as a formula.
fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) && text.parse::<f64>().is_err() {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

pub fn findings_csv(report: &Report) -> String {
    let mut out = String::from(
        "schema,table,status,natural_key,key_source,rows,duplicate_groups,excess_rows,\
         exact_groups,conflicting_groups,measure,overcount,overcount_min,overcount_max,message\n",
    );
    let opt = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    for t in &report.tables {
        let base = [
            csv_cell(&t.schema),
            csv_cell(&t.name),
            t.status.as_str().to_string(),
            csv_cell(
                &t.natural_key
                    .as_ref()
                    .map(|k| k.columns.join(" "))
                    .unwrap_or_default(),
            ),
            t.natural_key
                .as_ref()
                .map(|k| k.source.as_str().to_string())
                .unwrap_or_default(),
            opt(t.rows),
            opt(t.duplicate_groups),
            opt(t.excess_rows),
            opt(t.exact_groups),
            opt(t.conflicting_groups),
        ]
        .join(",");
        let message = csv_cell(t.message.as_deref().unwrap_or(""));
        if t.measures.is_empty() {
            out.push_str(&format!("{base},,,,,{message}\n"));
        }
        for m in &t.measures {
            out.push_str(&format!(
                "{base},{},{},{},{},{message}\n",
                csv_cell(&m.column),
                m.overcount.0,
                m.overcount_min.0,
                m.overcount_max.0
            ));
        }
    }
    out
}

pub async fn export_csv(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    let (run, report) = load_report(&state, id).await?;
    let name = format::file_name(&["natkey", &run.warehouse, &format!("run{id}")], "csv");
    Ok(attachment(
        findings_csv(&report),
        "text/csv; charset=utf-8",
        &name,
    ))
}

#[derive(Deserialize)]
pub struct DialectQuery {
    dialect: Option<String>,
}

/// Comment lines: every line of `text` after `-- `, so no message can end a comment early.
pub fn comment(text: &str) -> String {
    text.lines()
        .map(|l| format!("-- {l}\n"))
        .collect::<String>()
}

/// The plans of every table with duplicates, one script.
pub fn plans_bundle(report: &Report, dialect: Dialect) -> String {
    let mut out = comment(&format!(
        "natkey plans ({}) for every table with duplicates in the audit of {} at {}.\n\
         Read each plan before running it; natkey never runs them.",
        dialect.name(),
        report.warehouse,
        report.started_at
    ));
    let mut any = false;
    for t in report
        .tables
        .iter()
        .filter(|t| t.status == Status::Duplicates)
    {
        any = true;
        out.push('\n');
        out.push_str(&comment(&format!("==== {}.{} ====", t.schema, t.name)));
        match plan::plan_table(&PlanInput::from_report(report, t, dialect, None)) {
            Ok(p) => out.push_str(&p.render()),
            Err(e) => out.push_str(&comment(&format!("no plan: {e}"))),
        }
    }
    if !any {
        out.push_str(&comment(
            "\nNo table has duplicates: there is nothing to migrate.",
        ));
    }
    out
}

fn parse_dialect(q: Option<&str>, report: &Report) -> Result<Dialect, WebError> {
    match q.filter(|d| !d.is_empty()) {
        Some(d) => d.parse::<Dialect>().map_err(WebError::BadRequest),
        None => Ok(report.dialect.into()),
    }
}

async fn plans(state: &AppState, id: i64, q: DialectQuery) -> Result<Response, WebError> {
    let (run, report) = load_report(state, id).await?;
    let dialect = parse_dialect(q.dialect.as_deref(), &report)?;
    let name = format::file_name(
        &[
            "natkey",
            &run.warehouse,
            &format!("run{id}"),
            dialect.name(),
        ],
        "sql",
    );
    Ok(attachment(
        plans_bundle(&report, dialect),
        "application/sql; charset=utf-8",
        &name,
    ))
}

pub async fn export_plans_page(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    q: Result<Query<DialectQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(q) = q?;
    plans(&state, id, q).await
}

pub async fn export_plans_api(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    q: Result<Query<DialectQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    Ok(plans(&state, id, q).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_audit_that_panics_ends_its_run_failed_with_the_reason() {
        let dir = std::env::temp_dir().join(format!(
            "natkey-panic-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        let store = crate::store::Store::open(&dir.join("natkey.db"))
            .await
            .expect("store opens");
        let state = AppState::new(
            store.clone(),
            Config::default(),
            Vec::new(),
            super::super::AuthSettings::default(),
            None,
        );
        let (id, _) = store
            .queue_run("dw", RunTrigger::Manual, None)
            .await
            .expect("queued");
        store.mark_running(id).await.expect("running");
        let audit = tokio::task::spawn_blocking(|| panic!("index out of bounds in the scan"));
        supervise(state, id, audit).await;
        let run = store.run(id).await.expect("reads").expect("exists");
        assert_eq!(run.status, RunStatus::Failed);
        let error = run.error.expect("a reason");
        assert!(error.contains("crashed"), "{error}");
        assert!(error.contains("index out of bounds in the scan"), "{error}");
        let (next, created) = store
            .queue_run("dw", RunTrigger::Manual, None)
            .await
            .expect("queued");
        assert!(
            created && next != id,
            "a new audit does not join the dead one"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
