//! `POST /api/upload`: one file as `multipart/form-data`, stored under
//! `<state dir>/uploads/<uuid>/<sanitized file name>`, its type sniffed from its first bytes
//! (never trusted from the client), capped at `uploads.max_bytes`. Answers 201
//! `{path, filename, mime, size}`, `path` relative to the state dir.

use std::path::PathBuf;

use crate::gateway::Gateway;
use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{ApiError, authorize};
#[cfg(test)]
use troupe_actors::attachments::files::MAX_NAME_CHARS;
use troupe_actors::attachments::files::{self, sniff};

/// Bytes looked at to tell a file's type.
const SNIFF_BYTES: usize = 8192;

/// Where uploads go and how large they may be.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// The state dir (`path` in answers is relative to it).
    pub home: PathBuf,
    /// Largest file, bytes.
    pub max_bytes: u64,
}

/// A client's file name reduced to a safe one (see [`files::safe_name`]); `upload` when
/// nothing of it is left.
pub fn sanitize_filename(name: &str) -> String {
    files::safe_name_or(name, "upload")
}

fn bad(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// `POST /api/upload`.
#[utoipa::path(post, path = "/api/upload", tag = "files", request_body(content = crate::http::openapi::UploadForm, content_type = "multipart/form-data"), responses((status = 201, description = "`{path, filename, mime, size}`", body = Object), (status = 413, description = "Larger than uploads.max_bytes", body = crate::http::openapi::ErrorBody)))]
pub async fn upload(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    settings: web::Data<UploadSettings>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let is_multipart = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return Err(bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_REQUEST",
            "send the file as multipart/form-data (a part named \"file\" with a filename)",
        ));
    }
    let mut form = Multipart::new(req.headers(), payload);
    while let Some(field) = form.next().await {
        let field = field.map_err(|e| {
            bad(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                format!("malformed multipart body: {e}"),
            )
        })?;
        let Some(original) = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .map(String::from)
        else {
            continue;
        };
        return store(field, &original, &settings).await;
    }
    Err(bad(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "the form has no file part (a part with a filename)",
    ))
}

async fn store(
    mut field: actix_multipart::Field,
    original: &str,
    settings: &UploadSettings,
) -> Result<HttpResponse, ApiError> {
    let filename = sanitize_filename(original);
    let id = uuid::Uuid::new_v4().to_string();
    let dir = settings.home.join("uploads").join(&id);
    let path = dir.join(&filename);
    let failed = |what: &str, e: std::io::Error| {
        tracing::error!(error = %e, dir = %dir.display(), "upload: {what}");
        bad(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("cannot store the upload: {what}: {e}"),
        )
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| failed("create its folder", e))?;
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| failed("create the file", e))?;
    let mut size: u64 = 0;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| {
                bad(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    format!("the upload was cut short: {e}"),
                )
            })?;
            size += chunk.len() as u64;
            if size > settings.max_bytes {
                return Err(bad(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    format!(
                        "the file is larger than {} bytes (uploads.max_bytes)",
                        settings.max_bytes
                    ),
                )
                .close_connection());
            }
            if head.len() < SNIFF_BYTES {
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| failed("write the file", e))?;
        }
        file.flush().await.map_err(|e| failed("write the file", e))
    }
    .await;
    drop(file);
    if let Err(e) = outcome {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e);
    }
    let mime = sniff(&head);
    tracing::info!(path = %path.display(), size, mime = %mime, "file uploaded");
    Ok(HttpResponse::Created().json(json!({
        "path": format!("uploads/{id}/{filename}"),
        "filename": filename,
        "mime": mime,
        "size": size,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_reduced_to_a_safe_last_part() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(
            sanitize_filename("C:\\Users\\me\\photo 1.png"),
            "photo_1.png"
        );
        assert_eq!(sanitize_filename(".hidden"), "hidden");
        assert_eq!(sanitize_filename("..."), "upload");
        assert_eq!(sanitize_filename(""), "upload");
        assert_eq!(sanitize_filename("a;rm -rf.txt"), "a_rm_-rf.txt");
        assert!(sanitize_filename(&"x".repeat(500)).chars().count() <= MAX_NAME_CHARS);
    }

    #[test]
    fn types_come_from_the_bytes() {
        let png = [
            0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D,
        ];
        assert_eq!(sniff(&png), "image/png");
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff("héllo".as_bytes()), "text/plain");
        assert_eq!(sniff(&[0, 1, 2, 0xff]), "application/octet-stream");
    }
}
