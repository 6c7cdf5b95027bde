//! Per-fixture assertions on a table's report entry, shared by the three engines.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{sset, string_set, strings};
use crate::expect::{Expected, assert_figures, assert_samples};
use crate::fixtures::{DAILY_ORDERS_PAYLOAD, is_unique};

fn ctx(t: &Value) -> String {
    format!("{}.{}", t["schema"], t["name"])
}

fn assert_inferred(t: &Value, columns: &[&str]) {
    let c = ctx(t);
    let nk = &t["natural_key"];
    assert_eq!(strings(&nk["columns"]), columns, "{c}: natural_key.columns");
    assert_eq!(nk["source"], "inferred", "{c}: natural_key.source");
    assert_eq!(nk["enforced"], false, "{c}: natural_key.enforced");
    let conf = nk["confidence"]
        .as_f64()
        .unwrap_or_else(|| panic!("{c}: confidence is not a number"));
    assert!(
        conf > 0.0 && conf < 1.0,
        "{c}: inferred confidence {conf} not in (0, 1)"
    );
    assert!(nk["candidates"].is_array(), "{c}: candidates is an array");
}

fn assert_declared_or_config(t: &Value, columns: &[&str], source: &str, enforced: bool) {
    let c = ctx(t);
    let nk = &t["natural_key"];
    assert_eq!(strings(&nk["columns"]), columns, "{c}: natural_key.columns");
    assert_eq!(nk["source"], source, "{c}: natural_key.source");
    assert_eq!(nk["enforced"], enforced, "{c}: natural_key.enforced");
    assert_eq!(
        nk["confidence"].as_f64(),
        Some(1.0),
        "{c}: confidence of a {source} key"
    );
}

