//! `/api/models`: the model providers (`[providers.openai]`, `[providers.anthropic]`; the
//! built-in `echo` is listed, read-only) with API keys masked; add, update and remove them
//! in the config file through the hot-reload path; `POST /api/models/{name}/test` sends a
//! small smoke prompt and answers `{ok, latencyMs, reply | error}`.
//!
//! A key given as `apiKey` is never written into the config file: it goes to
//! `<state dir>/secrets/<name>.key` (0600) and the provider's `api_key_file` points there.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use troupe_actors::provider::{ChatMessage, ChatRequest, Endpoint, Provider, http_client};
use utoipa::ToSchema;

use super::config_edit::{edit, implicit_table};
use super::operator::{OperatorContext, invalid, not_found, unavailable};
use super::{ApiError, authorize, json_body};
use crate::config::{Config, EndpointConfig};
use crate::gateway::Gateway;

/// The providers whose configuration can be edited.
pub const EDITABLE: &[&str] = &["openai", "anthropic"];

/// Longest a smoke test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One provider as `GET /api/models` lists it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelProvider {
    /// `openai`, `anthropic` or `echo`.
    pub name: String,
    /// Whether it can be edited (`echo` is built in).
    pub editable: bool,
    /// Whether the config file has a `[providers.<name>]` section (else defaults apply).
    pub in_file: bool,
    /// Base URL (`None` for echo).
    pub base_url: Option<String>,
    /// Environment variable read for the key.
    pub api_key_env: Option<String>,
    /// File read for the key when the variable is unset.
    pub api_key_file: Option<String>,
    /// The key found, masked (`…abcd`), or `None` when there is none.
    pub api_key: Option<String>,
    /// Agents that use it.
    pub agents: Vec<String>,
}

/// Fields of a provider to add or change (absent ones are left as they are).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelProviderChange {
    /// `openai` or `anthropic` (only for `POST /api/models`; the path names it otherwise).
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable read for the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File read for the key.
    #[serde(default)]
    pub api_key_file: Option<String>,
    /// The key itself: stored in `secrets/<name>.key` (0600), never in the config file.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// `POST /api/models/{name}/test` body (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelTest {
    /// Model to ask (default: the model of the first agent using this provider).
    #[serde(default)]
    pub model: Option<String>,
    /// Prompt (default: a one-word request).
    #[serde(default)]
    pub prompt: Option<String>,
}

/// `POST /api/models/{name}/test` answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelTestResult {
    /// Whether the provider answered.
    pub ok: bool,
    /// Time to the whole answer (or the failure), ms.
    pub latency_ms: u64,
    /// The model asked.
    pub model: String,
    /// Its reply, when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// What went wrong, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() >= 12 {
        format!("…{}", chars[chars.len() - 4..].iter().collect::<String>())
    } else {
        "…".into()
    }
}

fn endpoint_of<'a>(config: &'a Config, name: &str) -> Option<&'a EndpointConfig> {
    match name {
        "openai" => Some(&config.openai),
        "anthropic" => Some(&config.anthropic),
        _ => None,
    }
}

/// `GET /api/models`: the providers, keys masked.
#[utoipa::path(get, path = "/api/models", tag = "models",
    responses((status = 200, description = "`{models: [...]}`", body = ModelProviderList)))]
pub async fn list(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let (config, agents) = ops.load().await?;
    let file = ops.config_file.clone();
    let table = tokio::task::spawn_blocking(move || {
        crate::reload::files::FileState::read(&file)
            .table()
            .unwrap_or_default()
    })
    .await
    .map_err(|e| unavailable(format!("the config reader failed: {e}")))?;
    let users = |name: &str| -> Vec<String> {
        agents
            .iter()
            .filter(|a| a.summary.provider == name)
            .map(|a| a.summary.id.clone())
            .collect()
    };
    let mut models = vec![ModelProvider {
        name: "echo".into(),
        editable: false,
        in_file: false,
        base_url: None,
        api_key_env: None,
        api_key_file: None,
        api_key: None,
        agents: users("echo"),
    }];
    for name in EDITABLE {
        let Some(e) = endpoint_of(&config, name) else {
            continue;
        };
        models.push(ModelProvider {
            name: name.to_string(),
            editable: true,
            in_file: table.get("providers").and_then(|p| p.get(*name)).is_some(),
            base_url: Some(e.base_url.clone()),
            api_key_env: Some(e.api_key_env.clone()),
            api_key_file: (!e.api_key_file.is_empty()).then(|| e.api_key_file.clone()),
            api_key: crate::agents::api_key(e, &ops.env).map(|k| mask(&k.0)),
            agents: users(name),
        });
    }
    Ok(HttpResponse::Ok().json(ModelProviderList { models }))
}

