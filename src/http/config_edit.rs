//! `PUT /api/config` (the whole file, as `config.patch`) and `PATCH /api/config` (one
//! section as JSON), and the edit helper `/api/models` shares: every change goes through the
//! reload's config service (validated in a private temp file, renamed over the file only
//! when valid, then hot-reloaded), so an invalid edit leaves the file untouched.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use toml::Table;
use toml_edit::{DocumentMut, Item, TableLike};
use troupe_actors::live_config::ConfigCallError;
use utoipa::ToSchema;

use super::operator::{OperatorContext, invalid, unavailable};
use super::{ApiError, authorize, json_body};
use crate::gateway::Gateway;
use crate::reload::files::{FileState, REDACTED, redacted};
use crate::reload::secret_text;

/// `PUT /api/config` body (as `config.patch`'s params).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigPut {
    /// The whole config file, TOML. A `"<redacted>"` value (as in `rawRedacted` from `GET`)
    /// keeps the secret the file has at that place.
    pub raw: String,
    /// `hash` from `GET /api/config`: the edit applies only to that version of the file.
    pub base_hash: String,
}

/// `PATCH /api/config` body: one section replaced as a whole.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigSectionPatch {
    /// The section's dotted key: `sessions`, `agents`, `providers.openai`, ...
    pub section: String,
    /// Its new value (JSON of the TOML); `null` removes it (its defaults apply). A string
    /// `<redacted>` keeps the secret the file has at that place.
    #[schema(value_type = Object)]
    pub value: Value,
    /// When given, the edit applies only if the file still has this hash.
    #[serde(default)]
    pub base_hash: Option<String>,
}

/// `PUT /api/config`: replaces the whole file (validated first; 409 on a stale `baseHash`).
#[utoipa::path(put, path = "/api/config", tag = "config",
    request_body(content = ConfigPut, content_type = "application/json"),
    responses((status = 200, description = "`{ok, hash, applied, pendingRestart}`", body = Object),
        (status = 400, description = "INVALID_CONFIG: the file was not changed", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "STALE_BASE_HASH: the file changed since it was read", body = crate::http::openapi::ErrorBody)))]
pub async fn put(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let body: ConfigPut = json_body(&req, &body)?;
    let service = service(&gateway)?;
    let outcome = service
        .patch(body.raw, body.base_hash)
        .await
        .map_err(call_error)?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// `PATCH /api/config`: replaces one section (secrets kept where `<redacted>` is given;
/// the rest of the file keeps its comments).
#[utoipa::path(patch, path = "/api/config", tag = "config",
    request_body(content = ConfigSectionPatch, content_type = "application/json"),
    responses((status = 200, description = "`{ok, hash, applied, pendingRestart, section, value}` (value redacted)", body = Object),
        (status = 400, description = "INVALID_CONFIG or a bad section", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "STALE_BASE_HASH", body = crate::http::openapi::ErrorBody)))]
pub async fn patch(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let body: ConfigSectionPatch = json_body(&req, &body)?;
    let path = section_path(&body.section)?;
    let value = body.value;
    let at = path.clone();
    let mut outcome = edit(&gateway, &ops, body.base_hash, move |doc, table| {
        set_section(doc, table, &at, value)
    })
    .await?;
    let (now, _) = match read_file(&ops).await?.table() {
        Ok(table) => redacted(&table),
        Err(_) => (Value::Null, Vec::new()),
    };
    outcome["section"] = json!(body.section);
    outcome["value"] = path
        .iter()
        .try_fold(&now, |v, k| v.get(k))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(HttpResponse::Ok().json(outcome))
}

/// The config service, or 503 while it is not running.
fn service(gateway: &Gateway) -> Result<&dyn troupe_actors::live_config::ConfigService, ApiError> {
    gateway
        .settings
        .reload
        .service()
        .ok_or_else(|| unavailable("the config service is not running"))
}

