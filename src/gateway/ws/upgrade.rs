//! actix-http's upgrade service for WebSocket handshakes: the HTTP/1 dispatcher hands every
//! request that asks for `Upgrade: websocket` here with its socket, and lets go of its own
//! 8 KiB read and write buffers.
//!
//! The request still goes through the whole App (the edge middleware's Host, Origin and
//! connection-bound checks, the `/ws` and `/` routes), as any other request does. When the
//! App answers `101` with a [`PendingSocket`] (the `/ws` handler does, having started the
//! session), the `101` is written, the socket's read half goes to the session's
//! [`Inbound`](super::transport::Inbound) stream, and this future writes the session's
//! outbound frames to the write half until the session ends. Any other answer (a refusal,
//! a route that is not WebSocket) is written whole and the connection is closed.
//!
//! The future lives as long as the connection: it keeps the connection's slot in
//! `gateway.max_connections` (not the request, whose head holds slices of the dispatcher's
//! read buffer), and actix-server counts it as open.

use std::rc::Rc;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::body::{BodySize, MessageBody};
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, Request, StatusCode};
use actix_service::{Service, ServiceFactory, fn_factory, fn_service};
use actix_web::dev::{AppConfig, ServiceResponse};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::transport::{Handoff, PendingSocket};
use crate::http::connections::AcceptedConnection;
use actix_web::web::BytesMut;

/// What went wrong while serving an upgrade request (logged by actix-http).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Writing the answer to the handshake failed.
    #[error("cannot write the answer to an upgrade request: {0}")]
    Write(std::io::Error),
}

impl From<UpgradeError> for actix_http::Response<actix_http::body::BoxBody> {
    fn from(err: UpgradeError) -> Self {
        actix_http::Response::with_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            actix_http::body::BoxBody::new(err.to_string()),
        )
    }
}

/// The upgrade service factory for one worker, answering through its own instance of the
/// App built by `app` (the same App as the worker's plain HTTP service).
pub fn factory<A, B>(
    app: A,
) -> impl ServiceFactory<
    (Request, Framed<TcpStream, Codec>),
    Config = (),
    Response = (),
    Error = UpgradeError,
    InitError = (),
>
where
    A: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    A::Service: 'static,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let service = app.new_service(AppConfig::default());
        async move {
            let service = Rc::new(service.await?);
            Ok::<_, ()>(fn_service(move |(req, framed)| {
                serve(service.clone(), req, framed)
            }))
        }
    })
}

/// Answers one upgrade request through the App; on `101` + [`PendingSocket`], runs the
/// connection's write side until the session ends.
async fn serve<S, B>(
    app: Rc<S>,
    req: Request,
    mut framed: Framed<TcpStream, Codec>,
) -> Result<(), UpgradeError>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    let (http_req, response) = match app.call(req).await {
        Ok(res) => {
            let (http_req, response) = res.into_parts();
            (Some(http_req), response.map_into_boxed_body())
        }
        Err(err) => (None, err.error_response()),
    };
    let mut response: actix_http::Response<_> = response.into();
    let pending = response.extensions_mut().remove::<PendingSocket>();
    let (mut head, body) = response.into_parts();
    match pending {
        Some(pending) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let size = body.size();
            framed
                .send(Message::Item((head, size)))
                .await
                .map_err(UpgradeError::Write)?;
            // Keep only the connection's slot: the request's head holds slices of the
            // dispatcher's 8 KiB read buffer, which must not live as long as the socket.
            let slot = http_req
                .as_ref()
                .and_then(|r| r.conn_data::<AcceptedConnection>())
                .and_then(|c| c.admission.as_ref().ok().cloned());
            drop(http_req);
            // Only the socket and a copy of the unread bytes go on; the codec and both of
            // the dispatcher's buffers are dropped here.
            let (io, leftover) = {
                let parts = framed.into_parts();
                (parts.io, unread(parts.read_buf))
            };
            let (read, write) = io.into_split();
            let (alive, session_gone) = oneshot::channel();
            let handoff = Handoff {
                read,
                leftover,
                alive,
            };
            if pending.0.send(handoff).is_err() {
                // The session is already gone; nothing will be written.
                return Ok(());
            }
            write_frames(write, body, session_gone).await;
            // The connection's slot is given back only now.
            drop(slot);
            Ok(())
        }
        _ => {
            let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
            head.head_mut().set_connection_type(ConnectionType::Close);
            framed
                .send(Message::Item((head, BodySize::Sized(bytes.len() as u64))))
                .await
                .map_err(UpgradeError::Write)?;
            if !bytes.is_empty() {
                framed
                    .send(Message::Chunk(Some(bytes)))
                    .await
                    .map_err(UpgradeError::Write)?;
            }
            framed
                .send(Message::Chunk(None))
                .await
                .map_err(UpgradeError::Write)?;
            drop(http_req);
            Ok(())
        }
    }
}

