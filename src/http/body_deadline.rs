//! A deadline on receiving a request body: a client that trickles (or stalls) its body
//! past `gateway.request_timeout_ms` gets 408 and its connection is closed, instead of
//! holding a worker's connection forever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::Sleep;

/// The body stream, failing with a `TimedOut` I/O error once the deadline passes.
pub struct DeadlinePayload {
    inner: Payload,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    expired: bool,
}

impl DeadlinePayload {
    /// Wraps `inner`; the whole body must arrive within `limit` from now.
    pub fn new(inner: Payload, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            expired: false,
        }
    }
}

/// Whether a payload error is this module's deadline.
pub fn is_deadline(err: &PayloadError) -> bool {
    matches!(err, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

impl Stream for DeadlinePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let message = format!(
                "the request body did not arrive within {} ms (gateway.request_timeout_ms)",
                self.limit.as_millis()
            );
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                message,
            )))));
        }
        Poll::Pending
    }
}
