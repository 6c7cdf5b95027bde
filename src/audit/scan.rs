//! The duplicate scan: a GROUP BY on the natural key that the warehouse runs, a per-day totals
//! query, and the small follow-up queries (survivor overcount, sample groups).
//!
//! Shape of the duplicate scan (every output cast to text):
//!
//! ```sql
//! SELECT day, <duplicate/exact/NULL-key group counts>, <sample keys as JSON arrays>,
//!        <per measure: exact overcount, least and most overcount>
//! FROM (SELECT day(g.d) AS day, g.* FROM (
//!         SELECT key..., COUNT(*) AS n, <payload differs?> AS c,
//!                SUM(m), MIN(m), MAX(m) per measure, MIN(day column) AS d
//!         FROM (SELECT ..., <NULL mask> FROM table [ORDER BY key]) t
//!         GROUP BY key... HAVING COUNT(*) > 1) g) h
//! GROUP BY day
//! ```
//!
//! and of the totals: `SELECT day(d), COUNT(*), SUM(m)... FROM table GROUP BY day(d)`.
//!
//! Why two statements: only duplicate groups need the per-group figures, so the HAVING keeps the
//! outer aggregate small, and totals over raw rows cost a scan with a handful of cheap
//! aggregates. On PostgreSQL the key is grouped over sorted input (a quicksort in `work_mem`
//! beats a hash table of millions of mostly single-row groups; see benches/README.md).
//! GROUP BY puts NULL keys in one group, exactly like `IS NOT DISTINCT FROM`. Per-day rows are
//! summed in Rust with exact decimals.

use rust_decimal::Decimal;

use super::report::{Amount, DayFigures, DayMeasure, MeasureFigures};
use crate::config::SurvivorRule;
use crate::warehouse::{ColumnKind, Engine, TableInfo, TextRow, WarehouseSql};

/// Everything the scan needs to know about a table.
pub struct ScanSpec<'a> {
    pub engine: Engine,
    pub info: &'a TableInfo,
    pub key: &'a [String],
    /// Payload columns outside the key: a group whose rows differ in one of them conflicts.
    pub compared: Vec<Compared<'a>>,
    pub measures: &'a [String],
    pub day_column: Option<&'a str>,
    /// Skip the per-group sums that only conflicting groups need (PostgreSQL): the exact
    /// overcount is then `(n − 1) × value`. When the scan finds conflicting groups, run it again
    /// with sums for their overcount range.
    pub exact_only: bool,
}

/// A payload column compared within groups.
pub struct Compared<'a> {
    pub name: &'a str,
    pub kind: ColumnKind,
    pub nullable: bool,
}

/// What the scan found, before samples and the survivor overcount.
#[derive(Debug, Clone, Default)]
pub struct ScanFigures {
    pub rows: i64,
    pub duplicate_groups: i64,
    pub rows_in_duplicate_groups: i64,
    pub exact_groups: i64,
    pub null_key_groups: i64,
    pub measures: Vec<MeasureFigures>,
    pub by_day: Vec<DayFigures>,
    /// JSON arrays of key values ([`Engine::key_text`] parts) of some duplicate groups,
    /// conflicting ones first.
    pub sample_keys: Vec<String>,
    /// Those of [`ScanFigures::sample_keys`] whose groups the scan found conflicting.
    pub conflicting_sample_keys: Vec<String>,
}

impl ScanFigures {
    pub fn excess_rows(&self) -> i64 {
        self.rows_in_duplicate_groups - self.duplicate_groups
    }

    pub fn conflicting_groups(&self) -> i64 {
        self.duplicate_groups - self.exact_groups
    }
}

/// SQLite's SUM fails on 64-bit overflow, so there a sum is taken in two parts, `v / 2^32` and
/// `v % 2^32`, each far from overflowing, and recombined exactly in Rust. Non-integer values
/// (SQLite REALs) go whole into the second part.
const SPLIT: i64 = 1 << 32;

/// One output column of a sum and the weight it carries in the figure it is part of.
#[derive(Debug, Clone)]
struct Term {
    sql: String,
    weight: Decimal,
}

