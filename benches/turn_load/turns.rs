//! Closed-loop chat turns over WebSocket. Each session sends `chat.send`, waits for its run's
//! `chat` event with `state: "final"`, then sends its next turn. Sessions share a few
//! connections (one each up to [`MAX_CONNECTIONS`], then several per connection); one task
//! per connection matches responses and events to its sessions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::BenchResult;
use crate::support::client::Client;

/// Most connections a [`Fleet`] opens; more sessions than this share connections.
pub const MAX_CONNECTIONS: usize = 32;

/// Upper bound on frames one connection reads in one run (events included).
const MAX_FRAMES_PER_RUN: usize = 100_000_000;

/// Numbers fleets, so that idempotency keys never repeat on one gateway.
static NEXT_FLEET: AtomicUsize = AtomicUsize::new(0);

/// The fields of any server frame that say what it is.
#[derive(Deserialize)]
struct Head {
    /// `res` or `event`.
    #[serde(rename = "type")]
    kind: String,
    /// Request id of a response.
    id: Option<String>,
    /// Outcome of a response.
    ok: Option<bool>,
    /// Event name.
    event: Option<String>,
}

/// A successful `chat.send` response.
#[derive(Deserialize)]
struct AcceptedFrame {
    /// `{runId, duplicate, ...}`.
    payload: Accepted,
}

/// The payload of a successful `chat.send` response.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    /// The run the turn became.
    run_id: String,
    /// Whether the gateway returned an earlier run for a repeated idempotency key.
    #[serde(default)]
    duplicate: bool,
}

/// A `chat` event.
#[derive(Deserialize)]
struct ChatFrame {
    /// Its payload.
    payload: ChatPayload,
}

/// The payload of a `chat` event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatPayload {
    /// The run it belongs to.
    run_id: String,
    /// The session it belongs to.
    session_key: String,
    /// `delta`, `final`, `error` or `aborted`.
    state: String,
    /// The reply, on `final`.
    message: Option<Reply>,
    /// Why the run failed, on `error`.
    error_message: Option<Value>,
}

/// The assistant message of a `final` event.
#[derive(Deserialize)]
struct Reply {
    /// Its text.
    text: Option<String>,
}

/// What a run of turns (or of direct model requests) measured.
#[derive(Default)]
pub struct TurnStats {
    /// Turns that ended with a reply.
    pub turns: usize,
    /// Turns that ended with an error (or were aborted).
    pub failed: usize,
    /// Replies that did not end with the message sent (echo and the fake repeat it).
    pub wrong_replies: usize,
    /// The first failure or wrong reply, for the report.
    pub first_problem: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Submit → final reply, microseconds, one per successful turn.
    pub final_us: Vec<u32>,
    /// Submit → first streamed delta (the reply if none came first), microseconds.
    pub first_token_us: Vec<u32>,
    /// Submit → the `chat.send` response, microseconds (turns through the gateway only).
    pub accepted_us: Vec<u32>,
}

/// When the steps of one successful turn happened.
pub struct Timing {
    /// The request was sent.
    pub sent_at: Instant,
    /// The gateway accepted it (the `chat.send` response), for turns through the gateway.
    pub accepted: Option<Instant>,
    /// The first text delta came, if one came before the end.
    pub first_token: Option<Instant>,
    /// The reply was complete.
    pub done: Instant,
}

impl TurnStats {
    /// Successful turns per second.
    pub fn rate(&self) -> f64 {
        self.turns as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Notes a failed turn.
    pub fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_problem.get_or_insert(why);
    }

    /// Notes a successful turn: its `timing`, and its reply `text` to `message`.
    pub fn succeed(&mut self, timing: &Timing, message: &str, text: &str) {
        let since_sent = |at: Instant| micros(at.saturating_duration_since(timing.sent_at));
        self.turns += 1;
        self.final_us.push(since_sent(timing.done));
        self.first_token_us
            .push(since_sent(timing.first_token.unwrap_or(timing.done)));
        if let Some(accepted) = timing.accepted {
            self.accepted_us.push(since_sent(accepted));
        }
        if !text.ends_with(message) {
            self.wrong_replies += 1;
            self.first_problem
                .get_or_insert_with(|| format!("reply {text:?} to {message:?}"));
        }
    }

