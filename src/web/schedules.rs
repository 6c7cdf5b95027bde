//! The Schedules page and API: each `[[schedule]]` with its next run times and last runs,
//! "Run now" (an audit of the schedule's warehouse and filters, recorded as a run of the
//! schedule) and "Pause"/"Resume" (stored, so a restart keeps it).

use askama::Template;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, Redirect};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, WebError};
use super::runs::{RunRequest, start_run_with};
use super::security::CurrentUser;
use crate::schedule::Schedule;
use crate::store::{Run, RunTrigger};

/// How many of a schedule's runs the page and the API show.
const LAST_RUNS: i64 = 10;
/// How many next run times.
const NEXT_RUNS: usize = 3;

/// One run in a schedule's list.
pub struct RunLine {
    pub id: i64,
    /// "slot 2026-12-04 02:00 CET", "Run now", "natkey audit --save".
    pub what: String,
    pub status: &'static str,
    pub started: String,
    pub duration: String,
    pub note: String,
}

pub struct ScheduleView {
    pub name: String,
    pub warehouse: String,
    pub cron: String,
    pub timezone: String,
    pub scope: String,
    pub notify: String,
    pub paused: bool,
    pub next_runs: Vec<String>,
    pub runs: Vec<RunLine>,
}

#[derive(Template)]
#[template(path = "schedules/index.html")]
struct SchedulesPage {
    schedules: Vec<ScheduleView>,
}

fn scope(s: &Schedule) -> String {
    let mut parts = Vec::new();
    if !s.schemas.is_empty() {
        parts.push(format!("schemas {}", s.schemas.join(", ")));
    }
    if !s.tables.is_empty() {
        let tables: Vec<String> = s.tables.iter().map(ToString::to_string).collect();
        parts.push(format!("tables {}", tables.join(", ")));
    }
    if parts.is_empty() {
        "every table".into()
    } else {
        parts.join("; ")
    }
}

fn duration(run: &Run) -> String {
    match run.duration_secs() {
        Some(secs) if secs < 60.0 => format!("{secs:.1} s"),
        Some(secs) => format!("{:.0} min {:.0} s", (secs / 60.0).floor(), secs % 60.0),
        None => "-".into(),
    }
}

async fn view(state: &AppState, s: &Schedule, paused: bool) -> Result<ScheduleView, WebError> {
    let store = &state.inner.store;
    let slots = store.slots_of_schedule(&s.name).await?;
    let runs = store.runs_of_schedule(&s.name, LAST_RUNS).await?;
    let next_runs = s
        .next_runs(chrono::Utc::now(), NEXT_RUNS)
        .map(|times| {
            times
                .iter()
                .map(|t| t.format("%Y-%m-%d %H:%M %Z (%a)").to_string())
                .collect()
        })
        .unwrap_or_else(|e| vec![e.to_string()]);
    let lines = runs
        .iter()
        .map(|run| {
            let slot = slots.get(&run.id);
            let what = match (run.trigger, slot) {
                (_, Some((at, _))) => match crate::schedule::parse_slot(at) {
                    Some(at) => format!("slot {}", s.local(at)),
                    None => format!("slot {at}"),
                },
                (RunTrigger::Cli, None) => "natkey audit --save".into(),
                _ => "Run now".into(),
            };
            let mut note = run.error.clone().unwrap_or_default();
            if let Some((_, Some(missed))) = slot {
                let late = if *missed > 1 {
                    format!("ran late, once for {missed} missed slots")
                } else {
                    "ran late (natkey was not running at the time)".into()
                };
                note = if note.is_empty() {
                    late
                } else {
                    format!("{late}; {note}")
                };
            }
            RunLine {
                id: run.id,
                what,
                status: run.status.as_str(),
                started: run
                    .started_at
                    .clone()
                    .unwrap_or_else(|| run.created_at.clone()),
                duration: duration(run),
                note,
            }
        })
        .collect();
    Ok(ScheduleView {
        name: s.name.clone(),
        warehouse: s.warehouse.clone(),
        cron: s.cron_text.clone(),
        timezone: s.timezone.name().to_string(),
        scope: scope(s),
        notify: if s.notify.is_empty() {
            "nobody".into()
        } else {
            s.notify.join(", ")
        },
        paused,
        next_runs,
        runs: lines,
    })
}

pub async fn page(State(state): State<AppState>) -> Result<Html<String>, WebError> {
    let paused = state.inner.store.paused_schedules().await?;
    let mut schedules = Vec::new();
    for s in &state.inner.schedules {
        schedules.push(view(&state, s, paused.contains(&s.name)).await?);
    }
    Ok(Html(SchedulesPage { schedules }.render()?))
}

fn find<'a>(state: &'a AppState, name: &str) -> Result<&'a Schedule, WebError> {
    state
        .schedule(name)
        .ok_or_else(|| WebError::NotFound(format!("no schedule named {name:?} in natkey.toml")))
}

/// "Run now": the schedule's audit, outside its slots (no notification: a person is watching).
async fn run_now(state: &AppState, name: &str) -> Result<i64, WebError> {
    let s = find(state, name)?;
    start_run_with(
        state,
        RunRequest {
            warehouse: s.warehouse.clone(),
            trigger: RunTrigger::Manual,
            schedule: Some(s.name.clone()),
            schemas: s.schemas.clone(),
            tables: s.tables.clone(),
        },
    )
    .await
}

