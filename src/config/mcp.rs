//! `[[mcp]]`: MCP tool servers, parsed from the merged config and validated into
//! [`McpServerSettings`]; every error names its key (`mcp[0].url`). Secrets (`env` and
//! `headers` values, `env_from` / `headers_from` variables, the bearer token) are resolved
//! here and never logged; `config.get` redacts them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_actors::gateway::Secret;
use troupe_actors::mcp::naming::valid_server_name;
use troupe_actors::mcp::{McpServerSettings, McpTransport};

/// Default `call_timeout_secs`.
pub const DEFAULT_CALL_TIMEOUT_SECS: u64 = 60;
/// The largest `call_timeout_secs`: one hour.
pub const MAX_CALL_TIMEOUT_SECS: u64 = 3600;

/// One `[[mcp]]` table as written (also the body of `POST /api/mcps`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    /// Server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Program to spawn (stdio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment of the process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment of the process copied from the gateway's: `{VAR = "GATEWAY_VAR"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_from: BTreeMap<String, String>,
    /// Working directory of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Streamable HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra HTTP headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// HTTP headers whose values come from the gateway's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_from: BTreeMap<String, String>,
    /// Environment variable holding a bearer token (HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// File holding a bearer token (HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
    /// Whether it runs (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Agents that may use it (empty: every agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// How long one tool call may take (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_secs: Option<u64>,
}

/// Validates the servers, reporting each problem through `bad(key, why)`. `agent_ids`
/// are the agents configured in the file (agents on disk are checked at start).
pub(super) fn servers(
    raw: Vec<RawMcp>,
    env: &HashMap<String, String>,
    bad: &mut impl FnMut(&str, String),
) -> Vec<McpServerSettings> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, server) in raw.into_iter().enumerate() {
        if let Some(s) = one(i, server, env, &mut seen, bad) {
            out.push(s);
        }
    }
    out
}

fn one(
    i: usize,
    raw: RawMcp,
    env: &HashMap<String, String>,
    seen: &mut HashSet<String>,
    bad: &mut impl FnMut(&str, String),
) -> Option<McpServerSettings> {
    let key = |field: &str| format!("mcp[{i}].{field}");
    let mut ok = true;
    let name = raw.name.clone().unwrap_or_default();
    if !valid_server_name(&name) {
        bad(
            &key("name"),
            format!(
                "{name:?} must be 1 to 32 of a-z A-Z 0-9 _ -, without \"__\" and not ending in _ (it prefixes the tool names)"
            ),
        );
        ok = false;
    } else if !seen.insert(name.clone()) {
        bad(
            &key("name"),
            format!("{name:?} is used by another [[mcp]] server"),
        );
        ok = false;
    }
    let timeout = raw.call_timeout_secs.unwrap_or(DEFAULT_CALL_TIMEOUT_SECS);
    if !(1..=MAX_CALL_TIMEOUT_SECS).contains(&timeout) {
        bad(
            &key("call_timeout_secs"),
            format!("{timeout} must be between 1 and {MAX_CALL_TIMEOUT_SECS}"),
        );
        ok = false;
    }
    let transport = match (&raw.command, &raw.url) {
        (Some(command), None) => {
            let mut vars: Vec<(String, Secret)> = raw
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Secret(v.clone())))
                .collect();
            for (var, source) in &raw.env_from {
                match from_env(env, &key(&format!("env_from.{var}")), source, bad) {
                    Some(value) => vars.push((var.clone(), value)),
                    None => ok = false,
                }
            }
            let http_only = [
                ("headers", !raw.headers.is_empty()),
                ("headers_from", !raw.headers_from.is_empty()),
                ("bearer_token_env", raw.bearer_token_env.is_some()),
                ("bearer_token_file", raw.bearer_token_file.is_some()),
            ];
            for (field, set) in http_only {
                if set {
                    bad(&key(field), "only for an HTTP server (url)".into());
                    ok = false;
                }
            }
            if command.trim().is_empty() {
                bad(&key("command"), "must not be empty".into());
                ok = false;
            }
            McpTransport::Stdio {
                command: command.clone(),
                args: raw.args.clone(),
                env: vars,
                cwd: raw.cwd.as_ref().map(PathBuf::from),
            }
        }
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || reqwest_like_parse(url).is_none()
            {
                bad(&key("url"), format!("{url:?} is not an http(s) URL"));
                ok = false;
            }
            let stdio_only = [
                ("args", !raw.args.is_empty()),
                ("env", !raw.env.is_empty()),
                ("env_from", !raw.env_from.is_empty()),
                ("cwd", raw.cwd.is_some()),
            ];
            for (field, set) in stdio_only {
                if set {
                    bad(&key(field), "only for a stdio server (command)".into());
                    ok = false;
                }
            }
            let mut headers: Vec<(String, Secret)> = raw
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Secret(v.clone())))
                .collect();
            for (header, source) in &raw.headers_from {
                match from_env(env, &key(&format!("headers_from.{header}")), source, bad) {
                    Some(value) => headers.push((header.clone(), value)),
                    None => ok = false,
                }
            }
            let bearer_token = match (&raw.bearer_token_env, &raw.bearer_token_file) {
                (Some(_), Some(_)) => {
                    bad(
                        &key("bearer_token_env"),
                        "set bearer_token_env or bearer_token_file, not both".into(),
                    );
                    ok = false;
                    None
                }
                (Some(var), None) => {
                    let token = from_env(env, &key("bearer_token_env"), var, bad);
                    ok &= token.is_some();
                    token
                }
                (None, Some(file)) => match std::fs::read_to_string(file) {
                    Ok(token) if !token.trim().is_empty() => Some(Secret(token.trim().into())),
                    Ok(_) => {
                        bad(&key("bearer_token_file"), format!("{file:?} is empty"));
                        ok = false;
                        None
                    }
                    Err(e) => {
                        bad(
                            &key("bearer_token_file"),
                            format!("cannot read {file:?}: {e}"),
                        );
                        ok = false;
                        None
                    }
                },
                (None, None) => None,
            };
            McpTransport::Http {
                url: url.clone(),
                headers,
                bearer_token,
            }
        }
        (Some(_), Some(_)) => {
            bad(
                &key("command"),
                "set either command (stdio) or url (streamable HTTP), not both".into(),
            );
            return None;
        }
        (None, None) => {
            bad(
                &key("command"),
                "set command (a stdio server) or url (a streamable HTTP server)".into(),
            );
            return None;
        }
    };
    ok.then(|| McpServerSettings {
        name,
        transport,
        enabled: raw.enabled.unwrap_or(true),
        agents: raw.agents,
        call_timeout: Duration::from_secs(timeout),
    })
}

