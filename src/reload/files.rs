//! The config file as the reload sees it: its bytes and their hash (a missing file reads
//! as empty), secrets redacted for `config.get`, and the private temporary file a
//! `config.patch` is validated in before it is renamed over the original.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use toml::Table;

/// What redacted values are replaced with.
pub const REDACTED: &str = "<redacted>";

/// The file's content and its hash.
pub struct FileState {
    /// SHA-256 of the content, hex.
    pub hash: String,
    bytes: Vec<u8>,
}

impl FileState {
    /// Reads the file; a missing or unreadable one reads as empty.
    pub fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_default();
        Self {
            hash: hash_of(&bytes),
            bytes,
        }
    }

    /// The content as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The content parsed as a TOML table.
    pub fn table(&self) -> Result<Table, String> {
        let text = std::str::from_utf8(&self.bytes)
            .map_err(|e| format!("the config file is not UTF-8: {e}"))?;
        text.parse::<Table>()
            .map_err(|e| format!("the config file is not valid TOML: {e}"))
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn hash_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a key holds a secret value (`token`, `password`, `api_key`, ...), as opposed to
/// where one is found (`token_env`, `api_key_file`).
pub(crate) fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_env") || key.ends_with("_file") {
        return false;
    }
    ["token", "password", "secret", "api_key", "apikey"]
        .iter()
        .any(|s| key == *s || key.ends_with(&format!("_{s}")))
}

/// Whether `key` under `path` is a table whose every value is a secret (an MCP server's
/// `env` and `headers`).
pub(crate) fn holds_secrets(path: &str, key: &str) -> bool {
    path.starts_with("mcp[") && (key == "env" || key == "headers")
}

/// The table as JSON with every secret replaced by [`REDACTED`], and the keys redacted.
pub fn redacted(table: &Table) -> (Value, Vec<String>) {
    let mut keys = Vec::new();
    let value = redact(&toml::Value::Table(table.clone()), "", &mut keys);
    (value, keys)
}

fn redact(value: &toml::Value, path: &str, keys: &mut Vec<String>) -> Value {
    match value {
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| {
                    let at = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if is_secret(k) && v.is_str() {
                        keys.push(at);
                        (k.clone(), Value::String(REDACTED.into()))
                    } else if let (true, Some(values)) = (holds_secrets(path, k), v.as_table()) {
                        // `[[mcp]] env` / `headers`: every value may be a secret.
                        let hidden = values
                            .keys()
                            .map(|name| {
                                keys.push(format!("{at}.{name}"));
                                (name.clone(), Value::String(REDACTED.into()))
                            })
                            .collect();
                        (k.clone(), Value::Object(hidden))
                    } else {
                        (k.clone(), redact(v, &at, keys))
                    }
                })
                .collect(),
        ),
        toml::Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| redact(v, &format!("{path}[{i}]"), keys))
                .collect(),
        ),
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    }
}

/// Writes `raw` to a private (0600) temporary file beside `file`, for validation before
/// it is renamed over `file` (same directory, so the rename is atomic).
pub fn write_temp(file: &Path, raw: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.toml".into());
    let temp = file.with_file_name(format!(".{name}.patch-{}", std::process::id()));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
    out.write_all(raw.as_bytes())
        .and_then(|_| out.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
    Ok(temp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_their_sources_kept() {
        let table: Table = r#"
[gateway.auth]
token = "abcdefabcdefabcdef"
[hooks]
token = "hooktokenhooktoken"
[providers.openai]
api_key_env = "OPENAI_API_KEY"
[[channels.telegram]]
token_file = "/run/bot"
bot_token = "123:abc"
"#
        .parse()
        .expect("toml");
        let (json, keys) = redacted(&table);
        assert_eq!(
            keys,
            [
                "channels.telegram[0].bot_token",
                "gateway.auth.token",
                "hooks.token"
            ]
        );
        assert_eq!(json["gateway"]["auth"]["token"], REDACTED);
        assert_eq!(json["providers"]["openai"]["api_key_env"], "OPENAI_API_KEY");
        assert_eq!(json["channels"]["telegram"][0]["token_file"], "/run/bot");
        assert!(!json.to_string().contains("abcdef"));
    }

    #[test]
    fn mcp_env_and_header_values_are_redacted() {
        let table: Table = r#"
[[mcp]]
name = "gh"
command = "gh-mcp"
env = { GITHUB_TOKEN = "ghp_secret", MODE = "x" }
env_from = { OTHER = "OTHER_VAR" }
[[mcp]]
name = "web"
url = "https://h/mcp"
headers = { "X-Api-Key" = "hdr_secret" }
"#
        .parse()
        .expect("toml");
        let (json, keys) = redacted(&table);
        let text = json.to_string();
        assert!(
            !text.contains("ghp_secret") && !text.contains("hdr_secret"),
            "{text}"
        );
        assert_eq!(json["mcp"][0]["env"]["MODE"], REDACTED);
        assert_eq!(json["mcp"][0]["env_from"]["OTHER"], "OTHER_VAR");
        assert!(
            keys.contains(&"mcp[1].headers.X-Api-Key".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn the_hash_follows_the_content() {
        assert_eq!(hash_of(b"a"), hash_of(b"a"));
        assert_ne!(hash_of(b"a"), hash_of(b"b"));
        assert_eq!(hash_of(b"").len(), 64);
    }
}
