//! Many jobs at once (DESIGN §9, the scheduler at scale): 2,000 config jobs `every 1s` all
//! fire and record ledger rows, and the scheduler keeps up without being taken for hung
//! (its `restarts` in the tree stays 0 under a 1 s hang timeout). Figures at 10,000 jobs:
//! `benches/cron_load.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// Jobs configured.
const JOBS: usize = 2_000;

/// Every this many jobs, one's ledger is read in full.
const SAMPLE_EVERY: usize = 100;

const LONG: Duration = Duration::from_secs(240);

fn config() -> String {
    let mut text = String::from("[providers.echo]\ndelta_delay_ms = 0\n");
    for i in 0..JOBS {
        text.push_str(&format!(
            "[[cron.jobs]]\nid = \"j{i}\"\nschedule = \"every 1s\"\nagent = \"main\"\nmessage = \"tick {i}\"\n"
        ));
    }
    text
}

async fn get(gw: &TestGateway, path: &str) -> Option<Value> {
    reqwest::Client::new()
        .get(gw.http(path))
        .bearer_auth(&gw.token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_jobs_every_second_all_fire_and_record_rows_without_a_scheduler_restart() {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(home.path().join("config.toml"), config()).expect("config.toml");
    let gw = TestGateway::builder()
        .env("TROUPE__LOGGING__LEVEL", "warn")
        .env("TROUPE__SUPERVISOR__PING_INTERVAL_MS", "100")
        .env("TROUPE__SUPERVISOR__HANG_TIMEOUT_MS", "1000")
        .start_in(home);
    gw.wait_ready().await;
    let started = chrono::Utc::now().timestamp_millis();

    // Every job handles fires after the start (its last handled fire moves past it).
    eventually(LONG, "all 2,000 jobs handle a fire", || async {
        let list = get(&gw, "/api/cron").await?;
        let jobs = list["jobs"].as_array()?;
        let handled = jobs
            .iter()
            .filter(|j| j["lastScheduledAt"].as_i64().is_some_and(|t| t > started))
            .count();
        (jobs.len() == JOBS && handled == JOBS).then_some(())
    })
    .await;

    // A sample of jobs ran (an `ok` row with its turn), each fire on its own grid.
    for i in (0..JOBS).step_by(SAMPLE_EVERY) {
        let id = format!("j{i}");
        let rows = eventually(LONG, &format!("{id} has an ok run"), || async {
            let body = get(&gw, &format!("/api/cron/{id}/runs?limit=1000")).await?;
            let rows = body["runs"].as_array()?.clone();
            rows.iter()
                .any(|r| r["outcome"] == "ok" && r["runId"].is_string())
                .then_some(rows)
        })
        .await;
        for row in &rows {
            let outcome = row["outcome"].as_str().unwrap_or_default();
            assert!(
                ["ok", "running", "skipped"].contains(&outcome),
                "{id}: unexpected ledger row {row}"
            );
        }
    }

    // The status counts the fires and the batches they were written in.
    let status = get(&gw, "/api/cron/status").await.expect("cron status");
    assert_eq!(status["jobs"], JOBS, "{status}");
    assert!(status["fires"].as_u64() >= Some(JOBS as u64), "{status}");
    assert!(status["storeBatches"].as_u64() >= Some(1), "{status}");

    let tree = gw.tree().await;
    let scheduler = node(&tree, "scheduler").expect("scheduler in the tree");
    assert_eq!(scheduler["restarts"], 0, "{scheduler}");
    assert_eq!(scheduler["state"], "running", "{scheduler}");
}