    /// Combines runs that went on side by side: counts add, wall time is the longest.
    pub fn side_by_side(parts: Vec<TurnStats>) -> TurnStats {
        Self::combine(parts, |total, part| total.max(part))
    }

    /// Combines runs that went on one after another: counts and wall times add.
    pub fn one_after_another(parts: Vec<TurnStats>) -> TurnStats {
        Self::combine(parts, |total, part| total + part)
    }

    /// Adds up `parts`, combining their wall times with `elapsed`.
    fn combine(parts: Vec<TurnStats>, elapsed: fn(Duration, Duration) -> Duration) -> TurnStats {
        let mut all = TurnStats::default();
        for part in parts {
            all.turns += part.turns;
            all.failed += part.failed;
            all.wrong_replies += part.wrong_replies;
            if all.first_problem.is_none() {
                all.first_problem = part.first_problem;
            }
            all.elapsed = elapsed(all.elapsed, part.elapsed);
            all.final_us.extend(part.final_us);
            all.first_token_us.extend(part.first_token_us);
            all.accepted_us.extend(part.accepted_us);
        }
        all
    }
}

/// When a run stops starting turns: at a deadline or after a number of turns, whichever
/// comes first. Shared by the connections of a fleet.
struct Budget {
    /// No turn starts after this.
    deadline: Instant,
    /// Most turns started in the run.
    max_turns: usize,
    /// Turns started so far.
    started: AtomicUsize,
}

impl Budget {
    /// Whether one more turn may start (and counts it if so).
    fn take(&self) -> bool {
        Instant::now() < self.deadline
            && self.started.fetch_add(1, Ordering::Relaxed) < self.max_turns
    }
}

/// Authenticated connections driving closed-loop turns on a set of sessions of one agent.
pub struct Fleet {
    /// The connections, each with its sessions.
    conns: Vec<Conn>,
}

impl Fleet {
    /// Opens `min(sessions, MAX_CONNECTIONS)` connections to the gateway on `port` for
    /// sessions `agent:<agent>:bench:dm:0..sessions`, dealt round-robin to them.
    pub async fn open(port: u16, token: &str, agent: &str, sessions: usize) -> BenchResult<Fleet> {
        let fleet = NEXT_FLEET.fetch_add(1, Ordering::Relaxed);
        let count = sessions.clamp(1, MAX_CONNECTIONS);
        let clients =
            futures_util::future::try_join_all((0..count).map(|_| Client::connect(port, token)))
                .await?;
        let mut conns: Vec<Conn> = clients
            .into_iter()
            .map(|client| Conn {
                client,
                sessions: Vec::new(),
                by_key: HashMap::new(),
                by_request: HashMap::new(),
                in_flight: 0,
            })
            .collect();
        for n in 0..sessions {
            let conn = &mut conns[n % count];
            let key = format!("agent:{agent}:bench:dm:{n}");
            conn.by_key.insert(key.clone(), conn.sessions.len());
            conn.sessions.push(Session {
                key,
                idempotency_prefix: format!("turn-load-{}-{fleet}-{n}", std::process::id()),
                sent: 0,
                pending: None,
            });
        }
        Ok(Fleet { conns })
    }

    /// Runs every session's closed loop until `duration` has passed or `max_turns` turns
    /// have started, then waits for the turns in flight to end.
    pub async fn run(&mut self, duration: Duration, max_turns: usize) -> BenchResult<TurnStats> {
        let budget = Arc::new(Budget {
            deadline: Instant::now() + duration,
            max_turns,
            started: AtomicUsize::new(0),
        });
        let mut tasks = JoinSet::new();
        for mut conn in self.conns.drain(..) {
            let budget = budget.clone();
            tasks.spawn(async move {
                let result = conn.run(&budget).await;
                (conn, result)
            });
        }
        let mut parts = Vec::with_capacity(tasks.len());
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (conn, result) = joined?;
            self.conns.push(conn);
            match result {
                Ok(part) => parts.push(part),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(TurnStats::side_by_side(parts)),
        }
    }

