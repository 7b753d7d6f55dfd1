//! `troupe agents list`: the running gateway's agents, each with its provider, model and
//! the state of its node in the supervision tree. One `status` request over the CLI's
//! WebSocket client ([`crate::client`]), as `troupe gateway status` makes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::ClientFlags;
use crate::client::{Target, call};
use crate::exit;
use crate::paths::StatePaths;
use crate::pidfile::PidFile;

/// Asks the gateway for its agents and prints one line per agent (`--json`: one JSON
/// object `{agents: [{id, provider, model, realModel, state, restarts}]}`). Exits
/// [`exit::NOT_RUNNING`] when no gateway runs on this home (and no `--url` names one),
/// [`exit::FAILURE`] when it does not answer.
pub fn run(
    paths: &StatePaths,
    env: &HashMap<String, String>,
    json_out: bool,
    flags: &ClientFlags,
) -> i32 {
    if flags.url.is_none() && !PidFile::is_locked(&paths.pid_file()) {
        eprintln!(
            "troupe: the gateway is not running (home {}); start it with `troupe gateway start`",
            paths.home.display()
        );
        return exit::NOT_RUNNING;
    }
    let target = Target::resolve(flags, paths, env);
    let Some(runtime) = crate::client::command_runtime() else {
        return exit::FAILURE;
    };
    let timeout = Duration::from_secs(flags.timeout);
    let report = match runtime.block_on(call(&target, "status", None, false, timeout)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("troupe: {e}");
            return exit::FAILURE;
        }
    };
    let agents = agents_of(&report);
    if json_out {
        println!("{}", json!({ "agents": agents }));
        return exit::OK;
    }
    if agents.is_empty() {
        println!("no agents configured");
    }
    for line in lines(&agents) {
        println!("{line}");
    }
    exit::OK
}

/// The agents of a `status` report, each with the state and restarts of its tree node
/// (`agent:<id>`; state `absent` when the tree has no such node).
fn agents_of(report: &Value) -> Vec<Value> {
    report["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let id = a["id"].as_str().unwrap_or_default();
            let node = find(&report["tree"], &format!("agent:{id}"));
            json!({
                "id": id,
                "provider": a["provider"],
                "model": a["model"],
                "realModel": a["realModel"],
                "state": node.map(|n| n["state"].clone()).unwrap_or_else(|| json!("absent")),
                "restarts": node.map(|n| n["restarts"].clone()).unwrap_or_else(|| json!(0)),
            })
        })
        .collect()
}

/// One aligned line per agent: id, provider, model, state, and restarts when any.
fn lines(agents: &[Value]) -> Vec<String> {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("?").to_string();
    let width = |key: &str| {
        agents
            .iter()
            .map(|a| text(a, key).chars().count())
            .max()
            .unwrap_or(0)
    };
    let (id_w, provider_w, model_w) = (width("id"), width("provider"), width("model"));
    agents
        .iter()
        .map(|a| {
            let mut line = format!(
                "{:id_w$}  {:provider_w$}  {:model_w$}  {}",
                text(a, "id"),
                text(a, "provider"),
                text(a, "model"),
                text(a, "state"),
            );
            match a["restarts"].as_u64() {
                Some(n) if n > 0 => line.push_str(&format!("  restarts {n}")),
                _ => {}
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// The node with `id` in a status tree.
fn find<'a>(node: &'a Value, id: &str) -> Option<&'a Value> {
    if node["id"] == id {
        return Some(node);
    }
    node["children"]
        .as_array()?
        .iter()
        .find_map(|c| find(c, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_gets_its_tree_state_and_aligned_columns() {
        let report = json!({
            "agents": [
                { "id": "main", "provider": "echo", "model": "echo", "realModel": false },
                { "id": "writer", "provider": "openai", "model": "gpt-4o", "realModel": true },
                { "id": "gone", "provider": "anthropic", "model": "claude", "realModel": true },
            ],
            "tree": { "id": "root", "children": [ { "id": "agents", "children": [
                { "id": "agent:main", "state": "running", "restarts": 0 },
                { "id": "agent:writer", "state": "restarting", "restarts": 2 },
            ] } ] },
        });
        let agents = agents_of(&report);
        assert_eq!(agents[0]["state"], "running");
        assert_eq!(agents[1]["restarts"], 2);
        assert_eq!(agents[2]["state"], "absent");
        assert_eq!(
            lines(&agents),
            [
                "main    echo       echo    running",
                "writer  openai     gpt-4o  restarting  restarts 2",
                "gone    anthropic  claude  absent",
            ]
        );
    }
}
