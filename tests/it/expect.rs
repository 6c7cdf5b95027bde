//! Expected figures, computed from the fixture rows the tests generate (never from natkey), and
//! the assertions that compare them with a table's report entry.

use std::collections::BTreeMap;

use serde_json::Value;

/// A measure column and its scale (0 for integers, 2 for `numeric(12,2)`).
#[derive(Clone, Debug)]
pub struct MeasureSpec {
    pub column: String,
    pub scale: u32,
}

pub fn measure(column: &str, scale: u32) -> MeasureSpec {
    MeasureSpec {
        column: column.to_string(),
        scale,
    }
}

/// One inserted row, as the expectation sees it.
#[derive(Clone, Debug)]
pub struct XRow {
    /// natural-key values (`None` = NULL), rendered as text.
    pub key: Vec<Option<String>>,
    /// every payload value, joined: rows with equal `payload` are identical in payload.
    pub payload: String,
    /// the day of the day column (`YYYY-MM-DD`), when the table has one.
    pub day: Option<String>,
    /// measure values in units of 10^-scale, in the order of the specs.
    pub measures: Vec<i128>,
    /// the survivor rule keeps the row with the highest rank in its group.
    pub rank: i64,
}

#[derive(Clone, Debug, Default)]
pub struct MeasureFig {
    pub total: i128,
    pub overcount: i128,
    pub min: i128,
    pub max: i128,
    pub survivor: i128,
}

#[derive(Clone, Debug)]
pub struct DayFig {
    pub rows: i64,
    pub groups: i64,
    pub excess: i64,
    pub measures: Vec<MeasureFig>,
}

#[derive(Clone, Debug)]
pub struct Expected {
    pub specs: Vec<MeasureSpec>,
    pub rows: i64,
    pub dup_groups: i64,
    pub rows_in_dup: i64,
    pub excess: i64,
    pub exact: i64,
    pub conflicting: i64,
    pub null_key_groups: i64,
    pub figs: Vec<MeasureFig>,
    /// `None`: the table has no day column (by_day must be empty).
    pub by_day: Option<BTreeMap<String, DayFig>>,
    /// whether `overcount_survivor` is checked.
    pub check_survivor: bool,
    /// duplicate groups: key -> number of rows.
    pub dup_keys: BTreeMap<Vec<Option<String>>, usize>,
    /// duplicate groups: key -> whether the group is exact.
    pub dup_exact: BTreeMap<Vec<Option<String>>, bool>,
}

fn add_group(figs: &mut [MeasureFig], group: &[&XRow], exact: bool) {
    for (m, fig) in figs.iter_mut().enumerate() {
        let vals: Vec<i128> = group.iter().map(|r| r.measures[m]).collect();
        let sum: i128 = vals.iter().sum();
        let max = *vals.iter().max().expect("non-empty group");
        let min = *vals.iter().min().expect("non-empty group");
        let survivor = group
            .iter()
            .max_by_key(|r| r.rank)
            .expect("non-empty group")
            .measures[m];
        if exact {
            fig.overcount += sum - vals[0];
        }
        fig.min += sum - max;
        fig.max += sum - min;
        fig.survivor += sum - survivor;
    }
}

pub fn compute(
    specs: Vec<MeasureSpec>,
    rows: &[XRow],
    has_day: bool,
    check_survivor: bool,
) -> Expected {
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<&XRow>> = BTreeMap::new();
    for r in rows {
        assert_eq!(r.measures.len(), specs.len(), "fixture: measures per row");
        groups.entry(r.key.clone()).or_default().push(r);
    }
    let mut figs = vec![MeasureFig::default(); specs.len()];
    for (m, fig) in figs.iter_mut().enumerate() {
        fig.total = rows.iter().map(|r| r.measures[m]).sum();
    }
    let mut e = Expected {
        specs: specs.clone(),
        rows: rows.len() as i64,
        dup_groups: 0,
        rows_in_dup: 0,
        excess: 0,
        exact: 0,
        conflicting: 0,
        null_key_groups: 0,
        figs,
        by_day: if has_day { Some(BTreeMap::new()) } else { None },
        check_survivor,
        dup_keys: BTreeMap::new(),
        dup_exact: BTreeMap::new(),
    };
    for (key, group) in &groups {
        if group.len() < 2 {
            continue;
        }
        let exact = group.iter().all(|r| r.payload == group[0].payload);
        e.dup_groups += 1;
        e.rows_in_dup += group.len() as i64;
        e.excess += group.len() as i64 - 1;
        if exact {
            e.exact += 1;
        } else {
            e.conflicting += 1;
        }
        if key.iter().any(|k| k.is_none()) {
            e.null_key_groups += 1;
        }
        e.dup_keys.insert(key.clone(), group.len());
        e.dup_exact.insert(key.clone(), exact);
        add_group(&mut e.figs, group, exact);
        if let Some(by_day) = e.by_day.as_mut() {
            let day = group[0].day.clone().expect("fixture: row without a day");
            assert!(
                group.iter().all(|r| r.day.as_deref() == Some(day.as_str())),
                "fixture: a duplicate group spans several days"
            );
            let d = by_day.entry(day).or_insert_with(|| DayFig {
                rows: 0,
                groups: 0,
                excess: 0,
                measures: vec![MeasureFig::default(); specs.len()],
            });
            d.rows += group.len() as i64;
            d.groups += 1;
            d.excess += group.len() as i64 - 1;
            add_group(&mut d.measures, group, exact);
        }
    }
    if let Some(by_day) = &e.by_day {
        // Every fixture is built so that a day holding a duplicate group holds nothing else:
        // then a day's `rows` means the same whether natkey counts all of the day's rows or the
        // rows of its duplicate groups.
        for (day, d) in by_day {
            let all = rows
                .iter()
                .filter(|r| r.day.as_deref() == Some(day))
                .count() as i64;
            assert_eq!(
                all, d.rows,
                "fixture: day {day} mixes clean rows and duplicates"
            );
        }
    }
    e
}

