//! The web app, through `app(state).oneshot(...)`: pages checked with CSS selectors, the JSON
//! API, exports, and the security layers. Warehouses are the real SQLite demo warehouse and a
//! real PostgreSQL fixture with a hostile table name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use natkey::config::{AuthMode, Config};
use natkey::store::Store;
use natkey::warehouse::WarehouseUrl;
use natkey::web::{AppState, AuthSettings, WarehouseEntry, app};
use scraper::{Html, Selector};
use serde_json::Value;
use tower::ServiceExt;

use crate::common::{TempDir, TestDb};
use crate::fixtures::{self, Surrogate};

mod e2e;

const ORIGIN: &str = "http://natkey.test";
const HOST: &str = "natkey.test";

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn html(&self) -> Html {
        Html::parse_document(&self.body)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn sel(css: &str) -> Selector {
    Selector::parse(css).unwrap_or_else(|e| panic!("bad selector {css}: {e:?}"))
}

/// The text of every element matching `css`.
pub fn texts(html: &Html, css: &str) -> Vec<String> {
    html.select(&sel(css))
        .map(|e| e.text().collect::<String>().trim().to_string())
        .collect()
}

pub async fn send(state: &AppState, req: Request<Body>) -> Answer {
    let response = app(state.clone())
        .oneshot(req)
        .await
        .expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .expect("body reads");
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(state: &AppState, path: &str) -> Answer {
    let req = Request::get(path)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .expect("request");
    send(state, req).await
}

/// A form POST as the browser sends it from natkey's own page.
pub async fn post_form(state: &AppState, path: &str, form: &str) -> Answer {
    let req = Request::post(path)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .expect("request");
    send(state, req).await
}

pub async fn post_json(state: &AppState, path: &str, body: &str) -> Answer {
    let req = Request::post(path)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(state, req).await
}

/// A state over one warehouse, with its store in `dir`.
pub async fn state_for(
    dir: &Path,
    name: &str,
    url: &str,
    config: Config,
    auth: AuthSettings,
) -> AppState {
    let store = Store::open(&dir.join("natkey.db"))
        .await
        .expect("store opens");
    let warehouses = vec![WarehouseEntry {
        name: name.to_string(),
        url: WarehouseUrl::parse(url).expect("URL parses"),
        schemas: Vec::new(),
        tables: Vec::new(),
    }];
    AppState::new(store, config, warehouses, auth, None)
}

pub async fn demo_state(dir: &Path) -> AppState {
    let path: PathBuf = dir.join("demo-warehouse.sqlite");
    natkey::demo::create_demo_warehouse(&path)
        .await
        .expect("demo warehouse");
    let config = Config::parse(natkey::demo::DEMO_CONFIG, Path::new("demo")).expect("config");
    state_for(
        dir,
        "demo",
        &format!("sqlite://{}", path.display()),
        config,
        AuthSettings::default(),
    )
    .await
}

/// Starts an audit through the API and waits for it; returns the run id.
pub async fn audit(state: &AppState, warehouse: &str) -> i64 {
    let started = post_json(state, &format!("/api/warehouses/{warehouse}/runs"), "{}").await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.json()["id"].as_i64().expect("an id");
    for _ in 0..600 {
        let run = get(state, &format!("/api/runs/{id}")).await.json();
        match run["status"].as_str() {
            Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(100)).await,
            Some("succeeded") => return id,
            other => panic!("the audit ended {other:?}: {run}"),
        }
    }
    panic!("the audit did not finish in 60 s");
}

/// The index of a table in a run's report (the table page's address).
pub fn table_index(report: &Value, schema: &str, name: &str) -> usize {
    report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .position(|t| t["schema"] == schema && t["name"] == name)
        .unwrap_or_else(|| panic!("no table {schema}.{name} in the report"))
}

async fn report_of(state: &AppState, id: i64) -> Value {
    get(state, &format!("/api/runs/{id}")).await.json()["report"].clone()
}

#[tokio::test]
async fn overview_shows_the_latest_audit_and_the_run_page_lists_tables_worst_first() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    let empty = get(&state, "/").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(
        texts(&empty.html(), "section.warehouse p.empty")[0].contains("No audit of demo yet"),
        "an unaudited warehouse says what to do"
    );

    let id = audit(&state, "demo").await;
    let overview = get(&state, "/").await.html();
    let figures = texts(&overview, "section.warehouse .figure .value");
    assert_eq!(
        figures[..3],
        ["6", "3", "347"],
        "tables, with duplicates, excess rows"
    );
    let measures = texts(&overview, "section.warehouse table.grid tbody tr");
    assert!(
        measures.iter().any(|r| r.contains("main.daily_orders")
            && r.contains("amount_cents")
            && r.contains("+2,780,300")),
        "overcount per measure, with thousands separators: {measures:?}"
    );

    let run = get(&state, &format!("/runs/{id}")).await;
    assert_eq!(run.status, StatusCode::OK);
    let html = run.html();
    let rows = texts(&html, "table#tables tbody tr td:first-child");
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows[0], "main.daily_revenue_summary",
        "the largest overcount first"
    );
    let clean = get(&state, &format!("/runs/{id}?status=clean"))
        .await
        .html();
    let badges = texts(&clean, "table#tables tbody tr .badge");
    assert!(
        !badges.is_empty() && badges.iter().all(|b| b == "clean"),
        "{badges:?}"
    );
    let none = get(&state, &format!("/runs/{id}?schema=nope")).await.html();
    assert!(texts(&none, "p.empty")[0].contains("No table of the 6 audited matches"));
}

