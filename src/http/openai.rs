//! The OpenAI-compatible API: `POST /v1/chat/completions` (plain or SSE stream) and
//! `GET /v1/models`, so any OpenAI SDK or tool can talk to Troupe's agents.
//!
//! - `model` names an agent: its id, or `troupe/<agentId>`; `/v1/models` lists them.
//! - Troupe agents keep their own history, so a request becomes one turn: the text of
//!   its last `user` message, with its `image_url` parts (`data:` URLs; remote URLs are
//!   refused, not fetched) and `file` parts (`file_data`) as attachments, stored as uploads.
//!   The rest of `messages` and the sampling options (`temperature`, `max_tokens`, `tools`,
//!   `user`, ...) are accepted and ignored.
//! - Files the reply sends (`[IMAGE:]` / `[FILE:]` markers) are appended to the content as
//!   markdown links to `GET /api/files/...` (`![name](url)` for images), plain and streamed.
//! - The turn runs in the session named by the `x-troupe-session-key` header, or in a fresh
//!   `agent:<agentId>:openai:dm:<uuid>` session; either way the response carries the key
//!   back in `x-troupe-session-key` (and the run id in `x-troupe-run-id`), so a client can
//!   continue the conversation. `Idempotency-Key` dedupes retries as on every other edge.
//! - Streaming subscribes an [`EventSinkActor`] to the session before the turn is
//!   submitted, then turns the run's `chat` events into `chat.completion.chunk`s. A client
//!   that goes away only stops its sink: the run goes on and is stored.
//! - Every error has OpenAI's shape `{error: {message, type, param, code}}`, so SDKs raise
//!   their usual exceptions (and retry 429/503 after `Retry-After`).

use std::convert::Infallible;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::gateway::Gateway;
use crate::gateway::turns::{self, EdgeError};
use actix::{Actor, Addr, Recipient};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, web};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use troupe_actors::attachments::{AttachmentKind, AttachmentParam, AttachmentRef, download_url};
use troupe_actors::event_sink::{EventSinkActor, RunStream, TrackRun};
use troupe_actors::messages::{QueueMode, RunStatus, SessionEvent, TurnOptions};

use troupe_actors::session_queue::{
    QueueError, RunSummary, SessionQueueActor, SubmitTurn, TurnAccepted, WaitRun,
};

use super::authorize;

/// Largest request body: OpenAI clients resend the whole conversation every time, and
/// images come inline (one at the 5 MiB cap fits).
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How long a non-streaming request waits for its run.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// A comment line keeps idle streams (a turn waiting in its lane) alive through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Request header naming the session; the response echoes the session used.
const SESSION_HEADER: &str = "x-troupe-session-key";

/// Response header carrying the run id.
const RUN_HEADER: &str = "x-troupe-run-id";

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after_secs: None,
        }
    }

    /// A 400 `invalid_request_error` about `param`.
    fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            param,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or wrong API key: send the gateway token as Authorization: Bearer <token>",
        )
        .with_code("invalid_api_key")
    }

    fn unavailable(message: String) -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message)
        }
        .with_code("unavailable")
    }

    fn queue(err: QueueError) -> Self {
        match err {
            QueueError::LaneFull { retry_after_ms, .. }
            | QueueError::QueueFull { retry_after_ms, .. } => Self {
                retry_after_secs: Some(retry_after_ms.div_ceil(1000).max(1)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    err.to_string(),
                )
            }
            .with_code("rate_limit_exceeded"),
            QueueError::Store(_) | QueueError::Stopping => Self {
                retry_after_secs: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    err.to_string(),
                )
            }
            .with_code("unavailable"),
            QueueError::UnknownRun(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                err.to_string(),
            ),
            QueueError::Invalid(why) => Self::invalid(None, why),
        }
    }

    fn body(&self) -> Value {
        error_body(&self.message, self.kind, self.param, self.code)
    }
}

/// An edge error (Host, connection bound, authentication, payload) in OpenAI's shape.
pub(super) fn error_response(err: &super::ApiError) -> HttpResponse {
    let status = err.status_code();
    let (kind, code) = match status {
        StatusCode::UNAUTHORIZED => ("invalid_request_error", "invalid_api_key"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", "rate_limit_exceeded"),
        s if s.is_server_error() => ("api_error", "unavailable"),
        _ => ("invalid_request_error", err.code),
    };
    err.respond_with(&error_body(&err.to_string(), kind, None, Some(code)))
}

fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}

