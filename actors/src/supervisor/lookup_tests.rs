//! The registry pushes a restarted child's address to lookups waiting for it.

use std::time::Duration;

use actix::prelude::*;

use super::*;
use crate::messages::{FaultMode, InjectFault};

/// A child that only lives (and panics on request).
struct Idle {
    _guard: ExitGuard,
}

impl Actor for Idle {
    type Context = Context<Self>;
}

crate::child_controls!(Idle, |_this| 0);

impl Handler<crate::messages::Shutdown> for Idle {
    type Result = ();
    fn handle(&mut self, _: crate::messages::Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

fn tree() -> Addr<SupervisorActor> {
    let spec = ChildSpec::new("idle", "test", |link: ChildLink| {
        let guard = link.guard();
        Ok(ChildHandle::of(Idle { _guard: guard }.start()))
    })
    .without_liveness()
    // Long enough that a lookup surely arrives while the child waits out its backoff.
    .backoff(Backoff {
        min: Duration::from_millis(300),
        max: Duration::from_millis(300),
    });
    let config = SupervisorConfig {
        id: ChildId::new("root"),
        strategy: Strategy::OneForOne,
        intensity: Intensity {
            max_restarts: 10,
            period: Duration::from_secs(60),
        },
        ping_interval: Duration::from_secs(60),
        hang_timeout: Duration::from_secs(60),
        list_limit: 100,
    };
    let (escalation, _) = tokio::sync::oneshot::channel();
    SupervisorActor::root(config, vec![spec], escalation).start()
}

#[actix_rt::test]
async fn a_lookup_during_a_restart_gets_the_new_address_when_the_child_starts() {
    let root = tree();
    let first = lookup_patiently::<Idle>(&root, "idle").await.unwrap();
    first.do_send(InjectFault {
        mode: FaultMode::Panic,
    });
    // Not running now (in backoff): a plain lookup finds nothing...
    let mut down = false;
    for _ in 0..200 {
        if lookup::<Idle>(&root, "idle").await.is_err() {
            down = true;
            break;
        }
        actix_rt::task::yield_now().await;
    }
    assert!(down, "the child never went down");
    // ...and one ask that waits is answered by the restart itself, with a live address.
    let asked = root
        .send(ChildCommand {
            id: ChildId::new("idle"),
            action: ChildAction::LookupWhenRunning(Duration::from_secs(60)),
        })
        .await
        .unwrap();
    let Ok(CommandOutcome::Found(addr)) = asked else {
        panic!("the waiting lookup was not answered with an address");
    };
    let second = addr.downcast_ref::<Addr<Idle>>().cloned().unwrap();
    assert!(second.connected());
    assert!(!first.connected());
}

#[actix_rt::test]
async fn a_lookup_for_the_wrong_actor_type_is_an_error_naming_the_child_and_type() {
    let root = tree();
    assert!(lookup_patiently::<Idle>(&root, "idle").await.is_ok());
    let wrong = lookup::<SupervisorActor>(&root, "idle").await.unwrap_err();
    let LookupError::WrongType { id, expected } = &wrong else {
        panic!("expected WrongType, got {wrong:?}");
    };
    assert_eq!(id, "idle");
    assert!(expected.ends_with("SupervisorActor"), "{expected}");
    assert!(wrong.to_string().contains("wrong actor type"), "{wrong}");
    let patient = lookup_patiently::<SupervisorActor>(&root, "idle").await;
    assert!(
        matches!(patient, Err(LookupError::WrongType { .. })),
        "{patient:?}"
    );
}

#[actix_rt::test]
async fn a_lookup_of_an_unknown_id_says_it_is_not_in_the_tree() {
    let root = tree();
    let missing = lookup::<Idle>(&root, "nope").await.unwrap_err();
    assert!(
        matches!(missing, LookupError::Missing(CommandError::NotFound(ref id)) if id == "nope"),
        "{missing:?}"
    );
}

/// A child whose stop is held until it is told [`Release`].
struct SlowStop {
    _guard: ExitGuard,
}

impl Actor for SlowStop {
    type Context = Context<Self>;
}

crate::child_controls!(SlowStop, |_this| 0);

impl Handler<crate::messages::Shutdown> for SlowStop {
    type Result = ();
    fn handle(&mut self, _: crate::messages::Shutdown, _: &mut Self::Context) {}
}

/// Lets a [`SlowStop`] stop.
#[derive(Message)]
#[rtype(result = "()")]
struct Release;

impl Handler<Release> for SlowStop {
    type Result = ();
    fn handle(&mut self, _: Release, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[actix_rt::test]
async fn a_child_being_stopped_for_a_restart_is_not_handed_out_and_a_patient_lookup_gets_the_next()
{
    let spec = ChildSpec::new("slow", "test", |link: ChildLink| {
        let guard = link.guard();
        Ok(ChildHandle::of(SlowStop { _guard: guard }.start()))
    })
    .without_liveness()
    .shutdown(Duration::from_secs(60));
    let config = SupervisorConfig {
        id: ChildId::new("root"),
        strategy: Strategy::OneForOne,
        intensity: Intensity {
            max_restarts: 10,
            period: Duration::from_secs(60),
        },
        ping_interval: Duration::from_secs(60),
        hang_timeout: Duration::from_secs(60),
        list_limit: 100,
    };
    let (escalation, _) = tokio::sync::oneshot::channel();
    let root = SupervisorActor::root(config, vec![spec], escalation).start();
    let first = lookup_patiently::<SlowStop>(&root, "slow").await.unwrap();
    let restart = root
        .send(ChildCommand {
            id: ChildId::new("slow"),
            action: ChildAction::Restart,
        })
        .await
        .unwrap();
    assert!(matches!(restart, Ok(CommandOutcome::Done)));
    // The old instance still runs (its stop is held), but it is asked to stop: a plain
    // lookup is told the child is restarting...
    let plain = lookup::<SlowStop>(&root, "slow").await;
    assert!(
        matches!(
            plain,
            Err(LookupError::Missing(CommandError::Unavailable(
                _,
                NodeState::Restarting
            )))
        ),
        "{plain:?}"
    );
    assert!(first.connected());
    // ...and one that waits (queued before the old instance may stop) gets the next one.
    let patient = root.send(ChildCommand {
        id: ChildId::new("slow"),
        action: ChildAction::LookupWhenRunning(Duration::from_secs(60)),
    });
    first.do_send(Release);
    let Ok(CommandOutcome::Found(addr)) = patient.await.unwrap() else {
        panic!("the waiting lookup was not answered with an address");
    };
    let second = addr.downcast_ref::<Addr<SlowStop>>().cloned().unwrap();
    assert!(second.connected());
    assert!(!first.connected());
}
