//! Numbers, names and charts for people: thousands separators, safe download names, JSON that
//! can sit inside a page, and the inline-SVG charts.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::audit::report::{Amount, TableReport, group_thousands};

/// `1234567` -> `1,234,567`; `None` -> `-`.
pub fn count(n: Option<i64>) -> String {
    match n {
        Some(n) if n < 0 => format!("-{}", group_thousands(&n.unsigned_abs().to_string())),
        Some(n) => group_thousands(&n.to_string()),
        None => "-".to_string(),
    }
}

/// An overcount range for people: `+1,234` or `+1,000..2,000`.
pub fn overcount_range(min: &Amount, max: &Amount) -> String {
    if min == max {
        format!("+{max}")
    } else {
        format!("+{min}..{max}")
    }
}

/// A download file name from untrusted identifiers: only `[A-Za-z0-9._-]` survive, so no
/// quote, slash or control character reaches a `Content-Disposition` header.
pub fn file_name(parts: &[&str], extension: &str) -> String {
    let joined = parts.join("_");
    let mut name: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name = name.trim_matches(|c| c == '.' || c == '_').to_string();
    name.truncate(100);
    if name.is_empty() {
        name = "natkey".to_string();
    }
    format!("{name}.{extension}")
}

/// JSON for a `<script type="application/json">` element: `<`, `>`, `&` and the line
/// separators are escaped so no identifier can close the element or start markup.
pub fn script_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A bar of the by-day chart.
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub label: String,
}

/// The inline-SVG chart of a table's incident days: bars for excess rows, a line for the
/// overcount of its worst measure. Coordinates are computed here; the template only draws.
pub struct DayChart {
    pub width: f64,
    pub height: f64,
    pub bars: Vec<Bar>,
    /// `x,y x,y ...` of the overcount line (empty without a measure).
    pub line: String,
    pub points: Vec<(f64, f64, String)>,
    pub measure: Option<String>,
    pub max_excess: String,
    pub max_overcount: String,
    pub first_day: String,
    pub last_day: String,
}

pub const CHART_W: f64 = 720.0;
pub const CHART_H: f64 = 220.0;
const PAD_L: f64 = 8.0;
const PAD_T: f64 = 24.0;
const PAD_B: f64 = 24.0;

/// The chart for a table, or `None` when it has no day column or no incident day.
pub fn day_chart(table: &TableReport) -> Option<DayChart> {
    if table.by_day.is_empty() {
        return None;
    }
    let mut days = table.by_day.clone();
    days.sort_by(|a, b| a.day.cmp(&b.day));
    let measure = table
        .measures
        .iter()
        .max_by_key(|m| m.overcount_max)
        .map(|m| m.column.clone());
    let plot_h = CHART_H - PAD_T - PAD_B;
    let max_excess = days.iter().map(|d| d.excess_rows).max().unwrap_or(0).max(1);
    let over = |d: &crate::audit::report::DayFigures| -> Decimal {
        measure
            .as_ref()
            .and_then(|m| d.measures.iter().find(|dm| &dm.column == m))
            .map(|dm| dm.overcount_max.0)
            .unwrap_or(Decimal::ZERO)
    };
    let max_over = days.iter().map(over).max().unwrap_or(Decimal::ZERO);
    let slot = (CHART_W - 2.0 * PAD_L) / days.len() as f64;
    let bar_w = (slot * 0.7).max(1.0);
    let mut bars = Vec::with_capacity(days.len());
    let mut points = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let h = plot_h * d.excess_rows as f64 / max_excess as f64;
        let x = PAD_L + i as f64 * slot + (slot - bar_w) / 2.0;
        bars.push(Bar {
            x: round(x),
            y: round(PAD_T + plot_h - h),
            width: round(bar_w),
            height: round(h),
            label: format!("{}: {} excess rows", d.day, count(Some(d.excess_rows))),
        });
        if measure.is_some() && max_over > Decimal::ZERO {
            let ratio = (over(d) / max_over).to_f64().unwrap_or(0.0);
            points.push((
                round(PAD_L + i as f64 * slot + slot / 2.0),
                round(PAD_T + plot_h - plot_h * ratio),
                format!("{}: overcount +{}", d.day, Amount(over(d))),
            ));
        }
    }
    let line = points
        .iter()
        .map(|(x, y, _)| format!("{x},{y}"))
        .collect::<Vec<_>>()
        .join(" ");
    Some(DayChart {
        width: CHART_W,
        height: CHART_H,
        bars,
        line,
        points,
        measure,
        max_excess: count(Some(max_excess)),
        max_overcount: Amount(max_over).to_string(),
        first_day: days.first().map(|d| d.day.clone()).unwrap_or_default(),
        last_day: days.last().map(|d| d.day.clone()).unwrap_or_default(),
    })
}