/// The OpenAI rendering of the edges' shared error.
impl From<EdgeError> for OpenAiError {
    fn from(err: EdgeError) -> Self {
        match err {
            EdgeError::Queue(err) => Self::queue(err),
            EdgeError::BadSessionKey(why) => {
                Self::invalid(None, format!("header {SESSION_HEADER}: {why}"))
            }
            EdgeError::Restarting(_) | EdgeError::Store(_) | EdgeError::Internal(_) => {
                Self::unavailable(err.to_string())
            }
        }
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after_secs {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        res.json(self.body())
    }
}

/// The part of a Chat Completions request Troupe uses; other fields are ignored.
#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

/// The turn: the last `user` message's text (a string, or its `text` parts joined) and its
/// `image_url` / `file` parts as attachments (other part types are ignored).
fn turn_input(messages: &[ChatMessage]) -> Result<(String, Vec<AttachmentParam>), OpenAiError> {
    let Some(last) = messages.iter().rev().find(|m| m.role == "user") else {
        return Err(OpenAiError::invalid(
            Some("messages"),
            "messages must contain a message with role \"user\"",
        ));
    };
    match &last.content {
        Some(Value::String(text)) => Ok((text.clone(), Vec::new())),
        Some(Value::Array(parts)) => {
            let mut texts: Vec<&str> = Vec::new();
            let mut files = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                match part["type"].as_str() {
                    Some("text") => texts.extend(part["text"].as_str()),
                    Some("image_url") => files.push(image_part(i, part)?),
                    Some("file") => files.push(file_part(i, part)?),
                    Some("input_audio") => {
                        return Err(part_error(
                            i,
                            "audio parts are not taken; send the audio as a `file` part (file_data) or upload it",
                        ));
                    }
                    _ => {}
                }
            }
            if texts.is_empty() && files.is_empty() {
                Err(OpenAiError::invalid(
                    Some("messages"),
                    "the last user message has no text, image_url or file part",
                ))
            } else {
                Ok((texts.concat(), files))
            }
        }
        _ => Err(OpenAiError::invalid(
            Some("messages"),
            "the last user message's content must be a string or an array of content parts",
        )),
    }
}

fn part_error(i: usize, why: &str) -> OpenAiError {
    OpenAiError::invalid(
        Some("messages"),
        format!("the last user message's content[{i}]: {why}"),
    )
}

/// An `image_url` part (`{"image_url": {"url": "data:image/png;base64,..."}}`, or the URL
/// as a string): an inline image; remote URLs are refused (the gateway fetches nothing).
fn image_part(i: usize, part: &Value) -> Result<AttachmentParam, OpenAiError> {
    let url = part["image_url"]["url"]
        .as_str()
        .or(part["image_url"].as_str())
        .ok_or_else(|| part_error(i, "an image_url part needs image_url.url"))?;
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(part_error(
            i,
            "remote image URLs are not fetched; send the image inline as a data: URL (data:image/png;base64,...) or upload it with POST /api/upload and use POST /api/sessions/{key}/messages",
        ));
    }
    if !lower.starts_with("data:") {
        return Err(part_error(
            i,
            "image_url.url must be a data: URL (data:image/png;base64,...)",
        ));
    }
    let ext = url
        .get(5..)
        .and_then(|rest| rest.split([';', ',']).next())
        .and_then(|mime| mime.strip_prefix("image/"))
        .map(|sub| if sub == "jpeg" { "jpg" } else { sub })
        .filter(|sub| sub.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|sub| format!(".{sub}"))
        .unwrap_or_default();
    Ok(AttachmentParam {
        kind: Some("image".into()),
        file_name: Some(format!("image-{}{ext}", i + 1)),
        content: Some(url.to_string()),
        ..AttachmentParam::default()
    })
}

/// A `file` part (`{"file": {"file_data": "<base64 or data: URL>", "filename": "x.pdf"}}`);
/// `file_id`s name OpenAI's file store, which Troupe does not have.
fn file_part(i: usize, part: &Value) -> Result<AttachmentParam, OpenAiError> {
    let file = &part["file"];
    let Some(data) = file["file_data"].as_str() else {
        let why = if file["file_id"].is_string() {
            "file_id is not known here (Troupe has no OpenAI file store); send file_data, or upload with POST /api/upload"
        } else {
            "a file part needs file.file_data"
        };
        return Err(part_error(i, why));
    };
    Ok(AttachmentParam {
        kind: Some("file".into()),
        file_name: Some(
            file["filename"]
                .as_str()
                .map_or_else(|| format!("file-{}", i + 1), str::to_string),
        ),
        content: Some(data.to_string()),
        ..AttachmentParam::default()
    })
}

