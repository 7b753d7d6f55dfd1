//! The store's queries for chat channels: the inbound journal (unique per account + chat +
//! platform message id), outbound deliveries (pending → sent), poll offsets, pairing codes
//! and approved senders. Plain async functions over the pool, called through
//! [`StoreWrite`](super::StoreWrite) / [`StoreRead`](super::StoreRead).

use serde::Serialize;
use sqlx::{Row, SqlitePool};

use super::StoreError;
use crate::now_ms;

/// How a journaled message may reach its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// It may (open policy, an allowed sender, a group message that passed its policy).
    Pass,
    /// Only if the sender is approved in the store; otherwise it is kept from the agent and,
    /// when `pair`, the sender gets a pairing code.
    Approved {
        /// Offer a pairing code to an unknown sender.
        pair: bool,
    },
}

/// An inbound message to journal.
#[derive(Debug, Clone)]
pub struct NewInbound {
    /// Chat id on the platform.
    pub chat_id: String,
    /// Platform message id (unique within the chat).
    pub message_id: String,
    /// Sender's user id.
    pub sender_id: String,
    /// Sender's display name (for pairing lists).
    pub sender_name: String,
    /// The session it runs in.
    pub session_key: String,
    /// The text.
    pub text: String,
    /// Access check still to make.
    pub gate: Gate,
}

/// A journaled inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// Journal id (increasing).
    pub id: i64,
    /// Chat id.
    pub chat_id: String,
    /// Platform message id.
    pub message_id: String,
    /// Sender.
    pub sender_id: String,
    /// Session key.
    pub session_key: String,
    /// Text.
    pub text: String,
}

/// An outbound message part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Delivery id (increasing: the send order within a chat).
    pub id: i64,
    /// Chat id.
    pub chat_id: String,
    /// The inbound message it answers.
    pub inbound_id: Option<i64>,
    /// Part number of a split reply.
    pub part: i64,
    /// Text.
    pub text: String,
}

/// What journaling a batch produced.
#[derive(Debug, Default)]
pub struct JournalOutcome {
    /// New messages that may run, in journal order.
    pub accepted: Vec<InboundRecord>,
    /// Pairing notices to send (one per blocked message of a sender offered a code).
    pub notices: Vec<DeliveryRecord>,
    /// Messages seen before (redelivered), ignored.
    pub duplicates: usize,
}

/// A pending pairing request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PairingRecord {
    /// telegram | discord.
    pub channel: String,
    /// Account name.
    pub account: String,
    /// Sender's user id.
    pub sender_id: String,
    /// Sender's display name.
    pub name: String,
    /// The code to approve.
    pub code: String,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Expires (ms since the epoch).
    pub expires_at: i64,
}

/// Limits of pairing.
#[derive(Debug, Clone)]
pub struct PairingRules {
    /// A fresh code to use if the sender needs a new one.
    pub fresh_code: String,
    /// How long a code is valid, ms.
    pub ttl_ms: i64,
    /// Pending codes allowed per account.
    pub max_pending: i64,
}

/// Where the rows belong.
#[derive(Debug, Clone)]
pub struct Account {
    /// telegram | discord.
    pub channel: String,
    /// Account name.
    pub account: String,
}

fn inbound_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<InboundRecord, StoreError> {
    Ok(InboundRecord {
        id: row.try_get("id")?,
        chat_id: row.try_get("chat_id")?,
        message_id: row.try_get("message_id")?,
        sender_id: row.try_get("sender_id")?,
        session_key: row.try_get("session_key")?,
        text: row.try_get("text")?,
    })
}

fn delivery_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        chat_id: row.try_get("chat_id")?,
        inbound_id: row.try_get("inbound_id")?,
        part: row.try_get("part")?,
        text: row.try_get("text")?,
    })
}

/// The saved poll offset of an account.
pub async fn load_offset(pool: &SqlitePool, acc: &Account) -> Result<Option<i64>, StoreError> {
    let row =
        sqlx::query("SELECT next_offset FROM channel_offsets WHERE channel = ? AND account = ?")
            .bind(&acc.channel)
            .bind(&acc.account)
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("next_offset")?),
        None => None,
    })
}

