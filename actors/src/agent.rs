//! `agent:<id>`: one actor per configured agent, each on its own arbiter so a hung or
//! panicking agent cannot stall another. It runs turns ([`RunTurn`]): persona + history +
//! message → provider → streamed deltas and tool calls ([`TurnEvent`]) → the outcome.
//! Several sessions' runs proceed at once; each can be aborted ([`AbortRun`]).

pub mod delta_batch;
pub mod turn;

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::gateway::AgentSummary;
use crate::messages::{RunId, SessionKey, Shutdown, TurnEvent, TurnOptions};
use crate::provider::{Provider, Usage};
use crate::session_queue::SubmitTurn;
use crate::store::turns::StoredMessage;
use crate::supervisor::{ChildHandle, ChildLink, ChildSpec, ExitGuard};
use crate::tools::ToolContext;

/// Everything that defines an agent (from config and `agents/<id>/`).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Id, provider and model names.
    pub summary: AgentSummary,
    /// The provider client.
    pub provider: Provider,
    /// System prompt (`persona.md`).
    pub persona: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Output token limit per model call.
    pub max_tokens: Option<u32>,
    /// Enabled tools.
    pub tools: Vec<String>,
    /// Model calls per turn before giving up.
    pub max_iterations: u32,
    /// Transcript messages sent as context.
    pub history_limit: usize,
    /// `agents/<id>/memory/`.
    pub memory_dir: Option<PathBuf>,
    /// The state dir (`uploads/` under it): where a reply's `[IMAGE:]` / `[FILE:]` markers
    /// may point besides the agent's own folder (`None`: markers stay text).
    pub state_dir: Option<PathBuf>,
    /// USD per million (input, output) tokens, from the pricing table.
    pub price: Option<(f64, f64)>,
    /// Every agent id (for tools that address sessions), shared by every run.
    pub all_agents: Arc<[crate::messages::AgentId]>,
    /// Audio attachments are transcribed through this before the model sees the message
    /// (`[transcription]`; `None`: off, audio is only named).
    pub transcription: Option<Arc<crate::attachments::transcribe::Transcriber>>,
}

/// A configured agent.
pub struct AgentActor {
    /// Shared by every run (a turn takes a reference count, not a copy).
    settings: Arc<AgentSettings>,
    runs_in_flight: usize,
    /// Keeps the agent's vault index current while the agent runs (see [`crate::vault::watch`]).
    vault_watch: Option<crate::vault::watch::VaultWatch>,
    _guard: ExitGuard,
}

/// Asks an agent to describe itself.
#[derive(Message, Debug)]
#[rtype(result = "AgentSummary")]
pub struct DescribeAgent;

/// Runs one turn; answers when it has ended.
#[derive(Message, Debug)]
#[rtype(result = "RunOutcome")]
pub struct RunTurn {
    /// The run.
    pub run_id: RunId,
    /// Its session.
    pub session_key: SessionKey,
    /// The user's message (several, joined, in collect mode).
    pub input: String,
    /// Earlier transcript, oldest first.
    pub history: Vec<StoredMessage>,
    /// Where streamed events go.
    pub events: Recipient<TurnEvent>,
    /// The session-queue, for tools that message other sessions.
    pub queue: Option<Recipient<SubmitTurn>>,
    /// Fires (or is dropped) when the run must stop: an abort, or the queue went away.
    pub abort: oneshot::Receiver<()>,
    /// Per-turn settings from the client (timeout, extra system prompt, model).
    pub options: TurnOptions,
}

pub use crate::messages::RunStatus;

/// The end of a run.
#[derive(Debug, Clone, MessageResponse)]
pub struct RunOutcome {
    /// How it ended.
    pub status: RunStatus,
    /// The reply (partial when aborted).
    pub text: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Tokens used.
    pub usage: Usage,
    /// Cost in USD from the pricing table (0 when unpriced).
    pub cost_usd: f64,
    /// Files the reply sends (its `[IMAGE:]` / `[FILE:]` markers, taken out of `text`).
    pub attachments: Vec<crate::attachments::AttachmentRef>,
    /// The tool calls it made and their results, in order (also when it failed, timed out
    /// or was aborted after some).
    pub tool_steps: Vec<crate::store::turns::ToolStep>,
    /// The run's last streamed text, not sent as `Delta` events yet, in order: the
    /// session-queue sends it right before the run's end (one message instead of one per
    /// batch; see [`delta_batch`]).
    pub unsent_deltas: Vec<String>,
}

impl RunOutcome {
    /// A failed run that never reached a provider.
    pub fn failed(error: String) -> Self {
        Self {
            status: RunStatus::Error,
            text: String::new(),
            error: Some(error),
            usage: Usage::default(),
            cost_usd: 0.0,
            attachments: Vec::new(),
            tool_steps: Vec::new(),
            unsent_deltas: Vec::new(),
        }
    }
}

impl AgentActor {
    /// The child spec of `agent:<id>`.
    pub fn spec(settings: AgentSettings) -> ChildSpec {
        let id = format!("agent:{}", settings.summary.id);
        ChildSpec::new(id, "agent", move |link: ChildLink| {
            let arbiter = crate::supervisor::child_arbiter(&link.id.to_string());
            let settings = Arc::new(settings.clone());
            let addr = AgentActor::start_in_arbiter(&arbiter.handle(), move |_| AgentActor {
                settings,
                runs_in_flight: 0,
                vault_watch: None,
                _guard: link.guard(),
            });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self._guard.liveness().attach(ctx);
        tracing::debug!(agent_id = %self.settings.summary.id, "agent started");
        if let Some(dir) = &self.settings.memory_dir {
            let vault = crate::vault::Vault::for_memory_dir(dir);
            match crate::vault::watch::start(&vault) {
                Ok(watch) => self.vault_watch = Some(watch),
                Err(e) => {
                    tracing::warn!(agent_id = %self.settings.summary.id, error = %e, "vault not watched; each vault read walks the folder");
                }
            }
        }
    }
}

crate::child_controls!(AgentActor, |this| this.runs_in_flight);

impl Handler<Shutdown> for AgentActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<DescribeAgent> for AgentActor {
    type Result = MessageResult<DescribeAgent>;
    fn handle(&mut self, _: DescribeAgent, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.settings.summary.clone())
    }
}

impl Handler<RunTurn> for AgentActor {
    type Result = ResponseActFuture<Self, RunOutcome>;
    fn handle(&mut self, msg: RunTurn, _: &mut Self::Context) -> Self::Result {
        self.runs_in_flight += 1;
        let tools = ToolContext {
            memory_dir: self.settings.memory_dir.clone(),
            run_id: msg.run_id.clone(),
            agent_id: self.settings.summary.id.as_str().into(),
            agents: self.settings.all_agents.clone(),
            queue: msg.queue,
        };
        let input = turn::TurnInput {
            run_id: msg.run_id,
            session_key: msg.session_key,
            input: msg.input,
            history: msg.history,
            events: msg.events,
            tools,
            extra_system_prompt: msg.options.extra_system_prompt,
            model: msg.options.model,
            attachments: msg.options.attachments,
        };
        let run = turn::run_within(msg.options.timeout, self.settings.clone(), input, msg.abort);
        Box::pin(run.into_actor(self).map(|outcome, act, _| {
            act.runs_in_flight -= 1;
            outcome
        }))
    }
}
