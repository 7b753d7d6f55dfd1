//! `GET /api/files/{path}`: downloads a file a client was given as an attachment: an upload
//! (`uploads/<uuid>/<name>`) or a file an agent's reply sent with an `[IMAGE:]` / `[FILE:]`
//! marker (`agents/<id>/...`), by the `path` (or `url`) its attachment carries.
//!
//! Confinement is the attachments' own: the path is relative, has no `..` part, starts with
//! `uploads/` or `agents/<configured agent id>/`, and once symlinks are followed still names
//! a file inside that folder; anything else is refused (400 for a malformed path, 404 for a
//! file that is not there or not servable). The answer is streamed by `actix-files` (Range
//! and conditional requests work) with the sniffed type, `X-Content-Type-Options: nosniff`,
//! a sandboxing `Content-Security-Policy`, and a `Content-Disposition` naming the file:
//! `inline` only for raster images and plain text types, `attachment` for everything
//! else (HTML and SVG included), so a file can never script the gateway's origin.

use std::path::{Component, Path, PathBuf};

use crate::gateway::Gateway;
use actix_files::NamedFile;
use actix_web::http::StatusCode;
use actix_web::http::header::{
    self, Charset, ContentDisposition, DispositionParam, DispositionType, ExtendedValue,
};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use troupe_actors::attachments::IMAGE_TYPES;
use troupe_actors::attachments::files::{plain_relative, sniff_file};

use super::{ApiError, authorize};

/// Types shown in the browser (`inline`); every other type is offered as a download.
/// (Not PDF: browsers' PDF viewers do not run under the sandboxing CSP.)
const INLINE_TYPES: &[&str] = &[
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
];

/// Names of files a browser could run as a page or script: always downloads, whatever their
/// bytes look like.
const ACTIVE_EXTENSIONS: &[&str] = &[
    "htm", "html", "xhtml", "shtml", "svg", "svgz", "xml", "xsl", "js", "mjs",
];

/// `?download=true` offers even an inline type as a download.
#[derive(Deserialize)]
pub struct DownloadQuery {
    /// Always `Content-Disposition: attachment`.
    #[serde(default)]
    download: bool,
}

fn bad_path(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PATH", message)
}

fn not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
}

/// The file `raw` names under `state_dir`, confined as described in the module docs.
pub fn resolve(state_dir: &Path, agents: &[String], raw: &str) -> Result<PathBuf, ApiError> {
    let rel = plain_relative(raw).map_err(bad_path)?;
    let mut parts = rel.components().filter_map(|c| match c {
        Component::Normal(p) => Some(p),
        _ => None,
    });
    let (root, shown) = match parts.next().and_then(|p| p.to_str()) {
        Some("uploads") => (state_dir.join("uploads"), "uploads/".to_string()),
        Some("agents") => {
            let id = parts.next().and_then(|p| p.to_str()).unwrap_or("");
            if !agents.iter().any(|a| a == id) {
                return Err(not_found(format!(
                    "{raw:?}: no configured agent {id:?}; agents' files are under agents/<id>/"
                )));
            }
            (state_dir.join("agents").join(id), format!("agents/{id}/"))
        }
        _ => {
            return Err(not_found(format!(
                "{raw:?} is not served: only uploads (uploads/...) and agents' files (agents/<id>/...) are"
            )));
        }
    };
    let rest: PathBuf = parts.collect();
    if rest.as_os_str().is_empty() {
        return Err(not_found(format!("{raw:?} is a folder, not a file")));
    }
    let root = root
        .canonicalize()
        .map_err(|_| not_found(format!("{raw:?} does not exist")))?;
    let file = root
        .join(&rest)
        .canonicalize()
        .map_err(|_| not_found(format!("{raw:?} does not exist")))?;
    if !file.starts_with(&root) {
        return Err(not_found(format!(
            "{raw:?} leads outside {shown} (a symlink out); it is not served"
        )));
    }
    if !file.is_file() {
        return Err(not_found(format!("{raw:?} is not a file")));
    }
    Ok(file)
}

/// Whether a file of this type and name may be shown by the browser rather than downloaded.
pub fn shown_inline(mime: &str, file: &Path) -> bool {
    let active = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| ACTIVE_EXTENSIONS.contains(&e.as_str()));
    !active && (IMAGE_TYPES.contains(&mime) || INLINE_TYPES.contains(&mime))
}

