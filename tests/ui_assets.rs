//! The control UI's assets over HTTP (no browser): content types, the strict
//! Content-Security-Policy, ETag revalidation, the size budget, and the WebSocket on `/`
//! still upgrading for a page of this origin while a foreign origin is refused.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use reqwest::header;
use support::TestGateway;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ASSETS: &[(&str, &str)] = &[
    ("/", "text/html; charset=utf-8"),
    ("/ui/app.css", "text/css; charset=utf-8"),
    ("/ui/app.js", "text/javascript; charset=utf-8"),
    ("/ui/conn.js", "text/javascript; charset=utf-8"),
    ("/ui/dom.js", "text/javascript; charset=utf-8"),
    ("/ui/chat.js", "text/javascript; charset=utf-8"),
    ("/ui/tree.js", "text/javascript; charset=utf-8"),
    ("/ui/panels.js", "text/javascript; charset=utf-8"),
    ("/ui/icon.svg", "image/svg+xml"),
];

#[tokio::test]
async fn ui_assets_have_their_content_type_a_strict_csp_and_etags() {
    let gw = TestGateway::builder().start();
    let http = reqwest::Client::new();
    let mut total = 0;
    for (path, content_type) in ASSETS {
        let res = http.get(gw.http(path)).send().await.expect("GET");
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers().clone();
        assert_eq!(h[header::CONTENT_TYPE], *content_type, "{path}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            csp.contains(&format!(
                "connect-src 'self' ws://127.0.0.1:{p} wss://127.0.0.1:{p};",
                p = gw.port
            )),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let etag = h[header::ETAG].to_str().unwrap().to_string();
        total += res.bytes().await.expect("body").len();
        let again = http
            .get(gw.http(path))
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .expect("conditional GET");
        assert_eq!(again.status(), 304, "{path} revalidates with its ETag");
        assert_eq!(again.headers()[header::ETAG], etag.as_str());
    }
    assert!(total < 200 * 1024, "the UI is {total} bytes");
    let page = http
        .get(gw.http("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<label for=\"secret\">"),
        "a labelled token field"
    );
    let missing = http.get(gw.http("/ui/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("nope.js"));
    let head = http.head(gw.http("/ui/app.js")).send().await.unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn a_page_of_this_origin_may_open_the_websocket_and_a_foreign_one_may_not() {
    let gw = TestGateway::builder().start();
    for path in ["/", "/ws"] {
        let mut req = format!("ws://127.0.0.1:{}{path}", gw.port)
            .into_client_request()
            .unwrap();
        let origin = format!("http://127.0.0.1:{}", gw.port);
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let (_ws, res) = tokio_tungstenite::connect_async(req)
            .await
            .expect("same-origin upgrade");
        assert_eq!(res.status(), 101, "{path}");

        let mut foreign = format!("ws://127.0.0.1:{}{path}", gw.port)
            .into_client_request()
            .unwrap();
        foreign
            .headers_mut()
            .insert("origin", "http://evil.example".parse().unwrap());
        let refused = tokio_tungstenite::connect_async(foreign).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), 403, "{path}")
            }
            other => panic!("a foreign origin must be refused on {path}: {other:?}"),
        }
    }
}
