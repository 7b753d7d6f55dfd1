-- Schema 10: attachments. A transcript message and a run keep the files attached to them
-- (the user's uploads, the reply's [IMAGE:]/[FILE:] markers) as a JSON array; a channel
-- delivery may be a file instead of text. NULL (older rows) means none.
ALTER TABLE messages ADD COLUMN attachments TEXT;
ALTER TABLE runs ADD COLUMN attachments TEXT;
ALTER TABLE channel_deliveries ADD COLUMN attachment TEXT;
