-- Schema 12: fewer index pages written per turn (each page a commit touches is a WAL frame:
-- two writes). `messages_by_session` (session_key, id) is covered by `messages_by_turn`
-- (session_key, turn, id), which every per-session query and the cascade from `sessions`
-- use. `runs_by_finish` only serves the usage reports, which read finished runs: keeping
-- unfinished runs (finished_at NULL) out of it saves a page on every accepted turn.
DROP INDEX messages_by_session;
DROP INDEX runs_by_finish;
CREATE INDEX runs_by_finish ON runs(finished_at) WHERE finished_at IS NOT NULL;
