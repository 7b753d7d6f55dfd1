//! A fake LLM provider: a real HTTP/1.1 server on `127.0.0.1:0` that speaks the OpenAI
//! Chat Completions (`POST /v1/chat/completions`) and Anthropic Messages
//! (`POST /v1/messages`) wire formats, streamed (SSE) or not, and OpenAI's audio
//! transcriptions (`POST /v1/audio/transcriptions`, a real multipart body: the `file` and
//! `model` parts are recorded; answers `{"text"}` or a scripted error status). Tests queue [`Script`]s —
//! replies, tool calls, error statuses, stalls, silence, malformed streams — consumed one
//! per request in order; every request is recorded. The server runs on its own thread and
//! runtime, so it works from `#[test]` and `#[tokio::test]` alike, and stops on drop.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

// Other fakes in the same test binary have their own copy of the reader.
#[allow(clippy::duplicate_mod)]
#[path = "multipart.rs"]
mod multipart;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Prompt tokens reported in every usage block.
pub const PROMPT_TOKENS: u64 = 10;

/// Longest request line or header line accepted.
const MAX_LINE: u64 = 16 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// The Content-Length announced by a non-stream [`Script::Stall`] whose body never comes.
const STALLED_BODY_LEN: usize = 4096;
/// Not JSON: the data of a [`Script::Malformed`] reply.
const MALFORMED_JSON: &str = r#"{"id":"fake-malformed","choices":[{"delta":{"content":"trunc"#;

/// One scripted behaviour, consumed by one request to either API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Assistant text, split into `chunks` (at least one) stream deltas of near-equal
    /// length; a non-stream request gets one JSON body. Usage: `completion_tokens = chunks`.
    Reply { text: String, chunks: usize },
    /// The model calls tools: `(id, name, arguments JSON text)`. Streamed arguments arrive
    /// in `chunks` (at least one) pieces per call. Usage: `completion_tokens` = all pieces.
    ToolCalls {
        calls: Vec<(String, String, String)>,
        chunks: usize,
    },
    /// An error status. `body` is sent as is when it is JSON, otherwise it becomes the
    /// message of the API's error envelope. `retry_after_secs` sets `retry-after`.
    Status {
        code: u16,
        retry_after_secs: Option<u64>,
        body: String,
    },
    /// Stream: send headers and `after_chunks` text deltas (chunk `i` is `"chunk{i} "`),
    /// then nothing more while the socket stays open, until the client hangs up or the
    /// server drops. Non-stream: headers announcing a body that never arrives.
    Stall { after_chunks: usize },
    /// Read the request and never send headers (a first-byte timeout).
    NoResponse,
    /// 200 whose SSE data line (stream) or body (non-stream) is not valid JSON.
    Malformed,
}

impl Script {
    /// A [`Script::Reply`] from a `&str`.
    pub fn reply(text: &str, chunks: usize) -> Script {
        Script::Reply {
            text: text.into(),
            chunks,
        }
    }

    /// A [`Script::ToolCalls`] with a single call.
    pub fn tool_call(id: &str, name: &str, arguments: &str, chunks: usize) -> Script {
        Script::ToolCalls {
            calls: vec![(id.into(), name.into(), arguments.into())],
            chunks,
        }
    }

