//! One note's structure as Obsidian reads it: YAML front matter between `---` lines at the
//! top, a title, tags (front matter `tags`/`tag` and inline `#tags`), and `[[wikilinks]]`
//! (`[[note]]`, `[[note|alias]]`, `[[note#heading]]`, embeds `![[note]]`). Pure functions.

use serde::Serialize;
use serde_json::Value;

/// A `[[wikilink]]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WikiLink {
    /// The linked note as written (`people/alice`, `Alice`, `Alice.md`).
    pub target: String,
    /// The heading or block after `#`, if any.
    pub heading: Option<String>,
    /// The display text after `|`, if any.
    pub alias: Option<String>,
    /// Whether it is an embed (`![[...]]`).
    pub embed: bool,
}

impl WikiLink {
    /// The target as the index compares it: lower case, without a leading `/` or `.md`.
    pub fn key(&self) -> String {
        link_key(&self.target)
    }
}

/// A link target or note path (without `.md`) in the form links are matched by.
pub fn link_key(target: &str) -> String {
    let t = target.trim().trim_start_matches('/');
    let t = t.strip_suffix(".md").unwrap_or(t);
    t.to_lowercase()
}

/// The last path segment of a link key (`people/alice` → `alice`).
pub fn key_stem(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Whether a link names a file that is not a note (`![[photo.png]]`).
pub fn is_attachment(target: &str) -> bool {
    let last = target.rsplit('/').next().unwrap_or(target);
    match last.rsplit_once('.') {
        Some((stem, ext)) => {
            !stem.is_empty()
                && !ext.eq_ignore_ascii_case("md")
                && ext.len() <= 5
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// A parsed note.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedNote {
    /// The front matter as JSON (`Null` when the note has none).
    pub front_matter: Value,
    /// Why the front matter could not be read, if it could not.
    pub front_matter_error: Option<String>,
    /// Byte offset where the body starts (after the front matter).
    pub body_start: usize,
    /// Front matter `title`, else the first `# ` heading, else the file name.
    pub title: String,
    /// Tags without `#`, first spelling kept, no duplicates (case-insensitive).
    pub tags: Vec<String>,
    /// Outgoing links in order of appearance.
    pub links: Vec<WikiLink>,
}

/// Splits `---\n<yaml>\n---\n` off the top; returns (yaml, body offset).
pub fn split_front_matter(text: &str) -> Option<(&str, usize)> {
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let start = text.len() - rest.len();
    let mut offset = start;
    for line in rest.split_inclusive('\n') {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if trimmed == "---" || trimmed == "..." {
            return Some((&text[start..offset], offset + line.len()));
        }
        offset += line.len();
    }
    None
}

/// Parses YAML front matter into JSON (an empty block is an empty object).
pub fn parse_yaml(yaml: &str) -> Result<Value, String> {
    if yaml.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Default::default())),
        other => Err(format!(
            "front matter must be a mapping of keys to values, not {}",
            kind(&other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "that",
    }
}

/// Checks a note about to be written: its front matter, if any, must be valid YAML.
pub fn validate(text: &str) -> Result<(), String> {
    match split_front_matter(text) {
        Some((yaml, _)) => parse_yaml(yaml)
            .map(drop)
            .map_err(|e| format!("front matter is not valid YAML: {e}")),
        None => Ok(()),
    }
}

/// A note's text from front matter (a JSON object, written as YAML) and a body.
pub fn compose(front_matter: &Value, body: &str) -> Result<String, String> {
    match front_matter {
        Value::Null => Ok(body.to_string()),
        Value::Object(map) if map.is_empty() => Ok(body.to_string()),
        Value::Object(_) => {
            let yaml = serde_yaml_ng::to_string(front_matter)
                .map_err(|e| format!("front matter cannot be written as YAML: {e}"))?;
            Ok(format!("---\n{yaml}---\n{body}"))
        }
        other => Err(format!(
            "frontMatter must be an object of keys to values, not {}",
            kind(other)
        )),
    }
}

/// Parses a note; `stem` (file name without `.md`) is the fallback title.
pub fn parse(text: &str, stem: &str) -> ParsedNote {
    let (front_matter, front_matter_error, body_start) = match split_front_matter(text) {
        Some((yaml, body)) => match parse_yaml(yaml) {
            Ok(v) => (v, None, body),
            Err(e) => (Value::Null, Some(e), body),
        },
        None => (Value::Null, None, 0),
    };
    let body = &text[body_start..];
    let mut tags = Vec::new();
    for key in ["tags", "tag"] {
        match &front_matter[key] {
            Value::String(s) => s.split([',', ' ']).for_each(|t| push_tag(&mut tags, t)),
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .for_each(|t| push_tag(&mut tags, t)),
            _ => {}
        }
    }
    let mut links = Vec::new();
    let mut heading = None;
    let mut fence: Option<&str> = None;
    for line in body.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            continue;
        }
        if heading.is_none()
            && let Some(h) = trimmed.strip_prefix("# ")
        {
            heading = Some(h.trim().to_string());
        }
        scan_line(line, &mut links, &mut tags);
    }
    let title = front_matter["title"]
        .as_str()
        .map(str::to_string)
        .or(heading)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| stem.to_string());
    ParsedNote {
        front_matter,
        front_matter_error,
        body_start,
        title,
        tags,
        links,
    }
}

