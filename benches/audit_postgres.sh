#!/usr/bin/env bash
# Benchmark: `natkey audit` on a 3M-row retried-load table in PostgreSQL, against the plain
# duplicate-detection query a dbt `unique_combination_of_columns` test runs on the same table.
#
#   bash benches/audit_postgres.sh                 # from the repository root
#   ROWS=100000 RUNS=5 bash benches/audit_postgres.sh
#
# Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres; trust auth), ROWS (3000000),
# RUNS (3), REBUILD (set to rebuild the table even when it already has ROWS rows), PREPARE_ONLY
# (set to build the table and stop), NATKEY (a natkey binary to measure instead of building one).
# Needs psql, cargo, python3 and /usr/bin/time (GNU time; apt-get install time).
set -euo pipefail

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
ROWS="${ROWS:-3000000}"
RUNS="${RUNS:-3}"
DB=natkey_bench
URL="postgres://${PGUSER}@${PGHOST}:${PGPORT}/${DB}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${ROOT}/target/bench"
mkdir -p "$OUT"

for tool in psql cargo python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 2; }
done
if [[ ! -x /usr/bin/time ]]; then
  echo "error: /usr/bin/time (GNU time) is required: apt-get install -y time" >&2
  exit 2
fi

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# --- 1. The table --------------------------------------------------------------------------------
# BASE order lines over 90 days (2026-01-01..03-31), orders of 1, 2 or 3 lines. The load task was
# retried on every ninth day (days 4, 13, ..., 85: about BASE/9 = ROWS/10 lines), each retry
# inserting the day's lines again under new surrogate keys, 7 minutes later; day 40 a second time
# as a reserve. The copies stop at exactly COPIES = ROWS/10, so the table has ROWS rows and every
# copy is one excess row (with the default ROWS: exactly days 4..85 once, no reserve needed).
COPIES=$(( ROWS / 10 ))
BASE=$(( ROWS - COPIES ))

existing=$(psql -X -At -d "$DB" -c "select count(*) from sales.daily_orders" 2>/dev/null || true)
if [[ -z "${REBUILD:-}" && "$existing" == "$ROWS" ]]; then
  echo "== sales.daily_orders in ${DB} already has ${ROWS} rows (set REBUILD=1 to rebuild)"
else
  echo "== building sales.daily_orders in ${DB}: ${ROWS} rows, ${COPIES} of them retried copies"
  PGOPTIONS='-c client_min_messages=warning' \
    psql_q -d postgres -c "drop database if exists ${DB}" -c "create database ${DB}"
  start=$EPOCHREALTIME
  psql_q -d "$DB" -v base="$BASE" -v copies="$COPIES" <<'SQL'
create schema sales;
create table sales.daily_orders (
    surrogate_key uuid default gen_random_uuid(),
    order_id bigint,
    line_item_id int,
    order_date date,
    customer_id bigint,
    quantity int,
    amount_cents bigint,
    loaded_at timestamptz default now()
);
-- Line g of the original loads: every 6 lines hold 3 orders of 1, 2 and 3 lines; a customer
-- places about 10 orders; quantities (and some amounts) repeat within an order.
insert into sales.daily_orders
    (order_id, line_item_id, order_date, customer_id, quantity, amount_cents, loaded_at)
select 1000000 + o, li, day, 1 + (o * 7919) % greatest(:base / 20, 1), q, q * price,
       day + interval '1 day 1 hour'
from (
    select g, o, li,
           date '2026-01-01' + (o / ceil(:base / 2.0 / 90)::bigint)::int as day,
           1 + o % 3 as q,
           (array[499, 899, 1250, 1999, 2500, 3999, 7450, 15000])[1 + (g / 2 * 40503) % 8] as price
    from generate_series(0::bigint, :base - 1) g,
         lateral (select 3 * (g / 6) + (array[0, 1, 1, 2, 2, 2])[1 + g % 6] as o,
                         (array[1, 1, 2, 1, 2, 3])[1 + g % 6] as li) l
) lines;
-- The retries: the day's lines again, new surrogate keys, loaded 7 (and 14) minutes later.
insert into sales.daily_orders
    (order_id, line_item_id, order_date, customer_id, quantity, amount_cents, loaded_at)
select order_id, line_item_id, order_date, customer_id, quantity, amount_cents,
       loaded_at + attempt * interval '7 minutes'
from sales.daily_orders,
     lateral generate_series(1, case when order_date = date '2026-01-01' + 40 then 2 else 1 end) attempt
where (order_date - date '2026-01-01') % 9 = 4
order by attempt, order_date, order_id, line_item_id
limit :copies;
vacuum analyze sales.daily_orders;
SQL
  printf '   built in %.1f s\n' "$(python3 -c "print($EPOCHREALTIME - $start)")"