#[tokio::test]
async fn table_page_shows_the_evidence_chart_samples_and_plans_per_dialect() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    let id = audit(&state, "demo").await;
    let report = report_of(&state, id).await;
    let index = table_index(&report, "main", "daily_orders");
    let page = get(&state, &format!("/runs/{id}/tables/{index}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.html();
    assert!(texts(&html, "h1#table-name")[0].starts_with("main.daily_orders"));
    let by_day = report["tables"][index]["by_day"]
        .as_array()
        .expect("by_day");
    assert_eq!(
        html.select(&sel("svg#day-chart rect.bar")).count(),
        by_day.len(),
        "one bar per incident day"
    );
    assert_eq!(html.select(&sel("svg#day-chart polyline")).count(), 1);
    assert!(texts(&html, "#key code.key")[0].contains("order_id, line_item_id"));
    let samples = report["tables"][index]["samples"]
        .as_array()
        .expect("samples");
    assert_eq!(html.select(&sel(".sample")).count(), samples.len());
    // The surrogate key and the load time differ between copies: highlighted.
    let differing = texts(&html, ".sample-grid tr.differs th");
    assert!(
        differing.contains(&"loaded_at".to_string()),
        "{differing:?}"
    );
    assert!(html.select(&sel(".sample-grid td.diff")).count() > 0);
    assert_eq!(
        html.select(&sel(".tab-panel")).count(),
        7,
        "one plan per dialect"
    );
    let sqlite_plan = texts(&html, "pre#plan-sqlite-sql");
    assert!(
        sqlite_plan[0].contains("CREATE UNIQUE INDEX"),
        "{}",
        sqlite_plan[0]
    );
    assert!(
        texts(&html, "#downstream li")
            .iter()
            .any(|v| v.contains("daily_revenue"))
    );

    let download = get(
        &state,
        &format!("/runs/{id}/tables/{index}/plan.sql?dialect=postgres"),
    )
    .await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(
        download.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"main_daily_orders_postgres.sql\""
    );
    assert!(download.body.contains("CREATE UNIQUE INDEX CONCURRENTLY"));
}

#[tokio::test]
async fn a_confirmed_key_is_stored_and_used_by_the_next_audit() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    let id = audit(&state, "demo").await;
    let report = report_of(&state, id).await;
    let index = table_index(&report, "main", "daily_orders");
    let unknown = post_form(
        &state,
        &format!("/runs/{id}/tables/{index}/key"),
        "natural_key=order_id%2C+nope",
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body.contains("has no column"), "{}", unknown.body);

    let saved = post_form(
        &state,
        &format!("/runs/{id}/tables/{index}/key"),
        "natural_key=order_id%2C+line_item_id%2C+order_date",
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let page = get(&state, &format!("/runs/{id}/tables/{index}?saved=1"))
        .await
        .html();
    assert_eq!(texts(&page, "#key-saved").len(), 1);

    let next = audit(&state, "demo").await;
    let report = report_of(&state, next).await;
    let t = &report["tables"][table_index(&report, "main", "daily_orders")];
    assert_eq!(t["natural_key"]["source"], "config");
    let overview = get(&state, "/").await.html();
    assert_eq!(
        overview
            .select(&sel(
                "svg.trend[aria-label=\"excess rows, past audits\"] circle"
            ))
            .count(),
        2,
        "the trend line has a point per audit"
    );
    // ...and so do the trends of the three most inflated measures.
    let measure_trends = texts(&overview, ".figure.trend .label");
    assert_eq!(measure_trends.len(), 4, "{measure_trends:?}");
    assert!(
        measure_trends[1..]
            .iter()
            .all(|l| l.ends_with("overcount, past audits")),
        "{measure_trends:?}"
    );
    assert_eq!(overview.select(&sel("svg.trend circle")).count(), 8);
    assert_eq!(
        t["natural_key"]["columns"],
        serde_json::json!(["order_id", "line_item_id", "order_date"])
    );
}

#[tokio::test]
async fn exports_give_the_report_a_csv_and_a_plans_bundle() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    let id = audit(&state, "demo").await;
    let json = get(&state, &format!("/runs/{id}/report.json")).await;
    assert_eq!(json.json()["natkey_report"], 1);
    let csv = get(&state, &format!("/runs/{id}/tables.csv")).await;
    assert!(csv.body.starts_with("schema,table,status,"));
    assert!(
        csv.body
            .lines()
            .any(|l| l.starts_with("main,daily_orders,duplicates,order_id line_item_id"))
    );
    let bundle = get(
        &state,
        &format!("/api/runs/{id}/plans.sql?dialect=snowflake"),
    )
    .await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert_eq!(
        bundle.body.matches("-- ==== main.").count(),
        3,
        "three tables double-count"
    );
    let bad = get(&state, &format!("/api/runs/{id}/plans.sql?dialect=oracle")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("unknown dialect")
    );
}

