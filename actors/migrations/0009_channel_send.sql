-- Schema 9: operator sends (WS `send`). A delivery made by `send` carries the caller's
-- idempotency key: one key per account is recorded (and so sent) once, even across restarts.
ALTER TABLE channel_deliveries ADD COLUMN send_key TEXT;
CREATE UNIQUE INDEX channel_deliveries_by_send_key
    ON channel_deliveries(channel, account, send_key, part) WHERE send_key IS NOT NULL;
