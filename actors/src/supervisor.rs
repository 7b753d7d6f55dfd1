//! The supervisor actor: starts children from specs, detects their death (drop guard) and
//! hangs (no progress, see [`Liveness`]), restarts them by strategy within a restart
//! intensity (stopping the old instances first, OTP style), escalates beyond it, routes
//! commands by child id, and describes its subtree.

mod change;
mod guard;
mod handlers;
mod intensity;
mod liveness;
mod registry;
mod restart;
mod roster;
mod spec;
mod tree_node;
mod watch;

/// What happened to a child, as the `supervisor` event names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Happened {
    /// First start.
    Started,
    /// Started again after an exit, a restart request or a config change.
    Restarted,
    /// Exited (a restart may follow).
    Exited,
    /// Exited past its supervisor's restart intensity: the supervisor escalates.
    GaveUp,
    /// Left the tree (config change).
    Removed,
}

impl Happened {
    fn name(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Restarted => "restarted",
            Self::Exited => "exited",
            Self::GaveUp => "gave_up",
            Self::Removed => "removed",
        }
    }
}

/// Tells every connected client that a child exited, (re)started, was given up on or
/// removed: the `supervisor` event, `{supervisor, id, kind, event, change, reason, message,
/// restarts, lastExit, ts, at}` (`change` is the older name: `started` for any start),
/// and updates the health summary. WS sessions (temporary children of `clients`) come
/// and go with their connections and are not announced, unless one crashed.
fn announce(supervisor: &ChildId, id: &ChildId, happened: Happened, child: &Child) {
    let exit = child.last_exit.as_ref();
    let (reason, message) = match happened {
        Happened::Started => (None, None),
        Happened::GaveUp => (Some("intensity"), exit.and_then(|e| e.message.as_deref())),
        _ => (
            exit.map(|e| e.reason.name()),
            exit.and_then(|e| e.message.as_deref()),
        ),
    };
    let change = match happened {
        Happened::Started | Happened::Restarted => "started",
        other => other.name(),
    };
    let ts = now_ms();
    // The health summary first: a client that sees this event and asks `health` gets
    // the state after it.
    if child.spec.restart != Restart::Temporary {
        let health = match happened {
            Happened::Started | Happened::Restarted => health::Change::Up,
            Happened::Removed => health::Change::Removed,
            Happened::Exited => health::Change::Down("exited", reason),
            Happened::GaveUp => health::Change::Down("gave_up", reason),
        };
        health::note(&supervisor.0, &id.0, health, ts);
    } else if matches!(happened, Happened::Removed) && child.spec.kind == "channel" {
        // A running channel account removed by a config change is stopped as a temporary
        // child: its connection status leaves the health summary all the same.
        health::note(&supervisor.0, &id.0, health::Change::Removed, ts);
    }
    crate::event_bus::publish(
        "supervisor",
        serde_json::json!({
            "supervisor": supervisor,
            "id": id,
            "kind": child.spec.kind,
            "event": happened.name(),
            "change": change,
            "reason": reason,
            "message": message,
            "restarts": child.restarts,
            "lastExit": child.last_exit,
            "ts": ts,
            "at": ts,
        }),
    );
}

#[cfg(test)]
mod lookup_tests;
#[cfg(test)]
mod registry_tests;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

pub use change::{ChangeChildren, SpecChange};
pub use guard::{ExitGuard, ExitReason, install_panic_hook};
pub use intensity::{RestartWindow, backoff_delay};
pub use liveness::{BUSY_LEASH, BusyGuard, DEFAULT_BEAT_EVERY, Liveness, ProgressWatch};
pub use registry::{ChildStarted, WatchChild};
pub use roster::Roster;
pub use spec::{
    Backoff, ChildHandle, ChildId, ChildLink, ChildSpec, Intensity, Restart, StartError, StartFn,
    Strategy,
};
pub use tree_node::{LastExit, NodeState, TreeNode};

use crate::health;
use crate::messages::FaultMode;
use crate::now_ms;

/// A child reports that it exited (sent by its [`ExitGuard`]).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChildExited {
    /// Which child.
    pub id: ChildId,
    /// Which start of it; stale reports are ignored.
    pub generation: u64,
    /// How it ended.
    pub reason: ExitReason,
    /// Error or panic message.
    pub message: Option<String>,
}

/// Registers a child that was started elsewhere (a WS session started on an HTTP worker).
/// It is temporary: watched and listed, never restarted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptChild {
    /// The child's id.
    pub id: ChildId,
    /// Its node kind.
    pub kind: &'static str,
    /// The generation its link carries.
    pub generation: u64,
    /// Its control inboxes.
    pub handle: ChildHandle,
    /// The progress counters it beats (see [`Liveness::attach`]).
    pub liveness: Liveness,
}

