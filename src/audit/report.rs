//! The audit report: the JSON contract (`natkey_report: 1`, documented in the README) and its
//! rendering for a terminal.

use std::fmt::Write as _;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config::SurvivorRule;
use crate::keys::NaturalKey;
use crate::warehouse::Engine;

/// The version of the report contract. Fields are only added within a version.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub natkey_report: u32,
    /// The warehouse URL with its password redacted.
    pub warehouse: String,
    pub dialect: Engine,
    /// The server's version (`server_version_num` on PostgreSQL): plans depend on it.
    #[serde(default)]
    pub server_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub summary: Summary,
    /// Worst first: by the largest overcount, then excess rows.
    pub tables: Vec<TableReport>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub tables: usize,
    pub with_duplicates: usize,
    pub excess_rows: i64,
    pub errors: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// At least one duplicate group.
    Duplicates,
    /// Key known, no duplicates, not enforced by the database.
    Clean,
    /// A declared key the database enforces.
    Enforced,
    /// No plausible natural key.
    NoKey,
    /// The audit of this table failed; `message` says why.
    Error,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Duplicates => "duplicates",
            Status::Clean => "clean",
            Status::Enforced => "enforced",
            Status::NoKey => "no key",
            Status::Error => "error",
        }
    }

    /// The name the JSON report uses (`no_key`, ...), also stored and used in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Duplicates => "duplicates",
            Status::Clean => "clean",
            Status::Enforced => "enforced",
            Status::NoKey => "no_key",
            Status::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableReport {
    pub schema: String,
    pub name: String,
    pub status: Status,
    pub message: Option<String>,
    pub rows: Option<i64>,
    /// Every column in table order, as the catalog describes it.
    #[serde(default)]
    pub columns: Vec<ColumnReport>,
    /// A PostgreSQL partitioned table.
    #[serde(default)]
    pub partitioned: bool,
    /// The columns a partitioned table is partitioned by.
    #[serde(default)]
    pub partition_key: Vec<String>,
    pub surrogate_key: Vec<String>,
    pub load_metadata: Vec<String>,
    pub payload: Vec<String>,
    pub natural_key: Option<NaturalKey>,
    pub survivor: Option<SurvivorRule>,
    pub duplicate_groups: Option<i64>,
    pub rows_in_duplicate_groups: Option<i64>,
    pub excess_rows: Option<i64>,
    pub exact_groups: Option<i64>,
    pub conflicting_groups: Option<i64>,
    pub null_key_groups: Option<i64>,
    pub measures: Vec<MeasureFigures>,
    pub day_column: Option<String>,
    pub by_day: Vec<DayFigures>,
    pub samples: Vec<SampleGroup>,
    pub downstream: Vec<String>,
    pub elapsed_ms: u64,
}

impl TableReport {
    /// An empty report for a table, to be filled in.
    pub fn new(schema: &str, name: &str) -> Self {
        TableReport {
            schema: schema.to_string(),
            name: name.to_string(),
            status: Status::Error,
            message: None,
            rows: None,
            columns: Vec::new(),
            partitioned: false,
            partition_key: Vec::new(),
            surrogate_key: Vec::new(),
            load_metadata: Vec::new(),
            payload: Vec::new(),
            natural_key: None,
            survivor: None,
            duplicate_groups: None,
            rows_in_duplicate_groups: None,
            excess_rows: None,
            exact_groups: None,
            conflicting_groups: None,
            null_key_groups: None,
            measures: Vec::new(),
            day_column: None,
            by_day: Vec::new(),
            samples: Vec::new(),
            downstream: Vec::new(),
            elapsed_ms: 0,
        }
    }

    /// The largest overcount of any measure (the worst case over survivor choices).
    pub fn worst_overcount(&self) -> Decimal {
        self.measures
            .iter()
            .map(|m| m.overcount_max.0)
            .max()
            .unwrap_or(Decimal::ZERO)
    }
}

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnReport {
    pub name: String,
    /// The type as the engine spells it (`numeric(12,2)`).
    pub data_type: String,
    pub nullable: bool,
    /// Computed by the database (`GENERATED ALWAYS AS`): never inserted into.
    #[serde(default)]
    pub computed: bool,
}

