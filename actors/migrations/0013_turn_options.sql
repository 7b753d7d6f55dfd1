-- Schema 13: the per-turn options a run was accepted with (`timeout`, `extraSystemPrompt`,
-- `model`), as JSON, so a queued run recovered after a restart runs with them. Written by
-- the INSERT that accepts the run; NULL (the options are the defaults, or the row is older)
-- means the agent's defaults. The message's files stay with its user message (schema 10).
ALTER TABLE runs ADD COLUMN options TEXT;
