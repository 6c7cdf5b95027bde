//! Fixture tables, generated in Rust so that every expected figure follows from the
//! construction. Each builder returns the SQL script (run as admin) and, where there are
//! figures to check, the expectation computed from the same rows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Days, NaiveDate};

use crate::common::{Engine, TestDb};
use crate::expect::{Expected, XRow, compute, measure};

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn plus_days(d: NaiveDate, n: u64) -> NaiveDate {
    d.checked_add_days(Days::new(n)).expect("date in range")
}

fn ts(d: NaiveDate, h: u32, m: u32, s: u32) -> String {
    format!("{d} {h:02}:{m:02}:{s:02}")
}

/// A SQL string literal (fixtures never contain backslashes, so this is safe on MySQL too).
pub fn lit(s: &str) -> String {
    assert!(
        !s.contains('\\'),
        "fixture text must not contain backslashes"
    );
    format!("'{}'", s.replace('\'', "''"))
}

/// `INSERT INTO table (cols) VALUES ...;` in chunks.
fn inserts(db: &TestDb, table: &str, cols: &[&str], rows: &[Vec<String>]) -> String {
    let cols: Vec<String> = cols.iter().map(|c| db.q(c)).collect();
    let mut sql = String::new();
    for chunk in rows.chunks(200) {
        let values: Vec<String> = chunk
            .iter()
            .map(|r| format!("({})", r.join(", ")))
            .collect();
        sql.push_str(&format!(
            "INSERT INTO {table} ({}) VALUES\n{};\n",
            cols.join(", "),
            values.join(",\n")
        ));
    }
    sql
}

/// A per-insert surrogate column that is also the primary key.
fn bigserial_pk(db: &TestDb) -> &'static str {
    match db.engine {
        Engine::Postgres => "bigserial PRIMARY KEY",
        Engine::MySql => "bigint NOT NULL AUTO_INCREMENT PRIMARY KEY",
        Engine::Sqlite => "INTEGER PRIMARY KEY",
    }
}

/// A timestamp column without time zone (MariaDB: `datetime`, so no session time zone shifts).
fn timestamp(db: &TestDb) -> &'static str {
    match db.engine {
        Engine::MySql => "datetime",
        _ => "timestamp",
    }
}