async fn set_paused(
    state: &AppState,
    name: &str,
    paused: bool,
    user: &CurrentUser,
) -> Result<(), WebError> {
    find(state, name)?;
    state
        .inner
        .store
        .set_paused(name, paused, user.0.as_deref())
        .await?;
    Ok(())
}

pub async fn run_from_form(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, WebError> {
    let id = run_now(&state, &name).await?;
    Ok(Redirect::to(&format!("/runs/{id}")))
}

pub async fn pause_from_form(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::Extension(user): axum::Extension<CurrentUser>,
) -> Result<Redirect, WebError> {
    set_paused(&state, &name, true, &user).await?;
    Ok(Redirect::to("/schedules"))
}

pub async fn resume_from_form(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::Extension(user): axum::Extension<CurrentUser>,
) -> Result<Redirect, WebError> {
    set_paused(&state, &name, false, &user).await?;
    Ok(Redirect::to("/schedules"))
}

#[derive(Serialize)]
pub struct ScheduleJson {
    name: String,
    warehouse: String,
    cron: String,
    timezone: String,
    schemas: Vec<String>,
    tables: Vec<String>,
    notify: Vec<String>,
    paused: bool,
    /// The next run times, in the schedule's zone (RFC 3339 with offset).
    next_runs: Vec<String>,
    last_run: Option<serde_json::Value>,
}

/// A run as the API lists it: the store's run, its duration, and the slot it ran for.
pub fn run_json(run: &Run, slot: Option<&(String, Option<i64>)>) -> serde_json::Value {
    let mut value = serde_json::to_value(run).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "duration_secs".into(),
            serde_json::json!(run.duration_secs()),
        );
        map.insert(
            "scheduled_for".into(),
            serde_json::json!(slot.map(|s| s.0.clone())),
        );
        map.insert(
            "missed_slots".into(),
            serde_json::json!(slot.and_then(|s| s.1)),
        );
        map.insert(
            "url".into(),
            serde_json::json!(format!("/api/runs/{}", run.id)),
        );
    }
    value
}

pub async fn api_list(State(state): State<AppState>) -> Result<Json<Vec<ScheduleJson>>, ApiError> {
    let store = &state.inner.store;
    let paused = store.paused_schedules().await.map_err(WebError::from)?;
    let mut out = Vec::new();
    for s in &state.inner.schedules {
        let slots = store
            .slots_of_schedule(&s.name)
            .await
            .map_err(WebError::from)?;
        let last = store
            .runs_of_schedule(&s.name, 1)
            .await
            .map_err(WebError::from)?;
        let next_runs = s
            .next_runs(chrono::Utc::now(), NEXT_RUNS)
            .map_err(|e| WebError::Internal(e.to_string()))?
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        out.push(ScheduleJson {
            name: s.name.clone(),
            warehouse: s.warehouse.clone(),
            cron: s.cron_text.clone(),
            timezone: s.timezone.name().to_string(),
            schemas: s.schemas.clone(),
            tables: s.tables.iter().map(ToString::to_string).collect(),
            notify: s.notify.clone(),
            paused: paused.contains(&s.name),
            next_runs,
            last_run: last.first().map(|r| run_json(r, slots.get(&r.id))),
        });
    }
    Ok(Json(out))
}

pub async fn api_run(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = run_now(&state, &name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "url": format!("/api/runs/{id}") })),
    ))
}

async fn api_set_paused(
    state: AppState,
    name: String,
    paused: bool,
    user: CurrentUser,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_paused(&state, &name, paused, &user).await?;
    Ok(Json(serde_json::json!({ "name": name, "paused": paused })))
}

pub async fn api_pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::Extension(user): axum::Extension<CurrentUser>,
) -> Result<Json<serde_json::Value>, ApiError> {
    api_set_paused(state, name, true, user).await
}

pub async fn api_resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::Extension(user): axum::Extension<CurrentUser>,
) -> Result<Json<serde_json::Value>, ApiError> {
    api_set_paused(state, name, false, user).await
}

#[derive(serde::Deserialize)]
pub struct RunsQuery {
    schedule: Option<String>,
    warehouse: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/runs?schedule=NAME` (or `?warehouse=NAME`): runs, newest first.
pub async fn api_runs(
    State(state): State<AppState>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(WebError::from)?;
    let store = &state.inner.store;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let (runs, slots) = match (&q.schedule, &q.warehouse) {
        (Some(name), None) => {
            find(&state, name)?;
            (
                store
                    .runs_of_schedule(name, limit)
                    .await
                    .map_err(WebError::from)?,
                store
                    .slots_of_schedule(name)
                    .await
                    .map_err(WebError::from)?,
            )
        }
        (None, Some(name)) => {
            if state.warehouse(name).is_none() {
                return Err(WebError::NotFound(format!(
                    "no warehouse named {name:?} in natkey.toml"
                ))
                .into());
            }
            (
                store.runs_of(name, limit).await.map_err(WebError::from)?,
                Default::default(),
            )
        }
        _ => {
            return Err(WebError::BadRequest(
                "give exactly one of ?schedule=NAME or ?warehouse=NAME".into(),
            )
            .into());
        }
    };
    let runs: Vec<serde_json::Value> = runs.iter().map(|r| run_json(r, slots.get(&r.id))).collect();
    Ok(Json(serde_json::json!({ "runs": runs })))
}
