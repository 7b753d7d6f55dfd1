//! The config file as text with its secrets hidden, for an editor (`config.get`'s
//! `rawRedacted`), and the way back: a `config.patch` whose text still holds the
//! `"<redacted>"` placeholder gets the secret the file has at that same place. Both work on
//! the TOML document (`toml_edit`), so comments and layout are kept; only values change.
//! A whole-line comment that assigns a secret (`# token = "..."`, a key commented out) is
//! hidden too, and put back as it was when the edited text still has it unchanged.

use toml::Table;
use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::files::{REDACTED, holds_secrets, is_secret};

/// `text` with every secret value (as [`super::files::redacted`] finds them) replaced by
/// `"<redacted>"`; comments and layout as written. `None` when the text is not TOML.
pub fn redact_text(text: &str) -> Option<String> {
    let mut doc: DocumentMut = text.parse().ok()?;
    redact_table(doc.as_table_mut(), "");
    Some(map_lines(&doc.to_string(), hidden_comment))
}

/// `text` with each line (without its line ending) replaced where `f` says.
fn map_lines(text: &str, mut f: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive('\n') {
        let content = piece.trim_end_matches(['\n', '\r']);
        match f(content) {
            Some(new) => {
                out.push_str(&new);
                out.push_str(&piece[content.len()..]);
            }
            None => out.push_str(piece),
        }
    }
    out
}

/// A whole-line comment that assigns a secret key (`# token = "abc"`, `#hooks.token=x`)
/// with its value hidden; `None` for any other line.
fn hidden_comment(line: &str) -> Option<String> {
    let trimmed = line.trim_start();
    let body = trimmed.strip_prefix('#')?;
    let (key, value) = body.split_once('=')?;
    let last = key
        .trim()
        .rsplit('.')
        .next()?
        .trim()
        .trim_matches(['"', '\'']);
    let hidden = format!("\"{REDACTED}\"");
    if !is_secret(last) || value.trim().is_empty() || value.trim() == hidden {
        return None;
    }
    let indent = &line[..line.len() - trimmed.len()];
    let key = key.trim_end();
    Some(format!("{indent}#{key} = {hidden}"))
}

