//! # `cron_load`: scheduler and config-reload benchmark of the Troupe gateway
//!
//! Starts the `troupe` binary (`troupe gateway run --port 0`, fresh `TROUPE_HOME`) and prints:
//!
//! 1. with 10,000 config jobs `every 1s` (echo agent, no delay), fire-time lateness
//!    (`firedAt - scheduledAt` of the ledger rows of a sample of jobs) p50/p99, the rows
//!    per second the ledger records (fired and skipped), and the CPU of the scheduler's
//!    own thread (`/proc/PID/task/*/comm` = `scheduler`) and of the whole process, in % of
//!    one core (goal: p99 lateness under 50 ms, scheduler under 10 %), the scheduler's
//!    wake-ups and ledger store batches per second (`/api/cron/status`) and its restarts;
//! 2. config hot reload from 1 to 100 agents: time from the file's rename to
//!    `status.reload.lastAppliedAt` and to all 100 `agent:*` nodes running.
//!
//! It prints figures and never asserts a target.
//!
//! ```text
//! cargo bench --bench cron_load
//! ```
//!
//! `TROUPE_BENCH_QUICK=1` measures 3 s (else 15 s; `TROUPE_BENCH_SECS` overrides) with
//! 1,000 jobs (`TROUPE_BENCH_JOBS` overrides). Built and run by `cargo test --benches`
//! (no `--bench` flag), it skips itself unless `TROUPE_BENCH_QUICK` is set.

#[allow(
    dead_code,
    reason = "shared with gateway_load and turn_load, which use the parts this bench does not"
)]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::{ServerKind, ServerProcess, Setup};
use support::report;
use support::{BenchResult, BoxError};

/// Jobs whose ledger is read for the lateness figures.
const SAMPLE_JOBS: usize = 200;

/// Agents of the reload part.
const RELOAD_AGENTS: usize = 100;

/// Clock ticks per second of `/proc/PID/task/TID/stat` (`USER_HZ`).
const TICKS_PER_SEC: f64 = 100.0;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let quick = std::env::var("TROUPE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if !quick && !args.iter().any(|arg| arg == "--bench") {
        println!(
            "cron_load: skipped; run `cargo bench --bench cron_load` or set TROUPE_BENCH_QUICK=1"
        );
        return Ok(());
    }
    let secs: u64 = match std::env::var("TROUPE_BENCH_SECS") {
        Ok(v) => v.parse()?,
        Err(_) if quick => 3,
        Err(_) => 15,
    };
    let jobs: usize = match std::env::var("TROUPE_BENCH_JOBS") {
        Ok(v) => v.parse()?,
        Err(_) if quick => 1_000,
        Err(_) => 10_000,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut table = report::Table::new(format!(
            "cron_load: {jobs} jobs every 1s for {secs} s; reload to {RELOAD_AGENTS} agents"
        ));
        match cron(jobs, Duration::from_secs(secs)).await {
            Ok(figures) => {
                table.info(
                    "ledger rows/s (fired + skipped)",
                    format!("{:.0}", figures.rows_per_sec),
                );
                table.info("fired rows sampled", figures.samples.to_string());
                table.check("lateness p50", format!("{} ms", figures.p50_ms), "", true);
                table.check(
                    "lateness p99",
                    format!("{} ms", figures.p99_ms),
                    "< 50 ms",
                    figures.p99_ms < 50,
                );
                table.check(
                    "scheduler thread CPU",
                    format!("{:.1} % of a core", figures.scheduler_cpu_pct),
                    "< 10 %",
                    figures.scheduler_cpu_pct < 10.0,
                );
                table.info(
                    "whole process CPU",
                    format!("{:.0} % of a core", figures.process_cpu_pct),
                );
                table.info(
                    "scheduler wake-ups/s",
                    format!("{:.0}", figures.wakes_per_sec),
                );
                table.info(
                    "ledger store batches/s",
                    format!("{:.0}", figures.batches_per_sec),
                );
                table.info("scheduler restarts", figures.restarts.to_string());
            }
            Err(e) => table.error("jobs every 1s", "", &e),
        }
        match reload(RELOAD_AGENTS).await {
            Ok((applied, running)) => {
                table.info("reload to 100 agents: applied", report::ms(applied));
                table.info("reload to 100 agents: all running", report::ms(running));
            }
            Err(e) => table.error("reload to 100 agents", "", &e),
        }
        table.print();
        Ok::<(), BoxError>(())
    })
}

struct CronFigures {
    rows_per_sec: f64,
    samples: usize,
    p50_ms: u32,
    p99_ms: u32,
    scheduler_cpu_pct: f64,
    process_cpu_pct: f64,
    wakes_per_sec: f64,
    batches_per_sec: f64,
    restarts: u64,
}

fn jobs_config(jobs: usize) -> String {
    let mut text = String::from("[providers.echo]\ndelta_delay_ms = 0\n");
    for i in 0..jobs {
        text.push_str(&format!(
            "[[cron.jobs]]\nid = \"j{i}\"\nschedule = \"every 1s\"\nagent = \"main\"\nmessage = \"tick {i}\"\n"
        ));
    }
    text
}

