//! Child specifications: what a supervisor needs to start, watch and restart a child.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, ArbiterHandle, Handler, Recipient};
use serde::{Deserialize, Serialize};

use super::SupervisorActor;
use super::guard::ExitGuard;
use super::liveness::Liveness;
use super::roster::Roster;
use crate::messages::{InjectFault, Ping, Shutdown};

/// The name of a child in the tree, unique among its siblings (`store`, `agent:main`, `ws:<uuid>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChildId(pub String);

impl ChildId {
    /// Builds an id from anything string-like.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a child that exited is started again (OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (error or panic).
    Transient,
    /// Never restarted; removed from the tree when it exits.
    Temporary,
}

/// Which children are restarted when one exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child (the others are stopped first, in reverse start order).
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

/// Restart intensity: at most `max_restarts` restarts within `period`, else escalate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub period: Duration,
}

/// Exponential restart delay with jitter, for children whose failures are often external
/// (a channel whose platform is down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub min: Duration,
    /// Ceiling for the delay.
    pub max: Duration,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// The function that starts (and restarts) a child, given the link it reports its exit on.
/// `Send`, so a child supervisor can be built on its own arbiter.
pub type StartFn = Box<dyn FnMut(ChildLink) -> Result<ChildHandle, StartError> + Send>;

/// Everything the supervisor knows about a child before it starts it.
pub struct ChildSpec {
    /// Unique among siblings.
    pub id: ChildId,
    /// What kind of node this is in the status tree (`store`, `agent`, `supervisor`, `ws`).
    pub kind: &'static str,
    /// When to restart it.
    pub restart: Restart,
    /// How long a graceful stop may take before the child is killed.
    pub shutdown: Duration,
    /// Delay between restarts, if any.
    pub backoff: Option<Backoff>,
    /// Whether the supervisor watches its progress (see [`Liveness`]) to detect a hang.
    pub liveness: bool,
    /// Starts the child.
    pub start: StartFn,
}

impl ChildSpec {
    /// A permanent, watched child with a 5 s shutdown timeout and no backoff. The child must
    /// call `guard.liveness().attach(ctx)` in `started()` (or the spec must say
    /// [`ChildSpec::without_liveness`]), else it is taken for hung.
    pub fn new(
        id: impl Into<String>,
        kind: &'static str,
        start: impl FnMut(ChildLink) -> Result<ChildHandle, StartError> + Send + 'static,
    ) -> Self {
        Self {
            id: ChildId::new(id),
            kind,
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            backoff: None,
            liveness: true,
            start: Box::new(start),
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the graceful shutdown timeout.
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// Restarts with exponential backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Turns off hang detection (for children that do not beat).
    pub fn without_liveness(mut self) -> Self {
        self.liveness = false;
        self
    }
}

/// Handed to a child when it starts: who it is and where its exit is reported.
#[derive(Clone)]
pub struct ChildLink {
    /// The child's id.
    pub id: ChildId,
    /// Incremented on every start, so a stale exit report is ignored.
    pub generation: u64,
    /// The parent supervisor.
    pub supervisor: Addr<SupervisorActor>,
    /// Progress counters the child bumps and the supervisor reads.
    pub liveness: Liveness,
    /// Where a child supervisor lists its own children's kill switches (see [`Roster`]).
    pub roster: Roster,
}

impl ChildLink {
    /// The drop guard the child keeps in its state: its drop reports the exit.
    pub fn guard(&self) -> ExitGuard {
        ExitGuard::new(self.clone())
    }
}

/// The running child as the supervisor holds it: type-erased address plus control inboxes.
pub struct ChildHandle {
    /// The typed `Addr<A>`, for the registry ([`ChildHandle::addr_of`]).
    pub addr: Arc<dyn Any + Send + Sync>,
    /// Liveness probe.
    pub ping: Recipient<Ping>,
    /// Fault injection.
    pub fault: Recipient<InjectFault>,
    /// Graceful stop.
    pub shutdown: Recipient<Shutdown>,
    /// Set when the child is itself a supervisor.
    pub subtree: Option<Addr<SupervisorActor>>,
    /// A dedicated arbiter to stop if the child hangs or must be killed.
    pub arbiter: Option<ArbiterHandle>,
    /// The task running the child's context, aborted if it hangs (children on a shared
    /// arbiter, like WS sessions).
    pub abort: Option<tokio::task::AbortHandle>,
    /// Releases what a hung child holds that others see (a WS session's socket).
    pub on_kill: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl ChildHandle {
    /// The handle of an actor that answers the control messages.
    pub fn of<A>(addr: Addr<A>) -> Self
    where
        A: Actor + Handler<Ping> + Handler<InjectFault> + Handler<Shutdown>,
        A::Context: ToEnvelope<A, Ping> + ToEnvelope<A, InjectFault> + ToEnvelope<A, Shutdown>,
    {
        Self {
            ping: addr.clone().recipient(),
            fault: addr.clone().recipient(),
            shutdown: addr.clone().recipient(),
            addr: Arc::new(addr),
            subtree: None,
            arbiter: None,
            abort: None,
            on_kill: None,
        }
    }

    /// The handle of a child supervisor: its subtree shows in the status tree.
    pub fn of_supervisor(addr: Addr<SupervisorActor>) -> Self {
        let mut handle = Self::of(addr.clone());
        handle.subtree = Some(addr);
        handle
    }

    /// Marks the arbiter the child runs on as its own, stopped with it.
    pub fn on_arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// Marks the task that runs the child's context, aborted if the child must be killed.
    pub fn abortable(mut self, abort: tokio::task::AbortHandle) -> Self {
        self.abort = Some(abort);
        self
    }

    /// Runs `release` when the child is killed (not when it stops by itself).
    pub fn on_kill(mut self, release: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_kill = Some(Arc::new(release));
        self
    }

    /// Kills the child without its cooperation: asks it to stop, releases what it holds,
    /// stops its arbiter and aborts its task. A handler blocking its thread cannot be
    /// killed this way (nothing in Rust can stop a thread from outside): the caller checks
    /// [`ChildHandle::gone`] afterwards.
    pub fn kill(&self) {
        let _ = self.shutdown.try_send(Shutdown);
        if let Some(release) = &self.on_kill {
            release();
        }
        if let Some(arbiter) = &self.arbiter {
            arbiter.stop();
        }
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }

    /// Whether the child's context is gone (its mailbox has no receiver any more).
    pub fn gone(&self) -> bool {
        !self.shutdown.connected()
    }

    /// The typed address, if the child is an `A`.
    pub fn addr_of<A: Actor>(&self) -> Option<Addr<A>> {
        self.addr.downcast_ref::<Addr<A>>().cloned()
    }
}
