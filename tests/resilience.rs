//! Resilience at load: one run streaming a huge reply cannot flood its clients, the
//! session-queue, or other sessions (its deltas are coalesced into a bounded number).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::*;

/// About 1 MB of words (the default `gateway.ws.max_payload` is 1 MiB).
fn one_megabyte_message() -> String {
    let mut m = String::with_capacity(1_000_000);
    let mut i = 0u64;
    while m.len() < 990_000 {
        m.push_str(&format!("w{i} "));
        i += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_echo_is_acked_and_streamed_in_a_bounded_number_of_deltas() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut big = gw.client().await;
    let mut other = gw.client().await;
    let message = one_megabyte_message();
    let send = big
        .send_request(
            "chat.send",
            json!({ "sessionKey": "agent:main:flood", "message": message, "idempotencyKey": "flood-1" }),
        )
        .await;

    // Another session on another connection answers meanwhile.
    let res = other
        .request(
            "chat.send",
            Some(json!({ "sessionKey": "agent:main:quiet", "message": "still here?", "idempotencyKey": "q1" })),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    let quiet_run = res["payload"]["runId"].as_str().unwrap().to_string();
    let done = other
        .event_where(|e| {
            e["event"] == "chat"
                && e["payload"]["runId"] == quiet_run.as_str()
                && e["payload"]["state"] == "final"
        })
        .await;
    assert_eq!(done["payload"]["message"]["text"], "echo: still here?");

    let ack = big.response(&send).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let run_id = ack["payload"]["runId"].as_str().unwrap().to_string();
    let fin = big
        .event_where(|e| {
            e["event"] == "chat"
                && e["payload"]["runId"] == run_id.as_str()
                && e["payload"]["state"] == "final"
        })
        .await;
    let expected = format!("echo: {message}");
    assert!(
        fin["payload"]["message"]["text"] == expected.as_str(),
        "the final reply is the exact echo"
    );
    let deltas: Vec<&str> = big
        .events
        .iter()
        .filter(|e| {
            e["event"] == "chat"
                && e["payload"]["runId"] == run_id.as_str()
                && e["payload"]["state"] == "delta"
        })
        .map(|e| e["payload"]["delta"].as_str().unwrap())
        .collect();
    assert!(
        !deltas.is_empty() && deltas.len() <= 300,
        "{} chat deltas for a 1 MB reply",
        deltas.len()
    );
    assert!(
        deltas.concat() == expected,
        "the deltas join to the exact reply"
    );
}
