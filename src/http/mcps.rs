//! REST for MCP tool servers: `GET /api/mcps` (each server's state, tools, agents and last
//! error; secrets never shown), `POST /api/mcps` (add), `PUT /api/mcps/{name}` (replace),
//! `DELETE /api/mcps/{name}`, `POST /api/mcps/{name}/enable|disable`. A change edits the
//! `[[mcp]]` tables of the config file (the rest of the file, comments included, is kept)
//! and goes through `config.patch`: validated like at start, written atomically (0600),
//! then applied by the hot-reload path, which restarts only that server's child.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};
use troupe_actors::live_config::ConfigCallError;

use super::{ApiError, authorize, json_body};
use crate::config::mcp::RawMcp;
use crate::gateway::Gateway;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no MCP server {name:?} in the config file"),
    )
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
}

/// `GET /api/mcps`.
#[utoipa::path(get, path = "/api/mcps", tag = "mcp",
    responses((status = 200, description = "`{mcps: [{name, enabled, transport, state, tools, agents, lastError}]}`", body = Object)))]
pub async fn list(req: HttpRequest, gateway: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let report = gateway.status(false).await;
    let servers = troupe_actors::mcp::status(&report.tree).await;
    Ok(HttpResponse::Ok().json(json!({ "mcps": servers })))
}

/// `POST /api/mcps {server}`: adds a server (409 if the name is taken).
#[utoipa::path(post, path = "/api/mcps", tag = "mcp",
    request_body(content = Object, content_type = "application/json", description = "An `[[mcp]]` table as JSON: name, command, args, env, url, enabled, agents, ..."),
    responses((status = 201, description = "Written and applied", body = Object),
        (status = 400, description = "INVALID_REQUEST / INVALID_CONFIG: nothing was written", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "A server of that name exists", body = crate::http::openapi::ErrorBody)))]
pub async fn add(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let server: RawMcp = json_body(&req, &body)?;
    let name = server
        .name
        .clone()
        .ok_or_else(|| bad_request("the server needs a name"))?;
    let table = to_table(&server)?;
    let outcome = edit(&gateway, move |servers| {
        if find(servers, &name).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!(
                    "an MCP server named {name:?} exists already; PUT /api/mcps/{name} replaces it"
                ),
            ));
        }
        servers.push(table);
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Created().json(outcome))
}