#[tokio::test]
async fn cross_site_posts_are_rejected_and_every_answer_carries_security_headers() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    let no_origin = Request::post("/warehouses/demo/runs")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&state, no_origin).await.status, StatusCode::FORBIDDEN);
    let evil = Request::post("/warehouses/demo/runs")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .expect("request");
    let answer = send(&state, evil).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let evil_json = Request::post("/api/warehouses/demo/runs")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .expect("request");
    assert_eq!(send(&state, evil_json).await.status, StatusCode::FORBIDDEN);
    let runs = state.inner.store.runs_of("demo", 10).await.expect("runs");
    assert!(runs.is_empty(), "no rejected request started an audit");

    for path in ["/", "/api/warehouses", "/nope", "/static/natkey.js"] {
        let a = get(&state, path).await;
        let csp = a.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(
            a.headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{path}"
        );
    }
    // No inline script anywhere: only natkey's own file and JSON data elements.
    let page = get(&state, "/").await.html();
    for s in page.select(&sel("script")) {
        let src = s.value().attr("src");
        let kind = s.value().attr("type");
        assert!(
            src == Some("/static/natkey.js") || kind == Some("application/json"),
            "inline script: {:?}",
            s.html()
        );
    }
}

#[tokio::test]
async fn a_huge_paste_gets_a_clear_413() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    let form = format!("dialect=postgres&sql={}", "x".repeat(50 * 1024 * 1024));
    // Declared by Content-Length: refused before the body is read.
    let req = Request::post("/rewrite")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::CONTENT_LENGTH, form.len())
        .body(Body::from(form.clone()))
        .expect("request");
    let page = send(&state, req).await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        texts(&page.html(), "p.error-message")[0].contains("larger than natkey accepts"),
        "{}",
        &page.body[..page.body.len().min(500)]
    );
    // Without a Content-Length, the extractors' limit answers the same.
    let page = post_form(&state, "/rewrite", &form).await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    let json = format!("{{\"sql\": \"{}\"}}", "x".repeat(50 * 1024 * 1024));
    let api = post_json(&state, "/api/rewrite", &json).await;
    assert_eq!(api.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        api.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("larger")
    );
}