fi
read -r TOTAL EXPECTED SIZE < <(psql -X -At -F ' ' -d "$DB" -c "select count(*),
    count(*) - (select count(*) from (select from sales.daily_orders group by order_id, line_item_id) k),
    pg_size_pretty(pg_total_relation_size('sales.daily_orders')) from sales.daily_orders")
echo "   ${TOTAL} rows, ${EXPECTED} excess rows (rows - distinct keys), ${SIZE}," \
  "PostgreSQL $(psql -X -At -d "$DB" -c 'show server_version'), $(nproc) CPUs"
[[ -n "${PREPARE_ONLY:-}" ]] && exit 0

# --- 2. Configs ----------------------------------------------------------------------------------
CONFIG="$OUT/natkey.toml"
cat > "$CONFIG" <<'TOML'
# The key is declared, so the benchmark measures the duplicate scan alone.
[[table]]
name = "sales.daily_orders"
natural_key = ["order_id", "line_item_id"]
TOML
NOCONFIG_DIR="$OUT/noconfig"   # a folder without natkey.toml: the key is inferred
mkdir -p "$NOCONFIG_DIR"
rm -f "$NOCONFIG_DIR/natkey.toml"

# --- 3. Build and measure ------------------------------------------------------------------------
if [[ -z "${NATKEY:-}" ]]; then
  echo "== cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
  NATKEY="${CARGO_TARGET_DIR:-$ROOT/target}/release/natkey"
fi

DETECT="select order_id, line_item_id from sales.daily_orders group by order_id, line_item_id having count(*) > 1"
RESULTS="$OUT/results.tsv"
: > "$RESULTS"

# dbt's test runner wraps a test's query in `select count(*) ... from (<query>)`: one row back.
DETECT_DBT="select count(*) as failures from ($DETECT) dbt_internal_test"
detect() {  # $1: query; wall time of psql -c running it, default settings, output discarded
  local start=$EPOCHREALTIME
  psql -X -d "$DB" -c "$1" > /dev/null
  python3 -c "print($EPOCHREALTIME - $start)"
}
audit() {  # $1: label, $2: folder to run in, rest: extra arguments; prints "wall rss_kib"
  local label=$1 dir=$2 start rc=0; shift 2
  start=$EPOCHREALTIME
  (cd "$dir" && /usr/bin/time -f '%e %M' -o "$OUT/$label.time" "$NATKEY" audit \
      --warehouse "$URL" --table sales.daily_orders "$@" --format json \
      > "$OUT/$label.json" 2> "$OUT/$label.stderr") || rc=$?
  local wall; wall=$(python3 -c "print($EPOCHREALTIME - $start)")
  if (( rc > 1 )); then
    echo "error: natkey audit ($label) exited $rc:" >&2
    cat "$OUT/$label.stderr" >&2
    exit 2
  fi
  echo "$wall $(tail -n 1 "$OUT/$label.time" | cut -d' ' -f2)"
}

echo "== warm-up"
detect "$DETECT" > /dev/null
audit config "$OUT" --config "$CONFIG" > /dev/null
audit inferred "$NOCONFIG_DIR" > /dev/null

echo "== ${RUNS} runs, alternating"
for run in $(seq 1 "$RUNS"); do
  d=$(detect "$DETECT")
  c=$(audit config "$OUT" --config "$CONFIG")
  w=$(detect "$DETECT_DBT")
  i=$(audit inferred "$NOCONFIG_DIR")
  printf 'detect\t%s\nconfig\t%s\ndetect_dbt\t%s\ninferred\t%s\n' "$d" "$c" "$w" "$i" >> "$RESULTS"
  printf '   run %d/%d: detection %.2f s (count-wrapped %.2f s), natkey (key in config) %.2f s, natkey (inferred) %.2f s\n' \
    "$run" "$RUNS" "$d" "$w" "${c% *}" "${i% *}"
done

# --- 4. Report -----------------------------------------------------------------------------------
python3 - "$RESULTS" "$OUT" "$TOTAL" "$EXPECTED" <<'PY'
import json, statistics, sys
results, out, rows, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
runs = {}
for line in open(results):
    kind, *vals = line.split()
    runs.setdefault(kind, []).append([float(v) for v in vals])
med = lambda kind, i: statistics.median(r[i] for r in runs[kind])
detect = med("detect", 0)

def table(label):
    report = json.load(open(f"{out}/{label}.json"))
    t = next(t for t in report["tables"] if t["name"] == "daily_orders")
    return report, t

print(f"\n== sales.daily_orders: {rows:,} rows, {expected:,} excess; median of {len(runs['detect'])} runs")
print(f"   {'dbt unique_combination_of_columns query:':42} {detect:7.2f} s   (psql -c, wall clock)")
print(f"   {'  the same in select count(*), as dbt runs it:':42} {med('detect_dbt', 0):7.2f} s")
for label, what in (("config", "key in natkey.toml"), ("inferred", "key inferred")):
    wall, rss = med(label, 0), med(label, 1) / 1024
    report, t = table(label)
    key = t.get("natural_key") or {}
    print(f"   {'natkey audit, ' + what + ':':42} {wall:7.2f} s   = {wall / detect:5.2f}x detection,"
          f" peak RSS {rss:6.1f} MiB")
    print(f"      status {t['status']}, key {key.get('columns')} ({key.get('source')}),"
          f" duplicate groups {t.get('duplicate_groups')}, excess rows {t.get('excess_rows')}"
          f" (summary: {report['summary']['excess_rows']}; expected {expected})")
PY
