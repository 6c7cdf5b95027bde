//! Natural-key inference: profile a sample in polars for the smallest set of key-like payload
//! columns that is unique once rows identical in payload are collapsed.
//!
//! Collapsing first is what makes a retried load visible: its copies differ only in surrogate
//! key and load metadata, so they are one payload row, and the key that identifies payload rows
//! identifies the fact. A history table has no identical payload rows, so whatever key is found
//! there, it finds no duplicates. The warehouse has the last word: the duplicate scan rejects an
//! inferred key that two *different* payloads share (see `audit`).

use polars::prelude::{Column as PlColumn, DataFrame, UniqueKeepStrategy};

use super::{Candidate, ColumnRoles, Resolution, Sample, effective_kind, names};
use crate::warehouse::TableInfo;

#[derive(Debug, Clone)]
pub struct InferOptions {
    /// The largest key inference considers.
    pub max_key_columns: usize,
    /// How many of the most key-like columns are combined.
    pub max_candidate_columns: usize,
    /// How many uniqueness checks one table may cost at most.
    pub max_checks: usize,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            max_key_columns: 4,
            max_candidate_columns: 12,
            max_checks: 1500,
        }
    }
}

struct KeyColumn {
    /// Position in the payload frame.
    frame_col: String,
    name: String,
    likeness: f64,
}

/// Ranks candidate natural keys for a table from a sample of its rows.
pub fn infer_candidates(
    info: &TableInfo,
    roles: &ColumnRoles,
    sample: &Sample,
    options: &InferOptions,
) -> Resolution {
    let payload: Vec<usize> = info
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| roles.payload.contains(&c.name))
        .map(|(i, _)| i)
        .collect();
    if payload.is_empty() {
        return Resolution::NoKey(
            "every column is a surrogate key or load metadata, so no payload identifies a row"
                .into(),
        );
    }
    if sample.rows.is_empty() {
        return Resolution::NoKey(
            "the table is empty, so there is nothing to infer a natural key from; \
             declare it in natkey.toml ([[table]] natural_key = [...])"
                .into(),
        );
    }
    match profile(info, &payload, sample, options) {
        Ok(resolution) => resolution,
        Err(e) => Resolution::NoKey(format!("profiling the sample failed: {e}")),
    }
}