/// How much one measure's SUM is inflated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureFigures {
    pub column: String,
    /// `SUM(column)` over the whole table.
    pub total: Amount,
    /// Exact groups only: their sum minus one copy.
    pub overcount: Amount,
    /// Every group, keeping the row with the largest value.
    pub overcount_min: Amount,
    /// Every group, keeping the row with the smallest value.
    pub overcount_max: Amount,
    /// Every group, keeping the row the survivor rule keeps; `null` without a rule.
    pub overcount_survivor: Option<Amount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayFigures {
    pub day: String,
    pub rows: i64,
    pub duplicate_groups: i64,
    pub excess_rows: i64,
    pub measures: Vec<DayMeasure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayMeasure {
    pub column: String,
    pub overcount: Amount,
    pub overcount_min: Amount,
    pub overcount_max: Amount,
}

/// One duplicate group with its rows, every value as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleGroup {
    /// Key column -> value as text.
    pub key: serde_json::Map<String, serde_json::Value>,
    /// The rows have identical payload.
    pub exact: bool,
    pub columns: Vec<String>,
    pub differing_columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// An exact amount. Serialised as a JSON number when it is a whole number that fits in 64 bits,
/// otherwise as a decimal string (`"1234.50"`): never through a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Amount(pub Decimal);

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use rust_decimal::prelude::ToPrimitive;
        match (self.0.scale(), self.0.to_i64()) {
            (0, Some(v)) => s.serialize_i64(v),
            _ => s.collect_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let text = match &value {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => return Err(serde::de::Error::custom(format!("not an amount: {other}"))),
        };
        text.parse::<Decimal>()
            .or_else(|_| Decimal::from_scientific(&text))
            .map(Amount)
            .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Amount {
    /// With thousands separators, for people.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        let (sign, digits) = match text.strip_prefix('-') {
            Some(rest) => ("-", rest),
            None => ("", text.as_str()),
        };
        let (int, frac) = match digits.split_once('.') {
            Some((i, fr)) => (i, Some(fr)),
            None => (digits, None),
        };
        f.write_str(sign)?;
        f.write_str(&group_thousands(int))?;
        if let Some(frac) = frac {
            write!(f, ".{frac}")?;
        }
        Ok(())
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn count(n: Option<i64>) -> String {
    match n {
        Some(n) if n < 0 => format!("-{}", group_thousands(&n.unsigned_abs().to_string())),
        Some(n) => group_thousands(&n.to_string()),
        None => "-".to_string(),
    }
}

/// Catalog names are data: strip control characters so a name cannot drive the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The report as a table for a terminal, worst table first, with the incident days of each
/// table that double-counts.
pub fn render_text(report: &Report) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "TABLE".into(),
        "STATUS".into(),
        "NATURAL KEY".into(),
        "ROWS".into(),
        "DUP GROUPS".into(),
        "EXCESS ROWS".into(),
        "OVERCOUNT".into(),
    ]];
    for t in &report.tables {
        let key = match &t.natural_key {
            Some(k) => format!("({}) {}", k.columns.join(", "), k.source.as_str()),
            None => "-".into(),
        };
        let overcount = t
            .measures
            .iter()
            .filter(|m| m.overcount_max.0 > Decimal::ZERO)
            .max_by_key(|m| m.overcount_max)
            .map(|m| {
                if m.overcount_min == m.overcount_max {
                    format!("{} +{}", m.column, m.overcount_max)
                } else {
                    format!("{} +{}..{}", m.column, m.overcount_min, m.overcount_max)
                }
            })
            .unwrap_or_else(|| "-".into());
        rows.push([
            printable(&format!("{}.{}", t.schema, t.name)),
            t.status.label().into(),
            printable(&key),
            count(t.rows),
            count(t.duplicate_groups),
            count(t.excess_rows),
            printable(&overcount),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "natkey audit of {} ({} tables, {} with duplicates, {} excess rows)\n",
        printable(&report.warehouse),
        report.summary.tables,
        report.summary.with_duplicates,
        count(Some(report.summary.excess_rows)),
    );
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            // Text columns align left, figures right.
            if (3..6).contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for t in &report.tables {
        if let Some(message) = &t.message {
            let _ = writeln!(
                out,
                "\n{}.{} ({}): {}",
                printable(&t.schema),
                printable(&t.name),
                t.status.label(),
                printable(message)
            );
        }
        if t.status != Status::Duplicates || t.by_day.is_empty() {
            continue;
        }
        let mut days = t.by_day.clone();
        days.sort_by(|a, b| b.excess_rows.cmp(&a.excess_rows).then(a.day.cmp(&b.day)));
        let worst: Vec<String> = days
            .iter()
            .take(5)
            .map(|d| format!("{} (+{} rows)", d.day, count(Some(d.excess_rows))))
            .collect();
        let _ = writeln!(
            out,
            "\n{}.{}: duplicates on {} day(s) of {}; worst: {}",
            printable(&t.schema),
            printable(&t.name),
            t.by_day.len(),
            printable(t.day_column.as_deref().unwrap_or("?")),
            worst.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_stay_exact_in_json() {
        let whole = Amount("188640000".parse().expect("decimal"));
        let cents = Amount("1234.50".parse().expect("decimal"));
        let huge = Amount("123456789012345678901234".parse().expect("decimal"));
        assert_eq!(
            serde_json::to_string(&whole).ok().as_deref(),
            Some("188640000")
        );
        assert_eq!(
            serde_json::to_string(&cents).ok().as_deref(),
            Some("\"1234.50\"")
        );
        assert_eq!(
            serde_json::to_string(&huge).ok().as_deref(),
            Some("\"123456789012345678901234\"")
        );
        let back: Amount = serde_json::from_str("\"1234.50\"").expect("parses");
        assert_eq!(back, cents);
    }

    #[test]
    fn status_names_are_the_json_names() {
        for s in [
            Status::Duplicates,
            Status::Clean,
            Status::Enforced,
            Status::NoKey,
            Status::Error,
        ] {
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
    }

    #[test]
    fn figures_are_grouped_for_people() {
        assert_eq!(group_thousands("1234567"), "1,234,567");
        assert_eq!(group_thousands("123"), "123");
        assert_eq!(
            Amount("-1234567.89".parse().expect("d")).to_string(),
            "-1,234,567.89"
        );
        assert_eq!(count(Some(-1000)), "-1,000");
        assert_eq!(printable("a\u{1b}[31mb"), "a\u{fffd}[31mb");
    }
}