#[tokio::test]
async fn token_auth_lets_in_bearer_and_cookie_holders_only() {
    let dir = TempDir::new();
    let path = dir.0.join("w.sqlite");
    natkey::demo::create_demo_warehouse(&path)
        .await
        .expect("demo");
    let auth = AuthSettings {
        mode: AuthMode::Token,
        token: Some("s3cret-token".into()),
        ..AuthSettings::default()
    };
    let state = state_for(
        &dir.0,
        "demo",
        &format!("sqlite://{}", path.display()),
        Config::default(),
        auth,
    )
    .await;
    let page = get(&state, "/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/login");
    assert_eq!(
        get(&state, "/api/warehouses").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&state, "/healthz").await.status, StatusCode::OK);

    let bearer = Request::get("/api/warehouses")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, "Bearer s3cret-token")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&state, bearer).await.status, StatusCode::OK);

    let wrong = post_form(&state, "/login", "token=guess").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let login = post_form(&state, "/login", "token=s3cret-token").await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    let cookie = login.headers[header::SET_COOKIE].to_str().expect("ascii");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let with_cookie = Request::get("/")
        .header(header::HOST, HOST)
        .header(header::COOKIE, cookie.split(';').next().expect("pair"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&state, with_cookie).await.status, StatusCode::OK);
}