/// The `Content-Type` for a sniffed type: text (sniffed only when it is UTF-8) says so.
fn content_type(mime: &str) -> actix_web::mime::Mime {
    let text = mime.starts_with("text/") || mime == "application/json";
    let full = if text {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    full.parse()
        .unwrap_or(actix_web::mime::APPLICATION_OCTET_STREAM)
}

/// `Content-Disposition` naming `file`: an ASCII `filename` and, for other names, the
/// UTF-8 `filename*` too.
fn disposition(file: &Path, inline: bool) -> ContentDisposition {
    let name = troupe_actors::attachments::files::safe_name(
        &file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    let mut parameters = vec![DispositionParam::Filename(ascii.clone())];
    if ascii != name {
        parameters.push(DispositionParam::FilenameExt(ExtendedValue {
            charset: Charset::Ext("UTF-8".into()),
            language_tag: None,
            value: name.into_bytes(),
        }));
    }
    ContentDisposition {
        disposition: if inline {
            DispositionType::Inline
        } else {
            DispositionType::Attachment
        },
        parameters,
    }
}

/// `GET /api/files/{path}`.
#[utoipa::path(get, path = "/api/files/{path}", tag = "files",
    params(
        ("path" = String, Path, description = "The attachment's `path` (relative to the state dir): `uploads/<uuid>/<name>` or `agents/<id>/...`"),
        ("download" = Option<bool>, Query, description = "Always answer with `Content-Disposition: attachment`"),
        ("Range" = Option<String>, Header, description = "A byte range (`bytes=0-99`): 206 with that part"),
    ),
    responses(
        (status = 200, description = "The file, with its sniffed Content-Type, Content-Disposition (inline for raster images and plain text; attachment otherwise) and `X-Content-Type-Options: nosniff`", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "INVALID_PATH: absolute, empty or with a `..` part", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such file, not under uploads/ or agents/<id>/, or a symlink out", body = crate::http::openapi::ErrorBody),
    ))]
pub async fn download(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
    q: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let agents = crate::gateway::turns::agent_ids(&gateway);
    let file = resolve(&gateway.edge.state_dir, &agents, &path)?;
    let opened = web::block(move || {
        let mime = sniff_file(&file);
        NamedFile::open(&file).map(|named| (named, mime, file))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!("cannot read the file now: {e}"),
        )
    })?;
    let (named, mime, file) =
        opened.map_err(|e| not_found(format!("{:?} cannot be opened: {e}", path.as_str())))?;
    let inline = !q.download && shown_inline(&mime, &file);
    let mut res = named
        .set_content_type(content_type(&mime))
        .set_content_disposition(disposition(&file, inline))
        .into_response(&req);
    let headers = res.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'none'; img-src 'self'; sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-cache"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_uploads_and_configured_agents_files_are_served() {
        let home = tempfile::tempdir().unwrap();
        let state = home.path();
        std::fs::create_dir_all(state.join("uploads/u1")).unwrap();
        std::fs::create_dir_all(state.join("agents/main/memory")).unwrap();
        std::fs::write(state.join("uploads/u1/a.png"), b"x").unwrap();
        std::fs::write(state.join("agents/main/memory/n.md"), b"# n").unwrap();
        std::fs::write(state.join("config.toml"), b"secret").unwrap();
        let agents = vec!["main".to_string()];
        assert!(resolve(state, &agents, "uploads/u1/a.png").is_ok());
        assert!(resolve(state, &agents, "agents/main/memory/n.md").is_ok());
        let status = |raw: &str| resolve(state, &agents, raw).expect_err(raw).status.as_u16();
        assert_eq!(status("../config.toml"), 400);
        assert_eq!(status("uploads/../config.toml"), 400);
        assert_eq!(status("/etc/passwd"), 400);
        assert_eq!(status(""), 400);
        assert_eq!(status("config.toml"), 404);
        assert_eq!(status("agents/other/x.md"), 404);
        assert_eq!(status("uploads/u1"), 404, "a folder");
        assert_eq!(status("uploads"), 404);
        assert_eq!(status("uploads/u1/missing.png"), 404);
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(state.join("config.toml"), state.join("uploads/u1/l"))
                .unwrap();
            let err = resolve(state, &agents, "uploads/u1/l").unwrap_err();
            assert_eq!(err.status.as_u16(), 404);
            assert!(err.to_string().contains("leads outside"), "{err}");
        }
    }

    #[test]
    fn html_and_svg_are_never_inline() {
        let plain = Path::new("a.txt");
        assert!(shown_inline("image/png", Path::new("a.png")));
        assert!(shown_inline("text/plain", plain));
        for mime in [
            "text/html",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/octet-stream",
            "application/pdf",
        ] {
            assert!(!shown_inline(mime, plain), "{mime}");
        }
        for name in ["page.html", "logo.SVG", "x.xhtml", "app.js"] {
            assert!(!shown_inline("text/plain", Path::new(name)), "{name}");
        }
        assert_eq!(
            content_type("text/markdown").to_string(),
            "text/markdown; charset=utf-8"
        );
        assert_eq!(content_type("image/png").to_string(), "image/png");
    }
}
