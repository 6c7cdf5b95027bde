//! The difference between two audit reports of one schedule: which tables newly have
//! duplicates, which got worse or better, which were fixed. Notifications are sent on it, and
//! the web app shows it as a run's "difference from the previous run".

use std::collections::HashMap;

use serde::Serialize;

use crate::audit::report::{Report, Status, TableReport};

/// One table whose duplicates changed between two runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableChange {
    pub schema: String,
    pub name: String,
    /// Excess rows in the previous run (`None`: the table was not audited then, or had no
    /// figures: no key, an error).
    pub previous_excess_rows: Option<i64>,
    /// Excess rows now.
    pub excess_rows: Option<i64>,
}

/// How a report differs from the previous one. Tables are matched by schema and name; each
/// list keeps the current report's order (worst first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunDiff {
    /// Duplicates now, none before (or no previous run, or the table is new).
    pub new_duplicates: Vec<TableChange>,
    /// Duplicates before and more excess rows now.
    pub worse: Vec<TableChange>,
    /// Duplicates before and fewer (but some) excess rows now.
    pub better: Vec<TableChange>,
    /// Duplicates before, and now `clean` or `enforced`. A table that errored, lost its key or
    /// was not audited this time is not called fixed.
    pub fixed: Vec<TableChange>,
}

impl RunDiff {
    /// New or increased duplicates: what a notification is sent for.
    pub fn got_worse(&self) -> bool {
        !self.new_duplicates.is_empty() || !self.worse.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.new_duplicates.is_empty()
            && self.worse.is_empty()
            && self.better.is_empty()
            && self.fixed.is_empty()
    }
}

fn excess(t: &TableReport) -> i64 {
    match t.status {
        Status::Duplicates => t.excess_rows.unwrap_or(0),
        _ => 0,
    }
}

/// Compares `current` with the `previous` report of the same schedule (`None` for a first run:
/// every table with duplicates is then new).
pub fn compare(previous: Option<&Report>, current: &Report) -> RunDiff {
    let before: HashMap<(&str, &str), &TableReport> = previous
        .map(|p| {
            p.tables
                .iter()
                .map(|t| ((t.schema.as_str(), t.name.as_str()), t))
                .collect()
        })
        .unwrap_or_default();
    let mut diff = RunDiff::default();
    for now in &current.tables {
        let then = before.get(&(now.schema.as_str(), now.name.as_str()));
        let change = TableChange {
            schema: now.schema.clone(),
            name: now.name.clone(),
            previous_excess_rows: then.and_then(|t| t.excess_rows),
            excess_rows: now.excess_rows,
        };
        let had = then.is_some_and(|t| t.status == Status::Duplicates && excess(t) > 0);
        let has = now.status == Status::Duplicates && excess(now) > 0;
        match (had, has) {
            (false, true) => diff.new_duplicates.push(change),
            (true, true) => {
                let was = then.map_or(0, |t| excess(t));
                match excess(now).cmp(&was) {
                    std::cmp::Ordering::Greater => diff.worse.push(change),
                    std::cmp::Ordering::Less => diff.better.push(change),
                    std::cmp::Ordering::Equal => {}
                }
            }
            (true, false) if matches!(now.status, Status::Clean | Status::Enforced) => {
                diff.fixed.push(change)
            }
            _ => {}
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::report::{REPORT_VERSION, Summary};
    use crate::warehouse::Engine;

    fn table(name: &str, status: Status, excess: Option<i64>) -> TableReport {
        let mut t = TableReport::new("sales", name);
        t.status = status;
        t.excess_rows = excess;
        t
    }

    fn report(tables: Vec<TableReport>) -> Report {
        Report {
            natkey_report: REPORT_VERSION,
            warehouse: "sqlite://dw.sqlite".into(),
            dialect: Engine::Sqlite,
            server_version: String::new(),
            started_at: "2026-12-03T02:00:00Z".into(),
            finished_at: "2026-12-03T02:00:41Z".into(),
            summary: Summary::default(),
            tables,
        }
    }

    fn names(list: &[TableChange]) -> Vec<&str> {
        list.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn compare_sorts_tables_into_new_worse_better_and_fixed() {
        let previous = report(vec![
            table("orders", Status::Duplicates, Some(10)),
            table("refunds", Status::Duplicates, Some(50)),
            table("payments", Status::Duplicates, Some(7)),
            table("customers", Status::Clean, Some(0)),
            table("events", Status::Duplicates, Some(3)),
            table("stable", Status::Duplicates, Some(4)),
        ]);
        let current = report(vec![
            table("orders", Status::Duplicates, Some(25)),
            table("refunds", Status::Duplicates, Some(20)),
            table("payments", Status::Enforced, Some(0)),
            table("customers", Status::Duplicates, Some(2)),
            table("events", Status::Error, None),
            table("stable", Status::Duplicates, Some(4)),
            table("brand_new", Status::Duplicates, Some(1)),
        ]);
        let diff = compare(Some(&previous), &current);
        assert_eq!(names(&diff.new_duplicates), ["customers", "brand_new"]);
        assert_eq!(names(&diff.worse), ["orders"]);
        assert_eq!(diff.worse[0].previous_excess_rows, Some(10));
        assert_eq!(diff.worse[0].excess_rows, Some(25));
        assert_eq!(names(&diff.better), ["refunds"]);
        assert_eq!(names(&diff.fixed), ["payments"]);
        assert!(diff.got_worse());
    }

    #[test]
    fn an_unchanged_or_improving_run_is_not_worse() {
        let previous = report(vec![table("orders", Status::Duplicates, Some(10))]);
        let same = report(vec![table("orders", Status::Duplicates, Some(10))]);
        assert!(compare(Some(&previous), &same).is_empty());
        let fixed = report(vec![table("orders", Status::Clean, Some(0))]);
        let diff = compare(Some(&previous), &fixed);
        assert!(!diff.got_worse());
        assert_eq!(names(&diff.fixed), ["orders"]);
    }

    #[test]
    fn a_first_run_counts_every_table_with_duplicates_as_new() {
        let current = report(vec![
            table("orders", Status::Duplicates, Some(3)),
            table("clean", Status::Clean, Some(0)),
        ]);
        let diff = compare(None, &current);
        assert_eq!(names(&diff.new_duplicates), ["orders"]);
        assert!(diff.fixed.is_empty());
    }
}
