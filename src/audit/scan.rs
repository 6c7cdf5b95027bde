//! The duplicate scan: one GROUP BY on the natural key per table, pushed down to the warehouse,
//! and the two small follow-up queries (survivor overcount, sample groups).
//!
//! Shape of the scan (every output cast to text):
//!
//! ```sql
//! SELECT day, COUNT(*), SUM(n), <duplicate/exact/NULL-key group counts>, <per measure: total,
//!        exact overcount, min and max overcount>, <sample keys as JSON arrays>
//! FROM (SELECT day(g.d) AS day, g.* FROM (
//!         SELECT key..., COUNT(*) AS n, <payload differs?> AS c,
//!                SUM(m), MIN(m), MAX(m) per measure, MIN(day column) AS d
//!         FROM table GROUP BY key...) g) h
//! GROUP BY day
//! ```
//!
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
    pub compared: Vec<(&'a str, ColumnKind)>,
    pub measures: &'a [String],
    pub day_column: Option<&'a str>,
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
    /// JSON arrays of key values of some duplicate groups, conflicting ones first.
    pub sample_keys: Vec<String>,
}

impl ScanFigures {
    pub fn excess_rows(&self) -> i64 {
        self.rows_in_duplicate_groups - self.duplicate_groups
    }

    pub fn conflicting_groups(&self) -> i64 {
        self.duplicate_groups - self.exact_groups
    }
}

fn group_measure_cols(j: usize) -> (String, String, String) {
    (format!("nk_s{j}"), format!("nk_lo{j}"), format!("nk_hi{j}"))
}

