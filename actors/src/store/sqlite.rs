//! The SQLite store: every SQL statement of Troupe, over one `rusqlite` connection owned by
//! the store actor's thread (WAL, a single writer). Migrations are the files in
//! `actors/migrations/`, applied in order and tracked in `PRAGMA user_version`.

mod channels;
mod checkpoint;
mod cron;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::turns::{
    Acceptance, HistoryPage, NewTurn, RunEnd, RunOptions, RunRecord, SessionSummary, StoredMessage,
    ToolMeta, ToolStep, Transcript, UsageRow,
};
use super::{Store, StoreError, StoreInfo};
use crate::messages::{AgentId, CronJobId, RunId, RunStatus, SessionKey};
use crate::now_ms;

/// Stores and reads an id newtype as its text.
macro_rules! sql_text_id {
    ($($id:ty),*) => {$(
        impl rusqlite::types::ToSql for $id {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl rusqlite::types::FromSql for $id {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                String::column_result(value).map(Self::from)
            }
        }
    )*};
}
sql_text_id!(RunId, SessionKey, AgentId, CronJobId);

impl rusqlite::types::ToSql for RunStatus {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.name()))
    }
}

/// The schema, in order; a database at `user_version` N has the first N applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_runs.sql")),
    (3, include_str!("../../migrations/0003_usage.sql")),
    (
        4,
        include_str!("../../migrations/0004_message_run_index.sql"),
    ),
    (5, include_str!("../../migrations/0005_turn_order.sql")),
    (6, include_str!("../../migrations/0006_channels.sql")),
    (7, include_str!("../../migrations/0007_discord.sql")),
    (8, include_str!("../../migrations/0008_cron.sql")),
    (9, include_str!("../../migrations/0009_channel_send.sql")),
    (10, include_str!("../../migrations/0010_attachments.sql")),
    (11, include_str!("../../migrations/0011_inbound_files.sql")),
    (
        12,
        include_str!("../../migrations/0012_fewer_turn_pages.sql"),
    ),
    (13, include_str!("../../migrations/0013_turn_options.sql")),
    (14, include_str!("../../migrations/0014_tool_steps.sql")),
    (
        15,
        include_str!("../../migrations/0015_checks_without_in_lists.sql"),
    ),
];

const RUN_COLUMNS: &str = "seq, id, session_key, agent_id, status, mode, input, output, error, coalesced_into, accepted_at, finished_at, attachments, options";

/// The cursor condition "before message `?1` in turn order".
const BEFORE: &str =
    "(m.turn, m.id) < (COALESCE((SELECT turn FROM messages WHERE id = ?1), ?1), ?1)";

/// A SQLite database behind the [`Store`] trait.
pub struct SqliteStore {
    conn: Connection,
    /// Declared after `conn`: dropped (its thread joined) once the connection is closed.
    checkpoints: checkpoint::Checkpointer,
    path: String,
    /// Ledger rows written per cron job since its ledger was last trimmed.
    cron_untrimmed: std::collections::HashMap<CronJobId, u32>,
}

impl SqliteStore {
    /// Runs a statement without parameters or rows (transaction control), prepared once.
    fn run_cached(&self, sql: &str) -> Result<(), StoreError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Opens (creating if needed) the database in WAL mode, migrates it and records this boot.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: display.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(2))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // Every hot statement stays prepared (the default cache holds 16), and stays as it
        // was prepared: without the query planner stability guarantee, binding a new value
        // to some parameters (the bundled SQLite has STAT4) expires the statement and makes
        // the next step prepare it again, about as costly as the rest of a turn's SQL.
        conn.set_prepared_statement_cache_capacity(64);
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(open_err)?;
        let checkpoints = checkpoint::Checkpointer::new(&conn, path).map_err(open_err)?;
        let mut store = Self {
            conn,
            checkpoints,
            path: display,
            cron_untrimmed: std::collections::HashMap::new(),
        };
        store.migrate()?;
        store.conn.execute(
            "INSERT INTO boots (pid, version, started_at) VALUES (?1, ?2, ?3)",
            params![
                std::process::id() as i64,
                env!("CARGO_PKG_VERSION"),
                now_ms() as i64
            ],
        )?;
        Ok(store)
    }

    /// Applies the migrations this database lacks. A database made by an earlier Troupe
    /// (which tracked them in sqlx's `_sqlx_migrations`) starts from what that table says.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            let sqlx: Option<i64> = self
                .conn
                .query_row(
                    "SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .unwrap_or(None)
                .flatten();
            version = sqlx.unwrap_or(0);
        }
        for (number, sql) in MIGRATIONS.iter().filter(|(n, _)| *n > version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)
                .map_err(|e| StoreError::Migrate(format!("migration {number}: {e}")))?;
            if sql.contains("writable_schema") {
                // The schema's text was edited in place: a new schema version makes every
                // connection, this one included, read it again.
                let schema: i64 = tx.pragma_query_value(None, "schema_version", |r| r.get(0))?;
                tx.pragma_update(None, "schema_version", schema + 1)?;
            }
            tx.pragma_update(None, "user_version", number)?;
            tx.commit()?;
        }
        Ok(())
    }
}

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        seq: row.get("seq")?,
        id: row.get("id")?,
        session_key: row.get("session_key")?,
        agent_id: row.get("agent_id")?,
        status: row.get("status")?,
        mode: row.get("mode")?,
        input: row.get("input")?,
        output: row.get("output")?,
        error: row.get("error")?,
        coalesced_into: row.get("coalesced_into")?,
        accepted_at: row.get("accepted_at")?,
        finished_at: row.get("finished_at")?,
        attachments: attachments_of(row)?,
        input_attachments: Vec::new(),
        options: RunOptions::from_store_json(row.get::<_, Option<String>>("options")?.as_deref()),
    })
}

