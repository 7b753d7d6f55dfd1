//! The OpenAPI 3.1 document of the whole HTTP surface, generated with `utoipa` from the
//! `#[utoipa::path]` annotations on the handlers, served at `GET /api/openapi.json` (no
//! credential needed: it describes the API, it holds no data). Every route but the webhooks
//! takes `Authorization: Bearer <token>` (the `bearer` scheme); `/hooks/*` take the hooks
//! token (`hooks` scheme).
//!
//! Adding a route to the document: annotate its handler with `#[utoipa::path(...)]` and add
//! the handler to the `paths(...)` list of [`ApiDoc`] (one line). A test fails for any route
//! registered in `src/http.rs` that the document lacks.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Troupe gateway",
        description = "REST surface of the Troupe gateway (the WebSocket protocol is in docs/protocol.md).",
        license(name = "MIT", identifier = "MIT")
    ),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        super::status,
        super::config_get,
        super::config_edit::put,
        super::config_edit::patch,
        super::crash,
        super::restart,
        super::restart::restart,
        super::sessions::list,
        super::sessions::messages,
        super::sessions::post,
        super::session_admin::reset,
        super::session_admin::delete,
        super::sessions::usage,
        super::usage_api::daily,
        super::usage_api::pricing,
        super::agents_api::list,
        super::agents_api::info,
        super::logs::recent,
        super::models::list,
        super::models::add,
        super::models::update,
        super::models::remove,
        super::models::test,
        super::mcps::list,
        super::mcps::add,
        super::mcps::replace,
        super::mcps::remove,
        super::mcps::enable,
        super::mcps::disable,
        super::channels::status,
        super::channels::list,
        super::channels::approve,
        super::cron::list,
        super::cron::add,
        super::cron::status,
        super::cron::get,
        super::cron::update,
        super::cron::remove,
        super::cron::run,
        super::cron::runs,
        super::upload::upload,
        super::files::download,
        super::vault::list,
        super::vault::get,
        super::vault::put,
        super::vault::delete,
        super::vault::graph,
        super::vault::search,
        super::hooks::agent,
        super::hooks::wake,
        super::hooks::mapped,
        super::openai::chat_completions,
        super::openai::models,
        document,
        super::ws,
        super::root,
        super::ui::asset,
    ),
    components(schemas(ErrorBody, ErrorDetail, AttachmentInfo)),
    modifiers(&SecuritySchemes),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Adds the `bearer` (gateway token) and `hooks` (webhook token) schemes.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what.to_string()))
                    .build(),
            )
        };
        components.add_security_scheme(
            "bearer",
            bearer("The gateway token (or password): `Authorization: Bearer <token>`"),
        );
        components.add_security_scheme(
            "hooks",
            bearer("The webhook token (`hooks.token`): `Authorization: Bearer <token>`"),
        );
    }
}

/// The document as JSON text.
pub fn json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the document: {e}\"}}"))
}

/// `GET /api/openapi.json`: this document (no credential needed).
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
}

/// Every error body: `{error: {code, message}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable cause (`UNAUTHORIZED`, `INVALID_REQUEST`, `NOT_FOUND`, ...).
    pub code: String,
    /// What was wrong, for people.
    pub message: String,
}

/// `{sessionKey, ok, existed}` of a session reset or delete.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionResetBody {
    /// The full session key.
    pub session_key: String,
    /// Always true.
    pub ok: bool,
    /// Whether the session existed.
    pub existed: bool,
}

// The bodies below describe request types that handlers parse from raw bytes with
// `json_body` (so a wrong Content-Type gets a clear 415): the same fields, for the document.

/// `POST /api/sessions/{key}/messages` body.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostMessageBody {
    /// The user's message.
    pub message: String,
    /// Makes a retried post a no-op (or the `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
    /// `followup` (default), `collect`, `steer` or `interrupt`.
    pub queue_mode: Option<String>,
    /// Files sent with the message (as on WS `chat.send`): at most 16, 8 of them images.
    pub attachments: Option<Vec<AttachmentBody>>,
}

/// One attachment of a message: an upload by `path`, or inline base64 `content`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentBody {
    /// `image` or `file` (an `image/*` type makes an image too).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The MIME type (else the `data:` URL's, else sniffed).
    pub mime_type: Option<String>,
    /// The file's name.
    pub file_name: Option<String>,
    /// Base64, or a `data:<mime>;base64,...` URL; at most 5 MiB decoded.
    pub content: Option<String>,
    /// A file from `POST /api/upload`: the `path` it answered (`uploads/<uuid>/<name>`).
    pub path: Option<String>,
}

