//! One table of an audit: its figures, natural key (with the form to confirm or change it), the
//! by-day chart, sample groups side by side, downstream views, plans per dialect, and the box
//! to paste its load task.

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::response::{Html, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use super::error::WebError;
use super::format::{self, DayChart, script_json};
use super::runs::attachment;
use super::security::CurrentUser;
use crate::audit::report::{Report, Status, TableReport};
use crate::dialect::Dialect;
use crate::plan::{self, PlanInput};
use crate::store::Run;

pub struct Figure {
    pub label: &'static str,
    pub value: String,
}

pub struct MeasureView {
    pub column: String,
    pub total: String,
    pub overcount: String,
    pub range: String,
    pub survivor: String,
}

pub struct SampleView {
    pub title: String,
    pub exact: bool,
    /// (column, differs, cells)
    pub lines: Vec<(String, bool, Vec<Option<String>>)>,
    pub copies: usize,
}

pub struct PlanView {
    pub dialect: &'static str,
    pub sql: Option<String>,
    pub error: Option<String>,
    pub download: String,
}

#[derive(Template)]
#[template(path = "table/table.html")]
struct TablePage {
    run: Run,
    index: usize,
    table: TableReport,
    qualified: String,
    status_class: &'static str,
    figures: Vec<Figure>,
    measures: Vec<MeasureView>,
    key_columns: String,
    key_source: String,
    key_confidence: String,
    key_enforced: bool,
    candidates: Vec<(String, String)>,
    stored_key: Option<String>,
    saved: bool,
    chart: Option<DayChart>,
    /// Excess rows and each measure's overcount over the warehouse's past audits.
    trends: Vec<format::Trend>,
    samples: Vec<SampleView>,
    plans: Vec<PlanView>,
    report_dialect: &'static str,
    analyzer_available: bool,
    data_json: String,
}

async fn load(
    state: &AppState,
    id: i64,
    index: usize,
) -> Result<(Run, std::sync::Arc<Report>), WebError> {
    let run = state
        .inner
        .store
        .run(id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("there is no audit run {id}")))?;
    let report = state
        .report(id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("audit run {id} has no report yet")))?;
    if index >= report.tables.len() {
        return Err(WebError::NotFound(format!(
            "audit run {id} has no table #{index}"
        )));
    }
    Ok((run, report))
}