/// `{models}`.
#[derive(Serialize, ToSchema)]
pub struct ModelProviderList {
    /// The providers.
    pub models: Vec<ModelProvider>,
}

fn editable(name: &str) -> Result<(), ApiError> {
    if EDITABLE.contains(&name) {
        Ok(())
    } else {
        Err(not_found(format!(
            "no editable provider {name:?}; editable: {} (echo is built in)",
            EDITABLE.join(", ")
        )))
    }
}

/// Writes a key given as `apiKey` to `secrets/<name>.key` (0600) and returns its path.
fn store_key(ops: &OperatorContext, name: &str, key: &str) -> Result<String, ApiError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if key.trim().is_empty() || key.contains('\n') {
        return Err(invalid("apiKey must be one non-empty line"));
    }
    let dir = ops.paths.home.join("secrets");
    let path = dir.join(format!("{name}.key"));
    let write = || -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(key.trim().as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| unavailable(format!("cannot write {}: {e}", path.display())))?;
    Ok(path.display().to_string())
}

async fn change(
    gateway: &Gateway,
    ops: &OperatorContext,
    name: String,
    body: ModelProviderChange,
    create: bool,
) -> Result<Value, ApiError> {
    let key_file = match &body.api_key {
        Some(key) => Some(store_key(ops, &name, key)?),
        None => None,
    };
    let at = name.clone();
    let outcome = edit(gateway, ops, None, move |doc, _| {
        let providers = doc
            .entry("providers")
            .or_insert(implicit_table())
            .as_table_like_mut()
            .ok_or_else(|| invalid("providers in the config file is not a table"))?;
        if create && providers.contains_key(&at) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                format!("[providers.{at}] is already in the config file; PUT /api/models/{at} changes it"),
            ));
        }
        let section = providers
            .entry(&at)
            .or_insert(toml_edit::table())
            .as_table_like_mut()
            .ok_or_else(|| invalid(format!("providers.{at} in the config file is not a table")))?;
        let fields = [
            ("base_url", body.base_url),
            ("api_key_env", body.api_key_env),
            ("api_key_file", key_file.or(body.api_key_file)),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                section.insert(key, toml_edit::value(v));
            }
        }
        Ok(())
    })
    .await?;
    Ok(
        json!({ "name": name, "ok": true, "hash": outcome["hash"], "applied": outcome["applied"], "pendingRestart": outcome["pendingRestart"] }),
    )
}