/// `PUT /api/mcps/{name} {server}`: replaces a server's whole definition.
#[utoipa::path(put, path = "/api/mcps/{name}", tag = "mcp",
    params(("name" = String, Path, description = "The server's `name`")),
    request_body(content = Object, content_type = "application/json", description = "The whole `[[mcp]]` table as JSON"),
    responses((status = 200, description = "Written and applied", body = Object),
        (status = 400, description = "INVALID_REQUEST / INVALID_CONFIG: nothing was written", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such server", body = crate::http::openapi::ErrorBody)))]
pub async fn replace(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let name = name.into_inner();
    let mut server: RawMcp = json_body(&req, &body)?;
    match &server.name {
        Some(given) if *given != name => {
            return Err(bad_request(format!(
                "the body names {given:?} but the path names {name:?}; to rename, DELETE and POST"
            )));
        }
        _ => server.name = Some(name.clone()),
    }
    let table = to_table(&server)?;
    let outcome = edit(&gateway, move |servers| {
        let i = find(servers, &name).ok_or_else(|| not_found(&name))?;
        if let Some(slot) = servers.get_mut(i) {
            *slot = table;
        }
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// `DELETE /api/mcps/{name}`.
#[utoipa::path(delete, path = "/api/mcps/{name}", tag = "mcp",
    params(("name" = String, Path, description = "The server's `name`")),
    responses((status = 200, description = "Removed and applied", body = Object),
        (status = 404, description = "No such server", body = crate::http::openapi::ErrorBody)))]
pub async fn remove(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let name = name.into_inner();
    let outcome = edit(&gateway, move |servers| {
        let i = find(servers, &name).ok_or_else(|| not_found(&name))?;
        servers.remove(i);
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// `POST /api/mcps/{name}/enable`.
#[utoipa::path(post, path = "/api/mcps/{name}/enable", tag = "mcp",
    params(("name" = String, Path, description = "The server's `name`")),
    responses((status = 200, description = "Enabled and applied", body = Object),
        (status = 404, description = "No such server", body = crate::http::openapi::ErrorBody)))]
pub async fn enable(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(req, gateway, name.into_inner(), true).await
}

/// `POST /api/mcps/{name}/disable`.
#[utoipa::path(post, path = "/api/mcps/{name}/disable", tag = "mcp",
    params(("name" = String, Path, description = "The server's `name`")),
    responses((status = 200, description = "Disabled and applied", body = Object),
        (status = 404, description = "No such server", body = crate::http::openapi::ErrorBody)))]
pub async fn disable(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(req, gateway, name.into_inner(), false).await
}

async fn set_enabled(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    name: String,
    on: bool,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let outcome = edit(&gateway, move |servers| {
        let i = find(servers, &name).ok_or_else(|| not_found(&name))?;
        if let Some(table) = servers.get_mut(i) {
            table["enabled"] = toml_edit::value(on);
        }
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// The `[[mcp]]` table of a server definition.
fn to_table(server: &RawMcp) -> Result<Table, ApiError> {
    let text = toml::to_string(server)
        .map_err(|e| bad_request(format!("the server cannot be written as TOML: {e}")))?;
    let doc: DocumentMut = text
        .parse()
        .map_err(|e| bad_request(format!("the server cannot be written as TOML: {e}")))?;
    Ok(doc.as_table().clone())
}

fn find(servers: &ArrayOfTables, name: &str) -> Option<usize> {
    servers
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

/// Reads the config file, applies `change` to its `[[mcp]]` tables and hands the result to
/// `config.patch` (validated, written atomically, reloaded). Answers what was applied.
async fn edit(
    gateway: &Gateway,
    change: impl FnOnce(&mut ArrayOfTables) -> Result<(), ApiError>,
) -> Result<Value, ApiError> {
    let service = gateway
        .settings
        .reload
        .service()
        .ok_or_else(|| unavailable("the config service is not running"))?;
    let current = service.get().await.map_err(call_error)?;
    let file = current["file"].as_str().unwrap_or_default().to_string();
    let hash = current["hash"].as_str().unwrap_or_default().to_string();
    let path = std::path::PathBuf::from(&file);
    let text = web::block(move || match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    })
    .await
    .map_err(|e| unavailable(format!("config read failed: {e}")))?
    .map_err(unavailable)?;
    let mut doc: DocumentMut = text.parse().map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            "INVALID_CONFIG",
            format!("the config file {file} is not valid TOML, fix it first: {e}"),
        )
    })?;
    let servers = match doc.get_mut("mcp") {
        None => {
            doc.insert("mcp", Item::ArrayOfTables(ArrayOfTables::new()));
            doc.get_mut("mcp")
        }
        some => some,
    }
    .and_then(Item::as_array_of_tables_mut)
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "INVALID_CONFIG",
            format!("`mcp` in {file} is not an array of [[mcp]] tables"),
        )
    })?;
    change(servers)?;
    if servers.is_empty() {
        doc.remove("mcp");
    }
    let outcome = service
        .patch(doc.to_string(), hash)
        .await
        .map_err(call_error)?;
    Ok(json!({
        "ok": true,
        "hash": outcome["hash"],
        "applied": outcome["applied"],
    }))
}

fn call_error(err: ConfigCallError) -> ApiError {
    match err {
        ConfigCallError::Invalid { code, message } if code == "STALE_BASE_HASH" => {
            ApiError::new(StatusCode::CONFLICT, code, message)
        }
        ConfigCallError::Invalid { code, message } => {
            ApiError::new(StatusCode::BAD_REQUEST, code, message)
        }
        ConfigCallError::Unavailable(why) => unavailable(why),
    }
}