// ---------------------------------------------------------------------------------------------
// Exact decimals

/// Canonical text of a decimal: no `+`, no leading zeros, no trailing fractional zeros.
pub fn canon_decimal(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    if neg && body != "0" {
        Some(format!("-{body}"))
    } else {
        Some(body)
    }
}

/// `value` scaled by 10^-scale, as canonical decimal text.
pub fn scaled_text(value: i128, scale: u32) -> String {
    if scale == 0 {
        return value.to_string();
    }
    let neg = value < 0;
    let abs = value.unsigned_abs();
    let p = 10u128.pow(scale);
    let s = format!(
        "{}{}.{:0width$}",
        if neg { "-" } else { "" },
        abs / p,
        abs % p,
        width = scale as usize
    );
    canon_decimal(&s).expect("own decimal text")
}

/// Asserts an amount in the report: integers (scale 0) must be JSON integers; decimals may be
/// a JSON integer (whole values) or a decimal string; never a float.
pub fn assert_amount(actual: &Value, expected: i128, scale: u32, what: &str) {
    let want = scaled_text(expected, scale);
    let got = match actual {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => panic!("{what}: amount {n} is a float, amounts must be exact"),
        Value::String(s) if scale > 0 || i64::try_from(expected).is_err() => {
            canon_decimal(s).unwrap_or_else(|| panic!("{what}: {s:?} is not a decimal"))
        }
        other => panic!("{what}: expected the amount {want} as a JSON integer, got {other}"),
    };
    assert_eq!(got, want, "{what}");
}

fn find_measure<'a>(list: &'a Value, column: &str, what: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("{what}: measures is not an array: {list}"))
        .iter()
        .find(|m| m["column"] == column)
        .unwrap_or_else(|| panic!("{what}: no measure {column:?} in {list}"))
}

