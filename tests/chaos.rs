//! The chaos drill in CI: a minute of mixed load (closed-loop turns, connection churn, REST
//! reads, `/metrics` scrapes) with a crash injected into a random child every few seconds.
//! Afterwards every accepted turn is final exactly once (client's view and the store's),
//! the tree is back to running, and no threads or fds leaked.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

#[path = "chaos/drill.rs"]
#[allow(
    dead_code,
    reason = "shared with benches/soak.rs, which prints more of it"
)]
mod drill;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::*;

/// Threads and fds may differ this much from before the drill once it is over (pools
/// settle, the log file rotates): a leak per crash or per connection grows far beyond it.
const THREAD_MARGIN: u64 = 4;
const FD_MARGIN: u64 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_load_and_crashes_loses_no_turn_runs_none_twice_and_leaks_nothing() {
    let gw = TestGateway::builder()
        .env("TROUPE__DEBUG__FAULT_INJECTION", "true")
        .env("TROUPE__SUPERVISOR__MAX_RESTARTS", "1000")
        .env("TROUPE__SUPERVISOR__AGENTS__MAX_RESTARTS", "1000")
        .start();
    gw.wait_ready().await;
    // Warm up (pools, the agent's arbiter, one connection's worth of buffers), then measure.
    let mut c = gw.client().await;
    for i in 0..3 {
        let res = c
            .request(
                "chat.send",
                Some(json!({ "sessionKey": "agent:main:warm", "message": "hi", "idempotencyKey": format!("w{i}") })),
            )
            .await;
        let run = res["payload"]["runId"].as_str().unwrap().to_string();
        c.request(
            "agent.wait",
            Some(json!({ "runId": run, "timeoutMs": 20_000 })),
        )
        .await;
    }
    drop(c);
    let pid = gw.child.id();
    let (_, threads_before, fds_before) = eventually(WAIT, "stable /proc figures", || async {
        drill::proc_stats(pid)
    })
    .await;

    let config = drill::DrillConfig {
        port: gw.port,
        token: gw.token.clone(),
        duration: Duration::from_secs(60),
        sessions: 8,
        crash_every: Duration::from_secs(5),
        churn_every: Duration::from_millis(100),
        rest_every: Duration::from_millis(200),
        scrape_every: Duration::from_secs(1),
    };
    let report = drill::run(config, Arc::new(drill::Live::default())).await;

    eprintln!(
        "drill: {} accepted, {} ok, failed {:?}, refused {:?}, {} crashes ({:?}), {} churned ({} errors), {} http ok ({} errors)",
        report.keys.len(),
        report.ok(),
        report.failed(),
        report.refused,
        report.crashes,
        report.crash_errors,
        report.churned,
        report.churn_errors,
        report.http_ok,
        report.http_errors
    );
    assert!(report.crashes >= 5, "crashes injected: {report:?}");
    assert!(report.churned > 0 && report.http_ok > 0, "{report:?}");
    assert!(!report.keys.is_empty(), "turns were accepted");
    assert_eq!(
        report.lost(),
        Vec::<String>::new(),
        "accepted turns never final"
    );
    assert_eq!(report.twice(), Vec::<String>::new(), "turns run twice");
    assert!(
        report.ok() > 0,
        "some turns succeeded: {:?}",
        report.failed()
    );
    // A turn accepted just before the store restarts waits for it instead of failing.
    let store_refusals: Vec<String> = report
        .failed()
        .into_keys()
        .filter(|why| why.contains("cannot start the run in the store"))
        .collect();
    assert!(store_refusals.is_empty(), "{store_refusals:?}");

    let tree = eventually(
        Duration::from_secs(60),
        "every node running again",
        || async {
            let tree = gw.tree().await;
            drill::not_running(&tree).is_empty().then_some(tree)
        },
    )
    .await;
    assert!(drill::not_running(&tree).is_empty());

    let store = drill::check_store(&gw.home.path().join("troupe.db"), &report).unwrap();
    assert_eq!(store.checked, report.keys.len());
    assert!(store.missing.is_empty(), "{store:?}");
    assert!(store.not_final.is_empty(), "{store:?}");
    assert!(store.twice.is_empty(), "{store:?}");
    assert!(store.replied_twice.is_empty(), "{store:?}");

    let what = format!(
        "threads back within {THREAD_MARGIN} of {threads_before} and fds within {FD_MARGIN} of {fds_before}"
    );
    eventually(Duration::from_secs(60), &what, || async {
        let (_, threads, fds) = drill::proc_stats(pid)?;
        (threads <= threads_before + THREAD_MARGIN && fds <= fds_before + FD_MARGIN).then_some(())
    })
    .await;
    eprintln!(
        "threads {threads_before} fds {fds_before} before; {:?} after",
        drill::proc_stats(pid)
    );
}
