//! The WebSocket transport after the upgrade (docs/resilience.md, "Memory per idle
//! connection"): the socket leaves actix-http's dispatcher after the `101`, so bytes the
//! client sent together with the handshake must still reach the session, and a request
//! that asks for `Upgrade: websocket` on a route that is not WebSocket is still answered by
//! the App (then closed).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client frame (masked, as RFC 6455 requires), payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Parses the server's (unmasked) frames in `buf`: (opcode, payload) each.
fn server_frames(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while buf.len() >= 2 {
        let opcode = buf[0] & 0x0f;
        let (len, start) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n if n < 126 => (n as usize, 2),
            _ => break,
        };
        if buf.len() < start + len {
            break;
        }
        frames.push((opcode, buf[start..start + len].to_vec()));
        buf = &buf[start + len..];
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_with_the_handshake_reaches_the_session() {
    let gw = TestGateway::builder().start();
    let port = gw.port;
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    // A ping in the same write as the handshake: it sits in the HTTP layer's buffer when
    // the socket is handed over.
    bytes.extend(client_frame(0x9, b"together"));
    tcp.write_all(&bytes).await.unwrap();
    let read_until_pong = async {
        let mut got = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before the pong: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&chunk[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            if let Some(pong) = server_frames(&got[end + 4..])
                .into_iter()
                .find(|(op, _)| *op == 0xA)
            {
                return pong;
            }
        }
    };
    let pong = tokio::time::timeout(Duration::from_secs(30), read_until_pong)
        .await
        .expect("a pong for the ping sent with the handshake");
    assert_eq!(pong.1, b"together");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_route_asked_to_upgrade_is_answered_by_the_app_and_closed() {
    let gw = TestGateway::builder().start();
    let port = gw.port;
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let request = format!(
        "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nAuthorization: Bearer {}\r\n\r\n",
        gw.token
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer))
        .await
        .expect("the connection is closed after the answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains("\"tree\""), "{answer}");
}
