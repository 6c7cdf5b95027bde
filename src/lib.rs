//! natkey finds natural-key duplicates left by retried, non-idempotent load tasks, prices the
//! double-counting, and (in later modules) writes the SQL that makes it impossible.
//!
//! The CLI in `main.rs` is a thin front door onto these modules; see `ARCHITECTURE.md`.

/// The audit: key resolution, the duplicate scan, overcounts, samples, and the report.
pub mod audit;
/// `natkey.toml`: audit settings and per-table facts (keys, roles, survivor rules).
pub mod config;
/// The embedded SQLite demo warehouse of `natkey demo`.
pub mod demo;
/// The SQL dialects natkey writes (connected engines and export-only warehouses).
pub mod dialect;
/// Column roles (surrogate key, load metadata, payload, measures) and natural-key resolution.
pub mod keys;
/// Webhook notifications of scheduled runs: idempotency keys, a ledger, retries with backoff.
pub mod notify;
/// The migration planner: SQL that makes the database enforce the natural key, per dialect.
pub mod plan;
/// Task-SQL analysis: is a load task idempotent, and the minimal edit that makes it so.
pub mod rewrite;
/// Nightly audits: schedules (cron in a time zone), a clock, and the run ledger's decisions.
pub mod schedule;
/// natkey's own SQLite store: audit runs, their reports, and confirmed natural keys.
pub mod store;
/// Read-only warehouse sessions, catalogs, and identifier quoting, one file per engine.
pub mod warehouse;
/// `natkey serve`: the axum web app (pages, JSON API, exports) over the store and the audit.
pub mod web;
