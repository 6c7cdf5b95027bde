//! The Schedules page and API: each schedule with its next run times and last runs, "Run now"
//! (an audit of the schedule's warehouse and filters, recorded as a run of the schedule) and
//! "Pause"/"Resume" (stored, so a restart keeps it). Schedules come from natkey.toml's
//! `[[schedule]]` entries and from the page itself: a schedule made there (or with `POST
//! /api/schedules`) is stored in natkey's store as the entry it would be in the file, checked
//! the same way, and deleted there; one of natkey.toml is changed in the file.

use askama::Template;
use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, WebError};
use super::runs::{RunRequest, start_run_with};
use super::security::CurrentUser;
use crate::schedule::{Schedule, ScheduleConfig};
use crate::store::{Run, RunTrigger, StoreError};

/// How many of a schedule's runs the page and the API show.
const LAST_RUNS: i64 = 10;
/// How many next run times.
const NEXT_RUNS: usize = 3;
/// The longest schedule name the page accepts (names appear in URLs, logs and notifications).
const MAX_NAME_CHARS: usize = 100;

/// Where a schedule is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleOrigin {
    /// A `[[schedule]]` entry of natkey.toml: changed in the file, not on the page.
    Config,
    /// Made on the Schedules page or with `POST /api/schedules` (by this user, when known).
    Page { created_by: Option<String> },
}

/// Every schedule natkey runs, and the saved ones it cannot run.
pub struct ScheduleBook {
    /// natkey.toml's first, then the page's, each by name.
    pub schedules: Vec<(Schedule, ScheduleOrigin)>,
    /// Saved schedules that cannot run, and why (their warehouse or target left natkey.toml).
    pub unusable: Vec<(String, String)>,
}

impl AppState {
    /// natkey.toml's schedules and the store's, read afresh (another natkey sharing the store
    /// may have added or deleted one).
    pub async fn schedules(&self) -> Result<ScheduleBook, StoreError> {
        let mut book = ScheduleBook {
            schedules: (self.inner.schedules.iter())
                .map(|s| (s.clone(), ScheduleOrigin::Config))
                .collect(),
            unusable: Vec::new(),
        };
        for saved in self.inner.store.saved_schedules().await? {
            let taken = book.schedules.iter().any(|(s, _)| s.name == saved.name);
            match saved.config.and_then(|c| self.check_schedule(&c)) {
                Ok(_) if taken => book.unusable.push((
                    saved.name,
                    "natkey.toml now has a [[schedule]] of this name, which runs instead".into(),
                )),
                Ok(mut schedule) => {
                    schedule.since = Some(saved.created_at);
                    let origin = ScheduleOrigin::Page {
                        created_by: saved.created_by,
                    };
                    book.schedules.push((schedule, origin));
                }
                Err(reason) => book.unusable.push((saved.name, reason)),
            }
        }
        Ok(book)
    }

    /// The schedule named `name`, wherever it is defined.
    pub async fn schedule(
        &self,
        name: &str,
    ) -> Result<Option<(Schedule, ScheduleOrigin)>, StoreError> {
        Ok(self
            .schedules()
            .await?
            .schedules
            .into_iter()
            .find(|(s, _)| s.name == name))
    }

    /// Checks an entry as natkey.toml's are checked: cron pattern, zone, tables, and a
    /// warehouse and targets this natkey has.
    fn check_schedule(&self, config: &ScheduleConfig) -> Result<Schedule, String> {
        let warehouses: Vec<&str> = (self.inner.warehouses.iter())
            .map(|w| w.name.as_str())
            .collect();
        let targets: Vec<&str> = (self.inner.targets.iter())
            .map(|t| t.name.as_str())
            .collect();
        Schedule::check(config, &warehouses, &targets).map_err(|e| e.to_string())
    }
}

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
    /// "natkey.toml", "made on this page by ana".
    pub origin: String,
    /// Made on the page, so it can be deleted there.
    pub deletable: bool,
}

#[derive(Template)]
#[template(path = "schedules/index.html")]
struct SchedulesPage {
    schedules: Vec<ScheduleView>,
    /// Saved schedules that cannot run: (name, why).
    unusable: Vec<(String, String)>,
    /// The warehouses and notification targets a new schedule may name.
    warehouses: Vec<String>,
    targets: Vec<String>,
    /// The new-schedule form: what was typed, and why it was refused.
    form: NewSchedule,
    error: Option<String>,
}