fn profile(
    info: &TableInfo,
    payload: &[usize],
    sample: &Sample,
    options: &InferOptions,
) -> polars::prelude::PolarsResult<Resolution> {
    // Frame columns are named by position: catalog names may collide once normalised, and
    // polars needs no knowledge of them.
    let columns: Vec<PlColumn> = payload
        .iter()
        .enumerate()
        .map(|(p, &i)| {
            let values: Vec<Option<&str>> = sample.values(i).collect();
            PlColumn::new(format!("p{p}").into(), values)
        })
        .collect();
    let frame = DataFrame::new_infer_height(columns)?;
    let distinct = frame.unique_stable(None, UniqueKeepStrategy::First, None)?;
    let distinct_rows = distinct.height();
    if distinct_rows < 2 {
        return Ok(Resolution::NoKey(
            "the table holds fewer than two distinct payload rows, too few to infer a natural \
             key from; declare it in natkey.toml"
                .into(),
        ));
    }

    let mut key_columns: Vec<KeyColumn> = Vec::new();
    for (p, &i) in payload.iter().enumerate() {
        let column = &info.columns[i];
        let kind = effective_kind(column, sample, i);
        let (total, count) = sample
            .values(i)
            .flatten()
            .fold((0usize, 0usize), |(t, n), v| (t + v.chars().count(), n + 1));
        let average_len = if count == 0 {
            0.0
        } else {
            total as f64 / count as f64
        };
        let Some(likeness) = names::key_likeness(&column.name, kind, average_len) else {
            continue;
        };
        let frame_col = format!("p{p}");
        // A column constant across the sample cannot tell rows apart.
        if distinct.column(&frame_col)?.n_unique()? < 2 {
            continue;
        }
        key_columns.push(KeyColumn {
            frame_col,
            name: column.name.clone(),
            likeness,
        });
    }
    if key_columns.is_empty() {
        return Ok(Resolution::NoKey(
            "no payload column looks like part of a key (only measures, free text or constant \
             columns); declare the natural key in natkey.toml if the table has one"
                .into(),
        ));
    }
    // Most key-like first; the sort is stable, so table order breaks ties.
    key_columns.sort_by(|a, b| b.likeness.total_cmp(&a.likeness));
    key_columns.truncate(options.max_candidate_columns);

    let mut found: Vec<Vec<usize>> = Vec::new();
    let mut checks = 0;
    let mut smallest: Option<usize> = None;
    'sizes: for size in 1..=options.max_key_columns.min(key_columns.len()) {
        // Runner-ups come from the smallest size that has a key and the next one.
        if smallest.is_some_and(|s| size > s + 1) {
            break;
        }
        for combo in combinations(key_columns.len(), size) {
            if found.iter().any(|f| f.iter().all(|c| combo.contains(c))) {
                continue; // a superset of a key is not minimal
            }
            if checks >= options.max_checks {
                break 'sizes;
            }
            checks += 1;
            let names: Vec<&str> = combo
                .iter()
                .map(|&c| key_columns[c].frame_col.as_str())
                .collect();
            if distinct.group_by(names)?.get_groups().len() == distinct_rows {
                smallest.get_or_insert(size);
                found.push(combo);
            }
        }
    }
    if found.is_empty() {
        return Ok(Resolution::NoKey(format!(
            "no combination of up to {} key-like columns identifies a row of the sample; \
             declare the natural key in natkey.toml if the table has one",
            options.max_key_columns
        )));
    }

    let smallest = smallest.unwrap_or(1);
    let same_size = found.iter().filter(|f| f.len() == smallest).count();
    let mut candidates: Vec<(f64, Candidate)> = found
        .iter()
        .map(|combo| {
            let mean =
                combo.iter().map(|&c| key_columns[c].likeness).sum::<f64>() / combo.len() as f64;
            let confidence = confidence(
                mean,
                combo.len(),
                combo.len() - smallest,
                distinct_rows,
                sample.complete,
                same_size,
            );
            // Columns in table order, as people read them.
            let mut columns: Vec<&KeyColumn> = combo.iter().map(|&c| &key_columns[c]).collect();
            columns.sort_by_key(|k| k.frame_col[1..].parse::<usize>().unwrap_or(0));
            (
                mean,
                Candidate {
                    columns: columns.iter().map(|k| k.name.clone()).collect(),
                    confidence,
                },
            )
        })
        .collect();
    candidates.sort_by(|(mean_a, a), (mean_b, b)| {
        a.columns
            .len()
            .cmp(&b.columns.len())
            .then(mean_b.total_cmp(mean_a))
    });
    Ok(Resolution::Inferred(
        candidates.into_iter().map(|(_, c)| c).take(5).collect(),
    ))
}

/// A heuristic in (0, 1): key-like names, a well-covered sample with many distinct rows and no
/// rival of the same size make an inferred key believable.
fn confidence(
    mean_likeness: f64,
    size: usize,
    larger_than_smallest: usize,
    distinct_rows: usize,
    complete_sample: bool,
    rivals_of_smallest_size: usize,
) -> f64 {
    let rows = ((distinct_rows as f64).log10() / 3.0).clamp(0.0, 1.0);
    let coverage = if complete_sample { 1.0 } else { 0.7 };
    let ambiguity = 0.1 * (rivals_of_smallest_size.saturating_sub(1).min(3)) as f64;
    let score = 0.35 + 0.35 * mean_likeness + 0.15 * rows + 0.15 * coverage
        - 0.05 * (size.saturating_sub(1)) as f64
        - 0.2 * larger_than_smallest as f64
        - ambiguity;
    (score.clamp(0.05, 0.99) * 100.0).round() / 100.0
}

