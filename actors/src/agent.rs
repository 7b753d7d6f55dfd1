//! `agent:<id>`: one actor per configured agent, each on its own arbiter so a hung or
//! panicking agent cannot stall another. It runs turns ([`RunTurn`]): persona + message →
//! provider → streamed deltas ([`TurnEvent`]) → the outcome. Several sessions' runs
//! proceed at once; each can be aborted ([`AbortRun`]).

use std::collections::HashMap;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::echo::{EchoSettings, echo_deltas, simulated_failure};
use crate::gateway::AgentSummary;
use crate::messages::{Shutdown, TurnEvent, TurnEventKind};
use crate::supervisor::{ChildHandle, ChildLink, ChildSpec, ExitGuard};

/// A configured agent.
pub struct AgentActor {
    summary: AgentSummary,
    echo: EchoSettings,
    aborts: HashMap<String, oneshot::Sender<()>>,
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
    pub run_id: String,
    /// Its session.
    pub session_key: String,
    /// The user's message (several, joined, in collect mode).
    pub input: String,
    /// Where streamed events go.
    pub events: Recipient<TurnEvent>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Final reply produced.
    Ok,
    /// The provider failed.
    Error,
    /// Aborted on request.
    Aborted,
}

impl RunStatus {
    /// The stored / wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Aborted => "aborted",
        }
    }
}

/// The end of a run.
#[derive(Debug, Clone, MessageResponse)]
pub struct RunOutcome {
    /// How it ended.
    pub status: RunStatus,
    /// The reply (partial when aborted).
    pub text: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// Aborts a run in progress; true if it was running here.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct AbortRun {
    /// The run.
    pub run_id: String,
}

impl AgentActor {
    /// The child spec of `agent:<id>`.
    pub fn spec(summary: AgentSummary, echo: EchoSettings) -> ChildSpec {
        let id = format!("agent:{}", summary.id);
        ChildSpec::new(id, "agent", move |link: ChildLink| {
            let arbiter = Arbiter::new();
            let summary = summary.clone();
            let addr = AgentActor::start_in_arbiter(&arbiter.handle(), move |_| AgentActor {
                summary,
                echo,
                aborts: HashMap::new(),
                _guard: link.guard(),
            });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
    }
}

async fn run_echo(
    input: String,
    settings: EchoSettings,
    run: (String, String),
    events: Recipient<TurnEvent>,
    mut abort: oneshot::Receiver<()>,
) -> RunOutcome {
    let (run_id, session_key) = run;
    let event = |kind| TurnEvent {
        run_id: run_id.clone(),
        session_key: session_key.clone(),
        kind,
    };
    events.do_send(event(TurnEventKind::Started));
    if let Some(error) = simulated_failure(&input) {
        return RunOutcome {
            status: RunStatus::Error,
            text: String::new(),
            error: Some(error),
        };
    }
    let mut text = String::new();
    for delta in echo_deltas(&input) {
        let aborted = if settings.delta_delay.is_zero() {
            abort.try_recv().is_ok()
        } else {
            tokio::select! {
                _ = tokio::time::sleep(settings.delta_delay) => false,
                _ = &mut abort => true,
            }
        };
        if aborted {
            return RunOutcome {
                status: RunStatus::Aborted,
                text,
                error: Some("aborted".into()),
            };
        }
        text.push_str(&delta);
        events.do_send(event(TurnEventKind::Delta(delta)));
    }
    RunOutcome {
        status: RunStatus::Ok,
        text,
        error: None,
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        tracing::debug!(agent_id = %self.summary.id, "agent started");
    }
}

crate::child_controls!(AgentActor, |this| this.aborts.len());

impl Handler<Shutdown> for AgentActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<DescribeAgent> for AgentActor {
    type Result = MessageResult<DescribeAgent>;
    fn handle(&mut self, _: DescribeAgent, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.summary.clone())
    }
}

impl Handler<RunTurn> for AgentActor {
    type Result = ResponseActFuture<Self, RunOutcome>;
    fn handle(&mut self, msg: RunTurn, _: &mut Self::Context) -> Self::Result {
        let (abort_tx, abort_rx) = oneshot::channel();
        self.aborts.insert(msg.run_id.clone(), abort_tx);
        let run_id = msg.run_id.clone();
        let run = run_echo(
            msg.input,
            self.echo,
            (msg.run_id, msg.session_key),
            msg.events,
            abort_rx,
        );
        Box::pin(run.into_actor(self).map(move |outcome, act, _| {
            act.aborts.remove(&run_id);
            outcome
        }))
    }
}

impl Handler<AbortRun> for AgentActor {
    type Result = bool;
    fn handle(&mut self, msg: AbortRun, _: &mut Self::Context) -> bool {
        match self.aborts.remove(&msg.run_id) {
            Some(tx) => tx.send(()).is_ok(),
            None => false,
        }
    }
}
