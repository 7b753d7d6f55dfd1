-- Schema 2: agent runs (turns), their queue state and idempotency keys.
CREATE TABLE runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    session_key     TEXT NOT NULL REFERENCES sessions(key) ON DELETE CASCADE,
    agent_id        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'ok', 'error', 'aborted', 'coalesced')),
    mode            TEXT NOT NULL,
    idempotency_key TEXT,
    input           TEXT NOT NULL,
    output          TEXT,
    error           TEXT,
    coalesced_into  TEXT,
    accepted_at     INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);
CREATE INDEX runs_by_idempotency ON runs(idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_by_status ON runs(status, seq);
CREATE INDEX runs_by_session ON runs(session_key, seq);
