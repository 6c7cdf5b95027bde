//! Task-SQL analysis: the Rewrite page, the box on the table page (same form, with the table
//! as context), and `POST /api/rewrite`. The analysis itself is natkey's rewriter behind
//! [`TaskAnalyzer`], so the web layer does not depend on how it is built.

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, WebError};
use crate::audit::report::TableReport;
use crate::dialect::Dialect;

/// One finding of the analysis, for the page.
#[derive(Debug, Clone)]
pub struct FindingView {
    pub rule: String,
    pub line: usize,
    pub message: String,
    pub fix: String,
}

/// What an analysis of pasted task SQL found.
#[derive(Debug, Clone)]
pub struct RewriteOutcome {
    /// The rewriter's JSON answer (the `natkey rewrite --format json` contract).
    pub json: serde_json::Value,
    pub idempotent: bool,
    pub findings: Vec<FindingView>,
    /// Statements that could not be read.
    pub errors: Vec<String>,
    pub rewritten: Option<String>,
    /// A unified diff from the pasted text to the rewrite.
    pub diff: Option<String>,
}

/// natkey's task-SQL analyzer. `table` is the audited table the task loads, when the SQL was
/// pasted on a table page (its natural key is then known).
pub trait TaskAnalyzer: Send + Sync {
    fn analyze(&self, sql: &str, dialect: Dialect, table: Option<&TableReport>) -> RewriteOutcome;
}

pub const NOT_AVAILABLE: &str = "The task-SQL analyzer is not available in this build of natkey \
     yet: the rewriter (`natkey rewrite`) is still being built. The audit, the table evidence and \
     the plans work without it.";

#[derive(Deserialize)]
pub struct RewriteForm {
    #[serde(default)]
    sql: String,
    #[serde(default)]
    dialect: String,
    run: Option<i64>,
    table: Option<usize>,
}

pub struct DiffLine {
    pub class: &'static str,
    pub text: String,
}

#[derive(Template)]
#[template(path = "rewrite/rewrite.html")]
struct RewritePage {
    available: bool,
    not_available: &'static str,
    sql: String,
    dialect: String,
    dialects: Vec<&'static str>,
    run: Option<i64>,
    table: Option<usize>,
    table_name: Option<String>,
    outcome: Option<RewriteOutcome>,
    diff: Vec<DiffLine>,
    error: Option<String>,
}

impl RewritePage {
    fn same(&self, a: &str, b: &str) -> bool {
        a == b
    }

    fn empty(state: &AppState) -> Self {
        RewritePage {
            available: state.inner.analyzer.is_some(),
            not_available: NOT_AVAILABLE,
            sql: String::new(),
            dialect: "postgres".into(),
            dialects: Dialect::ALL.iter().map(|d| d.name()).collect(),
            run: None,
            table: None,
            table_name: None,
            outcome: None,
            diff: Vec::new(),
            error: None,
        }
    }
}

pub async fn page(State(state): State<AppState>) -> Result<Html<String>, WebError> {
    Ok(Html(RewritePage::empty(&state).render()?))
}

async fn context_table(
    state: &AppState,
    run: Option<i64>,
    table: Option<usize>,
) -> Result<Option<TableReport>, WebError> {
    let (Some(run), Some(table)) = (run, table) else {
        return Ok(None);
    };
    let report = state.report(run).await?;
    Ok(report.and_then(|r| r.tables.get(table).cloned()))
}

/// Runs the analyzer off the async workers: parsing a large paste is CPU work.
async fn analyze(
    analyzer: &Arc<dyn TaskAnalyzer>,
    sql: &str,
    dialect: &str,
    table: Option<TableReport>,
) -> Result<RewriteOutcome, WebError> {
    if sql.trim().is_empty() {
        return Err(WebError::BadRequest(
            "paste the SQL of a load task to analyse".into(),
        ));
    }
    let dialect = dialect.parse::<Dialect>().map_err(WebError::BadRequest)?;
    let (analyzer, sql) = (analyzer.clone(), sql.to_string());
    tokio::task::spawn_blocking(move || analyzer.analyze(&sql, dialect, table.as_ref()))
        .await
        .map_err(|e| WebError::Internal(format!("the task-SQL analyzer failed: {e}")))
}

