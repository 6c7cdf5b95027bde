//! The glue of each subcommand: arguments, progress on stderr, output, exit codes.

pub mod audit;
pub mod plan;
pub mod rewrite;
pub mod serve;

use clap::ValueEnum;

/// How a command prints its result.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Readable text for a terminal.
    Table,
    /// JSON, for programs.
    Json,
}