fn timestamp_default_now(db: &TestDb) -> &'static str {
    match db.engine {
        Engine::Postgres => "timestamp NOT NULL DEFAULT now()",
        Engine::MySql => "datetime NOT NULL DEFAULT CURRENT_TIMESTAMP",
        Engine::Sqlite => "timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP",
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The retried daily load

pub struct Line {
    pub order_id: i64,
    pub line_item_id: i64,
    pub order_date: NaiveDate,
    pub customer_id: i64,
    pub quantity: i64,
    pub amount_cents: i64,
}

impl Line {
    fn texts(&self) -> [String; 6] {
        [
            self.order_id.to_string(),
            self.line_item_id.to_string(),
            self.order_date.to_string(),
            self.customer_id.to_string(),
            self.quantity.to_string(),
            self.amount_cents.to_string(),
        ]
    }
}

const AMOUNTS: [i64; 4] = [1500, 2500, 4000, 990];

/// Orders on the given days: 20, 25 or 30 orders a day with 1–3 line items each. customer,
/// quantity and amount are constant within an order and repeat across orders.
pub fn order_lines(dates: &[NaiveDate]) -> Vec<Line> {
    let mut lines = Vec::new();
    for (d, day) in dates.iter().enumerate() {
        let orders = 20 + (d % 3) * 5;
        for o in 0..orders {
            let order_id = 1000 + 100 * d as i64 + o as i64;
            let items = 1 + (d + o) % 3;
            for li in 1..=items as i64 {
                lines.push(Line {
                    order_id,
                    line_item_id: li,
                    order_date: *day,
                    customer_id: 70 + order_id % 5,
                    quantity: 1 + order_id % 3,
                    amount_cents: AMOUNTS[(order_id % 4) as usize],
                });
            }
        }
    }
    check_only_unique_pair(&lines);
    lines
}

/// Self-check of the construction: no payload column is unique on its own, and among all
/// pairs of payload columns only (order_id, line_item_id) is unique.
fn check_only_unique_pair(lines: &[Line]) {
    let distinct: BTreeSet<[String; 6]> = lines.iter().map(|l| l.texts()).collect();
    let n = distinct.len();
    for i in 0..6 {
        let vals: BTreeSet<&String> = distinct.iter().map(|r| &r[i]).collect();
        assert!(vals.len() < n, "fixture: column {i} alone is unique");
        for j in (i + 1)..6 {
            let pairs: BTreeSet<(&String, &String)> =
                distinct.iter().map(|r| (&r[i], &r[j])).collect();
            let unique = pairs.len() == n;
            assert_eq!(
                unique,
                (i, j) == (0, 1),
                "fixture: uniqueness of columns ({i}, {j})"
            );
        }
    }
}

pub const DAILY_ORDERS_COLUMNS: [&str; 8] = [
    "surrogate_key",
    "order_id",
    "line_item_id",
    "order_date",
    "customer_id",
    "quantity",
    "amount_cents",
    "loaded_at",
];

pub const DAILY_ORDERS_PAYLOAD: [&str; 6] = [
    "order_id",
    "line_item_id",
    "order_date",
    "customer_id",
    "quantity",
    "amount_cents",
];

/// The ten days of the standard fixture, 2026-11-01 .. 2026-11-10.
pub fn ten_days() -> Vec<NaiveDate> {
    (0..10).map(|i| plus_days(date(2026, 11, 1), i)).collect()
}

/// The standard retries: the 4th day is loaded twice, the 8th three times.
pub fn standard_copies(day_index: usize) -> usize {
    match day_index {
        3 => 2,
        7 => 3,
        _ => 1,
    }
}

/// The rows of a retried load (order_id .. loaded_at as SQL literals) and their expectation:
/// every day's lines are loaded `copies(day)` times, copy k at 01:00 + 7k minutes the next day.
pub fn daily_order_loads(
    dates: &[NaiveDate],
    copies: &dyn Fn(usize) -> usize,
) -> (Vec<Vec<String>>, Expected) {
    let lines = order_lines(dates);
    let mut rows = Vec::new();
    let mut xrows = Vec::new();
    for (d, day) in dates.iter().enumerate() {
        for k in 0..copies(d) {
            let loaded_at = ts(
                plus_days(*day, 1),
                1,
                7 * k as u32,
                if k == 0 { 0 } else { 12 },
            );
            for l in lines.iter().filter(|l| l.order_date == *day) {
                let t = l.texts();
                rows.push(vec![
                    t[0].clone(),
                    t[1].clone(),
                    lit(&t[2]),
                    t[3].clone(),
                    t[4].clone(),
                    t[5].clone(),
                    lit(&loaded_at),
                ]);
                xrows.push(XRow {
                    key: vec![Some(t[0].clone()), Some(t[1].clone())],
                    payload: t.join("|"),
                    day: Some(t[2].clone()),
                    measures: vec![l.quantity as i128, l.amount_cents as i128],
                    rank: k as i64,
                });
            }
        }
    }
    let e = compute(
        vec![measure("quantity", 0), measure("amount_cents", 0)],
        &xrows,
        true,
        true,
    );
    (rows, e)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Surrogate {
    /// uuid with `DEFAULT gen_random_uuid()` (MariaDB `DEFAULT (uuid())`, SQLite `INTEGER
    /// PRIMARY KEY`), the primary key.
    Default,
    /// PostgreSQL: a `uuid` primary key with no default; the task writes `gen_random_uuid()`.
    UuidNoDefault,
    /// PostgreSQL: a `text` column with no default holding `gen_random_uuid()::text`.
    TextUuidNoDefault,
}

/// `daily_orders`-shaped table with the standard retries (or `copies`), plus its expectation.
pub fn daily_orders(
    db: &TestDb,
    pg_schema: &str,
    table: &str,
    surrogate: Surrogate,
    copies: &dyn Fn(usize) -> usize,
) -> (String, Expected) {
    let (mut rows, e) = daily_order_loads(&ten_days(), copies);
    let sk = match (db.engine, surrogate) {
        (Engine::Postgres, Surrogate::Default) => "uuid PRIMARY KEY DEFAULT gen_random_uuid()",
        (Engine::Postgres, Surrogate::UuidNoDefault) => "uuid PRIMARY KEY",
        (Engine::Postgres, Surrogate::TextUuidNoDefault) => "text NOT NULL",
        (Engine::MySql, Surrogate::Default) => "char(36) NOT NULL DEFAULT (uuid()) PRIMARY KEY",
        (Engine::Sqlite, Surrogate::Default) => "INTEGER PRIMARY KEY",
        _ => panic!("fixture: surrogate variant only exists on PostgreSQL"),
    };
    let t = db.qt(pg_schema, table);
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (
            surrogate_key {sk},
            order_id bigint NOT NULL,
            line_item_id int NOT NULL,
            order_date date NOT NULL,
            customer_id bigint NOT NULL,
            quantity int NOT NULL,
            amount_cents bigint NOT NULL,
            loaded_at {});\n",
        timestamp_default_now(db)
    ));
    let mut cols = vec![
        "order_id",
        "line_item_id",
        "order_date",
        "customer_id",
        "quantity",
        "amount_cents",
        "loaded_at",
    ];
    match surrogate {
        Surrogate::Default => {}
        Surrogate::UuidNoDefault => {
            cols.insert(0, "surrogate_key");
            for r in rows.iter_mut() {
                r.insert(0, "gen_random_uuid()".to_string());
            }
        }
        Surrogate::TextUuidNoDefault => {
            cols.insert(0, "surrogate_key");
            for r in rows.iter_mut() {
                r.insert(0, "gen_random_uuid()::text".to_string());
            }
        }
    }
    sql.push_str(&inserts(db, &t, &cols, &rows));
    (sql, e)
}

/// A view over a daily_orders table (its downstream).
pub fn revenue_view(db: &TestDb, pg_schema: &str, view: &str, table: &str) -> String {
    format!(
        "CREATE VIEW {} AS SELECT order_date, SUM(amount_cents) AS revenue_cents FROM {} GROUP BY order_date;\n",
        db.qt(pg_schema, view),
        db.qt(pg_schema, table)
    )
}

