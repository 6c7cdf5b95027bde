//! Integration tests of the natkey CLI against real PostgreSQL, MariaDB/MySQL and SQLite
//! warehouses. Each test builds its own randomly named database, runs the natkey binary and
//! compares its JSON report with figures computed from the fixture's construction.

mod checks;
mod cli;
mod common;
mod expect;
mod fixtures;
mod mysql;
mod nightly;
mod plan;
mod postgres;
mod rewrite;
mod schedule;
mod sqlite;
mod web;