/// The bytes the client sent after the handshake request, copied out of the dispatcher's
/// read buffer, which is dropped.
///
/// The read buffer must not be kept, even empty: it is what is left of the 8 KiB allocation
/// that actix-http's `Dispatcher::new` made (`read_buf`, handed over by
/// `InnerDispatcher::upgrade` with `mem::take`) after the request head was split off it
/// (`split_to(..).freeze()` in `h1::decoder`; the header values are slices of it). Holding
/// any part of it holds all 8 KiB for the connection's life.
fn unread(read_buf: BytesMut) -> BytesMut {
    BytesMut::from(&read_buf[..])
}

/// How long frames still queued (a close frame above all) may take to go out once the
/// session's actor is gone, before the connection is dropped.
const LINGER: Duration = Duration::from_secs(5);

/// Writes what the session sends (actix-ws's encoded frames) to the socket, straight from
/// the session's buffers, until the session ends or the client stops taking them; at most
/// [`LINGER`] after the session's actor is gone.
async fn write_frames(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    body: actix_http::body::BoxBody,
    session_gone: oneshot::Receiver<()>,
) {
    let mut body = std::pin::pin!(body);
    let mut gone = Gone {
        alive: Some(session_gone),
        at: None,
    };
    loop {
        let next = std::future::poll_fn(|cx| body.as_mut().poll_next(cx));
        let chunk = tokio::select! {
            chunk = next => chunk,
            () = gone.lingered() => return,
        };
        let Some(Ok(bytes)) = chunk else {
            break;
        };
        tokio::select! {
            written = write.write_all(&bytes) => {
                if written.is_err() {
                    return;
                }
            }
            () = gone.lingered() => return,
        }
    }
    let _ = write.shutdown().await;
}

/// Whether, and since when, the session's actor is gone.
struct Gone {
    alive: Option<oneshot::Receiver<()>>,
    at: Option<Instant>,
}

impl Gone {
    /// Resolves [`LINGER`] after the session's actor is gone.
    async fn lingered(&mut self) {
        if let Some(alive) = self.alive.as_mut() {
            let _ = alive.await;
            self.alive = None;
            self.at = Some(Instant::now());
        }
        match self.at {
            Some(at) => tokio::time::sleep_until(at + LINGER).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read buffer as the HTTP/1 decoder leaves it: the request head split off the front
    /// (its header values keep slices of it), the rest (maybe empty) handed to the upgrade.
    fn after_head(sent: &[u8], head_len: usize) -> (actix_web::web::Bytes, BytesMut) {
        let mut read_buf = BytesMut::with_capacity(8 * 1024);
        read_buf.extend_from_slice(sent);
        let head = read_buf.split_to(head_len).freeze();
        (head, read_buf)
    }

    #[test]
    fn the_unread_bytes_do_not_keep_the_dispatchers_read_buffer() {
        let (head, rest) = after_head(b"GET /ws HTTP/1.1\r\n\r\n", 20);
        assert!(rest.is_empty());
        assert!(!head.is_unique(), "the rest still shares the allocation");
        let leftover = unread(rest);
        assert!(leftover.is_empty());
        assert!(
            head.is_unique(),
            "the leftover must not share the read buffer"
        );
    }

    #[test]
    fn bytes_sent_with_the_handshake_are_kept_in_a_copy() {
        let (head, rest) = after_head(b"GET /ws HTTP/1.1\r\n\r\n\x81\x02hi", 20);
        let leftover = unread(rest);
        assert_eq!(&leftover[..], b"\x81\x02hi");
        assert!(
            head.is_unique(),
            "the leftover must not share the read buffer"
        );
    }
}