// ---------------------------------------------------------------------------------------------
// 2. Events with a batch id

pub const EVENT_TYPES: [&str; 4] = ["page_view", "add_to_cart", "checkout", "refund"];

/// Four batches of 30 events (batch b on 2026-11-0{b+1}); batch 1 is loaded a second time
/// under a new `_batch_id`. Only `id` and `_batch_id` differ between the copies.
pub fn customer_events(db: &TestDb, pg_schema: &str, table: &str) -> (String, Expected) {
    struct Ev {
        event_id: i64,
        customer_id: i64,
        event_type: &'static str,
        event_ts: String,
        day: String,
        points: i64,
    }
    let mut batches: Vec<Vec<Ev>> = Vec::new();
    for b in 0..4u64 {
        let day = plus_days(date(2026, 11, 1), b);
        batches.push(
            (0..30i64)
                .map(|e| Ev {
                    event_id: 5000 + 100 * b as i64 + e,
                    customer_id: 300 + e % 7,
                    event_type: EVENT_TYPES[(e % 4) as usize],
                    event_ts: ts(day, 10, (e % 5) as u32, 0),
                    day: day.to_string(),
                    points: [5, 10, 25][(e % 3) as usize],
                })
                .collect(),
        );
    }
    // Self-check: event_id is the only payload column (other than the measure) unique alone.
    let all: Vec<&Ev> = batches.iter().flatten().collect();
    let n = all.len();
    assert_eq!(
        all.iter()
            .map(|e| e.event_id)
            .collect::<BTreeSet<_>>()
            .len(),
        n
    );
    assert!(
        all.iter()
            .map(|e| e.customer_id)
            .collect::<BTreeSet<_>>()
            .len()
            < n
    );
    assert!(
        all.iter()
            .map(|e| e.event_type)
            .collect::<BTreeSet<_>>()
            .len()
            < n
    );
    assert!(
        all.iter()
            .map(|e| &e.event_ts)
            .collect::<BTreeSet<_>>()
            .len()
            < n
    );

    let loads: Vec<(usize, String)> = vec![
        (0, "batch-20261101-a1".to_string()),
        (1, "batch-20261102-b7".to_string()),
        (2, "batch-20261103-c3".to_string()),
        (3, "batch-20261104-d9".to_string()),
        (1, "batch-20261102-retry-e2".to_string()),
    ];
    let mut rows = Vec::new();
    let mut xrows = Vec::new();
    let mut seq = 0i64;
    for (b, batch_id) in &loads {
        for e in &batches[*b] {
            rows.push(vec![
                e.event_id.to_string(),
                e.customer_id.to_string(),
                lit(e.event_type),
                lit(&e.event_ts),
                e.points.to_string(),
                lit(batch_id),
            ]);
            xrows.push(XRow {
                key: vec![Some(e.event_id.to_string())],
                payload: format!(
                    "{}|{}|{}|{}|{}",
                    e.event_id, e.customer_id, e.event_type, e.event_ts, e.points
                ),
                day: Some(e.day.clone()),
                measures: vec![e.points as i128],
                // lowest surrogate survives: rows inserted earlier get lower ids.
                rank: -seq,
            });
            seq += 1;
        }
    }
    let t = db.qt(pg_schema, table);
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (
            id {},
            event_id bigint NOT NULL,
            customer_id bigint NOT NULL,
            event_type varchar(20) NOT NULL,
            event_ts {} NOT NULL,
            points int NOT NULL,
            _batch_id varchar(60) NOT NULL);\n",
        bigserial_pk(db),
        timestamp(db)
    ));
    sql.push_str(&inserts(
        db,
        &t,
        &[
            "event_id",
            "customer_id",
            "event_type",
            "event_ts",
            "points",
            "_batch_id",
        ],
        &rows,
    ));
    (sql, compute(vec![measure("points", 0)], &xrows, true, true))
}

// ---------------------------------------------------------------------------------------------
// 3. A summary table with conflicting duplicates (key from the config)

/// Twenty days from 2026-10-01. Days 2, 5, 9: recomputed identically (exact). Day 4: recomputed
/// higher; day 12: recomputed lower; day 15: three different values, the latest `computed_at`
/// being neither the smallest nor the largest, and inserted in an order where the lowest
/// surrogate is not the latest row.
pub fn revenue_summary(
    db: &TestDb,
    pg_schema: &str,
    table: &str,
    decimal: bool,
) -> (String, Expected) {
    revenue_summary_under(db, pg_schema, table, decimal, "latest")
}

