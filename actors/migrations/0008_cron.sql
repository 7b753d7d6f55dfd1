-- Schema 8: cron jobs and their run ledger. A job remembers the scheduled time of the last
-- fire it handled (fired, skipped or missed), so after a restart the fires missed while the
-- gateway was down are known; every fire, skip and miss is a row in cron_runs.
CREATE TABLE cron_jobs (
    id                TEXT PRIMARY KEY,
    spec              TEXT NOT NULL,
    source            TEXT NOT NULL CHECK (source IN ('store', 'config')),
    created_at        INTEGER NOT NULL,
    last_scheduled_at INTEGER
);

CREATE TABLE cron_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT NOT NULL,
    run_id       TEXT,
    scheduled_at INTEGER NOT NULL,
    fired_at     INTEGER,
    outcome      TEXT NOT NULL CHECK (outcome IN ('running', 'ok', 'error', 'skipped', 'missed')),
    reason       TEXT,
    manual       INTEGER NOT NULL DEFAULT 0,
    duration_ms  INTEGER
);
CREATE INDEX cron_runs_by_job ON cron_runs(job_id, id);
