//! The embedded SQLite demo warehouse that `natkey demo` audits.
//!
//! One month (November 2026) of a small shop's warehouse, generated deterministically (an inline
//! fixed-seed generator), so every run prints the same report. What each table demonstrates:
//!
//! - `daily_orders`: the story of the design notes. A task appends each day's order lines with a
//!   UUID it generates itself (no column default), so nothing marks `surrogate_key` as generated
//!   but its values. The orchestrator retried the task on 3 days, one of them twice: every line
//!   of those days is there 2 or 3 times, differing only in `surrogate_key` and `loaded_at`
//!   (exact groups). Quantities and amounts repeat within orders and customers order twice a day,
//!   so `(order_id, line_item_id)` is the only key-like pair that is unique: it is *inferred*.
//! - `customer_events`: an `INTEGER PRIMARY KEY` surrogate and `_batch_id` load metadata; one CRM
//!   export batch was loaded twice. Natural key `event_id`, inferred.
//! - `daily_revenue_summary`: conflicting groups. Three days were recomputed with different
//!   totals and the summary job was retried once (one exact group). The key and the survivor
//!   rule (`latest:computed_at`) come from [`DEMO_CONFIG`].
//! - `currencies`: a clean dimension whose natural key is a declared, `NOT NULL` primary key, so
//!   the database enforces it and it is not scanned (`enforced`). (SQLite lets a non-integer
//!   PRIMARY KEY column hold NULLs unless it says `NOT NULL`.)
//! - `order_status_history`: several rows per order by design (a status can even recur), but no
//!   two rows for one `(order_id, changed_at)`: a history table that must come out `clean`.
//! - `app_log`: free text with repeats and nothing else: `no_key`.
//! - `daily_revenue_v`: a view summing `daily_orders`, reported as its downstream.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Connection, SqliteConnection};

/// The `natkey.toml` the demo is audited with. Only the summary table needs an entry: nothing in
/// its data says which of two computations of a day is the right one.
pub const DEMO_CONFIG: &str = r#"# natkey.toml for the demo warehouse. Every other table's key is declared or inferred.

# The summary job writes one row per day; recomputing a day appends a new row.
# The latest computation of a day is the one to keep.
[[table]]
name = "daily_revenue_summary"
natural_key = ["revenue_date"]
survivor = "latest:computed_at"
measures = ["gross_cents", "order_count"]
"#;

