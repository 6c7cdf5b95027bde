//! The overview: every configured warehouse with its latest audit, the trend over past audits,
//! and "Audit now".

use askama::Template;
use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde::Serialize;

use super::error::{ApiError, WebError};
use super::format::{self, Trend};
use super::{AppState, WarehouseEntry};
use crate::audit::report::Status;
use crate::store::Run;

/// A measure of one table whose SUM the latest audit found inflated.
pub struct Inflated {
    pub table: String,
    pub column: String,
    pub overcount: String,
    pub href: String,
    schema: String,
    name: String,
}

pub struct WarehouseView {
    pub name: String,
    pub engine: &'static str,
    pub url: String,
    pub latest: Option<Run>,
    pub latest_status: String,
    pub active: bool,
    /// The latest succeeded audit, if any.
    pub audited: Option<Audited>,
    /// Excess rows over past audits, then the overcount of the most inflated measures.
    pub trends: Vec<Trend>,
    pub recent: Vec<Run>,
}

pub struct Audited {
    pub run: i64,
    pub finished_at: String,
    pub tables: String,
    pub with_duplicates: String,
    pub with_duplicates_n: i64,
    pub excess_rows: String,
    pub inflated: Vec<Inflated>,
}

#[derive(Template)]
#[template(path = "overview/index.html")]
struct OverviewPage {
    warehouses: Vec<WarehouseView>,
    user: Option<String>,
}

async fn view(state: &AppState, w: &WarehouseEntry) -> Result<WarehouseView, WebError> {
    let runs = state.inner.store.runs_of(&w.name, 30).await?;
    let latest = runs.first().cloned();
    let succeeded: Vec<&Run> = runs
        .iter()
        .filter(|r| r.status == crate::store::RunStatus::Succeeded)
        .collect();
    let mut audited = None;
    if let Some(run) = succeeded.first()
        && let Some(report) = state.report(run.id).await?
    {
        let mut inflated = Vec::new();
        for (index, t) in report.tables.iter().enumerate() {
            if t.status != Status::Duplicates {
                continue;
            }
            for m in &t.measures {
                if m.overcount_max.0 > rust_decimal::Decimal::ZERO {
                    inflated.push((
                        m.overcount_max,
                        Inflated {
                            table: format!("{}.{}", t.schema, t.name),
                            column: m.column.clone(),
                            overcount: format::overcount_range(&m.overcount_min, &m.overcount_max),
                            href: format!("/runs/{}/tables/{index}", run.id),
                            schema: t.schema.clone(),
                            name: t.name.clone(),
                        },
                    ));
                }
            }
        }
        inflated.sort_by_key(|i| std::cmp::Reverse(i.0));
        audited = Some(Audited {
            run: run.id,
            finished_at: run.finished_at.clone().unwrap_or_default(),
            tables: format::count(run.tables),
            with_duplicates: format::count(run.with_duplicates),
            with_duplicates_n: run.with_duplicates.unwrap_or(0),
            excess_rows: format::count(run.excess_rows),
            inflated: inflated.into_iter().map(|(_, i)| i).take(8).collect(),
        });
    }
    let points: Vec<(String, i64)> = succeeded
        .iter()
        .rev()
        .map(|r| {
            (
                r.finished_at.clone().unwrap_or_default(),
                r.excess_rows.unwrap_or(0),
            )
        })
        .collect();
    let mut trends: Vec<Trend> = format::trend(&points).into_iter().collect();
    // The three most inflated measures, each over the warehouse's past audits.
    if let Some(a) = &audited {
        for i in a.inflated.iter().take(3) {
            let history = state
                .inner
                .store
                .table_trend(&w.name, &i.schema, &i.name, 30)
                .await?;
            for mut t in format::table_trends(&history, std::slice::from_ref(&i.column))
                .into_iter()
                .skip(1)
            {
                t.label = format!("{}.{} overcount, past audits", i.table, i.column);
                trends.push(t);
            }
        }
    }
    Ok(WarehouseView {
        name: w.name.clone(),
        engine: w.url.engine().name(),
        url: w.url.redacted().to_string(),
        latest_status: latest
            .as_ref()
            .map(|r| r.status.as_str().to_string())
            .unwrap_or_default(),
        active: latest.as_ref().is_some_and(|r| r.status.is_active()),
        latest,
        audited,
        trends,
        recent: runs.into_iter().take(5).collect(),
    })
}

pub async fn page(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<super::security::CurrentUser>,
) -> Result<Html<String>, WebError> {
    let mut warehouses = Vec::new();
    for w in &state.inner.warehouses {
        warehouses.push(view(&state, w).await?);
    }
    Ok(Html(
        OverviewPage {
            warehouses,
            user: user.0,
        }
        .render()?,
    ))
}

#[derive(Serialize)]
pub struct WarehouseJson {
    name: String,
    engine: &'static str,
    /// The URL with its password redacted.
    url: String,
    latest_run: Option<Run>,
}

pub async fn api_warehouses(
    State(state): State<AppState>,
) -> Result<Json<Vec<WarehouseJson>>, ApiError> {
    let mut out = Vec::new();
    for w in &state.inner.warehouses {
        let latest_run = state
            .inner
            .store
            .runs_of(&w.name, 1)
            .await?
            .into_iter()
            .next();
        out.push(WarehouseJson {
            name: w.name.clone(),
            engine: w.url.engine().name(),
            url: w.url.redacted().to_string(),
            latest_run,
        });
    }
    Ok(Json(out))
}