fn measure_columns(t: &Value) -> std::collections::BTreeSet<String> {
    t["measures"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: measures is not an array", ctx(t)))
        .iter()
        .map(|m| m["column"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The retried daily load (fixture 1).
pub fn daily_orders(t: &Value, e: &Expected) {
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: status");
    assert!(t["message"].is_null(), "{c}: message");
    assert_eq!(
        strings(&t["surrogate_key"]),
        ["surrogate_key"],
        "{c}: surrogate_key"
    );
    assert_eq!(
        strings(&t["load_metadata"]),
        ["loaded_at"],
        "{c}: load_metadata"
    );
    assert_eq!(
        string_set(&t["payload"]),
        sset(&DAILY_ORDERS_PAYLOAD),
        "{c}: payload"
    );
    assert_inferred(t, &["order_id", "line_item_id"]);
    assert_eq!(t["survivor"], "latest:loaded_at", "{c}: survivor");
    assert_eq!(
        measure_columns(t),
        sset(&["quantity", "amount_cents"]),
        "{c}: measures (numeric payload outside the key, not *_id)"
    );
    assert_eq!(t["day_column"], "order_date", "{c}: day_column");
    // Sanity of the construction: pure retries, so every overcount figure is the same.
    assert_eq!(e.conflicting, 0);
    assert_eq!(e.exact, e.dup_groups);
    assert_figures(t, e);
    assert_samples(t, e, &["order_id", "line_item_id"]);
    for s in t["samples"].as_array().into_iter().flatten() {
        let differing = string_set(&s["differing_columns"]);
        assert!(
            differing.contains("surrogate_key"),
            "{c}: differing_columns {differing:?}"
        );
        assert!(
            differing.contains("loaded_at"),
            "{c}: differing_columns {differing:?}"
        );
        assert!(
            !differing.contains("amount_cents"),
            "{c}: differing_columns {differing:?}"
        );
        let columns = string_set(&s["columns"]);
        for col in crate::fixtures::DAILY_ORDERS_COLUMNS {
            assert!(columns.contains(col), "{c}: sample columns lack {col}");
        }
    }
}

/// The reloaded event batch (fixture 2).
pub fn customer_events(t: &Value, e: &Expected) {
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: status");
    assert_eq!(strings(&t["surrogate_key"]), ["id"], "{c}: surrogate_key");
    assert!(
        strings(&t["load_metadata"]).contains(&"_batch_id".to_string()),
        "{c}: load_metadata {}",
        t["load_metadata"]
    );
    assert_eq!(
        string_set(&t["payload"]),
        sset(&[
            "event_id",
            "customer_id",
            "event_type",
            "event_ts",
            "points"
        ]),
        "{c}: payload"
    );
    assert_inferred(t, &["event_id"]);
    assert_eq!(
        t["survivor"], "lowest_surrogate",
        "{c}: survivor (no timestamp load metadata)"
    );
    assert_eq!(measure_columns(t), sset(&["points"]), "{c}: measures");
    assert_eq!(t["day_column"], "event_ts", "{c}: day_column");
    assert_figures(t, e);
    assert_samples(t, e, &["event_id"]);
    for s in t["samples"].as_array().into_iter().flatten() {
        assert_eq!(
            string_set(&s["differing_columns"]),
            sset(&["id", "_batch_id"]),
            "{c}: copies differ only in id and _batch_id"
        );
    }
}

/// The summary table with a configured key (fixture 3).
pub fn revenue_summary(t: &Value, e: &Expected, gross_col: &str) {
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: status");
    assert_declared_or_config(t, &["revenue_date"], "config", false);
    assert_eq!(t["survivor"], "latest:computed_at", "{c}: survivor");
    assert_eq!(
        strings(&t["surrogate_key"]),
        ["summary_id"],
        "{c}: surrogate_key"
    );
    assert_eq!(
        strings(&t["load_metadata"]),
        ["computed_at"],
        "{c}: load_metadata"
    );
    assert_eq!(
        measure_columns(t),
        sset(&[gross_col]),
        "{c}: measures from the config"
    );
    assert_eq!(t["day_column"], "revenue_date", "{c}: day_column");
    // The construction has exact and conflicting groups, and a survivor that differs from
    // both extremes, so the four overcounts are all different.
    assert!(e.exact > 0 && e.conflicting > 0);
    let f = &e.figs[0];
    assert!(f.overcount < f.min && f.min < f.survivor && f.survivor < f.max);
    assert_figures(t, e);
    assert_samples(t, e, &["revenue_date"]);
    let first = &t["samples"][0];
    assert_eq!(first["exact"], false, "{c}: conflicting samples come first");
    assert!(
        string_set(&first["differing_columns"]).contains(gross_col),
        "{c}: a conflicting sample differs in {gross_col}"
    );
}

/// A declared primary or unique key that the database enforces (fixtures 4 and 9).
pub fn enforced(t: &Value, columns: &[&str]) {
    let c = ctx(t);
    assert_eq!(t["status"], "enforced", "{c}: status");
    assert_declared_or_config(t, columns, "declared", true);
    for f in [
        "duplicate_groups",
        "excess_rows",
        "rows_in_duplicate_groups",
    ] {
        assert_eq!(t[f], 0, "{c}: {f} of an enforced table");
    }
}

/// The history table (fixture 5).
pub fn history(t: &Value, rows: &[BTreeMap<String, Option<String>>]) {
    let c = ctx(t);
    assert_eq!(t["status"], "clean", "{c}: status");
    assert!(t["message"].is_null(), "{c}: message");
    assert_eq!(t["duplicate_groups"], 0, "{c}: duplicate_groups");
    assert_eq!(t["excess_rows"], 0, "{c}: excess_rows");
    assert_eq!(t["rows"], rows.len() as u64, "{c}: rows");
    assert_eq!(
        strings(&t["surrogate_key"]),
        Vec::<String>::new(),
        "{c}: no surrogate"
    );
    let key = strings(&t["natural_key"]["columns"]);
    assert_ne!(
        key,
        ["order_id"],
        "{c}: order_id alone is not the key of a history"
    );
    assert!(!key.is_empty(), "{c}: empty natural key");
    assert!(
        is_unique(rows, &key),
        "{c}: the reported key {key:?} is not unique in the data"
    );
    assert!(
        t["samples"].as_array().is_some_and(|s| s.is_empty()),
        "{c}: samples"
    );
    assert!(
        t["by_day"].as_array().is_some_and(|s| s.is_empty()),
        "{c}: by_day"
    );
}

/// The nullable declared key (fixture 7).
pub fn nullable(t: &Value, e: &Expected) {
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: status");
    assert_declared_or_config(t, &["account_id", "region"], "declared", false);
    assert_eq!(e.null_key_groups, 2);
    assert_eq!(e.excess, 3);
    assert_figures(t, e);
    assert_samples(t, e, &["account_id", "region"]);
}

/// The free-text log (fixture 10).
pub fn no_key(t: &Value) {
    let c = ctx(t);
    assert_eq!(t["status"], "no_key", "{c}: status");
    assert!(
        t["natural_key"].is_null(),
        "{c}: natural_key should be null"
    );
    let msg = t["message"].as_str().unwrap_or("");
    assert!(
        !msg.trim().is_empty(),
        "{c}: a no_key table says why in message"
    );
    for f in [
        "duplicate_groups",
        "excess_rows",
        "rows_in_duplicate_groups",
        "exact_groups",
    ] {
        assert!(
            t[f].is_null(),
            "{c}: {f} of a no_key table should be null, got {}",
            t[f]
        );
    }
}

/// The hostile-names table (fixture 6).
pub fn hostile(t: &Value, e: &Expected, key: &str, amount: &str) {
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: status");
    assert_eq!(
        strings(&t["surrogate_key"]),
        ["row id"],
        "{c}: surrogate_key"
    );
    assert_eq!(
        string_set(&t["payload"]),
        sset(&[key, amount]),
        "{c}: payload"
    );
    assert_eq!(
        strings(&t["natural_key"]["columns"]),
        [key],
        "{c}: natural key"
    );
    assert_eq!(measure_columns(t), sset(&[amount]), "{c}: measures");
    assert!(t["day_column"].is_null(), "{c}: no day column");
    assert_figures(t, e);
    assert_samples(t, e, &[key]);
}

/// The ELT-loaded table: tool columns are never payload.
pub fn elt_charges(t: &Value, e: &Expected) {
    use crate::fixtures::{ELT_METADATA, ELT_PAYLOAD};
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: status");
    assert_eq!(
        string_set(&t["payload"]),
        sset(&ELT_PAYLOAD),
        "{c}: payload"
    );
    let surrogate = string_set(&t["surrogate_key"]);
    let metadata = string_set(&t["load_metadata"]);
    for col in ELT_METADATA {
        assert!(
            surrogate.contains(col) || metadata.contains(col),
            "{c}: {col} is neither surrogate key nor load metadata (surrogate {surrogate:?}, load metadata {metadata:?})"
        );
    }
    assert!(
        surrogate.iter().all(|s| s == "_airbyte_raw_id"),
        "{c}: surrogate_key {surrogate:?}"
    );
    assert_inferred(t, &["charge_id"]);
    assert_eq!(measure_columns(t), sset(&["amount"]), "{c}: measures");
    assert_eq!(t["day_column"], "created", "{c}: day_column");
    let survivor = t["survivor"].as_str().unwrap_or("");
    let col = survivor.strip_prefix("latest:").unwrap_or_else(|| {
        panic!("{c}: survivor {survivor:?} should be latest:<timestamp load metadata>")
    });
    assert!(
        [
            "_airbyte_extracted_at",
            "_fivetran_synced",
            "ingested_at",
            "inserted_at",
            "updated_at"
        ]
        .contains(&col),
        "{c}: survivor column {col:?} is not a timestamp load-metadata column"
    );
    assert_figures(t, e);
    assert_samples(t, e, &["charge_id"]);
}

/// The ledger whose sums exceed 64 bits.
pub fn big_ledger(t: &Value, e: &Expected) {
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: status ({})", t["message"]);
    assert_eq!(
        strings(&t["natural_key"]["columns"]),
        ["entry_id"],
        "{c}: natural key"
    );
    assert_figures(t, e);
    let m = &t["measures"][0];
    for f in ["total", "overcount", "overcount_min", "overcount_max"] {
        assert!(
            m[f].is_string(),
            "{c}: {f} beyond 64 bits must be a decimal string, got {}",
            m[f]
        );
    }
}

/// `fixtures::crowded_events`: every sampled group comes with its rows, none with more than 10,
/// and the big NULL-key group is marked conflicting and shows the row that differs.
pub fn crowded_events(t: &Value) {
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: {t}");
    assert_eq!(t["duplicate_groups"], 5, "{c}");
    assert_eq!(t["conflicting_groups"], 1, "{c}");
    assert_eq!(t["null_key_groups"], 1, "{c}");
    assert_eq!(t["excess_rows"], 999 + 4, "{c}");
    let samples = t["samples"].as_array().expect("samples");
    // Without a day column the scan names the least and greatest key of all groups and of the
    // conflicting ones: the NULL group and event 1. A cap over all rows would fill up with the
    // NULL group and lose event 1.
    assert_eq!(
        samples.len(),
        2,
        "{c}: every named group is sampled: {}",
        t["samples"]
    );
    let null_group = &samples[0];
    assert!(
        null_group["key"]["event_id"].is_null(),
        "{c}: conflicting first: {null_group}"
    );
    assert_eq!(
        null_group["exact"], false,
        "{c}: the scan found it conflicting"
    );
    let rows = null_group["rows"].as_array().expect("rows").len();
    assert!((2..=10).contains(&rows), "{c}: {rows} rows sampled of 1000");
    assert!(
        strings(&null_group["differing_columns"]).contains(&"kind".to_string()),
        "{c}: the sample shows the row that differs: {null_group}"
    );
    let mut exact_keys = std::collections::BTreeSet::new();
    for s in &samples[1..] {
        assert_eq!(s["exact"], true, "{c}: {s}");
        assert_eq!(s["rows"].as_array().map(Vec::len), Some(2), "{c}: {s}");
        exact_keys.insert(s["key"]["event_id"].as_str().unwrap_or("?").to_string());
    }
    assert_eq!(exact_keys, sset(&["1"]), "{c}");
}

/// `fixtures::orders_by_day`: a group counts on the earliest day among its rows, and a day's
/// `rows` are all the rows of that day, duplicated or not.
pub fn orders_by_day(t: &Value) {
    let c = ctx(t);
    assert_eq!(t["status"], "duplicates", "{c}: {t}");
    assert_eq!(t["day_column"], "order_date", "{c}");
    assert_eq!(t["rows"], 11, "{c}");
    assert_eq!(t["duplicate_groups"], 3, "{c}");
    assert_eq!(t["exact_groups"], 2, "{c}");
    assert_eq!(t["conflicting_groups"], 1, "{c}");
    assert_eq!(t["excess_rows"], 1 + 1 + 2, "{c}");
    let days = t["by_day"].as_array().expect("by_day");
    let summary: Vec<(String, i64, i64, i64)> = days
        .iter()
        .map(|d| {
            (
                d["day"].as_str().unwrap_or("?").to_string(),
                d["rows"].as_i64().unwrap_or(-1),
                d["duplicate_groups"].as_i64().unwrap_or(-1),
                d["excess_rows"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            // Orders 1 and 3 (3 spans 11-01 and 11-02); four rows dated 11-01.
            ("2026-11-01".to_string(), 4, 2, 2),
            // Order 4; six rows dated 11-02, order 3's second row among them.
            ("2026-11-02".to_string(), 6, 1, 2),
        ],
        "{c}: by_day {}",
        t["by_day"]
    );
    let m = |d: &Value, f: &str| d["measures"][0][f].as_i64().unwrap_or(-1);
    // 11-01: order 1 is exact (100 too many); order 3 conflicts (30 too many whichever stays).
    assert_eq!(
        (
            m(&days[0], "overcount"),
            m(&days[0], "overcount_min"),
            m(&days[0], "overcount_max")
        ),
        (100, 130, 130),
        "{c}"
    );
    assert_eq!(
        (
            m(&days[1], "overcount"),
            m(&days[1], "overcount_min"),
            m(&days[1], "overcount_max")
        ),
        (140, 140, 140),
        "{c}"
    );
}

/// An enforced table and how many rows it holds.
pub fn enforced_with_rows(t: &Value, columns: &[&str], rows: i64) {
    enforced(t, columns);
    assert_eq!(t["rows"], rows, "{}: rows of an enforced table", ctx(t));
}