/// `revenue_summary` with the expected `overcount_survivor` under `rule`: `latest` or
/// `earliest` (by computed_at) or `lowest_surrogate` (by insertion order, i.e. summary_id).
pub fn revenue_summary_under(
    db: &TestDb,
    pg_schema: &str,
    table: &str,
    decimal: bool,
    rule: &str,
) -> (String, Expected) {
    let gross_col = if decimal { "gross" } else { "gross_cents" };
    let scale = if decimal { 2 } else { 0 };
    // (day index, gross in cents, order_count, computed_at copy k) in insertion order.
    let mut plan: Vec<(u64, i64, i64, u32)> = Vec::new();
    for i in 0..20u64 {
        let g = 1_000_000 + 12_345 * i as i64 + if decimal { 37 } else { 0 };
        let oc = 10 + i as i64;
        match i {
            2 | 5 | 9 => {
                plan.push((i, g, oc, 0));
                plan.push((i, g, oc, 1));
            }
            4 => {
                plan.push((i, g, oc, 0));
                plan.push((i, g + 5_000, oc + 2, 1));
            }
            12 => {
                plan.push((i, g, oc, 0));
                plan.push((i, g - 2_500, oc, 1));
            }
            15 => {
                plan.push((i, g - 300, oc, 1));
                plan.push((i, g, oc + 1, 2));
                plan.push((i, g + 700, oc, 0));
            }
            _ => plan.push((i, g, oc, 0)),
        }
    }
    let money = |cents: i64| {
        if decimal {
            format!("{}.{:02}", cents / 100, cents % 100)
        } else {
            cents.to_string()
        }
    };
    let mut rows = Vec::new();
    let mut xrows = Vec::new();
    for (seq, (i, g, oc, k)) in plan.iter().enumerate() {
        let day = plus_days(date(2026, 10, 1), *i);
        let computed_at = ts(plus_days(day, 1), 2 + *k, 0, 0);
        rows.push(vec![
            lit(&day.to_string()),
            money(*g),
            oc.to_string(),
            lit(&computed_at),
        ]);
        xrows.push(XRow {
            key: vec![Some(day.to_string())],
            payload: format!("{day}|{g}|{oc}"),
            day: Some(day.to_string()),
            measures: vec![*g as i128],
            rank: match rule {
                "latest" => *k as i64,
                "earliest" => -(*k as i64),
                "lowest_surrogate" => -(seq as i64),
                other => panic!("fixture: unknown rule {other}"),
            },
        });
    }
    let surrogate = match db.engine {
        Engine::Postgres => "serial",
        Engine::MySql => "int NOT NULL AUTO_INCREMENT PRIMARY KEY",
        Engine::Sqlite => "INTEGER PRIMARY KEY",
    };
    let gross_type = match (decimal, db.engine) {
        (false, _) => "bigint",
        (true, Engine::Postgres) => "numeric(12,2)",
        (true, Engine::MySql) => "decimal(12,2)",
        (true, Engine::Sqlite) => panic!("fixture: SQLite has no exact decimals"),
    };
    let t = db.qt(pg_schema, table);
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (
            summary_id {surrogate},
            revenue_date date NOT NULL,
            {} {gross_type} NOT NULL,
            order_count int NOT NULL,
            computed_at {} NOT NULL);\n",
        db.q(gross_col),
        timestamp(db)
    ));
    sql.push_str(&inserts(
        db,
        &t,
        &["revenue_date", gross_col, "order_count", "computed_at"],
        &rows,
    ));
    (
        sql,
        compute(vec![measure(gross_col, scale)], &xrows, true, true),
    )
}

/// The `[[table]]` entry for a revenue summary table.
pub fn revenue_summary_config(name: &str, gross_col: &str) -> String {
    revenue_summary_config_with(name, gross_col, "latest:computed_at")
}

pub fn revenue_summary_config_with(name: &str, gross_col: &str, survivor: &str) -> String {
    format!(
        "[[table]]\nname = {}\nnatural_key = [\"revenue_date\"]\nload_metadata = [\"computed_at\"]\nmeasures = [\"{gross_col}\"]\nsurvivor = \"{survivor}\"\n\n",
        toml_str(name)
    )
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// 4. A clean dimension with a natural primary key

/// How many rows [`currencies`] holds.
pub const CURRENCY_ROWS: i64 = 7;

pub fn currencies(db: &TestDb, pg_schema: &str) -> String {
    let code = match db.engine {
        Engine::Sqlite => "char(3) NOT NULL PRIMARY KEY",
        _ => "char(3) PRIMARY KEY",
    };
    let t = db.qt(pg_schema, "currencies");
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (code {code}, name varchar(100) NOT NULL, minor_units int NOT NULL);\n"
    ));
    let rows: Vec<Vec<String>> = [
        ("USD", "US dollar", 2),
        ("EUR", "Euro", 2),
        ("JPY", "Yen", 0),
        ("GBP", "Pound sterling", 2),
        ("CHF", "Swiss franc", 2),
        ("BHD", "Bahraini dinar", 3),
        ("SEK", "Swedish krona", 2),
    ]
    .iter()
    .map(|(c, n, m)| vec![lit(c), lit(n), m.to_string()])
    .collect();
    assert_eq!(rows.len() as i64, CURRENCY_ROWS);
    sql.push_str(&inserts(db, &t, &["code", "name", "minor_units"], &rows));
    sql
}

// ---------------------------------------------------------------------------------------------
// 5. A history table (many rows per order, legitimately)