/// A config call's failure as HTTP: a stale hash 409, an invalid config 400, else 503.
pub(crate) fn call_error(err: ConfigCallError) -> ApiError {
    match err {
        ConfigCallError::Invalid {
            code: "STALE_BASE_HASH",
            message,
        } => ApiError::new(StatusCode::CONFLICT, "STALE_BASE_HASH", message),
        ConfigCallError::Invalid { code, message } => {
            ApiError::new(StatusCode::BAD_REQUEST, code, message)
        }
        ConfigCallError::Unavailable(why) => unavailable(why),
    }
}

async fn read_file(ops: &OperatorContext) -> Result<FileState, ApiError> {
    let file = ops.config_file.clone();
    tokio::task::spawn_blocking(move || FileState::read(&file))
        .await
        .map_err(|e| unavailable(format!("the config reader failed: {e}")))
}

/// Edits the config file with `change` (given the file as an editable document, which keeps
/// comments and layout outside what is changed, and as a plain table to read) and writes it
/// back through the config service (the same validation and hot reload as `config.patch`).
pub(crate) async fn edit(
    gateway: &Gateway,
    ops: &OperatorContext,
    base_hash: Option<String>,
    change: impl FnOnce(&mut DocumentMut, &Table) -> Result<(), ApiError>,
) -> Result<Value, ApiError> {
    let service = service(gateway)?;
    let state = read_file(ops).await?;
    if let Some(base) = base_hash
        && base != state.hash
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "STALE_BASE_HASH",
            format!(
                "baseHash {base:?} is not the config file's current hash {:?}: read it again and redo the edit",
                state.hash
            ),
        ));
    }
    let unparsable = |why: String| {
        ApiError::new(
            StatusCode::CONFLICT,
            "UNPARSABLE_CONFIG_FILE",
            format!("{why}; fix the file or replace it whole with PUT /api/config"),
        )
    };
    let table = state.table().map_err(unparsable)?;
    let mut doc: DocumentMut = state
        .text()
        .parse()
        .map_err(|e| unparsable(format!("the config file is not valid TOML: {e}")))?;
    change(&mut doc, &table)?;
    service
        .patch(doc.to_string(), state.hash)
        .await
        .map_err(call_error)
}

/// `a.b.c` as keys; each must be a bare TOML key.
pub(crate) fn section_path(section: &str) -> Result<Vec<String>, ApiError> {
    let keys: Vec<String> = section.split('.').map(str::to_string).collect();
    let bare = |k: &String| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if keys.iter().all(bare) {
        Ok(keys)
    } else {
        Err(invalid(format!(
            "section {section:?} is not a dotted key of bare names (sessions, providers.openai)"
        )))
    }
}

/// Sets (or with `null` removes) the value at `path` in `doc`, keeping the file's secrets
/// (read from `old`, the same file as a table) where the new value has the `<redacted>`
/// placeholder. The rest of the document keeps its comments and layout.
pub(crate) fn set_section(
    doc: &mut DocumentMut,
    old: &Table,
    path: &[String],
    value: Value,
) -> Result<(), ApiError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(invalid("section must not be empty"));
    };
    let new = if value.is_null() {
        None
    } else {
        let mut new = to_toml(&value, &path.join("."))?;
        let previous = parents
            .iter()
            .try_fold(old, |t, k| t.get(k)?.as_table())
            .and_then(|t| t.get(last));
        if let Some(previous) = previous {
            keep_secrets(&mut new, previous);
        }
        if contains_placeholder(&new) {
            return Err(invalid(format!(
                "{REDACTED} stands for a secret the file has, but {} has none at that place",
                path.join(".")
            )));
        }
        Some(to_item(&new)?)
    };
    let mut at: &mut dyn TableLike = doc.as_table_mut();
    for key in parents {
        at = at
            .entry(key)
            .or_insert(implicit_table())
            .as_table_like_mut()
            .ok_or_else(|| {
                invalid(format!(
                    "{key:?} in the section path is a value, not a table"
                ))
            })?;
    }
    match new {
        None => {
            at.remove(last);
        }
        Some(mut item) => {
            keep_place(&mut item, at.get(last));
            at.insert(last, item);
        }
    }
    Ok(())
}

