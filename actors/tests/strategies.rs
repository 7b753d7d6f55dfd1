//! The supervisor in-process: restart strategies, restart types, intensity and escalation,
//! backoff and hang detection, driven through a small test child.

// Helpers outside #[test] fns fail the test with a message, like the tests themselves.
#![allow(clippy::expect_used)]

use std::future::Future;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use troupe_actors::messages::{FaultMode, Shutdown};
use troupe_actors::supervisor::{
    Backoff, ChildAction, ChildCommand, ChildHandle, ChildId, ChildLink, ChildSpec, CommandError,
    CommandOutcome, DescribeTree, ExitGuard, ExitReason, Intensity, NodeState, Restart, Strategy,
    SupervisorActor, SupervisorConfig, TreeNode, install_panic_hook,
};
use troupe_actors::supervisor::{ChangeChildren, SpecChange};

/// Generous bound for anything on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

/// Polls `cond` until it returns `Some`, or panics with `what` after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The supervisor's panic hook (it records the panic message for the exit report), chained
/// with the default hook so failing assertions still print; injected faults stay quiet.
fn panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        install_panic_hook();
        let troupe = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            troupe(info);
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            let injected = text.is_some_and(|m| m.starts_with("fault injection"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// A supervised child that knows which start of its spec it is.
struct Worker {
    instance: u64,
    guard: ExitGuard,
}

/// Which start of the spec answers (1 for the first, 2 after one restart, ...).
#[derive(Message)]
#[rtype(result = "u64")]
struct Hello;

/// Stop with an error exit.
#[derive(Message)]
#[rtype(result = "()")]
struct Fail(&'static str);

/// Stop normally.
#[derive(Message)]
#[rtype(result = "()")]
struct Finish;

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.guard.liveness().attach(ctx);
    }
}

troupe_actors::child_controls!(Worker, |_this| 0);

impl Handler<Shutdown> for Worker {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Hello> for Worker {
    type Result = u64;
    fn handle(&mut self, _: Hello, _: &mut Self::Context) -> u64 {
        self.instance
    }
}

impl Handler<Fail> for Worker {
    type Result = ();
    fn handle(&mut self, msg: Fail, ctx: &mut Self::Context) {
        self.guard.fail(msg.0);
        ctx.stop();
    }
}

impl Handler<Finish> for Worker {
    type Result = ();
    fn handle(&mut self, _: Finish, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A worker spec on the supervisor's arbiter; each start takes the next instance number.
fn worker(id: &str) -> ChildSpec {
    let mut starts = 0;
    ChildSpec::new(id, "worker", move |link: ChildLink| {
        starts += 1;
        let instance = starts;
        let addr = Worker {
            instance,
            guard: link.guard(),
        }
        .start();
        Ok(ChildHandle::of(addr))
    })
}

/// A worker spec on a dedicated arbiter (as agents run), so a hung one can be killed; the
/// arbiters it starts are recorded in `arbiters`.
fn worker_on_own_arbiter(id: &str, arbiters: Arc<Mutex<Vec<ArbiterHandle>>>) -> ChildSpec {
    let mut starts = 0;
    ChildSpec::new(id, "worker", move |link: ChildLink| {
        starts += 1;
        let instance = starts;
        let arbiter = Arbiter::new();
        let addr = Worker::start_in_arbiter(&arbiter.handle(), move |_| Worker {
            instance,
            guard: link.guard(),
        });
        arbiters
            .lock()
            .expect("arbiters lock")
            .push(arbiter.handle());
        Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
    })
}

fn config(strategy: Strategy, max_restarts: u32) -> SupervisorConfig {
    SupervisorConfig {
        id: ChildId::new("test"),
        strategy,
        intensity: Intensity {
            max_restarts,
            period: Duration::from_secs(60),
        },
        ping_interval: Duration::from_millis(50),
        hang_timeout: Duration::from_secs(5),
        list_limit: 100,
    }
}

fn start(strategy: Strategy, specs: Vec<ChildSpec>) -> Addr<SupervisorActor> {
    panic_hook();
    SupervisorActor::new(config(strategy, 10), specs, None).start()
}

async fn tree(sup: &Addr<SupervisorActor>) -> TreeNode {
    sup.send(DescribeTree { all: true })
        .await
        .expect("supervisor answers DescribeTree")
}

async fn child(sup: &Addr<SupervisorActor>, id: &str) -> TreeNode {
    tree(sup)
        .await
        .find(id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} in the tree"))
}

async fn command(
    sup: &Addr<SupervisorActor>,
    id: &str,
    action: ChildAction,
) -> Result<CommandOutcome, CommandError> {
    sup.send(ChildCommand {
        id: ChildId::new(id),
        action,
    })
    .await
    .expect("supervisor answers ChildCommand")
}

/// The child's current address, if it is running.
async fn lookup(sup: &Addr<SupervisorActor>, id: &str) -> Option<Addr<Worker>> {
    match command(sup, id, ChildAction::Lookup).await {
        Ok(CommandOutcome::Found(addr)) => addr.downcast_ref::<Addr<Worker>>().cloned(),
        _ => None,
    }
}

/// Which instance of the child answers right now.
async fn hello(sup: &Addr<SupervisorActor>, id: &str) -> Option<u64> {
    lookup(sup, id).await?.send(Hello).await.ok()
}

async fn crash(sup: &Addr<SupervisorActor>, id: &str, mode: FaultMode) {
    assert!(
        matches!(
            command(sup, id, ChildAction::Crash(mode)).await,
            Ok(CommandOutcome::Done)
        ),
        "crash {id} delivered"
    );
}

/// Waits until `id` runs as instance `instance` after `restarts` restarts; returns its node.
async fn running_as(
    sup: &Addr<SupervisorActor>,
    id: &str,
    instance: u64,
    restarts: u32,
) -> TreeNode {
    eventually(
        &format!("{id} running as instance {instance} after {restarts} restarts"),
        || async {
            let node = tree(sup).await.find(id)?.clone();
            let ok = node.state == NodeState::Running
                && node.restarts == restarts
                && hello(sup, id).await == Some(instance);
            ok.then_some(node)
        },
    )
    .await
}

fn message(node: &TreeNode) -> String {
    node.last_exit
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_default()
}

#[actix_rt::test]
async fn panicking_child_is_restarted_and_its_sibling_keeps_running() {
    let sup = start(Strategy::OneForOne, vec![worker("a"), worker("b")]);
    running_as(&sup, "a", 1, 0).await;
    running_as(&sup, "b", 1, 0).await;

    crash(&sup, "a", FaultMode::Panic).await;
    let a = running_as(&sup, "a", 2, 1).await;
    let exit = a.last_exit.clone().expect("lastExit after a panic");
    assert_eq!(exit.reason, ExitReason::Panic, "{a:?}");
    assert!(
        message(&a).contains("fault injection: Worker panicked on request"),
        "the panic message is kept: {a:?}"
    );

    let b = child(&sup, "b").await;
    assert_eq!(b.restarts, 0, "sibling not restarted: {b:?}");
    assert!(b.last_exit.is_none(), "{b:?}");
    assert_eq!(
        hello(&sup, "b").await,
        Some(1),
        "sibling is the same instance"
    );
    assert!(
        matches!(
            command(&sup, "a", ChildAction::Ping).await,
            Ok(CommandOutcome::Pinged { .. })
        ),
        "the restarted child answers pings"
    );
}

#[actix_rt::test]
async fn one_for_all_restarts_every_sibling() {
    let sup = start(
        Strategy::OneForAll,
        vec![worker("a"), worker("b"), worker("c")],
    );
    for id in ["a", "b", "c"] {
        running_as(&sup, id, 1, 0).await;
    }
    crash(&sup, "b", FaultMode::Panic).await;
    for id in ["a", "b", "c"] {
        running_as(&sup, id, 2, 1).await;
    }
    assert_eq!(
        child(&sup, "b").await.last_exit.expect("b exited").reason,
        ExitReason::Panic
    );
}

#[actix_rt::test]
async fn rest_for_one_restarts_the_failed_child_and_later_ones_only() {
    let sup = start(
        Strategy::RestForOne,
        vec![worker("a"), worker("b"), worker("c")],
    );
    for id in ["a", "b", "c"] {
        running_as(&sup, id, 1, 0).await;
    }
    crash(&sup, "b", FaultMode::Panic).await;
    running_as(&sup, "b", 2, 1).await;
    running_as(&sup, "c", 2, 1).await;
    let a = child(&sup, "a").await;
    assert_eq!(a.restarts, 0, "a started before b is left alone: {a:?}");
    assert_eq!(hello(&sup, "a").await, Some(1), "a is the same instance");
}

#[actix_rt::test]
async fn transient_child_is_restarted_after_an_error_but_not_after_a_normal_exit() {
    let sup = start(
        Strategy::OneForOne,
        vec![
            worker("done").restart(Restart::Transient),
            worker("broken").restart(Restart::Transient),
        ],
    );
    running_as(&sup, "done", 1, 0).await;
    running_as(&sup, "broken", 1, 0).await;

    lookup(&sup, "done")
        .await
        .expect("done is running")
        .do_send(Finish);
    let done = eventually("done stopped", || async {
        let n = child(&sup, "done").await;
        (n.state == NodeState::Stopped).then_some(n)
    })
    .await;
    assert_eq!(done.restarts, 0, "{done:?}");
    assert_eq!(
        done.last_exit.as_ref().expect("lastExit").reason,
        ExitReason::Normal
    );
    assert_eq!(
        command(&sup, "done", ChildAction::Ping).await.err(),
        Some(CommandError::Unavailable("done".into(), NodeState::Stopped)),
        "a stopped child is not reachable"
    );

    lookup(&sup, "broken")
        .await
        .expect("broken is running")
        .do_send(Fail("disk on fire"));
    let broken = running_as(&sup, "broken", 2, 1).await;
    assert_eq!(
        broken.last_exit.as_ref().expect("lastExit").reason,
        ExitReason::Error
    );
    assert_eq!(message(&broken), "disk on fire");
    assert_eq!(
        child(&sup, "done").await.state,
        NodeState::Stopped,
        "still stopped"
    );
}

#[actix_rt::test]
async fn permanent_child_is_restarted_even_after_a_normal_exit() {
    let sup = start(Strategy::OneForOne, vec![worker("a")]);
    running_as(&sup, "a", 1, 0).await;
    lookup(&sup, "a").await.expect("a running").do_send(Finish);
    let a = running_as(&sup, "a", 2, 1).await;
    assert_eq!(
        a.last_exit.as_ref().expect("lastExit").reason,
        ExitReason::Normal
    );
}

#[actix_rt::test]
async fn temporary_child_is_removed_from_the_tree_when_it_exits() {
    let sup = start(
        Strategy::OneForOne,
        vec![worker("keep"), worker("once").restart(Restart::Temporary)],
    );
    running_as(&sup, "once", 1, 0).await;
    crash(&sup, "once", FaultMode::Panic).await;
    eventually("once removed from the tree", || async {
        tree(&sup).await.find("once").is_none().then_some(())
    })
    .await;
    assert!(
        matches!(
            command(&sup, "once", ChildAction::Lookup).await,
            Err(CommandError::NotFound(_))
        ),
        "a removed child is not found"
    );
    let t = tree(&sup).await;
    assert_eq!(t.children.len(), 1, "{t:?}");
    assert_eq!(
        hello(&sup, "keep").await,
        Some(1),
        "the sibling is untouched"
    );
}

#[actix_rt::test]
async fn root_past_its_intensity_sends_the_reason_and_stops() {
    panic_hook();
    let (tx, rx) = oneshot::channel();
    let root = SupervisorActor::root(
        config(Strategy::OneForOne, 1),
        vec![worker("a"), worker("b")],
        tx,
    )
    .start();
    running_as(&root, "a", 1, 0).await;
    let b = lookup(&root, "b").await.expect("b running");

    crash(&root, "a", FaultMode::Panic).await;
    running_as(&root, "a", 2, 1).await;
    crash(&root, "a", FaultMode::Panic).await;

    let why = tokio::time::timeout(WAIT, rx)
        .await
        .expect("escalation within the wait")
        .expect("the root sends its reason");
    assert!(why.contains("intensity exceeded"), "{why}");
    assert!(why.contains("last: a exited"), "names the child: {why}");
    eventually("the root stops", || async {
        (!root.connected()).then_some(())
    })
    .await;
    eventually("the root's other children are stopped too", || async {
        (!b.connected()).then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn child_supervisor_past_its_intensity_exits_with_an_error_to_its_parent() {
    panic_hook();
    let inner = SupervisorConfig {
        id: ChildId::new("inner"),
        ..config(Strategy::OneForOne, 0)
    };
    let spec = ChildSpec::new("inner", "supervisor", move |link: ChildLink| {
        let addr = SupervisorActor::new(inner.clone(), vec![worker("leaf")], Some(link)).start();
        Ok(ChildHandle::of_supervisor(addr))
    });
    let sup = start(Strategy::OneForOne, vec![spec]);
    let old_leaf = eventually("leaf running", || async { lookup(&sup, "leaf").await }).await;

    crash(&sup, "leaf", FaultMode::Panic).await;
    let inner = eventually("inner restarted by its parent", || async {
        let t = tree(&sup).await;
        let inner = t.find("inner")?.clone();
        let leaf = t.find("leaf")?;
        (inner.restarts == 1 && inner.state == NodeState::Running && leaf.restarts == 0)
            .then_some(inner)
    })
    .await;
    assert_eq!(
        inner.last_exit.as_ref().expect("lastExit").reason,
        ExitReason::Error
    );
    assert!(message(&inner).contains("intensity exceeded"), "{inner:?}");
    // The restarted supervisor starts its children from fresh specs: a new leaf.
    let leaf = eventually("a fresh leaf answers", || async {
        let leaf = lookup(&sup, "leaf").await?;
        (leaf != old_leaf && leaf.send(Hello).await.is_ok()).then_some(leaf)
    })
    .await;
    assert!(leaf.connected());
    eventually("the old leaf is gone", || async {
        (!old_leaf.connected()).then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn child_with_backoff_waits_in_backoff_then_runs_again() {
    let sup = start(
        Strategy::OneForOne,
        vec![worker("flaky").backoff(Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_millis(200),
        })],
    );
    running_as(&sup, "flaky", 1, 0).await;
    let first = lookup(&sup, "flaky").await.expect("flaky running");
    crash(&sup, "flaky", FaultMode::Panic).await;
    // The exit report is queued to the supervisor before the actor's address disconnects,
    // so the tree read next sees the state the exit left, before the backoff delay ends.
    eventually("the crashed instance is gone", || async {
        (!first.connected()).then_some(())
    })
    .await;
    let flaky = child(&sup, "flaky").await;
    assert_eq!(
        flaky.state,
        NodeState::Backoff,
        "waiting out its delay: {flaky:?}"
    );
    assert_eq!(flaky.restarts, 1, "{flaky:?}");
    assert_eq!(
        flaky.last_exit.as_ref().expect("lastExit").reason,
        ExitReason::Panic
    );
    assert!(
        matches!(
            command(&sup, "flaky", ChildAction::Ping).await,
            Err(CommandError::Unavailable(_, NodeState::Backoff))
        ),
        "not reachable during backoff"
    );
    running_as(&sup, "flaky", 2, 1).await;
}

#[actix_rt::test]
async fn hung_child_is_detected_by_pings_and_restarted() {
    panic_hook();
    let arbiters = Arc::new(Mutex::new(Vec::new()));
    let cfg = SupervisorConfig {
        ping_interval: Duration::from_millis(50),
        hang_timeout: Duration::from_millis(300),
        ..config(Strategy::OneForOne, 10)
    };
    let sup = SupervisorActor::new(
        cfg,
        vec![
            worker_on_own_arbiter("stuck", arbiters.clone()),
            worker("ok"),
        ],
        None,
    )
    .start();
    running_as(&sup, "stuck", 1, 0).await;

    crash(&sup, "stuck", FaultMode::Hang).await;
    let stuck = running_as(&sup, "stuck", 2, 1).await;
    assert_eq!(
        stuck.last_exit.as_ref().expect("lastExit").reason,
        ExitReason::Error
    );
    assert!(message(&stuck).contains("hung"), "{stuck:?}");
    assert_eq!(child(&sup, "ok").await.restarts, 0, "sibling untouched");

    let first = arbiters.lock().expect("arbiters lock")[0].clone();
    eventually("the hung child's arbiter is stopped", || {
        let first = first.clone();
        async move { (!first.spawn(async {})).then_some(()) }
    })
    .await;
}

#[actix_rt::test]
async fn panicked_child_on_its_own_arbiter_does_not_leak_the_arbiter() {
    panic_hook();
    let arbiters = Arc::new(Mutex::new(Vec::new()));
    let sup = start(
        Strategy::OneForOne,
        vec![worker_on_own_arbiter("agent", arbiters.clone())],
    );
    running_as(&sup, "agent", 1, 0).await;
    crash(&sup, "agent", FaultMode::Panic).await;
    running_as(&sup, "agent", 2, 1).await;

    let first = arbiters.lock().expect("arbiters lock")[0].clone();
    eventually("the panicked child's arbiter is stopped", || {
        let first = first.clone();
        async move { (!first.spawn(async {})).then_some(()) }
    })
    .await;
}

#[actix_rt::test]
async fn operator_restart_replaces_a_running_child_with_a_normal_exit() {
    let sup = start(Strategy::OneForOne, vec![worker("a"), worker("b")]);
    running_as(&sup, "a", 1, 0).await;
    assert!(matches!(
        command(&sup, "a", ChildAction::Restart).await,
        Ok(CommandOutcome::Done)
    ));
    let a = running_as(&sup, "a", 2, 1).await;
    let exit = a.last_exit.clone().expect("lastExit");
    assert_eq!(exit.reason, ExitReason::Normal);
    assert!(message(&a).contains("restart requested"), "{a:?}");
    assert_eq!(hello(&sup, "b").await, Some(1), "sibling untouched");
    assert_eq!(
        command(&sup, "missing", ChildAction::Restart).await.err(),
        Some(CommandError::NotFound("missing".into()))
    );
}

#[actix_rt::test]
async fn shutdown_stops_every_child_and_the_supervisor() {
    let sup = start(Strategy::OneForOne, vec![worker("a"), worker("b")]);
    running_as(&sup, "a", 1, 0).await;
    running_as(&sup, "b", 1, 0).await;
    let a = lookup(&sup, "a").await.expect("a");
    let b = lookup(&sup, "b").await.expect("b");
    tokio::time::timeout(WAIT, sup.send(Shutdown))
        .await
        .expect("shutdown within the wait")
        .expect("supervisor answers Shutdown");
    eventually("children and supervisor stopped", || async {
        (!a.connected() && !b.connected() && !sup.connected()).then_some(())
    })
    .await;
}

/// A crash whose panic makes the child's supervisor escalate was delivered: the reply must
/// say so, not that the child does not exist. The race (the supervisor stops before its
/// reply future runs) is narrow, hence the rounds.
#[actix_rt::test]
async fn crash_that_makes_a_child_supervisor_escalate_is_reported_as_delivered() {
    panic_hook();
    let mut failures = Vec::new();
    for round in 0..300 {
        let inner = SupervisorConfig {
            id: ChildId::new("inner"),
            ..config(Strategy::OneForOne, 0)
        };
        let arbiters = Arc::new(Mutex::new(Vec::new()));
        let spec = ChildSpec::new("inner", "supervisor", move |link: ChildLink| {
            let leaf = worker_on_own_arbiter("leaf", arbiters.clone());
            let addr = SupervisorActor::new(inner.clone(), vec![leaf], Some(link)).start();
            Ok(ChildHandle::of_supervisor(addr))
        });
        let sup = start(Strategy::OneForOne, vec![spec]);
        eventually("leaf running", || async { lookup(&sup, "leaf").await }).await;
        if let Err(e) = command(&sup, "leaf", ChildAction::Crash(FaultMode::Panic)).await {
            failures.push(format!("round {round}: {e}"));
        }
        eventually("inner restarted after escalating", || async {
            (tree(&sup).await.find("inner")?.restarts == 1).then_some(())
        })
        .await;
        let _ = sup.send(Shutdown).await;
    }
    assert!(
        failures.is_empty(),
        "the crash was delivered (inner escalated and restarted) but reported as: {failures:?}"
    );
}

/// What the logged children did, in order (`start a1`, `stop a1`, ...), shared by all.
type Log = Arc<Mutex<Vec<String>>>;

/// A child that records its start and its stop in a shared log, and takes `stop_delay`
/// to stop when asked (draining work, as the session-queue does).
struct Logged {
    name: String,
    log: Log,
    stop_delay: Duration,
    guard: ExitGuard,
}

impl Logged {
    fn record(&self, what: &str) {
        self.log
            .lock()
            .expect("log lock")
            .push(format!("{what} {}", self.name));
    }
}

impl Actor for Logged {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        self.guard.liveness().attach(ctx);
        self.record("start");
    }
    fn stopped(&mut self, _: &mut Self::Context) {
        self.record("stop");
    }
}

troupe_actors::child_controls!(Logged, |_this| 0);

impl Handler<Shutdown> for Logged {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.run_later(self.stop_delay, |_, ctx| ctx.stop());
    }
}

/// A logged child spec; instance n of child `a` logs as `a<n>`.
fn logged(id: &str, log: &Log) -> ChildSpec {
    let mut starts = 0;
    let log = log.clone();
    let name = id.to_string();
    ChildSpec::new(id, "worker", move |link: ChildLink| {
        starts += 1;
        let addr = Logged {
            name: format!("{name}{starts}"),
            log: log.clone(),
            stop_delay: Duration::from_millis(150),
            guard: link.guard(),
        }
        .start();
        Ok(ChildHandle::of(addr))
    })
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().expect("log lock").clone()
}

/// Waits until the log holds `n` entries and returns them.
async fn log_of(log: &Log, n: usize) -> Vec<String> {
    eventually(&format!("{n} log entries"), || async {
        let e = entries(log);
        (e.len() >= n).then_some(e)
    })
    .await
}

async fn crash_logged(sup: &Addr<SupervisorActor>, id: &str) {
    assert!(
        matches!(
            command(sup, id, ChildAction::Crash(FaultMode::Panic)).await,
            Ok(CommandOutcome::Done)
        ),
        "crash {id} delivered"
    );
}

#[actix_rt::test]
async fn operator_restart_stops_the_old_instance_before_starting_the_new_one() {
    panic_hook();
    let log = Log::default();
    let sup = start(Strategy::OneForOne, vec![logged("a", &log)]);
    log_of(&log, 1).await;
    assert!(matches!(
        command(&sup, "a", ChildAction::Restart).await,
        Ok(CommandOutcome::Done)
    ));
    let e = log_of(&log, 3).await;
    assert_eq!(e, ["start a1", "stop a1", "start a2"], "no overlap: {e:?}");
}

#[actix_rt::test]
async fn one_for_all_stops_siblings_in_reverse_start_order_before_starting_any() {
    panic_hook();
    let log = Log::default();
    let sup = start(
        Strategy::OneForAll,
        vec![logged("a", &log), logged("b", &log), logged("c", &log)],
    );
    log_of(&log, 3).await;
    crash_logged(&sup, "b").await;
    let e = log_of(&log, 9).await;
    assert_eq!(
        e[3..],
        [
            "stop b1", "stop c1", "stop a1", "start a2", "start b2", "start c2"
        ],
        "the crashed child is down; siblings stop newest first, then all start in order: {e:?}"
    );
}

#[actix_rt::test]
async fn rest_for_one_stops_later_children_newest_first_before_restarting() {
    panic_hook();
    let log = Log::default();
    let sup = start(
        Strategy::RestForOne,
        vec![
            logged("a", &log),
            logged("b", &log),
            logged("c", &log),
            logged("d", &log),
        ],
    );
    log_of(&log, 4).await;
    crash_logged(&sup, "b").await;
    let e = log_of(&log, 10).await;
    assert_eq!(
        e[4..],
        [
            "stop b1", "stop d1", "stop c1", "start b2", "start c2", "start d2"
        ],
        "{e:?}"
    );
    assert!(!e.contains(&"stop a1".to_string()), "a untouched: {e:?}");
}

#[actix_rt::test]
async fn one_for_all_stops_a_temporary_sibling_and_does_not_restart_it() {
    panic_hook();
    let log = Log::default();
    let sup = start(
        Strategy::OneForAll,
        vec![
            logged("a", &log),
            logged("tmp", &log).restart(Restart::Temporary),
        ],
    );
    log_of(&log, 2).await;
    crash_logged(&sup, "a").await;
    let e = log_of(&log, 5).await;
    assert_eq!(e[2..], ["stop a1", "stop tmp1", "start a2"], "{e:?}");
    eventually("tmp removed from the tree", || async {
        tree(&sup).await.find("tmp").is_none().then_some(())
    })
    .await;
    let e = entries(&log);
    assert!(
        !e.iter().any(|x| x == "start tmp2"),
        "a temporary child is never restarted: {e:?}"
    );
}

/// Legitimate long work declared busy (as the store declares an open or a write).
#[derive(Message)]
#[rtype(result = "()")]
struct BusyFor(Duration);

/// Blocks the child's thread until the sender side of the channel says go.
#[derive(Message)]
#[rtype(result = "()")]
struct BlockUntil(std::sync::mpsc::Receiver<()>);

impl Handler<BusyFor> for Worker {
    type Result = ();
    fn handle(&mut self, msg: BusyFor, ctx: &mut Self::Context) {
        let busy = self.guard.liveness().busy();
        ctx.wait(
            actix_rt::time::sleep(msg.0)
                .into_actor(self)
                .map(move |_, _, _| drop(busy)),
        );
    }
}

impl Handler<BlockUntil> for Worker {
    type Result = ();
    fn handle(&mut self, msg: BlockUntil, _: &mut Self::Context) {
        let _ = msg.0.recv();
    }
}

fn quick_hangs(strategy: Strategy) -> SupervisorConfig {
    SupervisorConfig {
        ping_interval: Duration::from_millis(50),
        hang_timeout: Duration::from_millis(300),
        ..config(strategy, 10)
    }
}

#[actix_rt::test]
async fn child_busy_with_long_legitimate_work_is_not_declared_hung() {
    panic_hook();
    let sup = SupervisorActor::new(
        quick_hangs(Strategy::OneForOne),
        vec![worker("store")],
        None,
    )
    .start();
    running_as(&sup, "store", 1, 0).await;
    let store = lookup(&sup, "store").await.expect("store running");
    // Four hang timeouts of work holding the context, like a migration on a slow disk.
    store.do_send(BusyFor(Duration::from_millis(1200)));
    let after = store
        .send(Hello)
        .await
        .expect("the same instance answers after its work");
    assert_eq!(after, 1);
    let node = child(&sup, "store").await;
    assert_eq!(node.restarts, 0, "busy is not hung: {node:?}");
    assert!(node.last_exit.is_none(), "{node:?}");
}

#[actix_rt::test]
async fn child_blocking_its_thread_is_replaced_and_counted_unstoppable_until_it_returns() {
    panic_hook();
    let arbiters = Arc::new(Mutex::new(Vec::new()));
    let sup = SupervisorActor::new(
        quick_hangs(Strategy::OneForOne),
        vec![worker_on_own_arbiter("stuck", arbiters.clone())],
        None,
    )
    .start();
    running_as(&sup, "stuck", 1, 0).await;
    let (release, blocked) = std::sync::mpsc::channel();
    lookup(&sup, "stuck")
        .await
        .expect("stuck running")
        .do_send(BlockUntil(blocked));

    let stuck = running_as(&sup, "stuck", 2, 1).await;
    assert!(message(&stuck).contains("hung"), "{stuck:?}");
    eventually("the blocked instance is counted as unstoppable", || async {
        (tree(&sup).await.unstoppable == 1).then_some(())
    })
    .await;

    release
        .send(())
        .expect("the blocked handler is still waiting");
    eventually(
        "once it returns, its arbiter stops and the count drops",
        || async { (tree(&sup).await.unstoppable == 0).then_some(()) },
    )
    .await;
    let first = arbiters.lock().expect("arbiters lock")[0].clone();
    assert!(!first.spawn(async {}), "the old arbiter is gone");
}

#[actix_rt::test]
async fn hung_child_supervisor_is_killed_with_its_whole_subtree() {
    panic_hook();
    let arbiters = Arc::new(Mutex::new(Vec::new()));
    let inner = SupervisorConfig {
        id: ChildId::new("inner"),
        ..quick_hangs(Strategy::OneForOne)
    };
    let leaf_arbiters = arbiters.clone();
    // As the tree runs `agents` and `clients`: a child supervisor on its own arbiter.
    let spec = ChildSpec::new("inner", "supervisor", move |link: ChildLink| {
        let arbiter = Arbiter::new();
        let config = inner.clone();
        let leaf = worker_on_own_arbiter("leaf", leaf_arbiters.clone());
        let addr = SupervisorActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SupervisorActor::new(config, vec![leaf], Some(link))
        });
        Ok(ChildHandle::of_supervisor(addr).on_arbiter(arbiter.handle()))
    });
    let sup = SupervisorActor::new(quick_hangs(Strategy::OneForOne), vec![spec], None).start();
    let old_leaf = eventually("leaf running", || async { lookup(&sup, "leaf").await }).await;

    crash(&sup, "inner", FaultMode::Hang).await;
    let inner = eventually("inner restarted as hung", || async {
        let n = tree(&sup).await.find("inner")?.clone();
        (n.restarts == 1 && n.state == NodeState::Running).then_some(n)
    })
    .await;
    assert!(message(&inner).contains("hung"), "{inner:?}");
    eventually("the old leaf is stopped with its supervisor", || async {
        (!old_leaf.connected()).then_some(())
    })
    .await;
    let first = arbiters.lock().expect("arbiters lock")[0].clone();
    eventually("the old leaf's arbiter is stopped", || {
        let first = first.clone();
        async move { (!first.spawn(async {})).then_some(()) }
    })
    .await;
    let leaf = eventually("a fresh leaf answers", || async {
        let leaf = lookup(&sup, "leaf").await?;
        (leaf != old_leaf && leaf.send(Hello).await.is_ok()).then_some(leaf)
    })
    .await;
    assert!(leaf.connected());
    assert_eq!(tree(&sup).await.unstoppable, 0, "everything killed is gone");
}

#[actix_rt::test]
async fn child_supervisor_blocking_its_thread_still_has_its_subtree_stopped_and_is_counted() {
    panic_hook();
    let arbiters = Arc::new(Mutex::new(Vec::new()));
    let inner = SupervisorConfig {
        id: ChildId::new("inner"),
        ..quick_hangs(Strategy::OneForOne)
    };
    let leaf_arbiters = arbiters.clone();
    let spec = ChildSpec::new("inner", "supervisor", move |link: ChildLink| {
        let arbiter = Arbiter::new();
        let config = inner.clone();
        let leaf = worker_on_own_arbiter("leaf", leaf_arbiters.clone());
        let addr = SupervisorActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SupervisorActor::new(config, vec![leaf], Some(link))
        });
        Ok(ChildHandle::of_supervisor(addr).on_arbiter(arbiter.handle()))
    });
    let sup = SupervisorActor::new(quick_hangs(Strategy::OneForOne), vec![spec], None).start();
    let old_leaf = eventually("leaf running", || async { lookup(&sup, "leaf").await }).await;

    // The inner supervisor's thread never returns: its drop never runs, so only the
    // parent's copy of its children's kill switches can stop the leaf.
    crash(&sup, "inner", FaultMode::Block).await;
    eventually("inner replaced", || async {
        let n = tree(&sup).await.find("inner")?.clone();
        (n.restarts == 1 && n.state == NodeState::Running).then_some(())
    })
    .await;
    eventually(
        "the blocked supervisor's leaf is stopped anyway",
        || async { (!old_leaf.connected()).then_some(()) },
    )
    .await;
    let first = arbiters.lock().expect("arbiters lock")[0].clone();
    eventually("the old leaf's arbiter is stopped", || {
        let first = first.clone();
        async move { (!first.spawn(async {})).then_some(()) }
    })
    .await;
    eventually(
        "the blocked supervisor is counted as unstoppable",
        || async { (tree(&sup).await.unstoppable == 1).then_some(()) },
    )
    .await;
    eventually("a fresh leaf answers", || async {
        let leaf = lookup(&sup, "leaf").await?;
        (leaf != old_leaf && leaf.send(Hello).await.is_ok()).then_some(())
    })
    .await;
}

/// A worker spec whose instances count from `first` (to tell a replaced spec's instance).
fn worker_from(id: &str, first: u64) -> ChildSpec {
    let mut next = first;
    ChildSpec::new(id, "worker", move |link: ChildLink| {
        let instance = next;
        next += 1;
        Ok(ChildHandle::of(
            Worker {
                instance,
                guard: link.guard(),
            }
            .start(),
        ))
    })
}

#[actix_rt::test]
async fn children_are_added_replaced_and_removed_at_runtime_and_siblings_keep_running() {
    let sup = start(Strategy::OneForAll, vec![worker("a"), worker("b")]);
    running_as(&sup, "a", 1, 0).await;
    let b = lookup(&sup, "b").await.expect("b runs");
    // Even under one_for_all, a config change touches only the children it names.
    sup.send(ChangeChildren {
        changes: vec![
            SpecChange::Start(worker_from("a", 100)),
            SpecChange::Start(worker_from("c", 200)),
        ],
    })
    .await
    .expect("supervisor answers");
    running_as(&sup, "a", 100, 1).await;
    running_as(&sup, "c", 200, 0).await;
    let node = child(&sup, "a").await;
    assert!(message(&node).contains("configuration changed"), "{node:?}");
    sup.send(ChangeChildren {
        changes: vec![SpecChange::Remove(ChildId::new("c"))],
    })
    .await
    .expect("supervisor answers");
    eventually("c leaves the tree", || async {
        tree(&sup).await.find("c").is_none().then_some(())
    })
    .await;
    assert!(b.connected(), "b was restarted");
    assert_eq!(hello(&sup, "b").await, Some(1));
    // A kept spec is used at the next restart only.
    sup.send(ChangeChildren {
        changes: vec![SpecChange::Keep(worker_from("b", 300))],
    })
    .await
    .expect("supervisor answers");
    assert_eq!(hello(&sup, "b").await, Some(1));
    command(&sup, "b", ChildAction::Restart)
        .await
        .expect("restart b");
    eventually("b restarts from the kept spec", || async {
        (hello(&sup, "b").await == Some(300)).then_some(())
    })
    .await;
}