#[derive(Deserialize, Default)]
pub struct TableQuery {
    #[serde(default)]
    saved: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Path((id, index)): Path<(i64, usize)>,
    q: Result<Query<TableQuery>, QueryRejection>,
) -> Result<Html<String>, WebError> {
    let Query(q) = q?;
    let (run, report) = load(&state, id, index).await?;
    let t = &report.tables[index];
    let stored_key = state
        .inner
        .store
        .key_overrides(&run.warehouse)
        .await?
        .into_iter()
        .find(|o| o.schema == t.schema && o.table == t.name)
        .map(|o| o.natural_key.join(", "));
    let figures = vec![
        Figure {
            label: "rows",
            value: format::count(t.rows),
        },
        Figure {
            label: "duplicate groups",
            value: format::count(t.duplicate_groups),
        },
        Figure {
            label: "excess rows",
            value: format::count(t.excess_rows),
        },
        Figure {
            label: "exact groups",
            value: format::count(t.exact_groups),
        },
        Figure {
            label: "conflicting groups",
            value: format::count(t.conflicting_groups),
        },
        Figure {
            label: "groups with a NULL key",
            value: format::count(t.null_key_groups),
        },
    ];
    let measures = t
        .measures
        .iter()
        .map(|m| MeasureView {
            column: m.column.clone(),
            total: m.total.to_string(),
            overcount: format!("+{}", m.overcount),
            range: format::overcount_range(&m.overcount_min, &m.overcount_max),
            survivor: m
                .overcount_survivor
                .map(|a| format!("+{a}"))
                .unwrap_or_else(|| "-".into()),
        })
        .collect();
    let samples = t
        .samples
        .iter()
        .map(|s| {
            let title = s
                .key
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(v) => format!("{k} = {v}"),
                    other => format!("{k} = {other}"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let lines = s
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        c.clone(),
                        s.differing_columns.contains(c),
                        s.rows.iter().map(|r| r.get(i).cloned().flatten()).collect(),
                    )
                })
                .collect();
            SampleView {
                title,
                exact: s.exact,
                lines,
                copies: s.rows.len(),
            }
        })
        .collect();
    let plans = if t.status == Status::NoKey || t.status == Status::Error {
        Vec::new()
    } else {
        state
            .plans(id, index, &report)
            .iter()
            .map(|p| {
                let d = p.dialect;
                let (sql, error) = match &p.sql {
                    Ok(sql) => (Some(sql.clone()), None),
                    Err(e) => (None, Some(e.clone())),
                };
                PlanView {
                    dialect: d.name(),
                    sql,
                    error,
                    download: format!("/runs/{id}/tables/{index}/plan.sql?dialect={}", d.name()),
                }
            })
            .collect()
    };
    let key = t.natural_key.as_ref();
    let data = serde_json::json!({
        "run": id,
        "table": index,
        "schema": t.schema,
        "name": t.name,
        "status": t.status,
        "day_column": t.day_column,
    });
    let history = state
        .inner
        .store
        .table_trend(&run.warehouse, &t.schema, &t.name, 30)
        .await?;
    let measure_names: Vec<String> = t.measures.iter().map(|m| m.column.clone()).collect();
    let trends = format::table_trends(&history, &measure_names);
    let page = TablePage {
        trends,
        qualified: format!("{}.{}", t.schema, t.name),
        status_class: match t.status {
            Status::Duplicates => "bad",
            Status::Error => "error",
            Status::NoKey => "warn",
            _ => "good",
        },
        figures,
        measures,
        key_columns: key.map(|k| k.columns.join(", ")).unwrap_or_default(),
        key_source: key
            .map(|k| k.source.as_str().to_string())
            .unwrap_or_default(),
        key_confidence: key
            .map(|k| format!("{:.0}%", k.confidence * 100.0))
            .unwrap_or_default(),
        key_enforced: key.is_some_and(|k| k.enforced),
        candidates: key
            .map(|k| {
                k.candidates
                    .iter()
                    .map(|c| {
                        (
                            c.columns.join(", "),
                            format!("{:.0}%", c.confidence * 100.0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        stored_key,
        saved: q.saved.is_some(),
        chart: format::day_chart(t),
        samples,
        plans,
        report_dialect: Dialect::from(report.dialect).name(),
        analyzer_available: state.inner.analyzer.is_some(),
        data_json: script_json(&data),
        table: t.clone(),
        run,
        index,
    };
    Ok(Html(page.render()?))
}

#[derive(Deserialize)]
pub struct KeyForm {
    natural_key: String,
}

/// Saves the natural key a person confirmed or typed; the next audit of the warehouse uses it.
pub async fn save_key(
    State(state): State<AppState>,
    Path((id, index)): Path<(i64, usize)>,
    axum::Extension(user): axum::Extension<CurrentUser>,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Form(form) = form?;
    let (run, report) = load(&state, id, index).await?;
    let t = &report.tables[index];
    let columns: Vec<String> = form
        .natural_key
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if columns.is_empty() {
        return Err(WebError::BadRequest(
            "name at least one column of the natural key, separated by commas".into(),
        ));
    }
    let known: Vec<&str> = if t.columns.is_empty() {
        t.payload.iter().map(String::as_str).collect()
    } else {
        t.columns.iter().map(|c| c.name.as_str()).collect()
    };
    if let Some(unknown) = columns.iter().find(|c| !known.contains(&c.as_str())) {
        return Err(WebError::BadRequest(format!(
            "{}.{} has no column {unknown:?}; its columns are: {}",
            t.schema,
            t.name,
            known.join(", ")
        )));
    }
    state
        .inner
        .store
        .set_key_override(
            &run.warehouse,
            &t.schema,
            &t.name,
            &columns,
            user.0.as_deref(),
        )
        .await?;
    Ok(Redirect::to(&format!("/runs/{id}/tables/{index}?saved=1")))
}

#[derive(Deserialize)]
pub struct PlanQuery {
    dialect: Option<String>,
}

pub async fn plan_sql(
    State(state): State<AppState>,
    Path((id, index)): Path<(i64, usize)>,
    q: Result<Query<PlanQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(q) = q?;
    let (_, report) = load(&state, id, index).await?;
    let t = &report.tables[index];
    let dialect = match q.dialect.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => d.parse::<Dialect>().map_err(WebError::BadRequest)?,
        None => report.dialect.into(),
    };
    let plan = plan::plan_table(&PlanInput::from_report(&report, t, dialect, None))
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    let name = format::file_name(&[&t.schema, &t.name, dialect.name()], "sql");
    Ok(attachment(
        plan.render(),
        "application/sql; charset=utf-8",
        &name,
    ))
}
