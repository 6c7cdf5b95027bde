//! `natkey serve`, and the serving half of `natkey demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use natkey::config::{AuthMode, Config};
use natkey::store::{RunStatus, Store};
use natkey::web::{self, AppState, WarehouseEntry};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// natkey.toml with `[[warehouse]]`, `[server]` and `[store]` (default: ./natkey.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080, or [server] bind].
    #[arg(long, value_name = "HOST:PORT")]
    bind: Option<String>,
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let config = super::audit::load_config(args.config.as_deref())?;
    let warehouses = web::warehouses_from_config(&config)?;
    if warehouses.is_empty() {
        eprintln!(
            "natkey: warning: natkey.toml lists no [[warehouse]]; the overview will say how to add one"
        );
    }
    let bind = args
        .bind
        .or_else(|| config.server.bind.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let store_path = config.store.path();
    run_server(config, warehouses, &store_path, &bind, None).await
}

/// Opens the store, binds, optionally audits one warehouse first, prints the URL and serves.
pub async fn run_server(
    config: Config,
    warehouses: Vec<WarehouseEntry>,
    store_path: &Path,
    bind: &str,
    audit_first: Option<&str>,
) -> Result<ExitCode, String> {
    let auth = web::auth_from_config(&config)?;
    // Unusable [[schedule]] or [[notify]] entries (a url_env that is not set) stop the start.
    web::schedules_from_config(&config)?;
    let store = Store::open(store_path).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("listening on {bind}: {e} (choose another address with --bind)"))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    if !addr.ip().is_loopback() && auth.mode == AuthMode::None {
        eprintln!(
            "natkey: warning: serving on {addr} without access control; anyone who can reach it \
             can start audits. Set [server] auth = \"token\" or \"proxy\" in natkey.toml."
        );
    }
    let analyzer: Arc<dyn web::TaskAnalyzer> = Arc::new(web::NatkeyRewriter {
        config: config.clone(),
    });
    let state = AppState::new(store.clone(), config, warehouses, auth, Some(analyzer));
    // Renews this process's lease on the store (so other processes sharing it leave its runs
    // alone) and sweeps the runs of processes that are gone.
    tokio::spawn(store.clone().keep_alive());
    if let Some(name) = audit_first {
        audit_and_wait(&state, &store, name).await?;
    }
    // The scheduler runs even without a [[schedule]] entry: schedules can be made on the
    // Schedules page.
    let nightly = Arc::new(web::NightlyAudits::new(
        state.clone(),
        Arc::new(natkey::schedule::SystemClock),
        natkey::notify::RetryPolicy::default(),
    ));
    let book = state.schedules().await.map_err(|e| e.to_string())?;
    for (s, _) in &book.schedules {
        if let Ok(next) = s.next_after(chrono::Utc::now()) {
            eprintln!("natkey: schedule {s}: next run {}", s.local(next));
        }
    }
    for (name, reason) in &book.unusable {
        eprintln!(
            "natkey: warning: schedule {name:?} (made on the Schedules page) does not run: {reason}"
        );
    }
    tokio::spawn(nightly.run_forever());
    println!("natkey is serving on http://{addr}/ (Ctrl-C stops it)");
    web::serve(listener, state)
        .await
        .map_err(|e| format!("serving on {addr}: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

async fn audit_and_wait(state: &AppState, store: &Store, name: &str) -> Result<(), String> {
    let id = web::start_run(state, name)
        .await
        .map_err(|e| e.to_string())?;
    let mut shown = -1;
    loop {
        let run = store
            .run(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the audit run vanished")?;
        if run.tables_done != shown {
            shown = run.tables_done;
            if let Some(total) = run.tables_total {
                eprintln!("natkey: audited {shown} of {total} tables");
            }
        }
        match run.status {
            RunStatus::Queued | RunStatus::Running => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            RunStatus::Succeeded => {
                eprintln!(
                    "natkey: {} of {} tables double-count ({} excess rows)",
                    run.with_duplicates.unwrap_or(0),
                    run.tables.unwrap_or(0),
                    run.excess_rows.unwrap_or(0)
                );
                return Ok(());
            }
            RunStatus::Failed | RunStatus::Interrupted => {
                return Err(format!(
                    "auditing {name}: {}",
                    run.error.unwrap_or_else(|| run.status.as_str().into())
                ));
            }
        }
    }
}

/// `natkey demo`: creates the demo warehouse, audits it through the web app's runner, and
/// serves it.
pub async fn demo(data_dir: &Path, bind: &str) -> Result<ExitCode, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
    let path = data_dir.join("demo-warehouse.sqlite");
    eprintln!("natkey: creating the demo warehouse {}", path.display());
    natkey::demo::create_demo_warehouse(&path)
        .await
        .map_err(|e| format!("creating the demo warehouse {}: {e}", path.display()))?;
    let mut config = Config::parse(natkey::demo::DEMO_CONFIG, Path::new("demo natkey.toml"))
        .map_err(|e| e.to_string())?;
    // A nightly audit of the demo warehouse, so the Schedules page has something to show.
    config.schedules.push(natkey::schedule::ScheduleConfig {
        name: "nightly-demo".into(),
        warehouse: "demo".into(),
        cron: "0 2 * * *".into(),
        timezone: "UTC".into(),
        schemas: Vec::new(),
        tables: Vec::new(),
        notify: Vec::new(),
    });
    let url = natkey::warehouse::WarehouseUrl::parse(&format!("sqlite://{}", path.display()))
        .map_err(|e| e.to_string())?;
    let warehouses = vec![WarehouseEntry {
        name: "demo".into(),
        url,
        schemas: Vec::new(),
        tables: Vec::new(),
    }];
    run_server(
        config,
        warehouses,
        &data_dir.join("natkey.db"),
        bind,
        Some("demo"),
    )
    .await
}
