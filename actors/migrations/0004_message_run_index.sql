-- Schema 4: find a run's transcript messages (context reads stop before a run's first one).
CREATE INDEX messages_by_run ON messages(run_id);
