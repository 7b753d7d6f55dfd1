//! A fake Discord: a real HTTP + WebSocket server on `127.0.0.1:0` (actix-web on its own
//! thread). REST under `/api/v10`: `GET /gateway` and `/gateway/bot` (pointing at the
//! `ws://127.0.0.1` gateway below), `GET /users/@me`, `POST /channels/{id}/messages` (JSON, or multipart with `payload_json` and `files[n]`, whose name, type and bytes are recorded),
//! `GET /channels/{id}/messages?after=&limit=`, `POST /channels/{id}/typing`. Gateway at
//! `/ws`: HELLO (heartbeat every second), IDENTIFY → READY, heartbeat ACKs (can be turned
//! off), MESSAGE_CREATE pushed to every live session, RESUME answered with an invalid
//! session, and sockets that can be dropped. Scriptable 429 with `Retry-After`. Every
//! message posted by users or the bot is kept per channel (so REST backfill sees it).
//! Files users attach ([`FakeDiscord::dm_with_file`]) are served at their attachment `url`
//! (`GET /attachments/{id}/{name}`, downloads counted). Stops on drop.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

// Both fakes may be in one test binary: each has its own copy of the reader.
#[allow(clippy::duplicate_mod)]
#[path = "multipart.rs"]
mod multipart;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// The bot's user id.
pub const BOT_ID: u64 = 424_242_424_242;
/// The bot's user name.
pub const BOT_NAME: &str = "troupe_discord_bot";
/// The guild every guild channel belongs to.
pub const GUILD_ID: u64 = 777_000_777;

/// A file the bot attached to a message (a `files[n]` part of a multipart post).
#[derive(Debug, Clone)]
pub struct SentFile {
    pub field: String,
    pub file_name: String,
    pub mime: Option<String>,
    pub bytes: Vec<u8>,
}

/// A message the bot posted.
#[derive(Debug, Clone)]
pub struct Sent {
    pub channel_id: u64,
    pub content: String,
    pub id: u64,
    pub at: Instant,
    /// Its attachments (a multipart post), in order.
    pub files: Vec<SentFile>,
}

/// A post's JSON (the body, or a multipart body's `payload_json`) and its `files[n]` parts.
fn read_post(req: &HttpRequest, body: &[u8]) -> (Value, Vec<SentFile>) {
    let boundary = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(multipart::boundary);
    let Some(boundary) = boundary else {
        return (
            serde_json::from_slice(body).unwrap_or(json!({})),
            Vec::new(),
        );
    };
    let parts = multipart::parse(body, &boundary);
    let payload = parts
        .iter()
        .find(|p| p.name == "payload_json")
        .and_then(|p| serde_json::from_slice(&p.data).ok())
        .unwrap_or(json!({}));
    let files = parts
        .into_iter()
        .filter(|p| p.name.starts_with("files["))
        .map(|p| SentFile {
            field: p.name,
            file_name: p.file_name.unwrap_or_default(),
            mime: p.content_type,
            bytes: p.data,
        })
        .collect();
    (payload, files)
}

