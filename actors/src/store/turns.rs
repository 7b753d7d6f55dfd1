//! The store's queries for sessions, transcripts and runs. Plain async functions over the
//! pool; the [`StoreActor`](super::StoreActor) calls them one write at a time.

use serde::Serialize;
use sqlx::{Row, SqlitePool};

use super::StoreError;
use crate::now_ms;

/// A run (one agent turn) as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Run id (uuid).
    pub id: String,
    /// Global acceptance order.
    pub seq: i64,
    /// Session key.
    pub session_key: String,
    /// Agent id.
    pub agent_id: String,
    /// queued | running | ok | error | aborted | coalesced.
    pub status: String,
    /// Queue mode it was submitted with.
    pub mode: String,
    /// The user's message.
    pub input: String,
    /// The reply, when finished.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// For `coalesced` runs: the run that carried them.
    pub coalesced_into: Option<String>,
    /// Accepted (ms since the epoch).
    pub accepted_at: i64,
    /// Finished (ms since the epoch).
    pub finished_at: Option<i64>,
}

/// One transcript entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    /// Message id (increasing).
    pub id: i64,
    /// user | assistant | tool.
    pub role: String,
    /// Text.
    pub text: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
    /// The run it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The message is waiting in the session's lane; its turn has not run yet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
    /// `text` was cut to [`HistoryPage::max_text_bytes`]; `bytes` is the full length.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Full length of the text in bytes (given when `truncated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
}

/// What a client asks of a transcript page.
#[derive(Debug, Clone, Copy)]
pub struct HistoryPage {
    /// At most this many messages.
    pub limit: i64,
    /// Messages before this message id (in turn order); `None` for the newest.
    pub before: Option<i64>,
    /// At most this many bytes of text in the page (at least one message is returned).
    pub max_bytes: usize,
    /// Longer texts are cut to this many bytes and flagged `truncated`.
    pub max_text_bytes: usize,
}

impl HistoryPage {
    /// Text bytes in one page by default.
    pub const MAX_BYTES: usize = 1024 * 1024;
    /// Text bytes of one message in a page by default.
    pub const MAX_TEXT_BYTES: usize = 64 * 1024;

    /// A page of `limit` messages before `before`, with the default byte bounds.
    pub fn new(limit: i64, before: Option<i64>) -> Self {
        Self {
            limit,
            before,
            max_bytes: Self::MAX_BYTES,
            max_text_bytes: Self::MAX_TEXT_BYTES,
        }
    }
}

/// A page of a transcript, oldest first.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Transcript {
    /// The messages, in turn order.
    pub messages: Vec<StoredMessage>,
    /// Older messages exist.
    pub has_more: bool,
    /// The `before` cursor of the next (older) page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// A session in `sessions.list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    /// Session key.
    pub key: String,
    /// Agent id.
    pub agent_id: String,
    /// Created (ms).
    pub created_at: i64,
    /// Last activity (ms).
    pub updated_at: i64,
    /// Messages in the transcript.
    pub messages: i64,
}

/// What happened to a submitted turn.
#[derive(Debug, Clone)]
pub enum Acceptance {
    /// Stored as a new queued run.
    New(RunRecord),
    /// The idempotency key was seen within the window: the earlier run.
    Duplicate(RunRecord),
    /// Not stored: the lane was full.
    Refused,
}

/// A turn to accept.
#[derive(Debug, Clone)]
pub struct NewTurn {
    /// Session key.
    pub session_key: String,
    /// Agent id.
    pub agent_id: String,
    /// User message.
    pub text: String,
    /// Client's idempotency key.
    pub idempotency_key: Option<String>,
    /// Queue mode.
    pub mode: String,
    /// Dedupe window, ms.
    pub dedupe_window_ms: i64,
    /// When true, refuse unless it is a duplicate.
    pub lane_full: bool,
}

const RUN_COLUMNS: &str = "seq, id, session_key, agent_id, status, mode, input, output, error, coalesced_into, accepted_at, finished_at";

