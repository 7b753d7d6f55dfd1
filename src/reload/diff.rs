//! What changed between two config files, by the part of the tree it concerns: agents by
//! id, channel accounts by name, the cron job set, hooks, the log level; any other changed
//! key takes effect only in a new process and is listed as such. Pure, on TOML tables.

use toml::{Table, Value};

/// Ids added, removed and changed in a keyed list (`[[agents]]` by `id`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyed {
    /// New ids.
    pub added: Vec<String>,
    /// Ids no longer there.
    pub removed: Vec<String>,
    /// Ids whose entry changed.
    pub changed: Vec<String>,
}

impl Keyed {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The difference between the running config file and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// `[[agents]]` by id (every agent is "changed" when `providers`, `pricing` or
    /// `transcription` change: agents are built from them).
    pub agents: Keyed,
    /// `[[channels.telegram]]` by account.
    pub telegram: Keyed,
    /// `[[channels.discord]]` by account.
    pub discord: Keyed,
    /// `[cron]` changed.
    pub cron: bool,
    /// `[hooks]` changed.
    pub hooks: bool,
    /// `logging.level` changed.
    pub log_level: bool,
    /// `gateway.reload` changed.
    pub reload_mode: bool,
    /// Other changed keys (dotted): they need a restart of the process.
    pub restart_keys: Vec<String>,
}

/// Compares two config files (parsed, not merged with defaults).
pub fn diff(old: &Table, new: &Table) -> ConfigDiff {
    let mut out = ConfigDiff::default();
    let mut all_agents = false;
    for path in changed_paths(old, new, "") {
        match path.as_str() {
            "agents" => {}
            // Compared by the built servers (see `tree_changes`): each restarts alone.
            "mcp" => {}
            "channels.telegram" | "channels.discord" => {}
            "logging.level" => out.log_level = true,
            "gateway.reload" => out.reload_mode = true,
            p if p == "cron" || p.starts_with("cron.") => out.cron = true,
            p if p == "hooks" || p.starts_with("hooks.") => out.hooks = true,
            // Agents are built from these (transcription: every agent's client).
            p if p == "pricing"
                || p == "providers"
                || p.starts_with("providers.")
                || p == "transcription"
                || p.starts_with("transcription.") =>
            {
                all_agents = true
            }
            _ => out.restart_keys.push(path),
        }
    }
    out.agents = keyed(list(old, &["agents"]), list(new, &["agents"]), "id", "");
    if all_agents {
        for (id, _) in entries(list(new, &["agents"]), "id", "") {
            if !out.agents.added.contains(&id) && !out.agents.changed.contains(&id) {
                out.agents.changed.push(id);
            }
        }
    }
    out.telegram = keyed(
        list(old, &["channels", "telegram"]),
        list(new, &["channels", "telegram"]),
        "account",
        "main",
    );
    out.discord = keyed(
        list(old, &["channels", "discord"]),
        list(new, &["channels", "discord"]),
        "account",
        "main",
    );
    out
}

/// Dotted paths whose values differ; tables are compared key by key, anything else whole.
fn changed_paths(old: &Table, new: &Table, prefix: &str) -> Vec<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (old.get(key), new.get(key)) {
            (Some(Value::Table(a)), Some(Value::Table(b))) => {
                out.extend(changed_paths(a, b, &path))
            }
            (Some(Value::Table(t)), None) | (None, Some(Value::Table(t))) => {
                out.extend(changed_paths(t, &Table::new(), &path))
            }
            (a, b) if a != b => out.push(path),
            _ => {}
        }
    }
    out
}

fn list<'a>(table: &'a Table, path: &[&str]) -> &'a [Value] {
    let mut current = table;
    for (i, key) in path.iter().enumerate() {
        match current.get(*key) {
            Some(Value::Table(t)) if i + 1 < path.len() => current = t,
            Some(Value::Array(items)) if i + 1 == path.len() => return items,
            _ => return &[],
        }
    }
    &[]
}

fn entries<'a>(items: &'a [Value], key: &str, default: &str) -> Vec<(String, &'a Value)> {
    items
        .iter()
        .map(|item| {
            let id = item
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string();
            (id, item)
        })
        .collect()
}

fn keyed(old: &[Value], new: &[Value], key: &str, default: &str) -> Keyed {
    let old = entries(old, key, default);
    let new = entries(new, key, default);
    let mut out = Keyed::default();
    for (id, value) in &new {
        match old.iter().find(|(o, _)| o == id) {
            None => out.added.push(id.clone()),
            Some((_, before)) if before != value => out.changed.push(id.clone()),
            Some(_) => {}
        }
    }
    for (id, _) in &old {
        if !new.iter().any(|(n, _)| n == id) {
            out.removed.push(id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Table {
        text.parse().expect("toml")
    }

    const BASE: &str = r#"
[gateway]
port = 1000
[logging]
level = "info"
[[agents]]
id = "main"
provider = "echo"
model = "echo"
[[channels.telegram]]
account = "bot"
allow_from = ["1"]
"#;

    #[test]
    fn identical_files_differ_in_nothing() {
        assert_eq!(diff(&t(BASE), &t(BASE)), ConfigDiff::default());
    }

    #[test]
    fn agents_and_accounts_are_diffed_by_id_and_the_rest_classified() {
        let new = BASE
            .replace("port = 1000", "port = 2000")
            .replace("level = \"info\"", "level = \"debug\"")
            + "[[agents]]\nid = \"two\"\nprovider = \"echo\"\nmodel = \"echo\"\n[[cron.jobs]]\nid = \"j\"\n";
        let new = new.replace("allow_from = [\"1\"]", "allow_from = [\"1\", \"2\"]");
        let d = diff(&t(BASE), &t(&new));
        assert_eq!(d.agents.added, ["two"]);
        assert!(d.agents.changed.is_empty() && d.agents.removed.is_empty());
        assert_eq!(d.telegram.changed, ["bot"]);
        assert!(d.cron && d.log_level && !d.hooks);
        assert_eq!(d.restart_keys, ["gateway.port"]);
    }

    #[test]
    fn provider_changes_touch_every_agent_and_removal_is_seen() {
        let new = "[providers.openai]\nbase_url = \"http://x\"\n[[agents]]\nid = \"b\"\nprovider = \"echo\"\nmodel = \"echo\"\n";
        let d = diff(&t(BASE), &t(new));
        assert_eq!(d.agents.added, ["b"]);
        assert_eq!(d.agents.removed, ["main"]);
        assert_eq!(d.telegram.removed, ["bot"]);
        assert_eq!(d.restart_keys, ["gateway.port"]);
        let with_price = format!("{BASE}[[pricing]]\nmodel = \"m\"\n");
        assert_eq!(diff(&t(BASE), &t(&with_price)).agents.changed, ["main"]);
        let transcribing = format!("{BASE}[transcription]\nenabled = true\n");
        let d = diff(&t(BASE), &t(&transcribing));
        assert_eq!(
            d.agents.changed,
            ["main"],
            "agents hold the transcription client"
        );
        assert!(d.restart_keys.is_empty(), "{:?}", d.restart_keys);
    }
}
