//! The read side of an upgraded WebSocket connection, run on the socket itself (handed over
//! by [`super::upgrade`]) instead of through actix-http's HTTP/1 dispatcher, which keeps a
//! fixed 8 KiB read and 8 KiB write buffer for a connection's whole life.
//!
//! Memory per idle connection is the point: the read buffer exists only while bytes are
//! being read and decoded. It is given back whenever the socket has nothing more to read,
//! so an idle connection holds none, and a large frame's buffer does not outlive it.
//! Frames are decoded with actix-http's WebSocket codec (the same frame-size limit as
//! before: a frame over `max_payload` is `ProtocolError::Overflow`) and continuations are
//! joined as actix-ws does (the same errors, the same limit).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use actix_web::web::{Bytes, BytesMut};
use actix_ws::AggregatedMessage;
use bytestring::ByteString;
use futures_util::Stream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::oneshot;

/// How much is read from the socket at a time (the buffer is allocated when the socket is
/// readable and released once it has nothing more).
const READ_CHUNK: usize = 8 * 1024;

/// The socket's read half and the bytes the HTTP layer had already read past the
/// handshake, handed to the session's [`Inbound`] once the `101` is written.
pub struct Handoff {
    /// The connection's read half.
    pub read: OwnedReadHalf,
    /// Bytes read after the handshake request (frames the client sent at once).
    pub leftover: BytesMut,
    /// Dropped with the session's stream: tells the write side the session is gone.
    pub alive: oneshot::Sender<()>,
}

/// Where the upgrade service hands the socket to a session started by the `/ws` handler;
/// travels in the `101` response's extensions.
pub struct PendingSocket(pub oneshot::Sender<Handoff>);

/// A session's inbound messages, read from the socket once it is handed over.
pub struct Inbound {
    waiting: Option<oneshot::Receiver<Handoff>>,
    read: Option<OwnedReadHalf>,
    _alive: Option<oneshot::Sender<()>>,
    buf: BytesMut,
    codec: Codec,
    joined: Joined,
    eof: bool,
}

/// A pair: the [`PendingSocket`] for the upgrade service and the [`Inbound`] stream for the
/// session, with frames and joined continuations limited to `max_payload` bytes.
pub fn inbound(max_payload: usize) -> (PendingSocket, Inbound) {
    let (tx, rx) = oneshot::channel();
    let stream = Inbound {
        waiting: Some(rx),
        read: None,
        _alive: None,
        buf: BytesMut::new(),
        codec: Codec::new().max_size(max_payload),
        joined: Joined::new(max_payload),
        eof: false,
    };
    (PendingSocket(tx), stream)
}

impl Inbound {
    /// Decodes the next whole message from what is buffered, if there is one.
    fn decode(&mut self) -> Option<Result<AggregatedMessage, ProtocolError>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    if let Some(message) = self.joined.push(frame) {
                        return Some(message);
                    }
                }
                Ok(None) => return None,
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// Reads what the socket has; `Ready(Ok(false))` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(read) = self.read.as_ref() else {
            return Poll::Ready(Ok(false));
        };
        loop {
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                // Nothing half-read: give the buffer back before waiting (an idle
                // connection holds none; a large frame's buffer goes with it).
                self.buf = BytesMut::new();
            }
            match read.as_ref().poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) => {}
            }
            self.buf.reserve(READ_CHUNK);
            match read.try_read_buf(&mut self.buf) {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(_) => return Poll::Ready(Ok(true)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl Stream for Inbound {
    type Item = Result<AggregatedMessage, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(waiting) = this.waiting.as_mut() {
            match Pin::new(waiting).poll(cx) {
                Poll::Pending => return Poll::Pending,
                // The upgrade never happened (the response was not sent): no connection.
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(handoff)) => {
                    this.waiting = None;
                    this.read = Some(handoff.read);
                    this._alive = Some(handoff.alive);
                    this.buf = handoff.leftover;
                }
            }
        }
        loop {
            if let Some(message) = this.decode() {
                if message.is_err() {
                    // Nothing after a protocol error is read (the session closes).
                    this.eof = true;
                    this.read = None;
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Some(message));
            }
            if this.eof {
                return Poll::Ready(None);
            }
            match this.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => {
                    this.eof = true;
                    this.read = None;
                }
                Poll::Ready(Err(err)) => {
                    this.eof = true;
                    this.read = None;
                    this.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(ProtocolError::Io(err))));
                }
            }
        }
    }
}

