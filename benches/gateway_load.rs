//! # `gateway_load`: load benchmark of the Troupe gateway
//!
//! Starts the `troupe` binary cargo built for this profile (`troupe gateway run --port 0`, a
//! fresh `TROUPE_HOME` each time, fault injection on, 127.0.0.1 only) and measures:
//!
//! 1. time from exec to `GET /readyz` answering 200 (several fresh starts; p50 and max);
//! 2. idle RSS once ready (after a settle pause);
//! 3. WebSocket `health` throughput and latency: 1 connection × 1 request in flight,
//!    1 connection × 32 pipelined, and 32 connections × 1;
//! 4. RSS with 1,000 and 10,000 idle authenticated connections;
//! 5. time from an injected panic (`supervisor.crash agent:main`) until `supervisor.ping`
//!    gets an answer from the restarted child (p50/p99), checked against the restart count
//!    in `supervisor.tree`;
//! 6. the same throughput patterns against a bare tokio-tungstenite server (its own
//!    process: this binary re-executed), printing Troupe's rate as a share of it. The two
//!    servers take turns in short rounds and each reports its median round, so outside load
//!    on the shared cores hits both alike.
//!
//! It prints a table with the targets beside the figures and never fails on a missed target.
//! A phase that cannot run (the gateway does not start, say) shows as an error under the
//! table, and the run then exits non-zero once the table is printed.
//!
//! Run (about 1.5 minutes on 2 cores):
//!
//! ```text
//! cargo bench --bench gateway_load
//! ```
//!
//! Scale it with environment variables:
//!
//! - `TROUPE_BENCH_QUICK=1`: about 10 s in all (2 starts, 0.7 s phases, 1,000 connections,
//!   20 crashes), for CI;
//! - `TROUPE_BENCH_SECS` (seconds per throughput phase), `TROUPE_BENCH_CONNS` (most idle
//!   connections; the smaller level is a tenth of it), `TROUPE_BENCH_CRASHES`,
//!   `TROUPE_BENCH_READY_RUNS`.
//!
//! `TROUPE__*` variables set in the environment reach the gateway too (to try a setting).
//!
//! Built and run by `cargo test --benches` (no `--bench` flag), it skips itself unless
//! `TROUPE_BENCH_QUICK` is set.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use support::bare_ws_server;
use support::client::{Client, CrashResult, IdlePool, OpenOutcome};
use support::process::{ServerKind, ServerProcess};
use support::report::{self, NOT_MEASURED, Table};
use support::throughput::{self, Measured, Pattern, Rounds};
use support::{BenchResult, BoxError, env_number};

/// Rounds each server gets per throughput pattern (they take turns).
const ROUNDS: usize = 5;

/// The supervised child crashed and pinged in the restart phase.
const CRASH_TARGET: &str = "agent:main";

/// Idle connections opened at a time.
const OPEN_CONCURRENCY: usize = 200;

/// Longest time allowed to open one level of idle connections.
const OPEN_LIMIT: Duration = Duration::from_secs(90);

/// Longest a crashed child may take to answer again before the phase gives up.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

/// How much work one run does.
struct Scale {
    /// Fresh gateway starts timed to ready.
    ready_runs: usize,
    /// Length of each throughput phase.
    phase: Duration,
    /// Pause before reading RSS.
    settle: Duration,
    /// Idle connection counts at which RSS is read (ascending).
    idle_levels: [usize; 2],
    /// Injected panics.
    crashes: usize,
}

impl Scale {
    /// The full run, the quick run if `TROUPE_BENCH_QUICK` is set, then per-knob overrides.
    fn from_env(quick: bool) -> BenchResult<Self> {
        let mut scale = if quick {
            Scale {
                ready_runs: 2,
                phase: Duration::from_millis(700),
                settle: Duration::from_millis(500),
                idle_levels: [100, 1_000],
                crashes: 20,
            }
        } else {
            Scale {
                ready_runs: 5,
                phase: Duration::from_secs(5),
                settle: Duration::from_secs(1),
                idle_levels: [1_000, 10_000],
                crashes: 100,
            }
        };
        if let Some(secs) = env_number::<f64>("TROUPE_BENCH_SECS")? {
            scale.phase = Duration::from_secs_f64(secs.clamp(0.1, 60.0));
        }
        if let Some(conns) = env_number::<usize>("TROUPE_BENCH_CONNS")? {
            let conns = conns.clamp(10, 15_000);
            scale.idle_levels = [conns / 10, conns];
        }
        if let Some(crashes) = env_number::<usize>("TROUPE_BENCH_CRASHES")? {
            scale.crashes = crashes.clamp(1, 10_000);
        }
        if let Some(runs) = env_number::<usize>("TROUPE_BENCH_READY_RUNS")? {
            scale.ready_runs = runs.clamp(1, 50);
        }
        Ok(scale)
    }

