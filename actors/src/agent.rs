//! `agent:<id>`: one actor per configured agent, each on its own arbiter so a hung or
//! panicking agent cannot stall another.

use actix::prelude::*;

use crate::gateway::AgentSummary;
use crate::messages::Shutdown;
use crate::supervisor::{ChildHandle, ChildLink, ChildSpec, ExitGuard};

/// A configured agent: persona, memory and provider (the built-in `echo` for now).
pub struct AgentActor {
    summary: AgentSummary,
    runs_in_flight: usize,
    _guard: ExitGuard,
}

/// Asks an agent to describe itself.
#[derive(Message, Debug)]
#[rtype(result = "AgentSummary")]
pub struct DescribeAgent;

impl AgentActor {
    /// The child spec of `agent:<id>`.
    pub fn spec(summary: AgentSummary) -> ChildSpec {
        let id = format!("agent:{}", summary.id);
        ChildSpec::new(id, "agent", move |link: ChildLink| {
            let arbiter = Arbiter::new();
            let summary = summary.clone();
            let addr = AgentActor::start_in_arbiter(&arbiter.handle(), move |_| AgentActor {
                summary,
                runs_in_flight: 0,
                _guard: link.guard(),
            });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
        tracing::debug!(agent_id = %self.summary.id, "agent started");
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
        MessageResult(self.summary.clone())
    }
}