/// A file attached to a message or sent by a reply, as transcripts and events show it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentInfo {
    /// `image` or `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The MIME type.
    pub mime_type: String,
    /// The file's name.
    pub file_name: String,
    /// Relative to the state dir (`uploads/...`, `agents/<id>/...`).
    pub path: String,
    /// Where `GET /api/files/{path}` serves it (`/api/files/...`, on the gateway's port).
    pub url: Option<String>,
    /// Bytes.
    pub size: u64,
}

/// `POST /api/pairing/approve` body.
#[derive(Serialize, ToSchema)]
pub struct ApproveBody {
    /// The pairing code the platform user got.
    pub code: String,
}

/// `POST /api/supervisor/restart` body.
#[derive(Serialize, ToSchema)]
pub struct ChildBody {
    /// A node of the tree (`agent:main`, `store`, ...).
    pub id: String,
}

/// `POST /api/supervisor/crash` body.
#[derive(Serialize, ToSchema)]
pub struct CrashBody {
    /// A node of the tree.
    pub id: String,
    /// `panic` (default), `hang`, ...
    pub mode: Option<String>,
}

/// `PUT /api/vault/notes/{path}` body: the whole text, or front matter and body.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultNoteBody {
    /// The whole note (front matter included).
    pub content: Option<String>,
    /// Front matter, as JSON.
    #[schema(value_type = Option<Object>)]
    pub front_matter: Option<serde_json::Value>,
    /// The markdown after the front matter.
    pub body: Option<String>,
}

/// `POST /hooks/agent` body.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentHookBody {
    /// The message for the agent.
    pub message: String,
    /// Agent (default: the hooks' default).
    pub agent_id: Option<String>,
    /// Session (default: a hook session).
    pub session_key: Option<String>,
    /// Answer with the run's end instead of at once.
    pub wait: Option<bool>,
}

/// `POST /hooks/wake` body.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WakeHookBody {
    /// Agent whose heartbeat runs.
    pub agent_id: Option<String>,
}

/// `POST /api/upload` form.
#[derive(Serialize, ToSchema)]
pub struct UploadForm {
    /// The file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// The part of a Chat Completions request Troupe reads (other fields are ignored).
#[derive(Serialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// The agent id.
    pub model: String,
    /// The conversation; the last `user` message is the turn.
    pub messages: Vec<ChatCompletionMessage>,
    /// Stream chunks as server-sent events.
    pub stream: Option<bool>,
}

/// One Chat Completions message.
#[derive(Serialize, ToSchema)]
pub struct ChatCompletionMessage {
    /// `system`, `user`, `assistant`, `tool`.
    pub role: String,
    /// Text, or an array of content parts: `{"type": "text", "text"}`, `{"type":
    /// "image_url", "image_url": {"url": "data:image/png;base64,..."}}` (remote URLs are
    /// refused), `{"type": "file", "file": {"file_data", "filename"}}`.
    #[schema(value_type = Option<Object>)]
    pub content: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::Value;

    /// (method, path) of every route `src/http.rs` registers, paths in OpenAPI form.
    fn registered_routes() -> Vec<(String, String)> {
        let source = include_str!("../http.rs");
        let start = source.find("pub fn routes(").expect("routes()");
        let body = &source[start..];
        let end = body.find("\n}\n").expect("end of routes()");
        let mut out = Vec::new();
        for chunk in body[..end].split("endpoint(\"").skip(1) {
            let path = chunk.split('"').next().expect("a path");
            let path = path.replace(":.*}", "}");
            for method in chunk.split(".route(web::").skip(1) {
                let method = method.split('(').next().expect("a method");
                out.push((method.to_string(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn every_registered_route_is_in_the_document() {
        let doc: Value = serde_json::from_str(&json()).expect("JSON");
        let routes = registered_routes();
        assert!(routes.len() > 40, "parsed the route table: {routes:?}");
        let missing: Vec<_> = routes
            .iter()
            .filter(|(m, p)| doc["paths"][p.as_str()][m.as_str()].is_null())
            .collect();
        assert!(
            missing.is_empty(),
            "routes missing from the OpenAPI document: {missing:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_with_a_schema_for_every_body() {
        let doc: Value = serde_json::from_str(&json()).expect("JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        let refs = doc["components"]["schemas"].as_object().expect("schemas");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let mut bodies: Vec<&Value> = Vec::new();
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    bodies.extend(content.values());
                }
                for response in op["responses"].as_object().expect("responses").values() {
                    if let Some(content) = response["content"].as_object() {
                        bodies.extend(content.values());
                    }
                }
                for body in bodies {
                    let schema = &body["schema"];
                    assert!(schema.is_object(), "{method} {path}: a body without schema");
                    if let Some(r) = schema["$ref"].as_str() {
                        let name = r.trim_start_matches("#/components/schemas/");
                        assert!(
                            refs.contains_key(name),
                            "{method} {path}: {r} is not defined"
                        );
                    }
                }
            }
        }
    }
}