pub const STATUSES: [&str; 4] = ["created", "paid", "shipped", "delivered"];
pub const NOTES: [&str; 3] = [
    "customer asked to leave the parcel at the back door",
    "address corrected by support after a failed delivery attempt",
    "payment retried by the provider, see ticket in the helpdesk",
];

/// Returns the script and the rows (column -> text, `None` for NULL).
pub fn order_status_history(
    db: &TestDb,
    pg_schema: &str,
) -> (String, Vec<BTreeMap<String, Option<String>>>) {
    let mut rows = Vec::new();
    let mut maps = Vec::new();
    for o in 1..=40i64 {
        let steps = 2 + (o % 3) as usize;
        for (s, status) in STATUSES.iter().enumerate().take(steps) {
            let day = plus_days(date(2026, 11, 1), (o % 6) as u64);
            let changed_at = ts(day, 8 + 2 * s as u32, 15 * (o % 4) as u32, 0);
            let note = if (o + s as i64) % 4 == 0 {
                Some(NOTES[(o % 3) as usize])
            } else {
                None
            };
            let order_id = 7000 + o;
            rows.push(vec![
                order_id.to_string(),
                lit(status),
                lit(&changed_at),
                note.map(lit).unwrap_or_else(|| "NULL".to_string()),
            ]);
            let mut m = BTreeMap::new();
            m.insert("order_id".to_string(), Some(order_id.to_string()));
            m.insert("status".to_string(), Some(status.to_string()));
            m.insert("changed_at".to_string(), Some(changed_at));
            m.insert("note".to_string(), note.map(|n| n.to_string()));
            maps.push(m);
        }
    }
    let t = db.qt(pg_schema, "order_status_history");
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (order_id bigint NOT NULL, status varchar(20) NOT NULL, changed_at {} NOT NULL, note text);\n",
        timestamp(db)
    ));
    sql.push_str(&inserts(
        db,
        &t,
        &["order_id", "status", "changed_at", "note"],
        &rows,
    ));
    (sql, maps)
}

/// Whether `columns` identify one row of `rows` (NULLs compared equal, as GROUP BY does).
pub fn is_unique(rows: &[BTreeMap<String, Option<String>>], columns: &[String]) -> bool {
    let mut seen = BTreeSet::new();
    for r in rows {
        let k: Vec<Option<String>> = columns
            .iter()
            .map(|c| {
                r.get(c)
                    .unwrap_or_else(|| panic!("the table has no column {c:?}"))
                    .clone()
            })
            .collect();
        if !seen.insert(k) {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// 6. Hostile names

pub const HOSTILE_SCHEMA: &str = "Weird \"Schema\"; <b>x</b>";
pub const HOSTILE_TABLE: &str = "Weird \"Table\" <script>alert(1)</script>";
pub const HOSTILE_KEY: &str = "Weird \"col\". <b>order_id";

pub fn hostile_amount(db: &TestDb) -> &'static str {
    match db.engine {
        Engine::MySql => "amount`; DROP TABLE x; --",
        _ => "amount; DROP TABLE \"x\"; --",
    }
}

/// Forty orders keyed by the hostile key column; orders 1..=6 loaded twice, order 7 three
/// times. The only payload columns are the key and the amount (a measure).
pub fn hostile(db: &TestDb) -> (String, Expected) {
    let amount = hostile_amount(db);
    let mut rows = Vec::new();
    let mut xrows = Vec::new();
    for i in 1..=40i64 {
        let copies = match i {
            1..=6 => 2,
            7 => 3,
            _ => 1,
        };
        let key = 9000 + i;
        let amt = [100, 250, 100, 75][(i % 4) as usize];
        for k in 0..copies {
            let loaded = ts(date(2026, 11, 2), 3, k as u32, 0);
            rows.push(vec![key.to_string(), amt.to_string(), lit(&loaded)]);
            xrows.push(XRow {
                key: vec![Some(key.to_string())],
                payload: format!("{key}|{amt}"),
                day: None,
                measures: vec![amt as i128],
                rank: k,
            });
        }
    }
    let t = db.qt(HOSTILE_SCHEMA, HOSTILE_TABLE);
    let mut sql = db.create_schema(HOSTILE_SCHEMA);
    sql.push_str(&format!(
        "CREATE TABLE {t} ({} {}, {} bigint NOT NULL, {} bigint NOT NULL, loaded_at {});\n",
        db.q("row id"),
        bigserial_pk(db),
        db.q(HOSTILE_KEY),
        db.q(amount),
        timestamp_default_now(db)
    ));
    sql.push_str(&inserts(db, &t, &[HOSTILE_KEY, amount, "loaded_at"], &rows));
    (sql, compute(vec![measure(amount, 0)], &xrows, false, true))
}

// ---------------------------------------------------------------------------------------------
// 7. A nullable declared key with duplicate NULL groups

/// `UNIQUE (account_id, region)`, region nullable. Rows (1, NULL) x2 with equal payload
/// (exact), (2, NULL) x3 with credit limits 100, 100, 250 (conflicting), plus clean rows.
/// With `nulls_not_distinct` (PostgreSQL 15) the constraint is `NULLS NOT DISTINCT` and only
/// the clean rows are inserted.
pub fn nullable_unique(
    db: &TestDb,
    pg_schema: &str,
    table: &str,
    nulls_not_distinct: bool,
) -> (String, Expected) {
    let mut data: Vec<(i64, Option<&str>, i64)> = vec![
        (1, Some("eu"), 1000),
        (1, Some("us"), 1200),
        (3, Some("eu"), 800),
        (3, None, 900),
        (4, Some("apac"), 700),
    ];
    if !nulls_not_distinct {
        data.extend([
            (1, None, 500),
            (2, None, 100),
            (1, None, 500),
            (2, None, 100),
            (2, None, 250),
        ]);
    }
    let rows: Vec<Vec<String>> = data
        .iter()
        .map(|(a, r, c)| {
            vec![
                a.to_string(),
                r.map(lit).unwrap_or_else(|| "NULL".to_string()),
                c.to_string(),
            ]
        })
        .collect();
    let xrows: Vec<XRow> = data
        .iter()
        .map(|(a, r, c)| XRow {
            key: vec![Some(a.to_string()), r.map(|s| s.to_string())],
            payload: format!("{a}|{r:?}|{c}"),
            day: None,
            measures: vec![*c as i128],
            rank: 0,
        })
        .collect();
    let t = db.qt(pg_schema, table);
    let nnd = if nulls_not_distinct {
        " NULLS NOT DISTINCT"
    } else {
        ""
    };
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (account_id bigint NOT NULL, region varchar(20), credit_limit bigint NOT NULL, UNIQUE{nnd} (account_id, region));\n"
    ));
    sql.push_str(&inserts(
        db,
        &t,
        &["account_id", "region", "credit_limit"],
        &rows,
    ));
    (
        sql,
        compute(vec![measure("credit_limit", 0)], &xrows, false, false),
    )
}