async fn cron(jobs: usize, window: Duration) -> BenchResult<CronFigures> {
    let setup = Setup {
        env: vec![("TROUPE__LOGGING__LEVEL".into(), "warn".into())],
        files: vec![(PathBuf::from("config.toml"), jobs_config(jobs))],
    };
    let (mut server, _) = ServerProcess::start_with(ServerKind::Gateway, &setup).await?;
    let pid = server_pid(&server)?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let token = server.token()?;
    // Warm up: the jobs load and fire a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows_before = ledger_rows(&server)?;
    let status_before = get_json(&http, &server, &token, "/api/cron/status").await?;
    let sched_before = thread_cpu(pid, "scheduler")?;
    let proc_before = server.cpu_time()?;
    let started_ms = now_ms();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let wall = t0.elapsed();
    let sched_cpu = thread_cpu(pid, "scheduler")? - sched_before;
    let proc_cpu = server.cpu_time()? - proc_before;
    let ended_ms = now_ms();
    let rows = ledger_rows(&server)? - rows_before;
    let status_after = get_json(&http, &server, &token, "/api/cron/status").await?;
    let per_sec = |field: &str| {
        let delta = status_after[field]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(status_before[field].as_u64().unwrap_or(0));
        delta as f64 / wall.as_secs_f64()
    };
    let tree = get_json(&http, &server, &token, "/api/status").await?;
    let restarts = tree["tree"]["children"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["id"] == "scheduler")
        .and_then(|n| n["restarts"].as_u64())
        .unwrap_or(0);
    let mut lateness = Vec::new();
    let step = (jobs / SAMPLE_JOBS).max(1);
    for i in (0..jobs).step_by(step) {
        let url = format!(
            "http://127.0.0.1:{}/api/cron/j{i}/runs?limit=100",
            server.port()
        );
        let body: Value = http
            .get(url)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        for row in body["runs"].as_array().into_iter().flatten() {
            let (Some(scheduled), Some(fired)) =
                (row["scheduledAt"].as_i64(), row["firedAt"].as_i64())
            else {
                continue;
            };
            if scheduled >= started_ms && scheduled <= ended_ms {
                lateness.push(u32::try_from((fired - scheduled).max(0)).unwrap_or(u32::MAX));
            }
        }
    }
    if lateness.is_empty() {
        return Err("no fired ledger rows in the window".into());
    }
    let (p50_ms, p99_ms) = report::p50_p99(&lateness);
    Ok(CronFigures {
        rows_per_sec: rows as f64 / wall.as_secs_f64(),
        samples: lateness.len(),
        p50_ms,
        p99_ms,
        scheduler_cpu_pct: 100.0 * sched_cpu / wall.as_secs_f64(),
        process_cpu_pct: 100.0 * proc_cpu.as_secs_f64() / wall.as_secs_f64(),
        wakes_per_sec: per_sec("wakes"),
        batches_per_sec: per_sec("storeBatches"),
        restarts,
    })
}

/// A JSON answer of the gateway's HTTP API.
async fn get_json(
    http: &reqwest::Client,
    server: &ServerProcess,
    token: &str,
    path: &str,
) -> BenchResult<Value> {
    let url = format!("http://127.0.0.1:{}{path}", server.port());
    Ok(http
        .get(url)
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The gateway's pid, from its PID file.
fn server_pid(server: &ServerProcess) -> BenchResult<u32> {
    let path = server.home().join("run/troupe.pid");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text.trim().parse()?)
}

/// CPU seconds (user + system) used by the thread named `name` of process `pid`.
fn thread_cpu(pid: u32, name: &str) -> BenchResult<f64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            return Ok((user + system) / TICKS_PER_SEC);
        }
    }
    Err(format!("no thread named {name:?} in process {pid}").into())
}

/// Ledger rows so far, counted in the store file (read-only, beside the running writer).
fn ledger_rows(server: &ServerProcess) -> BenchResult<i64> {
    let db = server.home().join("troupe.db");
    let out = std::process::Command::new("sqlite3")
        .arg(format!("file:{}?mode=ro", db.display()))
        .arg("SELECT count(*) FROM cron_runs")
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().parse()?),
        _ => Ok(0),
    }
}

fn agents_config(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let id = if i == 0 {
            "main".to_string()
        } else {
            format!("a{i}")
        };
        text.push_str(&format!(
            "[[agents]]\nid = \"{id}\"\nprovider = \"echo\"\nmodel = \"echo\"\n"
        ));
    }
    text
}

async fn reload(agents: usize) -> BenchResult<(Duration, Duration)> {
    let setup = Setup {
        env: vec![("TROUPE__LOGGING__LEVEL".into(), "warn".into())],
        files: vec![(PathBuf::from("config.toml"), agents_config(1))],
    };
    let (server, _) = ServerProcess::start_with(ServerKind::Gateway, &setup).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let token = server.token()?;
    let status_url = format!("http://127.0.0.1:{}/api/status", server.port());
    let temp = server.home().join(".config.toml.new");
    std::fs::write(&temp, agents_config(agents))?;
    let t0 = Instant::now();
    std::fs::rename(&temp, server.home().join("config.toml"))?;
    let mut applied = None;
    while t0.elapsed() < Duration::from_secs(60) {
        let status: Value = http
            .get(&status_url)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if applied.is_none() && status["reload"]["lastAppliedAt"].is_u64() {
            applied = Some(t0.elapsed());
        }
        let running = status["tree"]["children"]
            .as_array()
            .and_then(|c| c.iter().find(|n| n["id"] == "agents"))
            .and_then(|n| n["children"].as_array())
            .map(|c| c.iter().filter(|n| n["state"] == "running").count())
            .unwrap_or(0);
        if let Some(applied) = applied
            && running == agents
        {
            return Ok((applied, t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Err("the reload did not finish within 60 s".into())
}