    /// A [`Script::Status`] without `retry-after`.
    pub fn status(code: u16, body: &str) -> Script {
        Script::Status {
            code,
            retry_after_secs: None,
            body: body.into(),
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as JSON; `Null` when empty, a `String` when it is not JSON.
    pub body: Value,
    /// The body's bytes as received.
    pub raw: Vec<u8>,
}

/// One scripted answer of `POST /v1/audio/transcriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transcription {
    /// `{"text": ...}`.
    Text(String),
    /// An error status with this message.
    Status(u16, String),
}

/// A transcription request as received (its multipart parts).
#[derive(Debug, Clone)]
pub struct Transcribed {
    /// The `model` field.
    pub model: String,
    /// The `file` part's file name.
    pub file_name: Option<String>,
    /// The `file` part's content type.
    pub mime: Option<String>,
    /// The `file` part's bytes.
    pub bytes: Vec<u8>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

impl Recorded {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake LLM server; stops (closing every connection) on drop.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeLlm {
    /// Binds `127.0.0.1:0` and serves on a dedicated thread with its own runtime. Does not
    /// block, so it can be called from a plain `#[test]` or inside any tokio runtime.
    pub fn start() -> FakeLlm {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake llm");
        listener
            .set_nonblocking(true)
            .expect("nonblocking fake llm listener");
        let addr = listener.local_addr().expect("fake llm addr");
        let shared = Arc::new(Shared::default());
        let (shutdown, stop) = oneshot::channel();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-llm-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake llm runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("fake llm listener");
                    serve(listener, server_shared, stop).await;
                });
                // Dropping the runtime here cancels every connection task, closing sockets.
            })
            .expect("spawn fake llm thread");
        FakeLlm {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a behaviour for a later request to either API.
    pub fn push(&self, script: Script) {
        lock(&self.shared.scripts).push_back(script);
    }

    /// Scripts queued and not yet consumed.
    pub fn pending(&self) -> usize {
        lock(&self.shared.scripts).len()
    }

    /// Every request received so far, in arrival order (unknown paths included).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// The chat requests only (OpenAI and Anthropic), in arrival order.
    pub fn chat_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/chat/completions") || r.path.ends_with("/messages"))
            .collect()
    }

    /// Queues the answer of a later transcription request (default: `{"text":
    /// "transcript of <file name> (<n> bytes)"}`).
    pub fn push_transcription(&self, answer: Transcription) {
        lock(&self.shared.transcriptions).push_back(answer);
    }

    /// Transcription requests received, in order.
    pub fn transcribed(&self) -> Vec<Transcribed> {
        lock(&self.shared.transcribed).clone()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Default)]
struct Shared {
    scripts: Mutex<VecDeque<Script>>,
    requests: Mutex<Vec<Recorded>>,
    transcriptions: Mutex<VecDeque<Transcription>>,
    transcribed: Mutex<Vec<Transcribed>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(handle(stream, shared.clone()));
                }
            }
        }
    }
}

type Conn = BufReader<TcpStream>;

/// Which wire format a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

/// What one response needs to know about its request.
struct Ctx {
    api: Api,
    stream: bool,
    include_usage: bool,
    model: String,
    id: String,
    created: u64,
}

/// A successful model turn, already split into stream pieces.
enum Turn {
    Text(Vec<String>),
    Tools(Vec<ToolCall>),
}

struct ToolCall {
    id: String,
    name: String,
    arguments: String,
    pieces: Vec<String>,
}

impl Turn {
    fn completion_tokens(&self) -> u64 {
        let n = match self {
            Turn::Text(pieces) => pieces.len(),
            Turn::Tools(calls) => calls.iter().map(|c| c.pieces.len()).sum(),
        };
        n as u64
    }
}

/// One server-sent event; `event: None` writes only the `data:` line.
struct Sse {
    event: Option<&'static str>,
    data: String,
}

async fn handle(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    let request = match read_request(&mut conn).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            let body = json!({ "error": { "message": format!("fake_llm: bad request: {e}") } });
            let _ = write_json(&mut conn, 400, &[], &body.to_string()).await;
            return;
        }
    };
    lock(&shared.requests).push(request.clone());
    let route = request.path.split('?').next().unwrap_or_default();
    let api = match (request.method.as_str(), route) {
        ("POST", "/v1/chat/completions") => Some(Api::OpenAi),
        ("POST", "/v1/messages") => Some(Api::Anthropic),
        _ => None,
    };
    if (request.method.as_str(), route) == ("POST", "/v1/audio/transcriptions") {
        let _ = transcribe(&mut conn, &shared, &request).await;
        let _ = conn.get_mut().shutdown().await;
        return;
    }
    let _ = match api {
        Some(api) => {
            let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let ctx = Ctx::new(api, &request.body, n);
            let queued = lock(&shared.scripts).pop_front();
            let script = queued.unwrap_or_else(|| {
                Script::reply(&format!("fake: {}", last_user_text(&request.body)), 3)
            });
            respond(&mut conn, &ctx, script).await
        }
        None => {
            let message = format!("fake_llm: no route for {} {}", request.method, request.path);
            let body = json!({ "error": { "message": message, "type": "not_found_error" } });
            write_json(&mut conn, 404, &[], &body.to_string()).await
        }
    };
    let _ = conn.get_mut().shutdown().await;
}

