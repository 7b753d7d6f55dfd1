//! A fake Telegram Bot API: a real HTTP server on `127.0.0.1:0` (actix-web on its own
//! thread) answering `POST /bot<token>/<Method>` (method names case-insensitive):
//! `getUpdates` as a long poll honouring `offset`, `limit` and `timeout`; `sendMessage`,
//! `sendChatAction`, `getMe`; `sendPhoto` / `sendDocument` as real multipart uploads (the
//! file's name, type and bytes are recorded). Files users send ([`FakeTelegram::photo`],
//! `document`, `voice`) are hosted: `getFile` answers their `file_path` and
//! `GET /file/bot<token>/<file_path>` serves the bytes (both counted). Scriptable: 409 Conflict on the next polls, 429 with
//! `retry_after` on the next sends, 401 Unauthorized on every poll while refused, "can't parse entities" for HTML with an unclosed `<b>`,
//! long polls that never complete, and sends held unanswered (a request cut by a crash
//! before it was processed is never recorded). Never answers 5xx (teloxide sleeps 10 s on
//! one). Stops on drop.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

// Both fakes may be in one test binary: each has its own copy of the reader.
#[allow(clippy::duplicate_mod)]
#[path = "multipart.rs"]
mod multipart;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// The bot's user id.
pub const BOT_ID: i64 = 999_000;
/// The bot's user name (mention with `@troupe_test_bot`).
pub const BOT_USERNAME: &str = "troupe_test_bot";

/// A file the bot sent (`sendPhoto` / `sendDocument`).
#[derive(Debug, Clone)]
pub struct SentFile {
    pub chat_id: i64,
    /// `sendphoto` or `senddocument`.
    pub method: String,
    /// The form field naming the file (`photo`, `document`; its bytes may be in another
    /// part, named by `attach://<name>`).
    pub field: String,
    pub file_name: Option<String>,
    pub mime: Option<String>,
    pub bytes: Vec<u8>,
    pub message_id: i64,
}

/// A message the bot sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    pub parse_mode: Option<String>,
    pub message_id: i64,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    updates: Vec<Value>,
    next_update_id: i64,
    next_message_id: HashMap<i64, i64>,
    next_sent_id: i64,
    sent: Vec<Sent>,
    files: Vec<SentFile>,
    actions: Vec<(i64, String)>,
    conflicts: u32,
    refuse_polls: bool,
    rate_limits: u32,
    rate_limited_at: Vec<Instant>,
    parse_rejections: u32,
    stall_polls: bool,
    hold_sends: bool,
    hold_epoch: u64,
    held: HashMap<i64, usize>,
    polls_completed: u64,
    /// Files users sent: file id → (file path, bytes, whether its size is stated).
    hosted: HashMap<String, (String, Vec<u8>, bool)>,
    get_file_calls: u64,
    downloads: u64,
    stall_downloads: bool,
}

struct Shared {
    token: String,
    inner: Mutex<Inner>,
    changed: Notify,
}

/// The running fake.
pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn chat_json(chat_id: i64) -> Value {
    if chat_id < 0 {
        json!({ "id": chat_id, "type": "group", "title": format!("Group {chat_id}") })
    } else {
        json!({ "id": chat_id, "type": "private", "first_name": format!("User{chat_id}") })
    }
}

fn user_json(user_id: i64) -> Value {
    json!({ "id": user_id, "is_bot": false, "first_name": format!("User{user_id}") })
}

fn bot_json() -> Value {
    json!({ "id": BOT_ID, "is_bot": true, "first_name": "Troupe", "username": BOT_USERNAME })
}

