//! `troupe doctor`'s channel checks: a bot token is present for every configured account
//! (env value or readable, non-empty file) and, with the gateway running, each account's
//! state in its tree.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use troupe_actors::channels::TokenSource;

use crate::cli::ClientFlags;
use crate::client::{Target, call};
use crate::config::Config;
use crate::paths::StatePaths;

/// One line per check: whether it passed, and what it says.
pub fn checks(
    config: &Config,
    paths: &StatePaths,
    env: &HashMap<String, String>,
    running: bool,
) -> Vec<(bool, String)> {
    let accounts: Vec<(String, &TokenSource)> = config
        .channels
        .telegram
        .iter()
        .map(|t| (format!("telegram:{}", t.account), &t.token))
        .chain(
            config
                .channels
                .discord
                .iter()
                .map(|d| (format!("discord:{}", d.account), &d.token)),
        )
        .collect();
    let mut out: Vec<(bool, String)> = accounts
        .iter()
        .map(|(id, source)| match token_problem(source) {
            None => (true, format!("channel {id}: bot token present")),
            Some(why) => (false, format!("channel {id}: {why}")),
        })
        .collect();
    if running && !accounts.is_empty() {
        match live_states(paths, env) {
            Ok(states) => {
                for (id, _) in &accounts {
                    let state = states
                        .iter()
                        .find(|(i, _)| i == id)
                        .map(|(_, s)| s.as_str())
                        .unwrap_or("missing from the tree");
                    let ok = state == "running";
                    out.push((ok, format!("channel {id} in the running gateway: {state}")));
                }
            }
            Err(why) => out.push((false, format!("cannot read channel states: {why}"))),
        }
    }
    out
}

/// What is wrong with a token source, if anything (the token itself is never shown).
fn token_problem(source: &TokenSource) -> Option<String> {
    match source {
        TokenSource::Value(secret) if secret.0.trim().is_empty() => {
            Some("the bot token (token_env) is empty".into())
        }
        TokenSource::Value(_) => None,
        TokenSource::File(path) => match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => {
                Some(format!("the token file {} is empty", path.display()))
            }
            Ok(_) => None,
            Err(e) => Some(format!(
                "cannot read the token file {}: {e}",
                path.display()
            )),
        },
    }
}

/// `(id, state)` of each channel account in the running gateway's tree.
fn live_states(
    paths: &StatePaths,
    env: &HashMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let flags = ClientFlags::default();
    let target = Target::resolve(&flags, paths, env);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let reply = runtime
        .block_on(call(
            &target,
            "channels.status",
            None,
            false,
            Duration::from_secs(10),
        ))
        .map_err(|e| e.to_string())?;
    Ok(reply["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c: &Value| {
            (
                c["id"].as_str().unwrap_or("?").to_string(),
                c["state"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect())
}