/// `SUM(value)` as exact terms.
fn sum_terms(e: Engine, value: &str, weight: Decimal) -> Vec<Term> {
    match e {
        Engine::Postgres | Engine::MySql => vec![Term {
            sql: format!("SUM({value})"),
            weight,
        }],
        Engine::Sqlite => {
            let v = format!("({value})");
            vec![
                Term {
                    sql: format!(
                        "SUM(CASE WHEN typeof({v}) = 'integer' THEN {v} / {SPLIT} ELSE 0 END)"
                    ),
                    weight: weight * Decimal::from(SPLIT),
                },
                Term {
                    sql: format!(
                        "SUM(CASE WHEN typeof({v}) = 'integer' THEN {v} % {SPLIT} ELSE {v} END)"
                    ),
                    weight,
                },
            ]
        }
    }
}

/// The inner per-group sum of measure `j`: output aliases and their weights.
fn group_sum_parts(e: Engine, column: &str, j: usize) -> Vec<(String, String, Decimal)> {
    sum_terms(e, column, Decimal::ONE)
        .into_iter()
        .enumerate()
        .map(|(p, t)| (t.sql, format!("nk_s{j}_{p}"), t.weight))
        .collect()
}

/// Terms of `Σ over groups matching cond of (group sum − h.minus)`.
fn group_sum_terms(
    e: Engine,
    parts: &[(String, String, Decimal)],
    cond: &str,
    minus: Option<&str>,
) -> Vec<Term> {
    if let ([(_, alias, weight)], Engine::Postgres | Engine::MySql) = (parts, e) {
        // Exact native sums: one aggregate per figure.
        let minus = minus.map(|m| format!(" - h.{m}")).unwrap_or_default();
        return sum_terms(
            e,
            &format!("CASE WHEN {cond} THEN h.{alias}{minus} ELSE 0 END"),
            *weight,
        );
    }
    let mut terms: Vec<Term> = parts
        .iter()
        .flat_map(|(_, alias, weight)| {
            sum_terms(
                e,
                &format!("CASE WHEN {cond} THEN h.{alias} ELSE 0 END"),
                *weight,
            )
        })
        .collect();
    if let Some(m) = minus {
        terms.extend(sum_terms(
            e,
            &format!("CASE WHEN {cond} THEN h.{m} ELSE 0 END"),
            -Decimal::ONE,
        ));
    }
    terms
}

/// A measure's value as the scan adds it up: the column, except PostgreSQL `money`, whose sums
/// print as locale text (`$1,025.00`); as `numeric` they stay exact and parse.
fn measure_value(e: Engine, info: &TableInfo, column: &str) -> String {
    let quoted = e.quote_ident(column);
    let is_money = info
        .column(column)
        .is_some_and(|c| c.data_type.eq_ignore_ascii_case("money"));
    match e {
        Engine::Postgres if is_money => format!("CAST({quoted} AS numeric)"),
        _ => quoted,
    }
}

/// The statements of one scan and how to read their columns.
pub struct ScanQueries {
    pub duplicates: WarehouseSql,
    pub totals: WarehouseSql,
    /// Per measure: the terms of exact, least and most overcount in `duplicates`.
    overcount_weights: Vec<[Vec<Decimal>; 3]>,
    /// Per measure: the terms of the total in `totals`.
    total_weights: Vec<Vec<Decimal>>,
    /// The overcount range was not computed: figures are complete only without conflicting
    /// groups (see [`ScanSpec::exact_only`]).
    pub exact_only: bool,
}