/// Compares every duplicate figure, measure and per-day figure of a table entry.
pub fn assert_figures(t: &Value, e: &Expected) {
    let ctx = format!("{}.{}", t["schema"], t["name"]);
    let int = |field: &str, want: i64| {
        assert_eq!(t[field], want, "{ctx}: {field}");
    };
    int("rows", e.rows);
    int("duplicate_groups", e.dup_groups);
    int("rows_in_duplicate_groups", e.rows_in_dup);
    int("excess_rows", e.excess);
    int("exact_groups", e.exact);
    int("conflicting_groups", e.conflicting);
    int("null_key_groups", e.null_key_groups);
    let expected_status = if e.dup_groups > 0 {
        "duplicates"
    } else {
        "clean"
    };
    assert_eq!(t["status"], expected_status, "{ctx}: status");

    for (spec, fig) in e.specs.iter().zip(&e.figs) {
        let what = format!("{ctx}: measure {}", spec.column);
        let m = find_measure(&t["measures"], &spec.column, &what);
        assert_amount(&m["total"], fig.total, spec.scale, &format!("{what} total"));
        assert_amount(
            &m["overcount"],
            fig.overcount,
            spec.scale,
            &format!("{what} overcount"),
        );
        assert_amount(
            &m["overcount_min"],
            fig.min,
            spec.scale,
            &format!("{what} overcount_min"),
        );
        assert_amount(
            &m["overcount_max"],
            fig.max,
            spec.scale,
            &format!("{what} overcount_max"),
        );
        if e.check_survivor {
            assert_amount(
                &m["overcount_survivor"],
                fig.survivor,
                spec.scale,
                &format!("{what} overcount_survivor"),
            );
        }
    }

    let by_day = t["by_day"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: by_day is not an array: {}", t["by_day"]));
    match &e.by_day {
        None => assert!(
            by_day.is_empty(),
            "{ctx}: by_day should be empty, got {by_day:?}"
        ),
        Some(want) => {
            let got_days: Vec<String> = by_day
                .iter()
                .map(|d| d["day"].as_str().unwrap_or("?").to_string())
                .collect();
            let want_days: Vec<String> = want.keys().cloned().collect();
            let mut sorted = got_days.clone();
            sorted.sort();
            assert_eq!(sorted, want_days, "{ctx}: the days in by_day");
            assert_eq!(
                got_days.len(),
                want_days.len(),
                "{ctx}: by_day repeats a day"
            );
            for d in by_day {
                let day = d["day"].as_str().unwrap_or("?");
                let w = &want[day];
                assert_eq!(d["rows"], w.rows, "{ctx}: by_day {day} rows");
                assert_eq!(
                    d["duplicate_groups"], w.groups,
                    "{ctx}: by_day {day} duplicate_groups"
                );
                assert_eq!(
                    d["excess_rows"], w.excess,
                    "{ctx}: by_day {day} excess_rows"
                );
                for (spec, fig) in e.specs.iter().zip(&w.measures) {
                    let what = format!("{ctx}: by_day {day} measure {}", spec.column);
                    let m = find_measure(&d["measures"], &spec.column, &what);
                    assert_amount(
                        &m["overcount"],
                        fig.overcount,
                        spec.scale,
                        &format!("{what} overcount"),
                    );
                    assert_amount(
                        &m["overcount_min"],
                        fig.min,
                        spec.scale,
                        &format!("{what} overcount_min"),
                    );
                    assert_amount(
                        &m["overcount_max"],
                        fig.max,
                        spec.scale,
                        &format!("{what} overcount_max"),
                    );
                }
            }
        }
    }
}

/// Checks the samples against the construction: each names a real duplicate group (its key
/// values as text), has 2..=group-size rows as wide as `columns`, `exact` agrees with the
/// construction, conflicting samples come first, and at most 5 are given.
pub fn assert_samples(t: &Value, e: &Expected, key_columns: &[&str]) {
    let ctx = format!("{}.{}", t["schema"], t["name"]);
    let samples = t["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: samples is not an array"));
    if e.dup_groups == 0 {
        assert!(samples.is_empty(), "{ctx}: samples without duplicates");
        return;
    }
    assert!(
        !samples.is_empty(),
        "{ctx}: no samples although there are duplicates"
    );
    assert!(samples.len() <= 5, "{ctx}: more than 5 samples");
    let mut seen_exact = false;
    for s in samples {
        let key: Vec<Option<String>> = key_columns
            .iter()
            .map(|c| match &s["key"][*c] {
                Value::Null => None,
                Value::String(v) => Some(v.clone()),
                other => panic!("{ctx}: sample key {c} is not text: {other}"),
            })
            .collect();
        let size = *e
            .dup_keys
            .get(&key)
            .unwrap_or_else(|| panic!("{ctx}: sample key {key:?} is not a duplicate group"));
        let exact = e.dup_exact[&key];
        assert_eq!(s["exact"], exact, "{ctx}: sample {key:?} exact");
        if exact {
            seen_exact = true;
        } else {
            assert!(
                !seen_exact,
                "{ctx}: a conflicting sample comes after an exact one"
            );
        }
        let columns = strings(&s["columns"]);
        let rows = s["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: sample rows is not an array"));
        assert!(
            rows.len() >= 2 && rows.len() <= size,
            "{ctx}: sample {key:?} has {} rows, group has {size}",
            rows.len()
        );
        for r in rows {
            let r = r
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}: sample row is not an array"));
            assert_eq!(r.len(), columns.len(), "{ctx}: sample row width");
            for v in r {
                assert!(
                    v.is_string() || v.is_null(),
                    "{ctx}: sample value {v} is not text"
                );
            }
        }
        // differing_columns is exactly the set of columns whose values differ in the rows.
        let differing = string_set(&s["differing_columns"]);
        if rows.len() == size {
            let mut want = std::collections::BTreeSet::new();
            for (i, c) in columns.iter().enumerate() {
                let first = &rows[0][i];
                if rows.iter().any(|r| &r[i] != first) {
                    want.insert(c.clone());
                }
            }
            assert_eq!(
                differing, want,
                "{ctx}: sample {key:?} differing_columns vs its rows"
            );
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    crate::common::strings(v)
}

fn string_set(v: &Value) -> std::collections::BTreeSet<String> {
    crate::common::string_set(v)
}