    /// Warm-up before each throughput phase (not measured).
    fn warmup(&self) -> Duration {
        (self.phase / 10).min(Duration::from_millis(300))
    }
}

/// One throughput pattern against both servers.
struct Comparison {
    /// The pattern.
    pattern: Pattern,
    /// Against the gateway.
    troupe: Result<Measured, String>,
    /// Against the bare server.
    bare: Result<Measured, String>,
}

/// RSS at one level of idle connections.
struct IdleLevel {
    /// Connections asked for.
    wanted: usize,
    /// How opening them went.
    outcome: OpenOutcome,
    /// Gateway RSS with them open, KiB.
    rss_kib: u64,
}

/// Everything measured in one run; a phase that failed holds its error.
struct Figures {
    /// Exec-to-ready times.
    ready: Result<Vec<Duration>, String>,
    /// Gateway RSS when ready and idle, KiB.
    idle_rss_kib: Result<u64, String>,
    /// Throughput against the gateway and the bare server.
    throughput: Result<Vec<Comparison>, String>,
    /// RSS with idle connections, per level reached.
    idle_conns: Result<Vec<IdleLevel>, String>,
    /// Crash-to-answer times, and the restarts the gateway counted meanwhile (if it says).
    restart: Result<(CrashResult, Option<u64>), String>,
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|arg| arg == bare_ws_server::FLAG) {
        let port_file = args
            .get(i + 1)
            .ok_or("a port file path must follow --bare-ws-server")?;
        return bare_ws_server::run_process(Path::new(port_file));
    }
    support::bench_main("gateway_load", Scale::from_env, |scale| async move {
        let figures = measure_all(&scale).await;
        build_table(&scale, &figures)
    })
}

/// Runs every phase.
async fn measure_all(scale: &Scale) -> Figures {
    progress(&format!(
        "ready time: {} fresh gateway starts",
        scale.ready_runs
    ));
    let ready = measure_ready(scale.ready_runs)
        .await
        .map_err(|e| e.to_string());
    let mut figures = Figures {
        ready,
        idle_rss_kib: Err(NOT_MEASURED.to_owned()),
        throughput: Err(NOT_MEASURED.to_owned()),
        idle_conns: Err(NOT_MEASURED.to_owned()),
        restart: Err(NOT_MEASURED.to_owned()),
    };
    if let Err(error) = measure_gateway(scale, &mut figures).await {
        figures.idle_rss_kib = Err(format!("gateway: {error}"));
    }
    figures
}

/// Starts the gateway `runs` times, each in a fresh home, and returns the exec-to-ready times.
async fn measure_ready(runs: usize) -> BenchResult<Vec<Duration>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (gateway, ready_after) = ServerProcess::start(ServerKind::Gateway).await?;
        times.push(ready_after);
        drop(gateway);
    }
    Ok(times)
}

/// One gateway instance: idle RSS, throughput (beside the bare server), restart time, then
/// idle connections.
async fn measure_gateway(scale: &Scale, figures: &mut Figures) -> BenchResult<()> {
    let (mut gateway, _) = ServerProcess::start(ServerKind::Gateway).await?;
    let (port, token) = (gateway.port(), gateway.token()?);
    tokio::time::sleep(scale.settle).await;
    figures.idle_rss_kib = Ok(gateway.rss_kib()?);

    progress("throughput: gateway and bare server, taking turns");
    figures.throughput = measure_throughput(port, &token, scale)
        .await
        .map_err(|e| e.to_string());

    progress(&format!("gateway: {} injected panics", scale.crashes));
    figures.restart = measure_restart(port, &token, scale.crashes)
        .await
        .map_err(|e| e.to_string());

    progress(&format!(
        "gateway: {} idle connections",
        scale.idle_levels[1]
    ));
    figures.idle_conns = measure_idle_connections(&mut gateway, &token, scale)
        .await
        .map_err(|e| e.to_string());
    Ok(())
}