/// Puts back the file's secret comments that `raw` still has in their hidden form (each
/// original used once, in order).
fn restore_comments(raw: &str, current_text: &str) -> String {
    let mut originals: Vec<(String, String)> = current_text
        .lines()
        .filter_map(|l| {
            let l = l.trim_end_matches('\r');
            hidden_comment(l).map(|h| (h, l.to_string()))
        })
        .collect();
    if originals.is_empty() {
        return raw.to_string();
    }
    map_lines(raw, |line| {
        let at = originals.iter().position(|(hidden, _)| hidden == line)?;
        Some(originals.remove(at).1)
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn redact_table(table: &mut dyn TableLike, path: &str) {
    for (key, item) in table.iter_mut() {
        let key = key.get().to_string();
        if holds_secrets(path, &key)
            && let Some(values) = item.as_table_like_mut()
        {
            for (_, value) in values.iter_mut() {
                hide(value);
            }
            continue;
        }
        if is_secret(&key) && item.is_str() {
            hide(item);
            continue;
        }
        redact_item(item, &join(path, &key));
    }
}

fn redact_item(item: &mut Item, at: &str) {
    match item {
        Item::Table(t) => redact_table(t, at),
        Item::ArrayOfTables(list) => {
            for (i, t) in list.iter_mut().enumerate() {
                redact_table(t, &format!("{at}[{i}]"));
            }
        }
        Item::Value(v) => redact_value(v, at),
        Item::None => {}
    }
}

fn redact_value(value: &mut Value, at: &str) {
    match value {
        Value::InlineTable(t) => redact_table(t, at),
        Value::Array(list) => {
            for (i, v) in list.iter_mut().enumerate() {
                redact_value(v, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// Replaces a value by the placeholder, keeping the spaces and comment around it.
fn hide(item: &mut Item) {
    match item {
        Item::Value(v) => set_string(v, REDACTED),
        other => *other = Item::Value(REDACTED.into()),
    }
}

fn set_string(value: &mut Value, text: &str) {
    let decor = value.decor().clone();
    *value = text.into();
    *value.decor_mut() = decor;
}

/// `raw` with each `"<redacted>"` string value replaced by the value `current` (the file
/// now, parsed; `current_text` as written) has at the same place (same keys; in a
/// list of tables the entry with the same `id`, `account` or `name`, see [`same_entry`]),
/// and each hidden secret comment still there put back as written. Text without the
/// placeholder, or that is not TOML, comes back unchanged (validation reports the latter).
/// A placeholder where the file has no value is an error naming its keys.
pub fn restore_secrets(raw: &str, current: &Table, current_text: &str) -> Result<String, String> {
    if !raw.contains(REDACTED) {
        return Ok(raw.to_string());
    }
    let raw = restore_comments(raw, current_text);
    let Ok(mut doc) = raw.parse::<DocumentMut>() else {
        return Ok(raw);
    };
    let old = toml::Value::Table(current.clone());
    let mut missing = Vec::new();
    let mut changed = false;
    restore_table(
        doc.as_table_mut(),
        Some(&old),
        "",
        &mut missing,
        &mut changed,
    );
    if !missing.is_empty() {
        return Err(format!(
            "{} {REDACTED} where the config file has no secret to keep: give the value itself",
            missing.join(", ")
        ));
    }
    Ok(if changed {
        doc.to_string()
    } else {
        raw.to_string()
    })
}

fn restore_table(
    table: &mut dyn TableLike,
    old: Option<&toml::Value>,
    path: &str,
    missing: &mut Vec<String>,
    changed: &mut bool,
) {
    for (key, item) in table.iter_mut() {
        let key = key.get().to_string();
        let before = old.and_then(|o| o.as_table()).and_then(|t| t.get(&key));
        let at = join(path, &key);
        match item {
            Item::Table(t) => restore_table(t, before, &at, missing, changed),
            Item::ArrayOfTables(list) => {
                let mut unnamed = 0;
                for (i, t) in list.iter_mut().enumerate() {
                    let was = same_entry(t, before, &mut unnamed);
                    restore_table(t, was, &format!("{at}[{i}]"), missing, changed);
                }
            }
            Item::Value(v) => restore_value(v, before, &at, missing, changed),
            Item::None => {}
        }
    }
}

/// Keys that name an entry of a list: agents' `id`, channel accounts' `account`, MCP
/// servers' `name`.
const ENTRY_NAMES: [&str; 3] = ["id", "account", "name"];

/// The entry of a list of tables (`[[...]]`, or an inline `[{...}, ...]`) in the file that
/// `table` edits: the one with the same `id`, `account` or `name`, so that reordering
/// entries does not hand one entry's secret to another. An entry without any of them is
/// matched by its place among the file's entries without any of them (`unnamed` counts
/// those seen so far), never with a named one: an unnamed account moved past a named one
/// does not take the named one's secret.
fn same_entry<'a>(
    table: &dyn TableLike,
    old: Option<&'a toml::Value>,
    unnamed: &mut usize,
) -> Option<&'a toml::Value> {
    matching_entry(entry_name(|key| table.get(key)?.as_str()), old, unnamed)
}

/// The name of a list entry (`get` reads its keys): its `id`, `account` or `name`, the
/// first that is a string.
pub(crate) fn entry_name<'t>(
    get: impl Fn(&str) -> Option<&'t str>,
) -> Option<(&'static str, &'t str)> {
    ENTRY_NAMES.iter().find_map(|key| Some((*key, get(key)?)))
}

/// The entry of `old` (a list in the file) that an edited entry named `named` (see
/// [`entry_name`]) stands for, by the rules of [`same_entry`]; `unnamed` counts the
/// unnamed edited entries so far.
pub(crate) fn matching_entry<'a>(
    named: Option<(&str, &str)>,
    old: Option<&'a toml::Value>,
    unnamed: &mut usize,
) -> Option<&'a toml::Value> {
    if named.is_none() {
        *unnamed += 1;
    }
    let list = old?.as_array()?;
    match named {
        Some((key, want)) => list
            .iter()
            .find(|entry| entry.get(key).and_then(toml::Value::as_str) == Some(want)),
        None => list
            .iter()
            .filter(|entry| entry_name(|key| entry.get(key)?.as_str()).is_none())
            .nth(unnamed.saturating_sub(1)),
    }
}

/// The value to put where the placeholder is: the file's value at that place (a string,
/// or another value an MCP server's `env` / `headers` hides, such as a number).
fn kept_value(old: &toml::Value) -> Option<Value> {
    match old {
        toml::Value::String(secret) => Some(secret.as_str().into()),
        toml::Value::Table(_) => None,
        other => other.to_string().parse::<Value>().ok(),
    }
}

fn restore_value(
    value: &mut Value,
    old: Option<&toml::Value>,
    at: &str,
    missing: &mut Vec<String>,
    changed: &mut bool,
) {
    match value {
        Value::String(s) if s.value() == REDACTED => match old.and_then(kept_value) {
            Some(kept) => {
                let decor = value.decor().clone();
                *value = kept;
                *value.decor_mut() = decor;
                *changed = true;
            }
            None => missing.push(at.to_string()),
        },
        Value::InlineTable(t) => restore_table(t, old, at, missing, changed),
        Value::Array(list) => {
            let mut unnamed = 0;
            for (i, v) in list.iter_mut().enumerate() {
                let was = match v {
                    Value::InlineTable(t) => same_entry(t, old, &mut unnamed),
                    _ => old.and_then(|o| o.as_array()).and_then(|a| a.get(i)),
                };
                restore_value(v, was, &format!("{at}[{i}]"), missing, changed);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const FILE: &str = r#"# my gateway
# token = "old-hook-token-0000"
[hooks]
token = "hooktokenhooktoken" # rotated in May

[providers.openai]
api_key_env = "OPENAI_API_KEY"

[[mcp]]
name = "gh"
command = "gh-mcp"
env = { GITHUB_TOKEN = "ghp_secret", MODE = "x" }
"#;

    #[test]
    fn secrets_are_hidden_and_comments_kept() {
        let text = redact_text(FILE).unwrap();
        assert!(
            !text.contains("hooktoken") && !text.contains("ghp_secret"),
            "{text}"
        );
        assert!(
            text.contains("token = \"<redacted>\" # rotated in May"),
            "{text}"
        );
        assert!(text.contains("# my gateway"), "{text}");
        assert!(text.contains("api_key_env = \"OPENAI_API_KEY\""), "{text}");
        assert!(text.contains("MODE = \"<redacted>\""), "{text}");
        assert_eq!(redact_text("not = [toml"), None);
    }

    #[test]
    fn the_placeholder_round_trips_to_the_stored_secret() {
        let current: Table = FILE.parse().unwrap();
        let edited = redact_text(FILE)
            .unwrap()
            .replace("api_key_env = \"OPENAI_API_KEY\"", "api_key_env = \"KEY2\"");
        let back = restore_secrets(&edited, &current, FILE).unwrap();
        assert_eq!(back, FILE.replace("\"OPENAI_API_KEY\"", "\"KEY2\""));
        let plain = "[sessions]\nlane_capacity = 4\n";
        assert_eq!(restore_secrets(plain, &current, FILE).unwrap(), plain);
        // A hidden comment the operator changed stays as the operator wrote it.
        let retyped = redact_text(FILE)
            .unwrap()
            .replace("# token = \"<redacted>\"", "# token = \"new\"");
        let back = restore_secrets(&retyped, &current, FILE).unwrap();
        assert!(back.contains("# token = \"new\"\n"), "{back}");
        assert!(back.contains("token = \"hooktokenhooktoken\""), "{back}");
    }

    #[test]
    fn reordered_entries_keep_their_own_secrets() {
        let file = "[[channels.telegram]]\naccount = \"a\"\nbot_token = \"1:aaa\"\n\n[[channels.telegram]]\naccount = \"b\"\nbot_token = \"2:bbb\"\n";
        let current: Table = file.parse().unwrap();
        let swapped = "[[channels.telegram]]\naccount = \"b\"\nbot_token = \"<redacted>\"\n\n[[channels.telegram]]\naccount = \"a\"\nbot_token = \"<redacted>\"\n";
        let back: Table = restore_secrets(swapped, &current, file)
            .unwrap()
            .parse()
            .unwrap();
        let list = back["channels"]["telegram"].as_array().unwrap();
        assert_eq!(list[0]["account"].as_str(), Some("b"));
        assert_eq!(list[0]["bot_token"].as_str(), Some("2:bbb"));
        assert_eq!(list[1]["bot_token"].as_str(), Some("1:aaa"));
        let added = format!(
            "{swapped}\n[[channels.telegram]]\naccount = \"c\"\nbot_token = \"<redacted>\"\n"
        );
        let err = restore_secrets(&added, &current, file).unwrap_err();
        assert!(err.starts_with("channels.telegram[2].bot_token "), "{err}");
    }

    #[test]
    fn an_unnamed_entry_never_takes_a_named_entrys_secret() {
        // The first account has no `account` key (it is "default"); moved after "b", its
        // index now names b's entry in the file.
        let file = "[[channels.telegram]]\nbot_token = \"1:default\"\n\n[[channels.telegram]]\naccount = \"b\"\nbot_token = \"2:bbb\"\n";
        let current: Table = file.parse().unwrap();
        let moved = "[[channels.telegram]]\naccount = \"b\"\nbot_token = \"<redacted>\"\n\n[[channels.telegram]]\nbot_token = \"<redacted>\"\n";
        let back: Table = restore_secrets(moved, &current, file)
            .unwrap()
            .parse()
            .unwrap();
        let list = back["channels"]["telegram"].as_array().unwrap();
        assert_eq!(list[0]["bot_token"].as_str(), Some("2:bbb"));
        assert_eq!(
            list[1]["bot_token"].as_str(),
            Some("1:default"),
            "the unnamed account keeps its own token"
        );
        // A named entry added where an unnamed one was gets no secret by its place.
        let renamed = "[[channels.telegram]]\naccount = \"c\"\nbot_token = \"<redacted>\"\n";
        let err = restore_secrets(renamed, &current, file).unwrap_err();
        assert!(err.starts_with("channels.telegram[0].bot_token "), "{err}");
        // Unnamed entries still match unnamed entries by place.
        let unnamed = "[[mcp]]\ncommand = \"a\"\nenv = { K = \"s1\" }\n";
        let current: Table = unnamed.parse().unwrap();
        let edited = redact_text(unnamed).unwrap().replace("\"a\"", "\"a2\"");
        let back = restore_secrets(&edited, &current, unnamed).unwrap();
        assert!(back.contains("K = \"s1\""), "{back}");
    }

    #[test]
    fn inline_lists_of_entries_are_matched_by_name_too() {
        let file = "mcp = [{ name = \"a\", command = \"x\", env = { K = \"sa\" } }, { name = \"b\", command = \"y\", env = { K = \"sb\" } }]\n";
        let current: Table = file.parse().unwrap();
        let hidden = redact_text(file).unwrap();
        assert!(!hidden.contains("sa") && !hidden.contains("sb"), "{hidden}");
        let swapped = "mcp = [{ name = \"b\", command = \"y\", env = { K = \"<redacted>\" } }, { name = \"a\", command = \"x\", env = { K = \"<redacted>\" } }]\n";
        let back: Table = restore_secrets(swapped, &current, file)
            .unwrap()
            .parse()
            .unwrap();
        let list = back["mcp"].as_array().unwrap();
        assert_eq!(list[0]["env"]["K"].as_str(), Some("sb"));
        assert_eq!(list[1]["env"]["K"].as_str(), Some("sa"));
    }

    #[test]
    fn a_hidden_value_that_is_not_a_string_round_trips() {
        // Every value of an MCP server's env is hidden, numbers too (the config reads them
        // as strings); saving the text unchanged keeps them.
        let file =
            "[[mcp]]\nname = \"gh\"\ncommand = \"gh-mcp\"\nenv = { PORT = 8080, DEBUG = true }\n";
        let current: Table = file.parse().unwrap();
        let hidden = redact_text(file).unwrap();
        assert!(!hidden.contains("8080"), "{hidden}");
        let back = restore_secrets(&hidden, &current, file).unwrap();
        assert_eq!(back, file);
    }

    #[test]
    fn a_placeholder_without_a_stored_secret_is_refused() {
        let current: Table = FILE.parse().unwrap();
        let edited = format!("{FILE}\n[gateway.auth]\ntoken = \"{REDACTED}\"\n");
        let err = restore_secrets(&edited, &current, FILE).unwrap_err();
        assert!(err.starts_with("gateway.auth.token "), "{err}");
    }
}
