//! Messages every supervised child answers: ping (mailbox depth), fault injection and
//! graceful stop. Hang detection does not use messages: see `supervisor::Liveness`.

use actix::{Message, MessageResponse};
use serde::{Deserialize, Serialize};

/// Asks a child for its mailbox depth (and answers `supervisor.ping`). Not the hang
/// verdict: that reads the child's progress counter (`supervisor::Liveness`), which does
/// not wait behind work in the mailbox.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Pong")]
pub struct Ping;

/// The answer to [`Ping`].
#[derive(MessageResponse, Debug, Clone, Copy)]
pub struct Pong {
    /// Work queued in the actor right now (runs, outbound frames, pending writes).
    pub mailbox: usize,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FaultMode {
    /// Panic inside the message handler, exactly as a bug would.
    #[default]
    Panic,
    /// Stop processing messages forever (a handler that never returns).
    Hang,
    /// Block the actor's thread forever (a blocking loop). Nothing can stop such a thread
    /// from outside in Rust: the node is replaced, and counted as unstoppable for good.
    Block,
}

/// Blocks the calling thread forever (the [`FaultMode::Block`] fault).
pub fn block_thread_forever() {
    loop {
        std::thread::park();
    }
}

/// Fault injection (only reachable when `debug.fault_injection` is on).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct InjectFault {
    /// Panic or hang.
    pub mode: FaultMode,
}

/// Graceful stop: finish or abandon current work, release resources, stop.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Implements [`Ping`] (answering with the given mailbox depth expression) and
/// [`InjectFault`] for an actor with a plain `Context`.
#[macro_export]
macro_rules! child_controls {
    ($actor:ty, |$this:ident| $mailbox:expr) => {
        impl ::actix::Handler<$crate::messages::Ping> for $actor {
            type Result = $crate::messages::Pong;
            fn handle(
                &mut self,
                _: $crate::messages::Ping,
                _: &mut Self::Context,
            ) -> $crate::messages::Pong {
                let $this = &*self;
                $crate::messages::Pong { mailbox: $mailbox }
            }
        }

        impl ::actix::Handler<$crate::messages::InjectFault> for $actor {
            type Result = ();
            fn handle(&mut self, msg: $crate::messages::InjectFault, ctx: &mut Self::Context) {
                match msg.mode {
                    $crate::messages::FaultMode::Panic => {
                        panic!(
                            "fault injection: {} panicked on request",
                            stringify!($actor)
                        )
                    }
                    $crate::messages::FaultMode::Hang => {
                        ::tracing::warn!(actor = stringify!($actor), "fault injection: hanging");
                        ::actix::AsyncContext::wait(
                            ctx,
                            ::actix::fut::wrap_future(::futures_util::future::pending::<()>()),
                        );
                    }
                    $crate::messages::FaultMode::Block => {
                        ::tracing::warn!(
                            actor = stringify!($actor),
                            "fault injection: blocking this thread forever"
                        );
                        $crate::messages::block_thread_forever();
                    }
                }
            }
        }
    };
}

/// How a message joins a session that is busy (DESIGN.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// Wait in line, run after the runs ahead of it. OpenClaw's `steer` (inject into the
    /// running turn) is taken as this: a turn here cannot be changed once it runs.
    #[default]
    #[serde(alias = "steer")]
    Followup,
    /// Waiting messages coalesce into one turn.
    Collect,
    /// Abort the active run and drop the waiting ones; run this one next.
    Interrupt,
}

impl QueueMode {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Followup => "followup",
            Self::Collect => "collect",
            Self::Interrupt => "interrupt",
        }
    }
}

/// Declares a string id newtype: serialized as the bare string, read as `&str`.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A session's full key (`agent:<agentId>:<rest>`, `cron:<jobId>`, `hook:<id>`).
    SessionKey
);
string_id!(
    /// A configured agent's id (`main`).
    AgentId
);
string_id!(
    /// A run's id (a UUID).
    RunId
);
string_id!(
    /// A cron job's id (1-64 letters, digits, `-` or `_`; checked where a job is saved).
    CronJobId
);

/// How a run ended, as every edge and the store name it (`ok`, `error`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Final reply produced.
    Ok,
    /// The provider failed (or the run was cut by a stop).
    Error,
    /// Aborted on request.
    Aborted,
    /// Merged into a later turn (`collect` mode).
    Coalesced,
    /// Still pending when the waiter gave up (`agent.wait`'s timeout; not stored).
    Timeout,
}