/// The value of the gateway's environment variable `var`, or an error on `key`.
fn from_env(
    env: &HashMap<String, String>,
    key: &str,
    var: &str,
    bad: &mut impl FnMut(&str, String),
) -> Option<Secret> {
    match env.get(var) {
        Some(value) => Some(Secret(value.clone())),
        None => {
            bad(key, format!("environment variable {var:?} is not set"));
            None
        }
    }
}

/// The host part of an http(s) URL, if it has one.
fn reqwest_like_parse(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then_some(host)
}

/// Checks that every server's `agents` name configured agents.
pub fn check_agents(servers: &[McpServerSettings], agents: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        for agent in &server.agents {
            if !agents.contains(agent) {
                problems.push(format!("mcp[{i}].agents: no agent {agent:?} is configured"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use troupe_actors::mcp::McpTransport;

    fn keys(toml: &str) -> Vec<String> {
        Config::from_toml_str(toml)
            .expect_err("invalid")
            .0
            .into_iter()
            .map(|e| e.key)
            .collect()
    }

    #[test]
    fn a_stdio_server_loads_with_defaults_and_env_names_keep_their_case() {
        let config = Config::from_toml_str(
            "[[mcp]]\nname = \"calc\"\ncommand = \"calc-server\"\nargs = [\"-v\"]\nenv = { API_KEY = \"k\" }\n",
        )
        .expect("valid");
        let server = &config.mcp[0];
        assert!(server.enabled && server.agents.is_empty());
        assert_eq!(server.call_timeout.as_secs(), 60);
        let McpTransport::Stdio { env, args, .. } = &server.transport else {
            panic!("stdio expected");
        };
        assert_eq!(args, &["-v"]);
        assert_eq!(env[0].0, "API_KEY");
        assert!(
            !format!("{server:?}").contains("\"k\""),
            "secrets hidden in Debug"
        );
    }

    #[test]
    fn bad_servers_name_their_keys() {
        assert_eq!(
            keys("[[mcp]]\nname = \"a\"\ncommand = \"x\"\nurl = \"http://h/mcp\"\n"),
            ["mcp[0].command"]
        );
        assert_eq!(keys("[[mcp]]\nname = \"a\"\n"), ["mcp[0].command"]);
        assert_eq!(
            keys("[[mcp]]\nname = \"a__b\"\ncommand = \"x\"\n"),
            ["mcp[0].name"]
        );
        assert_eq!(
            keys(
                "[[mcp]]\nname = \"a\"\ncommand = \"x\"\n[[mcp]]\nname = \"a\"\ncommand = \"y\"\n"
            ),
            ["mcp[1].name"]
        );
        assert_eq!(
            keys("[[mcp]]\nname = \"a\"\nurl = \"ftp://h\"\nargs = [\"x\"]\n"),
            ["mcp[0].url", "mcp[0].args"]
        );
        assert_eq!(
            keys("[[mcp]]\nname = \"a\"\ncommand = \"x\"\ncall_timeout_secs = 0\n"),
            ["mcp[0].call_timeout_secs"]
        );
        assert_eq!(
            keys(
                "[[mcp]]\nname = \"a\"\ncommand = \"x\"\nenv_from = { T = \"TROUPE_TEST_UNSET_VAR\" }\n"
            ),
            ["mcp[0].env_from.T"]
        );
        assert_eq!(
            keys("[[mcp]]\nname = \"a\"\ncommand = \"x\"\nenabled = \"yes\"\n"),
            ["mcp[0].enabled"]
        );
        assert!(
            Config::from_toml_str("[[mcp]]\nname = \"a\"\ncommand = \"x\"\ncolour = 1\n").is_err()
        );
    }
}
