//! The `natkey` command line: parses arguments and calls the library. Each subcommand's
//! glue (progress, output format, exit code) lives in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Finds tables whose natural-key groups hold more than one row (the mark of a retried,
/// non-idempotent load task) and prices the double-counting.
#[derive(Parser)]
#[command(name = "natkey", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Audit a warehouse for natural-key duplicates.
    ///
    /// Exit code: 0 no duplicates, 1 duplicates found, 2 error.
    Audit(cli::audit::AuditArgs),
    /// Create the embedded SQLite demo warehouse, audit it and serve the web app
    /// (with --format: print the report instead).
    Demo(cli::audit::DemoArgs),
    /// Write the migration SQL that makes the database enforce a table's natural key.
    ///
    /// natkey only prints SQL; it never runs it. Exit code: 0 written, 2 error.
    Plan(cli::plan::PlanArgs),
    /// Tell whether task SQL is idempotent, and rewrite it so that retries converge.
    ///
    /// natkey only reads and prints SQL; it never runs it. Exit code: 0 idempotent, 1 findings,
    /// 2 error.
    Rewrite(cli::rewrite::RewriteArgs),
    /// Serve the web app: warehouses, audits, table evidence, plans, and a JSON API.
    ///
    /// Binds 127.0.0.1:8080 unless --bind or [server] bind says otherwise.
    Serve(cli::serve::ServeArgs),
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace, and with exit code 2.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "natkey: internal error: {}{at}",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting the runtime: {e}")),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            match cli.command {
                Command::Audit(args) => cli::audit::audit(args).await,
                Command::Demo(args) => cli::audit::demo(args).await,
                Command::Plan(args) => cli::plan::run(args).await,
                Command::Rewrite(args) => cli::rewrite::run(args).await,
                Command::Serve(args) => cli::serve::serve(args).await,
            }
        })
    }));
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(message)) => fail(&message),
        // The panic hook has printed the one line.
        Err(_) => ExitCode::from(2),
    }
}

/// Help and version go to stdout as clap prints them; a usage error becomes natkey's one-line
/// error (clap's message up to its first blank line) with exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.to_string();
    let message: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    fail(&format!(
        "{} (natkey --help for usage)",
        message.strip_prefix("error: ").unwrap_or(&message)
    ))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("natkey: error: {message}");
    ExitCode::from(2)
}
