//! REST for an agent's vault (`agents/<id>/memory/`, docs/vault.md): `GET /api/vault/notes`,
//! `GET|PUT|DELETE /api/vault/notes/{path}`, `GET /api/vault/graph`,
//! `GET /api/vault/search?q=`. `?agent=<id>` picks the agent (default: the first
//! configured). File and index work runs on the blocking pool, through the same
//! [`Vault`] code as the memory tools.

use std::path::PathBuf;

use crate::gateway::Gateway;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use troupe_actors::vault::{MAX_NOTE_BYTES, Vault, VaultError, WriteMode, note};

use super::{ApiError, authorize, json_body};

/// Largest `PUT` body: a note at the cap, JSON-escaped, fits.
const MAX_PUT_BYTES: usize = 4 * MAX_NOTE_BYTES as usize;
/// Most search results returned.
const MAX_SEARCH_LIMIT: u32 = 100;

/// Each agent's `memory/` folder, in configuration order (the first is the default).
#[derive(Debug, Clone, Default)]
pub struct VaultDirs {
    agents: Vec<(String, PathBuf)>,
}

impl VaultDirs {
    /// From (agent id, memory folder) pairs; agents without a folder have no vault.
    pub fn new(agents: impl IntoIterator<Item = (String, Option<PathBuf>)>) -> Self {
        Self {
            agents: agents
                .into_iter()
                .filter_map(|(id, dir)| dir.map(|d| (id, d)))
                .collect(),
        }
    }

    fn vault(&self, agent: Option<&str>) -> Result<Vault, ApiError> {
        let found = match agent {
            Some(id) => self.agents.iter().find(|(a, _)| a == id),
            None => self.agents.first(),
        };
        found
            .map(|(_, dir)| Vault::for_memory_dir(dir))
            .ok_or_else(|| match agent {
                Some(id) => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("no agent {id:?} with a vault is configured"),
                ),
                None => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "no agent with a vault is configured",
                ),
            })
    }
}

/// `?agent=`.
#[derive(Deserialize)]
pub struct AgentQuery {
    agent: Option<String>,
}

/// `?q=&limit=&agent=`.
#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<u32>,
    agent: Option<String>,
}

/// The body of `PUT /api/vault/notes/{path}`: the whole text, or front matter and body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PutNote {
    content: Option<String>,
    front_matter: Option<Value>,
    body: Option<String>,
}