/// The reply as the OpenAI API answers it: the text, then a markdown link to each file it
/// sends (`![name](url)` for an image), each on its own line.
fn with_links(text: &str, files: &[AttachmentRef], base: &str) -> String {
    let links = links(files, base);
    match (text.is_empty(), links.is_empty()) {
        (_, true) => text.to_string(),
        (true, false) => links,
        (false, false) => format!("{text}\n\n{links}"),
    }
}

/// The markdown links to a reply's files, one a line (nothing for none).
fn links(files: &[AttachmentRef], base: &str) -> String {
    files
        .iter()
        .filter_map(|f| {
            let url = download_url(&f.path)?;
            let name = f.file_name.replace(['[', ']'], "_");
            let bang = if f.kind == AttachmentKind::Image {
                "!"
            } else {
                ""
            };
            Some(format!("{bang}[{name}]({base}{url})"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `scheme://host` of this request, the base of the download links: the `Host` header (the
/// one the edge's allowlist checked; not `X-Forwarded-Host` or `Forwarded`, which it does
/// not), and `https` when the connection or a proxy's `X-Forwarded-Proto` / `Forwarded`
/// says so, else `http` (never another scheme a header names).
fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| info.host().to_string());
    let https = req.app_config().secure() || info.scheme().eq_ignore_ascii_case("https");
    format!("{}://{host}", if https { "https" } else { "http" })
}

/// The agent a `model` names (`<agentId>` or `troupe/<agentId>`).
fn agent_for_model(gateway: &Gateway, model: &str) -> Result<String, OpenAiError> {
    let id = model.strip_prefix("troupe/").unwrap_or(model);
    if gateway.settings.agents.list().iter().any(|a| a.id == id) {
        Ok(id.to_string())
    } else {
        Err(OpenAiError {
            param: Some("model"),
            ..OpenAiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "The model `{model}` does not exist: a model is an agent id (or troupe/<agentId>); GET /v1/models lists them"
                ),
            )
        }
        .with_code("model_not_found"))
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, OpenAiError> {
    req.headers()
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| OpenAiError::invalid(None, format!("header {name} is not ASCII")))
        })
        .transpose()
}

/// The session the turn runs in: the header's (validated, owned by `agent_id`) or a new one.
fn session_for(
    req: &HttpRequest,
    gateway: &Gateway,
    agent_id: &str,
) -> Result<String, OpenAiError> {
    let Some(key) = header(req, SESSION_HEADER)? else {
        return Ok(format!(
            "agent:{agent_id}:openai:dm:{}",
            uuid::Uuid::new_v4()
        ));
    };
    let resolved = turns::resolve_key(gateway, key)?;
    let owner = resolved.agent;
    if owner != agent_id {
        return Err(OpenAiError::invalid(
            Some("model"),
            format!("session {key:?} belongs to agent {owner:?}, not to model {agent_id:?}"),
        ));
    }
    Ok(resolved.key)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /v1/models`: one model per configured agent.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "OpenAI model list: one per agent", body = Object)))]
pub async fn models(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, OpenAiError> {
    authorize(&req, &gateway).map_err(|_| OpenAiError::unauthorized())?;
    let data: Vec<Value> = gateway
        .settings
        .agents
        .list()
        .iter()
        .map(|a| json!({ "id": a.id, "object": "model", "created": 0, "owned_by": "troupe" }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "object": "list", "data": data })))
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body(content = crate::http::openapi::ChatCompletionRequest, content_type = "application/json"), responses((status = 200, description = "A chat.completion, or an SSE stream of chunks with `stream: true`", body = Object), (status = 400, description = "OpenAI error body", body = Object), (status = 404, description = "Unknown model (agent)", body = Object)))]
pub async fn chat_completions(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    payload: web::Payload,
) -> Result<HttpResponse, OpenAiError> {
    authorize(&req, &gateway).map_err(|_| OpenAiError::unauthorized())?;
    let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(body)) => body,
        Ok(Err(e))
            if e.as_error::<actix_web::error::PayloadError>()
                .is_some_and(super::body_deadline::is_deadline) =>
        {
            return Err(OpenAiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                e.to_string(),
            ));
        }
        Ok(Err(e)) => {
            return Err(OpenAiError::invalid(
                None,
                format!("could not read the body: {e}"),
            ));
        }
        Err(_) => {
            return Err(OpenAiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
    };
    if !super::is_json(&req) {
        return Err(OpenAiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "the body must be JSON with Content-Type: application/json".to_string(),
        ));
    }
    let request: CompletionRequest = serde_json::from_slice(&body).map_err(|e| {
        OpenAiError::invalid(None, format!("invalid Chat Completions request: {e}"))
    })?;
    let agent_id = agent_for_model(&gateway, &request.model)?;
    let (text, files) = turn_input(&request.messages)?;
    let session_key = session_for(&req, &gateway, &agent_id)?;
    let idempotency_key = header(&req, "idempotency-key")?
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let attachments = super::sessions::prepare_attachments(&gateway, files)
        .await
        .map_err(|why| OpenAiError::invalid(Some("messages"), why))?;
    let queue = turns::queue(&gateway).await?;
    let turn = Turn {
        queue,
        model: request.model,
        session_key,
        agent_id,
        text,
        attachments,
        idempotency_key,
        base_url: base_url(&req),
    };
    if request.stream == Some(true) {
        turn.stream().await
    } else {
        turn.complete().await
    }
}

/// A validated request, ready to submit.
struct Turn {
    queue: Addr<SessionQueueActor>,
    model: String,
    session_key: String,
    agent_id: String,
    text: String,
    attachments: Vec<AttachmentRef>,
    idempotency_key: String,
    /// `scheme://host` for the links to the reply's files.
    base_url: String,
}

impl Turn {
    async fn submit(
        &self,
        subscriber: Option<(String, Recipient<SessionEvent>)>,
    ) -> Result<TurnAccepted, OpenAiError> {
        let submit = SubmitTurn {
            session_key: self.session_key.clone().into(),
            agent_id: self.agent_id.clone().into(),
            text: self.text.clone(),
            idempotency_key: Some(self.idempotency_key.clone()),
            mode: QueueMode::Followup,
            subscriber,
            options: TurnOptions {
                attachments: self.attachments.clone(),
                ..TurnOptions::default()
            },
        };
        Ok(turns::submit_to(&self.queue, submit).await?)
    }

    fn respond(&self, status: StatusCode, run_id: &str) -> HttpResponseBuilder {
        let mut res = HttpResponse::build(status);
        res.insert_header((SESSION_HEADER, self.session_key.as_str()))
            .insert_header((RUN_HEADER, run_id));
        res
    }

    /// Waits for the run and answers one `chat.completion`.
    async fn complete(self) -> Result<HttpResponse, OpenAiError> {
        let accepted = self.submit(None).await?;
        let wait = WaitRun {
            run_id: accepted.run_id.clone(),
            timeout: RUN_TIMEOUT,
        };
        let summary: RunSummary = self
            .queue
            .send(wait)
            .await
            .map_err(|_| {
                OpenAiError::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "the session queue restarted during the run; its outcome is in the session history",
                )
            })?
            .map_err(OpenAiError::queue)?;
        let run_failed =
            |message: String| OpenAiError::new(StatusCode::BAD_GATEWAY, "api_error", message);
        match summary.status {
            RunStatus::Ok | RunStatus::Coalesced => {}
            RunStatus::Timeout => {
                return Err(OpenAiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "api_error",
                    format!(
                        "run {} did not finish within {} s; it goes on, and its reply will be in session {}",
                        accepted.run_id,
                        RUN_TIMEOUT.as_secs(),
                        self.session_key
                    ),
                )
                .with_code("timeout"));
            }
            RunStatus::Aborted => {
                let why = summary.error.unwrap_or_else(|| "aborted".into());
                return Err(run_failed(format!("the run was aborted: {why}")));
            }
            other @ RunStatus::Error => {
                return Err(run_failed(
                    summary
                        .error
                        .unwrap_or_else(|| format!("the run ended with status {other}")),
                ));
            }
        }
        let body = json!({
            "id": format!("chatcmpl-{}", accepted.run_id),
            "object": "chat.completion",
            "created": unix_secs(),
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": with_links(&summary.summary, &summary.attachments, &self.base_url),
                },
                "finish_reason": "stop",
            }],
            "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 },
        });
        Ok(self.respond(StatusCode::OK, &accepted.run_id).json(body))
    }

    /// Subscribes a sink, submits, and answers a `text/event-stream` of chunks.
    async fn stream(self) -> Result<HttpResponse, OpenAiError> {
        let conn_id = format!("openai:{}", uuid::Uuid::new_v4());
        let (sink, events) = EventSinkActor::new(
            conn_id.clone(),
            self.queue.clone().recipient(),
            self.queue.clone().recipient(),
        );
        let sink = sink.start();
        // On an error the receiver is dropped here, which stops the sink.
        let accepted = self
            .submit(Some((conn_id, sink.clone().recipient())))
            .await?;
        sink.do_send(TrackRun {
            run_id: accepted.run_id.clone(),
        });
        let chunks = Chunks {
            events,
            id: format!("chatcmpl-{}", accepted.run_id),
            model: self.model.clone(),
            created: unix_secs(),
            text: String::new(),
            started: false,
            replay: accepted.duplicate,
            done: false,
            base_url: self.base_url.clone(),
        };
        let body = futures_util::stream::unfold(chunks, |mut chunks| async move {
            let next = chunks.next().await?;
            Some((Ok::<_, Infallible>(next), chunks))
        });
        Ok(self
            .respond(StatusCode::OK, &accepted.run_id)
            .content_type("text/event-stream")
            .insert_header(("Cache-Control", "no-cache"))
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(body))
    }
}