/// `POST /v1/audio/transcriptions`: records the multipart `file` and `model`, answers the
/// next scripted [`Transcription`] (default: a text naming the file).
async fn transcribe(conn: &mut Conn, shared: &Shared, request: &Recorded) -> io::Result<()> {
    let parts = request
        .header("content-type")
        .and_then(multipart::boundary)
        .map(|b| multipart::parse(&request.raw, &b))
        .unwrap_or_default();
    let Some(file) = parts.iter().find(|p| p.name == "file") else {
        let body = json!({ "error": { "message": "fake_llm: no file part" } });
        return write_json(conn, 400, &[], &body.to_string()).await;
    };
    let model = parts
        .iter()
        .find(|p| p.name == "model")
        .map(|p| p.text())
        .unwrap_or_default();
    lock(&shared.transcribed).push(Transcribed {
        model,
        file_name: file.file_name.clone(),
        mime: file.content_type.clone(),
        bytes: file.data.clone(),
        authorization: request.header("authorization").map(str::to_string),
    });
    let answer = lock(&shared.transcriptions).pop_front().unwrap_or_else(|| {
        Transcription::Text(format!(
            "transcript of {} ({} bytes)",
            file.file_name.as_deref().unwrap_or("?"),
            file.data.len()
        ))
    });
    match answer {
        Transcription::Text(text) => {
            write_json(conn, 200, &[], &json!({ "text": text }).to_string()).await
        }
        Transcription::Status(code, message) => {
            let body = json!({ "error": { "message": message, "type": "server_error" } });
            write_json(conn, code, &[], &body.to_string()).await
        }
    }
}