/// A small trend line over past audits, oldest left: `label` says what it plots.
pub struct Trend {
    pub label: String,
    pub line: String,
    pub points: Vec<(f64, f64, String)>,
}

/// Excess rows over past audits: `(when, excess rows)`, oldest first.
pub fn trend(values: &[(String, i64)]) -> Option<Trend> {
    let values: Vec<(String, f64, String)> = values
        .iter()
        .map(|(when, v)| {
            (
                when.clone(),
                *v as f64,
                format!("{when}: {} excess rows", count(Some(*v))),
            )
        })
        .collect();
    trend_of("excess rows, past audits", &values)
}

/// A trend of any figure: `(when, value, tooltip)`, oldest first; `None` below two points.
pub fn trend_of(label: &str, values: &[(String, f64, String)]) -> Option<Trend> {
    if values.len() < 2 {
        return None;
    }
    let (w, h, pad) = (240.0, 48.0, 4.0);
    let max = values
        .iter()
        .map(|v| v.1)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let step = (w - 2.0 * pad) / (values.len() - 1) as f64;
    let points: Vec<(f64, f64, String)> = values
        .iter()
        .enumerate()
        .map(|(i, (_, v, tip))| {
            (
                round(pad + i as f64 * step),
                round(h - pad - (h - 2.0 * pad) * v.max(0.0) / max),
                tip.clone(),
            )
        })
        .collect();
    let line = points
        .iter()
        .map(|(x, y, _)| format!("{x},{y}"))
        .collect::<Vec<_>>()
        .join(" ");
    Some(Trend {
        label: label.to_string(),
        line,
        points,
    })
}

/// One measure's overcount over past audits of a table (the worst case, `overcount_max`), and
/// the table's excess rows, from the store's per-table figures.
pub fn table_trends(points: &[crate::store::TableTrendPoint], measures: &[String]) -> Vec<Trend> {
    use rust_decimal::prelude::ToPrimitive;
    let when = |p: &crate::store::TableTrendPoint| p.finished_at.clone();
    let excess: Vec<(String, f64, String)> = points
        .iter()
        .map(|p| {
            let v = p.excess_rows.unwrap_or(0);
            (
                when(p),
                v as f64,
                format!("{}: {} excess rows", when(p), count(Some(v))),
            )
        })
        .collect();
    let mut out: Vec<Trend> = trend_of("excess rows, past audits", &excess)
        .into_iter()
        .collect();
    for measure in measures {
        let values: Vec<(String, f64, String)> = points
            .iter()
            .map(|p| {
                let over = p
                    .measures
                    .iter()
                    .find(|m| &m.column == measure)
                    .map(|m| m.overcount_max)
                    .unwrap_or_default();
                (
                    when(p),
                    over.0.to_f64().unwrap_or(0.0),
                    format!("{}: {measure} overcount up to {over}", when(p)),
                )
            })
            .collect();
        out.extend(trend_of(
            &format!("{measure} overcount, past audits"),
            &values,
        ));
    }
    out
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_keep_only_safe_characters() {
        let name = file_name(
            &["sales", "Weird \"Table\" <script>alert(1)</script>"],
            "sql",
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{name}"
        );
        assert!(name.starts_with("sales_Weird__Table"), "{name}");
        assert_eq!(file_name(&["../.."], "sql"), "natkey.sql");
    }

    #[test]
    fn json_in_pages_cannot_close_its_script_element() {
        let v = serde_json::json!({"name": "</script><script>alert(1)</script>&"});
        let text = script_json(&v);
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(back, v);
    }

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(count(Some(1_234_567)), "1,234,567");
        assert_eq!(count(Some(-1200)), "-1,200");
        assert_eq!(count(None), "-");
    }
}
