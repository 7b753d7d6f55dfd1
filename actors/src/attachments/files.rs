//! Attachment files on disk: resolving an uploaded `path` inside the uploads dir (never
//! outside it), saving inline content as an upload, telling a file's type, and turning a
//! message's attachments into what the model sees ([`model_input`]).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use base64::Engine;

use super::transcribe::{self, Transcriber};
use super::{AttachmentKind, AttachmentRef, ImageInput};

/// Bytes of a text file inlined into the model's message; the rest is cut (and said so).
pub const MAX_INLINE_TEXT_BYTES: usize = 32 * 1024;
/// Bytes looked at to tell a file's type.
const SNIFF_BYTES: usize = 8192;
/// Longest stored file name, in characters.
pub const MAX_NAME_CHARS: usize = 120;

/// A file name reduced to a safe one: its last path part, letters, digits, `.`, `-`, `_`
/// (others become `_`), no leading dot, at most 120 characters (the extension kept).
pub fn safe_name(name: &str) -> String {
    safe_name_or(name, "file")
}

/// [`safe_name`], with `fallback` when nothing of the name is left.
pub fn safe_name_or(name: &str, fallback: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(['.', '_']);
    let skip = cleaned.chars().count().saturating_sub(MAX_NAME_CHARS);
    let cleaned: String = cleaned.chars().skip(skip).collect();
    if cleaned.trim_matches(['.', '_']).is_empty() {
        fallback.into()
    } else {
        cleaned
    }
}

/// The last part of a path, as a display name.
pub fn name_of(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

/// `file` relative to the state dir when inside it (`uploads/...`), else its full path.
pub fn relative_to(state_dir: &Path, file: &Path) -> String {
    let base = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    file.strip_prefix(&base)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_else(|_| file.display().to_string())
}

/// A relative path with no `..`, root or prefix parts (what may be joined to a root).
pub fn plain_relative(path: &str) -> Result<&Path, String> {
    let p = Path::new(path);
    if path.trim().is_empty() {
        return Err("the path is empty".into());
    }
    if p.is_absolute() || path.starts_with('/') || path.starts_with('\\') {
        return Err(format!(
            "path {path:?} is absolute; give the path POST /api/upload returned"
        ));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("path {path:?} may not contain `..`"));
    }
    Ok(p)
}

/// `path` under `root`, canonical, refused unless it is a file that stays inside `root`
/// once symlinks are followed.
pub fn inside(root: &Path, rel: &Path, shown: &str) -> Result<PathBuf, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("{shown:?}: its folder {} is not there: {e}", root.display()))?;
    let file = root
        .join(rel)
        .canonicalize()
        .map_err(|_| format!("{shown:?} does not exist"))?;
    if !file.starts_with(&root) {
        return Err(format!("{shown:?} leads outside {}", root.display()));
    }
    if !file.is_file() {
        return Err(format!("{shown:?} is not a file"));
    }
    Ok(file)
}

/// An uploaded file from the `path` `POST /api/upload` returned (`uploads/<id>/<name>` or
/// `<id>/<name>`), inside `<state_dir>/uploads`.
pub fn resolve_upload(state_dir: &Path, path: &str) -> Result<PathBuf, String> {
    let rel = plain_relative(path)?;
    let rel = rel.strip_prefix("uploads").unwrap_or(rel);
    inside(&state_dir.join("uploads"), rel, path)
}

/// Saves bytes as a new upload (`<state_dir>/uploads/<uuid>/<safe name>`); returns the file.
pub fn save_upload(state_dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let dir = state_dir
        .join("uploads")
        .join(uuid::Uuid::new_v4().to_string());
    let file = dir.join(safe_name(name));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, bytes))
        .map_err(|e| {
            tracing::error!(error = %e, dir = %dir.display(), "cannot store an attachment");
            format!("cannot store it: {e}")
        })?;
    file.canonicalize()
        .map_err(|e| format!("cannot store it: {e}"))
}

/// The MIME type of bytes: a known signature, else `text/plain` for UTF-8 text, else
/// `application/octet-stream`.
pub fn sniff(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A multi-byte character cut at the end of the sniffed bytes is still text.
        Err(e) => e.error_len().is_none() && e.valid_up_to() + 4 > head.len(),
    };
    if text && !head.contains(&0) {
        "text/plain".into()
    } else {
        "application/octet-stream".into()
    }
}

/// The MIME type of a file: sniffed from its first bytes; UTF-8 text named `.md` is
/// `text/markdown`, `.csv` `text/csv`, `.json` `application/json`.
pub fn sniff_file(file: &Path) -> String {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let _ =
        std::fs::File::open(file).and_then(|f| f.take(SNIFF_BYTES as u64).read_to_end(&mut head));
    let sniffed = sniff(&head);
    if sniffed != "text/plain" {
        return sniffed;
    }
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("md" | "markdown") => "text/markdown".into(),
        Some("csv") => "text/csv".into(),
        Some("json") => "application/json".into(),
        _ => sniffed,
    }
}