// ---------------------------------------------------------------------------------------------
// 9. A natural key the database already enforces

pub fn enforced_order_lines(db: &TestDb, pg_schema: &str, table: &str) -> String {
    let lines = order_lines(&ten_days()[..3]);
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let t = l.texts();
            vec![t[0].clone(), t[1].clone(), lit(&t[2]), t[5].clone()]
        })
        .collect();
    let t = db.qt(pg_schema, table);
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (id {}, order_id bigint NOT NULL, line_item_id int NOT NULL, order_date date NOT NULL, amount_cents bigint NOT NULL, UNIQUE (order_id, line_item_id));\n",
        bigserial_pk(db)
    ));
    sql.push_str(&inserts(
        db,
        &t,
        &["order_id", "line_item_id", "order_date", "amount_cents"],
        &rows,
    ));
    sql
}

// ---------------------------------------------------------------------------------------------
// 10. A free-text log with no key

pub const LOG_MESSAGES: [&str; 6] = [
    "connection reset by peer while fetching the upstream catalog, retrying in 5 seconds",
    "worker 3 finished the nightly export of 1 204 files in 41 seconds",
    "user session expired after 30 minutes of inactivity, redirecting to the login page",
    "could not parse the shipping address, falling back to the billing address",
    "cache warm-up skipped because the previous run is still in progress",
    "rate limit reached for the payments API, backing off for two minutes",
];

pub fn app_log(db: &TestDb, pg_schema: &str) -> String {
    let logged_at = match db.engine {
        Engine::Postgres => "timestamptz NOT NULL DEFAULT now()",
        _ => timestamp_default_now(db),
    };
    let t = db.qt(pg_schema, "app_log");
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (id {}, message text NOT NULL, logged_at {logged_at});\n",
        bigserial_pk(db)
    ));
    let rows: Vec<Vec<String>> = (0..36)
        .map(|i| vec![lit(LOG_MESSAGES[(i * 7 + i / 6) % 6])])
        .collect();
    sql.push_str(&inserts(db, &t, &["message"], &rows));
    sql
}

// ---------------------------------------------------------------------------------------------
// ELT tool columns (Airbyte, dlt, Fivetran, custom _etl_*) around a business payload

