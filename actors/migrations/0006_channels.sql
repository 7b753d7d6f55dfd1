-- Schema 6: chat channels (Telegram, Discord, ...). Inbound messages are journaled before
-- they become turns (unique per account + chat + platform message id, so a redelivery is
-- recognised); replies are deliveries (pending -> sent with the platform's message id);
-- the poll offset, pairing codes and approved senders live here too.
CREATE TABLE channel_inbound (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    account     TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    session_key TEXT NOT NULL,
    text        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'blocked')),
    run_id      TEXT,
    received_at INTEGER NOT NULL,
    UNIQUE (channel, account, chat_id, message_id)
);
CREATE INDEX channel_inbound_by_state ON channel_inbound(channel, account, state, id);

CREATE TABLE channel_deliveries (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    channel             TEXT NOT NULL,
    account             TEXT NOT NULL,
    chat_id             TEXT NOT NULL,
    inbound_id          INTEGER REFERENCES channel_inbound(id) ON DELETE CASCADE,
    part                INTEGER NOT NULL,
    text                TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    platform_message_id TEXT,
    error               TEXT,
    created_at          INTEGER NOT NULL,
    sent_at             INTEGER,
    UNIQUE (inbound_id, part)
);
CREATE INDEX channel_deliveries_by_state ON channel_deliveries(channel, account, state, id);

CREATE TABLE channel_offsets (
    channel     TEXT NOT NULL,
    account     TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (channel, account)
);

CREATE TABLE channel_pairings (
    channel    TEXT NOT NULL,
    account    TEXT NOT NULL,
    sender_id  TEXT NOT NULL,
    chat_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    code       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (channel, account, sender_id)
);
CREATE INDEX channel_pairings_by_code ON channel_pairings(code);

CREATE TABLE channel_allowed (
    channel     TEXT NOT NULL,
    account     TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    approved_at INTEGER NOT NULL,
    PRIMARY KEY (channel, account, sender_id)
);