/// Whether a file of this type is shown to the model as text.
pub fn is_text(mime: &str) -> bool {
    mime.starts_with("text/")
        || matches!(
            mime,
            "application/json" | "application/xml" | "application/yaml" | "application/x-yaml"
        )
}

/// What the model sees of a message and its attachments: the text, with text files
/// inlined (up to [`MAX_INLINE_TEXT_BYTES`] each) and other files named; and the images.
/// With a `transcriber`, audio files are replaced by their transcript (or a note that
/// transcription failed). A file gone since is said to be gone.
pub async fn model_input(
    text: &str,
    attachments: &[AttachmentRef],
    transcriber: Option<&Transcriber>,
) -> (String, Vec<ImageInput>) {
    let mut out = text.to_string();
    let mut images = Vec::new();
    for a in attachments {
        if let Some(t) = transcriber.filter(|_| transcribe::is_audio(a)) {
            match t.transcribe(a).await {
                Ok(transcript) => out.push_str(&format!(
                    "\n\n[voice transcript: {}]\n{}",
                    a.file_name, transcript
                )),
                Err(why) => {
                    tracing::warn!(file = %a.path, error = %why, "audio transcription failed");
                    out.push_str(&format!(
                        "\n\n[attached audio: {} ({}, {} bytes); transcription failed: {}]",
                        a.file_name, a.mime_type, a.size, why
                    ));
                }
            }
            continue;
        }
        let bytes = match tokio::fs::read(&a.file).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %a.file.display(), error = %e, "an attachment's file is gone");
                out.push_str(&format!(
                    "\n\n[attached {}: {} is no longer available]",
                    kind_word(a.kind),
                    a.file_name
                ));
                continue;
            }
        };
        match a.kind {
            AttachmentKind::Image => images.push(ImageInput {
                mime_type: a.mime_type.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(&bytes),
            }),
            AttachmentKind::File if is_text(&a.mime_type) => {
                let cut = bytes.len() > MAX_INLINE_TEXT_BYTES;
                let shown =
                    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_INLINE_TEXT_BYTES)]);
                out.push_str(&format!(
                    "\n\n[attached file: {} ({}, {} bytes)]\n{}{}\n[end of {}]",
                    a.file_name,
                    a.mime_type,
                    a.size,
                    shown,
                    if cut {
                        "\n[... cut: the file is longer]"
                    } else {
                        ""
                    },
                    a.file_name
                ));
            }
            AttachmentKind::File => out.push_str(&format!(
                "\n\n[attached file: {} ({}, {} bytes); its content cannot be shown here]",
                a.file_name, a.mime_type, a.size
            )),
        }
    }
    if text.trim().is_empty() {
        // A file sent alone (a voice note, a photo without caption): no blank lead.
        out = out.trim_start().to_string();
    }
    (out, images)
}

/// How an earlier message's attachments appear in a later turn's history: named, not
/// re-sent; an audio file transcribed before brings its transcript.
pub fn history_note(attachments: &[AttachmentRef]) -> String {
    attachments
        .iter()
        .map(|a| {
            let named = format!(
                "\n[attached {}: {} ({})]",
                kind_word(a.kind),
                a.file_name,
                a.path
            );
            match transcribe::kept_transcript(a) {
                Some(text) => format!("{named}\n[voice transcript: {}]\n{text}", a.file_name),
                None => named,
            }
        })
        .collect()
}

fn kind_word(kind: AttachmentKind) -> &'static str {
    match kind {
        AttachmentKind::Image => "image",
        AttachmentKind::File => "file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_paths_stay_inside_the_uploads_dir() {
        let home = tempfile::tempdir().unwrap();
        let saved = save_upload(home.path(), "../../a b.txt", b"hi").unwrap();
        assert_eq!(name_of(&saved), "a_b.txt");
        let rel = relative_to(home.path(), &saved);
        assert!(rel.starts_with("uploads/"), "{rel}");
        assert_eq!(resolve_upload(home.path(), &rel).unwrap(), saved);
        let short = rel.trim_start_matches("uploads/");
        assert_eq!(resolve_upload(home.path(), short).unwrap(), saved);
        for bad in ["../secret", "uploads/../config.toml", "/etc/passwd", ""] {
            assert!(resolve_upload(home.path(), bad).is_err(), "{bad}");
        }
        std::fs::write(home.path().join("secret.txt"), "s").unwrap();
        #[cfg(unix)]
        {
            let link = home.path().join("uploads").join("link.txt");
            std::os::unix::fs::symlink(home.path().join("secret.txt"), &link).unwrap();
            let err = resolve_upload(home.path(), "uploads/link.txt").unwrap_err();
            assert!(err.contains("outside"), "{err}");
        }
        assert!(
            resolve_upload(home.path(), "uploads/nope.txt")
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn types_come_from_the_bytes_then_the_extension_for_text() {
        let png = [
            0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D,
        ];
        assert_eq!(sniff(&png), "image/png");
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff(&[0, 1, 2, 0xff]), "application/octet-stream");
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("x.md");
        std::fs::write(&md, "# hi").unwrap();
        assert_eq!(sniff_file(&md), "text/markdown");
    }
}
