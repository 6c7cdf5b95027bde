//! What column names and values say about a column's role. Names are compared lowercased.

use crate::warehouse::ColumnKind;

/// `loaded_at`, `_batch_id`, `_etl_*`, `_dlt_*`, `_airbyte_*`, `_fivetran_*`, `_sdc_*`...
pub fn is_load_metadata_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    const EXACT: &[&str] = &[
        "loaded_at",
        "load_ts",
        "load_time",
        "load_timestamp",
        "inserted_at",
        "ingested_at",
        "ingestion_time",
        "updated_at",
        "computed_at",
        "refreshed_at",
        "batch_id",
        "load_id",
        "etl_loaded_at",
        "etl_batch_id",
        "dbt_updated_at",
        "dbt_valid_from",
    ];
    const PREFIXES: &[&str] = &[
        "_etl_",
        "etl_",
        "_dlt_",
        "_airbyte_",
        "_fivetran_",
        "_sdc_",
        "_stitch_",
        "_meltano_",
    ];
    EXACT.contains(&n.as_str())
        || EXACT.contains(&n.trim_start_matches('_'))
        || PREFIXES.iter().any(|p| n.starts_with(p))
        || matches!(
            n.as_str(),
            "_batch_id" | "_load_id" | "_run_id" | "_loaded_at" | "_inserted_at" | "_ingested_at"
        )
}

/// Names that mark a column as an identifier or code: never a measure, a likely key part.
pub fn is_identifier_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    const SUFFIXES: &[&str] = &[
        "_id", "_key", "_code", "_no", "_nr", "_num", "_number", "_sk", "_nk", "_sku", "_ref",
        "_uuid", "_hash",
    ];
    matches!(
        n.as_str(),
        "id" | "key" | "code" | "sku" | "uuid" | "ref" | "year" | "month" | "day" | "week"
            | "quarter" | "hour" | "seq" | "version" | "line" | "position" | "rank" | "zip"
    ) || SUFFIXES.iter().any(|s| n.ends_with(s))
        // camelCase and SHOUTING identifiers: `customerId`, `ORDERID` is too ambiguous to guess.
        || (name.len() > 2 && (name.ends_with("Id") || name.ends_with("ID")))
}

/// Names that say "this is the day": `order_date`, `dt`, `day`, `revenue_date`...
pub fn says_date(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "dt" || n == "ds" || n.contains("date") || n.contains("day") || n.ends_with("_dt")
}

/// Free text: descriptions, messages, notes. Never part of an inferred key.
pub fn is_free_text_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "message",
        "description",
        "comment",
        "note",
        "body",
        "text",
        "content",
        "payload",
        "details",
        "remark",
        "summary",
        "log",
        "error",
        "reason",
    ]
    .iter()
    .any(|w| n == *w || n.ends_with(&format!("_{w}")) || n.starts_with(&format!("{w}_")))
}

/// `8-4-4-4-12` hexadecimal, with or without braces.
pub fn is_uuid(value: &str) -> bool {
    let v = value.trim_start_matches('{').trim_end_matches('}');
    let groups: Vec<&str> = v.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `Date` for `YYYY-MM-DD`, `Timestamp` for `YYYY-MM-DD[ T]HH:MM...`, else `None`.
pub fn temporal_shape(value: &str) -> Option<ColumnKind> {
    let b = value.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let is_date = b.len() >= 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10);
    if !is_date {
        return None;
    }
    if b.len() == 10 {
        return Some(ColumnKind::Date);
    }
    let time_ok = (b[10] == b' ' || b[10] == b'T') && digits(11..13) && b.get(13) == Some(&b':');
    time_ok.then_some(ColumnKind::Timestamp)
}

/// How much a column looks like part of a natural key, in [0, 1]; `None` when it must never be
/// one (measures, free text, floats, JSON...).
pub fn key_likeness(name: &str, kind: ColumnKind, average_text_len: f64) -> Option<f64> {
    if is_free_text_name(name) {
        return None;
    }
    let identifier = is_identifier_name(name);
    match kind {
        _ if identifier && kind != ColumnKind::Float && kind != ColumnKind::Other => Some(1.0),
        ColumnKind::Date => Some(0.8),
        ColumnKind::Timestamp => Some(if says_date(name) { 0.7 } else { 0.6 }),
        ColumnKind::Uuid => Some(0.9),
        // Short text: codes, categories, statuses. Long text is prose.
        ColumnKind::Text if average_text_len <= 32.0 => Some(0.5),
        ColumnKind::Boolean => Some(0.2),
        // Numbers without an identifier's name are measures or quantities.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reveal_roles() {
        for n in [
            "loaded_at",
            "_batch_id",
            "_airbyte_emitted_at",
            "_fivetran_synced",
            "_dlt_load_id",
            "_etl_run",
        ] {
            assert!(is_load_metadata_name(n), "{n}");
        }
        for n in ["order_date", "amount_cents", "batch_size"] {
            assert!(!is_load_metadata_name(n), "{n}");
        }
        for n in [
            "order_id",
            "line_item_id",
            "currency_code",
            "sku",
            "id",
            "customerId",
        ] {
            assert!(is_identifier_name(n), "{n}");
        }
        for n in [
            "amount_cents",
            "quantity",
            "price",
            "paid",
            "valid",
            "total",
        ] {
            assert!(!is_identifier_name(n), "{n}");
        }
    }

    #[test]
    fn value_shapes_are_recognised() {
        assert!(is_uuid("6f1c2d3e-0000-4abc-8def-0123456789ab"));
        assert!(!is_uuid("6f1c2d3e-0000-4abc-8def-0123456789a"));
        assert_eq!(temporal_shape("2026-11-02"), Some(ColumnKind::Date));
        assert_eq!(
            temporal_shape("2026-11-02 01:07:12"),
            Some(ColumnKind::Timestamp)
        );
        assert_eq!(
            temporal_shape("2026-11-02T01:07:12Z"),
            Some(ColumnKind::Timestamp)
        );
        assert_eq!(temporal_shape("2026-11-0x"), None);
        assert_eq!(temporal_shape("é"), None);
    }

    #[test]
    fn measures_and_prose_are_never_key_parts() {
        assert_eq!(key_likeness("amount_cents", ColumnKind::Integer, 0.0), None);
        assert_eq!(key_likeness("message", ColumnKind::Text, 10.0), None);
        assert_eq!(key_likeness("headline", ColumnKind::Text, 80.0), None);
        assert_eq!(
            key_likeness("order_id", ColumnKind::Integer, 0.0),
            Some(1.0)
        );
        assert!(key_likeness("status", ColumnKind::Text, 7.0).is_some());
    }
}
