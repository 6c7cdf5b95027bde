//! `natkey serve`: the intranet web app. Server-rendered pages (askama templates in
//! `templates/`) that read without JavaScript, enhanced by the plain scripts in `static/`, and a
//! JSON API under `/api/` for everything the pages show.
//!
//! One file per page area: `overview.rs` (warehouses, latest audit, trend), `runs.rs` (an audit
//! run: live progress, the table list, exports, the runner that executes audits in the
//! background), `table.rs` (one table's evidence, key form, chart, samples, plans), `rewrite.rs`
//! (task-SQL analysis), `schedules.rs` (the Schedules page and API: next runs, last runs, Run
//! now, Pause), `nightly.rs` (the in-process scheduler that runs `[[schedule]]` slots, notifies
//! and prunes), `metrics.rs` (`/metrics` for Prometheus), `security.rs` (auth, CSRF, headers,
//! body limit), `error.rs` (the one error type, with its JSON twin for `/api`).
//!
//! **Invariant:** warehouse connections are only ever the read-only
//! [`crate::warehouse::Warehouse`]; the web app writes only to natkey's own store.

mod assets;
mod error;
mod format;
mod metrics;
pub mod nightly;
mod overview;
mod rewrite;
mod runs;
mod schedules;
mod security;
mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::audit::report::Report;
use crate::config::{AuthMode, Config};
use crate::store::Store;
use crate::warehouse::WarehouseUrl;

pub use self::error::WebError;
pub use self::nightly::{NightlyAudits, schedules_from_config};
pub use self::rewrite::{NatkeyRewriter, RewriteOutcome, TaskAnalyzer};
pub use self::runs::{RunRequest, config_with_key_overrides, start_run, start_run_with};

/// The largest request body natkey accepts (a pasted task SQL is far smaller).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A warehouse the app may audit. The URL's password never leaves this struct: pages show
/// [`WarehouseUrl::redacted`].
#[derive(Clone)]
pub struct WarehouseEntry {
    pub name: String,
    pub url: WarehouseUrl,
    /// `[[warehouse]] schemas` and `tables`: what an audit of it covers unless a schedule's
    /// filters say otherwise (empty: everything).
    pub schemas: Vec<String>,
    pub tables: Vec<crate::config::TableName>,
}

/// Who may use the app (from `[server]`).
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// The shared token of `auth = "token"`.
    pub token: Option<String>,
    /// The user header of `auth = "proxy"`.
    pub proxy_header: String,
    /// Proxy addresses trusted to set it.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `[server] public_origin`, normalised (`https://natkey.example.com`): an `Origin` page
    /// POSTs may carry besides the request's own `Host`.
    pub public_origin: Option<String>,
}

/// Progress of a running audit, kept in memory for the live page (the store has it too).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LiveProgress {
    pub done: usize,
    pub total: usize,
    pub current: Option<String>,
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub store: Store,
    pub config: Config,
    pub warehouses: Vec<WarehouseEntry>,
    /// natkey.toml's `[[schedule]]` entries, checked; `AppState::schedules` adds those made on
    /// the Schedules page (kept in the store).
    pub schedules: Vec<crate::schedule::Schedule>,
    /// `[[notify]]` targets, with their URLs resolved.
    pub targets: Vec<crate::notify::Target>,
    pub auth: AuthSettings,
    /// The task-SQL analyzer; `None` until natkey's rewriter is wired in.
    pub analyzer: Option<Arc<dyn TaskAnalyzer>>,
    pub live: Mutex<HashMap<i64, LiveProgress>>,
    /// Parsed reports of finished runs (a report never changes once stored).
    pub reports: Mutex<HashMap<i64, Arc<Report>>>,
    /// Rendered plans per (run, table), every dialect: written from a stored report, so they
    /// never change either, and writing seven plans is most of a table page's work.
    pub plans: Mutex<HashMap<(i64, usize), Plans>>,
}

/// Every dialect's plan for one table of one run.
pub type Plans = Arc<Vec<RenderedPlan>>;

/// One dialect's plan for a table, or why there is none.
pub struct RenderedPlan {
    pub dialect: crate::dialect::Dialect,
    pub sql: Result<String, String>,
}

