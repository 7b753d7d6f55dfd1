//! `[IMAGE:path]` / `[FILE:path]` markers in an agent's final reply: each that names a
//! file inside the agent's folder (`agents/<id>/`, its `memory/` vault included) or the
//! uploads dir is taken out of the text and becomes an [`AttachmentRef`]; any other is
//! refused, left in the text as written, and logged.

use std::path::{Path, PathBuf};

use super::files::{inside, name_of, plain_relative, relative_to, sniff_file};
use super::{AttachmentKind, AttachmentRef};

/// Largest file a marker may send, bytes (Discord's upload limit for bots without boosts).
pub const MAX_MARKER_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// Where a marker's file may come from.
#[derive(Debug, Clone)]
pub struct MarkerRoots {
    /// The state dir (`uploads/` is under it; answers' paths are relative to it).
    pub state_dir: PathBuf,
    /// The agent's folder (`agents/<id>/`).
    pub agent_dir: PathBuf,
    /// The agent's vault (`agents/<id>/memory/`), searched first for relative paths.
    pub memory_dir: PathBuf,
}

/// The reply without its accepted markers, and the files they named, in order.
pub fn extract(text: &str, roots: &MarkerRoots) -> (String, Vec<AttachmentRef>) {
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut rest = text;
    while let Some((start, kind, tag_len)) = next_marker(rest) {
        let after = &rest[start + tag_len..];
        let Some(end) = after.find(']').filter(|e| !after[..*e].contains('\n')) else {
            out.push_str(&rest[..start + tag_len]);
            rest = after;
            continue;
        };
        let raw = after[..end].trim();
        let whole = &rest[start..start + tag_len + end + 1];
        match resolve(raw, kind, roots) {
            Ok(a) => {
                out.push_str(&rest[..start]);
                // "see [FILE:x] here" reads "see here", not "see  here".
                if after[end + 1..].is_empty() || after[end + 1..].starts_with(char::is_whitespace)
                {
                    while out.ends_with(' ') {
                        out.pop();
                    }
                }
                found.push(a);
            }
            Err(why) => {
                tracing::warn!(marker = %whole, reason = %why, "a reply's file marker was refused; left as text");
                out.push_str(&rest[..start]);
                out.push_str(whole);
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if found.is_empty() {
        return (text.to_string(), found);
    }
    (tidy(&out), found)
}

/// The first `[IMAGE:` or `[FILE:` in `text`: its offset, kind and tag length.
fn next_marker(text: &str) -> Option<(usize, AttachmentKind, usize)> {
    let image = text.find("[IMAGE:").map(|i| (i, AttachmentKind::Image, 7));
    let file = text.find("[FILE:").map(|i| (i, AttachmentKind::File, 6));
    match (image, file) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Text with markers taken out: no trailing spaces on a line, no run of blank lines.
fn tidy(text: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() && lines.last().is_some_and(|l| l.is_empty()) {
            continue;
        }
        lines.push(line);
    }
    lines.join("\n").trim().to_string()
}

fn resolve(raw: &str, kind: AttachmentKind, roots: &MarkerRoots) -> Result<AttachmentRef, String> {
    let allowed = [roots.state_dir.join("uploads"), roots.agent_dir.clone()];
    let file = if Path::new(raw).is_absolute() {
        let file = Path::new(raw)
            .canonicalize()
            .map_err(|_| format!("{raw:?} does not exist"))?;
        let ok = allowed
            .iter()
            .filter_map(|r| r.canonicalize().ok())
            .any(|r| file.starts_with(r));
        if !ok || !file.is_file() {
            return Err(format!(
                "{raw:?} is not a file in the agent's folder or the uploads dir"
            ));
        }
        file
    } else {
        let rel = plain_relative(raw)?;
        if let Ok(in_uploads) = rel.strip_prefix("uploads") {
            inside(&allowed[0], in_uploads, raw)?
        } else {
            inside(&roots.memory_dir, rel, raw).or_else(|_| inside(&roots.agent_dir, rel, raw))?
        }
    };
    let size = std::fs::metadata(&file)
        .map_err(|e| format!("{raw:?}: {e}"))?
        .len();
    if size > MAX_MARKER_FILE_BYTES {
        return Err(format!(
            "{raw:?} is larger than {MAX_MARKER_FILE_BYTES} bytes"
        ));
    }
    let mime = sniff_file(&file);
    // `[IMAGE:]` naming something that is not a picture is sent as a file.
    let kind = if kind == AttachmentKind::Image && mime.starts_with("image/") {
        AttachmentKind::Image
    } else {
        AttachmentKind::File
    };
    Ok(AttachmentRef {
        kind,
        mime_type: mime,
        file_name: name_of(&file),
        path: relative_to(&roots.state_dir, &file),
        size,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> (tempfile::TempDir, MarkerRoots) {
        let home = tempfile::tempdir().unwrap();
        let agent_dir = home.path().join("agents").join("main");
        let memory_dir = agent_dir.join("memory");
        std::fs::create_dir_all(memory_dir.join("notes")).unwrap();
        std::fs::create_dir_all(home.path().join("uploads")).unwrap();
        std::fs::write(memory_dir.join("notes").join("x.md"), "# x").unwrap();
        std::fs::write(
            agent_dir.join("chart.png"),
            [
                0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D,
            ],
        )
        .unwrap();
        std::fs::write(home.path().join("config.toml"), "secret").unwrap();
        let roots = MarkerRoots {
            state_dir: home.path().to_path_buf(),
            agent_dir,
            memory_dir,
        };
        (home, roots)
    }

    #[test]
    fn markers_inside_the_agent_folder_become_attachments() {
        let (_home, roots) = roots();
        let (text, found) = extract(
            "Here are the notes: [FILE:notes/x.md]\n\nAnd the chart [IMAGE:chart.png] today\n",
            &roots,
        );
        assert_eq!(text, "Here are the notes:\n\nAnd the chart today");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].kind, AttachmentKind::File);
        assert_eq!(found[0].mime_type, "text/markdown");
        assert_eq!(found[0].path, "agents/main/memory/notes/x.md");
        assert_eq!(found[1].kind, AttachmentKind::Image);
        assert_eq!(found[1].file_name, "chart.png");
    }

    #[test]
    fn markers_outside_are_left_as_text() {
        let (home, roots) = roots();
        let outside = home.path().join("config.toml").display().to_string();
        for marker in [
            "[FILE:../../config.toml]".to_string(),
            format!("[FILE:{outside}]"),
            "[FILE:/etc/passwd]".into(),
            "[IMAGE:missing.png]".into(),
        ] {
            let reply = format!("see {marker} ok");
            let (text, found) = extract(&reply, &roots);
            assert!(found.is_empty(), "{marker}");
            assert_eq!(text, reply);
        }
        let (text, found) = extract("no markers [FILE: here", &roots);
        assert!(found.is_empty());
        assert_eq!(text, "no markers [FILE: here");
    }
}
