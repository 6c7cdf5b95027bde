//! `external-side-effect`: SQL that calls out of the database (`http_post`, `pg_notify`,
//! `dblink_exec`, `aws_lambda.invoke`, `NOTIFY` ...). A database retry cannot take a call back:
//! every retry sends it again. The fix is design.md's idempotency-key protocol: a ledger row
//! written before the call, and a key the receiver deduplicates on.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Statement, visit_expressions};

use super::{FileContext, Hit};

pub const NAME: &str = "external-side-effect";

/// Calls that reach outside the database (matched on the last part of the name, or the whole
/// qualified name).
const CALLS_OUT: [&str; 16] = [
    "http_post",
    "http_get",
    "http_put",
    "http_delete",
    "http",
    "pg_notify",
    "dblink_exec",
    "dblink",
    "aws_lambda.invoke",
    "aws_s3.query_export_to_s3",
    "net.http_post",
    "net.http_get",
    "system$send_email",
    "send_email",
    "sys_exec",
    "utl_http.request",
];

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    for stmt in &cx.statements {
        if let Statement::NOTIFY { channel, .. } = &stmt.ast {
            out.push(hit(cx, stmt.range.start, &format!("NOTIFY {channel}")));
            continue;
        }
        let mut calls_out = |e: &Expr| {
            if let Expr::Function(f) = e {
                let full = f.name.to_string().to_ascii_lowercase().replace('"', "");
                let last = full.rsplit('.').next().unwrap_or("").to_string();
                if CALLS_OUT
                    .iter()
                    .any(|c| *c == full || (!c.contains('.') && *c == last))
                {
                    let at = cx.extent(e).start;
                    out.push(hit(cx, at, &full));
                }
            }
            ControlFlow::<()>::Continue(())
        };
        let _ = visit_expressions(&stmt.ast, &mut calls_out);
        // The CTEs of an unwrapped `WITH ... UPDATE/DELETE/MERGE` (an INSERT carries them in
        // its source already).
        if let (Some(with), false) = (&stmt.with, matches!(stmt.ast, Statement::Insert(_))) {
            let _ = visit_expressions(with, &mut calls_out);
        }
    }
}

fn hit(cx: &FileContext, at: usize, call: &str) -> Hit {
    let q = |s: &str| cx.dialect.quote_ident(s);
    Hit {
        rule: NAME,
        at,
        message: format!(
            "{call} reaches outside the database: a retry of this task calls it again, and the \
             receiver sees a second request (a second email, webhook or invocation)."
        ),
        fix: format!(
            "Use an idempotency key and a ledger. Create once:\n  CREATE TABLE {} ({} text \
             PRIMARY KEY, {} text NOT NULL DEFAULT 'pending', {} timestamp);\nThen per call: \
             INSERT INTO {} ({}) VALUES (<key of the fact, e.g. 'orders:' || order_date>) ON \
             CONFLICT DO NOTHING; make the call only when the row's status is still \
             'pending', pass the key to the receiver (an Idempotency-Key header) so it \
             deduplicates, and set status = 'succeeded' after it answers.",
            q("side_effect_ledger"),
            q("idempotency_key"),
            q("status"),
            q("succeeded_at"),
            q("side_effect_ledger"),
            q("idempotency_key"),
        ),
        edits: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::rewrite::test_support::*;

    #[test]
    fn calls_out_are_reported_with_the_ledger_protocol() {
        for sql in [
            "SELECT http_post('https://hooks.example/x', '{}');",
            "SELECT pg_notify('orders', 'loaded');",
            "NOTIFY orders_loaded;",
            "SELECT aws_lambda.invoke('fn', '{}'::json);",
            "SELECT dblink_exec('remote', 'INSERT INTO t VALUES (1)');",
        ] {
            let report = run(sql);
            assert_eq!(rules_of(&report), [super::NAME], "{sql}\n{report:#?}");
            let fix = &report.findings[0].fix;
            assert!(
                fix.contains("idempotency_key") && fix.contains("pending"),
                "{fix}"
            );
            assert_eq!(report.rewritten, None);
        }
    }

    #[test]
    fn ordinary_functions_are_not_side_effects() {
        let report = run("SELECT httpish(1), notify_count FROM t;");
        assert!(report.idempotent, "{report:#?}");
    }
}
