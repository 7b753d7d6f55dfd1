//! The control UI (DESIGN.md §10-11): one page at `GET /` and its assets under `/ui/`,
//! hand-written HTML, CSS and JavaScript modules embedded in the binary (no CDN, no build
//! step). Every answer carries an `ETag` (a hash of the bytes, computed at compile time),
//! `Cache-Control: no-cache` (revalidate; a `304` costs one round trip on loopback) and a
//! strict `Content-Security-Policy`: scripts, styles and images only from this origin, and
//! WebSockets only to this same host. The page itself never takes a gateway URL or token
//! from the query string or the fragment (see docs/control-ui.md).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use super::ApiError;

/// One embedded file.
pub struct Asset {
    /// The name under `/ui/` (`index.html` is served at `/`).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static str,
    /// FNV-1a hash of `body`, the `ETag`.
    pub hash: u64,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static str) -> Self {
        Self {
            name,
            content_type,
            body,
            hash: fnv1a(body.as_bytes()),
        }
    }
}

/// FNV-1a, 64 bits: enough to tell versions of a file apart for `ETag`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every embedded file of the UI.
pub const ASSETS: &[Asset] = &[
    Asset::new(
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    Asset::new(
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/app.css"),
    ),
    Asset::new("app.js", JS, include_str!("../../ui/app.js")),
    Asset::new("conn.js", JS, include_str!("../../ui/conn.js")),
    Asset::new("dom.js", JS, include_str!("../../ui/dom.js")),
    Asset::new("chat.js", JS, include_str!("../../ui/chat.js")),
    Asset::new("tree.js", JS, include_str!("../../ui/tree.js")),
    Asset::new("panels.js", JS, include_str!("../../ui/panels.js")),
    Asset::new("cron.js", JS, include_str!("../../ui/cron.js")),
    Asset::new("config.js", JS, include_str!("../../ui/config.js")),
    Asset::new("logs.js", JS, include_str!("../../ui/logs.js")),
    Asset::new(
        "icon.svg",
        "image/svg+xml",
        include_str!("../../ui/icon.svg"),
    ),
];

/// `GET /` (not a WebSocket upgrade): the page.
pub fn index(req: &HttpRequest) -> HttpResponse {
    match ASSETS.iter().find(|a| a.name == "index.html") {
        Some(page) => serve(req, page),
        None => missing("index.html"),
    }
}

/// `GET /ui/{file}`: one asset, or 404 naming it.
#[utoipa::path(get, path = "/ui/{file}", tag = "ui", security(()), params(("file" = String, Path, description = "Asset name")), responses((status = 200, description = "The asset", body = String, content_type = "application/octet-stream"), (status = 404, description = "No such asset", body = Object)))]
pub async fn asset(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    let name = file.into_inner();
    match ASSETS
        .iter()
        .find(|a| a.name == name && a.name != "index.html")
    {
        Some(found) => serve(&req, found),
        None => missing(&name),
    }
}

fn missing(name: &str) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("the control UI has no file {name:?}"),
    )
    .error_response()
}

fn serve(req: &HttpRequest, asset: &Asset) -> HttpResponse {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, csp(req)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if fresh {
        return res.finish();
    }
    res.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    ))
    .body(asset.body)
}

/// The policy: everything from this origin only; WebSockets to this same host (named in
/// `connect-src` as well as `'self'`, for browsers whose `'self'` does not cover `ws:`).
/// The `Host` was checked by the edge middleware; it is named only when it is plain
/// host[:port] text.
pub fn csp(req: &HttpRequest) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']'))
        });
    let sockets = match host {
        Some(h) => format!(" ws://{h} wss://{h}"),
        None => String::new(),
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_stay_under_200_kb() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 200 * 1024, "the UI is {total} bytes");
    }

    #[test]
    fn no_asset_reads_the_query_string_or_fragment() {
        for a in ASSETS {
            for bad in [
                "location.search",
                "location.hash",
                "URLSearchParams",
                "location.href",
            ] {
                assert!(!a.body.contains(bad), "{} uses {bad}", a.name);
            }
        }
    }

    #[test]
    fn no_asset_loads_anything_from_elsewhere() {
        for a in ASSETS {
            // The SVG namespace is a name, not a URL anything loads.
            let body = a.body.replace("http://www.w3.org/2000/svg", "");
            assert!(!body.contains("http://"), "{} names an http URL", a.name);
            assert!(!body.contains("https://"), "{} names an https URL", a.name);
            assert!(!body.contains("style=\""), "{} has an inline style", a.name);
        }
    }

    #[test]
    fn every_script_the_page_imports_is_embedded() {
        for a in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") || a.name == "index.html")
        {
            let refs = a
                .body
                .split("/ui/")
                .skip(1)
                .chain(a.body.split("from \"./").skip(1));
            for part in refs {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                assert!(
                    ASSETS.iter().any(|x| x.name == name),
                    "{} refers to /ui/{name}, which is not embedded",
                    a.name
                );
            }
        }
    }

    #[test]
    fn etags_differ_between_files() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        let mut hashes: Vec<u64> = ASSETS.iter().map(|a| a.hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), ASSETS.len());
    }
}
