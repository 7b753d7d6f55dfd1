//! The supervisor's message handlers: exits, adoption, tree description, routed commands,
//! graceful shutdown, and its own liveness and fault injection.

use std::time::Instant;

use actix::prelude::*;
use futures_util::future::join_all;

use super::*;
use crate::messages::{FaultMode, InjectFault, Ping, Pong, Shutdown};
use crate::now_ms;

/// The least a child supervisor is given to answer a describe or a routed command before
/// it is skipped (a hung one is killed within the hang timeout; this only bounds the wait).
pub(super) const SUBTREE_REPLY_MIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        if let Some(guard) = self.guard.as_ref() {
            guard.liveness().attach(ctx);
        }
        for id in self.order.clone() {
            if self.shutting_down {
                break;
            }
            self.start_child(&id, ctx);
        }
        ctx.run_interval(self.config.ping_interval, |act, ctx| {
            act.check_liveness(ctx)
        });
    }
}

impl Drop for SupervisorActor {
    /// Children die with their supervisor (it may have panicked, or been killed as hung):
    /// kill them all, without waiting for anything.
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            if let Some(handle) = child.handle.take() {
                handle.kill();
            }
            child.below.kill_all();
        }
    }
}

impl Handler<ChildExited> for SupervisorActor {
    type Result = ();
    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        let Some(child) = self
            .children
            .get(&msg.id)
            .filter(|c| c.generation == msg.generation && c.generation != 0)
        else {
            return;
        };
        if child.stopping {
            self.stop_done(&msg.id, ctx);
        } else {
            self.child_exited(msg.id, msg.reason, msg.message, ctx);
        }
    }
}

impl Handler<AdoptChild> for SupervisorActor {
    type Result = ();
    fn handle(&mut self, msg: AdoptChild, _: &mut Self::Context) {
        if self.shutting_down {
            msg.handle.shutdown.do_send(Shutdown);
            return;
        }
        let id = msg.id.clone();
        let spec = ChildSpec::new(msg.id.0, msg.kind, |_| {
            Err(StartError("an adopted child cannot be restarted".into()))
        })
        .restart(Restart::Temporary);
        let mut child = Child::new(spec);
        child.adopted = true;
        self.roster.insert(&id, &msg.handle, &child.below);
        child.watch = Some(ProgressWatch::new(msg.liveness, Instant::now()));
        child.generation = msg.generation;
        child.handle = Some(msg.handle);
        child.state = NodeState::Running;
        child.started_at = Some(now_ms());
        self.next_generation = self.next_generation.max(msg.generation);
        if self.children.insert(id.clone(), child).is_none() {
            self.order.push(id);
        }
    }
}

impl Handler<DescribeTree> for SupervisorActor {
    type Result = ResponseFuture<TreeNode>;
    fn handle(&mut self, msg: DescribeTree, _: &mut Self::Context) -> Self::Result {
        let total = self.order.len();
        let limit = if msg.all {
            total
        } else {
            self.config.list_limit
        };
        let mut nodes = Vec::new();
        let mut subtrees = Vec::new();
        for id in self.order.iter().take(limit) {
            if let Some(child) = self.children.get(id) {
                let sub = child.handle.as_ref().and_then(|h| h.subtree.clone());
                // A hung subtree must not hang the status: it shows without children.
                let timeout = self.config.hang_timeout.max(SUBTREE_REPLY_MIN);
                subtrees.push(sub.map(move |s| tokio::time::timeout(timeout, s.send(msg))));
                nodes.push(child.node());
            }
        }
        let me = self.own_node(Vec::new(), (total > limit).then_some(total));
        Box::pin(async move {
            let replies = join_all(subtrees.into_iter().map(|s| async move {
                match s {
                    Some(fut) => fut.await.ok().and_then(Result::ok),
                    None => None,
                }
            }))
            .await;
            let mut me = me;
            for (mut node, sub) in nodes.into_iter().zip(replies) {
                if let Some(sub) = sub {
                    node.children = sub.children;
                    node.child_count = sub.child_count;
                }
                me.children.push(node);
            }
            me
        })
    }
}

