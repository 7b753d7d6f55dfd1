//! `POST /api/upload`: multipart in, stored under the state dir with a safe name, type
//! sniffed from the bytes, size capped by `uploads.max_bytes`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::Value;
use support::*;

const BOUNDARY: &str = "troupe-test-boundary-7f3a";

/// The smallest valid PNG (1x1, transparent).
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

fn multipart(filename: &str, declared_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nnot a file\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {declared_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post(gw: &TestGateway, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(gw.http("/api/upload"))
        .bearer_auth(&gw.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST /api/upload");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn form_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

#[tokio::test]
async fn an_upload_is_stored_with_a_safe_name_and_its_sniffed_type() {
    let gw = TestGateway::builder().start();
    let (status, body) = post(
        &gw,
        &form_type(),
        multipart("../../evil name.txt", "text/plain", PNG),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["filename"], "evil_name.txt");
    assert_eq!(body["mime"], "image/png", "sniffed, not the declared type");
    assert_eq!(body["size"], PNG.len());
    let path = body["path"].as_str().unwrap();
    assert!(
        path.starts_with("uploads/") && path.ends_with("/evil_name.txt"),
        "{path}"
    );
    assert_eq!(std::fs::read(gw.home().join(path)).unwrap(), PNG);

    let (status, body) = post(
        &gw,
        &form_type(),
        multipart("notes.md", "application/octet-stream", b"# hello\n"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["mime"], "text/plain");
    assert_ne!(body["path"], path, "each upload gets its own folder");

    let unauthenticated = reqwest::Client::new()
        .post(gw.http("/api/upload"))
        .header("content-type", form_type())
        .body(multipart("a.png", "image/png", PNG))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let (status, body) = post(&gw, "application/json", b"{}".to_vec()).await;
    assert_eq!(status, 415, "{body}");
    let no_file = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n--{BOUNDARY}--\r\n"
    );
    let (status, body) = post(&gw, &form_type(), no_file.into_bytes()).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn an_upload_over_the_cap_is_refused_with_413_and_leaves_nothing() {
    let gw = TestGateway::builder()
        .env("TROUPE__UPLOADS__MAX_BYTES", "1000")
        .start();
    let (status, body) = post(
        &gw,
        &form_type(),
        multipart("big.bin", "application/octet-stream", &[7u8; 5000]),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uploads.max_bytes"),
        "{body}"
    );
    let left: Vec<_> = std::fs::read_dir(gw.home().join("uploads"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing stored: {left:?}");
    let (status, body) = post(
        &gw,
        &form_type(),
        multipart("small.bin", "application/octet-stream", &[7u8; 900]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}
