//! The drop guard that reports a child's exit to its supervisor, and the panic hook that
//! remembers the panic message for it.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::ChildExited;
use super::liveness::Liveness;
use super::spec::ChildLink;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitReason {
    /// Stopped on purpose.
    Normal,
    /// Stopped itself after an error, was found hung, or failed to start.
    Error,
    /// A handler panicked.
    Panic,
}

impl ExitReason {
    /// Its name on the wire (`normal`, `error`, `panic`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Error => "error",
            Self::Panic => "panic",
        }
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs a process-wide panic hook that logs the panic through `tracing` and keeps its
/// message for the exit report of the actor being unwound on this thread.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic with a non-string payload".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(panic = %text, %location, "actor panicked");
        let _ = LAST_PANIC.try_with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = Some(text);
            }
        });
    }));
}

fn take_last_panic() -> Option<String> {
    LAST_PANIC
        .try_with(|cell| cell.try_borrow_mut().ok().and_then(|mut s| s.take()))
        .ok()
        .flatten()
}

/// Kept in a child's state; when the child is dropped (stopped, panicked or killed) it tells
/// the supervisor. Never panics.
pub struct ExitGuard {
    liveness: Liveness,
    link: Option<ChildLink>,
    error: Option<String>,
}

impl ExitGuard {
    pub(super) fn new(link: ChildLink) -> Self {
        Self {
            liveness: link.liveness.clone(),
            link: Some(link),
            error: None,
        }
    }

    /// The child's progress counters: call [`Liveness::attach`] from `started()`, and hold
    /// [`Liveness::busy`] across legitimate long work.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Records that the coming stop is an error exit, with its cause.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.error = Some(message.into());
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        let (reason, message) = if std::thread::panicking() {
            (ExitReason::Panic, take_last_panic())
        } else if let Some(error) = self.error.take() {
            (ExitReason::Error, Some(error))
        } else {
            (ExitReason::Normal, None)
        };
        link.supervisor.do_send(ChildExited {
            id: link.id,
            generation: link.generation,
            reason,
            message,
        });
    }
}