/// Gives a table replacing `old` its place and the comments above it; a new table gets a
/// blank line before it.
fn keep_place(item: &mut Item, old: Option<&Item>) {
    let Item::Table(table) = item else {
        return;
    };
    match old.and_then(Item::as_table) {
        Some(old) => {
            table.set_position(old.position());
            *table.decor_mut() = old.decor().clone();
        }
        None => table.decor_mut().set_prefix("\n"),
    }
}

/// A table that gets no header of its own (`[providers]` before `[providers.openai]`).
pub(crate) fn implicit_table() -> Item {
    let mut table = toml_edit::Table::new();
    table.set_implicit(true);
    Item::Table(table)
}

/// A TOML value as a document item, in the form TOML writes it (a table as `[a.b]`, a
/// list of tables as `[[a]]`).
fn to_item(value: &toml::Value) -> Result<Item, ApiError> {
    let mut wrapper = Table::new();
    wrapper.insert("x".into(), value.clone());
    let text = toml::to_string(&wrapper)
        .map_err(|e| invalid(format!("the value cannot be written as TOML: {e}")))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| invalid(format!("the value cannot be written as TOML: {e}")))?;
    let mut item = doc
        .remove("x")
        .ok_or_else(|| invalid("the value cannot be written as TOML"))?;
    clear_positions(&mut item);
    Ok(item)
}

/// Forgets where tables stood in the document they were parsed from, so they are written
/// where they are inserted.
fn clear_positions(item: &mut Item) {
    match item {
        Item::Table(t) => {
            t.set_position(None);
            for (_, child) in t.iter_mut() {
                clear_positions(child);
            }
        }
        Item::ArrayOfTables(a) => {
            for t in a.iter_mut() {
                t.set_position(None);
                for (_, child) in t.iter_mut() {
                    clear_positions(child);
                }
            }
        }
        _ => {}
    }
}

/// JSON as TOML (no nulls inside: TOML has none).
fn to_toml(value: &Value, at: &str) -> Result<toml::Value, ApiError> {
    Ok(match value {
        Value::Null => {
            return Err(invalid(format!(
                "{at} holds null: TOML has no null; leave the key out instead"
            )));
        }
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(
                n.as_f64()
                    .ok_or_else(|| invalid(format!("{at}: {n} is out of range")))?,
            ),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_toml(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), to_toml(v, &format!("{at}.{k}"))?)))
                .collect::<Result<_, ApiError>>()?,
        ),
    })
}

/// Replaces each `<redacted>` in `new` by the value at the same place in `old` (whatever its
/// type: an MCP server's `env` hides numbers too). In a list of tables, an entry's place is
/// the file's entry with the same `id`, `account` or `name` (as `config.patch` matches
/// them), so reordering entries does not hand one entry's secret to another.
fn keep_secrets(new: &mut toml::Value, old: &toml::Value) {
    if new.as_str() == Some(REDACTED) {
        *new = old.clone();
        return;
    }
    match (new, old) {
        (toml::Value::Table(n), toml::Value::Table(o)) => {
            for (k, v) in n.iter_mut() {
                if let Some(ov) = o.get(k) {
                    keep_secrets(v, ov);
                }
            }
        }
        (toml::Value::Array(n), toml::Value::Array(o)) => {
            let mut unnamed = 0;
            for (i, v) in n.iter_mut().enumerate() {
                let was = match &*v {
                    toml::Value::Table(t) => secret_text::matching_entry(
                        secret_text::entry_name(|key| t.get(key)?.as_str()),
                        Some(old),
                        &mut unnamed,
                    ),
                    _ => o.get(i),
                };
                if let Some(ov) = was {
                    keep_secrets(v, ov);
                }
            }
        }
        _ => {}
    }
}