/// Asks a supervisor for its subtree.
#[derive(Message, Debug, Clone, Copy, Default)]
#[rtype(result = "TreeNode")]
pub struct DescribeTree {
    /// List every child of large supervisors instead of the first [`SupervisorConfig::list_limit`].
    pub all: bool,
}

/// What to do to a child found by id anywhere in the subtree.
#[derive(Debug, Clone, Copy)]
pub enum ChildAction {
    /// Inject a fault.
    Crash(FaultMode),
    /// Stop it and start it again.
    Restart,
    /// Ping it and measure the round trip.
    Ping,
    /// Return its typed address (see [`ChildHandle::addr_of`]). A child its supervisor has
    /// asked to stop (to restart it) is not handed out: `Unavailable` from that moment.
    Lookup,
    /// Return its address; if it is (re)starting, being stopped to be restarted, or
    /// waiting out a backoff, answer as soon as its next instance runs (its supervisor
    /// pushes the new address), waiting at most this long.
    LookupWhenRunning(Duration),
}

/// Finds a child by id in the subtree and applies an action to it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<CommandOutcome, CommandError>")]
pub struct ChildCommand {
    /// Target child id.
    pub id: ChildId,
    /// The action.
    pub action: ChildAction,
}

/// The result of a [`ChildCommand`].
pub enum CommandOutcome {
    /// Action delivered.
    Done,
    /// Ping answered after this many microseconds.
    Pinged {
        /// Round trip.
        rtt_us: u64,
    },
    /// The child's address (downcast with `downcast_ref::<Addr<A>>()`).
    Found(Arc<dyn Any + Send + Sync>),
}

/// Why a [`ChildCommand`] failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// No child with that id in the tree.
    #[error("no child with id {0:?} in the tree")]
    NotFound(String),
    /// The child exists but is not running right now.
    #[error("child {0:?} is not running (state {1:?})")]
    Unavailable(String, NodeState),
}

/// A supervisor's own settings.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// Its id in its parent.
    pub id: ChildId,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity before escalating.
    pub intensity: Intensity,
    /// How often children's progress is checked (and their mailbox depth asked for).
    pub ping_interval: Duration,
    /// A child that makes no progress this long is hung, killed and restarted.
    pub hang_timeout: Duration,
    /// Children listed in the status tree unless all are asked for.
    pub list_limit: usize,
}

struct Child {
    spec: ChildSpec,
    generation: u64,
    handle: Option<ChildHandle>,
    state: NodeState,
    restarts: u32,
    last_exit: Option<LastExit>,
    started_at: Option<u64>,
    started: Instant,
    mailbox: usize,
    backoff_attempt: u32,
    /// When the pending backoff delay ends (ms since the epoch).
    next_attempt_at: Option<u64>,
    ping_sent: Option<Instant>,
    /// Started elsewhere and adopted (a WS session): never pinged for its mailbox.
    adopted: bool,
    /// Progress of the running instance.
    watch: Option<ProgressWatch>,
    /// Asked to stop as part of a restart; its exit report is awaited.
    stopping: bool,
    /// The running instance's own children, if it is a supervisor.
    below: Roster,
    /// Lookups waiting for the next start; answered with the new address (dropped, and so
    /// answered "unavailable", if the child is removed first).
    start_waiters: Vec<oneshot::Sender<Arc<dyn Any + Send + Sync>>>,
}

impl Child {
    fn new(spec: ChildSpec) -> Self {
        Self {
            spec,
            generation: 0,
            handle: None,
            state: NodeState::Starting,
            restarts: 0,
            last_exit: None,
            started_at: None,
            started: Instant::now(),
            mailbox: 0,
            backoff_attempt: 0,
            next_attempt_at: None,
            ping_sent: None,
            adopted: false,
            watch: None,
            stopping: false,
            below: Roster::default(),
            start_waiters: Vec::new(),
        }
    }

    fn node(&self) -> TreeNode {
        TreeNode {
            id: self.spec.id.to_string(),
            kind: self.spec.kind.to_string(),
            state: self.state,
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            started_at: self.started_at,
            mailbox: self.mailbox,
            next_attempt_at: self
                .next_attempt_at
                .filter(|_| self.state == NodeState::Backoff),
            children: Vec::new(),
            child_count: None,
            unstoppable: 0,
        }
    }
}

/// A killed child not yet seen gone: a handler blocking its thread cannot be stopped.
struct Zombie {
    id: ChildId,
    handle: ChildHandle,
    deadline: Instant,
    counted: bool,
}

