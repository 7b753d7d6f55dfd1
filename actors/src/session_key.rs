//! Session keys (DESIGN.md §6): `agent:<agentId>:<rest>` where `<rest>` is any non-empty
//! printable text (`main`, `work`, `telegram:group:42:thread:7`, ...), `cron:<jobId>` and
//! `hook:<id>`. A key without one of those prefixes (`work`) means
//! `agent:<default agent>:work`. Keys are data, never file paths.

/// The longest session key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// A validated session key in its full form, with the agent that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey {
    /// The full key (`agent:main:work` for a bare `work`).
    pub key: String,
    /// The agent that answers in this session.
    pub agent: String,
}

/// Validates a session key, expands a bare key to `agent:<default>:<key>`, and names the
/// agent that owns it (`cron:` and `hook:` keys belong to the default agent, the first
/// configured).
pub fn resolve<S: AsRef<str>>(key: &str, agents: &[S]) -> Result<ResolvedKey, String> {
    let default = agents.first().map(AsRef::as_ref).unwrap_or("main");
    if key.is_empty() {
        return Err("session key is empty".into());
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!(
            "session key {key:?} contains the control character {c:?}; keys are printable text"
        ));
    }
    let full = match key.split_once(':') {
        Some(("agent", _)) | Some(("cron", _)) | Some(("hook", _)) => key.to_string(),
        _ => format!("agent:{default}:{key}"),
    };
    if full.len() > MAX_KEY_BYTES {
        return Err(format!(
            "session key is {} bytes long; the limit is {MAX_KEY_BYTES}",
            full.len()
        ));
    }
    let agent = match full.split_once(':') {
        Some(("agent", rest)) => {
            let (agent, tail) = rest.split_once(':').unwrap_or((rest, ""));
            if agent.is_empty() {
                return Err(format!(
                    "session key {key:?} names no agent (agent:<agentId>:<rest>)"
                ));
            }
            if tail.is_empty() {
                return Err(format!(
                    "session key {key:?} must have text after agent:<agentId>: (e.g. agent:{agent}:main)"
                ));
            }
            if !agents.iter().any(|a| a.as_ref() == agent) {
                return Err(format!(
                    "session key {key:?} names agent {agent:?}, which is not configured"
                ));
            }
            agent.to_string()
        }
        Some((_, "")) => {
            return Err(format!(
                "session key {key:?} has an empty id after the prefix"
            ));
        }
        _ => default.to_string(),
    };
    Ok(ResolvedKey { key: full, agent })
}

/// Validates a session key and returns the agent that owns it (see [`resolve`]).
pub fn agent_for<S: AsRef<str>>(key: &str, agents: &[S]) -> Result<String, String> {
    resolve(key, agents).map(|r| r.agent)
}

#[cfg(test)]
mod tests {
    use super::{agent_for, resolve};

    fn agents() -> Vec<String> {
        vec!["main".into(), "ops".into()]
    }

    #[test]
    fn open_grammar_keys_are_accepted() {
        for (key, agent) in [
            ("agent:main:main", "main"),
            ("agent:ops:telegram:dm:42", "ops"),
            ("agent:ops:discord:group:7", "ops"),
            ("agent:main:work", "main"),
            ("agent:main:acc-1234", "main"),
            ("agent:main:telegram:group:42:thread:7", "main"),
            ("agent:main:web:ünïcode ok", "main"),
            ("cron:daily", "main"),
            ("hook:github", "main"),
        ] {
            assert_eq!(agent_for(key, &agents()).as_deref(), Ok(agent), "{key}");
        }
    }

    #[test]
    fn a_bare_key_belongs_to_the_default_agent() {
        let r = resolve("work", &agents()).expect("bare key");
        assert_eq!(r.key, "agent:main:work");
        assert_eq!(r.agent, "main");
        assert_eq!(
            resolve("main", &agents()).expect("main").key,
            "agent:main:main"
        );
    }

    #[test]
    fn control_characters_and_oversized_keys_are_refused_with_a_reason() {
        for key in ["agent:main:a\nb", "agent:main:\0", "work\u{1b}[31m", "a\rb"] {
            let err = resolve(key, &agents()).unwrap_err();
            assert!(err.contains("control character"), "{key:?}: {err}");
        }
        let long = format!("agent:main:{}", "x".repeat(300));
        assert!(
            resolve(&long, &agents())
                .unwrap_err()
                .contains("limit is 256")
        );
    }

    #[test]
    fn malformed_keys_and_unknown_agents_are_refused_with_a_reason() {
        assert!(
            agent_for("agent:nobody:main", &agents())
                .unwrap_err()
                .contains("not configured")
        );
        assert!(agent_for("agent:main:", &agents()).is_err());
        assert!(agent_for("agent:main", &agents()).is_err());
        assert!(agent_for("agent::x", &agents()).is_err());
        assert!(agent_for("cron:", &agents()).is_err());
        assert!(agent_for("", &agents()).is_err());
    }
}