impl Handler<ChildCommand> for SupervisorActor {
    type Result = ResponseFuture<Result<CommandOutcome, CommandError>>;
    fn handle(&mut self, msg: ChildCommand, ctx: &mut Self::Context) -> Self::Result {
        if let Some(child) = self.children.get_mut(&msg.id) {
            // A child asked to stop (for a restart) is no longer handed out: a lookup made
            // from that moment is told it is restarting, or waits for its next instance.
            let stopping = self.current_stop.as_ref() == Some(&msg.id);
            let lookup = matches!(
                msg.action,
                ChildAction::Lookup | ChildAction::LookupWhenRunning(_)
            );
            let state = match child.spec.restart {
                Restart::Temporary if stopping => NodeState::Stopped,
                _ => child.state,
            };
            let unavailable = CommandError::Unavailable(msg.id.to_string(), state);
            let Some(handle) = child.handle.as_ref().filter(|_| !(stopping && lookup)) else {
                if let ChildAction::LookupWhenRunning(within) = msg.action
                    && !self.shutting_down
                {
                    // Answered by `start_child` with the new address.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    child.start_waiters.retain(|w| !w.is_closed());
                    child.start_waiters.push(tx);
                    return Box::pin(async move {
                        match tokio::time::timeout(within, rx).await {
                            Ok(Ok(addr)) => Ok(CommandOutcome::Found(addr)),
                            _ => Err(unavailable),
                        }
                    });
                }
                return Box::pin(async move { Err(unavailable) });
            };
            let outcome = match msg.action {
                ChildAction::Crash(mode) => {
                    handle.fault.do_send(InjectFault { mode });
                    Ok(CommandOutcome::Done)
                }
                ChildAction::Lookup | ChildAction::LookupWhenRunning(_) => {
                    Ok(CommandOutcome::Found(handle.addr.clone()))
                }
                ChildAction::Restart => {
                    tracing::info!(supervisor = %self.config.id, child = %msg.id, "restart requested");
                    if let Some(child) = self.children.get_mut(&msg.id) {
                        child.last_exit = Some(LastExit {
                            reason: ExitReason::Normal,
                            message: Some("restart requested by an operator".into()),
                            at: now_ms(),
                        });
                    }
                    self.restart_group(vec![msg.id.clone()], ctx);
                    Ok(CommandOutcome::Done)
                }
                ChildAction::Ping => {
                    let ping = handle.ping.send(Ping);
                    let timeout = self.config.hang_timeout;
                    return Box::pin(async move {
                        let t0 = Instant::now();
                        match tokio::time::timeout(timeout, ping).await {
                            Ok(Ok(_)) => Ok(CommandOutcome::Pinged {
                                rtt_us: t0.elapsed().as_micros() as u64,
                            }),
                            _ => Err(unavailable),
                        }
                    });
                }
            };
            return Box::pin(async move { outcome });
        }
        // A lookup that may wait also waits for child supervisors that are (re)starting:
        // each one's new address is pushed by `start_child`, and the lookup is passed on to
        // it then (no polling).
        let within = match msg.action {
            ChildAction::LookupWhenRunning(within) if !self.shutting_down => Some(within),
            _ => None,
        };
        let mut subs = Vec::new();
        for id in &self.order {
            let Some(child) = self.children.get_mut(id) else {
                continue;
            };
            let sub = child.handle.as_ref().and_then(|h| h.subtree.clone());
            let next_start = (within.is_some() && child.spec.kind == "supervisor").then(|| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                child.start_waiters.retain(|w| !w.is_closed());
                child.start_waiters.push(tx);
                rx
            });
            if sub.is_some() || next_start.is_some() {
                subs.push((sub, next_start));
            }
        }
        let timeout = self.config.hang_timeout.max(SUBTREE_REPLY_MIN);
        Box::pin(route_down(msg, subs, within, timeout))
    }
}