/// A supervisor in the tree (root, `agents`, `clients`, ...).
pub struct SupervisorActor {
    config: SupervisorConfig,
    order: Vec<ChildId>,
    children: HashMap<ChildId, Child>,
    window: RestartWindow,
    guard: Option<ExitGuard>,
    /// This supervisor's children's kill switches, shared with its parent.
    roster: Roster,
    escalation: Option<oneshot::Sender<String>>,
    shutting_down: bool,
    next_generation: u64,
    started_at: u64,
    /// Children still to stop before a restart, in stop order (reverse start order).
    stop_queue: VecDeque<ChildId>,
    /// The child being stopped now (its exit or its shutdown timeout is awaited).
    current_stop: Option<ChildId>,
    /// Children to start once every stop is done.
    start_queue: Vec<ChildId>,
    /// Killed children not yet seen gone.
    zombies: Vec<Zombie>,
    /// New specs of children being stopped to be replaced (see [`SpecChange::Start`]).
    replacements: HashMap<ChildId, ChildSpec>,
    /// Watchers told of each (re)start (see [`WatchChild`]).
    registry: registry::Registry,
}

impl SupervisorActor {
    /// A supervisor under a parent (reports its exit through `link`).
    pub fn new(config: SupervisorConfig, specs: Vec<ChildSpec>, link: Option<ChildLink>) -> Self {
        let mut this = Self {
            window: RestartWindow::new(config.intensity),
            config,
            order: Vec::new(),
            children: HashMap::new(),
            roster: link.as_ref().map(|l| l.roster.clone()).unwrap_or_default(),
            guard: link.map(|l| l.guard()),
            escalation: None,
            shutting_down: false,
            next_generation: 0,
            started_at: now_ms(),
            stop_queue: VecDeque::new(),
            current_stop: None,
            start_queue: Vec::new(),
            zombies: Vec::new(),
            replacements: HashMap::new(),
            registry: registry::Registry::default(),
        };
        for spec in specs {
            this.order.push(spec.id.clone());
            this.children.insert(spec.id.clone(), Child::new(spec));
        }
        this
    }

    /// The root: when its intensity is exceeded it stops everything and sends the reason
    /// on `escalation`, so the process can exit non-zero.
    pub fn root(
        config: SupervisorConfig,
        specs: Vec<ChildSpec>,
        escalation: oneshot::Sender<String>,
    ) -> Self {
        let mut this = Self::new(config, specs, None);
        this.escalation = Some(escalation);
        this
    }

    /// How often a child of this supervisor beats: often enough for the hang timeout.
    fn beat_every(&self) -> Duration {
        (self.config.hang_timeout / 4)
            .min(self.config.ping_interval)
            .max(Duration::from_millis(10))
    }

