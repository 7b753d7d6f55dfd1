//! Agents from the config file and from `agents/<id>/` in the state dir (`agent.toml`,
//! `persona.md`, `memory/`), validated and turned into the actors' [`AgentSettings`].

use std::collections::HashMap;
use std::path::Path;

use troupe_actors::agent::AgentSettings;
use troupe_actors::attachments::transcribe::{Transcriber, TranscriptionSettings};
use troupe_actors::echo::EchoSettings;
use troupe_actors::gateway::{AgentSummary, Secret};
use troupe_actors::provider::{Endpoint, Provider, http_client};
use troupe_actors::tools::BUILTIN;

use crate::config::{AgentDef, Config, ConfigError, ConfigErrors, EndpointConfig};
use crate::paths::StatePaths;

/// Known provider names.
pub const PROVIDERS: &[&str] = &["echo", "openai", "anthropic"];

/// Problems with one definition, keyed by field.
pub fn check_def(def: &AgentDef) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut bad = |key: &str, why: String| {
        errors.push(ConfigError {
            key: key.into(),
            why,
        })
    };
    if !PROVIDERS.contains(&def.provider.as_str()) {
        bad(
            "provider",
            format!(
                "{:?} is not a known provider (known: {})",
                def.provider,
                PROVIDERS.join(", ")
            ),
        );
    }
    if def.model.trim().is_empty() {
        bad("model", "must not be empty".into());
    }
    for tool in &def.tools {
        if !BUILTIN.contains(&tool.as_str()) {
            bad(
                "tools",
                format!(
                    "{tool:?} is not a built-in tool (known: {})",
                    BUILTIN.join(", ")
                ),
            );
        }
    }
    if def.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        bad("temperature", "must be between 0 and 2".into());
    }
    if def.max_iterations.is_some_and(|n| !(1..=64).contains(&n)) {
        bad("max_iterations", "must be between 1 and 64".into());
    }
    if let Some(Err((key, why))) = def
        .heartbeat
        .as_ref()
        .map(|h| crate::config::cron::heartbeat(&def.id, h))
    {
        bad(&key, why);
    }
    errors
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads every `agents/<id>/agent.toml`; errors name the file and field.
pub fn discover(dir: &Path) -> Result<Vec<AgentDef>, ConfigErrors> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    let mut names: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("agent.toml").is_file())
        .collect();
    names.sort();
    for path in names {
        let id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = format!("agents/{id}/agent.toml");
        if !valid_id(&id) {
            errors.push(ConfigError {
                key: file.clone(),
                why: "the directory name must be letters, digits, - or _".into(),
            });
            continue;
        }
        let text = match std::fs::read_to_string(path.join("agent.toml")) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError {
                    key: file,
                    why: e.to_string(),
                });
                continue;
            }
        };
        match toml::from_str::<AgentDef>(&text) {
            Ok(mut def) => {
                if !def.id.is_empty() && def.id != id {
                    errors.push(ConfigError {
                        key: format!("{file}: id"),
                        why: format!("{:?} differs from the directory name {id:?}", def.id),
                    });
                }
                def.id = id;
                errors.extend(check_def(&def).into_iter().map(|e| ConfigError {
                    key: format!("{file}: {}", e.key),
                    why: e.why,
                }));
                defs.push(def);
            }
            Err(e) => errors.push(ConfigError {
                key: file,
                why: e.message().to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(defs)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The API key of an endpoint: its environment variable, else its key file (never logged).
pub fn api_key(endpoint: &EndpointConfig, env: &HashMap<String, String>) -> Option<Secret> {
    let from_env = env
        .get(&endpoint.api_key_env)
        .filter(|k| !k.trim().is_empty())
        .cloned();
    let from_file = || {
        (!endpoint.api_key_file.is_empty())
            .then(|| std::fs::read_to_string(&endpoint.api_key_file).ok())
            .flatten()
            .map(|k| k.trim().to_string())
    };
    from_env
        .or_else(from_file)
        .filter(|k| !k.is_empty())
        .map(Secret)
}

/// Every agent definition: the config's, with those on disk replacing or adding to them.
pub fn all_defs(config: &Config, paths: &StatePaths) -> Result<Vec<AgentDef>, ConfigErrors> {
    let mut defs: Vec<AgentDef> = config.agent_defs.clone();
    for disk in discover(&paths.home.join("agents"))? {
        match defs.iter_mut().find(|d| d.id == disk.id) {
            Some(existing) => *existing = disk,
            None => defs.push(disk),
        }
    }
    Ok(defs)
}

/// Heartbeats of the agents that have one (validated already by [`check_def`]).
pub fn heartbeats(
    defs: &[AgentDef],
) -> Vec<troupe_actors::scheduler::heartbeat::HeartbeatSettings> {
    defs.iter()
        .filter_map(|d| {
            let h = d.heartbeat.as_ref()?;
            crate::config::cron::heartbeat(&d.id, h).ok()
        })
        .collect()
}

/// The config's agents, overridden by same-id agents on disk, as actor settings.
pub fn build(
    config: &Config,
    paths: &StatePaths,
    env: &HashMap<String, String>,
) -> Result<Vec<AgentSettings>, ConfigErrors> {
    let agents_dir = paths.home.join("agents");
    let defs = all_defs(config, paths)?;
    let client = http_client(&config.http_policy).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            key: "providers.http".into(),
            why: e.to_string(),
        }])
    })?;
    let all: Vec<String> = defs.iter().map(|d| d.id.clone()).collect();
    let transcription = transcriber(config, env)?;
    let mut out = Vec::new();
    for def in defs {
        let dir = agents_dir.join(&def.id);
        let persona = std::fs::read_to_string(dir.join("persona.md"))
            .ok()
            .filter(|p| !p.trim().is_empty())
            .or(def.persona.clone());
        let endpoint = |cfg: &EndpointConfig| Endpoint {
            base_url: cfg.base_url.clone(),
            api_key: api_key(cfg, env),
            policy: config.http_policy,
        };
        let provider = match def.provider.as_str() {
            "openai" => Provider::OpenAi(endpoint(&config.openai), client.clone()),
            "anthropic" => Provider::Anthropic(endpoint(&config.anthropic), client.clone()),
            _ => Provider::Echo(EchoSettings {
                delta_delay: config.echo_delta_delay,
            }),
        };
        let price = config
            .pricing
            .iter()
            .find(|(m, _, _)| *m == def.model)
            .map(|(_, i, o)| (*i, *o));
        out.push(AgentSettings {
            summary: AgentSummary {
                id: def.id.clone(),
                provider: def.provider.clone(),
                model: def.model.clone(),
                real_model: def.provider != "echo",
            },
            provider,
            persona,
            temperature: def.temperature,
            max_tokens: def.max_tokens,
            tools: def.tools.clone(),
            max_iterations: def.max_iterations.unwrap_or(8),
            history_limit: config.history_limit,
            memory_dir: Some(dir.join("memory")),
            state_dir: Some(paths.home.clone()),
            price,
            all_agents: all.iter().map(|id| id.as_str().into()).collect(),
            transcription: transcription.clone(),
        });
    }
    Ok(out)
}