impl Ctx {
    fn new(api: Api, body: &Value, n: u64) -> Ctx {
        let id = match api {
            Api::OpenAi => format!("chatcmpl-fake{n}"),
            Api::Anthropic => format!("msg_fake{n}"),
        };
        Ctx {
            api,
            stream: body["stream"] == true,
            include_usage: body["stream_options"]["include_usage"] == true,
            model: body["model"].as_str().unwrap_or("fake-model").to_string(),
            id,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The text of the last `user` message (string content or its `text` parts), both APIs.
fn last_user_text(body: &Value) -> String {
    let Some(messages) = body["messages"].as_array() else {
        return String::new();
    };
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

/// Splits `text` into `n.max(1)` pieces of near-equal length in chars.
fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.max(1);
    (0..n)
        .map(|i| {
            chars[i * chars.len() / n..(i + 1) * chars.len() / n]
                .iter()
                .collect()
        })
        .collect()
}

async fn respond(conn: &mut Conn, ctx: &Ctx, script: Script) -> io::Result<()> {
    match script {
        Script::Reply { text, chunks } => {
            play_turn(conn, ctx, &Turn::Text(split_even(&text, chunks))).await
        }
        Script::ToolCalls { calls, chunks } => {
            let calls = calls
                .into_iter()
                .map(|(id, name, arguments)| ToolCall {
                    pieces: split_even(&arguments, chunks),
                    id,
                    name,
                    arguments,
                })
                .collect();
            play_turn(conn, ctx, &Turn::Tools(calls)).await
        }
        Script::Status {
            code,
            retry_after_secs,
            body,
        } => {
            let body = match serde_json::from_str::<Value>(&body) {
                Ok(_) => body,
                Err(_) => error_body(ctx.api, code, &body).to_string(),
            };
            let extra: Vec<(&str, String)> = retry_after_secs
                .map(|s| ("retry-after", s.to_string()))
                .into_iter()
                .collect();
            write_json(conn, code, &extra, &body).await
        }
        Script::Stall { after_chunks } => {
            if ctx.stream {
                let pieces: Vec<String> = (0..after_chunks).map(|i| format!("chunk{i} ")).collect();
                let events = match ctx.api {
                    Api::OpenAi => openai::text_prefix(ctx, &pieces),
                    Api::Anthropic => anthropic::text_prefix(ctx, &pieces),
                };
                start_sse(conn).await?;
                for event in &events {
                    write_event(conn, event).await?;
                }
            } else {
                let len = STALLED_BODY_LEN.to_string();
                let headers = [
                    ("content-type", "application/json".to_string()),
                    ("content-length", len),
                ];
                write_head(conn, 200, &headers).await?;
            }
            wait_for_hangup(conn).await;
            Ok(())
        }
        Script::NoResponse => {
            wait_for_hangup(conn).await;
            Ok(())
        }
        Script::Malformed => {
            if ctx.stream {
                let event = match ctx.api {
                    Api::OpenAi => None,
                    Api::Anthropic => Some("message_start"),
                };
                start_sse(conn).await?;
                write_event(
                    conn,
                    &Sse {
                        event,
                        data: MALFORMED_JSON.into(),
                    },
                )
                .await?;
                end_sse(conn).await
            } else {
                write_json(conn, 200, &[], MALFORMED_JSON).await
            }
        }
    }
}

async fn play_turn(conn: &mut Conn, ctx: &Ctx, turn: &Turn) -> io::Result<()> {
    if ctx.stream {
        let events = match ctx.api {
            Api::OpenAi => openai::stream(ctx, turn),
            Api::Anthropic => anthropic::stream(ctx, turn),
        };
        start_sse(conn).await?;
        for event in &events {
            write_event(conn, event).await?;
        }
        end_sse(conn).await
    } else {
        let body = match ctx.api {
            Api::OpenAi => openai::body(ctx, turn),
            Api::Anthropic => anthropic::body(ctx, turn),
        };
        write_json(conn, 200, &[], &body.to_string()).await
    }
}

fn error_body(api: Api, code: u16, message: &str) -> Value {
    match api {
        Api::OpenAi => {
            let (kind, err_code) = match code {
                401 => ("invalid_request_error", Some("invalid_api_key")),
                429 => ("requests", Some("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", None),
                _ => ("server_error", None),
            };
            json!({ "error": { "message": message, "type": kind, "param": null, "code": err_code } })
        }
        Api::Anthropic => {
            let kind = match code {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({ "type": "error", "error": { "type": kind, "message": message } })
        }
    }
}

/// OpenAI Chat Completions rendering.
mod openai {
    use super::{Ctx, PROMPT_TOKENS, Sse, Turn};
    use serde_json::{Value, json};

    fn chunk(ctx: &Ctx, delta: Value, finish_reason: Option<&str>) -> Sse {
        let mut c = json!({
            "id": ctx.id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        if ctx.include_usage {
            c["usage"] = Value::Null;
        }
        data(c)
    }

    fn data(v: Value) -> Sse {
        Sse {
            event: None,
            data: v.to_string(),
        }
    }

    fn usage(completion: u64) -> Value {
        json!({
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion,
            "total_tokens": PROMPT_TOKENS + completion,
        })
    }

    /// The role chunk and one content chunk per piece (what a stall sends).
    pub(super) fn text_prefix(ctx: &Ctx, pieces: &[String]) -> Vec<Sse> {
        let mut events = vec![chunk(
            ctx,
            json!({ "role": "assistant", "content": "" }),
            None,
        )];
        events.extend(
            pieces
                .iter()
                .map(|p| chunk(ctx, json!({ "content": p }), None)),
        );
        events
    }

    pub(super) fn stream(ctx: &Ctx, turn: &Turn) -> Vec<Sse> {
        let (mut events, finish) = match turn {
            Turn::Text(pieces) => (text_prefix(ctx, pieces), "stop"),
            Turn::Tools(calls) => {
                let mut events = vec![chunk(
                    ctx,
                    json!({ "role": "assistant", "content": null }),
                    None,
                )];
                for (i, call) in calls.iter().enumerate() {
                    let open = json!({ "tool_calls": [{
                        "index": i, "id": call.id, "type": "function",
                        "function": { "name": call.name, "arguments": "" },
                    }] });
                    events.push(chunk(ctx, open, None));
                    for piece in &call.pieces {
                        let delta = json!({ "tool_calls": [{ "index": i, "function": { "arguments": piece } }] });
                        events.push(chunk(ctx, delta, None));
                    }
                }
                (events, "tool_calls")
            }
        };
        events.push(chunk(ctx, json!({}), Some(finish)));
        if ctx.include_usage {
            events.push(data(json!({
                "id": ctx.id,
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": ctx.model,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage(turn.completion_tokens()),
            })));
        }
        events.push(Sse {
            event: None,
            data: "[DONE]".into(),
        });
        events
    }

    pub(super) fn body(ctx: &Ctx, turn: &Turn) -> Value {
        let (message, finish) = match turn {
            Turn::Text(pieces) => (
                json!({ "role": "assistant", "content": pieces.concat(), "refusal": null }),
                "stop",
            ),
            Turn::Tools(calls) => {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id, "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments },
                        })
                    })
                    .collect();
                (
                    json!({ "role": "assistant", "content": null, "refusal": null, "tool_calls": calls }),
                    "tool_calls",
                )
            }
        };
        json!({
            "id": ctx.id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
            "usage": usage(turn.completion_tokens()),
        })
    }
}

/// Anthropic Messages rendering.
mod anthropic {
    use super::{Ctx, PROMPT_TOKENS, Sse, Turn};
    use serde_json::{Value, json};

    fn event(name: &'static str, v: Value) -> Sse {
        Sse {
            event: Some(name),
            data: v.to_string(),
        }
    }

    fn message_start(ctx: &Ctx) -> Sse {
        event(
            "message_start",
            json!({ "type": "message_start", "message": {
            "id": ctx.id, "type": "message", "role": "assistant", "model": ctx.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": PROMPT_TOKENS, "output_tokens": 0 },
        } }),
        )
    }

    fn block_start(index: usize, block: Value) -> Sse {
        event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": block }),
        )
    }

    fn block_delta(index: usize, delta: Value) -> Sse {
        event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": index, "delta": delta }),
        )
    }

    fn block_stop(index: usize) -> Sse {
        event(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        )
    }

    fn ping() -> Sse {
        event("ping", json!({ "type": "ping" }))
    }

    /// `message_start`, the text block's start, a `ping`, one `text_delta` per piece.
    pub(super) fn text_prefix(ctx: &Ctx, pieces: &[String]) -> Vec<Sse> {
        let mut events = vec![
            message_start(ctx),
            block_start(0, json!({ "type": "text", "text": "" })),
            ping(),
        ];
        events.extend(
            pieces
                .iter()
                .map(|p| block_delta(0, json!({ "type": "text_delta", "text": p }))),
        );
        events
    }

    pub(super) fn stream(ctx: &Ctx, turn: &Turn) -> Vec<Sse> {
        let (mut events, stop_reason) = match turn {
            Turn::Text(pieces) => {
                let mut events = text_prefix(ctx, pieces);
                events.push(block_stop(0));
                (events, "end_turn")
            }
            Turn::Tools(calls) => {
                let mut events = vec![message_start(ctx)];
                for (i, call) in calls.iter().enumerate() {
                    let open = json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": {} });
                    events.push(block_start(i, open));
                    if i == 0 {
                        events.push(ping());
                    }
                    for piece in &call.pieces {
                        events.push(block_delta(
                            i,
                            json!({ "type": "input_json_delta", "partial_json": piece }),
                        ));
                    }
                    events.push(block_stop(i));
                }
                (events, "tool_use")
            }
        };
        events.push(event(
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": { "stop_reason": stop_reason, "stop_sequence": null },
                "usage": { "output_tokens": turn.completion_tokens() },
            }),
        ));
        events.push(event("message_stop", json!({ "type": "message_stop" })));
        events
    }

    pub(super) fn body(ctx: &Ctx, turn: &Turn) -> Value {
        let (content, stop_reason) = match turn {
            Turn::Text(pieces) => (
                vec![json!({ "type": "text", "text": pieces.concat() })],
                "end_turn",
            ),
            Turn::Tools(calls) => (
                calls
                    .iter()
                    .map(|c| {
                        let input = serde_json::from_str::<Value>(&c.arguments)
                            .unwrap_or_else(|_| Value::String(c.arguments.clone()));
                        json!({ "type": "tool_use", "id": c.id, "name": c.name, "input": input })
                    })
                    .collect(),
                "tool_use",
            ),
        };
        json!({
            "id": ctx.id,
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": { "input_tokens": PROMPT_TOKENS, "output_tokens": turn.completion_tokens() },
        })
    }
}