/// A deterministic value that looks like a random (version 4) UUID.
pub fn fake_uuid_v4(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (a, b) = (next(), next());
    let hi = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    let lo = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

pub const ELT_PAYLOAD: [&str; 5] = ["charge_id", "customer_id", "amount", "currency", "created"];
pub const ELT_METADATA: [&str; 8] = [
    "_airbyte_raw_id",
    "_airbyte_extracted_at",
    "_dlt_load_id",
    "_fivetran_synced",
    "_etl_batch",
    "ingested_at",
    "inserted_at",
    "updated_at",
];

/// 30 charges synced once; the ten created on 2026-11-01 (g % 3 == 0) were synced again, with
/// new values in every ELT column.
pub fn elt_charges(db: &TestDb, pg_schema: &str, table: &str) -> (String, Expected) {
    let mut rows = Vec::new();
    let mut xrows = Vec::new();
    let mut seed = 1u64;
    for sync in 0..2u32 {
        for g in 1..=30i64 {
            if sync == 1 && g % 3 != 0 {
                continue;
            }
            let created = plus_days(date(2026, 11, 1), (g % 3) as u64).to_string();
            let at = ts(date(2026, 11, 5), 4 + sync, 0, 0);
            seed += 1;
            rows.push(vec![
                lit(&format!("ch_{g:04}")),
                lit(&format!("cus_{}", g % 7)),
                (100 * g).to_string(),
                lit("usd"),
                lit(&created),
                lit(&fake_uuid_v4(seed)),
                lit(&at),
                lit(&format!("1700000000.{sync}")),
                lit(&at),
                (sync + 1).to_string(),
                lit(&at),
                lit(&at),
                lit(&at),
            ]);
            xrows.push(XRow {
                key: vec![Some(format!("ch_{g:04}"))],
                payload: format!("{g}"),
                day: Some(created),
                measures: vec![100 * g as i128],
                rank: sync as i64,
            });
        }
    }
    let ts_ty = timestamp(db);
    let t = db.qt(pg_schema, table);
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (charge_id varchar(40) NOT NULL, customer_id varchar(40) NOT NULL,
            amount bigint NOT NULL, currency char(3) NOT NULL, created date NOT NULL,
            _airbyte_raw_id varchar(36) NOT NULL, _airbyte_extracted_at {ts_ty} NOT NULL,
            _dlt_load_id varchar(40), _fivetran_synced {ts_ty}, _etl_batch int,
            ingested_at {ts_ty}, inserted_at {ts_ty}, updated_at {ts_ty});\n"
    ));
    let mut cols: Vec<&str> = ELT_PAYLOAD.to_vec();
    cols.extend(ELT_METADATA);
    sql.push_str(&inserts(db, &t, &cols, &rows));
    (sql, compute(vec![measure("amount", 0)], &xrows, true, true))
}

// ---------------------------------------------------------------------------------------------
// Amounts beyond 64 bits

/// Entries 1 and 4 hold 9e18 three times each (exact), entry 2 holds 9e18 once, entry 3 holds
/// 5 twice, entries 5..=12 hold small single values: the total and the overcount exceed
/// u64::MAX, so they must come back as decimal strings.
pub fn big_ledger(db: &TestDb, pg_schema: &str) -> (String, Expected) {
    const BIG: i64 = 9_000_000_000_000_000_000;
    let mut data: Vec<(i64, i64, usize)> = vec![(1, BIG, 3), (2, BIG, 1), (3, 5, 2), (4, BIG, 3)];
    data.extend((5..=12).map(|e| (e, e * 10, 1)));
    let mut rows = Vec::new();
    let mut xrows = Vec::new();
    for (entry, amount, copies) in data {
        for k in 0..copies {
            rows.push(vec![
                entry.to_string(),
                amount.to_string(),
                lit(&ts(date(2026, 11, 3), 1, k as u32, 0)),
            ]);
            xrows.push(XRow {
                key: vec![Some(entry.to_string())],
                payload: format!("{entry}|{amount}"),
                day: None,
                measures: vec![amount as i128],
                rank: k as i64,
            });
        }
    }
    let t = db.qt(pg_schema, "big_ledger");
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (entry_id bigint NOT NULL, amount bigint NOT NULL, loaded_at {});\n",
        timestamp(db)
    ));
    sql.push_str(&inserts(
        db,
        &t,
        &["entry_id", "amount", "loaded_at"],
        &rows,
    ));
    let e = compute(vec![measure("amount", 0)], &xrows, false, true);
    assert!(e.figs[0].total > u64::MAX as i128 && e.figs[0].overcount > u64::MAX as i128);
    (sql, e)
}

// ---------------------------------------------------------------------------------------------
// A table whose small sample suggests a key the whole table contradicts

/// 400 single-line orders, then 5 orders with two line items (sku and amount constant per
/// order), then 4 of those lines loaded again. A sample of the first rows sees order_id as
/// unique; the whole table does not.
pub fn mostly_single_line_orders(db: &TestDb, table: &str) -> (String, Expected) {
    let mut lines: Vec<(i64, i64)> = (1..=400).map(|o| (o, 1)).collect();
    for o in 401..=405 {
        lines.push((o, 1));
        lines.push((o, 2));
    }
    let retried: Vec<(i64, i64)> = lines[lines.len() - 4..].to_vec();
    lines.extend(retried);
    let mut rows = Vec::new();
    let mut xrows = Vec::new();
    for (o, li) in lines {
        let sku = format!("SKU-{}", o % 13);
        let amount = 1000 + o % 7;
        rows.push(vec![
            o.to_string(),
            li.to_string(),
            lit(&sku),
            amount.to_string(),
        ]);
        xrows.push(XRow {
            key: vec![Some(o.to_string()), Some(li.to_string())],
            payload: format!("{o}|{li}|{sku}|{amount}"),
            day: None,
            measures: vec![amount as i128],
            rank: 0,
        });
    }
    let t = db.qt("public", table);
    let mut sql = format!(
        "CREATE TABLE {t} (order_id bigint NOT NULL, line_item_id int NOT NULL, sku varchar(20) NOT NULL, amount_cents bigint NOT NULL);\n"
    );
    sql.push_str(&inserts(
        db,
        &t,
        &["order_id", "line_item_id", "sku", "amount_cents"],
        &rows,
    ));
    (
        sql,
        compute(vec![measure("amount_cents", 0)], &xrows, false, false),
    )
}