impl FakeTelegram {
    /// Starts the server for bot token `token`.
    pub fn start(token: &str) -> FakeTelegram {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            inner: Mutex::new(Inner {
                next_update_id: 1,
                next_sent_id: 1,
                ..Inner::default()
            }),
            changed: Notify::new(),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let state = shared.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(state);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                        .route("/file/{bot}/{path:.*}", web::get().to(download))
                        .route("/{bot}/{method}", web::post().to(handle))
                })
                .workers(2)
                .disable_signals()
                .bind("127.0.0.1:0")
                .expect("bind the fake Telegram");
                let addr = server.addrs()[0];
                let server = server.run();
                let handle = server.handle();
                addr_tx.send(addr).expect("report the address");
                tokio::select! {
                    _ = server => {}
                    _ = stop_rx => handle.stop(false).await,
                }
            });
        });
        let addr = addr_rx.recv().expect("fake Telegram address");
        FakeTelegram {
            addr,
            shared,
            stop: Some(stop_tx),
        }
    }

    /// Files sent, in order.
    pub fn files(&self) -> Vec<SentFile> {
        self.lock().files.clone()
    }

    /// The `api_url` to configure.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a raw update object (its `update_id` is kept if present).
    pub fn push_update(&self, mut update: Value) {
        {
            let mut inner = self.lock();
            if update.get("update_id").is_none() {
                update["update_id"] = json!(inner.next_update_id);
            }
            let id = update["update_id"].as_i64().unwrap_or(0);
            inner.next_update_id = inner.next_update_id.max(id + 1);
            inner.updates.push(update);
        }
        self.shared.changed.notify_waiters();
    }

    /// A message object from `user` in `chat` with the chat's next message id.
    pub fn message(&self, chat_id: i64, user_id: i64, text: &str) -> Value {
        let mut inner = self.lock();
        let next = inner.next_message_id.entry(chat_id).or_insert(1);
        let message_id = *next;
        *next += 1;
        json!({
            "message_id": message_id,
            "date": now_secs(),
            "chat": chat_json(chat_id),
            "from": user_json(user_id),
            "text": text,
        })
    }

    /// Hosts `bytes` as a file users sent; returns its file id.
    fn host(&self, path: &str, bytes: &[u8], stated: bool) -> String {
        let mut inner = self.lock();
        let id = format!("file-{}", inner.hosted.len() + 1);
        let path = format!("{path}/file_{}", inner.hosted.len() + 1);
        inner
            .hosted
            .insert(id.clone(), (path, bytes.to_vec(), stated));
        id
    }

    /// A direct message from `user_id` carrying a file under `field` (`photo`, `document`,
    /// `voice`, `audio`), with a caption. `declared_size` is the `file_size` Telegram
    /// states (`None`: left out, in `getFile` too).
    pub fn dm_with_file(
        &self,
        user_id: i64,
        field: &str,
        mut media: Value,
        bytes: &[u8],
        declared_size: Option<u64>,
        caption: Option<&str>,
    ) {
        let id = self.host(field, bytes, declared_size.is_some());
        let mut meta = json!({ "file_id": id, "file_unique_id": format!("u-{id}") });
        if let Some(size) = declared_size {
            meta["file_size"] = json!(size);
        }
        for (k, v) in meta.as_object().unwrap() {
            media[k] = v.clone();
        }
        let mut message = self.message(user_id, user_id, "");
        message.as_object_mut().unwrap().remove("text");
        message[field] = if field == "photo" {
            // Telegram sends several sizes; the largest is the one to take.
            let mut small = media.clone();
            small["file_id"] = json!(format!("{id}-thumb"));
            small["width"] = json!(1);
            small["height"] = json!(1);
            json!([small, media])
        } else {
            media
        };
        if let Some(caption) = caption {
            message["caption"] = json!(caption);
        }
        self.push_update(json!({ "message": message }));
    }

    /// A photo (its bytes, at 640x480) from `user_id`, with a caption.
    pub fn photo(&self, user_id: i64, bytes: &[u8], caption: Option<&str>) {
        let media = json!({ "width": 640, "height": 480 });
        let size = Some(bytes.len() as u64);
        self.dm_with_file(user_id, "photo", media, bytes, size, caption);
    }

    /// A document from `user_id`.
    pub fn document(
        &self,
        user_id: i64,
        name: &str,
        mime: &str,
        bytes: &[u8],
        caption: Option<&str>,
    ) {
        let media = json!({ "file_name": name, "mime_type": mime });
        let size = Some(bytes.len() as u64);
        self.dm_with_file(user_id, "document", media, bytes, size, caption);
    }

    /// A voice note (OGG) from `user_id`.
    pub fn voice(&self, user_id: i64, bytes: &[u8]) {
        let media = json!({ "duration": 2, "mime_type": "audio/ogg" });
        let size = Some(bytes.len() as u64);
        self.dm_with_file(user_id, "voice", media, bytes, size, None);
    }

    /// `getFile` calls answered so far.
    pub fn get_file_calls(&self) -> u64 {
        self.lock().get_file_calls
    }

    /// File downloads stop answering (or answer again).
    pub fn stall_downloads(&self, stall: bool) {
        self.lock().stall_downloads = stall;
        self.shared.changed.notify_waiters();
    }

    /// File downloads (`GET /file/bot<token>/...`) asked for so far.
    pub fn downloads(&self) -> u64 {
        self.lock().downloads
    }

    /// A direct message from `user_id`.
    pub fn dm(&self, user_id: i64, text: &str) {
        let message = self.message(user_id, user_id, text);
        self.push_update(json!({ "message": message }));
    }

    /// A group message; `reply_to_bot` makes it a reply to one of the bot's messages.
    pub fn group(&self, chat_id: i64, user_id: i64, text: &str, reply_to_bot: bool) {
        let mut message = self.message(chat_id, user_id, text);
        if reply_to_bot {
            message["reply_to_message"] = json!({
                "message_id": 1,
                "date": now_secs(),
                "chat": chat_json(chat_id),
                "from": bot_json(),
                "text": "an earlier reply",
            });
        }
        self.push_update(json!({ "message": message }));
    }

    /// Everything sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// Texts sent to one chat, in order.
    pub fn texts_to(&self, chat_id: i64) -> Vec<String> {
        self.lock()
            .sent
            .iter()
            .filter(|s| s.chat_id == chat_id)
            .map(|s| s.text.clone())
            .collect()
    }

    /// Chat actions received `(chat, action)`.
    pub fn actions(&self) -> Vec<(i64, String)> {
        self.lock().actions.clone()
    }

    /// Answers the next `n` polls with 409 Conflict.
    pub fn conflict_next_polls(&self, n: u32) {
        self.lock().conflicts = n;
    }

    /// Answers every poll with 401 Unauthorized, as for a revoked token (or polls again).
    pub fn refuse_polls(&self, refuse: bool) {
        self.lock().refuse_polls = refuse;
        self.shared.changed.notify_waiters();
    }

    /// Answers the next `n` sends with 429, `retry_after` 1 s.
    pub fn rate_limit_next_sends(&self, n: u32) {
        self.lock().rate_limits = n;
    }

    /// When the 429s were given.
    pub fn rate_limited_at(&self) -> Vec<Instant> {
        self.lock().rate_limited_at.clone()
    }

    /// "can't parse entities" answers given.
    pub fn parse_rejections(&self) -> u32 {
        self.lock().parse_rejections
    }

    /// Long polls stop completing (or complete again).
    pub fn stall_polls(&self, stall: bool) {
        self.lock().stall_polls = stall;
        self.shared.changed.notify_waiters();
    }

    /// `sendMessage` requests wait unanswered and unrecorded (or go on).
    pub fn hold_sends(&self, hold: bool) {
        self.lock().hold_sends = hold;
        self.shared.changed.notify_waiters();
    }

    /// Ends the hold; the sends held so far are dropped unrecorded, as if their client
    /// died before Telegram processed them (they are answered with an error nobody reads).
    pub fn drop_held_sends(&self) {
        {
            let mut inner = self.lock();
            inner.hold_epoch += 1;
            inner.hold_sends = false;
        }
        self.shared.changed.notify_waiters();
    }

    /// Chats with a held send right now.
    pub fn held_chats(&self) -> Vec<i64> {
        self.lock()
            .held
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(c, _)| *c)
            .collect()
    }

    /// Long polls answered so far.
    pub fn polls_completed(&self) -> u64 {
        self.lock().polls_completed
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn ok(result: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true, "result": result }))
}