/// The attachments of a run's own user message (the one accepted with it, in its turn).
fn input_attachments_of(
    conn: &Connection,
    run: &RunRecord,
) -> Result<Vec<crate::attachments::AttachmentRef>, StoreError> {
    let text: Option<Option<String>> = conn
        .prepare_cached(
            "SELECT attachments FROM messages WHERE session_key = ?1 AND turn = ?2 AND run_id = ?3 AND role = 'user' ORDER BY id LIMIT 1",
        )?
        .query_row(params![run.session_key, run.seq, run.id], |r| r.get(0))
        .optional()?;
    Ok(crate::attachments::from_store_json(
        text.flatten().as_deref(),
    ))
}

/// A row's `attachments` column (JSON; NULL in rows written before schema 10).
fn attachments_of(row: &Row<'_>) -> rusqlite::Result<Vec<crate::attachments::AttachmentRef>> {
    let text: Option<String> = row.get("attachments")?;
    Ok(crate::attachments::from_store_json(text.as_deref()))
}

/// The `tool` column of a row: what a `tool` message was (`None` for other roles, or when
/// unreadable).
fn tool_of(row: &Row<'_>) -> rusqlite::Result<Option<ToolMeta>> {
    let text: Option<String> = row.get("tool")?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// Cuts a text to at most `max` bytes on a character boundary (`substr` counts characters).
fn cut_to_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl Store for SqliteStore {
    fn begin(&mut self) -> Result<(), StoreError> {
        self.run_cached("BEGIN IMMEDIATE")
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.run_cached("COMMIT")?;
        self.checkpoints.committed(&self.conn);
        Ok(())
    }

    fn rollback(&mut self) {
        if self.conn.is_autocommit() {
            return;
        }
        let _ = self.run_cached("ROLLBACK");
    }

    fn savepoint(&mut self) -> Result<(), StoreError> {
        self.run_cached("SAVEPOINT op")
    }

    fn release(&mut self, keep: bool) -> Result<(), StoreError> {
        if !keep {
            self.run_cached("ROLLBACK TO op")?;
        }
        self.run_cached("RELEASE op")
    }

    fn accept_turn(&mut self, turn: &NewTurn) -> Result<Acceptance, StoreError> {
        let now = now_ms() as i64;
        if let Some(key) = &turn.idempotency_key {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE session_key = ?1 AND idempotency_key = ?2 AND accepted_at >= ?3 ORDER BY seq DESC LIMIT 1"
            );
            let found = self
                .conn
                .prepare_cached(&sql)?
                .query_row(
                    params![turn.session_key, key, now - turn.dedupe_window_ms],
                    run_from_row,
                )
                .optional()?;
            if let Some(mut run) = found {
                if run.status == "queued" {
                    // The queue may put it back in line (a retry after a restart).
                    run.input_attachments = input_attachments_of(&self.conn, &run)?;
                }
                return Ok(Acceptance::Duplicate(run));
            }
        }
        if turn.lane_full {
            return Ok(Acceptance::Refused);
        }
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (key, agent_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(key) DO UPDATE SET updated_at = excluded.updated_at",
            )?
            .execute(params![turn.session_key, turn.agent_id, now])?;
        // A version 4 UUID from the thread's CSPRNG (seeded by the OS), where `new_v4` asks
        // the OS for 16 bytes on every call: a `getrandom` system call per turn.
        let run_id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string();
        // No `RETURNING`: SQLite gathers its rows in a temporary b-tree (a page cache of its
        // own per statement); the record is what was just written, and `seq` the new rowid.
        self.conn
            .prepare_cached(
                "INSERT INTO runs (id, session_key, agent_id, status, mode, idempotency_key, input, accepted_at, options)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                run_id,
                turn.session_key,
                turn.agent_id,
                turn.mode,
                turn.idempotency_key,
                turn.text,
                now,
                turn.options.to_store_json()
            ])?;
        let run = RunRecord {
            id: run_id.as_str().into(),
            seq: self.conn.last_insert_rowid(),
            session_key: turn.session_key.clone(),
            agent_id: turn.agent_id.clone(),
            status: "queued".into(),
            mode: turn.mode.clone(),
            input: turn.text.clone(),
            output: None,
            error: None,
            coalesced_into: None,
            accepted_at: now,
            finished_at: None,
            attachments: Vec::new(),
            input_attachments: Vec::new(),
            options: turn.options.clone(),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO messages (session_key, role, text, run_id, ts, turn, attachments) VALUES (?1, 'user', ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                turn.session_key,
                turn.text,
                run_id,
                now,
                run.seq,
                crate::attachments::to_store_json(&turn.attachments)
            ])?;
        Ok(Acceptance::New(run))
    }

    fn start_run(
        &mut self,
        run_id: &RunId,
        carried: &[RunId],
        context_limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE runs SET status = 'running', started_at = ?1 WHERE id = ?2 AND status = 'queued'",
            )?
            .execute(params![now_ms() as i64, run_id])?;
        if !carried.is_empty() {
            self.close_runs(
                carried,
                "coalesced",
                Some("coalesced into a collect turn"),
                Some(run_id.as_str()),
            )?;
        }
        if context_limit == 0 {
            return Ok(Vec::new());
        }
        // Context is what came before this turn's own first message: later messages
        // queued behind it, and its own (coalesced) input, are not its history.
        let first_own: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(id) FROM messages WHERE run_id = ?1")?
            .query_row([run_id], |r| r.get(0))?;
        let sql = format!(
            "SELECT m.id, m.role, m.text, m.ts, m.run_id, m.attachments FROM messages m
             WHERE m.session_key = (SELECT session_key FROM runs WHERE id = ?2) AND {BEFORE}
               AND m.role <> 'tool'
             ORDER BY m.turn DESC, m.id DESC LIMIT ?3"
        );
        let mut out = self
            .conn
            .prepare_cached(&sql)?
            .query_map(
                params![first_own.unwrap_or(i64::MAX), run_id, context_limit],
                |r| {
                    Ok(StoredMessage {
                        id: r.get("id")?,
                        role: r.get("role")?,
                        text: r.get("text")?,
                        ts: r.get("ts")?,
                        run_id: r.get("run_id")?,
                        queued: false,
                        truncated: false,
                        bytes: None,
                        attachments: attachments_of(r)?,
                        tool: None,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    fn finish_run_with_tools(
        &mut self,
        run_id: &RunId,
        end: &RunEnd,
        tool_steps: &[ToolStep],
    ) -> Result<(), StoreError> {
        let now = now_ms() as i64;
        let attachments = crate::attachments::to_store_json(&end.attachments);
        // Looked up first rather than `RETURNING` (which costs a temporary b-tree), then
        // updated by rowid.
        let found: Option<(String, i64)> = self
            .conn
            .prepare_cached("SELECT session_key, seq FROM runs WHERE id = ?1")?
            .query_row(params![run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((session_key, turn)) = found else {
            // The session was deleted while the run was going: nothing left to record.
            return Ok(());
        };
        self.conn
            .prepare_cached(
                "UPDATE runs SET status = ?1, output = ?2, error = ?3, finished_at = ?4, input_tokens = ?5, output_tokens = ?6, cost_usd = ?7, attachments = ?9
                 WHERE seq = ?8",
            )?
            .execute(params![
                end.status,
                end.output,
                end.error,
                now,
                end.input_tokens as i64,
                end.output_tokens as i64,
                end.cost_usd,
                turn,
                attachments
            ])?;
        for step in tool_steps {
            let (text, bytes) = (&step.text, step.full_bytes);
            let meta = serde_json::to_string(&step.meta).ok();
            self.conn
                .prepare_cached(
                    "INSERT INTO messages (session_key, role, text, run_id, ts, turn, tool, bytes) VALUES (?1, 'tool', ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![session_key, text, run_id, step.ts, turn, meta, bytes])?;
        }
        if !end.output.is_empty() || !end.attachments.is_empty() {
            self.conn
                .prepare_cached(
                    "INSERT INTO messages (session_key, role, text, run_id, ts, turn, attachments) VALUES (?1, 'assistant', ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![session_key, end.output, run_id, now, turn, attachments])?;
        }
        self.conn
            .prepare_cached("UPDATE sessions SET updated_at = ?1 WHERE key = ?2")?
            .execute(params![now, session_key])?;
        Ok(())
    }

    fn close_runs(
        &mut self,
        run_ids: &[RunId],
        status: &str,
        note: Option<&str>,
        into: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms() as i64;
        for id in run_ids {
            self.conn
                .prepare_cached(
                    "UPDATE runs SET status = ?1, error = ?2, coalesced_into = ?3, finished_at = ?4 WHERE id = ?5 AND status IN ('queued', 'running')",
                )?
                .execute(params![status, note, into, now, id])?;
            if let Some(carrier) = into {
                // A coalesced message belongs to the turn that carried it.
                self.conn
                    .prepare_cached(
                        "UPDATE messages SET turn = (SELECT seq FROM runs WHERE id = ?1) WHERE run_id = ?2",
                    )?
                    .execute(params![carrier, id])?;
            }
        }
        Ok(())
    }

    fn recover_runs(
        &mut self,
        reason: &str,
    ) -> Result<(Vec<RunRecord>, Vec<RunRecord>), StoreError> {
        let by_status = |conn: &Connection, status: &str| -> Result<Vec<RunRecord>, StoreError> {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE status = ?1 ORDER BY seq");
            let runs = conn
                .prepare(&sql)?
                .query_map([status], run_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(runs)
        };
        let mut interrupted = by_status(&self.conn, "running")?;
        for run in &mut interrupted {
            let end = RunEnd {
                status: RunStatus::Error,
                output: String::new(),
                error: Some(format!(
                    "interrupted: {reason} during this run; not retried so it cannot answer twice"
                )),
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: 0.0,
                attachments: Vec::new(),
            };
            self.finish_run(&run.id, &end)?;
            run.status = "error".into();
        }
        let mut queued = by_status(&self.conn, "queued")?;
        for run in &mut queued {
            run.input_attachments = input_attachments_of(&self.conn, run)?;
        }
        Ok((interrupted, queued))
    }

    fn get_run(&mut self, run_id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([run_id], run_from_row)
            .optional()?)
    }

    fn history(
        &mut self,
        session_key: &SessionKey,
        page: HistoryPage,
    ) -> Result<Transcript, StoreError> {
        let sql = format!(
            "SELECT m.id, m.role, substr(m.text, 1, ?3) AS text, COALESCE(m.bytes, length(CAST(m.text AS BLOB))) AS bytes, m.ts, m.run_id, m.attachments, m.tool,
                    r.status = 'queued' AS queued
             FROM messages m LEFT JOIN runs r ON r.id = m.run_id
             WHERE m.session_key = ?2 AND {BEFORE}
             ORDER BY m.turn DESC, m.id DESC LIMIT ?4"
        );
        let max_text = page.max_text_bytes.max(1);
        let limit = page.limit.max(1);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            page.before.unwrap_or(i64::MAX),
            session_key,
            max_text as i64,
            limit + 1
        ])?;
        let mut messages = Vec::new();
        let mut used = 0usize;
        let mut has_more = false;
        while let Some(row) = rows.next()? {
            let bytes: i64 = row.get("bytes")?;
            let text = cut_to_bytes(row.get("text")?, max_text);
            let truncated = (text.len() as i64) < bytes;
            let full = messages.len() as i64 >= limit;
            if full || (!messages.is_empty() && used + text.len() > page.max_bytes) {
                has_more = true;
                break;
            }
            used += text.len();
            messages.push(StoredMessage {
                id: row.get("id")?,
                role: row.get("role")?,
                text,
                ts: row.get("ts")?,
                run_id: row.get("run_id")?,
                queued: row.get::<_, Option<bool>>("queued")?.unwrap_or(false),
                truncated,
                bytes: truncated.then_some(bytes),
                attachments: attachments_of(row)?,
                tool: tool_of(row)?,
            });
        }
        let next_before = has_more.then(|| messages.last().map(|m| m.id)).flatten();
        messages.reverse();
        Ok(Transcript {
            messages,
            has_more,
            next_before,
        })
    }

    fn list_sessions(&mut self, limit: i64) -> Result<Vec<SessionSummary>, StoreError> {
        let sessions = self
            .conn
            .prepare_cached(
                "SELECT s.key, s.agent_id, s.created_at, s.updated_at, (SELECT COUNT(*) FROM messages m WHERE m.session_key = s.key) AS messages
                 FROM sessions s ORDER BY s.updated_at DESC LIMIT ?1",
            )?
            .query_map([limit], |r| {
                Ok(SessionSummary {
                    key: r.get("key")?,
                    agent_id: r.get("agent_id")?,
                    created_at: r.get("created_at")?,
                    updated_at: r.get("updated_at")?,
                    messages: r.get("messages")?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(sessions)
    }

    fn usage_daily(&mut self, since_ms: i64) -> Result<Vec<super::turns::DailyUsage>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT strftime('%Y-%m-%d', finished_at / 1000, 'unixepoch') AS day, agent_id, COUNT(*) AS runs,
                        COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens,
                        COALESCE(SUM(cost_usd), 0.0) AS cost_usd
                 FROM runs WHERE finished_at IS NOT NULL AND finished_at >= ?1
                 GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 100000",
            )?
            .query_map([since_ms], |r| {
                Ok(super::turns::DailyUsage {
                    day: r.get("day")?,
                    agent_id: r.get("agent_id")?,
                    runs: r.get("runs")?,
                    input_tokens: r.get("input_tokens")?,
                    output_tokens: r.get("output_tokens")?,
                    cost_usd: r.get("cost_usd")?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn usage_report(&mut self, since_ms: i64) -> Result<serde_json::Value, StoreError> {
        let group = |expr: &str, order: &str| {
            format!(
                "SELECT {expr} AS key, COUNT(*) AS runs, COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens, COALESCE(SUM(cost_usd), 0.0) AS cost_usd
                 FROM runs WHERE finished_at IS NOT NULL AND finished_at >= ?1 GROUP BY 1 ORDER BY {order} LIMIT 100"
            )
        };
        let mut out = serde_json::Map::new();
        for (name, sql) in [
            ("total", group("''", "1")),
            ("byAgent", group("agent_id", "1")),
            (
                "bySession",
                group("session_key", "(input_tokens + output_tokens) DESC"),
            ),
            (
                "byDay",
                group("strftime('%Y-%m-%d', finished_at / 1000, 'unixepoch')", "1"),
            ),
        ] {
            let rows = self
                .conn
                .prepare_cached(&sql)?
                .query_map([since_ms], |r| {
                    Ok(UsageRow {
                        key: r.get("key")?,
                        runs: r.get("runs")?,
                        input_tokens: r.get("input_tokens")?,
                        output_tokens: r.get("output_tokens")?,
                        cost_usd: r.get("cost_usd")?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let value = if name == "total" {
                serde_json::to_value(rows.into_iter().next().unwrap_or(UsageRow {
                    key: String::new(),
                    runs: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    cost_usd: 0.0,
                }))
            } else {
                serde_json::to_value(rows)
            };
            out.insert(name.into(), value.unwrap_or_default());
        }
        Ok(serde_json::Value::Object(out))
    }

    fn clear_session(
        &mut self,
        session_key: &SessionKey,
        delete: bool,
    ) -> Result<bool, StoreError> {
        let existed = self
            .conn
            .query_row(
                "SELECT 1 FROM sessions WHERE key = ?1",
                [session_key],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        self.conn
            .execute("DELETE FROM messages WHERE session_key = ?1", [session_key])?;
        self.conn.execute(
            "DELETE FROM runs WHERE session_key = ?1 AND status NOT IN ('queued', 'running')",
            [session_key],
        )?;
        if delete {
            self.conn
                .execute("DELETE FROM runs WHERE session_key = ?1", [session_key])?;
            self.conn
                .execute("DELETE FROM sessions WHERE key = ?1", [session_key])?;
        }
        Ok(existed)
    }

    fn sweep_older_than(&mut self, cutoff_ms: i64) -> Result<(u64, u64), StoreError> {
        let messages = self.conn.execute(
            "DELETE FROM messages WHERE ts < ?1 AND (run_id IS NULL OR run_id NOT IN
               (SELECT id FROM runs WHERE status IN ('queued', 'running')))",
            [cutoff_ms],
        )?;
        let runs = self.conn.execute(
            "DELETE FROM runs WHERE status NOT IN ('queued', 'running') AND COALESCE(finished_at, accepted_at) < ?1",
            [cutoff_ms],
        )?;
        Ok((runs as u64, messages as u64))
    }

    fn info(&mut self) -> Result<StoreInfo, StoreError> {
        let (boots, sessions, messages) = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM boots), (SELECT COUNT(*) FROM sessions), (SELECT COUNT(*) FROM messages)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(StoreInfo {
            path: self.path.clone(),
            boots,
            sessions,
            messages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::turns::*;

    fn turn(key: &str, text: &str, idem: &str) -> NewTurn {
        NewTurn {
            session_key: key.into(),
            agent_id: "main".into(),
            text: text.into(),
            idempotency_key: Some(idem.into()),
            mode: "followup".into(),
            dedupe_window_ms: 3_600_000,
            lane_full: false,
            attachments: Vec::new(),
            options: RunOptions::default(),
        }
    }

    fn accept(db: &mut SqliteStore, t: NewTurn) -> RunRecord {
        match db.accept_turn(&t) {
            Ok(Acceptance::New(run)) => run,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn a_queued_turn_is_recovered_and_retried_with_its_attachments() {
        let dir = std::env::temp_dir().join(format!("troupe-recover-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = SqliteStore::open(&dir.join("t.db")).unwrap();
        let file = crate::attachments::AttachmentRef {
            kind: crate::attachments::AttachmentKind::Image,
            mime_type: "image/png".into(),
            file_name: "dot.png".into(),
            path: "uploads/u/dot.png".into(),
            size: 67,
            file: dir.join("uploads/u/dot.png"),
        };
        accept(&mut db, turn("agent:main:a", "plain", "k1"));
        let mut with_file = turn("agent:main:a", "look", "k2");
        with_file.attachments = vec![file.clone()];
        let run = accept(&mut db, with_file.clone());
        assert!(run.input_attachments.is_empty(), "read only where needed");
        let (_, queued) = db.recover_runs("test").unwrap();
        let got: Vec<_> = queued
            .iter()
            .map(|r| (r.input.as_str(), r.input_attachments.clone()))
            .collect();
        assert_eq!(got, [("plain", vec![]), ("look", vec![file.clone()])]);
        match db.accept_turn(&with_file).unwrap() {
            Acceptance::Duplicate(again) => assert_eq!(again.input_attachments, [file]),
            other => panic!("not a duplicate: {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_record_of_an_accepted_turn_is_what_the_store_reads_back() {
        // The acceptance builds its record from what it wrote (no `RETURNING`): it must be
        // the row as stored, with and without options, and after a finish the row is the
        // finished one.
        let dir = std::env::temp_dir().join(format!("troupe-record-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = SqliteStore::open(&dir.join("t.db")).unwrap();
        let mut asked = turn("agent:main:a", "asked", "k2");
        asked.options = RunOptions {
            timeout_ms: Some(1500),
            extra_system_prompt: None,
            model: Some("big-model".into()),
        };
        for t in [turn("agent:main:a", "plain", "k1"), asked] {
            let run = accept(&mut db, t);
            assert_eq!(Some(run.clone()), db.get_run(&run.id).unwrap());
        }
        let run = accept(&mut db, turn("agent:main:b", "to finish", "k3"));
        let end = RunEnd {
            status: RunStatus::Ok,
            output: "done".into(),
            error: None,
            input_tokens: 2,
            output_tokens: 3,
            cost_usd: 0.5,
            attachments: Vec::new(),
        };
        db.finish_run(&run.id, &end).unwrap();
        let stored = db.get_run(&run.id).unwrap().unwrap();
        assert_eq!(
            (stored.status.as_str(), stored.output.as_deref(), stored.seq),
            ("ok", Some("done"), run.seq)
        );
        assert!(stored.finished_at.is_some());
        // A run whose session was deleted meanwhile: the end is dropped, not an error.
        db.finish_run(&"no-such-run".into(), &end).unwrap();
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn turn_options_are_stored_with_the_run_null_when_default_and_recovered() {
        let dir = std::env::temp_dir().join(format!("troupe-options-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = SqliteStore::open(&dir.join("t.db")).unwrap();
        let plain = accept(&mut db, turn("agent:main:a", "plain", "k1"));
        let mut asked = turn("agent:main:a", "asked", "k2");
        asked.options = RunOptions {
            timeout_ms: Some(1500),
            extra_system_prompt: Some("Answer in French.".into()),
            model: Some("big-model".into()),
        };
        let run = accept(&mut db, asked.clone());
        assert_eq!(run.options, asked.options);
        let column = |db: &SqliteStore, id: &RunId| -> Option<String> {
            db.conn
                .query_row("SELECT options FROM runs WHERE id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(column(&db, &plain.id), None, "the defaults are NULL");
        assert_eq!(
            column(&db, &run.id).as_deref(),
            Some(
                r#"{"timeoutMs":1500,"extraSystemPrompt":"Answer in French.","model":"big-model"}"#
            )
        );
        let (_, queued) = db.recover_runs("test").unwrap();
        let got: Vec<_> = queued
            .iter()
            .map(|r| (r.input.as_str(), r.options.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("plain", RunOptions::default()),
                ("asked", asked.options.clone())
            ]
        );
        match db.accept_turn(&asked).unwrap() {
            Acceptance::Duplicate(again) => {
                assert_eq!(
                    (again.id, again.options),
                    (run.id.clone(), asked.options.clone())
                )
            }
            other => panic!("not a duplicate: {other:?}"),
        }
        // Back into the turn's options, and stored again the same.
        let options = asked.options.clone().with_attachments(Vec::new());
        assert_eq!(options.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            options.extra_system_prompt.as_deref(),
            Some("Answer in French.")
        );
        assert_eq!(options.model.as_deref(), Some("big-model"));
        assert_eq!(RunOptions::of(&options), asked.options);
        assert_eq!(
            RunOptions::of(&crate::messages::TurnOptions::default()).to_store_json(),
            None
        );
        // A column that cannot be read gives the defaults (and a warning), not a lost run.
        db.conn
            .execute(
                "UPDATE runs SET options = '{not json' WHERE id = ?1",
                [&run.id],
            )
            .unwrap();
        let read = db.get_run(&run.id).unwrap().unwrap();
        assert_eq!(read.options, RunOptions::default());
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tool_steps_sit_between_the_message_and_the_reply_and_stay_out_of_the_context() {
        let dir = std::env::temp_dir().join(format!("troupe-tools-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = SqliteStore::open(&dir.join("t.db")).unwrap();
        let key = "agent:main:a";
        let first = accept(&mut db, turn(key, "what time is it?", "k1"));
        // The next turn is queued before the first one ends: its message keeps its place.
        let second = accept(&mut db, turn(key, "and now?", "k2"));
        db.start_run(&first.id, &[], 10).unwrap();
        let step = |id: &str, name: &str, result: String, is_error: bool| {
            let meta = ToolMeta {
                name: name.into(),
                call_id: id.into(),
                is_error,
            };
            ToolStep::new(meta, r#"{"zone":"UTC"}"#, &result, 5)
        };
        let long = "é".repeat(20_000);
        let steps = [
            step("c1", "current_time", "12:00".into(), false),
            step("c2", "memory_read", long.clone(), true),
        ];
        let end = RunEnd {
            status: RunStatus::Ok,
            output: "noon".into(),
            error: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            attachments: Vec::new(),
        };
        db.finish_run_with_tools(&first.id, &end, &steps).unwrap();
        let page = db.history(&key.into(), HistoryPage::new(10, None)).unwrap();
        let rows: Vec<(&str, Option<&str>)> = page
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.run_id.as_deref()))
            .collect();
        let (one, two) = (Some(first.id.as_str()), Some(second.id.as_str()));
        assert_eq!(
            rows,
            [
                ("user", one),
                ("tool", one),
                ("tool", one),
                ("assistant", one),
                ("user", two)
            ]
        );
        let call = &page.messages[1];
        assert_eq!(call.text, "current_time({\"zone\":\"UTC\"})\n→ 12:00");
        assert_eq!(call.ts, 5);
        assert!(!call.truncated);
        assert_eq!(
            call.tool,
            Some(ToolMeta {
                name: "current_time".into(),
                call_id: "c1".into(),
                is_error: false
            })
        );
        // A long result is cut when written, on a character boundary, and flagged.
        let cut = &page.messages[2];
        assert!(cut.truncated);
        assert!(cut.text.len() <= ToolStep::MAX_TEXT_BYTES);
        assert!(
            cut.text
                .starts_with("memory_read({\"zone\":\"UTC\"})\n→ error: é")
        );
        let full =
            "memory_read(".len() + r#"{"zone":"UTC"}"#.len() + ")\n→ error: ".len() + long.len();
        assert_eq!(cut.bytes, Some(full as i64));
        assert!(cut.tool.as_ref().is_some_and(|t| t.is_error));
        let json = serde_json::to_value(call).unwrap();
        assert_eq!(json["tool"]["name"], "current_time");
        assert_eq!(json["tool"]["callId"], "c1");
        assert!(json["tool"].get("isError").is_none());
        // The next turn's context is the user and assistant messages only.
        let context = db.start_run(&second.id, &[], 10).unwrap();
        let roles: Vec<&str> = context.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant"]);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_deletes_old_finished_turns_and_keeps_waiting_ones() {
        let dir = std::env::temp_dir().join(format!("troupe-retention-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = SqliteStore::open(&dir.join("t.db")).unwrap();
        let old = accept(&mut db, turn("agent:main:a", "old", "k1"));
        let end = RunEnd {
            status: RunStatus::Ok,
            output: "old reply".into(),
            error: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            attachments: Vec::new(),
        };
        db.finish_run(&old.id, &end).unwrap();
        let waiting = accept(&mut db, turn("agent:main:a", "still waiting", "k2"));
        // Both happened "long ago".
        db.conn
            .execute("UPDATE messages SET ts = 1000", [])
            .unwrap();
        db.conn
            .execute("UPDATE runs SET accepted_at = 1000, finished_at = CASE WHEN finished_at IS NULL THEN NULL ELSE 1000 END", [])
            .unwrap();
        let (runs, messages) = db.sweep_older_than(2000).unwrap();
        assert_eq!(
            (runs, messages),
            (1, 2),
            "the finished turn and its two messages"
        );
        assert!(db.get_run(&old.id).unwrap().is_none());
        assert!(db.get_run(&waiting.id).unwrap().is_some());
        let page = db
            .history(&"agent:main:a".into(), HistoryPage::new(10, None))
            .unwrap();
        let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["still waiting"]);
        assert!(page.messages[0].queued);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn accept_and_start_stores_a_running_run_that_recovery_fails_visibly() {
        let dir = std::env::temp_dir().join(format!("troupe-at-once-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = SqliteStore::open(&dir.join("t.db")).unwrap();
        let earlier = accept(&mut db, turn("agent:main:a", "before", "k0"));
        let (acceptance, history) = db
            .accept_and_start(&turn("agent:main:a", "now", "k1"), 10)
            .unwrap();
        let Acceptance::New(run) = acceptance else {
            panic!("not accepted: {acceptance:?}");
        };
        let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["before"], "its context is what came before it");
        assert_eq!(db.get_run(&run.id).unwrap().unwrap().status, "running");
        let id = uuid::Uuid::parse_str(&run.id).expect("a run id is a UUID");
        assert_eq!(id.get_version(), Some(uuid::Version::Random), "{id}");
        assert_ne!(run.id, earlier.id, "each run has its own id");
        // The same key again: the duplicate, nothing started.
        let (again, none) = db
            .accept_and_start(&turn("agent:main:a", "now", "k1"), 10)
            .unwrap();
        assert!(matches!(again, Acceptance::Duplicate(ref d) if d.id == run.id));
        assert!(none.is_empty());
        // A crash now: the started run is failed as interrupted, the queued one runs again.
        let (interrupted, queued) = db.recover_runs("a test crash").unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(interrupted[0].id, run.id);
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, earlier.id);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// WAL frames the next commit wrote (each frame is one page, two writes).
    fn frames_of(db: &mut SqliteStore, commit: impl FnOnce(&mut SqliteStore)) -> i64 {
        let checkpoint = |db: &SqliteStore, mode: &str| {
            db.conn
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                    r.get::<_, i64>(1)
                })
                .unwrap()
        };
        // SQLite leaves a page alone when a row is rewritten with the same bytes: an
        // `updated_at` in the same millisecond as the last turn's would save a page.
        db.conn
            .execute("UPDATE sessions SET updated_at = 0", [])
            .unwrap();
        checkpoint(db, "TRUNCATE");
        assert_eq!(checkpoint(db, "PASSIVE"), 0, "WAL empty before");
        db.begin().unwrap();
        commit(db);
        db.commit().unwrap();
        checkpoint(db, "PASSIVE")
    }

    #[test]
    fn an_echo_turn_writes_eighteen_pages_and_the_reports_still_read_by_index() {
        let dir = std::env::temp_dir().join(format!("troupe-pages-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = SqliteStore::open(&dir.join("t.db")).unwrap();
        let end = RunEnd {
            status: RunStatus::Ok,
            output: "reply".into(),
            error: None,
            input_tokens: 1,
            output_tokens: 1,
            cost_usd: 0.0,
            attachments: Vec::new(),
        };
        for i in 0..3 {
            let (Acceptance::New(run), _) = db
                .accept_and_start(&turn("agent:main:a", "warm", &format!("w{i}")), 10)
                .unwrap()
            else {
                panic!("not accepted");
            };
            db.finish_run(&run.id, &end).unwrap();
        }
        // Pages (WAL frames) one turn writes at an idle lane: its acceptance 10, its end 8
        // (12 and 9 before schema 12 dropped two index writes). Every index on `runs` or
        // `messages` adds a page, two writes, to each commit: add one knowingly.
        let mut run = None;
        let accepted = frames_of(&mut db, |db| {
            let (Acceptance::New(new), _) = db
                .accept_and_start(&turn("agent:main:a", "now", "k1"), 10)
                .unwrap()
            else {
                panic!("not accepted");
            };
            run = Some(new);
        });
        let run = run.unwrap();
        let finished = frames_of(&mut db, |db| db.finish_run(&run.id, &end).unwrap());
        assert_eq!(
            (accepted, finished),
            (10, 8),
            "pages written by accept, finish"
        );
        // The per-session and usage reads still use an index (no table scan).
        let plan = |sql: &str| -> String {
            let mut stmt = db
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let count = plan("SELECT COUNT(*) FROM messages m WHERE m.session_key = 'agent:main:a'");
        assert!(count.contains("INDEX messages_by_turn"), "{count}");
        let usage = plan(
            "SELECT agent_id, COUNT(*) FROM runs WHERE finished_at IS NOT NULL AND finished_at >= 5 GROUP BY 1",
        );
        assert!(usage.contains("INDEX runs_by_finish"), "{usage}");
        let cascade = plan("DELETE FROM messages WHERE session_key = 'agent:main:a'");
        assert!(cascade.contains("INDEX messages_by_turn"), "{cascade}");
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_checkpoint_thread_writes_the_wal_back_and_the_last_close_removes_it() {
        let dir = std::env::temp_dir().join(format!("troupe-ckpt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let mut db = SqliteStore::open(&path).unwrap();
        for i in 0..3 * checkpoint::NUDGE_EVERY {
            db.begin().unwrap();
            accept(&mut db, turn("agent:main:a", "text", &format!("k{i}")));
            db.commit().unwrap();
        }
        drop(db);
        assert!(
            !dir.join("t.db-wal").exists(),
            "the checkpoint connection closes last and removes the WAL"
        );
        let mut db = SqliteStore::open(&path).unwrap();
        let page = db
            .history(&"agent:main:a".into(), HistoryPage::new(10_000, None))
            .unwrap();
        assert_eq!(page.messages.len(), 3 * checkpoint::NUDGE_EVERY as usize);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn idempotency_keys_are_per_session_and_history_pages_by_bytes() {
        let dir = std::env::temp_dir().join(format!("troupe-idem-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = SqliteStore::open(&dir.join("t.db")).unwrap();
        let a = accept(&mut db, turn("agent:main:a", "x", "same"));
        let b = accept(&mut db, turn("agent:main:b", "y", "same"));
        assert_ne!(a.id, b.id);
        match db.accept_turn(&turn("agent:main:a", "z", "same")).unwrap() {
            Acceptance::Duplicate(run) => assert_eq!(run.id, a.id),
            other => panic!("expected the duplicate, got {other:?}"),
        }
        for i in 0..5 {
            accept(
                &mut db,
                turn("agent:main:c", &"é".repeat(100), &format!("c{i}")),
            );
        }
        let page = HistoryPage {
            limit: 100,
            before: None,
            max_bytes: 450,
            max_text_bytes: 150,
        };
        let first = db.history(&"agent:main:c".into(), page).unwrap();
        assert_eq!(
            first.messages.len(),
            3,
            "three texts of 150 bytes fit in 450"
        );
        assert!(first.has_more);
        assert!(
            first
                .messages
                .iter()
                .all(|m| m.truncated && m.bytes == Some(200))
        );
        assert!(first.messages.iter().all(|m| m.text.len() == 150));
        let rest = db
            .history(
                &"agent:main:c".into(),
                HistoryPage {
                    before: first.next_before,
                    ..page
                },
            )
            .unwrap();
        assert_eq!(rest.messages.len(), 2);
        assert!(!rest.has_more);
        assert!(rest.messages.last().unwrap().id < first.messages[0].id);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;

    #[test]
    fn a_run_queued_before_schema_13_is_recovered_with_the_defaults() {
        let dir = std::env::temp_dir().join(format!("troupe-upgrade13-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            // What Troupe at schema 12 left: a turn still queued, no options column.
            let conn = Connection::open(&path).unwrap();
            for (number, sql) in MIGRATIONS.iter().filter(|(n, _)| *n <= 12) {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", number).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO sessions VALUES ('agent:main:main', 'main', 1, 1);
                 INSERT INTO runs (id, session_key, agent_id, status, mode, input, accepted_at)
                 VALUES ('r-old', 'agent:main:main', 'main', 'queued', 'followup', 'still waiting', 1);
                 INSERT INTO messages (session_key, role, text, run_id, ts, turn)
                 VALUES ('agent:main:main', 'user', 'still waiting', 'r-old', 1, 1);",
            )
            .unwrap();
        }
        let mut db = SqliteStore::open(&path).unwrap();
        let (_, queued) = db.recover_runs("an upgrade").unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].input, "still waiting");
        assert_eq!(
            queued[0].options,
            crate::store::turns::RunOptions::default()
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn schema_15_checks_build_no_temporary_table_and_still_refuse_bad_values() {
        let dir = std::env::temp_dir().join(format!("troupe-upgrade15-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            // What Troupe at schema 13 left, with a finished turn in it.
            let conn = Connection::open(&path).unwrap();
            for (number, sql) in MIGRATIONS.iter().filter(|(n, _)| *n <= 13) {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", number).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO sessions VALUES ('agent:main:main', 'main', 1, 1);
                 INSERT INTO runs (id, session_key, agent_id, status, mode, input, accepted_at)
                 VALUES ('r-old', 'agent:main:main', 'main', 'ok', 'followup', 'hi', 1);
                 INSERT INTO messages (session_key, role, text, run_id, ts, turn)
                 VALUES ('agent:main:main', 'user', 'hi', 'r-old', 1, 1);",
            )
            .unwrap();
        }
        let db = SqliteStore::open(&path).unwrap();
        let integrity: String = db
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let schema: Vec<String> = db
            .conn
            .prepare(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name IN
                 ('messages', 'runs', 'channel_inbound', 'channel_deliveries', 'cron_runs')",
            )
            .unwrap()
            .query_map([], |r| r.get::<_, Option<String>>(0))
            .unwrap()
            .filter_map(|r| r.unwrap())
            .collect();
        for sql in &schema {
            assert!(
                !sql.contains(" IN ("),
                "a CHECK with an IN list is left: {sql}"
            );
        }
        // Writing a row builds no temporary b-tree any more ...
        let writes = [
            "INSERT INTO messages (session_key, role, text, run_id, ts, turn) VALUES ('agent:main:main', 'assistant', 'x', 'r-old', 1, 1)",
            "UPDATE runs SET status = 'error' WHERE id = 'r-old'",
            "UPDATE channel_inbound SET state = 'done' WHERE id = 1",
            "UPDATE channel_deliveries SET state = 'sent' WHERE id = 1",
            "UPDATE cron_runs SET outcome = 'ok' WHERE id = 1",
        ];
        for sql in writes {
            let ops: Vec<String> = db
                .conn
                .prepare(&format!("EXPLAIN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(1))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{sql}");
        }
        // ... and the constraints still refuse what they refused, and the old rows are there.
        for bad in [
            "INSERT INTO messages (session_key, role, text, ts, turn) VALUES ('agent:main:main', 'system', 'x', 1, 1)",
            "UPDATE runs SET status = 'done' WHERE id = 'r-old'",
        ] {
            let err = db.conn.execute(bad, []).unwrap_err().to_string();
            assert!(err.contains("CHECK constraint failed"), "{bad}: {err}");
        }
        let messages: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(messages, 1);
        drop(db);
        // Opened again: nothing applied twice, still sound.
        let again = SqliteStore::open(&path).unwrap();
        let integrity: String = again
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_migrated_by_sqlx_is_taken_over_without_reapplying() {
        let dir = std::env::temp_dir().join(format!("troupe-upgrade-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            // What an earlier Troupe left: schema 1-4 and sqlx's ledger of them.
            let conn = Connection::open(&path).unwrap();
            for (_, sql) in &MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, success BOOLEAN NOT NULL);
                 INSERT INTO _sqlx_migrations VALUES (1, 1), (2, 1), (3, 1), (4, 1);
                 INSERT INTO sessions VALUES ('agent:main:main', 'main', 1, 1);
                 INSERT INTO messages (session_key, role, text, run_id, ts) VALUES ('agent:main:main', 'user', 'kept', NULL, 1);",
            )
            .unwrap();
        }
        let mut db = SqliteStore::open(&path).unwrap();
        let version: i64 = db
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(Some(version), MIGRATIONS.last().map(|(n, _)| *n));
        let page = db
            .history(
                &"agent:main:main".into(),
                crate::store::turns::HistoryPage::new(10, None),
            )
            .unwrap();
        assert_eq!(page.messages.len(), 1, "old data kept");
        drop(db);
        // Opening again applies nothing twice.
        SqliteStore::open(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
