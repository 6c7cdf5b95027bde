//! The real page in headless Chromium, driven through chromedriver's WebDriver HTTP API: start
//! natkey on a PostgreSQL fixture, audit through the overview, follow the live progress, open
//! the worst table, download its plan, paste its load task, and check that a hostile table
//! name never ran as script. Screenshots land in `target/e2e/`.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use natkey::config::Config;
use natkey::store::Store;
use natkey::warehouse::WarehouseUrl;
use natkey::web::{AppState, AuthSettings, NatkeyRewriter, TaskAnalyzer, WarehouseEntry};
use serde_json::{Value, json};

use crate::common::{TempDir, TestDb};
use crate::fixtures::{self, Surrogate};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Kills the child on drop (the test may panic halfway).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A minimal WebDriver client.
struct Driver {
    agent: ureq::Agent,
    base: String,
    session: String,
}

impl Driver {
    fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> Value {
        let response = match (method, body) {
            ("GET", _) => agent.get(url).call(),
            ("DELETE", _) => agent.delete(url).call(),
            (_, Some(b)) => agent.post(url).send_json(b),
            (_, None) => agent.post(url).send_json(json!({})),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_else(|e| panic!("{method} {url}: reading the answer: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
    }

    fn start(port: u16, downloads: &Path, profile: &Path) -> Driver {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut r) = agent.get(&format!("{base}/status")).call()
                && r.body_mut()
                    .read_json::<Value>()
                    .is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1600",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false
                }
            }
        }}});
        let answer = Driver::call(&agent, "POST", &format!("{base}/session"), Some(caps));
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Driver {
            agent,
            base,
            session,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = Driver::call(&self.agent, method, &self.url(path), body);
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("{method} {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.ok("POST", "/url", Some(json!({ "url": url })));
    }

    fn script(&self, script: &str) -> Value {
        self.ok(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.ok(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.ok("POST", &format!("/element/{id}/click"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.ok(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Waits until `script` returns true.
    fn wait_for(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.script(script) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, path: &Path) {
        let png = self.ok("GET", "/screenshot", None);
        let bytes = base64_decode(png.as_str().expect("base64 PNG"));
        std::fs::write(path, bytes).expect("write the screenshot");
    }

    /// No JavaScript dialog (an `alert(1)` from a hostile name) is open.
    fn assert_no_alert(&self) {
        let answer = Driver::call(&self.agent, "GET", &self.url("/alert/text"), None);
        assert_eq!(
            answer["value"]["error"], "no such alert",
            "a dialog is open: script from a hostile identifier ran: {answer}"
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.url("")).call();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Debian's Chromium and ChromeDriver, installed on first use when the test runs as root (as
/// on natkey's CI machines), so that `cargo test` works on a fresh machine of that kind.
fn install_chromium() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        return;
    }
    eprintln!("installing Debian's chromium and chromium-driver for the browser test");
    let run = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !run(&["install", "-y", "-qq", "chromium", "chromium-driver"]) {
        let _ = run(&["update", "-qq"]);
        let _ = run(&["install", "-y", "-qq", "chromium", "chromium-driver"]);
    }
}

fn e2e_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    std::fs::create_dir_all(&dir).expect("target/e2e");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_an_audit_runs_live_and_the_worst_table_shows_its_evidence() {
    if !Path::new(CHROMEDRIVER).exists() {
        if std::env::var_os("NATKEY_SKIP_BROWSER_TESTS").is_some() {
            eprintln!("skipping the browser test: NATKEY_SKIP_BROWSER_TESTS is set");
            return;
        }
        install_chromium();
    }
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        panic!(
            "{CHROMEDRIVER} is missing: `apt-get install -y chromium chromium-driver` (.ci/run \
             does), or set NATKEY_SKIP_BROWSER_TESTS=1"
        );
    }
    let db = TestDb::postgres().await;
    let (sql, _) = fixtures::daily_orders(
        &db,
        "sales",
        "daily_orders",
        Surrogate::Default,
        &fixtures::standard_copies,
    );
    db.exec(&sql).await;
    db.exec(&fixtures::revenue_view(
        &db,
        "sales",
        "daily_revenue_v",
        "daily_orders",
    ))
    .await;
    let (sql, _) = fixtures::hostile(&db);
    db.exec(&sql).await;

    let dir = TempDir::new();
    let store = Store::open(&dir.0.join("natkey.db")).await.expect("store");
    let analyzer: Arc<dyn TaskAnalyzer> = Arc::new(NatkeyRewriter {
        config: Config::default(),
    });
    let state = AppState::new(
        store,
        Config::default(),
        vec![WarehouseEntry {
            name: "dw".into(),
            url: WarehouseUrl::parse(&db.url()).expect("URL"),
            schemas: Vec::new(),
            tables: Vec::new(),
        }],
        AuthSettings::default(),
        Some(analyzer),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let site = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(natkey::web::serve(listener, state));

    let downloads = dir.0.join("downloads");
    let profile = dir.0.join("chromium-profile");
    std::fs::create_dir_all(&downloads).expect("downloads folder");
    let port = free_port();
    let driver_process = Killed(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let out = e2e_dir();
    // Another session holds sales.daily_orders locked, so the audit stalls on it (natkey's
    // lock_timeout is 30 s) while the browser shows its progress; the test releases the lock.
    let mut locker = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url())
        .await
        .expect("a second PostgreSQL session");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE sales.daily_orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock the table");
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let unlocker = tokio::spawn(async move {
        let _ = released.await;
        sqlx::query("ROLLBACK")
            .execute(&mut locker)
            .await
            .expect("release the lock");
    });
    // WebDriver calls block; the server keeps running on the runtime's workers.
    let result = tokio::task::spawn_blocking(move || {
        let d = Driver::start(port, &downloads, &profile);

        d.goto(&format!("{site}/"));
        d.wait_for(
            "the overview",
            "return !!document.querySelector('section.warehouse button.audit-now')",
            Duration::from_secs(10),
        );
        d.click("section.warehouse button.audit-now");
        // The run page follows the audit by polling /api/runs/{id}, then reloads with the
        // table list.
        d.wait_for(
            "the run page",
            "return location.pathname.startsWith('/runs/')",
            Duration::from_secs(10),
        );
        // Live progress, written by the script from /api/runs/{id}: it sets data-status and
        // the bar's max to the table count (the server renders max=100).
        d.wait_for(
            "live progress while sales.daily_orders is locked",
            "const t = document.getElementById('run-progress-text'); \
             const bar = document.getElementById('run-progress'); \
             const status = document.getElementById('run-status'); \
             const m = t && /^(\\d+) of (\\d+) tables audited · now: sales\\.daily_orders$/.exec(t.textContent); \
             return !!m && status.getAttribute('data-status') === 'running' && \
                 bar.max === Number(m[2]) && Number(m[1]) < Number(m[2]);",
            Duration::from_secs(25),
        );
        assert!(
            d.script("return !document.querySelector('table#tables')") == Value::Bool(true),
            "the table list waits for the audit"
        );
        d.screenshot(&out.join("progress.png"));
        release.send(()).expect("the lock holder waits");
        d.wait_for(
            "the audit to finish",
            "return !!document.querySelector('table#tables')",
            Duration::from_secs(120),
        );
        d.assert_no_alert();
        let status = d.script("return document.querySelector('#run-status strong').textContent");
        assert_eq!(status, "succeeded");

        d.goto(&format!("{site}/"));
        d.wait_for(
            "the overview figures",
            "return document.querySelectorAll('section.warehouse .figure').length >= 3",
            Duration::from_secs(10),
        );
        d.screenshot(&out.join("overview.png"));

        let run_path = d
            .script("return document.querySelector('section.warehouse a[href^=\"/runs/\"]').getAttribute('href')");
        d.goto(&format!("{site}{}", run_path.as_str().expect("run link")));
        let worst = d.script(
            "return document.querySelector('table#tables tbody tr td:first-child a').textContent",
        );
        assert_eq!(worst, "sales.daily_orders", "the worst table is listed first");
        d.click("table#tables tbody tr td:first-child a");
        d.wait_for(
            "the table page",
            "return !!document.querySelector('h1#table-name')",
            Duration::from_secs(10),
        );
        let bars = d.script("return document.querySelectorAll('svg#day-chart rect.bar').length");
        assert!(bars.as_u64().unwrap_or(0) >= 2, "incident days drawn: {bars}");
        let samples = d.script("return document.querySelectorAll('.sample').length");
        assert!(samples.as_u64().unwrap_or(0) >= 1);
        let highlighted = d.script("return document.querySelectorAll('.sample-grid td.diff').length");
        assert!(highlighted.as_u64().unwrap_or(0) >= 1);
        // Tabs: one plan shown at a time, the audited dialect first.
        let visible = d.script(
            "return Array.from(document.querySelectorAll('.tab-panel')).filter(p => !p.hidden).map(p => p.id)",
        );
        assert_eq!(visible, json!(["plan-postgres"]));
        let plan = d.script("return document.querySelector('#plan-postgres-sql').textContent");
        assert!(plan.as_str().unwrap_or("").contains("CREATE UNIQUE INDEX CONCURRENTLY"));
        d.click("a.tab[data-tab='plan-mysql']");
        let visible = d.script(
            "return Array.from(document.querySelectorAll('.tab-panel')).filter(p => !p.hidden).map(p => p.id)",
        );
        assert_eq!(visible, json!(["plan-mysql"]));
        d.click("a.tab[data-tab='plan-postgres']");
        // A link to another section of the page (#samples) keeps a plan shown.
        let table_path = d.script("return location.pathname");
        let table_path = table_path.as_str().expect("a path").to_string();
        d.goto(&format!("{site}/"));
        d.goto(&format!("{site}{table_path}#samples"));
        d.wait_for(
            "the tabs",
            "return document.body.classList.contains('tabs-ready')",
            Duration::from_secs(10),
        );
        let visible = d.script(
            "return Array.from(document.querySelectorAll('.tab-panel')).filter(p => !p.hidden).map(p => p.id)",
        );
        assert_eq!(visible, json!(["plan-postgres"]), "#samples hid the plans");
        d.goto(&format!("{site}{table_path}"));
        d.script("window.scrollTo(0, 0); return true");
        d.screenshot(&out.join("table.png"));

        d.click("#plan-postgres a.download");
        let file = downloads.join("sales_daily_orders_postgres.sql");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !file.exists() {
            assert!(Instant::now() < deadline, "the .sql download did not arrive");
            std::thread::sleep(Duration::from_millis(200));
        }
        let downloaded = std::fs::read_to_string(&file).expect("read the download");
        assert!(downloaded.contains("CREATE UNIQUE INDEX CONCURRENTLY"));

        d.type_into(
            "#task textarea[name=sql]",
            "INSERT INTO sales.daily_orders (order_id, line_item_id, order_date, customer_id, quantity, amount_cents)\nSELECT order_id, line_item_id, order_date, customer_id, quantity, amount_cents FROM staging.orders;",
        );
        d.click("#task button[type=submit]");
        d.wait_for(
            "the analysis",
            "return !!document.querySelector('#analysis')",
            Duration::from_secs(10),
        );
        let rule = d.script("return document.querySelector('ul.findings li strong').textContent");
        assert_eq!(rule, "insert-without-natural-key");
        let added = d.script("return document.querySelector('pre#rewrite-diff span.add').textContent");
        assert!(added.as_str().unwrap_or("").contains("ON CONFLICT"), "{added}");

        // The hostile table: its name is text, and nothing it holds ran.
        d.goto(&format!("{site}{}", run_path.as_str().expect("run link")));
        let hostile_href = d.script(
            "return Array.from(document.querySelectorAll('table#tables a')).find(a => a.textContent.includes('<script>')).getAttribute('href')",
        );
        d.goto(&format!("{site}{}", hostile_href.as_str().expect("hostile link")));
        d.assert_no_alert();
        let title = d.script("return document.querySelector('h1#table-name').firstChild.textContent");
        assert!(
            title.as_str().unwrap_or("").contains(fixtures::HOSTILE_TABLE),
            "{title}"
        );
        let injected = d.script(
            "return document.querySelectorAll('script:not([src]):not([type=\"application/json\"]), b').length",
        );
        assert_eq!(injected, 0, "markup from identifiers became elements");
        d.assert_no_alert();
    })
    .await;
    drop(driver_process);
    unlocker.abort();
    server.abort();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