impl AppState {
    pub fn new(
        store: Store,
        config: Config,
        warehouses: Vec<WarehouseEntry>,
        auth: AuthSettings,
        analyzer: Option<Arc<dyn TaskAnalyzer>>,
    ) -> AppState {
        // `natkey serve` checks both with `schedules_from_config` before it gets here, so a
        // failure can only come from a caller that has no schedules to run.
        let (schedules, targets) = schedules_from_config(&config).unwrap_or_else(|e| {
            tracing::warn!("schedules disabled: {e}");
            Default::default()
        });
        AppState {
            inner: Arc::new(Inner {
                store,
                config,
                warehouses,
                schedules,
                targets,
                auth,
                analyzer,
                live: Mutex::new(HashMap::new()),
                reports: Mutex::new(HashMap::new()),
                plans: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn warehouse(&self, name: &str) -> Option<&WarehouseEntry> {
        self.inner.warehouses.iter().find(|w| w.name == name)
    }

    /// The report of a finished run, parsed once and then shared.
    pub async fn report(&self, run: i64) -> Result<Option<Arc<Report>>, WebError> {
        if let Some(report) = lock(&self.inner.reports).get(&run) {
            return Ok(Some(report.clone()));
        }
        let Some(report) = self.inner.store.report(run).await? else {
            return Ok(None);
        };
        let report = Arc::new(report);
        let mut cache = lock(&self.inner.reports);
        // A handful of reports is what people look at; keep memory bounded.
        if cache.len() >= 16 {
            cache.clear();
        }
        cache.insert(run, report.clone());
        Ok(Some(report))
    }
}

impl AppState {
    /// Every dialect's plan for table `index` of run `run`'s report, written once.
    pub fn plans(&self, run: i64, index: usize, report: &Report) -> Plans {
        if let Some(plans) = lock(&self.inner.plans).get(&(run, index)) {
            return plans.clone();
        }
        let table = &report.tables[index];
        let plans: Plans = Arc::new(
            crate::dialect::Dialect::ALL
                .iter()
                .map(|&dialect| RenderedPlan {
                    dialect,
                    sql: crate::plan::plan_table(&crate::plan::PlanInput::from_report(
                        report, table, dialect, None,
                    ))
                    .map(|p| p.render())
                    .map_err(|e| e.to_string()),
                })
                .collect(),
        );
        let mut cache = lock(&self.inner.plans);
        if cache.len() >= 512 {
            cache.clear();
        }
        cache.insert((run, index), plans.clone());
        plans
    }
}

/// A poisoned lock only means another request panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The whole app: pages, API, static files, and the security layers.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/warehouses/{name}/runs", post(runs::start_from_form))
        .route("/runs/{id}", get(runs::page))
        .route("/runs/{id}/report.json", get(runs::export_json))
        .route("/runs/{id}/tables.csv", get(runs::export_csv))
        .route("/runs/{id}/plans.sql", get(runs::export_plans_page))
        .route("/runs/{id}/tables/{index}", get(table::page))
        .route("/runs/{id}/tables/{index}/key", post(table::save_key))
        .route("/runs/{id}/tables/{index}/plan.sql", get(table::plan_sql))
        .route("/rewrite", get(rewrite::page).post(rewrite::submit))
        .route(
            "/schedules",
            get(schedules::page).post(schedules::create_from_form),
        )
        .route(
            "/schedules/{name}/delete",
            post(schedules::delete_from_form),
        )
        .route("/schedules/{name}/run", post(schedules::run_from_form))
        .route("/schedules/{name}/pause", post(schedules::pause_from_form))
        .route(
            "/schedules/{name}/resume",
            post(schedules::resume_from_form),
        )
        .route(
            "/api/schedules",
            get(schedules::api_list).post(schedules::api_create),
        )
        .route(
            "/api/schedules/{name}",
            axum::routing::delete(schedules::api_delete),
        )
        .route("/api/schedules/{name}/run", post(schedules::api_run))
        .route("/api/schedules/{name}/pause", post(schedules::api_pause))
        .route("/api/schedules/{name}/resume", post(schedules::api_resume))
        .route("/api/runs", get(schedules::api_runs))
        .route("/metrics", get(metrics::metrics))
        .route("/login", get(security::login_page).post(security::login))
        .route("/api/warehouses", get(overview::api_warehouses))
        .route("/api/warehouses/{name}/runs", post(runs::api_start))
        .route("/api/runs/{id}", get(runs::api_run))
        .route("/api/runs/{id}/plans.sql", get(runs::export_plans_api))
        .route("/api/rewrite", post(rewrite::api))
        .route("/healthz", get(|| async { "ok" }))
        .route("/static/{file}", get(assets::serve))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(error::api_rejections_as_json))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Reads `[[warehouse]]` entries into the app's warehouses (URLs from the environment where
/// `url_env` says so).
pub fn warehouses_from_config(config: &Config) -> Result<Vec<WarehouseEntry>, String> {
    let mut out: Vec<WarehouseEntry> = Vec::new();
    for w in &config.warehouses {
        if out.iter().any(|o| o.name == w.name) {
            return Err(format!("[[warehouse]] {:?} is listed twice", w.name));
        }
        let url = WarehouseUrl::parse(&w.resolve_url()?)
            .map_err(|e| format!("[[warehouse]] {:?}: {e}", w.name))?;
        out.push(WarehouseEntry {
            name: w.name.clone(),
            url,
            schemas: w.schemas.clone(),
            tables: w.tables.clone(),
        });
    }
    Ok(out)
}

/// `[server]` auth settings, with the token read from the environment.
pub fn auth_from_config(config: &Config) -> Result<AuthSettings, String> {
    let server = &config.server;
    let mut auth = AuthSettings {
        mode: server.auth,
        token: None,
        proxy_header: server
            .proxy_header
            .clone()
            .unwrap_or_else(|| "X-Forwarded-User".into()),
        trusted_proxies: Vec::new(),
        public_origin: server
            .public_origin
            .as_deref()
            .map(security::parse_public_origin)
            .transpose()?,
    };
    match server.auth {
        AuthMode::None => {}
        AuthMode::Token => {
            let var = server.token_env.as_deref().unwrap_or("NATKEY_TOKEN");
            let token = std::env::var(var).map_err(|_| {
                format!(
                    "[server] auth = \"token\" needs the token in the environment variable {var}"
                )
            })?;
            if !security::token_is_cookie_safe(&token) {
                return Err(format!(
                    "the token in {var} must be printable ASCII without spaces, quotes, commas, \
                     semicolons or backslashes"
                ));
            }
            auth.token = Some(token);
        }
        AuthMode::Proxy => {
            for p in &server.trusted_proxies {
                auth.trusted_proxies.push(p.parse().map_err(|_| {
                    format!("[server] trusted_proxies: {p:?} is not an IP address")
                })?);
            }
            if auth.trusted_proxies.is_empty() {
                return Err(
                    "[server] auth = \"proxy\" needs trusted_proxies: the proxy addresses allowed \
                     to name the user"
                        .into(),
                );
            }
        }
    }
    Ok(auth)
}

/// Serves the app on `listener` until Ctrl-C.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
