//! Attachments a client sends with a message (`attachments` on WS `agent` / `chat.send`, in
//! OpenClaw's shape `{type, mimeType, fileName, content}` with base64 content or a
//! `data:` URL): images become [`ImageInput`]s that reach models taking images (OpenAI
//! `image_url` parts, Anthropic `image` blocks); other files are accepted and ignored.

use base64::Engine;
use serde::Deserialize;

/// Image types models take.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];
/// Largest image, decoded bytes.
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// Most images on one message.
pub const MAX_IMAGES: usize = 8;

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

/// One entry of `attachments`, as OpenClaw clients send it; unknown fields are ignored.
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
}

/// The images among `attachments`, checked (type, base64, size, count); other files are
/// skipped. The error says which attachment is wrong and why.
pub fn images(attachments: &[AttachmentParam]) -> Result<Vec<ImageInput>, String> {
    let mut out = Vec::new();
    for (i, a) in attachments.iter().enumerate() {
        let name = a.file_name.as_deref().unwrap_or("(unnamed)");
        let content = a.content.as_deref().unwrap_or("").trim();
        let (url_type, data) = match content
            .strip_prefix("data:")
            .and_then(|rest| rest.split_once(";base64,"))
        {
            Some((mime, data)) => (Some(mime), data),
            None => (None, content),
        };
        let mime = a
            .mime_type
            .as_deref()
            .or(url_type)
            .unwrap_or("")
            .to_ascii_lowercase();
        let is_image = mime.starts_with("image/") || a.kind.as_deref() == Some("image");
        if !is_image {
            continue;
        }
        if !IMAGE_TYPES.contains(&mime.as_str()) {
            return Err(format!(
                "attachments[{i}] ({name}): image type {mime:?} is not one models take ({})",
                IMAGE_TYPES.join(", ")
            ));
        }
        if data.len() > MAX_IMAGE_BYTES / 3 * 4 + 4 {
            return Err(format!(
                "attachments[{i}] ({name}) is larger than {MAX_IMAGE_BYTES} bytes"
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("attachments[{i}] ({name}): content is not base64: {e}"))?;
        if bytes.is_empty() {
            return Err(format!("attachments[{i}] ({name}) is empty"));
        }
        if out.len() == MAX_IMAGES {
            return Err(format!(
                "at most {MAX_IMAGES} images may be attached to one message"
            ));
        }
        out.push(ImageInput {
            mime_type: mime,
            data: base64::engine::general_purpose::STANDARD.encode(&bytes),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(kind: &str, mime: &str, content: &str) -> AttachmentParam {
        AttachmentParam {
            kind: Some(kind.into()),
            mime_type: (!mime.is_empty()).then(|| mime.into()),
            file_name: Some("f".into()),
            content: Some(content.into()),
        }
    }

    #[test]
    fn images_are_taken_and_other_files_skipped() {
        let got = images(&[
            attachment("image", "image/png", "iVBORw0KGgo="),
            attachment("file", "application/pdf", "JVBERi0="),
            attachment("image", "", "data:image/jpeg;base64,/9j/4AAQ"),
        ])
        .expect("valid");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data_url(), "data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(got[1].mime_type, "image/jpeg");
    }

    #[test]
    fn bad_images_are_refused_naming_them() {
        let err = images(&[attachment("image", "image/png", "not base64!")]).expect_err("bad");
        assert!(
            err.contains("attachments[0]") && err.contains("base64"),
            "{err}"
        );
        let err = images(&[attachment("image", "image/tiff", "AAAA")]).expect_err("type");
        assert!(err.contains("image/tiff"), "{err}");
        let many: Vec<_> = (0..=MAX_IMAGES)
            .map(|_| attachment("image", "image/png", "AAAA"))
            .collect();
        assert!(images(&many).is_err());
    }
}
