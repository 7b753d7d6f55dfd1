//! `config.get` and `config.patch` over WebSocket: params parsed and errors shaped as the
//! protocol wants, the work done by the reload's [`ConfigService`](troupe_actors::live_config::ConfigService).

use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};
use troupe_actors::live_config::{ConfigCallError, ReloadState};

use super::protocol::ErrorShape;

/// `config.patch` params.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PatchParams {
    raw: String,
    base_hash: String,
}

/// Runs `config.get` / `config.patch` for a WS client.
pub fn call(
    state: &ReloadState,
    method: &str,
    params: Option<Value>,
) -> Pin<Box<dyn Future<Output = Result<Value, ErrorShape>> + Send>> {
    let Some(service) = state.service() else {
        let error = ErrorShape::unavailable("config service not running", 1000);
        return Box::pin(async move { Err(error) });
    };
    let work = match method {
        "config.get" => service.get(),
        _ => {
            let parsed = serde_json::from_value::<PatchParams>(params.unwrap_or(json!({})));
            match parsed {
                Ok(p) => service.patch(p.raw, p.base_hash),
                Err(e) => {
                    let error = ErrorShape::invalid(format!("invalid params for {method}: {e}"))
                        .with_detail("INVALID_PARAMS");
                    return Box::pin(async move { Err(error) });
                }
            }
        }
    };
    Box::pin(async move {
        work.await.map_err(|e| match e {
            ConfigCallError::Invalid { code, message } => {
                ErrorShape::invalid(message).with_detail(code)
            }
            ConfigCallError::Unavailable(why) => ErrorShape::unavailable(why, 1000),
        })
    })
}