fn api_error(status: u16, description: &str, parameters: Option<Value>) -> HttpResponse {
    let mut body = json!({ "ok": false, "error_code": status, "description": description });
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    let code = actix_web::http::StatusCode::from_u16(status).expect("status");
    HttpResponse::build(code).json(body)
}

async fn handle(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let (bot, method) = path.into_inner();
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return api_error(401, "Unauthorized", None);
    }
    let boundary = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(multipart::boundary);
    if let Some(boundary) = boundary {
        let parts = multipart::parse(&body, &boundary);
        return send_file(&shared, &method.to_ascii_lowercase(), parts);
    }
    let params: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    match method.to_ascii_lowercase().as_str() {
        "getme" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Troupe", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "getupdates" => get_updates(&shared, &params).await,
        "getfile" => {
            let id = params["file_id"].as_str().unwrap_or("").to_string();
            let mut inner = lock(&shared);
            inner.get_file_calls += 1;
            match inner.hosted.get(&id) {
                Some((path, bytes, stated)) => {
                    let mut file = json!({
                        "file_id": id, "file_unique_id": format!("u-{id}"), "file_path": path,
                    });
                    if *stated {
                        file["file_size"] = json!(bytes.len());
                    }
                    ok(file)
                }
                None => api_error(400, "Bad Request: invalid file_id", None),
            }
        }
        "sendmessage" => send_message(&shared, &params).await,
        "sendchataction" => {
            let chat = params["chat_id"].as_i64().unwrap_or(0);
            let action = params["action"].as_str().unwrap_or("").to_string();
            lock(&shared).actions.push((chat, action));
            ok(json!(true))
        }
        other => api_error(404, &format!("Not Found: method {other} not faked"), None),
    }
}