/// The scan statements. Aliases all start with `nk_` so no column name can collide with them.
pub fn scan_queries(spec: &ScanSpec) -> ScanQueries {
    let e = spec.engine;
    let q = |c: &str| e.quote_ident(c);
    let table = e.qualified(&spec.info.table);
    let key: Vec<String> = spec.key.iter().map(|k| q(k)).collect();

    // Rows come from a subquery that reads only the columns the scan uses, adds NULL masks
    // (62 nullable columns per BIGINT mask) and, on PostgreSQL, sorts by the key.
    let nullable: Vec<&Compared> = spec.compared.iter().filter(|c| c.nullable).collect();
    let masks: Vec<String> = nullable
        .chunks(62)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    format!(
                        "CASE WHEN {} IS NULL THEN {} ELSE 0 END",
                        q(c.name),
                        1_i64 << i
                    )
                })
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect();
    let mut read: Vec<&str> = Vec::new();
    for c in spec
        .key
        .iter()
        .map(String::as_str)
        .chain(spec.compared.iter().map(|c| c.name))
        .chain(spec.measures.iter().map(String::as_str))
        .chain(spec.day_column)
    {
        if !read.contains(&c) {
            read.push(c);
        }
    }
    let mut read: Vec<String> = read.into_iter().map(&q).collect();
    read.extend(
        masks
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{m} AS nk_nulls{i}")),
    );
    let order = match e {
        Engine::Postgres => format!(" ORDER BY {}", key.join(", ")),
        Engine::MySql | Engine::Sqlite => String::new(),
    };
    let source = format!("(SELECT {} FROM {table}{order}) nk_t", read.join(", "));
    let exact_only = spec.exact_only && e == Engine::Postgres;

    let mut inner: Vec<String> = Vec::new();
    for (i, k) in key.iter().enumerate() {
        inner.push(format!("{k} AS nk_k{i}"));
    }
    inner.push("COUNT(*) AS nk_n".into());
    inner.push(format!(
        "{} AS nk_c",
        conflict_expr(e, &spec.compared, masks.len())
    ));
    let mut parts_by_measure = Vec::new();
    for (j, m) in spec.measures.iter().enumerate() {
        let value = measure_value(e, spec.info, m);
        let parts = if exact_only {
            Vec::new()
        } else {
            group_sum_parts(e, &value, j)
        };
        for (sql, alias, _) in &parts {
            inner.push(format!("{sql} AS {alias}"));
        }
        inner.push(format!("MIN({value}) AS nk_lo{j}"));
        inner.push(format!("MAX({value}) AS nk_hi{j}"));
        parts_by_measure.push(parts);
    }
    if let Some(d) = spec.day_column {
        inner.push(format!("MIN({}) AS nk_d", q(d)));
    }
    let inner_sql = format!(
        "SELECT {} FROM {source} GROUP BY {} HAVING COUNT(*) > 1",
        inner.join(", "),
        key.join(", ")
    );

    let day = match spec.day_column {
        Some(_) => e.to_day("g.nk_d"),
        None => "NULL".to_string(),
    };
    let key_json = e.json_array(
        &(0..key.len())
            .map(|i| e.key_text(&format!("h.nk_k{i}")))
            .collect::<Vec<_>>(),
    );
    let null_key = (0..key.len())
        .map(|i| format!("h.nk_k{i} IS NULL"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let mut outer: Vec<String> = vec![
        "h.nk_day".into(),
        "COUNT(*)".into(),
        "SUM(h.nk_n)".into(),
        "SUM(CASE WHEN h.nk_c = 0 THEN 1 ELSE 0 END)".into(),
        format!("SUM(CASE WHEN {null_key} THEN 1 ELSE 0 END)"),
        format!("MIN(CASE WHEN h.nk_c > 0 THEN {key_json} END)"),
        format!("MAX(CASE WHEN h.nk_c > 0 THEN {key_json} END)"),
        format!("MIN({key_json})"),
        format!("MAX({key_json})"),
    ];
    let mut overcount_weights = Vec::new();
    for (j, parts) in parts_by_measure.iter().enumerate() {
        let (lo, hi) = (format!("nk_lo{j}"), format!("nk_hi{j}"));
        if exact_only {
            // Every copy of an exact group holds the same value: n − 1 of them are excess.
            let exact = sum_terms(
                e,
                &format!(
                    "CASE WHEN h.nk_c = 0 THEN (h.nk_n - 1) * CAST(h.{lo} AS numeric) ELSE 0 END"
                ),
                Decimal::ONE,
            );
            overcount_weights.push([exact.iter().map(|t| t.weight).collect(), vec![], vec![]]);
            outer.extend(exact.into_iter().map(|t| t.sql));
            continue;
        }
        // Exact groups: every copy holds the same value, so the excess is the sum minus one.
        let exact = group_sum_terms(e, parts, "h.nk_c = 0", Some(&lo));
        // The least a cleanup can remove keeps each group's largest value; the most, its smallest.
        let least = group_sum_terms(e, parts, "1 = 1", Some(&hi));
        let most = group_sum_terms(e, parts, "1 = 1", Some(&lo));
        let weights = [&exact, &least, &most].map(|t| t.iter().map(|t| t.weight).collect());
        for t in exact.into_iter().chain(least).chain(most) {
            outer.push(t.sql);
        }
        overcount_weights.push(weights);
    }
    let outer: Vec<String> = outer.iter().map(|x| e.to_text(x)).collect();
    let duplicates = WarehouseSql::new(format!(
        "SELECT {} FROM (SELECT {day} AS nk_day, g.* FROM ({inner_sql}) g) h GROUP BY h.nk_day",
        outer.join(", ")
    ));

    let row_day = spec
        .day_column
        .map(|d| e.to_day(&q(d)))
        .unwrap_or_else(|| "NULL".into());
    let mut totals: Vec<String> = vec![e.to_text("nk_r.nk_day"), e.to_text("COUNT(*)")];
    let mut total_weights = Vec::new();
    for m in spec.measures {
        let terms = sum_terms(e, &format!("nk_r.{}", q(m)), Decimal::ONE);
        total_weights.push(terms.iter().map(|t| t.weight).collect());
        totals.extend(terms.into_iter().map(|t| e.to_text(&t.sql)));
    }
    let measure_cols: String = spec
        .measures
        .iter()
        .map(|m| format!(", {} AS {}", measure_value(e, spec.info, m), q(m)))
        .collect();
    let totals = WarehouseSql::new(format!(
        "SELECT {} FROM (SELECT {row_day} AS nk_day{measure_cols} FROM {table}) nk_r \
         GROUP BY nk_r.nk_day",
        totals.join(", ")
    ));
    ScanQueries {
        duplicates,
        totals,
        overcount_weights,
        total_weights,
        exact_only,
    }
}

/// 1 when the rows of a group differ in a compared column (a differing value, or NULL in some
/// rows only: the NULL mask differs), else 0.
fn conflict_expr(e: Engine, compared: &[Compared], masks: usize) -> String {
    let mut conditions: Vec<String> = compared
        .iter()
        .map(|c| {
            let col = e.quote_ident(c.name);
            let v = match (e, c.kind) {
                // PostgreSQL has no MIN/MAX for uuid, boolean or json: compare their text.
                (Engine::Postgres, ColumnKind::Uuid | ColumnKind::Boolean | ColumnKind::Other) => {
                    e.to_text(&col)
                }
                // MySQL compares strings under their collation, where 'Hello' = 'hello' and
                // 'a ' = 'a': rows differing so are not copies. Compare the bytes.
                (Engine::MySql, ColumnKind::Text | ColumnKind::Uuid | ColumnKind::Other) => {
                    e.exact_order(&col)
                }
                _ => col,
            };
            format!("MIN({v}) <> MAX({v})")
        })
        .collect();
    conditions.extend((0..masks).map(|i| format!("MIN(nk_nulls{i}) <> MAX(nk_nulls{i})")));
    if conditions.is_empty() {
        return "0".into();
    }
    format!("CASE WHEN {} THEN 1 ELSE 0 END", conditions.join(" OR "))
}

/// A problem turning the warehouse's text into figures.
#[derive(Debug, thiserror::Error)]
#[error("reading the scan result: {0}")]
pub struct FigureError(String);

fn decimal(text: Option<&String>) -> Result<Decimal, FigureError> {
    match text {
        None => Ok(Decimal::ZERO),
        Some(t) => t
            .parse::<Decimal>()
            .or_else(|_| Decimal::from_scientific(t))
            .map_err(|e| FigureError(format!("{t:?} is not an exact number ({e})"))),
    }
}

fn integer(text: Option<&String>) -> Result<i64, FigureError> {
    use rust_decimal::prelude::ToPrimitive;
    let d = decimal(text)?;
    d.to_i64()
        .filter(|_| d.fract().is_zero())
        .ok_or_else(|| FigureError(format!("{d} is not a count")))
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal, FigureError> {
    a.checked_add(b)
        .ok_or_else(|| FigureError("a sum exceeds 28 significant digits".into()))
}

/// Reads `weights.len()` columns from `row` at `*at` and combines them: Σ weight × value.
fn combine(row: &TextRow, at: &mut usize, weights: &[Decimal]) -> Result<Decimal, FigureError> {
    let mut value = Decimal::ZERO;
    for w in weights {
        let part = decimal(row.get(*at).and_then(Option::as_ref))?;
        let weighted = part
            .checked_mul(*w)
            .ok_or_else(|| FigureError("a sum exceeds 28 significant digits".into()))?;
        value = add(value, weighted)?;
        *at += 1;
    }
    Ok(value)
}

/// Folds the per-day rows of both scan statements into table figures.
pub fn parse_scan(
    queries: &ScanQueries,
    duplicate_rows: &[TextRow],
    total_rows: &[TextRow],
    measures: &[String],
) -> Result<ScanFigures, FigureError> {
    let zero = || Amount::default();
    let mut figures = ScanFigures {
        measures: measures
            .iter()
            .map(|m| MeasureFigures {
                column: m.clone(),
                total: zero(),
                overcount: zero(),
                overcount_min: zero(),
                overcount_max: zero(),
                overcount_survivor: None,
            })
            .collect(),
        ..ScanFigures::default()
    };
    let mut rows_by_day: std::collections::HashMap<Option<String>, i64> = Default::default();
    for row in total_rows {
        let rows = integer(row.get(1).and_then(Option::as_ref))?;
        figures.rows += rows;
        *rows_by_day
            .entry(row.first().cloned().flatten())
            .or_default() += rows;
        let mut at = 2;
        for (m, weights) in figures.measures.iter_mut().zip(&queries.total_weights) {
            m.total = Amount(add(m.total.0, combine(row, &mut at, weights)?)?);
        }
    }

    let mut conflicting_keys: Vec<(i64, String)> = Vec::new();
    let mut duplicate_keys: Vec<(i64, String)> = Vec::new();
    for row in duplicate_rows {
        let cell = |i: usize| row.get(i).and_then(Option::as_ref);
        let duplicate_groups = integer(cell(1))?;
        let rows_in_duplicates = integer(cell(2))?;
        figures.duplicate_groups += duplicate_groups;
        figures.rows_in_duplicate_groups += rows_in_duplicates;
        figures.exact_groups += integer(cell(3))?;
        figures.null_key_groups += integer(cell(4))?;
        let excess = rows_in_duplicates - duplicate_groups;
        for i in [5, 6] {
            if let Some(k) = cell(i) {
                conflicting_keys.push((excess, k.clone()));
            }
        }
        for i in [7, 8] {
            if let Some(k) = cell(i) {
                duplicate_keys.push((excess, k.clone()));
            }
        }
        let mut at = 9;
        let mut day_measures = Vec::new();
        for (m, [exact_w, least_w, most_w]) in
            figures.measures.iter_mut().zip(&queries.overcount_weights)
        {
            let exact = combine(row, &mut at, exact_w)?;
            let (low, high) = if queries.exact_only {
                (exact, exact)
            } else {
                (
                    combine(row, &mut at, least_w)?,
                    combine(row, &mut at, most_w)?,
                )
            };
            m.overcount = Amount(add(m.overcount.0, exact)?);
            m.overcount_min = Amount(add(m.overcount_min.0, low)?);
            m.overcount_max = Amount(add(m.overcount_max.0, high)?);
            day_measures.push(DayMeasure {
                column: m.column.clone(),
                overcount: Amount(exact),
                overcount_min: Amount(low),
                overcount_max: Amount(high),
            });
        }
        if duplicate_groups > 0
            && let Some(day) = cell(0)
        {
            figures.by_day.push(DayFigures {
                day: day.clone(),
                rows: rows_by_day.get(&Some(day.clone())).copied().unwrap_or(0),
                duplicate_groups,
                excess_rows: excess,
                measures: day_measures,
            });
        }
    }
    figures.by_day.sort_by(|a, b| a.day.cmp(&b.day));
    // Sample the worst days first, conflicting groups before exact ones.
    for keys in [&mut conflicting_keys, &mut duplicate_keys] {
        keys.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    // A conflicting group that is the least or greatest key of its day is also the least or
    // greatest conflicting key of that day, so `conflicting_keys` names every conflicting one.
    figures.conflicting_sample_keys = conflicting_keys.iter().map(|(_, k)| k.clone()).collect();
    for (_, key) in conflicting_keys.into_iter().chain(duplicate_keys) {
        if !figures.sample_keys.contains(&key) {
            figures.sample_keys.push(key);
        }
    }
    Ok(figures)
}

/// The overcount of each measure if the survivor rule picks the row to keep: the sum of every
/// other row of each duplicate group.
pub fn survivor_sql(
    engine: Engine,
    info: &TableInfo,
    key: &[String],
    measures: &[String],
    rule: &SurvivorRule,
    surrogate_key: &[String],
) -> Option<SurvivorQuery> {
    let q = |c: &str| engine.quote_ident(c);
    let nulls_last = |c: &str| format!("CASE WHEN {} IS NULL THEN 1 ELSE 0 END", q(c));
    let mut order: Vec<String> = match rule {
        SurvivorRule::Latest(c) => vec![nulls_last(c), format!("{} DESC", q(c))],
        SurvivorRule::Earliest(c) => vec![nulls_last(c), format!("{} ASC", q(c))],
        SurvivorRule::LowestSurrogate => {
            if surrogate_key.is_empty() {
                return None;
            }
            Vec::new()
        }
    };
    // Ties are broken by the surrogate key, as the plan's cleanup does.
    order.extend(surrogate_key.iter().map(|s| format!("{} ASC", q(s))));
    let values: Vec<String> = measures
        .iter()
        .enumerate()
        .map(|(j, m)| format!("{} AS nk_m{j}", measure_value(engine, info, m)))
        .collect();
    let mut sums = Vec::new();
    let mut weights = Vec::new();
    for j in 0..measures.len() {
        let terms = sum_terms(engine, &format!("x.nk_m{j}"), Decimal::ONE);
        weights.push(terms.iter().map(|t| t.weight).collect());
        sums.extend(terms.into_iter().map(|t| engine.to_text(&t.sql)));
    }
    let partition: Vec<String> = key.iter().map(|k| q(k)).collect();
    Some(SurvivorQuery {
        sql: WarehouseSql::new(format!(
            "SELECT {} FROM (SELECT {}, ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {}) AS nk_rn \
             FROM {}) x WHERE x.nk_rn > 1",
            sums.join(", "),
            values.join(", "),
            partition.join(", "),
            order.join(", "),
            engine.qualified(&info.table),
        )),
        weights,
    })
}

/// The survivor-overcount statement and how to read it.
pub struct SurvivorQuery {
    pub sql: WarehouseSql,
    weights: Vec<Vec<Decimal>>,
}

impl SurvivorQuery {
    /// The overcount of each measure under the survivor rule.
    pub fn parse(&self, rows: &[TextRow]) -> Result<Vec<Amount>, FigureError> {
        let empty = Vec::new();
        let row = rows.first().unwrap_or(&empty);
        let mut at = 0;
        self.weights
            .iter()
            .map(|w| combine(row, &mut at, w).map(Amount))
            .collect()
    }
}

/// The statement that fetches the rows of the sampled duplicate groups, and its binds.
pub struct SamplesQuery {
    pub sql: WarehouseSql,
    pub binds: Vec<Option<String>>,
}

/// The rows of the sampled duplicate groups (`keys`: JSON arrays from the scan), every column as
/// text, each row tagged with the index of its group in `keys` (its first column).
///
/// At most `per_group` rows per group, so one big group (a thousand rows with a NULL key) cannot
/// crowd out the others: the first and the last rows of the group in an exact order of the
/// `compared` columns ([`Engine::exact_order`]). When the rows of a group differ, its least and
/// greatest rows differ too, so the sample shows what conflicts.
///
/// ```sql
/// SELECT nk_g, nk_c0, ... FROM (
///   SELECT nk_s.*, ROW_NUMBER() OVER (PARTITION BY nk_g ORDER BY nk_o0, ...) AS nk_up,
///          ROW_NUMBER() OVER (PARTITION BY nk_g ORDER BY nk_o0 DESC, ...) AS nk_down
///   FROM (SELECT CASE WHEN <key 0> THEN 0 WHEN <key 1> THEN 1 ... END AS nk_g,
///                <exact order of compared columns> AS nk_o0, ..., <columns as text> AS nk_c0, ...
///         FROM table WHERE <key 0> OR <key 1> ...) nk_s) nk_w
/// WHERE nk_up <= half OR nk_down <= half ORDER BY nk_g, nk_up
/// ```
pub fn samples_query(
    engine: Engine,
    info: &TableInfo,
    key: &[String],
    compared: &[String],
    keys: &[String],
    per_group: usize,
) -> SamplesQuery {
    let q = |c: &str| engine.quote_ident(c);
    let values: Vec<Vec<Option<String>>> = keys.iter().map(|k| key_values(k)).collect();
    let mut binds = Vec::new();
    // The conditions appear twice (the CASE and the WHERE), each with its own binds.
    let conditions = |binds: &mut Vec<Option<String>>| -> Vec<String> {
        values
            .iter()
            .map(|group| {
                let parts: Vec<String> = key
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        binds.push(group.get(i).cloned().flatten());
                        let column = info.column(k);
                        engine.key_part_eq(
                            &q(k),
                            column.map_or("text", |c| c.data_type.as_str()),
                            column.map_or(ColumnKind::Text, |c| c.kind),
                            &engine.placeholder(binds.len()),
                        )
                    })
                    .collect();
                format!("({})", parts.join(" AND "))
            })
            .collect()
    };
    let tags: Vec<String> = conditions(&mut binds)
        .into_iter()
        .enumerate()
        .map(|(g, c)| format!("WHEN {c} THEN {g}"))
        .collect();
    let filter = conditions(&mut binds).join(" OR ");
    let mut inner = vec![format!("CASE {} END AS nk_g", tags.join(" "))];
    inner.extend(
        compared
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} AS nk_o{i}", engine.exact_order(&q(c)))),
    );
    inner.extend(
        info.columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} AS nk_c{i}", engine.to_text(&q(&c.name)))),
    );
    let order = |dir: &str| -> String {
        let list: Vec<String> = (0..compared.len())
            .map(|i| format!("nk_s.nk_o{i}{dir}"))
            .collect();
        if list.is_empty() {
            String::new()
        } else {
            format!(" ORDER BY {}", list.join(", "))
        }
    };
    let keep = if compared.is_empty() {
        format!("nk_w.nk_up <= {per_group}")
    } else {
        let first = per_group.div_ceil(2);
        format!(
            "nk_w.nk_up <= {first} OR nk_w.nk_down <= {}",
            per_group - first
        )
    };
    let columns: String = (0..info.columns.len())
        .map(|i| format!(", nk_w.nk_c{i}"))
        .collect();
    let sql = WarehouseSql::new(format!(
        "SELECT {}{columns} FROM (\
         SELECT nk_s.*, \
         ROW_NUMBER() OVER (PARTITION BY nk_s.nk_g{}) AS nk_up, \
         ROW_NUMBER() OVER (PARTITION BY nk_s.nk_g{}) AS nk_down \
         FROM (SELECT {} FROM {} WHERE {filter}) nk_s) nk_w \
         WHERE {keep} ORDER BY nk_w.nk_g, nk_w.nk_up",
        engine.to_text("nk_w.nk_g"),
        order(""),
        order(" DESC"),
        inner.join(", "),
        engine.qualified(&info.table),
    ));
    SamplesQuery { sql, binds }
}

