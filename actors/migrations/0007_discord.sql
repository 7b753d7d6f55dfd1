-- Schema 7: Discord channels the bot has seen (a DM or a guild channel) and the newest
-- message id seen in each. serenity cannot resume a gateway session across a restart, so
-- on (re)connect each known channel is backfilled over REST after `last_seen`; the inbound
-- journal dedupes what was already journaled.
CREATE TABLE discord_channels (
    account    TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    guild_id   TEXT,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (account, channel_id)
);