    fn start_child(&mut self, id: &ChildId, ctx: &mut Context<Self>) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let me = ctx.address();
        let liveness = Liveness::new(self.beat_every());
        let Some(child) = self.children.get_mut(id) else {
            return;
        };
        child.generation = generation;
        child.state = NodeState::Starting;
        child.ping_sent = None;
        child.stopping = false;
        child.watch = Some(ProgressWatch::new(liveness.clone(), Instant::now()));
        child.below = Roster::default();
        let link = ChildLink {
            id: id.clone(),
            generation,
            supervisor: me,
            liveness,
            roster: child.below.clone(),
        };
        match (child.spec.start)(link) {
            Ok(handle) => {
                self.roster.insert(id, &handle, &child.below);
                for waiter in child.start_waiters.drain(..) {
                    let _ = waiter.send(handle.addr.clone());
                }
                let (addr, subtree) = (handle.addr.clone(), handle.subtree.clone());
                child.handle = Some(handle);
                self.registry
                    .started(id, generation, &addr, subtree.as_ref());
                child.state = NodeState::Running;
                child.started_at = Some(now_ms());
                child.started = Instant::now();
                tracing::debug!(supervisor = %self.config.id, child = %id, generation, "child started");
                if child.spec.restart != Restart::Temporary {
                    let happened = if child.restarts == 0 {
                        Happened::Started
                    } else {
                        Happened::Restarted
                    };
                    announce(&self.config.id, id, happened, child);
                }
            }
            Err(err) => {
                tracing::error!(supervisor = %self.config.id, child = %id, error = %err, "child failed to start");
                let message = format!("start failed: {err}");
                self.child_exited(id.clone(), ExitReason::Error, Some(message), ctx);
            }
        }
    }

    /// Kills a child's instance at once and remembers it until it is seen gone.
    fn kill(&mut self, id: &ChildId) {
        let grace = self.config.hang_timeout.max(Duration::from_secs(1));
        let Some(child) = self.children.get_mut(id) else {
            return;
        };
        child.watch = None;
        child.ping_sent = None;
        self.roster.remove(id);
        // The subtree too, without asking the child: it may be too stuck to pass it on.
        child.below.kill_all();
        if let Some(handle) = child.handle.take() {
            handle.kill();
            self.zombies.push(Zombie {
                id: id.clone(),
                handle,
                deadline: Instant::now() + grace,
                counted: false,
            });
        }
    }

    fn child_exited(
        &mut self,
        id: ChildId,
        reason: ExitReason,
        message: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let shutting_down = self.shutting_down;
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        if let Some(arbiter) = child.handle.take().and_then(|h| h.arbiter) {
            // The child's own thread: it must not outlive the child.
            arbiter.stop();
        }
        self.roster.remove(&id);
        child.ping_sent = None;
        child.watch = None;
        child.started_at = None;
        child.last_exit = Some(LastExit {
            reason,
            message: message.clone(),
            at: now_ms(),
        });
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => reason != ExitReason::Normal,
            Restart::Temporary => false,
        };
        // A temporary child (a WS session) leaving is not news, unless it crashed.
        let news = child.spec.restart != Restart::Temporary || reason != ExitReason::Normal;
        if news && !shutting_down {
            announce(&self.config.id, &id, Happened::Exited, child);
        }
        if child.spec.restart == Restart::Temporary {
            self.children.remove(&id);
            self.order.retain(|c| c != &id);
            return;
        }
        if shutting_down || !restart {
            child.state = NodeState::Stopped;
            return;
        }
        tracing::warn!(
            supervisor = %self.config.id, child = %id, reason = ?reason,
            message = message.as_deref().unwrap_or(""), "child exited; restarting"
        );
        if !self.window.record(Instant::now()) {
            let why = format!(
                "restart intensity exceeded ({} restarts in {:?}); last: {id} exited with {reason:?}{}",
                self.config.intensity.max_restarts,
                self.config.intensity.period,
                message.map(|m| format!(": {m}")).unwrap_or_default()
            );
            if let Some(child) = self.children.get_mut(&id) {
                child.state = NodeState::Failed;
                announce(&self.config.id, &id, Happened::GaveUp, child);
            }
            self.escalate(why, ctx);
            return;
        }
        match self.config.strategy {
            Strategy::OneForOne => {
                if let Some(child) = self.children.get_mut(&id) {
                    child.restarts += 1;
                    child.generation = 0;
                }
                self.begin_start(&id, ctx);
            }
            Strategy::OneForAll => {
                let group = self.order.clone();
                self.restart_group(group, ctx);
            }
            Strategy::RestForOne => {
                let pos = self.order.iter().position(|c| c == &id).unwrap_or(0);
                let group = self.order[pos..].to_vec();
                self.restart_group(group, ctx);
            }
        }
    }

    /// Starts a child that is down, after its backoff delay if it has one.
    fn begin_start(&mut self, id: &ChildId, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(id) else {
            return;
        };
        child.generation = 0;
        match child.spec.backoff {
            Some(backoff) => {
                if child.started.elapsed() > backoff.max {
                    child.backoff_attempt = 0;
                }
                let delay = backoff_delay(&backoff, child.backoff_attempt, rand::random::<f64>());
                child.backoff_attempt += 1;
                child.state = NodeState::Backoff;
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                child.next_attempt_at = Some(now_ms().saturating_add(delay_ms));
                let id = id.clone();
                ctx.run_later(delay, move |act, ctx| {
                    let waiting = act
                        .children
                        .get(&id)
                        .is_some_and(|c| c.state == NodeState::Backoff);
                    if waiting && !act.shutting_down {
                        act.start_child(&id, ctx);
                    }
                });
            }
            None => {
                child.state = NodeState::Restarting;
                self.start_child(id, ctx);
            }
        }
    }

    fn escalate(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::error!(supervisor = %self.config.id, reason = %why, "escalating");
        self.shutting_down = true;
        for id in self.order.clone().into_iter().rev() {
            // Kill now: this supervisor stops right after, and with it any scheduled stop.
            self.kill(&id);
        }
        if let Some(guard) = self.guard.as_mut() {
            guard.fail(why.clone());
        }
        if let Some(tx) = self.escalation.take() {
            let _ = tx.send(why);
        }
        ctx.stop();
    }

    fn own_node(&self, children: Vec<TreeNode>, child_count: Option<usize>) -> TreeNode {
        TreeNode {
            id: self.config.id.to_string(),
            kind: "supervisor".into(),
            state: if self.shutting_down {
                NodeState::Stopped
            } else {
                NodeState::Running
            },
            restarts: 0,
            last_exit: None,
            started_at: Some(self.started_at),
            mailbox: 0,
            next_attempt_at: None,
            children,
            child_count,
            unstoppable: self.zombies.iter().filter(|z| z.counted).count(),
        }
    }
}

