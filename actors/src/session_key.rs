//! Session keys (DESIGN.md §6): `agent:<agentId>:main`, `agent:<agentId>:<channel>:dm:<peer>`,
//! `agent:<agentId>:<channel>:group:<id>`, `cron:<jobId>`, `hook:<id>`.

/// Validates a session key and returns the agent that owns it (`cron:` and `hook:` keys
/// belong to the default agent, the first configured).
pub fn agent_for(key: &str, agents: &[String]) -> Result<String, String> {
    let default = agents.first().cloned().unwrap_or_else(|| "main".into());
    if key.len() > 256 {
        return Err("session key is longer than 256 characters".into());
    }
    let parts: Vec<&str> = key.split(':').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("session key {key:?} has an empty segment"));
    }
    match parts.as_slice() {
        ["agent", agent, rest @ ..] => {
            if !agents.iter().any(|a| a == agent) {
                return Err(format!(
                    "session key {key:?} names agent {agent:?}, which is not configured"
                ));
            }
            match rest {
                ["main"] | [_, "dm", _] | [_, "group", _] => Ok(agent.to_string()),
                _ => Err(format!(
                    "session key {key:?} must be agent:<agentId>:main, agent:<agentId>:<channel>:dm:<peer> or agent:<agentId>:<channel>:group:<id>"
                )),
            }
        }
        ["cron", _] | ["hook", _] => Ok(default),
        _ => Err(format!(
            "session key {key:?} must start with agent:<agentId>:, cron: or hook:"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::agent_for;

    fn agents() -> Vec<String> {
        vec!["main".into(), "ops".into()]
    }

    #[test]
    fn documented_forms_are_accepted() {
        assert_eq!(
            agent_for("agent:main:main", &agents()).as_deref(),
            Ok("main")
        );
        assert_eq!(
            agent_for("agent:ops:telegram:dm:42", &agents()).as_deref(),
            Ok("ops")
        );
        assert_eq!(
            agent_for("agent:ops:discord:group:7", &agents()).as_deref(),
            Ok("ops")
        );
        assert_eq!(agent_for("cron:daily", &agents()).as_deref(), Ok("main"));
        assert_eq!(agent_for("hook:github", &agents()).as_deref(), Ok("main"));
    }

    #[test]
    fn malformed_keys_and_unknown_agents_are_refused_with_a_reason() {
        assert!(
            agent_for("agent:nobody:main", &agents())
                .unwrap_err()
                .contains("not configured")
        );
        assert!(
            agent_for("agent:main:", &agents())
                .unwrap_err()
                .contains("empty")
        );
        assert!(agent_for("agent:main:other", &agents()).is_err());
        assert!(agent_for("whatever", &agents()).is_err());
    }
}