// ---------------------------------------------------------------------------------------------
// A small retried load behind any kind of surrogate column

/// `CREATE TABLE` with `surrogate_def` as its first column (named `sk`), then 20 events of
/// which events 1..=5 are loaded a second time. Payload: event_id, points.
pub fn retried_events_behind(
    db: &TestDb,
    pg_schema: &str,
    table: &str,
    surrogate_def: &str,
) -> (String, Expected) {
    let mut rows = Vec::new();
    let mut xrows = Vec::new();
    for copy in 0..2u32 {
        for ev in 1..=20i64 {
            if copy == 1 && ev > 5 {
                continue;
            }
            let points = [3, 7, 11][(ev % 3) as usize];
            rows.push(vec![
                ev.to_string(),
                points.to_string(),
                lit(&ts(date(2026, 11, 9), 2, copy, 0)),
            ]);
            xrows.push(XRow {
                key: vec![Some(ev.to_string())],
                payload: format!("{ev}|{points}"),
                day: None,
                measures: vec![points as i128],
                rank: copy as i64,
            });
        }
    }
    let t = db.qt(pg_schema, table);
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (sk {surrogate_def}, event_id bigint NOT NULL, points int NOT NULL, loaded_at {} NOT NULL);\n",
        timestamp(db)
    ));
    sql.push_str(&inserts(
        db,
        &t,
        &["event_id", "points", "loaded_at"],
        &rows,
    ));
    (
        sql,
        compute(vec![measure("points", 0)], &xrows, false, true),
    )
}

// ---------------------------------------------------------------------------------------------
// One big duplicate group next to small ones (samples are capped per group)

/// `crowded_events`: 1000 rows with a NULL `event_id` (999 of kind `a`, the last of kind `b`:
/// one conflicting group), then event_ids 1..=4 twice each with identical payload (4 exact
/// groups). Natural key `event_id` (config: [`crowded_events_config`]).
pub fn crowded_events(db: &TestDb, pg_schema: &str) -> String {
    let t = db.qt(pg_schema, "crowded_events");
    let mut sql = db.create_schema(pg_schema);
    sql.push_str(&format!(
        "CREATE TABLE {t} (event_id bigint, kind varchar(10) NOT NULL, amount_cents bigint NOT NULL);\n"
    ));
    let mut rows: Vec<Vec<String>> = (0..1000)
        .map(|i| {
            let kind = if i == 999 { "b" } else { "a" };
            vec!["NULL".into(), lit(kind), "1".into()]
        })
        .collect();
    for ev in 1..=4 {
        for _ in 0..2 {
            rows.push(vec![ev.to_string(), lit("x"), "10".into()]);
        }
    }
    sql.push_str(&inserts(
        db,
        &t,
        &["event_id", "kind", "amount_cents"],
        &rows,
    ));
    sql
}

pub fn crowded_events_config(name: &str) -> String {
    format!(
        "[[table]]\nname = {}\nnatural_key = [\"event_id\"]\n\n",
        toml_str(name)
    )
}

// ---------------------------------------------------------------------------------------------
// Days: a group spanning two days, duplicated days with clean rows

/// `orders_by_day` (order_id, order_date, amount_cents), natural key `order_id`
/// ([`orders_by_day_config`]):
///
/// | day        | rows                                                  |
/// |------------|-------------------------------------------------------|
/// | 2026-11-01 | order 1 twice (100, exact), order 2 (50), order 3 (30) |
/// | 2026-11-02 | order 3 again (30), order 4 three times (70, exact), orders 5 (20) and 6 (10) |
/// | 2026-11-03 | order 7 (5)                                           |
///
/// Order 3 spans two days (its rows differ in order_date: a conflicting group of 11-01, the
/// earliest day among its rows).
pub fn orders_by_day(db: &TestDb) -> String {
    let t = db.qt("public", "orders_by_day");
    let mut sql = db.create_schema("public");
    sql.push_str(&format!(
        "CREATE TABLE {t} (order_id bigint NOT NULL, order_date date NOT NULL, amount_cents bigint NOT NULL);\n"
    ));
    let rows: Vec<Vec<String>> = [
        (1, 1, 100),
        (1, 1, 100),
        (2, 1, 50),
        (3, 1, 30),
        (3, 2, 30),
        (4, 2, 70),
        (4, 2, 70),
        (4, 2, 70),
        (5, 2, 20),
        (6, 2, 10),
        (7, 3, 5),
    ]
    .iter()
    .map(|(id, day, amount)| {
        vec![
            id.to_string(),
            lit(&date(2026, 11, *day).to_string()),
            amount.to_string(),
        ]
    })
    .collect();
    sql.push_str(&inserts(
        db,
        &t,
        &["order_id", "order_date", "amount_cents"],
        &rows,
    ));
    sql
}

pub fn orders_by_day_config() -> String {
    "[[table]]\nname = \"orders_by_day\"\nnatural_key = [\"order_id\"]\nmeasures = [\"amount_cents\"]\n\n"
        .to_string()
}
