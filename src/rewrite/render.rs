//! `natkey rewrite` for a terminal: one file's findings, errors and the diff of its rewrite;
//! a table first when there are several files.

use std::fmt::Write as _;

use super::{FileReport, unified_diff};
use crate::audit::report::printable;

/// One file: a verdict line, each finding with its fix, each parse error, and the diff.
pub fn render_file(report: &FileReport, original: Option<&str>) -> String {
    let mut out = String::new();
    let file = printable(&report.file);
    let verdict = if !report.errors.is_empty() && report.findings.is_empty() {
        "could not be fully read"
    } else if report.idempotent {
        "idempotent: running it twice leaves the same state as running it once"
    } else {
        "NOT idempotent"
    };
    let _ = writeln!(out, "{file} ({}): {verdict}", report.dialect);
    for f in &report.findings {
        let _ = writeln!(
            out,
            "\n  {}:{}  {}\n    {}\n    fix: {}",
            f.line,
            f.column,
            f.rule,
            printable(&f.message),
            printable(&f.fix).replace('\u{fffd}', "\n         ")
        );
    }
    for e in &report.errors {
        let _ = writeln!(
            out,
            "\n  {}:{}  error: {}",
            e.line,
            e.column,
            printable(&e.message)
        );
    }
    match (&report.rewritten, original) {
        (Some(after), Some(before)) => {
            let _ = writeln!(out, "\nThe rewrite (natkey ran nothing):\n");
            for line in unified_diff(&report.file, before, after).lines() {
                let _ = writeln!(out, "{}", printable(line));
            }
        }
        (None, _) if !report.findings.is_empty() => {
            let _ = writeln!(
                out,
                "\nNo automatic rewrite for this file: follow the fixes above."
            );
        }
        _ => {}
    }
    out
}

/// Several files: one row each, then the details of the files with findings or errors.
pub fn render_summary(reports: &[FileReport], originals: &[Option<String>]) -> String {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            [
                printable(&r.file),
                if r.idempotent { "yes" } else { "no" }.to_string(),
                r.findings.len().to_string(),
                r.errors.len().to_string(),
                {
                    let mut rules: Vec<&str> = r.findings.iter().map(|f| f.rule).collect();
                    rules.dedup();
                    rules.join(", ")
                },
            ]
        })
        .collect();
    let header = ["FILE", "IDEMPOTENT", "FINDINGS", "ERRORS", "RULES"];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            l.push_str(c);
            if i < 4 {
                l.push_str(&" ".repeat(pad + 2));
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    for r in &rows {
        let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    let idempotent = reports.iter().filter(|r| r.idempotent).count();
    let _ = writeln!(out, "\n{idempotent} of {} files idempotent.", reports.len());
    for (r, original) in reports.iter().zip(originals) {
        if !r.idempotent {
            let _ = write!(out, "\n{}", render_file(r, original.as_deref()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::test_support::run;

    #[test]
    fn a_file_with_a_finding_shows_the_fix_and_the_diff() {
        let sql = "INSERT INTO sales.daily_orders (order_id, line_item_id) VALUES (1, 1);\n";
        let report = run(sql);
        let text = render_file(&report, Some(sql));
        assert!(text.contains("NOT idempotent"), "{text}");
        assert!(text.contains("1:1  insert-without-natural-key"), "{text}");
        assert!(text.contains("+INSERT INTO sales.daily_orders"), "{text}");
        let summary = render_summary(&[report.clone(), run("SELECT 1;")], &[None, None]);
        assert!(summary.starts_with("FILE"), "{summary}");
        assert!(summary.contains("1 of 2 files idempotent."), "{summary}");
    }
}