/// `GET /file/bot<token>/<file_path>`: a hosted file's bytes (teloxide sends the path's
/// `/` encoded as `%2F`).
async fn download(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let raw = req.uri().path().to_string();
    let expected = format!("/file/bot{}/", shared.token);
    let Some(path) = raw.strip_prefix(&expected) else {
        return HttpResponse::Unauthorized().finish();
    };
    let path = path.replace("%2F", "/").replace("%2f", "/");
    lock(&shared).downloads += 1;
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if !lock(&shared).stall_downloads {
            break;
        }
        changed.await;
    }
    let inner = lock(&shared);
    let found = inner
        .hosted
        .values()
        .find(|(p, _, _)| *p == path)
        .map(|(_, b, _)| b.clone());
    match found {
        Some(bytes) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes),
        None => HttpResponse::NotFound().finish(),
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.inner.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn get_updates(shared: &Shared, params: &Value) -> HttpResponse {
    let offset = params["offset"].as_i64();
    let limit = params["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let timeout = Duration::from_secs(params["timeout"].as_u64().unwrap_or(0));
    let deadline = Instant::now() + timeout;
    {
        let mut inner = lock(shared);
        if inner.refuse_polls {
            return api_error(401, "Unauthorized", None);
        }
        if inner.conflicts > 0 {
            inner.conflicts -= 1;
            return api_error(
                409,
                "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                None,
            );
        }
        if let Some(offset) = offset {
            // Asking from `offset` confirms every update before it.
            inner
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
        }
    }
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut inner = lock(shared);
            if !inner.stall_polls {
                let batch: Vec<Value> = inner
                    .updates
                    .iter()
                    .filter(|u| offset.is_none_or(|o| u["update_id"].as_i64().unwrap_or(0) >= o))
                    .take(limit)
                    .cloned()
                    .collect();
                if !batch.is_empty() || Instant::now() >= deadline {
                    inner.polls_completed += 1;
                    return ok(Value::Array(batch));
                }
            }
        }
        let stalled = lock(shared).stall_polls;
        if stalled {
            changed.await;
        } else {
            let _ = tokio::time::timeout_at(deadline.into(), changed).await;
        }
    }
}

