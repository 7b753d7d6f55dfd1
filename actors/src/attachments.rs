//! Attachments: files that travel with a message, in and out.
//!
//! In: `attachments` on WS `agent` / `chat.send`, in OpenClaw's shape `{type, mimeType,
//! fileName, content}` (base64 or a `data:` URL) or Troupe's `{type, mimeType?, fileName?,
//! path}` (`path` as `POST /api/upload` returned it). [`prepare`] checks them and turns
//! each into an [`AttachmentRef`] (inline content is saved under `uploads/` first), which
//! the transcript keeps. [`files::model_input`] turns them into what the model sees: images
//! as [`ImageInput`]s, text files inlined up to a cap, other files named.
//!
//! Audio attachments are transcribed when `[transcription]` is on ([`transcribe`]).
//!
//! Out: `[IMAGE:path]` / `[FILE:path]` markers in a final reply ([`markers::extract`]).

pub mod files;
pub mod markers;
pub mod transcribe;

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Image types models take.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];
/// Largest image, bytes.
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// Most images on one message.
pub const MAX_IMAGES: usize = 8;
/// Largest file sent inline (base64 `content`), bytes; larger files go through
/// `POST /api/upload`.
pub const MAX_INLINE_BYTES: usize = 5 * 1024 * 1024;
/// Most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 16;

/// An image for the model, base64-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// One of [`IMAGE_TYPES`].
    pub mime_type: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub data: String,
}

impl ImageInput {
    /// As a `data:` URL (OpenAI's `image_url`).
    pub fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.mime_type, self.data)
    }
}

/// Whether an attachment is shown as a picture or handed over as a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    /// A picture (Telegram `sendPhoto`, an image part for the model).
    Image,
    /// Any other file (Telegram `sendDocument`).
    File,
}

/// A file attached to a message, stored on disk: what the transcript keeps and channels
/// deliver. Serialized for clients as `{type, mimeType, fileName, path, url, size}` (`url`:
/// where `GET /api/files/...` serves it, see [`download_url`]); the absolute file is
/// internal (kept in the store, never shown).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRef {
    /// Image or file.
    #[serde(rename = "type")]
    pub kind: AttachmentKind,
    /// The MIME type.
    pub mime_type: String,
    /// The file's name (what a recipient sees).
    pub file_name: String,
    /// Where it is, relative to the state dir (`uploads/<id>/<name>`,
    /// `agents/<id>/memory/...`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// The absolute file (not sent to clients).
    #[serde(skip)]
    pub file: PathBuf,
}

impl Serialize for AttachmentRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let url = download_url(&self.path);
        let mut out = s.serialize_struct("AttachmentRef", 6)?;
        out.serialize_field("type", &self.kind)?;
        out.serialize_field("mimeType", &self.mime_type)?;
        out.serialize_field("fileName", &self.file_name)?;
        out.serialize_field("path", &self.path)?;
        match &url {
            Some(url) => out.serialize_field("url", url)?,
            None => out.skip_field("url")?,
        }
        out.serialize_field("size", &self.size)?;
        out.end()
    }
}

/// Where the gateway serves files: `GET /api/files/<path>`.
pub const DOWNLOAD_PREFIX: &str = "/api/files/";

/// The URL (absolute path on the gateway's port) that serves the file at `path` (relative to
/// the state dir): [`DOWNLOAD_PREFIX`] then each part of the path percent-encoded. `None`
/// for a path that is not relative (a file outside the state dir is not served).
pub fn download_url(path: &str) -> Option<String> {
    if path.is_empty() || path.starts_with('/') || path.starts_with('\\') {
        return None;
    }
    let parts: Vec<String> = path.split('/').map(encode_part).collect();
    Some(format!("{DOWNLOAD_PREFIX}{}", parts.join("/")))
}

/// One path part percent-encoded: everything but letters, digits and `-._~`.
fn encode_part(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// [`AttachmentRef`] as the store keeps it: with its absolute file.
#[derive(Serialize, Deserialize)]
struct StoredRef {
    #[serde(flatten)]
    public: AttachmentRef,
    file: PathBuf,
}

/// The store's JSON text of a message's attachments (`None` when there are none).
pub fn to_store_json(list: &[AttachmentRef]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    let stored: Vec<StoredRef> = list
        .iter()
        .map(|a| StoredRef {
            public: a.clone(),
            file: a.file.clone(),
        })
        .collect();
    serde_json::to_string(&stored).ok()
}

/// A message's attachments from the store's JSON text (empty when absent or unreadable).
pub fn from_store_json(text: Option<&str>) -> Vec<AttachmentRef> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Vec::new();
    };
    match serde_json::from_str::<Vec<StoredRef>>(text) {
        Ok(list) => list
            .into_iter()
            .map(|s| AttachmentRef {
                file: s.file,
                ..s.public
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "stored attachments are unreadable; ignoring them");
            Vec::new()
        }
    }
}