/// The scan statement. Aliases all start with `nk_` so no column name can collide with them.
pub fn scan_sql(spec: &ScanSpec) -> WarehouseSql {
    let e = spec.engine;
    let q = |c: &str| e.quote_ident(c);
    let table = e.qualified(&spec.info.table);

    let mut inner: Vec<String> = Vec::new();
    for (i, k) in spec.key.iter().enumerate() {
        inner.push(format!("{} AS nk_k{i}", q(k)));
    }
    inner.push("COUNT(*) AS nk_n".into());
    inner.push(format!("{} AS nk_c", conflict_expr(e, &spec.compared)));
    for (j, m) in spec.measures.iter().enumerate() {
        let (s, lo, hi) = group_measure_cols(j);
        inner.push(format!("SUM({m}) AS {s}", m = q(m)));
        inner.push(format!("MIN({m}) AS {lo}", m = q(m)));
        inner.push(format!("MAX({m}) AS {hi}", m = q(m)));
    }
    if let Some(d) = spec.day_column {
        inner.push(format!("MIN({}) AS nk_d", q(d)));
    }
    let group_by: Vec<String> = spec.key.iter().map(|k| q(k)).collect();
    let inner_sql = format!(
        "SELECT {} FROM {table} GROUP BY {}",
        inner.join(", "),
        group_by.join(", ")
    );

    let day = match spec.day_column {
        Some(_) => e.to_day("g.nk_d"),
        None => "NULL".to_string(),
    };
    let dup = "h.nk_n > 1";
    let key_json = e.json_array(
        &(0..spec.key.len())
            .map(|i| format!("h.nk_k{i}"))
            .collect::<Vec<_>>(),
    );
    let null_key = (0..spec.key.len())
        .map(|i| format!("h.nk_k{i} IS NULL"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let mut outer: Vec<String> = vec![
        "h.nk_day".into(),
        "COUNT(*)".into(),
        "SUM(h.nk_n)".into(),
        format!("SUM(CASE WHEN {dup} THEN 1 ELSE 0 END)"),
        format!("SUM(CASE WHEN {dup} THEN h.nk_n ELSE 0 END)"),
        format!("SUM(CASE WHEN {dup} AND h.nk_c = 0 THEN 1 ELSE 0 END)"),
        format!("SUM(CASE WHEN {dup} AND ({null_key}) THEN 1 ELSE 0 END)"),
        format!("MIN(CASE WHEN {dup} AND h.nk_c > 0 THEN {key_json} END)"),
        format!("MAX(CASE WHEN {dup} AND h.nk_c > 0 THEN {key_json} END)"),
        format!("MIN(CASE WHEN {dup} THEN {key_json} END)"),
        format!("MAX(CASE WHEN {dup} THEN {key_json} END)"),
    ];
    for j in 0..spec.measures.len() {
        let (s, lo, hi) = group_measure_cols(j);
        outer.push(format!("SUM(h.{s})"));
        // Exact groups: every copy holds the same value, so the excess is the sum minus one.
        outer.push(format!(
            "SUM(CASE WHEN {dup} AND h.nk_c = 0 THEN h.{s} - h.{lo} ELSE 0 END)"
        ));
        // The least a cleanup can remove keeps each group's largest value; the most, its smallest.
        outer.push(format!(
            "SUM(CASE WHEN {dup} THEN h.{s} - h.{hi} ELSE 0 END)"
        ));
        outer.push(format!(
            "SUM(CASE WHEN {dup} THEN h.{s} - h.{lo} ELSE 0 END)"
        ));
    }
    let outer: Vec<String> = outer.iter().map(|x| e.to_text(x)).collect();
    WarehouseSql::new(format!(
        "SELECT {} FROM (SELECT {day} AS nk_day, g.* FROM ({inner_sql}) g) h GROUP BY h.nk_day",
        outer.join(", ")
    ))
}

/// 1 when the rows of a group differ in a compared column (a differing value, or NULL in some
/// rows only), else 0.
fn conflict_expr(e: Engine, compared: &[(&str, ColumnKind)]) -> String {
    if compared.is_empty() {
        return "0".into();
    }
    let conditions: Vec<String> = compared
        .iter()
        .map(|(name, kind)| {
            let col = e.quote_ident(name);
            // PostgreSQL has no MIN/MAX for uuid, boolean or json: compare their text.
            let v = match (e, kind) {
                (Engine::Postgres, ColumnKind::Uuid | ColumnKind::Boolean | ColumnKind::Other) => {
                    e.to_text(&col)
                }
                _ => col.clone(),
            };
            format!("MIN({v}) <> MAX({v}) OR COUNT({col}) NOT IN (0, COUNT(*))")
        })
        .collect();
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

/// Folds the per-day rows of [`scan_sql`] into table figures.
pub fn parse_scan(rows: &[TextRow], measures: &[String]) -> Result<ScanFigures, FigureError> {
    let mut figures = ScanFigures {
        measures: measures
            .iter()
            .map(|m| MeasureFigures {
                column: m.clone(),
                total: Amount::default(),
                overcount: Amount::default(),
                overcount_min: Amount::default(),
                overcount_max: Amount::default(),
                overcount_survivor: None,
            })
            .collect(),
        ..ScanFigures::default()
    };
    let mut conflicting_keys: Vec<(i64, String)> = Vec::new();
    let mut duplicate_keys: Vec<(i64, String)> = Vec::new();
    for row in rows {
        let cell = |i: usize| row.get(i).and_then(Option::as_ref);
        let rows_of_day = integer(cell(2))?;
        let duplicate_groups = integer(cell(3))?;
        let rows_in_duplicates = integer(cell(4))?;
        figures.rows += rows_of_day;
        figures.duplicate_groups += duplicate_groups;
        figures.rows_in_duplicate_groups += rows_in_duplicates;
        figures.exact_groups += integer(cell(5))?;
        figures.null_key_groups += integer(cell(6))?;
        let excess = rows_in_duplicates - duplicate_groups;
        for i in [7, 8] {
            if let Some(k) = cell(i) {
                conflicting_keys.push((excess, k.clone()));
            }
        }
        for i in [9, 10] {
            if let Some(k) = cell(i) {
                duplicate_keys.push((excess, k.clone()));
            }
        }
        let mut day_measures = Vec::new();
        for (j, m) in figures.measures.iter_mut().enumerate() {
            let base = 11 + 4 * j;
            let exact = decimal(cell(base + 1))?;
            let low = decimal(cell(base + 2))?;
            let high = decimal(cell(base + 3))?;
            m.total = Amount(add(m.total.0, decimal(cell(base))?)?);
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
                rows: rows_of_day,
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
) -> Option<WarehouseSql> {
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
        .map(|(j, m)| format!("{} AS nk_m{j}", q(m)))
        .collect();
    let sums: Vec<String> = (0..measures.len())
        .map(|j| engine.to_text(&format!("SUM(x.nk_m{j})")))
        .collect();
    let partition: Vec<String> = key.iter().map(|k| q(k)).collect();
    Some(WarehouseSql::new(format!(
        "SELECT {} FROM (SELECT {}, ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {}) AS nk_rn \
         FROM {}) x WHERE x.nk_rn > 1",
        sums.join(", "),
        values.join(", "),
        partition.join(", "),
        order.join(", "),
        engine.qualified(&info.table),
    )))
}

pub fn parse_survivor(rows: &[TextRow], count: usize) -> Result<Vec<Amount>, FigureError> {
    let row = rows.first();
    (0..count)
        .map(|j| decimal(row.and_then(|r| r.get(j)).and_then(Option::as_ref)).map(Amount))
        .collect()
}

/// The rows of the sampled duplicate groups: every column as text, plus the key as the same
/// JSON text the scan produced, to group them by.
pub fn samples_sql(
    engine: Engine,
    info: &TableInfo,
    key: &[String],
    groups: usize,
    limit: usize,
) -> WarehouseSql {
    let q = |c: &str| engine.quote_ident(c);
    let key_cols: Vec<String> = key.iter().map(|k| q(k)).collect();
    let mut n = 0;
    let conditions: Vec<String> = (0..groups)
        .map(|_| {
            let parts: Vec<String> = key
                .iter()
                .map(|k| {
                    n += 1;
                    let data_type = info
                        .column(k)
                        .map(|c| c.data_type.replace(" /* generated */", ""))
                        .unwrap_or_else(|| "text".into());
                    engine.null_safe_eq(&q(k), &data_type, &engine.placeholder(n))
                })
                .collect();
            format!("({})", parts.join(" AND "))
        })
        .collect();
    let columns: Vec<String> = info
        .columns
        .iter()
        .map(|c| engine.to_text(&q(&c.name)))
        .collect();
    WarehouseSql::new(format!(
        "SELECT {}, {} FROM {} WHERE {} LIMIT {limit}",
        engine.json_array(&key_cols),
        columns.join(", "),
        engine.qualified(&info.table),
        conditions.join(" OR "),
    ))
}

/// The bind values for [`samples_sql`]: each JSON key array flattened to text values.
pub fn sample_binds(keys: &[String]) -> Vec<Option<String>> {
    keys.iter()
        .flat_map(|k| {
            let values: Vec<serde_json::Value> = serde_json::from_str(k).unwrap_or_default();
            values.into_iter().map(|v| match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                other => Some(other.to_string()),
            })
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
                })
                .collect(),
            unique_keys: vec![],
            estimated_rows: None,
        }
    }

    #[test]
    fn the_scan_quotes_every_identifier() {
        let info = info();
        let key = vec!["order_id".to_string()];
        let measures = vec!["amount".to_string()];
        let sql = scan_sql(&ScanSpec {
            engine: Engine::Postgres,
            info: &info,
            key: &key,
            compared: vec![("amount", ColumnKind::Integer)],
            measures: &measures,
            day_column: None,
        });
        assert!(
            sql.as_str()
                .contains(r#"FROM "sales"."Weird ""T""" GROUP BY "order_id""#)
        );
    }

    #[test]
    fn per_day_rows_fold_into_exact_table_figures() {
        let t = |s: &str| Some(s.to_string());
        // day, groups, rows, dup groups, rows in dups, exact, null-key, 4 sample keys, measure x4
        let rows = vec![
            vec![
                t("2026-11-01"),
                t("10"),
                t("12"),
                t("2"),
                t("4"),
                t("2"),
                t("0"),
                None,
                None,
                t("[1]"),
                t("[2]"),
                t("100.50"),
                t("20.25"),
                t("20.25"),
                t("20.25"),
            ],
            vec![
                t("2026-11-02"),
                t("5"),
                t("5"),
                t("0"),
                t("0"),
                t("0"),
                t("0"),
                None,
                None,
                None,
                None,
                t("10"),
                t("0"),
                t("0"),
                t("0"),
            ],
        ];
        let f = parse_scan(&rows, &["amount".to_string()]).expect("parses");
        assert_eq!((f.rows, f.duplicate_groups, f.excess_rows()), (17, 2, 2));
        assert_eq!(f.measures[0].total.0.to_string(), "110.50");
        assert_eq!(f.measures[0].overcount.0.to_string(), "20.25");
        assert_eq!(f.by_day.len(), 1);
        assert_eq!(f.sample_keys, ["[1]", "[2]"]);
    }

    #[test]
    fn sample_keys_become_typed_binds() {
        let binds = sample_binds(&[r#"[1001, "a", null, 2.5]"#.to_string()]);
        assert_eq!(
            binds,
            vec![
                Some("1001".into()),
                Some("a".into()),
                None,
                Some("2.5".into())
            ]
        );
    }
}