/// Counts a held send while it waits; uncounts it however the wait ends (answered, or the
/// client's connection dropped the handler).
struct HeldGuard<'a> {
    shared: &'a Shared,
    chat: i64,
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = lock(self.shared).held.get_mut(&self.chat) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn send_message(shared: &Shared, params: &Value) -> HttpResponse {
    let chat = params["chat_id"].as_i64().unwrap_or(0);
    let text = params["text"].as_str().unwrap_or("").to_string();
    let parse_mode = params["parse_mode"].as_str().map(str::to_string);
    let mut guard = None;
    let mut epoch = None;
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut inner = lock(shared);
            if epoch.is_some_and(|e| e != inner.hold_epoch) {
                return api_error(400, "Bad Request: dropped with its client", None);
            }
            if !inner.hold_sends {
                break;
            }
            if guard.is_none() {
                epoch = Some(inner.hold_epoch);
                *inner.held.entry(chat).or_default() += 1;
                guard = Some(HeldGuard { shared, chat });
            }
        }
        changed.await;
    }
    drop(guard);
    let mut inner = lock(shared);
    if inner.rate_limits > 0 {
        inner.rate_limits -= 1;
        inner.rate_limited_at.push(Instant::now());
        return api_error(
            429,
            "Too Many Requests: retry after 1",
            Some(json!({ "retry_after": 1 })),
        );
    }
    if parse_mode.as_deref() == Some("HTML") && text.contains("<b>") && !text.contains("</b>") {
        inner.parse_rejections += 1;
        return api_error(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
            None,
        );
    }
    let message_id = inner.next_sent_id;
    inner.next_sent_id += 1;
    inner.sent.push(Sent {
        chat_id: chat,
        text: text.clone(),
        parse_mode,
        message_id,
        at: Instant::now(),
    });
    ok(json!({
        "message_id": message_id,
        "date": now_secs(),
        "chat": chat_json(chat),
        "from": bot_json(),
        "text": text,
    }))
}

/// `sendPhoto` / `sendDocument` sent as `multipart/form-data`: records the file part.
fn send_file(shared: &Shared, method: &str, parts: Vec<multipart::FormPart>) -> HttpResponse {
    if !matches!(method, "sendphoto" | "senddocument") {
        return api_error(
            400,
            &format!("Bad Request: {method} with a multipart body not faked"),
            None,
        );
    }
    let chat = parts
        .iter()
        .find(|p| p.name == "chat_id")
        .and_then(|p| p.text().trim().parse::<i64>().ok())
        .unwrap_or(0);
    let field = if method == "sendphoto" {
        "photo"
    } else {
        "document"
    };
    let Some(named) = parts.iter().find(|p| p.name == field) else {
        return api_error(
            400,
            &format!("Bad Request: there is no {field} in the request"),
            None,
        );
    };
    // The field holds the file, or `attach://<name>` naming the part that does.
    let attached = named.text().strip_prefix("attach://").map(str::to_string);
    let file = match &attached {
        Some(name) => match parts.iter().find(|p| &p.name == name) {
            Some(p) => p,
            None => {
                return api_error(
                    400,
                    &format!("Bad Request: attach://{name} is not in the request"),
                    None,
                );
            }
        },
        None => named,
    };
    let mut inner = lock(shared);
    let message_id = inner.next_sent_id;
    inner.next_sent_id += 1;
    inner.files.push(SentFile {
        chat_id: chat,
        method: method.to_string(),
        field: field.to_string(),
        file_name: file.file_name.clone(),
        mime: file.content_type.clone(),
        bytes: file.data.clone(),
        message_id,
    });
    let media = if method == "sendphoto" {
        json!({ "photo": [{ "file_id": format!("photo-{message_id}"), "file_unique_id": format!("u{message_id}"), "width": 1, "height": 1 }] })
    } else {
        json!({ "document": { "file_id": format!("doc-{message_id}"), "file_unique_id": format!("u{message_id}"), "file_name": file.file_name } })
    };
    let mut message = json!({
        "message_id": message_id,
        "date": now_secs(),
        "chat": chat_json(chat),
        "from": bot_json(),
    });
    for (k, v) in media.as_object().unwrap() {
        message[k] = v.clone();
    }
    ok(message)
}