/// One entry of `attachments`, as clients send it; unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentParam {
    /// `image`, `file`, ...
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The MIME type.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// The file name.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Base64 content, or a `data:<mime>;base64,<content>` URL.
    #[serde(default)]
    pub content: Option<String>,
    /// A file uploaded before: the `path` `POST /api/upload` returned
    /// (`uploads/<id>/<name>`, or `<id>/<name>` relative to the uploads dir).
    #[serde(default)]
    pub path: Option<String>,
}

/// Checks a message's `attachments` and makes each a stored file: an uploaded `path` is
/// resolved inside `<state_dir>/uploads` (no `..`, not absolute, no symlink out); inline
/// `content` is decoded and saved there. Images must be a type models take, at most
/// [`MAX_IMAGES`] of [`MAX_IMAGE_BYTES`]. The error names the attachment and what is wrong.
pub fn prepare(
    attachments: &[AttachmentParam],
    state_dir: &Path,
) -> Result<Vec<AttachmentRef>, String> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(format!(
            "at most {MAX_ATTACHMENTS} attachments may be sent with one message"
        ));
    }
    let mut out = Vec::new();
    for (i, a) in attachments.iter().enumerate() {
        let label = a.file_name.as_deref().unwrap_or("(unnamed)");
        let one = prepare_one(a, state_dir)
            .map_err(|why| format!("attachments[{i}] ({label}): {why}"))?;
        out.push(one);
    }
    let images = out
        .iter()
        .filter(|a| a.kind == AttachmentKind::Image)
        .count();
    if images > MAX_IMAGES {
        return Err(format!(
            "at most {MAX_IMAGES} images may be attached to one message"
        ));
    }
    Ok(out)
}

fn prepare_one(a: &AttachmentParam, state_dir: &Path) -> Result<AttachmentRef, String> {
    let given_mime = a
        .mime_type
        .as_deref()
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty());
    let wants_image = a.kind.as_deref() == Some("image");
    let (file, url_mime) = match (a.path.as_deref(), a.content.as_deref()) {
        (Some(path), _) => (files::resolve_upload(state_dir, path)?, None),
        (None, Some(content)) => {
            let (url_mime, bytes) = decode_content(content)?;
            let mime = given_mime.clone().or(url_mime.clone()).unwrap_or_default();
            if (wants_image || mime.starts_with("image/")) && !IMAGE_TYPES.contains(&mime.as_str())
            {
                return Err(not_an_image_type(&mime));
            }
            let name = a
                .file_name
                .as_deref()
                .unwrap_or(if wants_image { "image" } else { "file" });
            (files::save_upload(state_dir, name, &bytes)?, url_mime)
        }
        (None, None) => {
            return Err("give either `path` (from POST /api/upload) or base64 `content`".into());
        }
    };
    let meta = std::fs::metadata(&file).map_err(|e| format!("cannot read the file: {e}"))?;
    let mime = match given_mime.or(url_mime) {
        Some(m) => m,
        None => files::sniff_file(&file),
    };
    let is_image = wants_image || mime.starts_with("image/");
    if is_image {
        if !IMAGE_TYPES.contains(&mime.as_str()) {
            return Err(not_an_image_type(&mime));
        }
        if meta.len() > MAX_IMAGE_BYTES as u64 {
            return Err(format!("the image is larger than {MAX_IMAGE_BYTES} bytes"));
        }
    }
    let file_name = a
        .file_name
        .as_deref()
        .map(files::safe_name)
        .unwrap_or_else(|| files::name_of(&file));
    Ok(AttachmentRef {
        kind: if is_image {
            AttachmentKind::Image
        } else {
            AttachmentKind::File
        },
        mime_type: mime,
        file_name,
        path: files::relative_to(state_dir, &file),
        size: meta.len(),
        file,
    })
}

/// A file saved under `uploads/` from somewhere else (a channel's download) as an
/// attachment: its type is sniffed from the bytes; `hint` (what the platform said) is used
/// only when the bytes say nothing more than "text" or "binary" and it is not an image type
/// (a picture is a picture by its bytes). An image is an image part when models take its
/// type and it is at most [`MAX_IMAGE_BYTES`]; otherwise it is a file.
pub fn from_saved(state_dir: &Path, file: PathBuf, hint: Option<&str>, size: u64) -> AttachmentRef {
    let sniffed = files::sniff_file(&file);
    let hint = hint
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty() && !m.starts_with("image/") && m.contains('/'));
    let mime = match hint {
        Some(h) if matches!(sniffed.as_str(), "text/plain" | "application/octet-stream") => h,
        _ => sniffed,
    };
    let image = IMAGE_TYPES.contains(&mime.as_str()) && size <= MAX_IMAGE_BYTES as u64;
    AttachmentRef {
        kind: if image {
            AttachmentKind::Image
        } else {
            AttachmentKind::File
        },
        mime_type: mime,
        file_name: files::name_of(&file),
        path: files::relative_to(state_dir, &file),
        size,
        file,
    }
}

fn not_an_image_type(mime: &str) -> String {
    format!(
        "image type {mime:?} is not one models take ({})",
        IMAGE_TYPES.join(", ")
    )
}

