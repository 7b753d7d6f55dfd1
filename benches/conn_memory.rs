//! # `conn_memory`: what an idle WebSocket connection costs the gateway, and whether the
//! memory comes back when connections close
//!
//! Starts the `troupe` binary cargo built for this profile (fresh `TROUPE_HOME`,
//! 127.0.0.1, connection limits lifted), then:
//!
//! 1. reads the idle RSS (no connections);
//! 2. opens 1,000 and then 10,000 idle authenticated connections (each completes the
//!    `connect` handshake and then only answers pings) and prints RSS, RSS per connection
//!    over idle, threads and fds at each level;
//! 3. closes 2,000 connections and opens 2,000 again, `TROUPE_CONN_ROUNDS` times (default 6),
//!    printing RSS after each close and each reopen;
//! 4. closes everything and prints RSS with no connections again.
//!
//! The bench raises its own open-files limit (`RLIMIT_NOFILE`, soft to hard, through
//! `prlimit`) before it starts the gateway, which inherits it; it says so if the limit is
//! still too low for `TROUPE_CONNS` (default 10,000) connections on each side.
//!
//! Run: `cargo bench --bench conn_memory`. Built and run by `cargo test --benches`, it skips
//! itself unless `TROUPE_CONNS` is set.

#[allow(
    dead_code,
    reason = "shared with gateway_load, which uses the parts this bench does not"
)]
mod support;

use std::process::Command;
use std::time::Duration;

use support::client::IdlePool;
use support::process::{ServerKind, ServerProcess};
use support::report::{mb, thousands};
use support::{BenchResult, BoxError};

/// Connections are opened and closed in pools of this many.
const CHUNK: usize = 1_000;

/// Connections opened at a time.
const OPEN_CONCURRENCY: usize = 100;

/// Longest time allowed to open one pool.
const OPEN_LIMIT: Duration = Duration::from_secs(120);

/// Pause before RSS is read, so the gateway has finished handling the last change.
const SETTLE: Duration = Duration::from_secs(2);

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let conns = std::env::var("TROUPE_CONNS").ok();
    if conns.is_none() && !args.iter().any(|a| a == "--bench") {
        println!("conn_memory: skipped; run `cargo bench --bench conn_memory` or set TROUPE_CONNS");
        return Ok(());
    }
    let conns: usize = match conns {
        Some(s) => s.parse().map_err(|e| format!("TROUPE_CONNS={s:?}: {e}"))?,
        None => 10_000,
    };
    let rounds: usize = match std::env::var("TROUPE_CONN_ROUNDS") {
        Ok(s) => s
            .parse()
            .map_err(|e| format!("TROUPE_CONN_ROUNDS={s:?}: {e}"))?,
        Err(_) => 6,
    };
    raise_nofile(2 * conns + 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(conns.max(CHUNK), rounds))
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (with `prlimit`); warns if
/// that is still below `need`.
fn raise_nofile(need: usize) {
    let (soft, hard) = nofile_limits();
    let mut raised = false;
    if soft < need && hard > soft {
        raised = Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={hard}:{hard}"),
            ])
            .status()
            .is_ok_and(|s| s.success());
    }
    let (soft, _) = nofile_limits();
    println!("open-files limit: {soft} (raised: {raised}; need about {need})");
    if soft < need {
        println!("warning: the open-files limit is below what the connections need");
    }
}

/// The soft and hard open-files limits of this process (`unlimited` as `usize::MAX`).
fn nofile_limits() -> (usize, usize) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let mut fields = line.split_whitespace().skip(3).map(|f| match f {
        "unlimited" => usize::MAX,
        n => n.parse().unwrap_or(0),
    });
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

async fn measure(conns: usize, rounds: usize) -> BenchResult<()> {
    let (mut server, _) = ServerProcess::start(ServerKind::Gateway).await?;
    let token = server.token()?;
    let port = server.port();
    tokio::time::sleep(SETTLE).await;
    let idle = server.rss_kib()?;
    let line = |server: &mut ServerProcess, what: &str, open: usize| -> BenchResult<u64> {
        let rss = server.rss_kib()?;
        let (threads, fds) = threads_fds(server.pid());
        let per = if open > 0 && rss > idle {
            format!(
                "{:.1} KB/conn",
                (rss - idle) as f64 * 1024.0 / 1e3 / open as f64
            )
        } else {
            String::from("-")
        };
        println!(
            "{what:<34} {:>7} open  RSS {:>9}  {per:>14}  threads {threads:>3}  fds {fds:>6}",
            thousands(open as u64),
            mb(rss)
        );
        Ok(rss)
    };
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release"
    };
    println!("troupe conn_memory ({profile})");
    line(&mut server, "idle, no connections", 0)?;
    let mut pools: Vec<IdlePool> = Vec::new();
    let mut open = 0;
    for level in [CHUNK, conns] {
        while open < level {
            let mut pool = IdlePool::default();
            let outcome = pool
                .grow_to(port, &token, CHUNK, OPEN_CONCURRENCY, OPEN_LIMIT)
                .await;
            open += outcome.open;
            pools.push(pool);
            if outcome.open < CHUNK {
                println!(
                    "only {} of {CHUNK} opened: {}",
                    outcome.open,
                    outcome.first_error.unwrap_or_default()
                );
                break;
            }
        }
        tokio::time::sleep(SETTLE).await;
        line(
            &mut server,
            &format!("{} idle connections", thousands(level as u64)),
            open,
        )?;
    }
    let peak = server.rss_kib()?;
    for round in 1..=rounds {
        for _ in 0..2 {
            if let Some(pool) = pools.pop() {
                open -= pool_len(pool).await;
            }
        }
        tokio::time::sleep(SETTLE).await;
        line(
            &mut server,
            &format!("round {round}: after closing 2,000"),
            open,
        )?;
        for _ in 0..2 {
            let mut pool = IdlePool::default();
            let outcome = pool
                .grow_to(port, &token, CHUNK, OPEN_CONCURRENCY, OPEN_LIMIT)
                .await;
            open += outcome.open;
            pools.push(pool);
        }
        tokio::time::sleep(SETTLE).await;
        line(
            &mut server,
            &format!("round {round}: after reopening 2,000"),
            open,
        )?;
    }
    for pool in pools.drain(..) {
        pool.close_all().await;
    }
    tokio::time::sleep(SETTLE * 2).await;
    let after = line(&mut server, "all closed", 0)?;
    println!(
        "idle {} → peak {} → all closed {} ({} of the peak's growth returned)",
        mb(idle),
        mb(peak),
        mb(after),
        if peak > idle {
            format!(
                "{:.0} %",
                (peak - after.min(peak)) as f64 * 100.0 / (peak - idle) as f64
            )
        } else {
            "-".into()
        }
    );
    Ok(())
}

/// Closes a pool; returns how many connections it held.
async fn pool_len(mut pool: IdlePool) -> usize {
    let n = pool.open();
    pool.close_all().await;
    n
}

/// Threads and open fds of a process, from `/proc`.
fn threads_fds(pid: u32) -> (u64, u64) {
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (threads, fds)
}
