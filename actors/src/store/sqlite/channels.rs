//! The SQL of channel records (see [`crate::store::channels`]).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::messages::RunId;
use crate::now_ms;
use crate::store::StoreError;
use crate::store::channels::{
    Account, ChannelStore, DeliveryRecord, DeliveryStatus, Gate, InboundRecord, JournalOutcome,
    KnownChannel, NewInbound, PairingRecord, PairingRules, SendRecord,
};

fn inbound_from_row(row: &Row<'_>) -> rusqlite::Result<InboundRecord> {
    Ok(InboundRecord {
        id: row.get("id")?,
        chat_id: row.get("chat_id")?,
        message_id: row.get("message_id")?,
        sender_id: row.get("sender_id")?,
        session_key: row.get("session_key")?,
        text: row.get("text")?,
        files: row
            .get::<_, Option<String>>("files")?
            .and_then(|t| match serde_json::from_str(&t) {
                Ok(files) => Some(files),
                Err(e) => {
                    tracing::warn!(error = %e, "a journaled message's files are unreadable; ignoring them");
                    None
                }
            })
            .unwrap_or_default(),
        attachments: row
            .get::<_, Option<String>>("attachments")?
            .map(|t| crate::attachments::from_store_json(Some(&t))),
    })
}

/// The JSON text of a message's platform files (`None` when there are none).
fn files_json(files: &[crate::store::channels::InboundFile]) -> Option<String> {
    if files.is_empty() {
        return None;
    }
    serde_json::to_string(files).ok()
}

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: row.get("id")?,
        chat_id: row.get("chat_id")?,
        inbound_id: row.get("inbound_id")?,
        part: row.get("part")?,
        text: row.get("text")?,
        attachment: crate::attachments::from_store_json(
            row.get::<_, Option<String>>("attachment")?.as_deref(),
        )
        .pop(),
    })
}

fn pairing_from_row(r: &Row<'_>) -> rusqlite::Result<PairingRecord> {
    Ok(PairingRecord {
        channel: r.get("channel")?,
        account: r.get("account")?,
        sender_id: r.get("sender_id")?,
        name: r.get("name")?,
        code: r.get("code")?,
        created_at: r.get("created_at")?,
        expires_at: r.get("expires_at")?,
    })
}

/// The sender's valid code, a new one, or `None` when the account has too many pending.
fn pairing_code(
    conn: &Connection,
    acc: &Account,
    item: &NewInbound,
    rules: &PairingRules,
    now: i64,
) -> Result<Option<String>, StoreError> {
    conn.execute("DELETE FROM channel_pairings WHERE expires_at <= ?1", [now])?;
    let existing: Option<String> = conn
        .query_row(
            "SELECT code FROM channel_pairings WHERE channel = ?1 AND account = ?2 AND sender_id = ?3",
            params![acc.channel, acc.account, item.sender_id],
            |r| r.get(0),
        )
        .optional()?;
    if existing.is_some() {
        return Ok(existing);
    }
    let pending: i64 = conn.query_row(
        "SELECT COUNT(*) FROM channel_pairings WHERE channel = ?1 AND account = ?2",
        params![acc.channel, acc.account],
        |r| r.get(0),
    )?;
    if pending >= rules.max_pending {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO channel_pairings (channel, account, sender_id, chat_id, name, code, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            acc.channel,
            acc.account,
            item.sender_id,
            item.chat_id,
            item.sender_name,
            rules.fresh_code,
            now,
            now + rules.ttl_ms
        ],
    )?;
    Ok(Some(rules.fresh_code.clone()))
}

fn insert_delivery(
    conn: &Connection,
    acc: &Account,
    chat_id: &str,
    inbound_id: Option<i64>,
    part: i64,
    text: &str,
    now: i64,
) -> Result<DeliveryRecord, StoreError> {
    conn.prepare_cached(
        "INSERT INTO channel_deliveries (channel, account, chat_id, inbound_id, part, text, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
    )?
    .execute(params![acc.channel, acc.account, chat_id, inbound_id, part, text, now])?;
    Ok(DeliveryRecord {
        id: conn.last_insert_rowid(),
        chat_id: chat_id.to_string(),
        inbound_id,
        part,
        text: text.to_string(),
        attachment: None,
    })
}