/// Turns a run's `chat` events into SSE `chat.completion.chunk` lines.
struct Chunks {
    events: mpsc::Receiver<RunStream>,
    id: String,
    model: String,
    created: u64,
    /// The content streamed so far.
    text: String,
    started: bool,
    /// A repeated idempotency key: the run may be half streamed already, so its reply is
    /// sent whole from the `final` event rather than from the deltas still to come.
    replay: bool,
    done: bool,
    /// `scheme://host` for the links to the reply's files.
    base_url: String,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        });
        format!("data: {chunk}\n\n")
    }

    fn error(&mut self, message: &str) -> Bytes {
        self.done = true;
        let error = error_body(message, "api_error", None, None);
        Bytes::from(format!("data: {error}\n\ndata: [DONE]\n\n"))
    }

    /// The next piece of the stream, or `None` after `[DONE]`.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(Bytes::from(
                self.chunk(json!({ "role": "assistant" }), None),
            ));
        }
        loop {
            let event = match tokio::time::timeout(KEEP_ALIVE, self.events.recv()).await {
                Err(_) => return Some(Bytes::from_static(b": keep-alive\n\n")),
                Ok(None) => {
                    return Some(self.error(
                        "the event stream broke (the client fell behind or the gateway is stopping); the run goes on and its reply will be in the session history",
                    ));
                }
                Ok(Some(event)) => event,
            };
            let end = match event {
                RunStream::Delta(_) if self.replay => continue,
                RunStream::Delta(delta) => {
                    if delta.is_empty() {
                        continue;
                    }
                    self.text.push_str(&delta);
                    return Some(Bytes::from(self.chunk(json!({ "content": &*delta }), None)));
                }
                RunStream::End(end) => end,
            };
            match end.status {
                RunStatus::Ok | RunStatus::Coalesced => {
                    self.done = true;
                    let mut out = String::new();
                    // A reply known only from the run's summary (a duplicate request, or
                    // deltas not seen) still reaches the client in full.
                    if let Some(rest) = end.summary.strip_prefix(self.text.as_str())
                        && !rest.is_empty()
                    {
                        out.push_str(&self.chunk(json!({ "content": rest }), None));
                    }
                    let links = links(&end.attachments, &self.base_url);
                    if !links.is_empty() {
                        let links = format!("\n\n{links}");
                        out.push_str(&self.chunk(json!({ "content": links }), None));
                    }
                    out.push_str(&self.chunk(json!({}), Some("stop")));
                    out.push_str("data: [DONE]\n\n");
                    return Some(Bytes::from(out));
                }
                RunStatus::Aborted => {
                    let why = end.error.as_deref().unwrap_or("aborted");
                    let message = format!("the run was aborted: {why}");
                    return Some(self.error(&message));
                }
                _ => {
                    let message = end.error.as_deref().unwrap_or("the run failed").to_string();
                    return Some(self.error(&message));
                }
            }
        }
    }
}