/// Base64 content or a `data:` URL: its MIME type (from the URL) and bytes.
fn decode_content(content: &str) -> Result<(Option<String>, Vec<u8>), String> {
    let content = content.trim();
    let (url_mime, data) = match content
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
    {
        Some((mime, data)) => (Some(mime.to_ascii_lowercase()), data),
        None => (None, content),
    };
    if data.len() > MAX_INLINE_BYTES / 3 * 4 + 4 {
        return Err(format!(
            "inline content is larger than {MAX_INLINE_BYTES} bytes; upload it with POST /api/upload and send its `path`"
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("content is not base64: {e}"))?;
    if bytes.is_empty() {
        return Err("it is empty".into());
    }
    Ok((url_mime, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(kind: &str, mime: &str, content: &str) -> AttachmentParam {
        AttachmentParam {
            kind: Some(kind.into()),
            mime_type: (!mime.is_empty()).then(|| mime.into()),
            file_name: Some("f".into()),
            content: Some(content.into()),
            path: None,
        }
    }

    #[test]
    fn inline_files_are_saved_as_uploads_and_typed() {
        let home = tempfile::tempdir().unwrap();
        let got = prepare(
            &[
                inline("image", "image/png", "iVBORw0KGgo="),
                inline("file", "application/pdf", "JVBERi0="),
                inline("image", "", "data:image/jpeg;base64,/9j/4AAQ"),
            ],
            home.path(),
        )
        .expect("valid");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].kind, AttachmentKind::Image);
        assert_eq!(got[1].kind, AttachmentKind::File);
        assert_eq!(got[2].mime_type, "image/jpeg");
        assert!(got[0].path.starts_with("uploads/"), "{}", got[0].path);
        assert_eq!(std::fs::read(&got[1].file).unwrap(), b"%PDF-");
        let json = to_store_json(&got).unwrap();
        assert_eq!(from_store_json(Some(&json)), got);
        let public = serde_json::to_value(&got[0]).unwrap();
        assert!(public.get("file").is_none(), "{public}");
        assert_eq!(
            public["url"].as_str().unwrap(),
            format!("/api/files/{}", got[0].path)
        );
    }

    #[test]
    fn download_urls_encode_each_part_and_skip_absolute_paths() {
        assert_eq!(
            download_url("agents/main/memory/my notes/r\u{e9}sum\u{e9}#1.md").as_deref(),
            Some("/api/files/agents/main/memory/my%20notes/r%C3%A9sum%C3%A9%231.md")
        );
        assert_eq!(download_url("/tmp/x.png"), None);
        assert_eq!(download_url(""), None);
    }

    #[test]
    fn a_saved_download_is_typed_by_its_bytes_the_platforms_type_only_a_hint() {
        let home = tempfile::tempdir().unwrap();
        let png = [
            0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D,
        ];
        let file = files::save_upload(home.path(), "photo.jpg", &png).unwrap();
        let a = from_saved(home.path(), file, Some("image/jpeg"), png.len() as u64);
        assert_eq!(
            (a.kind, a.mime_type.as_str()),
            (AttachmentKind::Image, "image/png")
        );
        assert!(a.path.starts_with("uploads/"), "{}", a.path);
        // Text that claims to be a picture stays text.
        let file = files::save_upload(home.path(), "x.png", b"not a picture").unwrap();
        let a = from_saved(home.path(), file, Some("image/png"), 13);
        assert_eq!(
            (a.kind, a.mime_type.as_str()),
            (AttachmentKind::File, "text/plain")
        );
        // Bytes that say nothing more than "binary" take the platform's type.
        let file = files::save_upload(home.path(), "voice", &[0, 1, 2, 3]).unwrap();
        let a = from_saved(home.path(), file, Some("audio/ogg"), 4);
        assert_eq!(
            (a.kind, a.mime_type.as_str()),
            (AttachmentKind::File, "audio/ogg")
        );
        // A picture too large for models is a file.
        let file = files::save_upload(home.path(), "big.png", &png).unwrap();
        let a = from_saved(home.path(), file, None, MAX_IMAGE_BYTES as u64 + 1);
        assert_eq!(a.kind, AttachmentKind::File);
    }

    #[test]
    fn bad_attachments_are_refused_naming_them() {
        let home = tempfile::tempdir().unwrap();
        let err =
            prepare(&[inline("image", "image/png", "not base64!")], home.path()).expect_err("bad");
        assert!(
            err.contains("attachments[0]") && err.contains("base64"),
            "{err}"
        );
        let err = prepare(&[inline("image", "image/tiff", "AAAA")], home.path()).expect_err("type");
        assert!(err.contains("image/tiff"), "{err}");
        let many: Vec<_> = (0..=MAX_IMAGES)
            .map(|_| inline("image", "image/png", "AAAA"))
            .collect();
        assert!(prepare(&many, home.path()).is_err());
        let neither = AttachmentParam::default();
        assert!(
            prepare(&[neither], home.path())
                .unwrap_err()
                .contains("path")
        );
    }
}