impl From<VaultError> for ApiError {
    fn from(err: VaultError) -> Self {
        let (status, code) = match &err {
            VaultError::InvalidPath(_) => (StatusCode::BAD_REQUEST, "INVALID_PATH"),
            VaultError::InvalidNote(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            VaultError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            VaultError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            VaultError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            VaultError::Io(_) | VaultError::Index(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
            }
        };
        if status.is_server_error() {
            tracing::error!(error = %err, "vault operation failed");
        }
        ApiError::new(status, code, err.to_string())
    }
}

/// Runs a vault operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(op)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("the vault operation could not run: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// `GET /api/vault/notes`.
#[utoipa::path(get, path = "/api/vault/notes", tag = "vault", params(("agent" = Option<String>, Query, description = "Agent (default: the first)")), responses((status = 200, description = "`{notes}`", body = Object), (status = 404, description = "No such agent", body = crate::http::openapi::ErrorBody)))]
pub async fn list(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    dirs: web::Data<VaultDirs>,
    q: web::Query<AgentQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let vault = dirs.vault(q.agent.as_deref())?;
    let notes = blocking(move || vault.list()).await?;
    Ok(HttpResponse::Ok().json(json!({ "count": notes.len(), "notes": notes })))
}

/// `GET /api/vault/notes/{path}`.
#[utoipa::path(get, path = "/api/vault/notes/{path}", tag = "vault", params(("path" = String, Path, description = "Note path in the vault"), ("agent" = Option<String>, Query, description = "Agent")), responses((status = 200, description = "Content, front matter, links", body = Object), (status = 400, description = "INVALID_PATH", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such note", body = crate::http::openapi::ErrorBody)))]
pub async fn get(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    dirs: web::Data<VaultDirs>,
    path: web::Path<String>,
    q: web::Query<AgentQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let vault = dirs.vault(q.agent.as_deref())?;
    let path = path.into_inner();
    let note = blocking(move || vault.read(&path)).await?;
    Ok(HttpResponse::Ok().json(note))
}

/// `PUT /api/vault/notes/{path}`: creates (201) or replaces (200) a note.
#[utoipa::path(put, path = "/api/vault/notes/{path}", tag = "vault", params(("path" = String, Path, description = "Note path in the vault"), ("agent" = Option<String>, Query, description = "Agent")), request_body(content = crate::http::openapi::VaultNoteBody, content_type = "application/json"), responses((status = 200, description = "The note written", body = Object), (status = 400, description = "INVALID_PATH or INVALID_REQUEST", body = crate::http::openapi::ErrorBody), (status = 413, description = "Note too large", body = crate::http::openapi::ErrorBody)))]
pub async fn put(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    dirs: web::Data<VaultDirs>,
    path: web::Path<String>,
    q: web::Query<AgentQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let vault = dirs.vault(q.agent.as_deref())?;
    let bytes = match payload.to_bytes_limited(MAX_PUT_BYTES).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                format!("could not read the body: {e}"),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!(
                    "the request body is larger than {MAX_PUT_BYTES} bytes; a note may hold at most {MAX_NOTE_BYTES} bytes"
                ),
            )
            .close_connection());
        }
    };
    let body: PutNote = json_body(&req, &bytes)?;
    let invalid = |why: &str| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", why);
    let content = match body {
        PutNote {
            content: Some(content),
            front_matter: None,
            body: None,
        } => content,
        PutNote {
            content: None,
            front_matter,
            body,
        } if front_matter.is_some() || body.is_some() => note::compose(
            &front_matter.unwrap_or(Value::Null),
            body.as_deref().unwrap_or(""),
        )
        .map_err(|e| invalid(&e))?,
        _ => {
            return Err(invalid(
                "send either {\"content\": text} or {\"frontMatter\": {...}, \"body\": text}",
            ));
        }
    };
    let path = path.into_inner();
    let written = blocking(move || vault.write(&path, &content, WriteMode::Replace)).await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(written))
}

/// `DELETE /api/vault/notes/{path}`.
#[utoipa::path(delete, path = "/api/vault/notes/{path}", tag = "vault", params(("path" = String, Path, description = "Note path in the vault"), ("agent" = Option<String>, Query, description = "Agent")), responses((status = 200, description = "Deleted", body = Object), (status = 404, description = "No such note", body = crate::http::openapi::ErrorBody)))]
pub async fn delete(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    dirs: web::Data<VaultDirs>,
    path: web::Path<String>,
    q: web::Query<AgentQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let vault = dirs.vault(q.agent.as_deref())?;
    let path = path.into_inner();
    let shown = path.clone();
    blocking(move || vault.delete(&path)).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": shown })))
}

/// `GET /api/vault/graph`.
#[utoipa::path(get, path = "/api/vault/graph", tag = "vault", params(("agent" = Option<String>, Query, description = "Agent")), responses((status = 200, description = "`{nodes, edges}`", body = Object)))]
pub async fn graph(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    dirs: web::Data<VaultDirs>,
    q: web::Query<AgentQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let vault = dirs.vault(q.agent.as_deref())?;
    let graph = blocking(move || vault.graph()).await?;
    Ok(HttpResponse::Ok().json(graph))
}

/// `GET /api/vault/search?q=`.
#[utoipa::path(get, path = "/api/vault/search", tag = "vault", params(("q" = Option<String>, Query, description = "Words to find"), ("limit" = Option<u32>, Query, description = "Most hits"), ("agent" = Option<String>, Query, description = "Agent")), responses((status = 200, description = "Ranked hits", body = Object)))]
pub async fn search(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    dirs: web::Data<VaultDirs>,
    q: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let vault = dirs.vault(q.agent.as_deref())?;
    let query = q.q.clone().unwrap_or_default();
    if query.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "q (the words to search for) is required",
        ));
    }
    let limit = q.limit.unwrap_or(20).clamp(1, MAX_SEARCH_LIMIT);
    let shown = query.clone();
    let results = blocking(move || vault.search(&query, limit)).await?;
    Ok(HttpResponse::Ok().json(json!({ "query": shown, "results": results })))
}
