//! Gateway-wide state events on real sockets: `presence` (who is connected, in
//! `hello-ok.snapshot.presence` and as events when a client comes or goes), `supervisor`
//! (a child exited, restarted; connection churn is not news) and `health` (the summary
//! changes with the tree), each `presence`/`health` event carrying `stateVersion`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// Generous: the machine may be loaded.
const LONG: Duration = Duration::from_secs(60);

/// Opens a client and returns it with its `hello-ok` payload.
async fn joined(gw: &TestGateway) -> (WsClient, Value) {
    let mut c = WsClient::open(&gw.ws_url()).await;
    let hello = c.connect(gw_token(gw), &["operator.admin"]).await;
    assert_eq!(hello["ok"], true, "{hello}");
    (c, hello["payload"].clone())
}

/// The gateway's token, as the test harness configured it.
fn gw_token(gw: &TestGateway) -> &str {
    &gw.token
}

/// Waits for a `presence` event about `conn_id` with this `change.reason`.
async fn presence_change(c: &mut WsClient, reason: &'static str, conn_id: &str) -> Value {
    let conn_id = conn_id.to_string();
    tokio::time::timeout(
        LONG,
        c.event_where(move |f| {
            f["event"] == "presence"
                && f["payload"]["changes"].as_array().is_some_and(|l| {
                    l.iter()
                        .any(|c| c["reason"] == reason && c["connId"] == conn_id.as_str())
                })
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("a presence event ({reason})"))
}

fn lists(payload_list: &Value, conn_id: &str) -> bool {
    payload_list
        .as_array()
        .expect("a presence list")
        .iter()
        .any(|e| e["connId"] == conn_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_others_come_and_go_and_a_late_joiner_sees_who_is_here() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let (mut first, hello) = joined(&gw).await;
    let snapshot = &hello["snapshot"];
    assert!(lists(&snapshot["presence"], &first.conn_id), "{snapshot}");
    assert!(snapshot["stateVersion"]["presence"].is_u64(), "{snapshot}");
    assert!(snapshot["stateVersion"]["health"].is_u64(), "{snapshot}");
    assert_eq!(snapshot["health"]["ok"], true, "{snapshot}");

    let (second, _) = joined(&gw).await;
    let came = presence_change(&mut first, "connect", &second.conn_id).await;
    let entry = came["payload"]["presence"]
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["connId"] == second.conn_id.as_str())
        .expect("the newcomer is listed")
        .clone();
    assert_eq!(entry["clientId"], "test", "{entry}");
    assert_eq!(entry["instanceId"], "x", "{entry}");
    assert_eq!(entry["version"], "0", "{entry}");
    assert_eq!(entry["platform"], "linux", "{entry}");
    assert_eq!(entry["mode"], "test", "{entry}");
    assert_eq!(entry["reason"], "connect", "{entry}");
    assert_eq!(entry["ip"], "127.0.0.1", "{entry}");
    assert!(entry["ts"].is_u64(), "{entry}");
    assert!(
        !came.to_string().contains(gw_token(&gw)),
        "no credentials in presence: {came}"
    );
    assert!(came["payload"]["count"].as_u64().expect("count") >= 2);
    let v_came = came["stateVersion"]["presence"].as_u64().expect("version");
    assert!(
        v_came > snapshot["stateVersion"]["presence"].as_u64().unwrap(),
        "{came}"
    );

    // A late joiner's snapshot lists everyone present, itself included.
    let (late, hello) = joined(&gw).await;
    let present = &hello["snapshot"]["presence"];
    for id in [&first.conn_id, &second.conn_id, &late.conn_id] {
        assert!(lists(present, id), "{id} in {present}");
    }
    assert!(
        hello["snapshot"]["stateVersion"]["presence"]
            .as_u64()
            .unwrap()
            > v_came
    );

    let second_id = second.conn_id.clone();
    drop(second);
    let left = presence_change(&mut first, "disconnect", &second_id).await;
    assert!(!lists(&left["payload"]["presence"], &second_id), "{left}");
    assert!(lists(&left["payload"]["presence"], &late.conn_id), "{left}");
    assert!(left["stateVersion"]["presence"].as_u64().unwrap() > v_came);
    drop(late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_told_as_exited_then_restarted_and_health_follows_while_churn_is_silent() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let (mut watcher, hello) = joined(&gw).await;
    let health_before = hello["snapshot"]["stateVersion"]["health"]
        .as_u64()
        .expect("health version");

    // Connection churn: clients come and go, and are seen gone from the tree.
    let mut churned = Vec::new();
    for _ in 0..3 {
        let (c, _) = joined(&gw).await;
        churned.push(c.conn_id.clone());
        drop(c);
    }
    eventually(LONG, "churned sessions leave the tree", || async {
        let tree = gw.tree().await;
        churned
            .iter()
            .all(|id| node(&tree, &format!("ws:{id}")).is_none())
            .then_some(())
    })
    .await;

    let mut operator = gw.client().await;
    let crash = operator
        .request("supervisor.crash", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    let about = |event: &'static str| {
        move |f: &Value| {
            f["event"] == "supervisor"
                && f["payload"]["id"] == "agent:main"
                && f["payload"]["event"] == event
        }
    };
    let restarted = tokio::time::timeout(LONG, watcher.event_where(about("restarted")))
        .await
        .expect("a supervisor event for the restart");
    assert_eq!(restarted["payload"]["restarts"], 1, "{restarted}");
    assert_eq!(restarted["payload"]["supervisor"], "agents", "{restarted}");
    assert!(restarted["payload"]["ts"].is_u64(), "{restarted}");
    let exited = watcher
        .events
        .iter()
        .find(|f| about("exited")(f))
        .cloned()
        .expect("the exit was told before the restart");
    assert_eq!(exited["payload"]["reason"], "panic", "{exited}");
    assert_eq!(exited["payload"]["restarts"], 0, "{exited}");
    assert!(
        exited["seq"].as_u64() < restarted["seq"].as_u64(),
        "exited ({exited}) before restarted ({restarted})"
    );
    let from_sessions: Vec<&Value> = watcher
        .events
        .iter()
        .filter(|f| {
            f["event"] == "supervisor"
                && f["payload"]["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("ws:"))
        })
        .collect();
    assert!(
        from_sessions.is_empty(),
        "connection churn is not news: {from_sessions:?}"
    );

    // Health: the agent was down, then all runs again; each change counted.
    let down = watcher
        .events
        .iter()
        .find(|f| {
            f["event"] == "health"
                && f["payload"]["notRunning"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|d| d["id"] == "agent:main"))
        })
        .cloned();
    let down = match down {
        Some(d) => d,
        None => tokio::time::timeout(
            LONG,
            watcher.event_where(|f| {
                f["event"] == "health" && f["payload"]["notRunning"][0]["id"] == "agent:main"
            }),
        )
        .await
        .expect("a health event while the agent is down"),
    };
    assert_eq!(down["payload"]["allRunning"], false, "{down}");
    assert_eq!(
        down["payload"]["notRunning"][0]["state"], "exited",
        "{down}"
    );
    let v_down = down["stateVersion"]["health"].as_u64().expect("version");
    assert!(v_down > health_before, "{down} after {health_before}");
    let up = tokio::time::timeout(
        LONG,
        watcher.event_where(|f| f["event"] == "health" && f["payload"]["allRunning"] == true),
    )
    .await
    .expect("a health event once the agent runs again");
    assert!(
        up["stateVersion"]["health"].as_u64().unwrap() > v_down,
        "{up}"
    );
    assert!(up["seq"].as_u64() > down["seq"].as_u64());

    let health = operator.request("health", None).await;
    assert_eq!(health["payload"]["ok"], true, "{health}");
    assert_eq!(health["payload"]["allRunning"], true, "{health}");
    assert!(health["payload"]["uptimeMs"].is_u64(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_session_is_news_and_leaves_presence() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let (mut watcher, _) = joined(&gw).await;
    let (mut victim, _) = joined(&gw).await;
    let victim_ws = format!("ws:{}", victim.conn_id);
    let crash = watcher
        .request("supervisor.crash", Some(json!({ "id": victim_ws })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    let (_, _) = victim.until_closed().await;
    let exited = tokio::time::timeout(
        LONG,
        watcher.event_where(|f| f["event"] == "supervisor" && f["payload"]["id"] == victim_ws),
    )
    .await
    .expect("a supervisor event for the crashed session");
    assert_eq!(exited["payload"]["event"], "exited", "{exited}");
    assert_eq!(exited["payload"]["reason"], "panic", "{exited}");
    assert_eq!(exited["payload"]["kind"], "ws", "{exited}");
    presence_change(&mut watcher, "disconnect", &victim.conn_id).await;
    // A session is never listed as a child that is down.
    let health = watcher.request("health", None).await;
    assert_eq!(health["payload"]["allRunning"], true, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_past_the_intensity_is_told_as_gave_up_then_the_supervisor_restarts() {
    let gw = TestGateway::builder()
        .chaos()
        .env("TROUPE__SUPERVISOR__AGENTS__MAX_RESTARTS", "2")
        .start();
    gw.wait_ready().await;
    let (mut watcher, _) = joined(&gw).await;
    let mut op = gw.client().await;
    for round in 1..=3 {
        let crash = op
            .request("supervisor.crash", Some(json!({ "id": "agent:main" })))
            .await;
        assert_eq!(crash["ok"], true, "{crash}");
        if round < 3 {
            gw.child_restarted("agent:main", round).await;
        }
    }
    let about = |id: &'static str, event: &'static str| {
        move |f: &Value| {
            f["event"] == "supervisor" && f["payload"]["id"] == id && f["payload"]["event"] == event
        }
    };
    let gave_up = tokio::time::timeout(LONG, watcher.event_where(about("agent:main", "gave_up")))
        .await
        .expect("gave_up for the agent");
    assert_eq!(gave_up["payload"]["reason"], "intensity", "{gave_up}");
    let escalated = tokio::time::timeout(LONG, watcher.event_where(about("agents", "exited")))
        .await
        .expect("its supervisor's exit");
    assert_eq!(escalated["payload"]["reason"], "error", "{escalated}");
    assert!(gave_up["seq"].as_u64() < escalated["seq"].as_u64());
    tokio::time::timeout(LONG, watcher.event_where(about("agents", "restarted")))
        .await
        .expect("the supervisor restarted");
    let fresh = tokio::time::timeout(LONG, watcher.event_where(about("agent:main", "started")))
        .await
        .expect("a fresh agent under the new supervisor");
    assert_eq!(fresh["payload"]["restarts"], 0, "{fresh}");
    let health = watcher.request("health", None).await;
    assert_eq!(health["payload"]["allRunning"], true, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_presence_lists_the_connected_clients() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut a = gw.client().await;
    let _b = gw.client().await;
    let res = a.request("system-presence", None).await;
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["count"], 2, "{res}");
    let listed = res["payload"]["presence"]
        .as_array()
        .expect("presence list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|e| e["connId"].is_string()), "{res}");
}