/// Which kind of message continuation frames are building.
enum Kind {
    Text,
    Binary,
}

/// Joins continuation frames into one message, at most `max` bytes (as actix-ws does).
struct Joined {
    max: usize,
    size: usize,
    kind: Kind,
    parts: Vec<Bytes>,
}

impl Joined {
    fn new(max: usize) -> Self {
        Self {
            max,
            size: 0,
            kind: Kind::Binary,
            parts: Vec::new(),
        }
    }

    /// Takes one frame; a whole message (or an error) when there is one.
    fn push(&mut self, frame: Frame) -> Option<Result<AggregatedMessage, ProtocolError>> {
        let message = match frame {
            Frame::Text(bytes) => text(bytes).map(AggregatedMessage::Text),
            Frame::Binary(bytes) => Ok(AggregatedMessage::Binary(bytes)),
            Frame::Ping(bytes) => Ok(AggregatedMessage::Ping(bytes)),
            Frame::Pong(bytes) => Ok(AggregatedMessage::Pong(bytes)),
            Frame::Close(reason) => Ok(AggregatedMessage::Close(reason)),
            Frame::Continuation(item) => return self.continuation(item),
        };
        Some(message)
    }

    fn continuation(&mut self, item: Item) -> Option<Result<AggregatedMessage, ProtocolError>> {
        let (bytes, last) = match item {
            Item::FirstText(bytes) => {
                self.kind = Kind::Text;
                (bytes, false)
            }
            Item::FirstBinary(bytes) => {
                self.kind = Kind::Binary;
                (bytes, false)
            }
            Item::Continue(bytes) => (bytes, false),
            Item::Last(bytes) => (bytes, true),
        };
        self.size += bytes.len();
        if self.size > self.max {
            self.parts = Vec::new();
            if last {
                self.size = 0;
            }
            return Some(Err(ProtocolError::Io(io::Error::other(
                "Exceeded maximum continuation size",
            ))));
        }
        self.parts.push(bytes);
        if !last {
            return None;
        }
        self.size = 0;
        let parts = std::mem::take(&mut self.parts);
        let mut whole = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
        for part in parts {
            whole.extend_from_slice(&part);
        }
        let whole = whole.freeze();
        Some(match self.kind {
            Kind::Text => text(whole).map(AggregatedMessage::Text),
            Kind::Binary => Ok(AggregatedMessage::Binary(whole)),
        })
    }
}

fn text(bytes: Bytes) -> Result<ByteString, ProtocolError> {
    ByteString::try_from(bytes)
        .map_err(|err| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::Text(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn continuations_are_joined_into_one_text() {
        let mut joined = Joined::new(100);
        let first = Frame::Continuation(Item::FirstText(Bytes::from_static(b"he")));
        assert!(joined.push(first).is_none());
        let middle = Frame::Continuation(Item::Continue(Bytes::from_static(b"ll")));
        assert!(joined.push(middle).is_none());
        let last = Frame::Continuation(Item::Last(Bytes::from_static(b"o")));
        match joined.push(last) {
            Some(Ok(AggregatedMessage::Text(t))) => assert_eq!(&*t, "hello"),
            other => panic!("expected hello, got {other:?}"),
        }
        match joined.push(frame("next")) {
            Some(Ok(AggregatedMessage::Text(t))) => assert_eq!(&*t, "next"),
            other => panic!("expected next, got {other:?}"),
        }
    }

    #[test]
    fn continuations_over_the_limit_are_an_error() {
        let mut joined = Joined::new(4);
        let first = Frame::Continuation(Item::FirstBinary(Bytes::from_static(b"abc")));
        assert!(joined.push(first).is_none());
        let last = Frame::Continuation(Item::Last(Bytes::from_static(b"de")));
        assert!(matches!(joined.push(last), Some(Err(ProtocolError::Io(_)))));
        assert!(joined.parts.is_empty());
        assert_eq!(joined.size, 0);
    }

    #[test]
    fn invalid_utf8_text_is_an_error() {
        let mut joined = Joined::new(100);
        let bad = Frame::Text(Bytes::from_static(&[0xff, 0xfe]));
        assert!(matches!(joined.push(bad), Some(Err(ProtocolError::Io(_)))));
    }
}