/// Every throughput pattern against the gateway on `port` and a bare server started for it.
async fn measure_throughput(port: u16, token: &str, scale: &Scale) -> BenchResult<Vec<Comparison>> {
    let (bare, _) = ServerProcess::start(ServerKind::Bare)
        .await
        .map_err(|error| format!("bare server: {error}"))?;
    let servers = [
        throughput::Server {
            port,
            token: token.to_owned(),
        },
        throughput::Server {
            port: bare.port(),
            token: bare.token()?,
        },
    ];
    let rounds = Rounds {
        count: ROUNDS,
        length: scale.phase / ROUNDS as u32,
        warmup: scale.warmup(),
    };
    let mut comparisons = Vec::with_capacity(Pattern::ALL.len());
    for pattern in Pattern::ALL {
        let mut results = throughput::compare(pattern, &servers, &rounds)
            .await
            .into_iter();
        let mut next = || results.next().unwrap_or(Err(NOT_MEASURED.to_owned()));
        let (troupe, bare) = (next(), next());
        comparisons.push(Comparison {
            pattern,
            troupe,
            bare,
        });
    }
    Ok(comparisons)
}

/// Crash-to-answer times of [`CRASH_TARGET`] over `crashes` injected panics, and how many
/// restarts `supervisor.tree` counted for it meanwhile (a check that the panics happened).
async fn measure_restart(
    port: u16,
    token: &str,
    crashes: usize,
) -> BenchResult<(CrashResult, Option<u64>)> {
    let mut client = Client::connect(port, token).await?;
    let before = restarts_in_tree(&mut client).await;
    let result = client
        .crash_and_recover(CRASH_TARGET, crashes, RECOVERY_LIMIT)
        .await?;
    let after = restarts_in_tree(&mut client).await;
    client.close().await;
    let counted = after
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    Ok((result, counted))
}

/// The `restarts` count of [`CRASH_TARGET`] in `supervisor.tree`, if the tree reports one.
async fn restarts_in_tree(client: &mut Client) -> Option<u64> {
    let tree = client.call("supervisor.tree", None).await.ok()?;
    find_restarts(&tree, CRASH_TARGET)
}

/// The `restarts` field of the object whose `id` is `id`, anywhere inside `node`.
fn find_restarts(node: &Value, id: &str) -> Option<u64> {
    match node {
        Value::Object(fields) => {
            let restarts = fields.get("restarts").and_then(Value::as_u64);
            match restarts {
                Some(n) if fields.get("id").and_then(Value::as_str) == Some(id) => Some(n),
                _ => fields.values().find_map(|child| find_restarts(child, id)),
            }
        }
        Value::Array(items) => items.iter().find_map(|item| find_restarts(item, id)),
        _ => None,
    }
}

/// Gateway RSS at each idle connection level; stops at the first level it cannot fill.
async fn measure_idle_connections(
    gateway: &mut ServerProcess,
    token: &str,
    scale: &Scale,
) -> BenchResult<Vec<IdleLevel>> {
    let mut pool = IdlePool::default();
    let mut levels = Vec::new();
    for wanted in scale.idle_levels {
        let outcome = pool
            .grow_to(gateway.port(), token, wanted, OPEN_CONCURRENCY, OPEN_LIMIT)
            .await;
        tokio::time::sleep(scale.settle).await;
        let rss_kib = gateway.rss_kib()?;
        let full = outcome.open >= wanted;
        levels.push(IdleLevel {
            wanted,
            outcome: OpenOutcome {
                open: pool.open(),
                ..outcome
            },
            rss_kib,
        });
        if !full {
            break;
        }
    }
    pool.close_all().await;
    Ok(levels)
}

/// The results table, targets beside figures.
fn build_table(scale: &Scale, figures: &Figures) -> Table {
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release"
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let title = format!("troupe gateway_load ({profile}, {cores} cores)");
    let mut table = Table::new(title);
    add_ready_rows(&mut table, scale, figures);
    add_throughput_rows(&mut table, scale, figures);
    add_idle_connection_rows(&mut table, figures);
    add_restart_rows(&mut table, scale, figures);
    table
}

/// Ready time and idle RSS.
fn add_ready_rows(table: &mut Table, scale: &Scale, figures: &Figures) {
    let runs = scale.ready_runs;
    match &figures.ready {
        Ok(times) if !times.is_empty() => {
            let mut sorted = times.clone();
            sorted.sort_unstable();
            let (p50, max) = (sorted[(sorted.len() - 1) / 2], sorted[sorted.len() - 1]);
            table.check(
                format!("ready: exec → /readyz 200 (p50 of {runs})"),
                report::ms(p50),
                "< 50 ms",
                p50 < Duration::from_millis(50),
            );
            table.info(format!("ready (max of {runs})"), report::ms(max));
        }
        Ok(_) => table.info(format!("ready (p50 of {runs})"), "no runs"),
        Err(error) => table.error(format!("ready (p50 of {runs})"), "< 50 ms", error),
    }
    let label = format!("idle RSS (ready + {:.1} s)", scale.settle.as_secs_f64());
    match figures.idle_rss_kib {
        Ok(kib) => table.check(label, report::mb(kib), "< 15 MB", kib * 1024 < 15_000_000),
        Err(ref error) => table.error(label, "< 15 MB", error),
    }
}

