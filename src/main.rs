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
    /// Create the embedded SQLite demo warehouse, audit it and print the report.
    Demo(cli::audit::DemoArgs),
    /// Write the migration SQL that makes the database enforce a table's natural key.
    ///
    /// natkey only prints SQL; it never runs it. Exit code: 0 written, 2 error.
    Plan(cli::plan::PlanArgs),
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("natkey: internal error: {info}");
    }));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Audit(args) => cli::audit::audit(args).await,
            Command::Demo(args) => cli::audit::demo(args).await,
            Command::Plan(args) => cli::plan::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("natkey: error: {message}");
    ExitCode::from(2)
}
