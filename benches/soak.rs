//! # `soak`: hours-scale mixed load on the Troupe gateway, with crashes
//!
//! Starts the `troupe` binary cargo built for this profile (a fresh `TROUPE_HOME`, 127.0.0.1,
//! fault injection on) and runs the chaos drill of `tests/chaos/drill.rs` against it for
//! `TROUPE_SOAK_SECS` seconds (default 600): 32 sessions of closed-loop turns through the
//! echo agent (`chat.send`, retried with the same idempotency key until accepted, then
//! `agent.wait` until final), WebSocket connect/disconnect churn (one every 50 ms), REST
//! reads (`/api/sessions`, `/api/status`, one every 100 ms), `/metrics` scrapes (every
//! second), and `supervisor.crash` of a random child (`agent:main`, `channels`,
//! `session-queue`, `scheduler`, `store`) every 10 s.
//!
//! Every minute it prints the gateway's RSS, threads and open fds, turns finished that
//! minute and their submit → final p50/p99. At the end: turns accepted, finished ok,
//! failed (by reason), lost (accepted, never final: 0 expected), run twice (a key given two
//! runs or a run announced final twice: 0 expected), checked against the store as well
//! (each accepted idempotency key has exactly one run, final, with one reply), whether the
//! tree is back to running, and RSS/threads growth from the end of the first minute.
//!
//! Run:
//!
//! ```text
//! TROUPE_SOAK_SECS=3600 cargo bench --bench soak
//! ```
//!
//! `TROUPE_SOAK_SESSIONS` changes the session count; the echo agent streams with a 10 ms
//! delay per delta (`TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS` overrides it), so a turn looks
//! like a short model reply rather than a busy loop. Built and run by `cargo test --benches`,
//! it skips itself unless `TROUPE_SOAK_SECS` is set.

#[allow(
    dead_code,
    reason = "shared with gateway_load, which uses the parts this bench does not"
)]
mod support;

#[path = "../tests/chaos/drill.rs"]
#[allow(dead_code, reason = "shared with tests/chaos.rs")]
mod drill;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::process::{ServerKind, ServerProcess, Setup};
use support::report::{mb, thousands};
use support::{BenchResult, BoxError};

/// Default soak length.
const DEFAULT_SECS: u64 = 600;

/// How often a line of figures is printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let secs = std::env::var("TROUPE_SOAK_SECS").ok();
    if secs.is_none() && !args.iter().any(|a| a == "--bench") {
        println!("soak: skipped; run `cargo bench --bench soak` or set TROUPE_SOAK_SECS");
        return Ok(());
    }
    let secs: u64 = match secs {
        Some(s) => s
            .parse()
            .map_err(|e| format!("TROUPE_SOAK_SECS={s:?}: {e}"))?,
        None => DEFAULT_SECS,
    };
    let sessions: usize = match std::env::var("TROUPE_SOAK_SESSIONS") {
        Ok(s) => s
            .parse()
            .map_err(|e| format!("TROUPE_SOAK_SESSIONS={s:?}: {e}"))?,
        Err(_) => 32,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(soak(Duration::from_secs(secs), sessions))
}