    /// Closes every connection.
    pub async fn close(self) {
        for conn in self.conns {
            conn.client.close().await;
        }
    }
}

/// One connection and the sessions it drives.
struct Conn {
    /// The socket.
    client: Client,
    /// Its sessions.
    sessions: Vec<Session>,
    /// Session index by session key.
    by_key: HashMap<String, usize>,
    /// Session index by the id of its unanswered `chat.send`.
    by_request: HashMap<String, usize>,
    /// Sessions with a turn in flight.
    in_flight: usize,
}

/// One session's closed loop.
struct Session {
    /// `agent:<agent>:bench:dm:<n>`.
    key: String,
    /// Unique to this session of this fleet; a turn number completes each key.
    idempotency_prefix: String,
    /// Turns sent so far.
    sent: u64,
    /// The turn in flight.
    pending: Option<Pending>,
}

/// A turn in flight.
struct Pending {
    /// When its `chat.send` was sent.
    sent_at: Instant,
    /// Its message.
    message: String,
    /// Its run, once the response came.
    run_id: Option<String>,
    /// When the response came.
    accepted_at: Option<Instant>,
    /// When its first `delta` came.
    first_delta: Option<Instant>,
    /// Its end, once the `final` (or `error`) event came; may come before the response.
    end: Option<End>,
}

/// How and when a run ended.
struct End {
    /// When the event came.
    at: Instant,
    /// The run it belongs to.
    run_id: String,
    /// The reply text, or why it failed.
    reply: Result<String, String>,
}

impl Conn {
    /// Starts a turn on each session, then reads frames, starting a session's next turn as
    /// soon as its previous one ended, until the budget is spent and nothing is in flight.
    async fn run(&mut self, budget: &Budget) -> BenchResult<TurnStats> {
        let start = Instant::now();
        let mut stats = TurnStats::default();
        for index in 0..self.sessions.len() {
            if budget.take() {
                self.send_turn(index).await?;
            }
        }
        let mut frames = 0;
        while self.in_flight > 0 {
            frames += 1;
            if frames > MAX_FRAMES_PER_RUN {
                return Err(format!("{MAX_FRAMES_PER_RUN} frames in one run").into());
            }
            let text = self.client.next_frame().await?;
            let Some(index) = self.on_frame(&text)? else {
                continue;
            };
            self.finish_turn(index, &mut stats);
            if budget.take() {
                self.send_turn(index).await?;
            }
        }
        stats.elapsed = start.elapsed();
        Ok(stats)
    }

    /// Sends the next turn of session `index`.
    async fn send_turn(&mut self, index: usize) -> BenchResult<()> {
        let session = &mut self.sessions[index];
        session.sent += 1;
        let message = format!("turn {} of {}", session.sent, session.key);
        let params = json!({
            "sessionKey": session.key,
            "message": message,
            "idempotencyKey": format!("{}-{}", session.idempotency_prefix, session.sent),
        });
        session.pending = Some(Pending {
            sent_at: Instant::now(),
            message,
            run_id: None,
            accepted_at: None,
            first_delta: None,
            end: None,
        });
        self.in_flight += 1;
        let id = self.client.send_request("chat.send", Some(params)).await?;
        self.by_request.insert(id, index);
        Ok(())
    }

