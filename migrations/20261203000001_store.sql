-- natkey's own store: audit runs, their reports, and the natural keys people confirmed or
-- changed in the web app. Never edit this file once landed; add a new migration instead.

-- One audit of one warehouse. `status` moves queued -> running -> succeeded | failed; a run
-- still queued or running when natkey starts was cut short by a restart and becomes
-- `interrupted`. The summary columns repeat the report's so the overview and the trend line
-- never parse a report.
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    warehouse       TEXT    NOT NULL,
    status          TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'interrupted')),
    created_at      TEXT    NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    tables_done     INTEGER NOT NULL DEFAULT 0,
    tables_total    INTEGER,
    current_table   TEXT,
    error           TEXT,
    tables          INTEGER,
    with_duplicates INTEGER,
    excess_rows     INTEGER
);

-- Retries converge: "Audit now" pressed twice (or a retried API call) while an audit of that
-- warehouse is under way joins it instead of starting a second one.
CREATE UNIQUE INDEX runs_one_active_per_warehouse
    ON runs (warehouse) WHERE status IN ('queued', 'running');

CREATE INDEX runs_by_warehouse ON runs (warehouse, id);

-- The natkey_report JSON of a succeeded run, written in the same transaction that marks the
-- run succeeded.
CREATE TABLE reports (
    run_id  INTEGER PRIMARY KEY REFERENCES runs (id),
    json    TEXT    NOT NULL
);

-- A natural key a person confirmed or changed on the table page; the next audit of that
-- warehouse uses it as if it were a `[[table]]` entry of natkey.toml (key source `config`).
-- `natural_key` is a JSON array of column names.
CREATE TABLE key_overrides (
    warehouse    TEXT NOT NULL,
    schema_name  TEXT NOT NULL,
    table_name   TEXT NOT NULL,
    natural_key  TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    updated_by   TEXT,
    PRIMARY KEY (warehouse, schema_name, table_name)
);