fn push_tag(tags: &mut Vec<String>, tag: &str) {
    let tag = tag.trim().trim_start_matches('#');
    if !tag.is_empty() && !tags.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
        tags.push(tag.to_string());
    }
}

/// Finds wikilinks and inline tags in one line, outside inline code spans.
fn scan_line(line: &str, links: &mut Vec<WikiLink>, tags: &mut Vec<String>) {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut in_code = false;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => in_code = !in_code,
            b'[' if !in_code && bytes.get(i + 1) == Some(&b'[') => {
                if let Some(len) = line[i + 2..].find("]]") {
                    let inner = &line[i + 2..i + 2 + len];
                    let embed = i > 0 && bytes[i - 1] == b'!';
                    if !inner.contains("[[")
                        && let Some(link) = wikilink(inner, embed)
                    {
                        links.push(link);
                    }
                    i += 2 + len + 2;
                    continue;
                }
            }
            b'#' if !in_code && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                let rest = &line[i + 1..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '/')))
                    .unwrap_or(rest.len());
                let tag = &rest[..end];
                if tag.chars().any(|c| !c.is_ascii_digit()) {
                    push_tag(tags, tag);
                }
                i += 1 + end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

fn wikilink(inner: &str, embed: bool) -> Option<WikiLink> {
    let (target, alias) = match inner.split_once('|') {
        Some((t, a)) => (t.trim_end_matches('\\'), Some(a.trim().to_string())),
        None => (inner, None),
    };
    let (target, heading) = match target.split_once('#') {
        Some((t, h)) => (t, Some(h.trim().to_string())),
        None => (target, None),
    };
    let target = target.trim();
    (!target.is_empty()).then(|| WikiLink {
        target: target.to_string(),
        heading,
        alias,
        embed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn front_matter_title_tags_and_links_are_read() {
        let text = "---\ntitle: Alice\ntags: [person, Friend]\n---\n# Heading\nSee [[Bob]], [[people/carol|Carol]] and ![[diagram#part]].\nMet at #work #Friend `[[not a link]]` #2024\n```\n[[in code]]\n```\n";
        let note = parse(text, "alice");
        assert_eq!(note.title, "Alice");
        assert_eq!(note.front_matter["tags"], json!(["person", "Friend"]));
        assert_eq!(note.tags, vec!["person", "Friend", "work"]);
        let targets: Vec<_> = note.links.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(targets, vec!["Bob", "people/carol", "diagram"]);
        assert_eq!(note.links[1].alias.as_deref(), Some("Carol"));
        assert_eq!(note.links[2].heading.as_deref(), Some("part"));
        assert!(note.links[2].embed);
        assert_eq!(&text[note.body_start..note.body_start + 9], "# Heading");
    }

    #[test]
    fn composed_notes_parse_back() {
        let text =
            compose(&json!({ "title": "T", "tags": ["a"] }), "body [[x]]\n").expect("compose");
        let note = parse(&text, "n");
        assert_eq!(note.title, "T");
        assert_eq!(note.tags, vec!["a"]);
        assert_eq!(&text[note.body_start..], "body [[x]]\n");
        assert!(compose(&json!([1]), "").is_err());
    }

    #[test]
    fn title_falls_back_to_heading_then_file_name() {
        assert_eq!(parse("# Top\ntext", "f").title, "Top");
        assert_eq!(parse("just text", "file").title, "file");
    }

    #[test]
    fn broken_front_matter_is_reported_not_fatal() {
        let note = parse("---\ntitle: [unclosed\n---\nbody", "n");
        assert!(note.front_matter_error.is_some());
        assert!(validate("---\ntitle: [unclosed\n---\nbody").is_err());
        assert!(validate("---\na: 1\n---\nbody").is_ok());
        assert!(validate("no front matter").is_ok());
        assert!(validate("---\n- a list\n---\n").is_err());
    }

    #[test]
    fn link_keys_ignore_case_and_extension() {
        assert_eq!(link_key("People/Alice.md"), "people/alice");
        assert_eq!(key_stem("people/alice"), "alice");
        assert!(is_attachment("img/photo.png"));
        assert!(!is_attachment("v1.2 notes"));
        assert!(!is_attachment("alice"));
    }
}