/// All `k`-element subsets of `0..n`, in lexicographic order.
fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut current = Vec::with_capacity(k);
    fn go(start: usize, n: usize, k: usize, current: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if current.len() == k {
            out.push(current.clone());
            return;
        }
        for i in start..n {
            current.push(i);
            go(i + 1, n, k, current, out);
            current.pop();
        }
    }
    go(0, n, k, &mut current, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::detect_roles;
    use crate::warehouse::{Column, TableRef, kind_of};

    fn info(columns: &[(&str, &str)]) -> TableInfo {
        TableInfo {
            table: TableRef::new("s", "t"),
            columns: columns
                .iter()
                .map(|(n, t)| Column {
                    name: n.to_string(),
                    data_type: t.to_string(),
                    kind: kind_of(t),
                    nullable: true,
                    default: None,
                    generated: None,
                    on_update_now: false,
                    computed: false,
                })
                .collect(),
            unique_keys: vec![],
            estimated_rows: None,
            partitioned: false,
            partition_key: Vec::new(),
        }
    }

    fn sample(rows: Vec<Vec<String>>) -> Sample {
        Sample {
            rows: rows
                .into_iter()
                .map(|r| r.into_iter().map(Some).collect())
                .collect(),
            complete: true,
        }
    }

    fn infer(info: &TableInfo, sample: &Sample) -> Resolution {
        let roles = detect_roles(info, None, sample);
        infer_candidates(info, &roles, sample, &InferOptions::default())
    }

    #[test]
    fn a_retried_load_collapses_to_its_order_line_key() {
        let t = info(&[
            ("order_id", "bigint"),
            ("line_item_id", "integer"),
            ("order_date", "date"),
            ("amount_cents", "bigint"),
            ("loaded_at", "timestamp"),
        ]);
        let mut rows = Vec::new();
        for retry in 0..2 {
            for order in 0..50 {
                for line in 0..3 {
                    rows.push(vec![
                        order.to_string(),
                        line.to_string(),
                        format!("2026-11-{:02}", 1 + order % 5),
                        (100 * (line + 1)).to_string(),
                        format!("2026-11-10 01:0{retry}:00"),
                    ]);
                }
            }
        }
        let Resolution::Inferred(candidates) = infer(&t, &sample(rows)) else {
            panic!("a key should be inferred");
        };
        assert_eq!(candidates[0].columns, ["order_id", "line_item_id"]);
        assert!(candidates[0].confidence > 0.8, "{:?}", candidates[0]);
    }

    #[test]
    fn a_history_table_is_not_keyed_by_its_repeating_id() {
        let t = info(&[
            ("order_id", "bigint"),
            ("status", "text"),
            ("changed_at", "timestamp"),
        ]);
        let statuses = ["placed", "paid", "shipped"];
        let mut rows = Vec::new();
        for order in 0..40 {
            for (s, status) in statuses.iter().enumerate() {
                rows.push(vec![
                    order.to_string(),
                    status.to_string(),
                    // Status changes are applied in batches: timestamps repeat across orders.
                    format!("2026-11-{:02} {:02}:00:00", 1 + order % 3, s),
                ]);
            }
        }
        let Resolution::Inferred(candidates) = infer(&t, &sample(rows)) else {
            panic!("a key should be inferred");
        };
        assert!(candidates.iter().all(|c| c.columns != ["order_id"]));
        assert_eq!(candidates[0].columns.len(), 2);
        assert_eq!(candidates[0].columns[0], "order_id");
        assert!(
            candidates
                .iter()
                .any(|c| c.columns == ["order_id", "status"])
        );
    }

    #[test]
    fn free_text_alone_is_no_key() {
        let t = info(&[("message", "text"), ("amount", "numeric(12,2)")]);
        let rows = (0..20)
            .map(|i| vec![format!("user {i} logged in"), format!("{i}.50")])
            .collect();
        assert!(matches!(infer(&t, &sample(rows)), Resolution::NoKey(_)));
    }

    #[test]
    fn combinations_are_complete_and_ordered() {
        assert_eq!(
            combinations(4, 2),
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
        assert_eq!(combinations(3, 3), vec![vec![0, 1, 2]]);
    }
}