/// Journals a batch and saves the next offset in one transaction: after it commits the
/// batch may be acknowledged to the platform. Redelivered messages are counted, not
/// journaled again; messages from senders not (yet) approved are kept from the agent.
pub async fn journal_batch(
    pool: &SqlitePool,
    acc: &Account,
    items: Vec<NewInbound>,
    next_offset: Option<i64>,
    rules: &PairingRules,
) -> Result<JournalOutcome, StoreError> {
    let now = now_ms() as i64;
    let mut out = JournalOutcome::default();
    let mut tx = pool.begin().await?;
    for item in items {
        let allowed = match item.gate {
            Gate::Pass => true,
            Gate::Approved { .. } => sqlx::query(
                "SELECT 1 FROM channel_allowed WHERE channel = ? AND account = ? AND sender_id = ?",
            )
            .bind(&acc.channel)
            .bind(&acc.account)
            .bind(&item.sender_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some(),
        };
        let state = if allowed { "pending" } else { "blocked" };
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO channel_inbound (channel, account, chat_id, message_id, sender_id, session_key, text, state, received_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&acc.channel)
        .bind(&acc.account)
        .bind(&item.chat_id)
        .bind(&item.message_id)
        .bind(&item.sender_id)
        .bind(&item.session_key)
        .bind(&item.text)
        .bind(state)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            out.duplicates += 1;
            continue;
        }
        let id = inserted.last_insert_rowid();
        if allowed {
            out.accepted.push(InboundRecord {
                id,
                chat_id: item.chat_id,
                message_id: item.message_id,
                sender_id: item.sender_id,
                session_key: item.session_key,
                text: item.text,
            });
            continue;
        }
        if item.gate != (Gate::Approved { pair: true }) {
            continue;
        }
        let text = match pairing_code(&mut tx, acc, &item, rules, now).await? {
            Some(code) => format!(
                "Hi! I don't know you yet. Your pairing code is {code} (valid for one hour). \
                 Ask the operator to run: troupe pairing approve {code}"
            ),
            None => "Hi! I don't know you yet, and too many pairing requests are waiting. \
                     Please try again later."
                .to_string(),
        };
        let delivery =
            insert_delivery(&mut tx, acc, &item.chat_id, Some(id), 0, &text, now).await?;
        out.notices.push(delivery);
    }
    if let Some(offset) = next_offset {
        sqlx::query(
            "INSERT INTO channel_offsets (channel, account, next_offset) VALUES (?, ?, ?)
             ON CONFLICT (channel, account) DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
        )
        .bind(&acc.channel)
        .bind(&acc.account)
        .bind(offset)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// The sender's valid code, a new one, or `None` when the account has too many pending.
async fn pairing_code(
    tx: &mut sqlx::SqliteConnection,
    acc: &Account,
    item: &NewInbound,
    rules: &PairingRules,
    now: i64,
) -> Result<Option<String>, StoreError> {
    sqlx::query("DELETE FROM channel_pairings WHERE expires_at <= ?")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let existing = sqlx::query(
        "SELECT code FROM channel_pairings WHERE channel = ? AND account = ? AND sender_id = ?",
    )
    .bind(&acc.channel)
    .bind(&acc.account)
    .bind(&item.sender_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = existing {
        return Ok(Some(row.try_get("code")?));
    }
    let pending: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM channel_pairings WHERE channel = ? AND account = ?")
            .bind(&acc.channel)
            .bind(&acc.account)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
    if pending >= rules.max_pending {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO channel_pairings (channel, account, sender_id, chat_id, name, code, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&acc.channel)
    .bind(&acc.account)
    .bind(&item.sender_id)
    .bind(&item.chat_id)
    .bind(&item.sender_name)
    .bind(&rules.fresh_code)
    .bind(now)
    .bind(now + rules.ttl_ms)
    .execute(&mut *tx)
    .await?;
    Ok(Some(rules.fresh_code.clone()))
}

async fn insert_delivery(
    tx: &mut sqlx::SqliteConnection,
    acc: &Account,
    chat_id: &str,
    inbound_id: Option<i64>,
    part: i64,
    text: &str,
    now: i64,
) -> Result<DeliveryRecord, StoreError> {
    let done = sqlx::query(
        "INSERT INTO channel_deliveries (channel, account, chat_id, inbound_id, part, text, state, created_at)
         VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
    )
    .bind(&acc.channel)
    .bind(&acc.account)
    .bind(chat_id)
    .bind(inbound_id)
    .bind(part)
    .bind(text)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(DeliveryRecord {
        id: done.last_insert_rowid(),
        chat_id: chat_id.to_string(),
        inbound_id,
        part,
        text: text.to_string(),
    })
}

/// Inbound messages journaled but not yet answered, oldest first.
pub async fn pending_inbound(
    pool: &SqlitePool,
    acc: &Account,
) -> Result<Vec<InboundRecord>, StoreError> {
    sqlx::query(
        "SELECT id, chat_id, message_id, sender_id, session_key, text FROM channel_inbound
         WHERE channel = ? AND account = ? AND state = 'pending' ORDER BY id",
    )
    .bind(&acc.channel)
    .bind(&acc.account)
    .fetch_all(pool)
    .await?
    .iter()
    .map(inbound_from_row)
    .collect()
}

/// Deliveries not yet sent, in send order.
pub async fn pending_deliveries(
    pool: &SqlitePool,
    acc: &Account,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    sqlx::query(
        "SELECT id, chat_id, inbound_id, part, text FROM channel_deliveries
         WHERE channel = ? AND account = ? AND state = 'pending' ORDER BY id",
    )
    .bind(&acc.channel)
    .bind(&acc.account)
    .fetch_all(pool)
    .await?
    .iter()
    .map(delivery_from_row)
    .collect()
}

/// Records a run's reply as deliveries and closes the inbound message, atomically: the
/// reply is owed from here on, and the message never runs again. Returns the deliveries.
pub async fn record_reply(
    pool: &SqlitePool,
    acc: &Account,
    inbound: &InboundRecord,
    run_id: &str,
    parts: &[String],
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let now = now_ms() as i64;
    let mut tx = pool.begin().await?;
    let mut out = Vec::with_capacity(parts.len());
    let open = sqlx::query(
        "UPDATE channel_inbound SET state = 'done', run_id = ? WHERE id = ? AND state = 'pending'",
    )
    .bind(run_id)
    .bind(inbound.id)
    .execute(&mut *tx)
    .await?;
    if open.rows_affected() == 1 {
        for (i, part) in parts.iter().enumerate() {
            let d = insert_delivery(
                &mut tx,
                acc,
                &inbound.chat_id,
                Some(inbound.id),
                i as i64,
                part,
                now,
            )
            .await?;
            out.push(d);
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// A delivery reached the platform as message `platform_id`.
pub async fn mark_sent(pool: &SqlitePool, id: i64, platform_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE channel_deliveries SET state = 'sent', platform_message_id = ?, sent_at = ? WHERE id = ?",
    )
    .bind(platform_id)
    .bind(now_ms() as i64)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The platform refused a delivery for good.
pub async fn mark_failed(pool: &SqlitePool, id: i64, error: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE channel_deliveries SET state = 'failed', error = ? WHERE id = ?")
        .bind(error)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deliveries of an account still pending.
pub async fn count_pending(pool: &SqlitePool, acc: &Account) -> Result<i64, StoreError> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM channel_deliveries WHERE channel = ? AND account = ? AND state = 'pending'",
    )
    .bind(&acc.channel)
    .bind(&acc.account)
    .fetch_one(pool)
    .await?
    .try_get("n")?)
}

/// Pending pairing requests that have not expired, oldest first.
pub async fn list_pairings(pool: &SqlitePool) -> Result<Vec<PairingRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT channel, account, sender_id, name, code, created_at, expires_at FROM channel_pairings
         WHERE expires_at > ? ORDER BY created_at",
    )
    .bind(now_ms() as i64)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PairingRecord {
                channel: r.try_get("channel")?,
                account: r.try_get("account")?,
                sender_id: r.try_get("sender_id")?,
                name: r.try_get("name")?,
                code: r.try_get("code")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .collect()
}

/// Approves a pending, unexpired code: its sender is allowed from now on. `None` when no
/// such code is pending.
pub async fn approve_pairing(
    pool: &SqlitePool,
    code: &str,
) -> Result<Option<PairingRecord>, StoreError> {
    let now = now_ms() as i64;
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT channel, account, sender_id, name, code, created_at, expires_at FROM channel_pairings
         WHERE code = ? AND expires_at > ?",
    )
    .bind(code)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let record = PairingRecord {
        channel: r.try_get("channel")?,
        account: r.try_get("account")?,
        sender_id: r.try_get("sender_id")?,
        name: r.try_get("name")?,
        code: r.try_get("code")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    };
    sqlx::query("DELETE FROM channel_pairings WHERE channel = ? AND account = ? AND sender_id = ?")
        .bind(&record.channel)
        .bind(&record.account)
        .bind(&record.sender_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT OR REPLACE INTO channel_allowed (channel, account, sender_id, approved_at) VALUES (?, ?, ?, ?)",
    )
    .bind(&record.channel)
    .bind(&record.account)
    .bind(&record.sender_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> (SqlitePool, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("troupe-channels-{}.db", uuid::Uuid::new_v4()));
        let pool = crate::store::open(&path).await.expect("open store");
        (pool, path)
    }

    fn cleanup(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    fn acc() -> Account {
        Account {
            channel: "telegram".into(),
            account: "main".into(),
        }
    }

    fn item(chat: &str, message: &str, sender: &str, gate: Gate) -> NewInbound {
        NewInbound {
            chat_id: chat.into(),
            message_id: message.into(),
            sender_id: sender.into(),
            sender_name: format!("User {sender}"),
            session_key: format!("agent:main:telegram:dm:{sender}"),
            text: format!("text {message}"),
            gate,
        }
    }

    fn rules(code: &str) -> PairingRules {
        PairingRules {
            fresh_code: code.into(),
            ttl_ms: 3_600_000,
            max_pending: 3,
        }
    }

    #[tokio::test]
    async fn journal_dedupes_per_chat_and_message_and_keeps_the_highest_offset() {
        let (pool, path) = pool().await;
        let batch = vec![
            item("1", "7", "1", Gate::Pass),
            item("1", "7", "1", Gate::Pass),
            item("2", "7", "2", Gate::Pass),
        ];
        let out = journal_batch(&pool, &acc(), batch, Some(10), &rules("AAAA"))
            .await
            .unwrap();
        assert_eq!(out.accepted.len(), 2);
        assert_eq!(out.duplicates, 1);
        let again = journal_batch(
            &pool,
            &acc(),
            vec![item("1", "7", "1", Gate::Pass)],
            Some(5),
            &rules("AAAA"),
        )
        .await
        .unwrap();
        assert_eq!((again.accepted.len(), again.duplicates), (0, 1));
        assert_eq!(load_offset(&pool, &acc()).await.unwrap(), Some(10));
        assert_eq!(pending_inbound(&pool, &acc()).await.unwrap().len(), 2);
        cleanup(&path);
    }

    #[tokio::test]
    async fn a_reply_is_recorded_once_and_closes_its_message() {
        let (pool, path) = pool().await;
        let out = journal_batch(
            &pool,
            &acc(),
            vec![item("1", "1", "1", Gate::Pass)],
            None,
            &rules("A"),
        )
        .await
        .unwrap();
        let inbound = &out.accepted[0];
        let parts = vec!["one".to_string(), "two".to_string()];
        let first = record_reply(&pool, &acc(), inbound, "run-1", &parts)
            .await
            .unwrap();
        assert_eq!(first.len(), 2);
        let second = record_reply(&pool, &acc(), inbound, "run-1", &parts)
            .await
            .unwrap();
        assert!(second.is_empty(), "a reply was recorded twice");
        assert!(pending_inbound(&pool, &acc()).await.unwrap().is_empty());
        mark_sent(&pool, first[0].id, "100").await.unwrap();
        let pending = pending_deliveries(&pool, &acc()).await.unwrap();
        assert_eq!(
            pending.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["two"]
        );
        assert_eq!(count_pending(&pool, &acc()).await.unwrap(), 1);
        cleanup(&path);
    }

    #[tokio::test]
    async fn pairing_gives_one_code_per_sender_at_most_three_and_approval_lets_them_in() {
        let (pool, path) = pool().await;
        let pair = Gate::Approved { pair: true };
        let mut codes = Vec::new();
        for sender in ["1", "2", "3", "4"] {
            let code = format!("CODE{sender}");
            let out = journal_batch(
                &pool,
                &acc(),
                vec![item(sender, "1", sender, pair)],
                None,
                &rules(&code),
            )
            .await
            .unwrap();
            assert!(out.accepted.is_empty(), "an unpaired sender got through");
            codes.push(out.notices[0].text.clone());
        }
        assert!(codes[0].contains("CODE1") && codes[2].contains("CODE3"));
        assert!(codes[3].contains("too many"), "{}", codes[3]);
        let repeat = journal_batch(
            &pool,
            &acc(),
            vec![item("1", "2", "1", pair)],
            None,
            &rules("OTHER"),
        )
        .await
        .unwrap();
        assert!(repeat.notices[0].text.contains("CODE1"), "the code changed");
        assert_eq!(list_pairings(&pool).await.unwrap().len(), 3);
        assert!(approve_pairing(&pool, "NOPE").await.unwrap().is_none());
        let approved = approve_pairing(&pool, "CODE2").await.unwrap().unwrap();
        assert_eq!(approved.sender_id, "2");
        let after = journal_batch(
            &pool,
            &acc(),
            vec![item("2", "2", "2", pair)],
            None,
            &rules("X"),
        )
        .await
        .unwrap();
        assert_eq!(after.accepted.len(), 1);
        assert!(after.notices.is_empty());
        assert_eq!(list_pairings(&pool).await.unwrap().len(), 2);
        cleanup(&path);
    }
}