/// The audio transcription client every agent shares (`None` when `[transcription]` is
/// off); its key is found like a provider's.
fn transcriber(
    config: &Config,
    env: &HashMap<String, String>,
) -> Result<Option<std::sync::Arc<Transcriber>>, ConfigErrors> {
    let Some(t) = &config.transcription else {
        return Ok(None);
    };
    let settings = TranscriptionSettings {
        url: t.url(),
        model: t.model.clone(),
        api_key: api_key(&t.endpoint, env),
        max_bytes: t.max_bytes,
        timeout: t.timeout,
    };
    Transcriber::new(settings)
        .map(|t| Some(std::sync::Arc::new(t)))
        .map_err(|why| {
            ConfigErrors(vec![ConfigError {
                key: "transcription".into(),
                why,
            }])
        })
}

/// Whether the agent's provider has the key it needs (for `doctor`).
pub fn key_status(
    def_provider: &str,
    config: &Config,
    env: &HashMap<String, String>,
) -> Option<String> {
    let endpoint = match def_provider {
        "openai" => &config.openai,
        "anthropic" => &config.anthropic,
        _ => return None,
    };
    Some(match api_key(endpoint, env) {
        Some(_) => format!(
            "API key found ({})",
            if env.contains_key(&endpoint.api_key_env) {
                endpoint.api_key_env.as_str()
            } else {
                "api_key_file"
            }
        ),
        None => format!(
            "no API key: set {} or providers.{def_provider}.api_key_file (fine for a local server)",
            endpoint.api_key_env
        ),
    })
}