/// A new arbiter (thread) for the child `id`: every log line written on it carries the
/// span `actor{id=...}`, so a line says which node of the tree wrote it, and the thread is
/// named for it (its first 15 bytes: `top -H`, `/proc/<pid>/task/*/comm`).
pub fn child_arbiter(id: &str) -> actix::Arbiter {
    let arbiter = actix::Arbiter::new();
    let id = id.to_string();
    arbiter.spawn_fn(move || {
        let short: String = id.chars().filter(|c| *c != '\0').take(15).collect();
        if let Ok(name) = std::ffi::CString::new(short) {
            let _ = nix::sys::prctl::set_name(&name);
        }
        // Entered for the thread's whole life (it runs only this child).
        std::mem::forget(tracing::info_span!("actor", id = %id).entered());
    });
    arbiter
}

/// Why a registry lookup found no usable address.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    /// No child with that id in the tree, or it is not running (within the wait, if any).
    #[error("{0}")]
    Missing(#[from] CommandError),
    /// The supervisor (or a subtree on the way) did not answer.
    #[error("the supervisor did not answer a lookup of {id:?}: {reason}")]
    NoAnswer {
        /// The child id asked for.
        id: String,
        /// What went wrong with the ask.
        reason: String,
    },
    /// The child is registered as another actor type than the one asked for: a bug (two
    /// ids mixed up), reported rather than treated as "not running".
    #[error("child {id:?} is not a {expected} (registry lookup asked for the wrong actor type)")]
    WrongType {
        /// The child id asked for.
        id: String,
        /// The actor type the caller asked for.
        expected: &'static str,
    },
}

/// Finds a child's current address anywhere in the tree (the registry: addresses change
/// on restart, ids do not).
pub async fn lookup<A: Actor>(
    root: &Addr<SupervisorActor>,
    id: &str,
) -> Result<Addr<A>, LookupError> {
    let asked = root
        .send(ChildCommand {
            id: ChildId::new(id),
            action: ChildAction::Lookup,
        })
        .await;
    found::<A>(id, asked)
}

/// How long [`lookup_patiently`] waits for a child that is (re)starting.
const PATIENCE: Duration = Duration::from_secs(5);

/// [`lookup`], but a child that is (re)starting (or being stopped to be restarted) is
/// waited for, within a few seconds: its supervisor answers with the new address the
/// moment it starts, and a supervisor whose whole subtree is restarting passes the lookup
/// on when the subtree's new instance starts (both pushed, no polling). For a child used
/// across many restarts, [`WatchChild`].
pub async fn lookup_patiently<A: Actor>(
    root: &Addr<SupervisorActor>,
    id: &str,
) -> Result<Addr<A>, LookupError> {
    let asked = root
        .send(ChildCommand {
            id: ChildId::new(id),
            action: ChildAction::LookupWhenRunning(PATIENCE),
        })
        .await;
    found::<A>(id, asked)
}

/// The typed address behind a registry answer. A child registered under a type other than
/// the one asked for is a bug (two ids mixed up): an error naming both, and logged.
fn found<A: Actor>(
    id: &str,
    asked: Result<Result<CommandOutcome, CommandError>, MailboxError>,
) -> Result<Addr<A>, LookupError> {
    match asked {
        Ok(Ok(CommandOutcome::Found(addr))) => downcast::<A>(id, &addr),
        Ok(Ok(_)) => Err(LookupError::NoAnswer {
            id: id.to_string(),
            reason: "the supervisor answered a lookup without an address".into(),
        }),
        Ok(Err(e)) => Err(LookupError::Missing(e)),
        Err(e) => Err(LookupError::NoAnswer {
            id: id.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// `addr` as an `Addr<A>`, or [`LookupError::WrongType`].
fn downcast<A: Actor>(id: &str, addr: &Arc<dyn Any + Send + Sync>) -> Result<Addr<A>, LookupError> {
    addr.downcast_ref::<Addr<A>>().cloned().ok_or_else(|| {
        let expected = std::any::type_name::<A>();
        tracing::error!(
            child = id,
            expected,
            "registry lookup asked for the wrong actor type"
        );
        LookupError::WrongType {
            id: id.to_string(),
            expected,
        }
    })
}