/// The new-schedule form, as typed (kept when the schedule is refused, so nothing is lost).
#[derive(Debug, Clone, Default)]
pub struct NewSchedule {
    pub name: String,
    pub warehouse: String,
    pub cron: String,
    pub timezone: String,
    /// One per line.
    pub schemas: String,
    pub tables: String,
    pub notify: Vec<String>,
}

impl NewSchedule {
    /// Reads the posted fields (`notify` repeats, once per ticked target).
    fn from_fields(fields: Vec<(String, String)>) -> NewSchedule {
        let mut form = NewSchedule::default();
        for (key, value) in fields {
            match key.as_str() {
                "name" => form.name = value,
                "warehouse" => form.warehouse = value,
                "cron" => form.cron = value,
                "timezone" => form.timezone = value,
                "schemas" => form.schemas = value,
                "tables" => form.tables = value,
                "notify" => form.notify.push(value),
                _ => {}
            }
        }
        form
    }

    fn entry(&self) -> ScheduleConfig {
        let lines = |text: &str| -> Vec<String> {
            (text.lines())
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        };
        ScheduleConfig {
            name: self.name.trim().to_string(),
            warehouse: self.warehouse.trim().to_string(),
            cron: self.cron.trim().to_string(),
            timezone: self.timezone.trim().to_string(),
            schemas: lines(&self.schemas),
            tables: lines(&self.tables),
            notify: self.notify.clone(),
        }
    }

    /// Whether the target is ticked (for the checkboxes).
    pub fn notifies(&self, target: &str) -> bool {
        self.notify.iter().any(|t| t == target)
    }
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

async fn view(
    state: &AppState,
    s: &Schedule,
    origin: &ScheduleOrigin,
    paused: bool,
) -> Result<ScheduleView, WebError> {
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
        origin: match origin {
            ScheduleOrigin::Config => "natkey.toml".into(),
            ScheduleOrigin::Page {
                created_by: Some(user),
            } => format!("made on this page by {user}"),
            ScheduleOrigin::Page { created_by: None } => "made on this page".into(),
        },
        deletable: matches!(origin, ScheduleOrigin::Page { .. }),
    })
}

/// The page, with the new-schedule form as given (and why it was refused).
async fn render_page(
    state: &AppState,
    form: NewSchedule,
    error: Option<String>,
) -> Result<String, WebError> {
    let paused = state.inner.store.paused_schedules().await?;
    let book = state.schedules().await?;
    let mut schedules = Vec::new();
    for (s, origin) in &book.schedules {
        schedules.push(view(state, s, origin, paused.contains(&s.name)).await?);
    }
    let form = NewSchedule {
        cron: if form.cron.is_empty() {
            "0 2 * * *".into()
        } else {
            form.cron
        },
        timezone: if form.timezone.is_empty() {
            "UTC".into()
        } else {
            form.timezone
        },
        ..form
    };
    Ok(SchedulesPage {
        schedules,
        unusable: book.unusable,
        warehouses: (state.inner.warehouses.iter())
            .map(|w| w.name.clone())
            .collect(),
        targets: state.inner.targets.iter().map(|t| t.name.clone()).collect(),
        form,
        error,
    }
    .render()?)
}

pub async fn page(State(state): State<AppState>) -> Result<Html<String>, WebError> {
    Ok(Html(
        render_page(&state, NewSchedule::default(), None).await?,
    ))
}

async fn find(state: &AppState, name: &str) -> Result<(Schedule, ScheduleOrigin), WebError> {
    state
        .schedule(name)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no schedule named {name:?}")))
}

/// Why a new schedule is refused, as the page and the API say it.
enum Refusal {
    /// The entry is not valid (400): the message names the field.
    Invalid(String),
    /// The name is taken (409).
    Taken(String),
}

/// Checks and saves a schedule made on the page or with the API.
async fn create(
    state: &AppState,
    entry: &ScheduleConfig,
    user: &CurrentUser,
) -> Result<Result<(), Refusal>, WebError> {
    let name = &entry.name;
    if name.chars().count() > MAX_NAME_CHARS {
        return Ok(Err(Refusal::Invalid(format!(
            "schedule name: at most {MAX_NAME_CHARS} characters"
        ))));
    }
    if name.chars().any(char::is_control) {
        return Ok(Err(Refusal::Invalid(
            "schedule name: no control characters (tabs, line breaks)".into(),
        )));
    }
    if let Err(reason) = state.check_schedule(entry) {
        return Ok(Err(Refusal::Invalid(reason)));
    }
    let book = state.schedules().await?;
    let taken = book.schedules.iter().any(|(s, _)| &s.name == name)
        || book.unusable.iter().any(|(n, _)| n == name);
    if taken
        || !state
            .inner
            .store
            .save_schedule(entry, user.0.as_deref())
            .await?
    {
        return Ok(Err(Refusal::Taken(format!(
            "a schedule named {name:?} exists already: choose another name"
        ))));
    }
    tracing::info!("schedule {name:?} made on the Schedules page");
    Ok(Ok(()))
}