fn run_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RunRecord, sqlx::Error> {
    Ok(RunRecord {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        session_key: row.try_get("session_key")?,
        agent_id: row.try_get("agent_id")?,
        status: row.try_get("status")?,
        mode: row.try_get("mode")?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        coalesced_into: row.try_get("coalesced_into")?,
        accepted_at: row.try_get("accepted_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Stores the user's message and a queued run in one transaction (or finds the duplicate).
pub async fn accept_turn(pool: &SqlitePool, turn: NewTurn) -> Result<Acceptance, StoreError> {
    let mut tx = pool.begin().await?;
    let now = now_ms() as i64;
    if let Some(key) = &turn.idempotency_key {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE session_key = ? AND idempotency_key = ? AND accepted_at >= ? ORDER BY seq DESC LIMIT 1"
        );
        let found = sqlx::query(&sql)
            .bind(&turn.session_key)
            .bind(key)
            .bind(now - turn.dedupe_window_ms)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = found {
            return Ok(Acceptance::Duplicate(run_from_row(&row)?));
        }
    }
    if turn.lane_full {
        return Ok(Acceptance::Refused);
    }
    sqlx::query(
        "INSERT INTO sessions (key, agent_id, created_at, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(key) DO UPDATE SET updated_at = excluded.updated_at",
    )
    .bind(&turn.session_key)
    .bind(&turn.agent_id)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let sql = format!(
        "INSERT INTO runs (id, session_key, agent_id, status, mode, idempotency_key, input, accepted_at)
         VALUES (?, ?, ?, 'queued', ?, ?, ?, ?) RETURNING {RUN_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&run_id)
        .bind(&turn.session_key)
        .bind(&turn.agent_id)
        .bind(&turn.mode)
        .bind(&turn.idempotency_key)
        .bind(&turn.text)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    let run = run_from_row(&row)?;
    sqlx::query(
        "INSERT INTO messages (session_key, role, text, run_id, ts, turn) VALUES (?, 'user', ?, ?, ?, ?)",
    )
    .bind(&turn.session_key)
    .bind(&turn.text)
    .bind(&run_id)
    .bind(now)
    .bind(run.seq)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Acceptance::New(run))
}

/// Marks a run as running.
pub async fn mark_running(pool: &SqlitePool, run_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
    )
    .bind(now_ms() as i64)
    .bind(run_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// How a run ended, as stored.
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    /// ok | error | aborted.
    pub status: String,
    /// The reply (partial when aborted).
    pub output: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in USD.
    pub cost_usd: f64,
}

/// Records a run's end; a non-empty reply goes into the transcript in the same transaction.
pub async fn finish_run(pool: &SqlitePool, run_id: &str, end: &RunEnd) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let now = now_ms() as i64;
    let updated: Option<(String, i64)> = sqlx::query_as(
        "UPDATE runs SET status = ?, output = ?, error = ?, finished_at = ?, input_tokens = ?, output_tokens = ?, cost_usd = ?
         WHERE id = ? RETURNING session_key, seq",
    )
    .bind(&end.status)
    .bind(&end.output)
    .bind(&end.error)
    .bind(now)
    .bind(end.input_tokens as i64)
    .bind(end.output_tokens as i64)
    .bind(end.cost_usd)
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((session_key, turn)) = updated else {
        // The session was deleted while the run was going: nothing left to record.
        return Ok(());
    };
    if !end.output.is_empty() {
        sqlx::query("INSERT INTO messages (session_key, role, text, run_id, ts, turn) VALUES (?, 'assistant', ?, ?, ?, ?)")
            .bind(&session_key)
            .bind(&end.output)
            .bind(run_id)
            .bind(now)
            .bind(turn)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE sessions SET updated_at = ? WHERE key = ?")
        .bind(now)
        .bind(&session_key)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Token and cost totals for one grouping key.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    /// Agent id, session key, or day (`YYYY-MM-DD`); empty for the total.
    pub key: String,
    /// Finished runs.
    pub runs: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cost in USD.
    pub cost_usd: f64,
}

/// Usage since `since_ms`: total, per agent, per session (top 100 by tokens), per day (UTC).
pub async fn usage_report(
    pool: &SqlitePool,
    since_ms: i64,
) -> Result<serde_json::Value, StoreError> {
    let group = |expr: &str, order: &str| {
        format!(
            "SELECT {expr} AS key, COUNT(*) AS runs, COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens, COALESCE(SUM(cost_usd), 0.0) AS cost_usd
             FROM runs WHERE finished_at IS NOT NULL AND finished_at >= ? GROUP BY 1 ORDER BY {order} LIMIT 100"
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
        let rows = sqlx::query(&sql).bind(since_ms).fetch_all(pool).await?;
        let rows: Vec<UsageRow> = rows
            .iter()
            .map(|r| {
                Ok(UsageRow {
                    key: r.try_get("key")?,
                    runs: r.try_get("runs")?,
                    input_tokens: r.try_get("input_tokens")?,
                    output_tokens: r.try_get("output_tokens")?,
                    cost_usd: r.try_get("cost_usd")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
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

/// Marks runs as carried by another run (collect mode) or dropped (aborted / superseded).
pub async fn close_runs(
    pool: &SqlitePool,
    run_ids: &[String],
    status: &str,
    note: Option<&str>,
    into: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let now = now_ms() as i64;
    for id in run_ids {
        sqlx::query("UPDATE runs SET status = ?, error = ?, coalesced_into = ?, finished_at = ? WHERE id = ? AND status IN ('queued', 'running')")
            .bind(status)
            .bind(note)
            .bind(into)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if let Some(carrier) = into {
            // A coalesced message belongs to the turn that carried it.
            sqlx::query(
                "UPDATE messages SET turn = (SELECT seq FROM runs WHERE id = ?) WHERE run_id = ?",
            )
            .bind(carrier)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// At start: runs that were running when the gateway (or the queue) died are failed
/// (visibly, with `reason`: running them again could answer twice); queued runs are
/// returned in order.
pub async fn recover_runs(
    pool: &SqlitePool,
    reason: &str,
) -> Result<(Vec<RunRecord>, Vec<RunRecord>), StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY seq");
    let interrupted: Vec<RunRecord> = sqlx::query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(run_from_row)
        .collect::<Result<_, _>>()?;
    for run in &interrupted {
        let end = RunEnd {
            status: "error".into(),
            error: Some(format!(
                "interrupted: {reason} during this run; not retried so it cannot answer twice"
            )),
            ..RunEnd::default()
        };
        finish_run(pool, &run.id, &end).await?;
    }
    let interrupted = interrupted
        .into_iter()
        .map(|mut r| {
            r.status = "error".into();
            r
        })
        .collect();
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY seq");
    let queued = sqlx::query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(run_from_row)
        .collect::<Result<_, _>>()?;
    Ok((interrupted, queued))
}

/// One run by id.
pub async fn get_run(pool: &SqlitePool, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?");
    let row = sqlx::query(&sql).bind(run_id).fetch_optional(pool).await?;
    Ok(row.as_ref().map(run_from_row).transpose()?)
}

/// The cursor condition "before message `before` in turn order" (no cursor: everything).
const BEFORE: &str =
    "(m.turn, m.id) < (COALESCE((SELECT turn FROM messages WHERE id = ?1), ?1), ?1)";

/// A page of the transcript in turn order (each turn's user message, then its reply, then
/// the next turn; waiting messages last, flagged `queued`), bounded by count and bytes.
pub async fn history(
    pool: &SqlitePool,
    session_key: &str,
    page: HistoryPage,
) -> Result<Transcript, StoreError> {
    let sql = format!(
        "SELECT m.id, m.role, substr(m.text, 1, ?3) AS text, length(CAST(m.text AS BLOB)) AS bytes, m.ts, m.run_id,
                r.status = 'queued' AS queued
         FROM messages m LEFT JOIN runs r ON r.id = m.run_id
         WHERE m.session_key = ?2 AND {BEFORE}
         ORDER BY m.turn DESC, m.id DESC LIMIT ?4"
    );
    let max_text = page.max_text_bytes.max(1);
    let rows = sqlx::query(&sql)
        .bind(page.before.unwrap_or(i64::MAX))
        .bind(session_key)
        .bind(max_text as i64)
        .bind(page.limit.max(1) + 1)
        .fetch_all(pool)
        .await?;
    let mut messages = Vec::new();
    let mut used = 0usize;
    let mut has_more = false;
    for row in &rows {
        let bytes: i64 = row.try_get("bytes")?;
        let text: String = row.try_get("text")?;
        let text = cut_to_bytes(text, max_text);
        let truncated = (text.len() as i64) < bytes;
        let full = messages.len() as i64 >= page.limit.max(1);
        if full || (!messages.is_empty() && used + text.len() > page.max_bytes) {
            has_more = true;
            break;
        }
        used += text.len();
        messages.push(StoredMessage {
            id: row.try_get("id")?,
            role: row.try_get("role")?,
            text,
            ts: row.try_get("ts")?,
            run_id: row.try_get("run_id")?,
            queued: row.try_get::<Option<bool>, _>("queued")?.unwrap_or(false),
            truncated,
            bytes: truncated.then_some(bytes),
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

/// The context a model gets for the turn whose first message is `before`: the last `limit`
/// messages of the turns before it, in turn order, whole.
pub async fn context(
    pool: &SqlitePool,
    session_key: &str,
    limit: i64,
    before: Option<i64>,
) -> Result<Vec<StoredMessage>, StoreError> {
    let sql = format!(
        "SELECT m.id, m.role, m.text, m.ts, m.run_id FROM messages m
         WHERE m.session_key = ?2 AND {BEFORE}
         ORDER BY m.turn DESC, m.id DESC LIMIT ?3"
    );
    let rows = sqlx::query(&sql)
        .bind(before.unwrap_or(i64::MAX))
        .bind(session_key)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(StoredMessage {
                id: r.try_get("id")?,
                role: r.try_get("role")?,
                text: r.try_get("text")?,
                ts: r.try_get("ts")?,
                run_id: r.try_get("run_id")?,
                queued: false,
                truncated: false,
                bytes: None,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    out.reverse();
    Ok(out)
}

/// The id of a run's first transcript message (its user message), if stored.
pub async fn first_message_of_run(
    pool: &SqlitePool,
    run_id: &str,
) -> Result<Option<i64>, StoreError> {
    let row: (Option<i64>,) = sqlx::query_as("SELECT MIN(id) FROM messages WHERE run_id = ?")
        .bind(run_id)
        .fetch_one(pool)
        .await?;
    Ok(row.0)
}

/// Sessions, most recently active first.
pub async fn list_sessions(
    pool: &SqlitePool,
    limit: i64,
) -> Result<Vec<SessionSummary>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.key, s.agent_id, s.created_at, s.updated_at, (SELECT COUNT(*) FROM messages m WHERE m.session_key = s.key) AS messages
         FROM sessions s ORDER BY s.updated_at DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SessionSummary {
                key: r.try_get("key")?,
                agent_id: r.try_get("agent_id")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                messages: r.try_get("messages")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Clears a session's transcript and finished runs (`delete` also removes the session).
pub async fn clear_session(
    pool: &SqlitePool,
    session_key: &str,
    delete: bool,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let existed = sqlx::query("SELECT 1 FROM sessions WHERE key = ?")
        .bind(session_key)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    sqlx::query("DELETE FROM messages WHERE session_key = ?")
        .bind(session_key)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM runs WHERE session_key = ? AND status NOT IN ('queued', 'running')")
        .bind(session_key)
        .execute(&mut *tx)
        .await?;
    if delete {
        sqlx::query("UPDATE runs SET status = 'aborted', error = 'session deleted' WHERE session_key = ? AND status IN ('queued', 'running')").bind(session_key).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM runs WHERE session_key = ?")
            .bind(session_key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE key = ?")
            .bind(session_key)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(existed)
}

/// Retention: deletes finished runs that ended before `cutoff_ms` and transcript messages
/// older than it, never those of queued or running turns. Returns (runs, messages) deleted.
pub async fn sweep_older_than(pool: &SqlitePool, cutoff_ms: i64) -> Result<(u64, u64), StoreError> {
    let mut tx = pool.begin().await?;
    let messages = sqlx::query(
        "DELETE FROM messages WHERE ts < ?1 AND (run_id IS NULL OR run_id NOT IN
           (SELECT id FROM runs WHERE status IN ('queued', 'running')))",
    )
    .bind(cutoff_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let runs = sqlx::query(
        "DELETE FROM runs WHERE status NOT IN ('queued', 'running') AND COALESCE(finished_at, accepted_at) < ?1",
    )
    .bind(cutoff_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((runs, messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(key: &str, text: &str, idem: &str) -> NewTurn {
        NewTurn {
            session_key: key.into(),
            agent_id: "main".into(),
            text: text.into(),
            idempotency_key: Some(idem.into()),
            mode: "followup".into(),
            dedupe_window_ms: 3_600_000,
            lane_full: false,
        }
    }

    async fn accept(pool: &SqlitePool, t: NewTurn) -> RunRecord {
        match accept_turn(pool, t).await {
            Ok(Acceptance::New(run)) => run,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[tokio::test]
    async fn retention_deletes_old_finished_turns_and_keeps_waiting_ones() {
        let dir = std::env::temp_dir().join(format!("troupe-retention-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let pool = crate::store::open(&dir.join("t.db")).await.unwrap();
        let old = accept(&pool, turn("agent:main:a", "old", "k1")).await;
        let end = RunEnd {
            status: "ok".into(),
            output: "old reply".into(),
            ..RunEnd::default()
        };
        finish_run(&pool, &old.id, &end).await.unwrap();
        let waiting = accept(&pool, turn("agent:main:a", "still waiting", "k2")).await;
        // Both happened "long ago".
        sqlx::query("UPDATE messages SET ts = 1000")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE runs SET accepted_at = 1000, finished_at = CASE WHEN finished_at IS NULL THEN NULL ELSE 1000 END")
            .execute(&pool)
            .await
            .unwrap();
        let (runs, messages) = sweep_older_than(&pool, 2000).await.unwrap();
        assert_eq!(
            (runs, messages),
            (1, 2),
            "the finished turn and its two messages"
        );
        assert!(get_run(&pool, &old.id).await.unwrap().is_none());
        assert!(get_run(&pool, &waiting.id).await.unwrap().is_some());
        let page = history(&pool, "agent:main:a", HistoryPage::new(10, None))
            .await
            .unwrap();
        let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["still waiting"]);
        assert!(page.messages[0].queued);
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn idempotency_keys_are_per_session_and_history_pages_by_bytes() {
        let dir = std::env::temp_dir().join(format!("troupe-idem-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let pool = crate::store::open(&dir.join("t.db")).await.unwrap();
        let a = accept(&pool, turn("agent:main:a", "x", "same")).await;
        let b = accept(&pool, turn("agent:main:b", "y", "same")).await;
        assert_ne!(a.id, b.id);
        match accept_turn(&pool, turn("agent:main:a", "z", "same"))
            .await
            .unwrap()
        {
            Acceptance::Duplicate(run) => assert_eq!(run.id, a.id),
            other => panic!("expected the duplicate, got {other:?}"),
        }
        for i in 0..5 {
            accept(
                &pool,
                turn("agent:main:c", &"é".repeat(100), &format!("c{i}")),
            )
            .await;
        }
        let page = HistoryPage {
            limit: 100,
            before: None,
            max_bytes: 450,
            max_text_bytes: 150,
        };
        let first = history(&pool, "agent:main:c", page).await.unwrap();
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
        let rest = history(
            &pool,
            "agent:main:c",
            HistoryPage {
                before: first.next_before,
                ..page
            },
        )
        .await
        .unwrap();
        assert_eq!(rest.messages.len(), 2);
        assert!(!rest.has_more);
        assert!(rest.messages.last().unwrap().id < first.messages[0].id);
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
