//! `/metrics`: natkey's figures in the Prometheus text format (version 0.0.4), so teams alert
//! from the Grafana they already have: per warehouse and table the latest excess rows and
//! overcount per measure, audit duration, last success time, runs and notifications by status.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::prelude::ToPrimitive;

use super::AppState;
use super::error::WebError;
use crate::store::MetricsSnapshot;

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header_lines(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// Renders a snapshot; pure, so it is tested without a server.
pub fn render(m: &MetricsSnapshot) -> String {
    let mut out = String::new();
    header_lines(
        &mut out,
        "natkey_table_excess_rows",
        "Excess rows (rows beyond one per natural-key group) in the warehouse's latest succeeded audit.",
    );
    for run in &m.latest {
        for (t, (schema, table)) in run.tables.iter().zip(&run.names) {
            if let Some(excess) = t.excess_rows {
                let _ = writeln!(
                    out,
                    "natkey_table_excess_rows{{warehouse=\"{}\",schema=\"{}\",table=\"{}\"}} {excess}",
                    label(&run.warehouse),
                    label(schema),
                    label(table)
                );
            }
        }
    }
    header_lines(
        &mut out,
        "natkey_table_overcount",
        "How much SUM(measure) is inflated by duplicates in the latest succeeded audit (worst case over survivor choices).",
    );
    for run in &m.latest {
        for (t, (schema, table)) in run.tables.iter().zip(&run.names) {
            for measure in &t.measures {
                let _ = writeln!(
                    out,
                    "natkey_table_overcount{{warehouse=\"{}\",schema=\"{}\",table=\"{}\",measure=\"{}\"}} {}",
                    label(&run.warehouse),
                    label(schema),
                    label(table),
                    label(&measure.column),
                    measure.overcount_max.0.to_f64().unwrap_or(f64::NAN)
                );
            }
        }
    }
    header_lines(
        &mut out,
        "natkey_audit_duration_seconds",
        "Duration of the warehouse's latest succeeded audit.",
    );
    for run in &m.latest {
        if let Some(secs) = run.duration_secs {
            let _ = writeln!(
                out,
                "natkey_audit_duration_seconds{{warehouse=\"{}\"}} {secs}",
                label(&run.warehouse)
            );
        }
    }
    header_lines(
        &mut out,
        "natkey_last_success_timestamp_seconds",
        "When the warehouse's latest succeeded audit finished (Unix time).",
    );
    for run in &m.latest {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&run.finished_at) {
            let _ = writeln!(
                out,
                "natkey_last_success_timestamp_seconds{{warehouse=\"{}\"}} {}",
                label(&run.warehouse),
                at.timestamp()
            );
        }
    }
    header_lines(
        &mut out,
        "natkey_runs",
        "Audit runs in natkey's store (after retention), by warehouse and status.",
    );
    for (warehouse, status, n) in &m.runs_by_status {
        let _ = writeln!(
            out,
            "natkey_runs{{warehouse=\"{}\",status=\"{}\"}} {n}",
            label(warehouse),
            label(status)
        );
    }
    header_lines(
        &mut out,
        "natkey_notifications",
        "Webhook notifications in natkey's ledger, by target and status (pending, succeeded, failed).",
    );
    for (target, status, n) in &m.notifications_by_status {
        let _ = writeln!(
            out,
            "natkey_notifications{{target=\"{}\",status=\"{}\"}} {n}",
            label(target),
            label(status)
        );
    }
    out
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, WebError> {
    let snapshot = state.inner.store.metrics().await?;
    let mut response = render(&snapshot).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_cannot_break_out_of_a_label() {
        assert_eq!(
            label("Weird \"Table\"\n<script>\\"),
            "Weird \\\"Table\\\"\\n<script>\\\\"
        );
    }
}
