//! The supervision tree heals: panics and hangs are contained, restarted and visible, and
//! escalate past their restart intensity.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_told_by_supervisor_events_when_a_child_exits_and_comes_back() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let mut watcher = gw.client().await;
    let mut operator = gw.client().await;
    let crash = operator
        .request("supervisor.crash", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    let is = |change: &'static str| {
        move |f: &serde_json::Value| {
            f["event"] == "supervisor"
                && f["payload"]["id"] == "agent:main"
                && f["payload"]["change"] == change
        }
    };
    let exited = tokio::time::timeout(Duration::from_secs(30), watcher.event_where(is("exited")))
        .await
        .expect("a supervisor event for the exit");
    assert_eq!(exited["payload"]["supervisor"], "agents", "{exited}");
    assert_eq!(exited["payload"]["lastExit"]["reason"], "panic", "{exited}");
    let started = tokio::time::timeout(Duration::from_secs(30), watcher.event_where(is("started")))
        .await
        .expect("a supervisor event for the restart");
    assert_eq!(started["payload"]["restarts"], 1, "{started}");
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_agent_is_restarted_and_other_clients_stay_connected() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let mut bystander = gw.client().await;
    let mut operator = gw.client().await;

    let crash = operator
        .request("supervisor.crash", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");

    let agent = gw.child_restarted("agent:main", 1).await;
    assert_eq!(agent["lastExit"]["reason"], "panic");
    assert!(
        agent["lastExit"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("fault injection"),
        "{agent}"
    );

    let ping = operator
        .request("supervisor.ping", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(ping["ok"], true, "restarted agent answers: {ping}");
    let health = bystander.request("health", None).await;
    assert_eq!(
        health["ok"], true,
        "client connected before the crash still answers: {health}"
    );

    let tree = gw.tree().await;
    assert_eq!(
        node(&tree, "store").expect("store")["restarts"],
        0,
        "siblings untouched"
    );
    assert_eq!(node(&tree, "agents").expect("agents")["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_crashing_past_its_intensity_escalates_to_a_restart_of_agents() {
    let gw = TestGateway::builder()
        .chaos()
        .env("TROUPE__SUPERVISOR__AGENTS__MAX_RESTARTS", "2")
        .start();
    gw.wait_ready().await;
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
    let agents = gw.child_restarted("agents", 1).await;
    assert_eq!(agents["lastExit"]["reason"], "error");
    assert!(
        agents["lastExit"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("intensity"),
        "{agents}"
    );
    let tree = gw.tree().await;
    assert_eq!(
        node(&tree, "agent:main").expect("fresh agent")["state"],
        "running"
    );
    gw.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_past_its_intensity_stops_everything_and_exits_non_zero() {
    let mut gw = TestGateway::builder()
        .chaos()
        .env("TROUPE__SUPERVISOR__MAX_RESTARTS", "0")
        .start();
    gw.wait_ready().await;
    let mut op = gw.client().await;
    // The reply may lose the race with the process exiting; the exit code is what counts.
    op.send_request("supervisor.crash", json!({ "id": "store" }))
        .await;
    let status = gw.wait_exit();
    assert_eq!(status.code(), Some(70), "root escalation exits 70");
    assert!(
        !gw.home().join("run/troupe.pid").exists(),
        "PID file removed on the way out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_one_ws_session_closes_only_that_connection() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let mut victim = gw.client().await;
    let mut other = gw.client().await;
    let mut op = gw.client().await;

    let tree = gw.tree().await;
    let clients = node(&tree, "clients").expect("clients");
    assert_eq!(
        clients["children"].as_array().map(|c| c.len()),
        Some(3),
        "{clients}"
    );
    let victim_ws = format!("ws:{}", victim.conn_id);
    assert!(node(&tree, &victim_ws).is_some(), "{victim_ws} in {tree}");
    let crash = op
        .request("supervisor.crash", Some(json!({ "id": victim_ws })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");

    let (_, _) = victim.until_closed().await;
    let health = other.request("health", None).await;
    assert_eq!(health["ok"], true);
    eventually(WAIT, "the dead session leaves the tree", || async {
        let tree = gw.tree().await;
        let n = node(&tree, "clients")?["children"].as_array()?.len();
        (n == 2 && node(&tree, &victim_ws).is_none()).then_some(())
    })
    .await;
    let tree = gw.tree().await;
    assert_eq!(
        node(&tree, "clients").expect("clients")["restarts"],
        0,
        "the clients supervisor itself did not restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_child_is_detected_and_restarted() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let mut op = gw.client().await;
    let hang = op
        .request(
            "supervisor.crash",
            Some(json!({ "id": "agent:main", "mode": "hang" })),
        )
        .await;
    assert_eq!(hang["ok"], true, "{hang}");
    let agent = gw.child_restarted("agent:main", 1).await;
    assert_eq!(agent["lastExit"]["reason"], "error");
    assert!(
        agent["lastExit"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("hung"),
        "{agent}"
    );
    let ping = op
        .request("supervisor.ping", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(ping["ok"], true, "{ping}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_replaces_a_hung_child_and_counts_it() {
    let gw = TestGateway::builder()
        .chaos()
        .env("TROUPE__SUPERVISOR__HANG_TIMEOUT_MS", "60000")
        .start();
    gw.wait_ready().await;
    let mut op = gw.client().await;
    let hang = op
        .request(
            "supervisor.crash",
            Some(json!({ "id": "agent:main", "mode": "hang" })),
        )
        .await;
    assert_eq!(hang["ok"], true);
    let restart = op
        .request("supervisor.restart", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(restart["ok"], true, "{restart}");
    let ping = eventually(WAIT, "the replacement answers", || async {
        let mut c = gw.client().await;
        let p = c
            .request("supervisor.ping", Some(json!({ "id": "agent:main" })))
            .await;
        (p["ok"] == true).then_some(p)
    })
    .await;
    assert!(ping["payload"]["rttUs"].is_u64(), "{ping}");
    let tree = gw.tree().await;
    let agent = node(&tree, "agent:main").expect("agent");
    assert_eq!(agent["restarts"], 1);
    assert_eq!(agent["lastExit"]["reason"], "normal");
    let missing = op
        .request("supervisor.restart", Some(json!({ "id": "agent:nobody" })))
        .await;
    assert_eq!(missing["error"]["code"], "INVALID_REQUEST");
    assert_eq!(missing["error"]["details"]["code"], "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_off_by_default_over_ws_and_http() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut op = gw.client().await;
    let crash = op
        .request("supervisor.crash", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(crash["ok"], false);
    assert_eq!(crash["error"]["code"], "FORBIDDEN");
    assert_eq!(
        crash["error"]["details"]["code"],
        "FAULT_INJECTION_DISABLED"
    );
    let res = reqwest::Client::new()
        .post(gw.http("/api/supervisor/crash"))
        .bearer_auth(&gw.token)
        .json(&json!({ "id": "agent:main" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 403);
    let tree = gw.tree().await;
    assert_eq!(node(&tree, "agent:main").expect("agent")["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_crash_endpoint_panics_the_named_child_and_it_heals() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let http = reqwest::Client::new();
    let unauth = http
        .post(gw.http("/api/supervisor/crash"))
        .json(&json!({ "id": "store" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(unauth.status(), 401);
    let missing = http
        .post(gw.http("/api/supervisor/crash"))
        .bearer_auth(&gw.token)
        .json(&json!({ "id": "nope" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(missing.status(), 404);
    let res = http
        .post(gw.http("/api/supervisor/crash"))
        .bearer_auth(&gw.token)
        .json(&json!({ "id": "store" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 202);
    let store = gw.child_restarted("store", 1).await;
    assert_eq!(store["lastExit"]["reason"], "panic");
    gw.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tree_has_the_documented_shape_and_metrics_expose_it() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let status: serde_json::Value = reqwest::Client::new()
        .get(gw.http("/api/status"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    for key in ["version", "pid", "uptimeMs", "tree"] {
        assert!(status.get(key).is_some(), "missing {key}: {status}");
    }
    let tree = &status["tree"];
    assert_eq!(tree["id"], "root");
    for id in ["store", "agents", "agent:main", "clients"] {
        let n = node(tree, id).unwrap_or_else(|| panic!("no {id} in {tree}"));
        for key in [
            "id",
            "kind",
            "state",
            "restarts",
            "lastExit",
            "startedAt",
            "mailbox",
            "children",
        ] {
            assert!(n.get(key).is_some(), "{id} lacks {key}: {n}");
        }
        assert_eq!(n["state"], "running");
    }
    let unauth = reqwest::get(gw.http("/api/status")).await.expect("GET");
    assert_eq!(unauth.status(), 401);
    let metrics = reqwest::get(gw.http("/metrics"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("troupe_child_restarts_total{id=\"agent:main\",kind=\"agent\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("troupe_ws_connections 0"), "{metrics}");
    assert!(metrics.contains("troupe_uptime_seconds"), "{metrics}");
    let healthz = reqwest::get(gw.http("/healthz")).await.expect("GET");
    assert_eq!(healthz.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_read_whole_by_a_prometheus_text_parser() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let sent = c
        .request(
            "chat.send",
            Some(json!({ "sessionKey": "agent:main:metrics", "message": "hi", "idempotencyKey": "m1" })),
        )
        .await;
    assert_eq!(sent["ok"], true, "{sent}");
    let run = sent["payload"]["runId"].as_str().unwrap().to_string();
    let done = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run, "timeoutMs": 20_000 })),
        )
        .await;
    assert_eq!(done["payload"]["status"], "ok", "{done}");
    let response = reqwest::get(gw.http("/metrics")).await.expect("GET");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("text");
    let scrape = parse_metrics(&text);
    let sample = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no {name} {label:?} in {text}"))
            .clone()
    };
    use prometheus_parse::Value;
    assert!(matches!(sample("troupe_ready", None).value, Value::Gauge(v) if v == 1.0));
    assert!(matches!(sample("troupe_ws_connections", None).value, Value::Gauge(v) if v == 1.0));
    let restarts = sample("troupe_child_restarts_total", Some(("id", "agent:main")));
    assert_eq!(restarts.labels.get("kind"), Some("agent"));
    // A turn into an idle session is accepted and started in one store operation.
    let accepted = sample("troupe_store_op_seconds", Some(("op", "accept_and_start")));
    let Value::Histogram(buckets) = accepted.value else {
        panic!("accept_and_start is a histogram: {accepted:?}");
    };
    assert_eq!(buckets.len(), 9, "8 bounds and +Inf: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "cumulative"
    );
    assert!(
        buckets
            .last()
            .is_some_and(|b| b.less_than.is_infinite() && b.count >= 1.0)
    );
    let count = sample(
        "troupe_store_op_seconds_count",
        Some(("op", "accept_and_start")),
    );
    assert!(matches!(count.value, Value::Untyped(v) | Value::Counter(v) if v >= 1.0));
    assert!(text.contains("troupe_store_batches_total "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_subtree_lists_the_first_100_and_a_count_unless_all_are_asked_for() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut clients = Vec::new();
    for _ in 0..105 {
        clients.push(gw.client().await);
    }
    let tree = gw.tree().await;
    let node_ = node(&tree, "clients").expect("clients");
    assert_eq!(node_["children"].as_array().map(|c| c.len()), Some(100));
    assert_eq!(node_["childCount"], 105);
    let all = clients[0]
        .request("supervisor.tree", Some(json!({ "clients": "all" })))
        .await;
    let n = node(&all["payload"]["tree"], "clients").expect("clients");
    assert_eq!(n["children"].as_array().map(|c| c.len()), Some(105));
    let bad = clients[0]
        .request("supervisor.tree", Some(json!({ "client": "all" })))
        .await;
    assert_eq!(bad["error"]["code"], "INVALID_REQUEST");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("client"),
        "{bad}"
    );
}

/// Fault injection over HTTP, so the caller's own WS connection is not in the way.
async fn crash_http(gw: &TestGateway, id: &str, mode: &str) {
    let res = reqwest::Client::new()
        .post(gw.http("/api/supervisor/crash"))
        .bearer_auth(&gw.token)
        .json(&json!({ "id": id, "mode": mode }))
        .send()
        .await
        .expect("POST /api/supervisor/crash");
    assert_eq!(res.status(), 202, "crash {id} {mode} accepted");
}

/// Threads of the gateway process right now.
fn threads(gw: &TestGateway) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", gw.child.id()))
        .expect("/proc/<pid>/task")
        .count()
}

async fn metrics(gw: &TestGateway) -> String {
    reqwest::get(gw.http("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

fn clients_in(tree: &serde_json::Value) -> Vec<String> {
    node(tree, "clients")
        .and_then(|c| c["children"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_ws_session_is_closed_with_1011_and_leaves_the_tree() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let mut victim = gw.client().await;
    let mut other = gw.client().await;
    let victim_ws = format!("ws:{}", victim.conn_id);
    crash_http(&gw, &victim_ws, "hang").await;

    let (_, close) = victim.until_closed().await;
    let close = close.expect("a close frame, not a dropped socket");
    assert_eq!(u16::from(close.code), 1011, "{close:?}");
    eventually(WAIT, "the hung session leaves the tree", || async {
        let tree = gw.tree().await;
        node(&tree, &victim_ws).is_none().then_some(())
    })
    .await;
    let health = other.request("health", None).await;
    assert_eq!(health["ok"], true, "other sessions keep working: {health}");
    let status: serde_json::Value = reqwest::Client::new()
        .get(gw.http("/api/status"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(
        status["unstoppable"], 0,
        "an async hang is killable: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_agents_repeatedly_does_not_leak_agent_threads() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let baseline = threads(&gw);
    for round in 1..=4 {
        crash_http(&gw, "agents", "hang").await;
        let agents = gw.child_restarted("agents", round).await;
        assert!(
            agents["lastExit"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("hung"),
            "{agents}"
        );
        gw.child_restarted("agent:main", 0).await;
    }
    // Each hang leaked the agent's thread (and the old supervisor) before: 4 rounds, 4+.
    eventually(WAIT, "the old subtrees' threads are gone", || async {
        (threads(&gw) <= baseline + 2).then_some(())
    })
    .await;
    let m = metrics(&gw).await;
    assert!(m.contains("troupe_unstoppable_nodes 0"), "{m}");
    let mut op = gw.client().await;
    let ping = op
        .request("supervisor.ping", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(ping["ok"], true, "the fresh agent answers: {ping}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clients_hang_every_open_connection_shows_in_the_tree() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let mut before = gw.client().await;
    crash_http(&gw, "clients", "hang").await;
    gw.child_restarted("clients", 1).await;

    // The old sessions died with their supervisor (a close frame, not a silent ghost).
    let (_, close) = before.until_closed().await;
    assert!(close.is_some(), "closed with a close frame");

    let mut after = eventually(WAIT, "a new connection is accepted", || async {
        let mut c = WsClient::open(&gw.ws_url()).await;
        let hello = c.connect(&gw.token, &["operator.admin"]).await;
        (hello["ok"] == true).then_some(c)
    })
    .await;
    let after_ws = format!("ws:{}", after.conn_id);
    let tree = eventually(WAIT, "the new connection is in the tree", || async {
        let tree = gw.tree().await;
        node(&tree, &after_ws).is_some().then_some(tree)
    })
    .await;
    let listed = clients_in(&tree);
    assert_eq!(listed, vec![after_ws.clone()], "only live sessions: {tree}");
    let m = metrics(&gw).await;
    assert!(m.contains("troupe_ws_connections 1"), "{m}");
    let health = after.request("health", None).await;
    assert_eq!(health["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_agents_supervisor_is_replaced_its_agent_stopped_and_counted_unstoppable() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let baseline = threads(&gw);
    crash_http(&gw, "agents", "block").await;
    gw.child_restarted("agents", 1).await;
    gw.child_restarted("agent:main", 0).await;
    let status = eventually(WAIT, "status counts the blocked node", || async {
        let status: serde_json::Value = reqwest::Client::new()
            .get(gw.http("/api/status"))
            .bearer_auth(&gw.token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (status["unstoppable"] == 1).then_some(status)
    })
    .await;
    assert_eq!(
        node(&status["tree"], "root").expect("root")["unstoppable"],
        1
    );
    let m = metrics(&gw).await;
    assert!(m.contains("troupe_unstoppable_nodes 1"), "{m}");
    // Only the blocked supervisor's own thread leaks: its agent's thread was stopped by
    // the root, which holds its children's kill switches.
    eventually(WAIT, "only the blocked thread is left over", || async {
        (threads(&gw) <= baseline + 1 + 2).then_some(())
    })
    .await;
}