/// Troupe and bare rates for each pattern, and Troupe's share of bare.
fn add_throughput_rows(table: &mut Table, scale: &Scale, figures: &Figures) {
    let comparisons = match &figures.throughput {
        Ok(comparisons) => comparisons,
        Err(error) => return table.error("health req/s", "", error),
    };
    for comparison in comparisons {
        let name = comparison.pattern.label();
        for (server, result) in [("troupe", &comparison.troupe), ("bare", &comparison.bare)] {
            let label = format!("health {name}: {server}");
            match result {
                Ok(measured) => table.info(label, measured.summary()),
                Err(error) => table.error(label, "", error),
            }
        }
        if let (Ok(troupe), Ok(bare)) = (&comparison.troupe, &comparison.bare) {
            let pct = 100.0 * troupe.rate() / bare.rate().max(1e-9);
            let target_pct = comparison.pattern.target_pct();
            table.check(
                format!("health {name}: troupe / bare"),
                format!("{pct:.0} %"),
                &format!("≥ {target_pct:.0} %"),
                pct >= target_pct,
            );
        }
    }
    let round = scale.phase.as_secs_f64() / ROUNDS as f64;
    table.note(
        "health req/s",
        &format!(
            "median of {ROUNDS} rounds of {round:.2} s per server, the two servers taking turns; \
             latency percentiles over all rounds"
        ),
    );
}

/// RSS at each idle connection level, and per connection above idle.
fn add_idle_connection_rows(table: &mut Table, figures: &Figures) {
    let levels = match &figures.idle_conns {
        Ok(levels) => levels,
        Err(error) => return table.error("RSS with idle connections", "", error),
    };
    let idle_kib = figures.idle_rss_kib.as_ref().ok().copied();
    for level in levels {
        let open = level.outcome.open;
        let label = format!(
            "RSS, {} idle connections",
            report::thousands(level.wanted as u64)
        );
        let mut value = report::mb(level.rss_kib);
        if let Some(idle) = idle_kib.filter(|_| open > 0) {
            let per_conn_kb =
                level.rss_kib.saturating_sub(idle) as f64 * 1024.0 / 1e3 / open as f64;
            value.push_str(&format!(" ({per_conn_kb:.1} KB/conn)"));
        }
        if open < level.wanted {
            value.push_str(&format!("; only {open} open"));
        }
        if level.wanted == 10_000 && open >= level.wanted {
            table.check(label, value, "< 150 MB", level.rss_kib * 1024 < 150_000_000);
        } else {
            table.info(label, value);
        }
        if let Some(error) = &level.outcome.first_error {
            let failures = level.outcome.errors;
            table.note(
                format!("opening {} connections", level.wanted),
                &format!("{failures} failed; first: {error}"),
            );
        }
    }
}

/// Crash-to-answer percentiles.
fn add_restart_rows(table: &mut Table, scale: &Scale, figures: &Figures) {
    let crashes = scale.crashes;
    match &figures.restart {
        Ok((result, restarts)) => {
            let (p50, p99) = report::p50_p99(&result.latencies_us);
            let label = format!("restart: crash → ping ok (p50 of {crashes})");
            table.info(label, report::us(p50));
            table.check(
                format!("restart (p99 of {crashes})"),
                report::us(p99),
                "< 10 ms",
                p99 < 10_000,
            );
            table.info(
                "restart: pings seeing UNAVAILABLE",
                format!(
                    "after {} of {} crashes",
                    result.saw_unavailable,
                    result.latencies_us.len()
                ),
            );
            let counted = restarts.map_or_else(|| "not reported".to_owned(), |n| n.to_string());
            table.info("restart: restarts in supervisor.tree", counted);
        }
        Err(error) => table.error(format!("restart (p99 of {crashes})"), "< 10 ms", error),
    }
}

/// A progress line, printed as the run goes.
fn progress(what: &str) {
    println!("gateway_load: {what} ...");
}