async fn soak(duration: Duration, sessions: usize) -> BenchResult<()> {
    let mut setup = Setup::default();
    if std::env::var("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS").is_err() {
        setup.env.push((
            "TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS".into(),
            "10".into(),
        ));
    }
    let (mut server, _) = ServerProcess::start_with(ServerKind::Gateway, &setup).await?;
    let pid = server.pid();
    let token = server.token()?;
    let idle = drill::proc_stats(pid).ok_or("cannot read /proc for the gateway")?;
    println!(
        "soak: {} s, {sessions} sessions, crash every 10 s; idle gateway: RSS {}, {} threads, {} fds",
        duration.as_secs(),
        mb(idle.0),
        idle.1,
        idle.2
    );
    println!(
        "{:>6} {:>10} {:>8} {:>6} {:>10} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "minute",
        "RSS",
        "threads",
        "fds",
        "turns",
        "p50 ms",
        "p99 ms",
        "crashes",
        "churned",
        "anon",
        "file",
        "store"
    );
    let config = drill::DrillConfig {
        port: server.port(),
        token: token.clone(),
        duration,
        sessions,
        crash_every: Duration::from_secs(10),
        churn_every: Duration::from_millis(50),
        rest_every: Duration::from_millis(100),
        scrape_every: Duration::from_secs(1),
    };
    let live = Arc::new(drill::Live::default());
    let drill_task = tokio::spawn(drill::run(config, live.clone()));
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut all_p99 = Vec::new();
    let mut minute = 0;
    while !drill_task.is_finished() {
        let next = started + SAMPLE_EVERY * (minute + 1);
        while Instant::now() < next && !drill_task.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if drill_task.is_finished() {
            break;
        }
        minute += 1;
        let lat = live.take_latencies();
        let (p50, p99) = drill::p50_p99(&lat);
        let stats = drill::proc_stats(pid).unwrap_or_default();
        samples.push(stats);
        all_p99.push(p99);
        let (anon, file) = rss_split(pid);
        println!(
            "{minute:>6} {:>10} {:>8} {:>6} {:>10} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10} {:>10}",
            mb(stats.0),
            stats.1,
            stats.2,
            thousands(lat.len() as u64),
            p50,
            p99,
            live.crashes.load(std::sync::atomic::Ordering::Relaxed),
            thousands(live.churned.load(std::sync::atomic::Ordering::Relaxed)),
            mb(anon),
            mb(file),
            mb(store_kib(server.home())),
        );
    }
    let report = drill_task.await?;
    let tree_ok = tree_running(server.port(), &token).await;
    let store = drill::check_store(&server.home().join("troupe.db"), &report);
    let end = drill::proc_stats(pid).unwrap_or_default();
    let (p50, p99) = drill::p50_p99(&report.latencies_ms);
    println!();
    println!(
        "turns accepted         {}",
        thousands(report.keys.len() as u64)
    );
    println!("finished ok            {}", thousands(report.ok() as u64));
    let failed = report.failed();
    println!(
        "failed (with a reason) {}",
        thousands(failed.values().sum::<u64>())
    );
    for (why, n) in &failed {
        println!("    {n:>8}  {why}");
    }
    for (why, n) in &report.refused {
        println!("refused  {n:>8}  {why}");
    }
    println!("lost                   {}", report.lost().len());
    println!("run twice              {}", report.twice().len());
    for t in report.twice().iter().take(10) {
        println!("    {t}");
    }
    match &store {
        Ok(s) => println!(
            "store: {} keys checked; missing {}, not final {}, twice {}, replied twice {}",
            thousands(s.checked as u64),
            s.missing.len(),
            s.not_final.len(),
            s.twice.len(),
            s.replied_twice.len()
        ),
        Err(e) => println!("store check failed: {e}"),
    }
    println!(
        "turn latency (all)     p50 {p50} ms, p99 {p99} ms; p99 per minute min {} / max {} ms",
        all_p99.iter().min().copied().unwrap_or(0),
        all_p99.iter().max().copied().unwrap_or(0)
    );
    println!(
        "crashes injected       {} ({} refused: {:?})",
        report.crashes,
        report.crash_errors.len(),
        report.crash_errors.iter().take(3).collect::<Vec<_>>()
    );
    println!(
        "churn connections      {} ({} failed)",
        thousands(report.churned),
        report.churn_errors
    );
    println!(
        "REST reads + scrapes   {} ({} failed)",
        thousands(report.http_ok),
        report.http_errors
    );
    println!(
        "tree back to running   {}",
        if tree_ok { "yes" } else { "NO" }
    );
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let growth = |a: u64, b: u64| (b as f64 - a as f64) * 100.0 / (a.max(1) as f64);
        println!(
            "after warm-up (minute 1 → {minute}): RSS {} → {} ({:+.1} %), threads {} → {} ({:+.1} %), fds {} → {}",
            mb(first.0),
            mb(last.0),
            growth(first.0, last.0),
            first.1,
            last.1,
            growth(first.1, last.1),
            first.2,
            last.2
        );
    }
    println!(
        "after the drill: RSS {}, {} threads, {} fds",
        mb(end.0),
        end.1,
        end.2
    );
    server.rss_kib()?; // an error with the log's tail if the gateway died
    let bad = !report.lost().is_empty()
        || !report.twice().is_empty()
        || !tree_ok
        || store.as_ref().map_or(true, |s| {
            !(s.missing.is_empty()
                && s.not_final.is_empty()
                && s.twice.is_empty()
                && s.replied_twice.is_empty())
        });
    if bad {
        return Err("an invariant was broken (see above)".into());
    }
    Ok(())
}

/// The gateway's resident memory split into heap and stacks (`RssAnon`) and mapped files
/// (`RssFile`: the binary, shared libraries, a memory-mapped store), in KiB.
fn rss_split(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:") + field("RssShmem:"))
}

/// The store's size on disk (database, WAL and shared-memory index) in KiB.
fn store_kib(home: &std::path::Path) -> u64 {
    ["troupe.db", "troupe.db-wal", "troupe.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(home.join(f)).ok())
        .map(|m| m.len() / 1024)
        .sum()
}

/// Whether every node of the tree is running again (waits up to a minute).
async fn tree_running(port: u16, token: &str) -> bool {
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
    else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let tree = async {
            let res = http
                .get(format!("http://127.0.0.1:{port}/api/status"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = res.json().await.ok()?;
            Some(v["tree"].clone())
        };
        if let Some(tree) = tree.await
            && drill::not_running(&tree).is_empty()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
