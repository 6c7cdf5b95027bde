#!/usr/bin/env bash
# Load benchmark of `natkey serve`: the table page of a report with 500 tables, under wrk at
# 64 concurrent connections. Prints requests/s and the p99 latency (target: p99 < 50 ms on a
# 2-core machine).
#
#   benches/web_load.sh            # needs wrk (apt-get install -y wrk) and python3
#   DURATION=30s CONNECTIONS=64 TABLES=500 benches/web_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TABLES=${TABLES:-500}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-20s}
PORT=${PORT:-18431}

command -v wrk >/dev/null || { echo "web_load: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }

cargo build --release --quiet
BIN=target/release/natkey
WORK=$(mktemp -d)
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A SQLite warehouse of $TABLES daily_orders-shaped tables, each with a retried day.
python3 - "$WORK/bench.sqlite" "$TABLES" <<'PY'
import sqlite3, sys
path, tables = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path)
for t in range(tables):
    name = f"orders_{t:03d}"
    db.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, '
               'line_item_id INTEGER NOT NULL, order_date TEXT NOT NULL, '
               'amount_cents INTEGER NOT NULL, loaded_at TEXT NOT NULL)')
    rows = []
    for o in range(60):
        day = f"2026-11-{1 + o % 10:02d}"
        for item in (1, 2):
            amount = 100 + (o * 37 + item * 11 + t) % 900
            rows.append((1000 + o, item, day, amount, f"{day} 01:00:00"))
            # Day 3 retried, more often in later tables: every table double-counts differently.
            if o % 10 == 2 and o % (1 + t % 5) == 0:
                rows.append((1000 + o, item, day, amount, f"{day} 01:07:12"))
    db.executemany(f'INSERT INTO "{name}" (order_id, line_item_id, order_date, amount_cents, '
                   'loaded_at) VALUES (?, ?, ?, ?, ?)', rows)
db.commit()
PY

cat > "$WORK/natkey.toml" <<TOML
[[warehouse]]
name = "bench"
url = "sqlite://$WORK/bench.sqlite"

[store]
path = "$WORK/natkey.db"
TOML

"$BIN" serve --config "$WORK/natkey.toml" --bind "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 50); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done

echo "web_load: auditing $TABLES tables ..."
RUN=$(curl -fs -X POST -H 'Content-Type: application/json' -d '{}' \
    "http://127.0.0.1:$PORT/api/warehouses/bench/runs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
START=$(date +%s)
while :; do
    STATUS=$(curl -fs "http://127.0.0.1:$PORT/api/runs/$RUN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    case $STATUS in
        succeeded) break ;;
        queued|running) sleep 1 ;;
        *) echo "web_load: the audit ended $STATUS" >&2; cat "$WORK/serve.log" >&2; exit 1 ;;
    esac
done
echo "web_load: audit took $(( $(date +%s) - START )) s"

# Table 0 of the report is the worst one: the richest page (chart, samples, 7 plans).
URL="http://127.0.0.1:$PORT/runs/$RUN/tables/0"
curl -fs -o /dev/null -w "web_load: table page %{http_code}, %{size_download} bytes\n" "$URL"
wrk -t1 -c1 -d2s "$URL" >/dev/null # warm up
OUT=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$URL")
echo "$OUT"
RPS=$(echo "$OUT" | awk '/^Requests\/sec/ {print $2}')
P99=$(echo "$OUT" | awk '$1 == "99%" {print $2}')
echo
echo "web_load: table page of a $TABLES-table report, $CONNECTIONS connections: $RPS requests/s, p99 $P99 (target < 50ms)"