// ---- HTTP/1.1 plumbing: one request per connection, `connection: close`. ----

/// Reads one request; `Ok(None)` when the client closed before sending anything.
async fn read_request(conn: &mut Conn) -> io::Result<Option<Recorded>> {
    let Some(line) = read_line(conn).await? else {
        return Ok(None);
    };
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("version {version:?}")));
    }
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    loop {
        let line = read_line(conn)
            .await?
            .ok_or_else(|| invalid("eof in headers"))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(conn).await?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("content-length {len:?}")))?;
        if len > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await?;
        body
    } else {
        Vec::new()
    };
    let raw = body;
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()))
    };
    Ok(Some(Recorded {
        method,
        path,
        headers,
        body,
        raw,
    }))
}

/// A `chunked` request body, trailers discarded.
async fn read_chunked(conn: &mut Conn) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(conn)
            .await?
            .ok_or_else(|| invalid("eof in chunk size"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| invalid(format!("chunk size {line:?}")))?;
        if size == 0 {
            while !read_line(conn)
                .await?
                .ok_or_else(|| invalid("eof in trailers"))?
                .is_empty()
            {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        let mut crlf = [0; 2];
        conn.read_exact(&mut crlf).await?;
        if crlf != *b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

/// One CRLF- (or LF-) terminated line without its terminator; `None` at a clean EOF.
async fn read_line(conn: &mut Conn) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *conn)
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.pop() != Some(b'\n') {
        return Err(invalid("line too long or cut short"));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| invalid("line is not UTF-8"))
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Waits until the client hangs up (or the server drops and cancels this task).
async fn wait_for_hangup(conn: &mut Conn) {
    let mut buf = [0; 1024];
    while let Ok(n) = conn.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}

async fn write_head(conn: &mut Conn, code: u16, headers: &[(&str, String)]) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    let w = conn.get_mut();
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

async fn write_json(
    conn: &mut Conn,
    code: u16,
    extra: &[(&str, String)],
    body: &str,
) -> io::Result<()> {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("content-length", body.len().to_string()),
    ];
    headers.extend(extra.iter().cloned());
    write_head(conn, code, &headers).await?;
    let w = conn.get_mut();
    w.write_all(body.as_bytes()).await?;
    w.flush().await
}

/// A 200 `text/event-stream` head; events follow as HTTP chunks.
async fn start_sse(conn: &mut Conn) -> io::Result<()> {
    let headers = [
        ("content-type", "text/event-stream".to_string()),
        ("cache-control", "no-cache".to_string()),
        ("transfer-encoding", "chunked".to_string()),
    ];
    write_head(conn, 200, &headers).await
}

/// Writes one SSE event as one HTTP chunk and flushes it.
async fn write_event(conn: &mut Conn, event: &Sse) -> io::Result<()> {
    let mut text = String::new();
    if let Some(name) = event.event {
        text.push_str(&format!("event: {name}\n"));
    }
    text.push_str(&format!("data: {}\n\n", event.data));
    let chunk = format!("{:x}\r\n{text}\r\n", text.len());
    let w = conn.get_mut();
    w.write_all(chunk.as_bytes()).await?;
    w.flush().await
}

/// The terminating zero-length chunk.
async fn end_sse(conn: &mut Conn) -> io::Result<()> {
    let w = conn.get_mut();
    w.write_all(b"0\r\n\r\n").await?;
    w.flush().await
}