#[tokio::test]
async fn passwords_never_appear_and_empty_states_say_what_to_do() {
    let dir = TempDir::new();
    let state = state_for(
        &dir.0,
        "dw",
        "postgres://natkey_ro:hunter2secret@db.invalid:5432/dw",
        Config::default(),
        AuthSettings::default(),
    )
    .await;
    let overview = get(&state, "/").await;
    let api = get(&state, "/api/warehouses").await;
    for body in [&overview.body, &api.body] {
        assert!(!body.contains("hunter2secret"), "{body}");
    }
    assert!(
        api.json()[0]["url"]
            .as_str()
            .unwrap_or("")
            .contains("natkey_ro")
    );

    let store = Store::open(&dir.0.join("empty.db")).await.expect("store");
    let empty = AppState::new(
        store,
        Config::default(),
        Vec::new(),
        AuthSettings::default(),
        None,
    );
    let html = get(&empty, "/").await.html();
    assert!(texts(&html, "section.empty h2")[0].contains("No warehouse configured"));
    assert!(texts(&html, "section.empty pre")[0].contains("[[warehouse]]"));

    let missing = get(&empty, "/runs/999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&empty, "/api/runs/999").await.json()["error"],
        "there is no audit run 999"
    );
    let rewrite = post_json(&empty, "/api/rewrite", r#"{"sql": "select 1"}"#).await;
    assert_eq!(rewrite.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        rewrite.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("not available")
    );
}

#[tokio::test]
async fn a_hostile_table_name_renders_as_text_in_pages_json_and_file_names() {
    let db = TestDb::postgres().await;
    let (sql, _) = fixtures::hostile(&db);
    db.exec(&sql).await;
    let (sql, _) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    let dir = TempDir::new();
    let state = state_for(
        &dir.0,
        "dw",
        &db.url(),
        Config::default(),
        AuthSettings::default(),
    )
    .await;
    let id = audit(&state, "dw").await;
    let report = report_of(&state, id).await;
    let index = table_index(&report, fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE);
    assert_eq!(report["tables"][index]["status"], "duplicates");

    let run = get(&state, &format!("/runs/{id}")).await;
    assert!(
        !run.body.contains("<script>alert(1)"),
        "raw markup in the run page"
    );
    let names = texts(&run.html(), "table#tables tbody td:first-child a");
    let hostile = format!("{}.{}", fixtures::HOSTILE_SCHEMA, fixtures::HOSTILE_TABLE);
    assert!(names.contains(&hostile), "{names:?}");
    // The schema filter lists exactly the tables of the schema it names, hostile names too.
    for schema in ["sales", fixtures::HOSTILE_SCHEMA] {
        let query: String = url::form_urlencoded::byte_serialize(schema.as_bytes()).collect();
        let page = get(&state, &format!("/runs/{id}?schema={query}"))
            .await
            .html();
        let listed = texts(&page, "table#tables tbody td:first-child a");
        let expected: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with(&format!("{schema}.")))
            .cloned()
            .collect();
        assert!(!expected.is_empty(), "{schema}: {names:?}");
        assert_eq!(listed, expected, "{schema}");
        let selected = texts(&page, "select[name=schema] option[selected]");
        assert_eq!(selected, vec![schema.to_string()]);
    }

    let page = get(&state, &format!("/runs/{id}/tables/{index}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("<script>alert(1)"),
        "raw markup in the table page"
    );
    assert!(
        !page.body.contains("<b>x</b>"),
        "raw markup in the table page"
    );
    let html = page.html();
    assert!(texts(&html, "h1#table-name")[0].starts_with(&hostile));
    // The page's JSON data element holds the name as data, and is still JSON.
    let data = texts(&html, "script#table-data");
    let data: Value = serde_json::from_str(&data[0]).expect("JSON data element");
    assert_eq!(data["name"], fixtures::HOSTILE_TABLE);
    assert_eq!(data["schema"], fixtures::HOSTILE_SCHEMA);
    assert_eq!(
        html.select(&sel("script")).count(),
        2,
        "natkey.js and the data element"
    );
    // Columns named with markup are text in the samples too.
    let columns = texts(&html, ".sample-grid th");
    assert!(
        columns.contains(&fixtures::HOSTILE_KEY.to_string()),
        "{columns:?}"
    );

    let download = get(&state, &format!("/runs/{id}/tables/{index}/plan.sql")).await;
    assert_eq!(download.status, StatusCode::OK, "{}", download.body);
    let disposition = download.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii");
    let name = disposition
        .strip_prefix("attachment; filename=\"")
        .and_then(|s| s.strip_suffix("\""))
        .expect("a quoted file name");
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "{name}"
    );
    let csv = get(&state, &format!("/runs/{id}/tables.csv")).await;
    assert!(
        csv.body
            .contains("\"Weird \"\"Table\"\" <script>alert(1)</script>\"")
    );
}

#[tokio::test]
async fn a_task_pasted_on_the_table_page_is_analysed_with_the_tables_key_and_diffed() {
    let dir = TempDir::new();
    let demo = demo_state(&dir.0).await;
    let id = audit(&demo, "demo").await;
    let report = report_of(&demo, id).await;
    let index = table_index(&report, "main", "daily_orders");
    let analyzer: std::sync::Arc<dyn natkey::web::TaskAnalyzer> =
        std::sync::Arc::new(natkey::web::NatkeyRewriter {
            config: Config::default(),
        });
    let state = AppState::new(
        demo.inner.store.clone(),
        Config::default(),
        demo.inner.warehouses.clone(),
        AuthSettings::default(),
        Some(analyzer),
    );
    let sql = "INSERT INTO daily_orders SELECT gen_random_uuid(), order_id, line_item_id, \
               order_date, customer_id, quantity, amount_cents, now() FROM staging_orders;";
    let form = format!(
        "run={id}&table={index}&dialect=postgres&sql={}",
        url::form_urlencoded::byte_serialize(sql.as_bytes()).collect::<String>()
    );
    let page = post_form(&state, "/rewrite", &form).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let html = page.html();
    let findings = texts(&html, "ul.findings li strong");
    assert_eq!(findings, ["insert-without-natural-key"]);
    let added = texts(&html, "pre#rewrite-diff span.add");
    assert!(
        added
            .iter()
            .any(|l| l.contains("ON CONFLICT (\"order_id\", \"line_item_id\")")),
        "{added:?}"
    );
    assert_eq!(
        texts(&html, "textarea[name=sql]")[0],
        sql,
        "the paste is kept"
    );

    let api = post_json(
        &state,
        "/api/rewrite",
        &serde_json::json!({"sql": sql, "dialect": "postgres", "run": id, "table": index})
            .to_string(),
    )
    .await;
    assert_eq!(api.status, StatusCode::OK);
    let json = api.json();
    assert_eq!(json["idempotent"], false);
    assert!(
        json["diff"]
            .as_str()
            .unwrap_or("")
            .contains("+INSERT INTO daily_orders")
    );
}