enum Push {
    Dispatch(&'static str, Value),
    Close,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// channel id → guild id (None for a DM).
    channels: HashMap<u64, Option<u64>>,
    /// Every message, by channel, oldest first.
    messages: HashMap<u64, Vec<Value>>,
    sent: Vec<Sent>,
    typing: Vec<u64>,
    rate_limits: u32,
    rate_limited_at: Vec<Instant>,
    ack_heartbeats: bool,
    sessions: HashMap<u64, mpsc::UnboundedSender<Push>>,
    next_session: u64,
    identifies: u64,
    acks: u64,
    /// (channel, nonce) → the message first posted with it.
    nonces: HashMap<(u64, String), Value>,
    /// Posts answered with an earlier message because of their nonce.
    nonce_replays: u64,
    /// Record posts but never answer them.
    hold_posts: bool,
    /// Files users attached: attachment id → bytes.
    hosted: HashMap<u64, Vec<u8>>,
    downloads: u64,
    /// Downloads that carried an `Authorization` header (the bot token must not leave the API).
    downloads_with_authorization: u64,
    /// Attachments are served in two halves this far apart (a slow link).
    attachment_pause: Option<std::time::Duration>,
}

struct Shared {
    token: String,
    addr: Mutex<Option<SocketAddr>>,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn ws_url(&self) -> String {
        let addr = self.addr.lock().unwrap().expect("address");
        format!("ws://{addr}/ws")
    }
}

/// The running fake.
pub struct FakeDiscord {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

fn user_json(id: u64, bot: bool) -> Value {
    let name = if id == BOT_ID {
        BOT_NAME.to_string()
    } else {
        format!("user{id}")
    };
    json!({
        "id": id.to_string(), "username": name, "discriminator": "0",
        "global_name": null, "avatar": null, "bot": bot,
    })
}

fn message_json(
    id: u64,
    channel: u64,
    author: Value,
    content: &str,
    mentions: Vec<Value>,
    reply_to: Option<Value>,
) -> Value {
    let mut m = json!({
        "id": id.to_string(),
        "channel_id": channel.to_string(),
        "author": author,
        "content": content,
        "timestamp": "2026-11-27T12:00:00.000000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": mentions,
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0,
        "flags": 0,
    });
    if let Some(r) = reply_to {
        m["message_reference"] =
            json!({ "message_id": r["id"], "channel_id": channel.to_string() });
        m["referenced_message"] = r;
        m["type"] = json!(19);
    }
    m
}

impl FakeDiscord {
    /// Starts the server for bot token `token`.
    pub fn start(token: &str) -> FakeDiscord {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            addr: Mutex::new(None),
            inner: Mutex::new(Inner {
                next_id: 1_100_000_000_000_000_000,
                ack_heartbeats: true,
                ..Inner::default()
            }),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let state = shared.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(state.clone());
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/ws", web::get().to(gateway))
                        .route("/api/v10/gateway", web::get().to(gateway_url))
                        .route("/api/v10/gateway/bot", web::get().to(gateway_url))
                        .route("/api/v10/users/@me", web::get().to(me))
                        .route(
                            "/api/v10/channels/{id}/messages",
                            web::post().to(post_message),
                        )
                        .route(
                            "/api/v10/channels/{id}/messages",
                            web::get().to(get_messages),
                        )
                        .route("/api/v10/channels/{id}/typing", web::post().to(typing))
                        .route("/attachments/{id}/{name}", web::get().to(attachment))
                })
                .workers(2)
                .disable_signals()
                .bind("127.0.0.1:0")
                .expect("bind the fake Discord");
                let addr = server.addrs()[0];
                *state.addr.lock().unwrap() = Some(addr);
                let server = server.run();
                let handle = server.handle();
                addr_tx.send(addr).expect("report the address");
                tokio::select! {
                    _ = server => {}
                    _ = stop_rx => handle.stop(false).await,
                }
            });
        });
        let addr = addr_rx.recv().expect("fake Discord address");
        FakeDiscord {
            addr,
            shared,
            stop: Some(stop_tx),
        }
    }

    /// The `api_url` to configure.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    fn post(
        &self,
        channel: u64,
        guild: Option<u64>,
        user: u64,
        content: &str,
        mentions: Vec<Value>,
        reply_to_bot: bool,
    ) -> u64 {
        self.post_with(
            channel,
            guild,
            user,
            content,
            mentions,
            reply_to_bot,
            vec![],
        )
    }

    /// A user writes a direct message with a file attached (`name`, `mime`, `bytes`,
    /// served at the attachment's `url`); `declared_size` is the `size` Discord states.
    pub fn dm_with_file(
        &self,
        user: u64,
        content: &str,
        name: &str,
        mime: &str,
        bytes: &[u8],
        declared_size: u64,
    ) -> u64 {
        let id = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            inner.hosted.insert(id, bytes.to_vec());
            id
        };
        let url = format!("http://{}/attachments/{id}/{name}", self.addr);
        let attachment = json!({
            "id": id.to_string(), "filename": name, "size": declared_size,
            "url": url, "proxy_url": url, "content_type": mime,
        });
        self.post_with(
            user * 10,
            None,
            user,
            content,
            vec![],
            false,
            vec![attachment],
        )
    }

    /// Serves each attachment in two halves `pause` apart (`None`: at once), like a slow
    /// link.
    pub fn slow_attachments(&self, pause: Option<std::time::Duration>) {
        self.lock().attachment_pause = pause;
    }

    /// Attachment downloads served so far.
    pub fn downloads(&self) -> u64 {
        self.lock().downloads
    }

    /// Attachment downloads that carried an `Authorization` header.
    pub fn downloads_with_authorization(&self) -> u64 {
        self.lock().downloads_with_authorization
    }

    #[allow(clippy::too_many_arguments)]
    fn post_with(
        &self,
        channel: u64,
        guild: Option<u64>,
        user: u64,
        content: &str,
        mentions: Vec<Value>,
        reply_to_bot: bool,
        attachments: Vec<Value>,
    ) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.channels.insert(channel, guild);
        let reply_to = if reply_to_bot {
            inner.messages.get(&channel).and_then(|ms| {
                ms.iter()
                    .rev()
                    .find(|m| {
                        m["author"]["id"]
                            .as_str()
                            .and_then(|i| i.parse::<u64>().ok())
                            == Some(BOT_ID)
                    })
                    .cloned()
            })
        } else {
            None
        };
        let mut message = message_json(
            id,
            channel,
            user_json(user, false),
            content,
            mentions,
            reply_to,
        );
        message["attachments"] = json!(attachments);
        inner
            .messages
            .entry(channel)
            .or_default()
            .push(message.clone());
        if let Some(g) = guild {
            message["guild_id"] = json!(g.to_string());
        }
        for tx in inner.sessions.values() {
            let _ = tx.send(Push::Dispatch("MESSAGE_CREATE", message.clone()));
        }
        id
    }

    /// A user writes a direct message (the DM channel id is `user * 10`).
    pub fn dm(&self, user: u64, content: &str) -> u64 {
        self.post(user * 10, None, user, content, vec![], false)
    }

    /// The DM channel of a user.
    pub fn dm_channel(user: u64) -> u64 {
        user * 10
    }

    /// A user writes in a guild channel; `mention` adds a `<@bot>` mention, `reply_to_bot`
    /// makes it a reply to the bot's last message there.
    pub fn guild(
        &self,
        channel: u64,
        user: u64,
        content: &str,
        mention: bool,
        reply_to_bot: bool,
    ) -> u64 {
        let (content, mentions) = if mention {
            (
                format!("<@{BOT_ID}> {content}"),
                vec![user_json(BOT_ID, true)],
            )
        } else {
            (content.to_string(), vec![])
        };
        self.post(
            channel,
            Some(GUILD_ID),
            user,
            &content,
            mentions,
            reply_to_bot,
        )
    }

    /// While on, a post is recorded and then never answered (as if the answer were lost,
    /// or the bot died before reading it).
    pub fn hold_post_answers(&self, hold: bool) {
        self.lock().hold_posts = hold;
    }

    /// Posts answered with an earlier message because their nonce was used before.
    pub fn nonce_replays(&self) -> u64 {
        self.lock().nonce_replays
    }

    /// Everything the bot posted.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// The texts the bot posted to a channel, in order.
    pub fn texts_to(&self, channel: u64) -> Vec<String> {
        self.lock()
            .sent
            .iter()
            .filter(|s| s.channel_id == channel)
            .map(|s| s.content.clone())
            .collect()
    }

    /// Channels that got a typing indicator.
    pub fn typing(&self) -> Vec<u64> {
        self.lock().typing.clone()
    }

    /// Answers the next `n` message posts with 429 and `Retry-After: 1`.
    pub fn rate_limit_next_posts(&self, n: u32) {
        self.lock().rate_limits = n;
    }

    /// When 429s were answered.
    pub fn rate_limited_at(&self) -> Vec<Instant> {
        self.lock().rate_limited_at.clone()
    }

    /// Whether heartbeats are acknowledged.
    pub fn ack_heartbeats(&self, ack: bool) {
        self.lock().ack_heartbeats = ack;
    }

    /// How many heartbeats were acknowledged.
    pub fn acks(&self) -> u64 {
        self.lock().acks
    }

    /// How many IDENTIFYs the gateway answered.
    pub fn identifies(&self) -> u64 {
        self.lock().identifies
    }

    /// Live gateway sessions.
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Drops every gateway socket.
    pub fn drop_sockets(&self) {
        let mut inner = self.lock();
        for (_, tx) in inner.sessions.drain() {
            let _ = tx.send(Push::Close);
        }
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.drop_sockets();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn authorized(req: &HttpRequest, shared: &Shared) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bot {}", shared.token))
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "message": "401: Unauthorized", "code": 0 }))
}