const SCHEMA: &str = "
CREATE TABLE daily_orders (surrogate_key TEXT, order_id INTEGER, line_item_id INTEGER,
    order_date TEXT, customer_id INTEGER, quantity INTEGER, amount_cents INTEGER,
    loaded_at TEXT DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE customer_events (id INTEGER PRIMARY KEY, event_id TEXT, customer_id INTEGER,
    event_type TEXT, event_ts TEXT, points INTEGER, _batch_id TEXT);
CREATE TABLE daily_revenue_summary (summary_id INTEGER PRIMARY KEY, revenue_date TEXT,
    gross_cents INTEGER, order_count INTEGER, computed_at TEXT);
CREATE TABLE currencies (code TEXT NOT NULL PRIMARY KEY, name TEXT, minor_units INTEGER);
CREATE TABLE order_status_history (order_id INTEGER, status TEXT, changed_at TEXT);
CREATE TABLE app_log (id INTEGER PRIMARY KEY, message TEXT,
    logged_at TEXT DEFAULT CURRENT_TIMESTAMP);
CREATE VIEW daily_revenue_v AS SELECT order_date, SUM(amount_cents) AS revenue_cents,
    COUNT(*) AS line_items FROM daily_orders GROUP BY order_date;
";

const DAYS: u32 = 30;
/// Days of November whose order load was retried, with each retry's start (seconds after
/// midnight of the next day; the original load runs at 01:00:00).
const RETRIES: &[(u32, &[u32])] = &[(7, &[4032]), (15, &[3891, 4773]), (23, &[4265])];
/// The CRM export batch (1-based day) that was loaded a second time, the day after.
const RELOADED_BATCH: u32 = 9;
const PRICES: [i64; 8] = [499, 899, 1250, 1999, 2500, 3999, 7450, 15000];
const CURRENCIES: [(&str, &str, i64); 12] = [
    ("AUD", "Australian dollar", 2),
    ("BHD", "Bahraini dinar", 3),
    ("CAD", "Canadian dollar", 2),
    ("CHF", "Swiss franc", 2),
    ("DKK", "Danish krone", 2),
    ("EUR", "Euro", 2),
    ("GBP", "Pound sterling", 2),
    ("JPY", "Japanese yen", 0),
    ("KWD", "Kuwaiti dinar", 3),
    ("NOK", "Norwegian krone", 2),
    ("SEK", "Swedish krona", 2),
    ("USD", "US dollar", 2),
];
const EVENT_TYPES: [(&str, i64); 5] = [
    ("page_view", 0),
    ("signup", 50),
    ("purchase", 10),
    ("review", 5),
    ("refund", -10),
];

/// A 64-bit LCG with a splitmix output function: deterministic, no crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A version-4-shaped UUID (as a task writing `gen_random_uuid()` itself would store).
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 + (b >> 62),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Day `day` counted from 2026-11-01 = 1 (days past 30 are in December).
fn date(day: u32) -> String {
    if day <= 30 {
        format!("2026-11-{day:02}")
    } else {
        format!("2026-12-{:02}", day - 30)
    }
}

/// A timestamp `secs` seconds after midnight of `day` (may run into later days).
fn ts(day: u32, secs: u32) -> String {
    let (d, s) = (day + secs / 86_400, secs % 86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        date(d),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// One order line as the source system has it (once).
struct Line {
    order_id: i64,
    line_item_id: i64,
    day: u32,
    customer_id: i64,
    quantity: i64,
    amount_cents: i64,
}

/// The true order lines: 36–44 orders a day, 1–3 lines each.
fn order_lines() -> Vec<Line> {
    let (mut rng, mut lines) = (Lcg(0x6e61_746b_6579), Vec::new());
    let (mut order_id, mut customer_id) = (100_000, 0);
    for day in 1..=DAYS {
        for n in 0..36 + rng.below(9) {
            order_id += 1;
            // Every tenth order of a day comes from the previous order's customer.
            if n % 10 != 9 {
                customer_id = 1 + rng.below(200) as i64
            }
            let (mut quantity, mut price) = (0, 0);
            for line_item_id in 1..=1 + rng.below(3) as i64 {
                // Line 2 of every fourth order repeats line 1's quantity and amount.
                if line_item_id != 2 || order_id % 4 != 0 {
                    quantity = 1 + rng.below(3) as i64;
                    price = PRICES[rng.below(PRICES.len() as u64) as usize];
                }
                lines.push(Line {
                    order_id,
                    line_item_id,
                    day,
                    customer_id,
                    quantity,
                    amount_cents: quantity * price,
                });
            }
        }
    }
    lines
}

/// The CRM's events: (batch day, event_id, customer_id, event_type, event_ts, points).
fn customer_events() -> Vec<(u32, String, i64, &'static str, String, i64)> {
    let (mut rng, mut events, mut secs) = (Lcg(0x6576_656e_7473), Vec::new(), 0);
    for day in 1..=14 {
        for n in 0..25 + rng.below(11) as u32 {
            // Every fifth event shares its timestamp with the previous one (signup + page view).
            if n % 5 != 4 {
                secs = 6 * 3600 + rng.below(16 * 3600) as u32
            }
            let (kind, points) = EVENT_TYPES[rng.below(5) as usize];
            let id = format!("evt-{:06}", events.len() + 1);
            events.push((
                day,
                id,
                1 + rng.below(200) as i64,
                kind,
                ts(day, secs),
                points * (1 + rng.below(5) as i64),
            ));
        }
    }
    events
}

/// Runs one INSERT with bound parameters inside the transaction.
macro_rules! insert {
    ($tx:ident, $sql:literal, $($value:expr),+) => {
        sqlx::query($sql)$(.bind($value))+.execute(&mut *$tx).await?
    };
}

/// Creates (or recreates from scratch) the demo warehouse at `path`.
pub async fn create_demo_warehouse(path: &Path) -> Result<(), sqlx::Error> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(sqlx::Error::Io(e)),
            _ => {}
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // A rollback journal, not WAL: the warehouse stays one file that opens read-only cleanly.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;

    let (lines, mut uuids) = (order_lines(), Lcg(0x7575_6964));
    let mut summaries = Vec::new(); // (day, gross_cents, order_count, computed_at)
    for day in 1..=DAYS {
        let retries = RETRIES.iter().find(|r| r.0 == day).map_or(&[][..], |r| r.1);
        let of_day: Vec<&Line> = lines.iter().filter(|l| l.day == day).collect();
        for load in std::iter::once(&3600).chain(retries) {
            for l in &of_day {
                let (id, at) = (uuids.uuid(), ts(day + 1, *load));
                let (item, customer) = (l.line_item_id, l.customer_id);
                insert!(
                    tx,
                    "INSERT INTO daily_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    id,
                    l.order_id,
                    item,
                    date(day),
                    customer,
                    l.quantity,
                    l.amount_cents,
                    at
                );
            }
        }
        // The nightly summary runs at 02:00, after any retry: inflated on retried days.
        let gross: i64 = of_day.iter().map(|l| l.amount_cents).sum();
        let orders = of_day.iter().filter(|l| l.line_item_id == 1).count() as i64;
        let copies = 1 + retries.len() as i64;
        summaries.push((day, gross * copies, orders, ts(day + 1, 2 * 3600)));
        if day == 19 {
            summaries.push((day, gross, orders, ts(day + 1, 2 * 3600))); // the job was retried
        }
        if copies > 1 {
            // On 2026-12-01 an analyst recomputed the retried days from deduplicated orders.
            summaries.push((day, gross, orders, ts(31, 10 * 3600 + day * 60)));
        }
    }
    summaries.sort_by(|a, b| a.3.cmp(&b.3)); // summary_id in the order they were computed
    for (day, gross, orders, at) in summaries {
        insert!(
            tx,
            "INSERT INTO daily_revenue_summary (revenue_date, gross_cents, order_count, computed_at) VALUES (?, ?, ?, ?)",
            date(day),
            gross,
            orders,
            at
        );
    }

    let events = customer_events();
    for batch in 1..=14 {
        let mut loads = vec![(batch, 1)];
        if batch == RELOADED_BATCH + 1 {
            loads.push((RELOADED_BATCH, 2));
        }
        for (b, attempt) in loads {
            for (_, id, customer, kind, at, points) in events.iter().filter(|e| e.0 == b) {
                let batch_id = format!("crm-{}-{attempt}", date(b));
                insert!(
                    tx,
                    "INSERT INTO customer_events (event_id, customer_id, event_type, event_ts, points, _batch_id) VALUES (?, ?, ?, ?, ?, ?)",
                    id,
                    customer,
                    kind,
                    at,
                    points,
                    batch_id
                );
            }
        }
    }

    for (code, name, minor_units) in CURRENCIES {
        insert!(
            tx,
            "INSERT INTO currencies VALUES (?, ?, ?)",
            code,
            name,
            minor_units
        );
    }

    // Placed, paid (every ninth order: after two failed payments), shipped with the day's batch
    // at 14:00 the next day, then delivered, or cancelled instead (every 25th order).
    let mut rng = Lcg(0x6869_7374);
    for l in lines.iter().filter(|l| l.line_item_id == 1) {
        let placed = 7 * 3600 + rng.below(15 * 3600) as u32;
        let mut history = vec![("placed", ts(l.day, placed))];
        if l.order_id % 9 == 0 {
            history.push(("payment_failed", ts(l.day, placed + 95)));
            history.push(("payment_failed", ts(l.day, placed + 610)));
        }
        history.push(("paid", ts(l.day, placed + 900)));
        if l.order_id % 25 == 0 {
            let cancelled = placed + 3600 + rng.below(3600) as u32;
            history.push(("cancelled", ts(l.day, cancelled)));
        } else {
            history.push(("shipped", ts(l.day + 1, 14 * 3600)));
            let delivered = 9 * 3600 + rng.below(9 * 3600) as u32;
            history.push(("delivered", ts(l.day + 2 + rng.below(2) as u32, delivered)));
        }
        for (status, at) in history {
            insert!(
                tx,
                "INSERT INTO order_status_history VALUES (?, ?, ?)",
                l.order_id,
                status,
                at
            );
        }
    }

    let heartbeat = || "scheduler heartbeat ok".to_string();
    for day in 1..=DAYS {
        let retries = RETRIES.iter().find(|r| r.0 == day).map_or(&[][..], |r| r.1);
        let count = lines.iter().filter(|l| l.day == day).count();
        let mut log = vec![
            (0, heartbeat()),
            (3600, format!("load_daily_orders started for {}", date(day))),
        ];
        for (n, at) in (2..).zip(retries) {
            let failed = "load_daily_orders: connection reset by peer after INSERT";
            log.push((at - 30, format!("{failed}; retrying (attempt {n} of 3)")));
        }
        log.push((
            5400,
            format!("load_daily_orders finished: {count} rows inserted"),
        ));
        log.push((7200, "build_daily_revenue_summary finished".to_string()));
        log.extend([6, 12, 18].map(|h| (h * 3600, heartbeat())));
        for (at, message) in log {
            let at = ts(day + 1, at);
            insert!(
                tx,
                "INSERT INTO app_log (message, logged_at) VALUES (?, ?)",
                message,
                at
            );
        }
    }
    tx.commit().await?;
    conn.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn count(conn: &mut SqliteConnection, sql: &'static str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(sql).fetch_one(conn).await
    }

    #[tokio::test]
    async fn demo_warehouse_holds_the_constructed_duplicates() -> Result<(), sqlx::Error> {
        let path = std::env::temp_dir().join(format!("natkey-demo-{}.sqlite", std::process::id()));
        create_demo_warehouse(&path).await?;
        create_demo_warehouse(&path).await?; // recreates from scratch: no rows added
        let options = SqliteConnectOptions::new().filename(&path).read_only(true);
        let mut c = SqliteConnection::connect_with(&options).await?;

        // By construction: every line of a retried day is there once per load.
        let lines = order_lines();
        let on_day = |d: u32| lines.iter().filter(|l| l.day == d).count() as i64;
        let excess: i64 = RETRIES
            .iter()
            .map(|(d, r)| on_day(*d) * r.len() as i64)
            .sum();
        let groups: i64 = RETRIES.iter().map(|(d, _)| on_day(*d)).sum();
        let n_lines = lines.len() as i64;
        let n_orders = lines.iter().filter(|l| l.line_item_id == 1).count() as i64;
        let true_revenue: i64 = lines.iter().map(|l| l.amount_cents).sum();
        let events = customer_events();
        let reloaded = events.iter().filter(|e| e.0 == RELOADED_BATCH).count() as i64;
        let (days, retried) = (DAYS as i64, RETRIES.len() as i64);
        let history = count(&mut c, "SELECT COUNT(*) FROM order_status_history").await?;
        let equal = [
            ("SELECT COUNT(*) FROM daily_orders", n_lines + excess),
            (
                "SELECT COUNT(*) FROM (SELECT 1 FROM daily_orders GROUP BY order_id, line_item_id HAVING COUNT(*) > 1)",
                groups,
            ),
            (
                "SELECT SUM(n - 1) FROM (SELECT COUNT(*) AS n FROM daily_orders GROUP BY order_id, line_item_id)",
                excess,
            ),
            // Exact groups: the payload collapses to the true lines.
            (
                "SELECT COUNT(*) FROM (SELECT DISTINCT order_id, line_item_id, order_date, customer_id, quantity, amount_cents FROM daily_orders)",
                n_lines,
            ),
            (
                "SELECT COUNT(DISTINCT surrogate_key) FROM daily_orders WHERE surrogate_key LIKE '________-____-4___-____-____________'",
                n_lines + excess,
            ),
            (
                "SELECT COUNT(DISTINCT loaded_at) FROM daily_orders",
                days + 4,
            ),
            (
                "SELECT SUM(amount_cents) FROM daily_orders WHERE loaded_at LIKE '% 01:00:00'",
                true_revenue,
            ),
            (
                "SELECT (SELECT SUM(revenue_cents) FROM daily_revenue_v) - SUM(amount_cents) FROM daily_orders",
                0,
            ),
            (
                "SELECT COUNT(*) FROM customer_events",
                events.len() as i64 + reloaded,
            ),
            (
                "SELECT COUNT(*) FROM (SELECT 1 FROM customer_events GROUP BY event_id, customer_id, event_type, event_ts, points HAVING COUNT(*) = 2)",
                reloaded,
            ),
            (
                "SELECT COUNT(*) FROM daily_revenue_summary",
                days + retried + 1,
            ),
            (
                "SELECT COUNT(*) FROM (SELECT 1 FROM daily_revenue_summary GROUP BY revenue_date HAVING COUNT(*) > 1)",
                retried + 1,
            ),
            (
                "SELECT COUNT(*) FROM (SELECT 1 FROM daily_revenue_summary GROUP BY revenue_date HAVING COUNT(DISTINCT gross_cents) > 1)",
                retried,
            ),
            // Keeping each day's latest computation gives the true revenue.
            (
                "SELECT SUM(gross_cents) FROM daily_revenue_summary s WHERE summary_id = (SELECT summary_id FROM daily_revenue_summary t WHERE t.revenue_date = s.revenue_date ORDER BY computed_at DESC, summary_id LIMIT 1)",
                true_revenue,
            ),
            (
                "SELECT COUNT(DISTINCT order_id) FROM order_status_history",
                n_orders,
            ),
            (
                "SELECT COUNT(*) FROM (SELECT DISTINCT order_id, changed_at FROM order_status_history)",
                history,
            ),
            ("SELECT COUNT(*) FROM currencies", CURRENCIES.len() as i64),
        ];
        for (sql, expected) in equal {
            assert_eq!(count(&mut c, sql).await?, expected, "{sql}");
        }
        // Column sets that must not be unique, so that the intended key is the only one.
        let fewer = [
            (
                "SELECT COUNT(*) FROM (SELECT DISTINCT order_id, quantity, amount_cents FROM daily_orders)",
                n_lines,
            ),
            (
                "SELECT COUNT(*) FROM (SELECT DISTINCT order_id, customer_id, order_date FROM daily_orders)",
                n_lines,
            ),
            (
                "SELECT COUNT(*) FROM (SELECT DISTINCT customer_id, order_date, line_item_id FROM daily_orders)",
                n_lines,
            ),
            (
                "SELECT COUNT(DISTINCT event_ts) FROM customer_events",
                events.len() as i64,
            ),
            (
                "SELECT COUNT(*) FROM (SELECT DISTINCT order_id, status FROM order_status_history)",
                history,
            ),
            (
                "SELECT COUNT(DISTINCT changed_at) FROM order_status_history",
                history,
            ),
            ("SELECT COUNT(DISTINCT message) FROM app_log", 7 * days),
        ];
        for (sql, bound) in fewer {
            assert!(count(&mut c, sql).await? < bound, "{sql}");
        }
        c.close().await?;
        std::fs::remove_file(&path)?;
        Ok(())
    }
}