#[tokio::test]
async fn proxy_auth_trusts_the_user_header_only_from_the_configured_proxy() {
    let dir = TempDir::new();
    let auth = AuthSettings {
        mode: AuthMode::Proxy,
        proxy_header: "X-Forwarded-User".into(),
        trusted_proxies: vec!["10.0.0.5".parse().expect("ip")],
        ..AuthSettings::default()
    };
    let state = state_for(
        &dir.0,
        "dw",
        "sqlite://./none.sqlite",
        Config::default(),
        auth,
    )
    .await;
    let request = |peer: &str, user: Option<&str>| {
        let mut builder = Request::get("/").header(header::HOST, HOST);
        if let Some(user) = user {
            builder = builder.header("X-Forwarded-User", user);
        }
        let mut req = builder.body(Body::empty()).expect("request");
        let addr: std::net::SocketAddr = peer.parse().expect("address");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        req
    };
    let from_proxy = send(&state, request("10.0.0.5:4000", Some("ann <b>"))).await;
    assert_eq!(from_proxy.status, StatusCode::OK);
    assert_eq!(
        texts(&from_proxy.html(), "main p.hint")[0],
        "Signed in as ann <b>"
    );
    let spoofed = send(&state, request("10.0.0.9:4000", Some("ann"))).await;
    assert_eq!(spoofed.status, StatusCode::FORBIDDEN);
    let anonymous = send(&state, request("10.0.0.5:4000", None)).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_running_audit_shows_live_progress_and_a_restart_marks_it_interrupted() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    let store = &state.inner.store;
    let (id, _) = store
        .queue_run("demo", natkey::store::RunTrigger::Manual, None)
        .await
        .expect("queued");
    store.mark_running(id).await.expect("running");
    store
        .record_progress(id, 2, 6, Some("main.daily_orders"))
        .await
        .expect("progress");
    let page = get(&state, &format!("/runs/{id}")).await.html();
    let bar = page
        .select(&sel("progress#run-progress"))
        .next()
        .expect("a progress bar");
    assert_eq!(bar.value().attr("value"), Some("33"));
    assert!(texts(&page, "#run-progress-text")[0].contains("2 of 6 tables audited"));
    let data: Value =
        serde_json::from_str(&texts(&page, "script#run-data")[0]).expect("JSON data element");
    assert_eq!(data["status"], "running");
    assert_eq!(data["api"], format!("/api/runs/{id}"));
    let api = get(&state, &format!("/api/runs/{id}")).await.json();
    assert_eq!(api["progress"]["done"], 2);
    assert_eq!(api["progress"]["current"], "main.daily_orders");
    assert_eq!(api["report"], Value::Null);

    // natkey stops (its lease on the store runs out) and starts again: the store is opened
    // again.
    sqlx::query("UPDATE instances SET lease_until = '2026-01-01T00:00:00Z' WHERE id = ?")
        .bind(store.instance())
        .execute(store.pool())
        .await
        .expect("expire the lease");
    let reopened = Store::open(&dir.0.join("natkey.db"))
        .await
        .expect("reopens");
    let state = AppState::new(
        reopened,
        Config::default(),
        state.inner.warehouses.clone(),
        AuthSettings::default(),
        None,
    );
    let api = get(&state, &format!("/api/runs/{id}")).await.json();
    assert_eq!(api["status"], "interrupted");
    let overview = get(&state, "/").await.html();
    assert!(texts(&overview, "section.warehouse p.error-message")[0].contains("interrupted"));
}