async fn gateway_url(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if !authorized(&req, &shared) && req.path().ends_with("/bot") {
        return unauthorized();
    }
    HttpResponse::Ok().json(json!({
        "url": shared.ws_url(),
        "shards": 1,
        "session_start_limit": { "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1 },
    }))
}

async fn me(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if !authorized(&req, &shared) {
        return unauthorized();
    }
    HttpResponse::Ok().json(user_json(BOT_ID, true))
}

fn channel_of(path: &web::Path<String>) -> Option<u64> {
    path.parse().ok()
}

async fn post_message(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if !authorized(&req, &shared) {
        return unauthorized();
    }
    let (body, files) = read_post(&req, &body);
    let Some(channel) = channel_of(&path) else {
        return HttpResponse::NotFound()
            .json(json!({ "message": "Unknown Channel", "code": 10003 }));
    };
    // The answer now (Ok), or the new message and whether to hold its answer (Err).
    let recorded: Result<HttpResponse, (Value, bool)> = 'recorded: {
        let mut inner = shared.lock();
        if inner.rate_limits > 0 {
            inner.rate_limits -= 1;
            inner.rate_limited_at.push(Instant::now());
            break 'recorded Ok(HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", "1"))
                .json(json!({ "message": "You are being rate limited.", "retry_after": 1.0, "global": false })));
        }
        // Discord's `enforce_nonce`: a second post with a nonce already used in the channel
        // returns the first message and creates nothing.
        let nonce = body["nonce"].as_str().map(str::to_string);
        if body["enforce_nonce"] == true
            && let Some(nonce) = &nonce
            && let Some(first) = inner.nonces.get(&(channel, nonce.clone())).cloned()
        {
            inner.nonce_replays += 1;
            break 'recorded Ok(HttpResponse::Ok().json(first));
        }
        let content = body["content"].as_str().unwrap_or_default().to_string();
        inner.next_id += 1;
        let id = inner.next_id;
        let message = message_json(id, channel, user_json(BOT_ID, true), &content, vec![], None);
        if let Some(nonce) = nonce {
            inner.nonces.insert((channel, nonce), message.clone());
        }
        inner
            .messages
            .entry(channel)
            .or_default()
            .push(message.clone());
        inner.sent.push(Sent {
            channel_id: channel,
            content,
            id,
            at: Instant::now(),
            files,
        });
        Err((message, inner.hold_posts))
    };
    match recorded {
        Ok(answer) => answer,
        Err((message, hold)) => {
            if hold {
                std::future::pending::<()>().await;
            }
            HttpResponse::Ok().json(message)
        }
    }
}

