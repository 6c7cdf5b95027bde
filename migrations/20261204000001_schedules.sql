-- Nightly audits: who started a run, the slots of schedules, the notification ledger, paused
-- schedules, and per-table figures of every run for the trend charts. Never edit this file once
-- landed; add a new migration instead.

-- Who started a run: a person on the web app or the API (`manual`), the scheduler (`schedule`),
-- or `natkey audit --save` (`cli`). `schedule` names the schedule a run belongs to (a scheduled
-- slot, or "Run now" on the Schedules page); NULL for other runs.
ALTER TABLE runs ADD COLUMN trigger TEXT NOT NULL DEFAULT 'manual'
    CHECK (trigger IN ('manual', 'schedule', 'cli'));
ALTER TABLE runs ADD COLUMN schedule TEXT;

CREATE INDEX runs_by_schedule ON runs (schedule, id) WHERE schedule IS NOT NULL;

-- A scheduled run's natural key is (schedule, scheduled_for): the slot it was scheduled for, as
-- UTC text (`2026-03-29T01:00:00Z`, so text order is time order). A slot is claimed by one
-- INSERT ... WHERE NOT EXISTS under this UNIQUE constraint, so two ticks, two natkey processes on
-- this store, or a restart never run one slot twice. `catch_up` holds how many slots had passed
-- when a late slot ran (NULL: on time). `run_id` is the audit run the slot started (NULL until it
-- is linked, or after retention pruned that run; the slot row itself is kept, it is the key).
CREATE TABLE scheduled_runs (
    id            INTEGER PRIMARY KEY,
    schedule      TEXT NOT NULL,
    scheduled_for TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    catch_up      INTEGER,
    reason        TEXT,
    owner         TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    run_id        INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    UNIQUE (schedule, scheduled_for)
);

-- Webhook notifications, one row per idempotency key (`natkey:<run id>:<target>`), written as
-- `pending` before the first call; a row left pending by a crash is re-sent with the same key and
-- the exact same `body`. It names the target, never its URL (which may hold a secret).
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    run_id          INTEGER NOT NULL,
    target          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- A schedule paused on the Schedules page: the scheduler skips it (its slots pass unclaimed and
-- are not caught up on resume, like slots before a schedule existed).
CREATE TABLE schedule_pauses (
    schedule   TEXT PRIMARY KEY,
    paused_at  TEXT NOT NULL,
    paused_by  TEXT
);

-- Per-table figures of each succeeded run, so trend charts never parse whole reports. `measures`
-- is the table's `measures` array of the report (column, total, overcount, overcount_min,
-- overcount_max, ...), as JSON. Written with the report; deleted with its run.
CREATE TABLE run_tables (
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    schema_name  TEXT    NOT NULL,
    table_name   TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    excess_rows  INTEGER,
    measures     TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (run_id, schema_name, table_name)
);

-- Runs stored before this migration get their per-table figures from their reports.
INSERT OR IGNORE INTO run_tables (run_id, schema_name, table_name, status, excess_rows, measures)
SELECT r.run_id,
       json_extract(t.value, '$.schema'),
       json_extract(t.value, '$.name'),
       json_extract(t.value, '$.status'),
       json_extract(t.value, '$.excess_rows'),
       COALESCE(json_extract(t.value, '$.measures'), '[]')
FROM reports AS r, json_each(r.json, '$.tables') AS t;
