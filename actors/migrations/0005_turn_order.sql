-- Schema 5: idempotency keys are scoped to their session, and transcripts are listed in
-- turn order: every message carries its turn (the seq of the run it belongs to; messages
-- coalesced into a collect turn take the carrying run's), so a turn's reply follows its
-- own user message and precedes the next turn's.
DROP INDEX runs_by_idempotency;
CREATE INDEX runs_by_idempotency ON runs(session_key, idempotency_key) WHERE idempotency_key IS NOT NULL;
ALTER TABLE messages ADD COLUMN turn INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET turn = COALESCE(
    (SELECT COALESCE((SELECT c.seq FROM runs c WHERE c.id = r.coalesced_into), r.seq)
       FROM runs r WHERE r.id = messages.run_id),
    0);
CREATE INDEX messages_by_turn ON messages(session_key, turn, id);