/// `POST /api/models`: adds `[providers.<name>]` (409 when the file has it already).
#[utoipa::path(post, path = "/api/models", tag = "models",
    request_body(content = ModelProviderChange, content_type = "application/json"),
    responses((status = 201, description = "`{name, ok, hash, applied, pendingRestart}`", body = Object),
        (status = 400, description = "INVALID_CONFIG: nothing was written", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not an editable provider", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "ALREADY_EXISTS", body = crate::http::openapi::ErrorBody)))]
pub async fn add(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let body: ModelProviderChange = json_body(&req, &body)?;
    let Some(name) = body.name.clone() else {
        return Err(invalid("name is required (openai or anthropic)"));
    };
    editable(&name)?;
    let outcome = change(&gateway, &ops, name, body, true).await?;
    Ok(HttpResponse::Created().json(outcome))
}

/// `PUT /api/models/{name}`: changes the given fields of `[providers.<name>]`.
#[utoipa::path(put, path = "/api/models/{name}", tag = "models",
    params(("name" = String, Path, description = "`openai` or `anthropic`")),
    request_body(content = ModelProviderChange, content_type = "application/json"),
    responses((status = 200, description = "`{name, ok, hash, applied, pendingRestart}`", body = Object),
        (status = 400, description = "INVALID_CONFIG: nothing was written", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not an editable provider", body = crate::http::openapi::ErrorBody)))]
pub async fn update(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let name = name.into_inner();
    editable(&name)?;
    let body: ModelProviderChange = json_body(&req, &body)?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(invalid(
            "name in the body differs from the path; a provider cannot be renamed",
        ));
    }
    Ok(HttpResponse::Ok().json(change(&gateway, &ops, name, body, false).await?))
}

/// `DELETE /api/models/{name}`: removes `[providers.<name>]` (its defaults apply again).
#[utoipa::path(delete, path = "/api/models/{name}", tag = "models",
    params(("name" = String, Path, description = "`openai` or `anthropic`")),
    responses((status = 200, description = "`{name, ok, hash, applied, pendingRestart}`", body = Object),
        (status = 404, description = "Not in the config file", body = crate::http::openapi::ErrorBody)))]
pub async fn remove(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let name = name.into_inner();
    editable(&name)?;
    let at = name.clone();
    let outcome = edit(&gateway, &ops, None, move |doc, _| {
        let removed = doc
            .get_mut("providers")
            .and_then(|p| p.as_table_like_mut())
            .and_then(|p| p.remove(&at));
        if removed.is_none() {
            return Err(not_found(format!(
                "the config file has no [providers.{at}] (its defaults apply)"
            )));
        }
        if doc
            .get("providers")
            .and_then(|p| p.as_table_like())
            .is_some_and(|p| p.is_empty())
        {
            doc.remove("providers");
        }
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Ok().json(
        json!({ "name": name, "ok": true, "hash": outcome["hash"], "applied": outcome["applied"], "pendingRestart": outcome["pendingRestart"] }),
    ))
}

/// `POST /api/models/{name}/test`: one small prompt to the provider.
#[utoipa::path(post, path = "/api/models/{name}/test", tag = "models",
    params(("name" = String, Path, description = "`echo`, `openai` or `anthropic`")),
    request_body(content = ModelTest, content_type = "application/json", description = "Optional"),
    responses((status = 200, description = "The outcome (a provider failure is `ok: false`)", body = ModelTestResult),
        (status = 400, description = "No model to ask", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such provider", body = crate::http::openapi::ErrorBody)))]
pub async fn test(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let name = name.into_inner();
    if name != "echo" {
        editable(&name)?;
    }
    let body: ModelTest = if body.is_empty() {
        ModelTest::default()
    } else {
        json_body(&req, &body)?
    };
    let (config, agents) = ops.load().await?;
    let model = body
        .model
        .filter(|m| !m.trim().is_empty())
        .or_else(|| {
            agents
                .iter()
                .find(|a| a.summary.provider == name)
                .map(|a| a.summary.model.clone())
        })
        .ok_or_else(|| {
            invalid(format!(
                "no agent uses {name}; name the model to ask in the body: {{\"model\": \"...\"}}"
            ))
        })?;
    let provider = match endpoint_of(&config, &name) {
        None => Provider::Echo(troupe_actors::echo::EchoSettings {
            delta_delay: Duration::ZERO,
        }),
        Some(e) => {
            let client = http_client(&config.http_policy)
                .map_err(|e| unavailable(format!("cannot build the HTTP client: {e}")))?;
            let endpoint = Endpoint {
                base_url: e.base_url.clone(),
                api_key: crate::agents::api_key(e, &ops.env),
                policy: troupe_actors::provider::HttpPolicy {
                    max_retries: 0,
                    ..config.http_policy
                },
            };
            if name == "openai" {
                Provider::OpenAi(endpoint, client)
            } else {
                Provider::Anthropic(endpoint, client)
            }
        }
    };
    let request = ChatRequest {
        model: model.clone(),
        system: None,
        messages: vec![ChatMessage::User(
            body.prompt
                .unwrap_or_else(|| "Reply with the single word: pong".into()),
        )],
        tools: Vec::new(),
        temperature: None,
        max_tokens: Some(16),
        images: Vec::new(),
    };
    let started = Instant::now();
    let outcome =
        tokio::time::timeout(TEST_TIMEOUT, provider.complete(&request, &mut |_| {})).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let result = match outcome {
        Ok(Ok(done)) => ModelTestResult {
            ok: true,
            latency_ms,
            model,
            reply: Some(done.text),
            error: None,
        },
        Ok(Err(e)) => ModelTestResult {
            ok: false,
            latency_ms,
            model,
            reply: None,
            error: Some(e.to_string()),
        },
        Err(_) => ModelTestResult {
            ok: false,
            latency_ms,
            model,
            reply: None,
            error: Some(format!("no answer within {TEST_TIMEOUT:?}")),
        },
    };
    Ok(HttpResponse::Ok().json(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_to_their_last_four_characters() {
        assert_eq!(mask("sk-abcdefghijkl1234"), "…1234");
        assert_eq!(mask("short"), "…");
    }
}
