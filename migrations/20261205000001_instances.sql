-- Who owns a run: each natkey process that opens the store registers an instance with a lease
-- it renews (`natkey serve` every few seconds). A queued or running audit run, or a running
-- scheduled slot, belongs to the instance that started it; it is marked `interrupted` only once
-- its owner is gone: the lease expired, or the owner ran on this host and its pid is no longer
-- alive. So a second `natkey serve` or a `natkey audit --save` on the same store never
-- interrupts another process's live audit. Never edit this file once landed; add a new
-- migration instead.

-- One row per live (or recently live) process. `id` is unique per process start
-- (`host:pid:nonce`), so a restarted process with the same pid (PID 1 in a container) is a new
-- instance. `lease_until` is UTC text (`2026-12-05T01:00:00Z`), so text order is time order.
CREATE TABLE instances (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TEXT    NOT NULL,
    heartbeat_at TEXT    NOT NULL,
    lease_until  TEXT    NOT NULL
);

-- The instance that queued the run (NULL for runs stored before this migration, and for the
-- already finished runs of `natkey audit --save`). A run's end is written only by its owner, and
-- only while the run is still queued or running. `scheduled_runs.owner` holds the same instance
-- ids from now on.
ALTER TABLE runs ADD COLUMN owner TEXT;