/// The parts of a JSON key array from the scan: text, or NULL.
pub fn key_values(key: &str) -> Vec<Option<String>> {
    let values: Vec<serde_json::Value> = serde_json::from_str(key).unwrap_or_default();
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::{Column, TableRef, kind_of};

    fn info() -> TableInfo {
        TableInfo {
            table: TableRef::new("sales", r#"Weird "T""#),
            columns: ["order_id", "amount"]
                .iter()
                .map(|n| Column {
                    name: n.to_string(),
                    data_type: "bigint".into(),
                    kind: kind_of("bigint"),
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

    fn queries(engine: Engine) -> ScanQueries {
        let info = info();
        let key = vec!["order_id".to_string()];
        let measures = vec!["amount".to_string()];
        scan_queries(&ScanSpec {
            engine,
            info: &info,
            key: &key,
            compared: vec![Compared {
                name: "amount",
                kind: ColumnKind::Integer,
                nullable: true,
            }],
            measures: &measures,
            day_column: None,
            exact_only: false,
        })
    }

    #[test]
    fn the_scan_quotes_every_identifier() {
        let q = queries(Engine::Postgres);
        assert!(
            q.duplicates
                .as_str()
                .contains(r#"FROM "sales"."Weird ""T""" ORDER BY "order_id""#)
        );
        assert!(q.totals.as_str().contains(r#"FROM "sales"."Weird ""T""""#));
    }

    fn t(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn per_day_rows_fold_into_exact_table_figures() {
        let q = queries(Engine::Postgres);
        // day, dup groups, rows in dups, exact, null-key, 4 sample keys, exact/least/most
        let duplicates = vec![vec![
            t("2026-11-01"),
            t("2"),
            t("4"),
            t("2"),
            t("0"),
            None,
            None,
            t("[1]"),
            t("[2]"),
            t("20.25"),
            t("20.25"),
            t("20.25"),
        ]];
        let totals = vec![
            vec![t("2026-11-01"), t("12"), t("100.50")],
            vec![t("2026-11-02"), t("5"), t("10")],
        ];
        let f = parse_scan(&q, &duplicates, &totals, &["amount".to_string()]).expect("parses");
        assert_eq!((f.rows, f.duplicate_groups, f.excess_rows()), (17, 2, 2));
        assert_eq!(f.measures[0].total.0.to_string(), "110.50");
        assert_eq!(f.measures[0].overcount.0.to_string(), "20.25");
        assert_eq!(f.by_day.len(), 1);
        assert_eq!(f.by_day[0].rows, 12);
        assert_eq!(f.sample_keys, ["[1]", "[2]"]);
    }

    #[test]
    fn sqlite_sums_recombine_split_parts_exactly() {
        let q = queries(Engine::Sqlite);
        // 3 × 9e18 = 2.7e19 cannot be an i64; its parts are 9e18 / 2^32 and 9e18 % 2^32, ×3.
        let v: i128 = 9_000_000_000_000_000_000;
        let (hi, lo) = (3 * (v / (1 << 32)), 3 * (v % (1 << 32)));
        let totals = vec![vec![None, t("3"), t(&hi.to_string()), t(&lo.to_string())]];
        let f = parse_scan(&q, &[], &totals, &["amount".to_string()]).expect("parses");
        assert_eq!(f.measures[0].total.0.to_string(), "27000000000000000000");
    }

    #[test]
    fn sample_keys_become_text_binds_with_every_digit() {
        assert_eq!(
            key_values(r#"["1001", "a", null, "12345678901234567890.123"]"#),
            vec![
                Some("1001".into()),
                Some("a".into()),
                None,
                Some("12345678901234567890.123".into())
            ]
        );
    }

    #[test]
    fn the_samples_query_caps_rows_per_group_and_binds_each_key_twice() {
        let info = info();
        let key = vec!["order_id".to_string()];
        let compared = vec!["amount".to_string()];
        let keys = vec![r#"["1"]"#.to_string(), "[null]".to_string()];
        let q = samples_query(Engine::Postgres, &info, &key, &compared, &keys, 10);
        assert_eq!(
            q.binds,
            vec![Some("1".into()), None, Some("1".into()), None]
        );
        let sql = q.sql.as_str();
        assert!(
            sql.contains("PARTITION BY nk_s.nk_g ORDER BY nk_s.nk_o0 DESC"),
            "{sql}"
        );
        assert!(
            sql.contains("nk_w.nk_up <= 5 OR nk_w.nk_down <= 5"),
            "{sql}"
        );
        assert!(
            sql.contains(r#""order_id" IS NOT DISTINCT FROM CAST($4 AS bigint)"#),
            "{sql}"
        );
    }
}