fn contains_placeholder(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => s == REDACTED,
        toml::Value::Table(t) => t.values().any(contains_placeholder),
        toml::Value::Array(a) => a.iter().any(contains_placeholder),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_section_is_replaced_and_redacted_secrets_are_kept() {
        let text = "# my gateway\n[gateway.auth]\nmode = \"token\"\ntoken = \"s3cr3t-s3cr3t\"\n\n# sessions, tuned\n[sessions]\nlane_capacity = 4 # small\n";
        let (mut doc, table) = parse(text);
        let path = section_path("gateway.auth").unwrap();
        let value = json!({ "mode": "token", "token": REDACTED, "max_failures_per_minute": 5 });
        set_section(&mut doc, &table, &path, value).unwrap();
        let written = doc.to_string();
        let reread: Table = written.parse().unwrap();
        let auth = reread["gateway"]["auth"].as_table().unwrap();
        assert_eq!(auth["token"].as_str(), Some("s3cr3t-s3cr3t"));
        assert_eq!(auth["max_failures_per_minute"].as_integer(), Some(5));
        assert!(
            written.starts_with("# my gateway\n[gateway.auth]"),
            "{written}"
        );
        assert!(written.contains("# sessions, tuned"), "{written}");
        assert!(written.contains("lane_capacity = 4 # small"), "{written}");
        let (mut doc, table) = parse(&written);
        set_section(
            &mut doc,
            &table,
            &section_path("gateway").unwrap(),
            Value::Null,
        )
        .unwrap();
        assert!(!doc.to_string().contains("[gateway"), "{doc}");
    }

    #[test]
    fn a_list_of_tables_is_written_as_one() {
        let (mut doc, table) = parse("[sessions]\nlane_capacity = 4\n");
        let agents = json!([{ "id": "a", "provider": "echo", "model": "echo" },
                            { "id": "b", "provider": "echo", "model": "echo" }]);
        set_section(&mut doc, &table, &section_path("agents").unwrap(), agents).unwrap();
        let written = doc.to_string();
        assert_eq!(written.matches("[[agents]]").count(), 2, "{written}");
        let reread: Table = written.parse().unwrap();
        assert_eq!(reread["agents"].as_array().unwrap().len(), 2);
        assert_eq!(reread["sessions"]["lane_capacity"].as_integer(), Some(4));
    }

    #[test]
    fn reordered_list_entries_keep_their_own_secrets() {
        let text = "[[mcp]]\nname = \"a\"\ncommand = \"x\"\nenv = { K = \"secret-a\", PORT = 8080 }\n\n[[mcp]]\nname = \"b\"\ncommand = \"y\"\nenv = { K = \"secret-b\" }\n";
        let (mut doc, table) = parse(text);
        let swapped = json!([
            { "name": "b", "command": "y", "env": { "K": REDACTED } },
            { "name": "a", "command": "x", "env": { "K": REDACTED, "PORT": REDACTED } },
        ]);
        set_section(&mut doc, &table, &section_path("mcp").unwrap(), swapped).unwrap();
        let reread: Table = doc.to_string().parse().unwrap();
        let list = reread["mcp"].as_array().unwrap();
        assert_eq!(list[0]["name"].as_str(), Some("b"));
        assert_eq!(list[0]["env"]["K"].as_str(), Some("secret-b"));
        assert_eq!(list[1]["env"]["K"].as_str(), Some("secret-a"));
        assert_eq!(
            list[1]["env"]["PORT"].as_integer(),
            Some(8080),
            "a hidden number"
        );
        // A new entry named like none in the file gets no secret by its place.
        let (mut doc, table) = parse(text);
        let renamed = json!([{ "name": "c", "command": "x", "env": { "K": REDACTED } }]);
        let err =
            set_section(&mut doc, &table, &section_path("mcp").unwrap(), renamed).unwrap_err();
        assert!(err.to_string().contains(REDACTED), "{err}");
    }

    fn parse(text: &str) -> (DocumentMut, Table) {
        (text.parse().unwrap(), text.parse().unwrap())
    }

    #[test]
    fn a_placeholder_without_a_secret_and_bad_paths_are_refused() {
        let (mut doc, table) = parse("");
        let path = section_path("hooks").unwrap();
        let err = set_section(&mut doc, &table, &path, json!({ "token": REDACTED })).unwrap_err();
        assert!(err.to_string().contains("has none"), "{err}");
        assert!(section_path("a..b").is_err());
        assert!(section_path("a b").is_err());
        let err = set_section(&mut doc, &table, &path, json!({ "x": null })).unwrap_err();
        assert!(err.to_string().contains("null"), "{err}");
    }
}