/// Starts `natkey serve` on `bind` and returns it with the URL it printed; its stderr goes to
/// `serve-stderr.log` in `dir`.
fn spawn_serve(dir: &Path, config: &Path, bind: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_natkey"))
        .current_dir(dir)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--bind", bind])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve-stderr.log")).expect("stderr file"))
        .spawn()
        .expect("natkey serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("natkey prints its URL");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (child, url)
}

#[tokio::test]
async fn natkey_serve_reads_its_config_and_starts_twice_on_the_same_store() {
    let dir = TempDir::new();
    let warehouse = dir.0.join("dw.sqlite");
    natkey::demo::create_demo_warehouse(&warehouse)
        .await
        .expect("demo");
    let config = dir.0.join("natkey.toml");
    std::fs::write(
        &config,
        format!(
            "[[warehouse]]\nname = \"dw\"\nurl = \"sqlite://{}\"\n\n[store]\npath = \"state/natkey.db\"\n",
            warehouse.display()
        ),
    )
    .expect("config");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for round in 0..2 {
        let (mut child, url) = spawn_serve(&dir.0, &config, "127.0.0.1:0");
        let answer: Result<Value, String> = (|| {
            let mut r = agent
                .get(&format!("{url}/api/warehouses"))
                .call()
                .map_err(|e| e.to_string())?;
            r.body_mut().read_json::<Value>().map_err(|e| e.to_string())
        })();
        let _ = child.kill();
        let _ = child.wait();
        let answer = answer.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(answer[0]["name"], "dw", "round {round}");
    }
    assert!(
        dir.0.join("state/natkey.db").is_file(),
        "the store lives where [store] says"
    );
    let stderr = std::fs::read_to_string(dir.0.join("serve-stderr.log")).expect("stderr");
    assert!(!stderr.contains("without access control"), "{stderr}");

    // Reachable from other machines without auth: natkey says so when it starts.
    let (mut child, _) = spawn_serve(&dir.0, &config, "0.0.0.0:0");
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(dir.0.join("serve-stderr.log")).expect("stderr");
    assert!(
        stderr.contains("warning: serving on 0.0.0.0:")
            && stderr.contains("without access control"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_audit_now_requests_joins_one_run() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    let clicks: Vec<_> = (0..8)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { post_json(&state, "/api/warehouses/demo/runs", "{}").await })
        })
        .collect();
    let mut ids = Vec::new();
    for click in clicks {
        let answer = click.await.expect("join");
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        ids.push(answer.json()["id"].as_i64().expect("an id"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every click joins the first run: {ids:?}");
}

/// A state over a SQLite warehouse `dw` holding `tags (code, label)` with `rows`, whose natural
/// key natkey.toml declares as `code`; the warehouse has no measure at all.
async fn tags_state(dir: &Path, rows: &[(&str, &str)]) -> AppState {
    use sqlx::Connection;
    let path = dir.join("tags.sqlite");
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .expect("create the warehouse");
    sqlx::query("CREATE TABLE tags (code TEXT NOT NULL, label TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .expect("table");
    for (code, label) in rows {
        sqlx::query("INSERT INTO tags (code, label) VALUES (?, ?)")
            .bind(code)
            .bind(label)
            .execute(&mut conn)
            .await
            .expect("row");
    }
    conn.close().await.expect("close");
    let config = Config::parse(
        "[[table]]\nname = \"tags\"\nnatural_key = [\"code\"]\n",
        Path::new("natkey.toml"),
    )
    .expect("config");
    state_for(dir, "dw", &url, config, AuthSettings::default()).await
}

#[tokio::test]
async fn empty_states_tell_a_clean_audit_from_duplicates_that_inflate_no_measure() {
    let says_no_double_count = |page: &Html| {
        texts(page, "p.good-message")
            .iter()
            .any(|t| t.contains("No table double-counts"))
    };
    // Tag "a" loaded twice: duplicates, but nothing to add up.
    let dir = TempDir::new();
    let state = tags_state(&dir.0, &[("a", "red"), ("a", "red"), ("b", "blue")]).await;
    let id = audit(&state, "dw").await;
    let overview = get(&state, "/").await.html();
    assert!(!says_no_double_count(&overview));
    let note = texts(&overview, "p.no-inflated-measure");
    assert_eq!(note.len(), 1, "{note:?}");
    assert!(
        note[0].starts_with("1 table(s) hold duplicate rows"),
        "{note:?}"
    );
    let run = get(&state, &format!("/runs/{id}")).await.html();
    assert!(!says_no_double_count(&run));

    // The same table loaded once: clean.
    let dir = TempDir::new();
    let state = tags_state(&dir.0, &[("a", "red"), ("b", "blue")]).await;
    let id = audit(&state, "dw").await;
    let overview = get(&state, "/").await.html();
    assert!(says_no_double_count(&overview));
    assert!(texts(&overview, "p.no-inflated-measure").is_empty());
    let run = get(&state, &format!("/runs/{id}")).await.html();
    assert!(says_no_double_count(&run));
}

#[tokio::test]
async fn bad_path_and_query_parameters_of_the_api_answer_in_json() {
    let dir = TempDir::new();
    let state = demo_state(&dir.0).await;
    for path in [
        "/api/runs/abc",
        "/api/runs/99999999999999999999999",
        "/api/runs/abc/plans.sql",
    ] {
        let answer = get(&state, path).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            answer.headers[header::CONTENT_TYPE],
            "application/json",
            "{path}"
        );
        let error = answer.json()["error"].as_str().map(str::to_string);
        assert!(
            error.is_some_and(|e| !e.is_empty()),
            "{path}: {}",
            answer.body
        );
    }
    // Pages keep their HTML error page.
    let page = get(&state, "/runs/abc").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(!page.body.trim_start().starts_with('{'));
}

#[tokio::test]
async fn behind_a_proxy_that_rewrites_host_the_public_origin_may_post() {
    let dir = TempDir::new();
    let path = dir.0.join("w.sqlite");
    natkey::demo::create_demo_warehouse(&path)
        .await
        .expect("demo");
    let config = Config::parse(
        "[server]\npublic_origin = \"https://natkey.example.com/\"\n",
        Path::new("natkey.toml"),
    )
    .expect("config");
    let auth = natkey::web::auth_from_config(&config).expect("auth settings");
    assert_eq!(
        auth.public_origin.as_deref(),
        Some("https://natkey.example.com")
    );
    let state = state_for(
        &dir.0,
        "demo",
        &format!("sqlite://{}", path.display()),
        config,
        auth,
    )
    .await;
    // The proxy forwards to 127.0.0.1:8080 with that as Host; the browser's Origin is public.
    let post = |origin: &'static str| {
        let state = state.clone();
        async move {
            let req = Request::post("/warehouses/demo/runs")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, origin)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::empty())
                .expect("request");
            send(&state, req).await
        }
    };
    let ours = post("https://natkey.example.com").await;
    assert_eq!(ours.status, StatusCode::SEE_OTHER, "{}", ours.body);
    assert!(
        ours.headers[header::LOCATION]
            .to_str()
            .is_ok_and(|l| l.starts_with("/runs/"))
    );
    let theirs = post("https://evil.example.com").await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    // A public origin with a path is refused when natkey starts.
    let bad = Config::parse(
        "[server]\npublic_origin = \"natkey.example.com/app\"\n",
        Path::new("natkey.toml"),
    )
    .expect("config");
    let error = natkey::web::auth_from_config(&bad).expect_err("refused");
    assert!(error.contains("public_origin"), "{error}");
}
