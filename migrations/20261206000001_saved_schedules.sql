-- Schedules made on the Schedules page (or with `POST /api/schedules`), beside the `[[schedule]]`
-- entries of natkey.toml. `definition` is the entry as JSON with exactly the fields of a
-- `[[schedule]]` entry (name, warehouse, cron, timezone, schemas, tables, notify); it was checked
-- when it was saved and is checked again whenever it is read, so a schedule whose warehouse or
-- notification target has since left natkey.toml is listed with the reason and does not run.
-- `created_at` (UTC text) is the instant before which its slots never run. Deleting a schedule
-- keeps its runs and slots: they are the history. Never edit this file once landed; add a new
-- migration instead.
CREATE TABLE saved_schedules (
    name        TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT
);