async fn get_messages(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if !authorized(&req, &shared) {
        return unauthorized();
    }
    let Some(channel) = channel_of(&path) else {
        return HttpResponse::NotFound()
            .json(json!({ "message": "Unknown Channel", "code": 10003 }));
    };
    let after: u64 = query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(50)
        .min(100);
    let inner = shared.lock();
    let mut page: Vec<Value> = inner
        .messages
        .get(&channel)
        .map(|ms| {
            ms.iter()
                .filter(|m| {
                    m["id"]
                        .as_str()
                        .and_then(|i| i.parse::<u64>().ok())
                        .unwrap_or(0)
                        > after
                })
                .take(limit)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    // Discord answers newest first.
    page.reverse();
    HttpResponse::Ok().json(page)
}

/// `GET /attachments/{id}/{name}`: a file a user attached.
async fn attachment(
    req: HttpRequest,
    path: web::Path<(u64, String)>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let (id, _) = path.into_inner();
    let mut inner = shared.lock();
    if req.headers().contains_key("authorization") {
        inner.downloads_with_authorization += 1;
    }
    match inner.hosted.get(&id).cloned() {
        Some(bytes) if inner.attachment_pause.is_some() => {
            inner.downloads += 1;
            let pause = inner.attachment_pause.unwrap_or_default();
            let (first, rest) = bytes.split_at(bytes.len() / 2);
            let halves = [
                (
                    web::Bytes::copy_from_slice(first),
                    std::time::Duration::ZERO,
                ),
                (web::Bytes::copy_from_slice(rest), pause),
            ];
            let body = futures_util::stream::iter(halves).then(|(half, wait)| async move {
                tokio::time::sleep(wait).await;
                Ok::<_, actix_web::Error>(half)
            });
            HttpResponse::Ok()
                .content_type("application/octet-stream")
                .streaming(body)
        }
        Some(bytes) => {
            inner.downloads += 1;
            HttpResponse::Ok()
                .content_type("application/octet-stream")
                .body(bytes)
        }
        None => HttpResponse::NotFound().finish(),
    }
}

async fn typing(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if !authorized(&req, &shared) {
        return unauthorized();
    }
    if let Some(channel) = channel_of(&path) {
        shared.lock().typing.push(channel);
    }
    HttpResponse::NoContent().finish()
}

async fn gateway(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Shared>,
) -> actix_web::Result<HttpResponse> {
    let (response, mut session, mut stream) = actix_ws::handle(&req, body)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Push>();
    let id = {
        let mut inner = shared.lock();
        inner.next_session += 1;
        let id = inner.next_session;
        inner.sessions.insert(id, tx);
        id
    };
    let shared = shared.into_inner();
    actix_web::rt::spawn(async move {
        let mut seq: u64 = 0;
        let hello = json!({ "op": 10, "d": { "heartbeat_interval": 1000 }, "s": null, "t": null });
        if session.text(hello.to_string()).await.is_err() {
            return;
        }
        let mut identified = false;
        loop {
            tokio::select! {
                push = rx.recv() => match push {
                    Some(Push::Dispatch(t, d)) if identified => {
                        seq += 1;
                        let frame = json!({ "op": 0, "t": t, "s": seq, "d": d });
                        if session.text(frame.to_string()).await.is_err() { break; }
                    }
                    Some(Push::Dispatch(..)) => {}
                    Some(Push::Close) | None => break,
                },
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    let actix_ws::Message::Text(text) = frame else {
                        if matches!(frame, actix_ws::Message::Close(_)) { break; }
                        continue;
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    match v["op"].as_u64() {
                        Some(1) => {
                            let ack = {
                                let mut inner = shared.lock();
                                inner.acks += u64::from(inner.ack_heartbeats);
                                inner.ack_heartbeats
                            };
                            if ack && session.text(json!({ "op": 11, "d": null, "s": null, "t": null }).to_string()).await.is_err() {
                                break;
                            }
                        }
                        Some(2) => {
                            let token_ok = v["d"]["token"].as_str().is_some_and(|t| t.trim_start_matches("Bot ") == shared.token);
                            if !token_ok {
                                let _ = session.close(Some(actix_ws::CloseReason { code: actix_ws::CloseCode::Other(4004), description: Some("Authentication failed.".into()) })).await;
                                return;
                            }
                            let n = {
                                let mut inner = shared.lock();
                                inner.identifies += 1;
                                inner.identifies
                            };
                            identified = true;
                            seq += 1;
                            let ready = json!({ "op": 0, "t": "READY", "s": seq, "d": {
                                "v": 10,
                                "user": user_json(BOT_ID, true),
                                "guilds": [],
                                "session_id": format!("session-{n}"),
                                "resume_gateway_url": shared.ws_url(),
                                "shard": [0, 1],
                                "application": { "id": BOT_ID.to_string(), "flags": 0 },
                            }});
                            if session.text(ready.to_string()).await.is_err() { break; }
                        }
                        Some(6) => {
                            let _ = session.text(json!({ "op": 9, "d": false, "s": null, "t": null }).to_string()).await;
                        }
                        _ => {}
                    }
                }
            }
        }
        shared.lock().sessions.remove(&id);
        let _ = session.close(None).await;
    });
    Ok(response)
}