/// Deletes a schedule made on the page (its runs stay in the history).
async fn delete(state: &AppState, name: &str) -> Result<(), WebError> {
    if state.inner.schedules.iter().any(|s| s.name == name) {
        return Err(WebError::Conflict(format!(
            "schedule {name:?} is defined in natkey.toml: remove it there and restart natkey"
        )));
    }
    if !state.inner.store.delete_schedule(name).await? {
        return Err(WebError::NotFound(format!("no schedule named {name:?}")));
    }
    Ok(())
}

/// `POST /schedules`: the new-schedule form. A refused schedule shows the page again with
/// the reason and everything as typed.
pub async fn create_from_form(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<CurrentUser>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(fields) = form?;
    let form = NewSchedule::from_fields(fields);
    let (status, reason) = match create(&state, &form.entry(), &user).await? {
        Ok(()) => return Ok(Redirect::to("/schedules").into_response()),
        Err(Refusal::Invalid(reason)) => (StatusCode::BAD_REQUEST, reason),
        Err(Refusal::Taken(reason)) => (StatusCode::CONFLICT, reason),
    };
    let html = render_page(&state, form, Some(reason)).await?;
    Ok((status, Html(html)).into_response())
}

pub async fn delete_from_form(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, WebError> {
    delete(&state, &name).await?;
    Ok(Redirect::to("/schedules"))
}

/// "Run now": the schedule's audit, outside its slots (no notification: a person is watching).
async fn run_now(state: &AppState, name: &str) -> Result<i64, WebError> {
    let (s, _) = find(state, name).await?;
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
    find(state, name).await?;
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
    /// `config` (natkey.toml) or `page` (made on the Schedules page or with the API).
    origin: &'static str,
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

async fn schedule_json(
    state: &AppState,
    s: &Schedule,
    origin: &ScheduleOrigin,
    paused: bool,
) -> Result<ScheduleJson, WebError> {
    let store = &state.inner.store;
    let slots = store.slots_of_schedule(&s.name).await?;
    let last = store.runs_of_schedule(&s.name, 1).await?;
    let next_runs = s
        .next_runs(chrono::Utc::now(), NEXT_RUNS)
        .map_err(|e| WebError::Internal(e.to_string()))?
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    Ok(ScheduleJson {
        name: s.name.clone(),
        warehouse: s.warehouse.clone(),
        cron: s.cron_text.clone(),
        timezone: s.timezone.name().to_string(),
        schemas: s.schemas.clone(),
        tables: s.tables.iter().map(ToString::to_string).collect(),
        notify: s.notify.clone(),
        paused,
        next_runs,
        last_run: last.first().map(|r| run_json(r, slots.get(&r.id))),
        origin: match origin {
            ScheduleOrigin::Config => "config",
            ScheduleOrigin::Page { .. } => "page",
        },
    })
}

pub async fn api_list(State(state): State<AppState>) -> Result<Json<Vec<ScheduleJson>>, ApiError> {
    let paused = state.inner.store.paused_schedules().await?;
    let mut out = Vec::new();
    for (s, origin) in &state.schedules().await?.schedules {
        out.push(schedule_json(&state, s, origin, paused.contains(&s.name)).await?);
    }
    Ok(Json(out))
}

/// `POST /api/schedules` with a `[[schedule]]` entry as JSON: `201` and the schedule as `GET
/// /api/schedules` lists it; `400` naming the field that is wrong, `409` when the name is taken.
pub async fn api_create(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<CurrentUser>,
    body: Result<Json<ScheduleConfig>, JsonRejection>,
) -> Result<(StatusCode, Json<ScheduleJson>), ApiError> {
    let Json(entry) = body?;
    match create(&state, &entry, &user).await? {
        Ok(()) => {}
        Err(Refusal::Invalid(reason)) => return Err(WebError::BadRequest(reason).into()),
        Err(Refusal::Taken(reason)) => return Err(WebError::Conflict(reason).into()),
    }
    let (s, origin) = find(&state, &entry.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(schedule_json(&state, &s, &origin, false).await?),
    ))
}

/// `DELETE /api/schedules/{name}`: a schedule made on the page or with the API.
pub async fn api_delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    delete(&state, &name).await?;
    Ok(Json(serde_json::json!({ "name": name, "deleted": true })))
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
            find(&state, name).await?;
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