impl Handler<Shutdown> for SupervisorActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        self.stop_queue.clear();
        self.current_stop = None;
        self.start_queue.clear();
        let mut adopted = Vec::new();
        let mut stops = Vec::new();
        for id in self.order.iter().rev() {
            if let Some(child) = self.children.get_mut(id) {
                child.generation = 0;
                child.state = NodeState::Stopped;
                if let Some(handle) = child.handle.take() {
                    let stop = (id.clone(), handle, child.spec.shutdown);
                    if child.adopted {
                        adopted.push(stop);
                    } else {
                        stops.push(stop);
                    }
                }
            }
        }
        let me = self.config.id.clone();
        Box::pin(
            async move {
                // Adopted sessions are independent of each other: stop them all at once,
                // so one that hangs does not hold up the rest. Then the others, newest first.
                join_all(adopted.into_iter().map(|stop| stop_child(&me, stop))).await;
                for stop in stops {
                    stop_child(&me, stop).await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

/// A subtree to route a command to: its supervisor's address if it runs, and (for a
/// lookup that may wait) the push of its next instance's address.
type Subtree = (
    Option<Addr<SupervisorActor>>,
    Option<tokio::sync::oneshot::Receiver<Arc<dyn Any + Send + Sync>>>,
);

/// Passes a command to the subtrees in start order; the first that has the child answers.
/// A lookup that may wait (`within`) then waits for the subtrees that were down or went
/// away mid-command, all at once, asking each as soon as its new instance runs.
async fn route_down(
    msg: ChildCommand,
    subs: Vec<Subtree>,
    within: Option<Duration>,
    timeout: Duration,
) -> Result<CommandOutcome, CommandError> {
    let deadline = within.map(|w| Instant::now() + w);
    let mut unreachable = false;
    let mut later = Vec::new();
    for (sub, next_start) in subs {
        if let Some(sub) = sub {
            match tokio::time::timeout(timeout, sub.send(msg.clone())).await {
                Ok(Ok(Err(CommandError::NotFound(_)))) => continue,
                Ok(Ok(result)) => return result,
                Ok(Err(_)) | Err(_) => unreachable = true,
            }
        }
        if let Some(next_start) = next_start {
            later.push(next_start);
        }
    }
    if let Some(deadline) = deadline
        && !later.is_empty()
    {
        let mut restarts: futures_util::stream::FuturesUnordered<_> = later
            .into_iter()
            .map(|next_start| ask_when_started(&msg, next_start, deadline, timeout))
            .collect();
        while let Some(answer) = futures_util::StreamExt::next(&mut restarts).await {
            match answer {
                Some(Err(CommandError::NotFound(_))) => {}
                Some(result) => return result,
                None => unreachable = true,
            }
        }
    }
    if unreachable {
        // A subtree went away mid-command (it escalated or is restarting).
        return Err(CommandError::Unavailable(
            msg.id.to_string(),
            NodeState::Restarting,
        ));
    }
    Err(CommandError::NotFound(msg.id.to_string()))
}

/// Waits (until `deadline`) for a subtree's next instance, then asks it; `None` when it
/// did not start or answer in time.
async fn ask_when_started(
    msg: &ChildCommand,
    next_start: tokio::sync::oneshot::Receiver<Arc<dyn Any + Send + Sync>>,
    deadline: Instant,
    timeout: Duration,
) -> Option<Result<CommandOutcome, CommandError>> {
    let addr = tokio::time::timeout_at(deadline.into(), next_start)
        .await
        .ok()?
        .ok()?;
    let sub = addr.downcast_ref::<Addr<SupervisorActor>>()?.clone();
    let left = deadline.saturating_duration_since(Instant::now());
    let ask = ChildCommand {
        id: msg.id.clone(),
        action: ChildAction::LookupWhenRunning(left),
    };
    tokio::time::timeout(timeout, sub.send(ask))
        .await
        .ok()?
        .ok()
}

/// Asks a child to stop and waits for its answer up to its shutdown timeout; kills it
/// if the timeout passes.
async fn stop_child(me: &ChildId, (id, handle, timeout): (ChildId, ChildHandle, Duration)) {
    let stopped = tokio::time::timeout(timeout, handle.shutdown.send(Shutdown)).await;
    if stopped.is_err() {
        tracing::warn!(supervisor = %me, child = %id, "shutdown timed out; killing");
        handle.kill();
    } else if let Some(arbiter) = handle.arbiter {
        arbiter.stop();
    }
}

impl Handler<Ping> for SupervisorActor {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Pong {
        Pong { mailbox: 0 }
    }
}

impl Handler<InjectFault> for SupervisorActor {
    type Result = ();
    fn handle(&mut self, msg: InjectFault, ctx: &mut Self::Context) {
        match msg.mode {
            FaultMode::Panic => panic!(
                "fault injection: supervisor {} panicked on request",
                self.config.id
            ),
            FaultMode::Hang => ctx.wait(fut::wrap_future(futures_util::future::pending::<()>())),
            FaultMode::Block => {
                tracing::warn!(supervisor = %self.config.id, "fault injection: blocking this thread forever");
                crate::messages::block_thread_forever();
            }
        }
    }
}
