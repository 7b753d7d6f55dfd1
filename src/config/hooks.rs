//! `[hooks]` (DESIGN §9): the webhook token (hooks are off until it is set) and
//! `[[hooks.mappings]]` (`POST /hooks/<name>` → a turn whose message is a template filled
//! from the JSON body). Every error names its key.

use std::collections::HashSet;

use serde::Deserialize;
use troupe_actors::gateway::Secret;

/// Shortest webhook token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// The `[hooks]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    token: Option<String>,
    #[serde(default)]
    mappings: Vec<RawMapping>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    name: String,
    agent: Option<String>,
    message_template: String,
    session_key: Option<String>,
}

/// A `POST /hooks/<name>` mapping.
#[derive(Debug, Clone)]
pub struct HookMapping {
    /// The path segment.
    pub name: String,
    /// The agent (`None`: the default agent).
    pub agent: Option<String>,
    /// The message, with `{{field}}` / `{{a.b}}` filled from the JSON body.
    pub message_template: String,
    /// Session key (default `hook:<name>`).
    pub session_key: Option<String>,
}

/// Webhook settings.
#[derive(Debug, Clone, Default)]
pub struct HooksConfig {
    /// The token (`None`: hooks are off).
    pub token: Option<Secret>,
    /// Named mappings.
    pub mappings: Vec<HookMapping>,
}

/// The webhook settings the routes read, swapped by a config reload.
#[derive(Debug, Default)]
pub struct LiveHooks(std::sync::RwLock<std::sync::Arc<HooksConfig>>);

impl LiveHooks {
    /// Settings at start.
    pub fn new(config: HooksConfig) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(config)))
    }

    /// The settings now in force.
    pub fn current(&self) -> std::sync::Arc<HooksConfig> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Installs new settings (the next request sees them).
    pub fn set(&self, config: HooksConfig) {
        let config = std::sync::Arc::new(config);
        match self.0.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// Validates `[hooks]`, reporting each problem through `bad(key, why)`.
pub(super) fn hooks(raw: RawHooks, bad: &mut impl FnMut(&str, String)) -> HooksConfig {
    let token = match raw.token.map(|t| t.trim().to_string()) {
        None => None,
        Some(t) if t.is_empty() => None,
        Some(t) if t.len() < MIN_TOKEN_LEN => {
            bad(
                "hooks.token",
                format!("is {} characters; use at least {MIN_TOKEN_LEN}", t.len()),
            );
            None
        }
        Some(t) => Some(Secret(t)),
    };
    let mut seen = HashSet::new();
    let mut mappings = Vec::new();
    for (i, m) in raw.mappings.into_iter().enumerate() {
        let key = |field: &str| format!("hooks.mappings[{i}].{field}");
        let valid = !m.name.is_empty()
            && m.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid || m.name == "agent" || m.name == "wake" {
            bad(
                &key("name"),
                format!(
                    "{:?} must be letters, digits, '-' or '_', and not agent or wake",
                    m.name
                ),
            );
        } else if !seen.insert(m.name.clone()) {
            bad(&key("name"), format!("{:?} is configured twice", m.name));
        }
        if m.message_template.trim().is_empty() {
            bad(&key("message_template"), "must not be empty".into());
        }
        mappings.push(HookMapping {
            name: m.name,
            agent: m.agent,
            message_template: m.message_template,
            session_key: m.session_key,
        });
    }
    HooksConfig { token, mappings }
}