    /// Applies one frame; returns the session whose turn it completed, if any.
    fn on_frame(&mut self, text: &str) -> BenchResult<Option<usize>> {
        let head: Head = serde_json::from_str(text)?;
        let index = match (head.kind.as_str(), head.event.as_deref()) {
            ("res", _) => {
                let Some(index) = head.id.and_then(|id| self.by_request.remove(&id)) else {
                    return Ok(None);
                };
                if head.ok != Some(true) {
                    return Err(format!("chat.send failed: {text}").into());
                }
                let accepted = serde_json::from_str::<AcceptedFrame>(text)?.payload;
                if accepted.duplicate {
                    return Err(format!("chat.send answered with an earlier run: {text}").into());
                }
                let pending = self.sessions[index]
                    .pending
                    .as_mut()
                    .ok_or("a chat.send response for a session with no turn in flight")?;
                if pending
                    .end
                    .as_ref()
                    .is_some_and(|end| end.run_id != accepted.run_id)
                {
                    pending.end = None;
                }
                pending.run_id = Some(accepted.run_id);
                pending.accepted_at = Some(Instant::now());
                index
            }
            ("event", Some("chat")) => {
                let chat = serde_json::from_str::<ChatFrame>(text)?.payload;
                let Some(&index) = self.by_key.get(&chat.session_key) else {
                    return Ok(None);
                };
                let Some(pending) = self.sessions[index].pending.as_mut() else {
                    return Ok(None);
                };
                if pending
                    .run_id
                    .as_ref()
                    .is_some_and(|run| *run != chat.run_id)
                {
                    return Ok(None);
                }
                let reply = match chat.state.as_str() {
                    "delta" => {
                        pending.first_delta.get_or_insert_with(Instant::now);
                        return Ok(None);
                    }
                    "final" => Ok(chat.message.and_then(|m| m.text).unwrap_or_default()),
                    "error" | "aborted" => Err(format!(
                        "run {} ended {}: {}",
                        chat.run_id,
                        chat.state,
                        chat.error_message.unwrap_or_default()
                    )),
                    _ => return Ok(None),
                };
                pending.end = Some(End {
                    at: Instant::now(),
                    run_id: chat.run_id,
                    reply,
                });
                index
            }
            _ => return Ok(None),
        };
        let done = self.sessions[index]
            .pending
            .as_ref()
            .is_some_and(|p| p.run_id.is_some() && p.end.is_some());
        Ok(done.then_some(index))
    }

    /// Records the ended turn of session `index` in `stats`.
    fn finish_turn(&mut self, index: usize, stats: &mut TurnStats) {
        let Some(pending) = self.sessions[index].pending.take() else {
            return;
        };
        self.in_flight -= 1;
        let Some(end) = pending.end else {
            return;
        };
        match end.reply {
            Ok(text) => {
                let timing = Timing {
                    sent_at: pending.sent_at,
                    accepted: pending.accepted_at,
                    first_token: pending.first_delta,
                    done: end.at,
                };
                stats.succeed(&timing, &pending.message, &text);
            }
            Err(why) => stats.fail(why),
        }
    }
}

/// One turn on `session_key` through `chat.send` and `agent.wait` on a connection of its
/// own: `Ok` with the reply if the run ended `ok`, else an error with what the gateway said.
pub async fn smoke_turn(port: u16, token: &str, session_key: &str) -> BenchResult<String> {
    let mut client = Client::connect(port, token).await?;
    let message = "smoke test";
    let params = json!({
        "sessionKey": session_key,
        "message": message,
        "idempotencyKey": format!("turn-load-smoke-{}-{session_key}", std::process::id()),
    });
    let accepted = client.call("chat.send", Some(params)).await?;
    let run_id = accepted["runId"].clone();
    let wait = json!({"runId": run_id, "timeoutMs": 20_000});
    let summary = client.call("agent.wait", Some(wait)).await?;
    client.close().await;
    if summary["status"] != "ok" {
        return Err(format!("smoke turn on {session_key} did not end ok: {summary}").into());
    }
    let reply = summary["summary"].as_str().unwrap_or_default().to_owned();
    if !reply.ends_with(message) {
        return Err(format!("smoke turn on {session_key} replied {reply:?}").into());
    }
    Ok(reply)
}

/// A duration in whole microseconds, saturating.
pub fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}