/// A delivery that sends a file (its text is the file's name).
fn insert_file_delivery(
    conn: &Connection,
    acc: &Account,
    inbound: &InboundRecord,
    part: i64,
    file: &crate::attachments::AttachmentRef,
    now: i64,
) -> Result<DeliveryRecord, StoreError> {
    let mut record = insert_delivery(
        conn,
        acc,
        &inbound.chat_id,
        Some(inbound.id),
        part,
        &file.file_name,
        now,
    )?;
    conn.prepare_cached("UPDATE channel_deliveries SET attachment = ?1 WHERE id = ?2")?
        .execute(params![
            crate::attachments::to_store_json(std::slice::from_ref(file)),
            record.id
        ])?;
    record.attachment = Some(file.clone());
    Ok(record)
}

impl ChannelStore for SqliteStore {
    fn record_send(
        &mut self,
        acc: &Account,
        chat_id: &str,
        key: &str,
        parts: &[String],
    ) -> Result<SendRecord, StoreError> {
        // Write ops already run inside the store's transaction.
        let tx = &self.conn;
        let earlier: Vec<DeliveryRecord> = tx
            .prepare_cached(
                "SELECT id, chat_id, inbound_id, part, text, attachment FROM channel_deliveries
                 WHERE channel = ?1 AND account = ?2 AND send_key = ?3 ORDER BY part",
            )?
            .query_map(params![acc.channel, acc.account, key], delivery_from_row)?
            .collect::<Result<_, _>>()?;
        if !earlier.is_empty() {
            return Ok(SendRecord {
                deliveries: earlier,
                created: false,
            });
        }
        let now = now_ms() as i64;
        let mut deliveries = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let record = insert_delivery(tx, acc, chat_id, None, i as i64, part, now)?;
            tx.execute(
                "UPDATE channel_deliveries SET send_key = ?1 WHERE id = ?2",
                params![key, record.id],
            )?;
            deliveries.push(record);
        }
        Ok(SendRecord {
            deliveries,
            created: true,
        })
    }

    fn send_status(&mut self, acc: &Account, key: &str) -> Result<Vec<DeliveryStatus>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, part, state, platform_message_id, error FROM channel_deliveries
                 WHERE channel = ?1 AND account = ?2 AND send_key = ?3 ORDER BY part",
            )?
            .query_map(params![acc.channel, acc.account, key], |r| {
                Ok(DeliveryStatus {
                    id: r.get(0)?,
                    part: r.get(1)?,
                    state: r.get(2)?,
                    platform_message_id: r.get(3)?,
                    error: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn known_channels(&mut self, account: &str) -> Result<Vec<KnownChannel>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT channel_id, guild_id, last_seen FROM discord_channels WHERE account = ?1 ORDER BY channel_id",
        )?;
        let rows = stmt.query_map(params![account], |r| {
            Ok(KnownChannel {
                channel_id: r.get(0)?,
                guild_id: r.get(1)?,
                last_seen: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn advance_channels(
        &mut self,
        account: &str,
        channels: &[KnownChannel],
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO discord_channels (account, channel_id, guild_id, last_seen) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account, channel_id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen),
                 guild_id = COALESCE(excluded.guild_id, guild_id)",
        )?;
        for c in channels {
            stmt.execute(params![account, c.channel_id, c.guild_id, c.last_seen])?;
        }
        Ok(())
    }

    fn load_offset(&mut self, acc: &Account) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT next_offset FROM channel_offsets WHERE channel = ?1 AND account = ?2",
                params![acc.channel, acc.account],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn journal_batch(
        &mut self,
        acc: &Account,
        items: Vec<NewInbound>,
        next_offset: Option<i64>,
        rules: &PairingRules,
    ) -> Result<JournalOutcome, StoreError> {
        let now = now_ms() as i64;
        let mut out = JournalOutcome::default();
        let conn = &self.conn;
        for item in items {
            let allowed = match item.gate {
                Gate::Pass => true,
                Gate::Approved { .. } => conn
                    .query_row(
                        "SELECT 1 FROM channel_allowed WHERE channel = ?1 AND account = ?2 AND sender_id = ?3",
                        params![acc.channel, acc.account, item.sender_id],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some(),
            };
            let state = if allowed { "pending" } else { "blocked" };
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO channel_inbound (channel, account, chat_id, message_id, sender_id, session_key, text, state, received_at, files)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    acc.channel,
                    acc.account,
                    item.chat_id,
                    item.message_id,
                    item.sender_id,
                    item.session_key,
                    item.text,
                    state,
                    now,
                    files_json(&item.files)
                ])?;
            if inserted == 0 {
                out.duplicates += 1;
                continue;
            }
            let id = conn.last_insert_rowid();
            if allowed {
                out.accepted.push(InboundRecord {
                    id,
                    chat_id: item.chat_id,
                    message_id: item.message_id,
                    sender_id: item.sender_id,
                    session_key: item.session_key,
                    text: item.text,
                    files: item.files,
                    attachments: None,
                });
                continue;
            }
            if item.gate != (Gate::Approved { pair: true }) {
                continue;
            }
            let text = match pairing_code(conn, acc, &item, rules, now)? {
                Some(code) => format!(
                    "Hi! I don't know you yet. Your pairing code is {code} (valid for one hour). \
                     Ask the operator to run: troupe pairing approve {code}"
                ),
                None => "Hi! I don't know you yet, and too many pairing requests are waiting. \
                         Please try again later."
                    .to_string(),
            };
            out.notices.push(insert_delivery(
                conn,
                acc,
                &item.chat_id,
                Some(id),
                0,
                &text,
                now,
            )?);
        }
        if let Some(offset) = next_offset {
            conn.execute(
                "INSERT INTO channel_offsets (channel, account, next_offset) VALUES (?1, ?2, ?3)
                 ON CONFLICT (channel, account) DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                params![acc.channel, acc.account, offset],
            )?;
        }
        Ok(out)
    }

    fn pending_inbound(&mut self, acc: &Account) -> Result<Vec<InboundRecord>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, chat_id, message_id, sender_id, session_key, text, files, attachments FROM channel_inbound
                 WHERE channel = ?1 AND account = ?2 AND state = 'pending' ORDER BY id",
            )?
            .query_map(params![acc.channel, acc.account], inbound_from_row)?
            .collect::<Result<_, _>>()?)
    }

    fn save_inbound_files(
        &mut self,
        id: i64,
        text: &str,
        attachments: &[crate::attachments::AttachmentRef],
    ) -> Result<(), StoreError> {
        let json = crate::attachments::to_store_json(attachments).unwrap_or_else(|| "[]".into());
        self.conn
            .prepare_cached(
                "UPDATE channel_inbound SET text = ?1, attachments = ?2 WHERE id = ?3 AND attachments IS NULL",
            )?
            .execute(params![text, json, id])?;
        Ok(())
    }

    fn pending_deliveries(&mut self, acc: &Account) -> Result<Vec<DeliveryRecord>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, chat_id, inbound_id, part, text, attachment FROM channel_deliveries
                 WHERE channel = ?1 AND account = ?2 AND state = 'pending' ORDER BY id",
            )?
            .query_map(params![acc.channel, acc.account], delivery_from_row)?
            .collect::<Result<_, _>>()?)
    }

    fn record_reply(
        &mut self,
        acc: &Account,
        inbound: &InboundRecord,
        run_id: &RunId,
        parts: &[String],
        files: &[crate::attachments::AttachmentRef],
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let now = now_ms() as i64;
        let mut out = Vec::with_capacity(parts.len());
        let open = self.conn.execute(
            "UPDATE channel_inbound SET state = 'done', run_id = ?1 WHERE id = ?2 AND state = 'pending'",
            params![run_id, inbound.id],
        )?;
        if open == 1 {
            for (i, part) in parts.iter().enumerate() {
                out.push(insert_delivery(
                    &self.conn,
                    acc,
                    &inbound.chat_id,
                    Some(inbound.id),
                    i as i64,
                    part,
                    now,
                )?);
            }
            for (i, file) in files.iter().enumerate() {
                let part = (parts.len() + i) as i64;
                out.push(insert_file_delivery(
                    &self.conn, acc, inbound, part, file, now,
                )?);
            }
        }
        Ok(out)
    }

    fn mark_sent(&mut self, id: i64, platform_id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE channel_deliveries SET state = 'sent', platform_message_id = ?1, sent_at = ?2 WHERE id = ?3",
            params![platform_id, now_ms() as i64, id],
        )?;
        Ok(())
    }

    fn mark_failed(&mut self, id: i64, error: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE channel_deliveries SET state = 'failed', error = ?1 WHERE id = ?2",
            params![error, id],
        )?;
        Ok(())
    }

    fn count_pending(&mut self, acc: &Account) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM channel_deliveries WHERE channel = ?1 AND account = ?2 AND state = 'pending'",
            params![acc.channel, acc.account],
            |r| r.get(0),
        )?)
    }

    fn list_pairings(&mut self) -> Result<Vec<PairingRecord>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT channel, account, sender_id, name, code, created_at, expires_at FROM channel_pairings
                 WHERE expires_at > ?1 ORDER BY created_at",
            )?
            .query_map([now_ms() as i64], pairing_from_row)?
            .collect::<Result<_, _>>()?)
    }

    fn approve_pairing(&mut self, code: &str) -> Result<Option<PairingRecord>, StoreError> {
        let now = now_ms() as i64;
        let found = self
            .conn
            .query_row(
                "SELECT channel, account, sender_id, name, code, created_at, expires_at FROM channel_pairings
                 WHERE code = ?1 AND expires_at > ?2",
                params![code, now],
                pairing_from_row,
            )
            .optional()?;
        let Some(record) = found else {
            return Ok(None);
        };
        self.conn.execute(
            "DELETE FROM channel_pairings WHERE channel = ?1 AND account = ?2 AND sender_id = ?3",
            params![record.channel, record.account, record.sender_id],
        )?;
        self.conn.execute(
            "INSERT OR REPLACE INTO channel_allowed (channel, account, sender_id, approved_at) VALUES (?1, ?2, ?3, ?4)",
            params![record.channel, record.account, record.sender_id, now],
        )?;
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::channels::*;

    fn pool() -> (SqliteStore, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("troupe-channels-{}.db", uuid::Uuid::new_v4()));
        let db = SqliteStore::open(&path).expect("open store");
        (db, path)
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
            session_key: format!("agent:main:telegram:dm:{sender}").into(),
            text: format!("text {message}"),
            files: Vec::new(),
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

    #[test]
    fn a_messages_files_are_journaled_then_saved_once_as_attachments() {
        let (mut pool, path) = pool();
        let mut with_file = item("1", "8", "1", Gate::Pass);
        with_file.files = vec![InboundFile {
            kind: InboundFileKind::Photo,
            source: "file-id-1".into(),
            name: "photo.jpg".into(),
            mime: None,
            size: Some(12),
        }];
        let out = pool
            .journal_batch(&acc(), vec![with_file.clone()], None, &rules("AAAA"))
            .unwrap();
        assert_eq!(out.accepted[0].files, with_file.files);
        let pending = pool.pending_inbound(&acc()).unwrap();
        assert_eq!(pending[0].files, with_file.files);
        assert_eq!(pending[0].attachments, None, "not downloaded yet");
        let saved = crate::attachments::AttachmentRef {
            kind: crate::attachments::AttachmentKind::Image,
            mime_type: "image/jpeg".into(),
            file_name: "photo.jpg".into(),
            path: "uploads/x/photo.jpg".into(),
            size: 12,
            file: "/state/uploads/x/photo.jpg".into(),
        };
        pool.save_inbound_files(out.accepted[0].id, "caption", std::slice::from_ref(&saved))
            .unwrap();
        pool.save_inbound_files(out.accepted[0].id, "again", &[])
            .unwrap();
        let pending = pool.pending_inbound(&acc()).unwrap();
        assert_eq!(pending[0].attachments, Some(vec![saved]), "saved once");
        assert_eq!(pending[0].text, "caption");
        cleanup(&path);
    }

    #[test]
    fn journal_dedupes_per_chat_and_message_and_keeps_the_highest_offset() {
        let (mut pool, path) = pool();
        let batch = vec![
            item("1", "7", "1", Gate::Pass),
            item("1", "7", "1", Gate::Pass),
            item("2", "7", "2", Gate::Pass),
        ];
        let out = pool
            .journal_batch(&acc(), batch, Some(10), &rules("AAAA"))
            .unwrap();
        assert_eq!(out.accepted.len(), 2);
        assert_eq!(out.duplicates, 1);
        let again = pool
            .journal_batch(
                &acc(),
                vec![item("1", "7", "1", Gate::Pass)],
                Some(5),
                &rules("AAAA"),
            )
            .unwrap();
        assert_eq!((again.accepted.len(), again.duplicates), (0, 1));
        assert_eq!(pool.load_offset(&acc()).unwrap(), Some(10));
        assert_eq!(pool.pending_inbound(&acc()).unwrap().len(), 2);
        cleanup(&path);
    }

    #[test]
    fn a_reply_is_recorded_once_and_closes_its_message() {
        let (mut pool, path) = pool();
        let out = pool
            .journal_batch(
                &acc(),
                vec![item("1", "1", "1", Gate::Pass)],
                None,
                &rules("A"),
            )
            .unwrap();
        let inbound = &out.accepted[0];
        let parts = vec!["one".to_string(), "two".to_string()];
        let first = pool
            .record_reply(&acc(), inbound, &"run-1".into(), &parts, &[])
            .unwrap();
        assert_eq!(first.len(), 2);
        let second = pool
            .record_reply(&acc(), inbound, &"run-1".into(), &parts, &[])
            .unwrap();
        assert!(second.is_empty(), "a reply was recorded twice");
        assert!(pool.pending_inbound(&acc()).unwrap().is_empty());
        pool.mark_sent(first[0].id, "100").unwrap();
        let pending = pool.pending_deliveries(&acc()).unwrap();
        assert_eq!(
            pending.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["two"]
        );
        assert_eq!(pool.count_pending(&acc()).unwrap(), 1);
        cleanup(&path);
    }

    #[test]
    fn a_replys_files_follow_its_text_and_stay_owed_until_marked_sent() {
        use crate::attachments::{AttachmentKind, AttachmentRef};
        let (mut pool, path) = pool();
        let out = pool
            .journal_batch(
                &acc(),
                vec![item("1", "1", "1", Gate::Pass)],
                None,
                &rules("A"),
            )
            .unwrap();
        let file = AttachmentRef {
            kind: AttachmentKind::File,
            mime_type: "text/markdown".into(),
            file_name: "x.md".into(),
            path: "agents/main/memory/x.md".into(),
            size: 3,
            file: "/state/agents/main/memory/x.md".into(),
        };
        let parts = vec!["text".to_string()];
        let recorded = pool
            .record_reply(
                &acc(),
                &out.accepted[0],
                &"run-1".into(),
                &parts,
                std::slice::from_ref(&file),
            )
            .unwrap();
        assert_eq!(recorded.len(), 2);
        assert_eq!((recorded[1].part, recorded[1].text.as_str()), (1, "x.md"));
        pool.mark_sent(recorded[0].id, "100").unwrap();
        // After a restart the pending file part is read back whole, absolute file included.
        let pending = pool.pending_deliveries(&acc()).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].attachment.as_ref(), Some(&file));
        pool.mark_sent(pending[0].id, "101").unwrap();
        assert!(
            pool.pending_deliveries(&acc()).unwrap().is_empty(),
            "sent once"
        );
        cleanup(&path);
    }

    #[test]
    fn pairing_gives_one_code_per_sender_at_most_three_and_approval_lets_them_in() {
        let (mut pool, path) = pool();
        let pair = Gate::Approved { pair: true };
        let mut codes = Vec::new();
        for sender in ["1", "2", "3", "4"] {
            let code = format!("CODE{sender}");
            let out = pool
                .journal_batch(
                    &acc(),
                    vec![item(sender, "1", sender, pair)],
                    None,
                    &rules(&code),
                )
                .unwrap();
            assert!(out.accepted.is_empty(), "an unpaired sender got through");
            codes.push(out.notices[0].text.clone());
        }
        assert!(codes[0].contains("CODE1") && codes[2].contains("CODE3"));
        assert!(codes[3].contains("too many"), "{}", codes[3]);
        let repeat = pool
            .journal_batch(
                &acc(),
                vec![item("1", "2", "1", pair)],
                None,
                &rules("OTHER"),
            )
            .unwrap();
        assert!(repeat.notices[0].text.contains("CODE1"), "the code changed");
        assert_eq!(pool.list_pairings().unwrap().len(), 3);
        assert!(pool.approve_pairing("NOPE").unwrap().is_none());
        let approved = pool.approve_pairing("CODE2").unwrap().unwrap();
        assert_eq!(approved.sender_id, "2");
        let after = pool
            .journal_batch(&acc(), vec![item("2", "2", "2", pair)], None, &rules("X"))
            .unwrap();
        assert_eq!(after.accepted.len(), 1);
        assert!(after.notices.is_empty());
        assert_eq!(pool.list_pairings().unwrap().len(), 2);
        cleanup(&path);
    }

    #[test]
    fn discord_channels_remember_the_newest_message_id_and_never_go_back() {
        let (mut pool, path) = pool();
        let dm = |last_seen| KnownChannel {
            channel_id: "10".into(),
            guild_id: None,
            last_seen,
        };
        pool.advance_channels("main", &[dm(5)]).unwrap();
        pool.advance_channels("main", &[dm(3)]).unwrap();
        let guild = KnownChannel {
            channel_id: "20".into(),
            guild_id: Some("7".into()),
            last_seen: 9,
        };
        pool.advance_channels("main", std::slice::from_ref(&guild))
            .unwrap();
        pool.advance_channels("other", &[dm(1)]).unwrap();
        assert_eq!(pool.known_channels("main").unwrap(), vec![dm(5), guild]);
        cleanup(&path);
    }
}