impl RunStatus {
    /// The stored / wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Aborted => "aborted",
            Self::Coalesced => "coalesced",
            Self::Timeout => "timeout",
        }
    }

    /// The status a stored run's status names, `None` for a run not ended (`queued`,
    /// `running`) or a name no version of Troupe writes.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ok" => Self::Ok,
            "error" => Self::Error,
            "aborted" => Self::Aborted,
            "coalesced" => Self::Coalesced,
            "timeout" => Self::Timeout,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-turn settings a client may give with its message (OpenClaw's `agent` / `chat.send`
/// fields `timeout`, `extraSystemPrompt`, `model`); the default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnOptions {
    /// End the run with an error if it has not finished in this long.
    pub timeout: Option<std::time::Duration>,
    /// Appended to the agent's persona (system prompt) for this turn only.
    pub extra_system_prompt: Option<String>,
    /// Use this model instead of the agent's configured one for this turn only.
    pub model: Option<String>,
    /// Files attached to the message (`attachments`), stored: images reach models that
    /// take them, text files are inlined, others named.
    pub attachments: Vec<crate::attachments::AttachmentRef>,
}

/// What an agent reports while a run streams (agent → session-queue).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TurnEvent {
    /// The run.
    pub run_id: RunId,
    /// Its session.
    pub session_key: SessionKey,
    /// What happened.
    pub kind: TurnEventKind,
}

/// The kinds of [`TurnEvent`].
#[derive(Debug, Clone)]
pub enum TurnEventKind {
    /// More reply text.
    Delta(String),
    /// A tool call or result.
    Tool(serde_json::Value),
}

/// What a run did, for the clients following its session (session-queue → edges). Typed:
/// each edge renders it in its own protocol (OpenClaw frames at the WS edge, chunks at the
/// OpenAI edge).
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run started (sent by the session-queue as it hands the run to its agent).
    Started,
    /// More reply text.
    Delta(std::sync::Arc<str>),
    /// A tool call or its result.
    Tool(std::sync::Arc<serde_json::Value>),
    /// The run ended (ok, error, aborted), with its reply or error.
    Ended(std::sync::Arc<crate::session_queue::RunSummary>),
}

/// A run event for one subscriber of a session.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SessionEvent {
    /// The run.
    pub run_id: RunId,
    /// Its session.
    pub session_key: SessionKey,
    /// The event's number within its run (0 for the end).
    pub seq: u64,
    /// When it happened (ms since the epoch).
    pub ts: u64,
    /// What happened.
    pub event: RunEvent,
    /// Events this subscriber missed before this one (its mailbox was full).
    pub missed: u64,
    /// Shared by every subscriber's copy of this event: an edge that serializes events
    /// does it once for all its clients (see [`RenderCache`]).
    pub rendered: RenderCache,
}

/// The serialized form of one run event, made by the first edge subscriber that needs it
/// and reused by the others (the queue hands every subscriber a clone of one cache).
/// Holds what [`RenderCache::get_or_render`] was first given; an edge that renders
/// another type gets `None` and renders for itself.
#[derive(Clone, Default)]
pub struct RenderCache(std::sync::Arc<std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>>);

impl RenderCache {
    /// The cached form, rendered by `render` if this is the first call; `None` if the cache
    /// already holds a different type.
    pub fn get_or_render<T: std::any::Any + Send + Sync>(
        &self,
        render: impl FnOnce() -> T,
    ) -> Option<&T> {
        self.0
            .get_or_init(|| Box::new(render()))
            .downcast_ref::<T>()
    }
}

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.get().is_some() {
            "rendered"
        } else {
            "empty"
        };
        f.debug_tuple("RenderCache").field(&state).finish()
    }
}

#[cfg(test)]
mod run_status_tests {
    use super::RunStatus;

    #[test]
    fn run_status_serializes_to_the_same_wire_names_it_parses_from() {
        for status in [
            RunStatus::Ok,
            RunStatus::Error,
            RunStatus::Aborted,
            RunStatus::Coalesced,
            RunStatus::Timeout,
        ] {
            let wire = serde_json::to_value(status).unwrap();
            assert_eq!(wire, status.name());
            assert_eq!(RunStatus::from_name(status.name()), Some(status));
        }
        assert_eq!(RunStatus::from_name("queued"), None);
        assert_eq!(RunStatus::from_name("running"), None);
    }

    #[test]
    fn id_newtypes_serialize_as_the_bare_string() {
        let key = super::SessionKey::from("agent:main:main");
        assert_eq!(serde_json::to_value(&key).unwrap(), "agent:main:main");
        assert_eq!(key, "agent:main:main");
        let run: super::RunId = serde_json::from_str("\"r1\"").unwrap();
        assert_eq!(run.as_str(), "r1");
    }
}
