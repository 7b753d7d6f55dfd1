-- Schema 11: files users send on a channel. `files` is what the platform named (a Telegram
-- file id, a Discord attachment URL; JSON), journaled with the message; `attachments` is set
-- once they are downloaded into uploads/ (JSON, as messages.attachments; '[]' when none could
-- be), so a turn recovered after a crash neither downloads twice nor loses them. NULL `files`
-- (older rows, text-only messages) means none.
ALTER TABLE channel_inbound ADD COLUMN files TEXT;
ALTER TABLE channel_inbound ADD COLUMN attachments TEXT;
