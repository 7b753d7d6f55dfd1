-- Schema 14: tool steps in the transcript. A run's tool calls and results are stored as
-- `tool` messages of its turn (written with the run's end, before its reply). `tool` is
-- their JSON (name, callId, isError); `bytes` is the full length of a text that was cut
-- when written (tool results are bounded). Both are NULL for user and assistant messages.
ALTER TABLE messages ADD COLUMN tool TEXT;
ALTER TABLE messages ADD COLUMN bytes INTEGER;