/// [`TaskAnalyzer`] over natkey's rewriter (`crate::rewrite`): the keys of natkey.toml and,
/// on a table page, the audited table's natural key, surrogate key and nullable columns.
pub struct NatkeyRewriter {
    pub config: crate::config::Config,
}

impl TaskAnalyzer for NatkeyRewriter {
    fn analyze(&self, sql: &str, dialect: Dialect, table: Option<&TableReport>) -> RewriteOutcome {
        use crate::rewrite::{KnownKeys, TableKeys};
        let mut keys = KnownKeys::new();
        if let Some(known) = table.and_then(TableKeys::from_report) {
            keys.add(known);
        }
        keys.add_config(&self.config);
        let file = table
            .map(|t| format!("{}.sql", t.name))
            .unwrap_or_else(|| "task.sql".into());
        let report = crate::rewrite::analyze(&file, sql, dialect, &keys);
        let diff = report
            .rewritten
            .as_deref()
            .map(|after| crate::rewrite::unified_diff(&file, sql, after))
            .filter(|d| !d.is_empty());
        RewriteOutcome {
            json: serde_json::to_value(&report).unwrap_or(serde_json::Value::Null),
            idempotent: report.idempotent,
            findings: report
                .findings
                .iter()
                .map(|f| FindingView {
                    rule: f.rule.to_string(),
                    line: f.line,
                    message: f.message.clone(),
                    fix: f.fix.clone(),
                })
                .collect(),
            errors: report
                .errors
                .iter()
                .map(|e| format!("line {}, column {}: {}", e.line, e.column, e.message))
                .collect(),
            rewritten: report.rewritten.clone(),
            diff,
        }
    }
}

pub async fn submit(
    State(state): State<AppState>,
    form: Result<Form<RewriteForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form?;
    let table = context_table(&state, form.run, form.table).await?;
    let mut page = RewritePage::empty(&state);
    page.table_name = table.as_ref().map(|t| format!("{}.{}", t.schema, t.name));
    page.run = form.run;
    page.table = form.table;
    page.dialect = if form.dialect.is_empty() {
        "postgres".into()
    } else {
        form.dialect.clone()
    };
    let status = match &state.inner.analyzer {
        None => StatusCode::SERVICE_UNAVAILABLE,
        Some(analyzer) => match analyze(analyzer, &form.sql, &page.dialect, table).await {
            Ok(outcome) => {
                page.diff = outcome
                    .diff
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .map(|l| DiffLine {
                        class: if l.starts_with("+++") || l.starts_with("---") {
                            "meta"
                        } else if l.starts_with('+') {
                            "add"
                        } else if l.starts_with('-') {
                            "del"
                        } else if l.starts_with("@@") {
                            "meta"
                        } else {
                            ""
                        },
                        text: l.to_string(),
                    })
                    .collect();
                page.outcome = Some(outcome);
                StatusCode::OK
            }
            Err(e) => {
                page.error = Some(e.to_string());
                e.status()
            }
        },
    };
    page.sql = form.sql;
    Ok((status, Html(page.render()?)).into_response())
}

#[derive(Deserialize)]
pub struct RewriteRequest {
    sql: String,
    #[serde(default)]
    dialect: Option<String>,
    run: Option<i64>,
    table: Option<usize>,
}

pub async fn api(
    State(state): State<AppState>,
    body: Result<Json<RewriteRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let Some(analyzer) = &state.inner.analyzer else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": NOT_AVAILABLE })),
        )
            .into_response());
    };
    let table = context_table(&state, body.run, body.table).await?;
    let outcome = analyze(
        analyzer,
        &body.sql,
        body.dialect.as_deref().unwrap_or("postgres"),
        table,
    )
    .await?;
    let mut json = outcome.json;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("diff".into(), serde_json::json!(outcome.diff));
    }
    Ok(Json(json).into_response())
}
