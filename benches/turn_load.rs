//! # `turn_load`: chat-turn benchmark of the Troupe gateway
//!
//! Starts the `troupe` binary cargo built for this profile (`troupe gateway run --port 0`, a
//! fresh `TROUPE_HOME` for each part, 127.0.0.1 only, `sessions.lane_capacity = 1000`,
//! `sessions.max_concurrent_runs = 512`) and drives closed-loop chat turns over WebSocket:
//! each session sends `chat.send`, waits for its run's `chat` event with `state: "final"`,
//! then sends the next. Sessions get a connection each up to 32, then share them. It measures:
//!
//! 1. with the built-in echo provider (no model time, so submit → final is the gateway's own
//!    overhead per turn): turns/s, submit → final and submit → accepted (the `chat.send`
//!    response) p50/p99, and the gateway's CPU time per turn (`/proc/PID/stat`), at 1, 32
//!    and 256 sessions;
//! 2. RSS before and after 100,000 stored messages (50,000 turns over 256 sessions, as fast
//!    as they go), with a reading halfway, so that growth with transcript size shows; the
//!    stored count (`GET /api/sessions`) and the database size;
//! 3. against the fake LLM server of the tests (`tests/support/fake_llm.rs`, in this
//!    process): agents `oa` (provider `openai`) and `an` (provider `anthropic`) at 32
//!    sessions, submit → first `delta` and → final and the gateway's CPU time per turn,
//!    beside the same fake driven directly with reqwest at the same concurrency; the
//!    difference is what the gateway adds. The two take turns in short rounds, so outside
//!    load on the shared cores hits both alike.
//!
//! Targets: at rest, RSS < 15 MB; a lone session's echo turn, p99 submit → final < 2 ms and
//! gateway CPU ≤ 250 µs; at 32 sessions ≥ 3,500 turns/s and gateway CPU ≤ 250 µs per turn.
//! It prints a table with the targets beside the figures and never fails on a missed target.
//! A part that cannot run shows as an error under the table, and the run then exits non-zero
//! once the table is printed; the provider part is skipped, with a note, if the fake LLM does
//! not work.
//!
//! Run (about 2 minutes on 2 cores):
//!
//! ```text
//! cargo bench --bench turn_load
//! ```
//!
//! Scale it with environment variables:
//!
//! - `TROUPE_BENCH_QUICK=1`: about 15 s in all (1 s phases, 2,560 stored turns), for CI;
//! - `TROUPE_BENCH_SECS` (seconds per measured phase), `TROUPE_BENCH_TURNS` (turns in the
//!   memory part, after its warm-up).
//!
//! `TROUPE__*` variables set in the environment reach the gateway too (to try a setting,
//! e.g. `TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS`).
//!
//! Built and run by `cargo test --benches` (no `--bench` flag), it skips itself unless
//! `TROUPE_BENCH_QUICK` is set.

#[allow(
    dead_code,
    reason = "shared with gateway_load, which uses the parts this bench does not"
)]
mod support;

#[path = "turn_load/direct.rs"]
mod direct;
#[path = "../tests/support/fake_llm.rs"]
mod fake_llm;
#[path = "turn_load/turns.rs"]
mod turns;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use direct::Format;
use fake_llm::FakeLlm;
use support::process::{ServerKind, ServerProcess, Setup};
use support::report::{self, Table};
use support::{BenchResult, BoxError, env_number};
use turns::{Fleet, TurnStats};

/// Session counts of the echo part.
const ECHO_LEVELS: [usize; 3] = [1, 32, 256];

/// Target for a lone session's echo turn, submit → final, p99, microseconds. (At 32 and
/// 256 closed-loop sessions the latency is queueing: sessions / turns per second.)
const P99_TARGET_US: u32 = 2_000;

/// Target for the gateway's CPU per echo turn (at 1 and at 32 sessions), microseconds.
const CPU_TARGET_US: f64 = 250.0;

/// Sessions whose throughput is held to [`RATE_TARGET`].
const RATE_LEVEL: usize = 32;

/// Target for echo turns per second at [`RATE_LEVEL`] sessions.
const RATE_TARGET: f64 = 3_500.0;

/// Target for the gateway's RSS at rest, right after it is ready, KiB.
const IDLE_RSS_TARGET_KIB: u64 = 15 * 1000 * 1000 / 1024;

/// Where a stall on a delayed ACK (40 ms on Linux) starts, microseconds.
const NAGLE_STALL_US: u32 = 38_000;

/// Sessions of the memory part.
const STORE_SESSIONS: usize = 256;

/// Most growth of RSS allowed over the second half of the memory part, KiB.
const GROWTH_TARGET_KIB: i64 = 5 * 1000 * 1000 / 1024;

/// Sessions (and direct loops) of the provider part.
const PROVIDER_SESSIONS: usize = 32;

/// Gateway settings for every part, on top of `gateway_load`'s.
const GATEWAY_ENV: [(&str, &str); 2] = [
    ("TROUPE__SESSIONS__LANE_CAPACITY", "1000"),
    ("TROUPE__SESSIONS__MAX_CONCURRENT_RUNS", "512"),
];

/// How much work one run does.
struct Scale {
    /// Length of each measured phase of the echo part, and of all rounds of one target in
    /// the provider part.
    phase: Duration,
    /// Unmeasured load before each measured phase.
    warmup: Duration,
    /// Pause before reading RSS.
    settle: Duration,
    /// Turns of the memory part after its warm-up (two halves).
    store_turns: usize,
    /// Warm-up turns of the memory part (every session gets a few).
    store_warmup_turns: usize,
    /// Longest one half of the memory part may take.
    store_half_limit: Duration,
    /// Rounds per target in the provider part.
    rounds: usize,
}

impl Scale {
    /// The full run, the quick run if `TROUPE_BENCH_QUICK` is set, then per-knob overrides.
    fn from_env(quick: bool) -> BenchResult<Self> {
        let mut scale = if quick {
            Scale {
                phase: Duration::from_secs(1),
                warmup: Duration::from_millis(200),
                settle: Duration::from_millis(300),
                store_turns: 2_560,
                store_warmup_turns: STORE_SESSIONS,
                store_half_limit: Duration::from_secs(5),
                rounds: 2,
            }
        } else {
            Scale {
                phase: Duration::from_secs(5),
                warmup: Duration::from_millis(500),
                settle: Duration::from_secs(1),
                store_turns: 50_000,
                store_warmup_turns: 4 * STORE_SESSIONS,
                store_half_limit: Duration::from_secs(60),
                rounds: 3,
            }
        };
        if let Some(secs) = env_number::<f64>("TROUPE_BENCH_SECS")? {
            scale.phase = Duration::from_secs_f64(secs.clamp(0.2, 60.0));
        }
        if let Some(turns) = env_number::<usize>("TROUPE_BENCH_TURNS")? {
            scale.store_turns = turns.clamp(2, 1_000_000);
        }
        Ok(scale)
    }
}

/// One checkpoint of the memory part.
struct Checkpoint {
    /// Turns that ended with a reply since the start (warm-up included).
    turns: usize,
    /// Gateway RSS then, KiB.
    rss_kib: u64,
}

/// What the memory part measured.
struct StoreFigures {
    /// After the warm-up, halfway, at the end.
    checkpoints: Vec<Checkpoint>,
    /// The two halves.
    halves: Vec<TurnStats>,
    /// Messages the gateway lists for its sessions (`GET /api/sessions`).
    listed_messages: Result<u64, String>,
    /// A session's last stored message, read back (`GET /api/sessions/{key}/messages`).
    last_message: Result<String, String>,
    /// Bytes of the database files.
    db_bytes: u64,
}

/// Echo turns at one session count.
struct EchoLevel {
    /// Sessions.
    sessions: usize,
    /// The turns.
    stats: TurnStats,
    /// CPU time the gateway used meanwhile.
    gateway_cpu: Duration,
    /// Context switches of the gateway's threads meanwhile.
    switches: u64,
}

/// The gateway at rest, right after it is ready.
struct Idle {
    /// `RssAnon`, KiB.
    anon_kib: u64,
    /// `RssFile`, KiB.
    file_kib: u64,
    /// Context switches of its threads per second (timers, liveness beats).
    switches_per_sec: f64,
}

/// One provider format: the fake alone and through the gateway.
struct ProviderFigures {
    /// The format.
    format: Format,
    /// Direct requests to the fake.
    direct: TurnStats,
    /// Turns through the gateway.
    gateway: TurnStats,
    /// CPU time the gateway used during those turns.
    gateway_cpu: Duration,
}

/// Everything measured in one run; a part that failed holds its error.
struct Figures {
    /// Echo turns per session count.
    echo: Result<(Idle, Vec<EchoLevel>), String>,
    /// The memory part.
    store: Result<StoreFigures, String>,
    /// The provider part: `Ok(Err(note))` when it was skipped.
    providers: Result<Result<Vec<ProviderFigures>, String>, String>,
}

fn main() -> Result<(), BoxError> {
    support::bench_main("turn_load", Scale::from_env, |scale| async move {
        let figures = measure_all(&scale).await;
        build_table(&scale, &figures)
    })
}

/// Runs every part, each on a gateway of its own.
async fn measure_all(scale: &Scale) -> Figures {
    progress("echo turns at 1, 32 and 256 sessions");
    let echo = measure_echo(scale).await.map_err(|e| e.to_string());
    progress(&format!(
        "memory: {} turns over {STORE_SESSIONS} sessions",
        report::thousands((scale.store_warmup_turns + scale.store_turns) as u64)
    ));
    let store = measure_store(scale).await.map_err(|e| e.to_string());
    progress("providers: fake LLM alone and through the gateway");
    let providers = measure_providers(scale).await.map_err(|e| e.to_string());
    Figures {
        echo,
        store,
        providers,
    }
}

/// Starts a gateway with [`GATEWAY_ENV`], `env` and `files` (relative to its home).
async fn start_gateway(
    env: Vec<(String, String)>,
    files: Vec<(PathBuf, String)>,
) -> BenchResult<ServerProcess> {
    let mut setup = Setup {
        env: GATEWAY_ENV
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        files,
    };
    setup.env.extend(env);
    let (gateway, _) = ServerProcess::start_with(ServerKind::Gateway, &setup).await?;
    Ok(gateway)
}

/// Echo turns at each of [`ECHO_LEVELS`] sessions, after a smoke turn.
async fn measure_echo(scale: &Scale) -> BenchResult<(Idle, Vec<EchoLevel>)> {
    let mut gateway = start_gateway(Vec::new(), Vec::new()).await?;
    let (port, token) = (gateway.port(), gateway.token()?);
    tokio::time::sleep(scale.settle).await;
    let (anon_kib, file_kib) = gateway.rss_parts_kib()?;
    let (switches_before, at) = (gateway.context_switches()?, std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = Idle {
        anon_kib,
        file_kib,
        switches_per_sec: gateway.context_switches()?.saturating_sub(switches_before) as f64
            / at.elapsed().as_secs_f64(),
    };
    turns::smoke_turn(port, &token, "agent:main:main").await?;
    let mut levels = Vec::with_capacity(ECHO_LEVELS.len());
    for sessions in ECHO_LEVELS {
        let mut fleet = Fleet::open(port, &token, "main", sessions).await?;
        fleet.run(scale.warmup, usize::MAX).await?;
        let (cpu_before, switches_before) = (gateway.cpu_time()?, gateway.context_switches()?);
        let stats = fleet.run(scale.phase, usize::MAX).await?;
        let gateway_cpu = gateway.cpu_time()?.saturating_sub(cpu_before);
        let switches = gateway.context_switches()?.saturating_sub(switches_before);
        fleet.close().await;
        levels.push(EchoLevel {
            sessions,
            stats,
            gateway_cpu,
            switches,
        });
    }
    Ok((idle, levels))
}

/// RSS before, halfway through and after the memory part's turns; then what was stored.
async fn measure_store(scale: &Scale) -> BenchResult<StoreFigures> {
    let mut gateway = start_gateway(Vec::new(), Vec::new()).await?;
    let (port, token) = (gateway.port(), gateway.token()?);
    let mut fleet = Fleet::open(port, &token, "main", STORE_SESSIONS).await?;
    let warmup = fleet
        .run(scale.store_half_limit, scale.store_warmup_turns)
        .await?;
    let mut turns = warmup.turns;
    tokio::time::sleep(scale.settle).await;
    let mut checkpoints = vec![Checkpoint {
        turns,
        rss_kib: gateway.rss_kib()?,
    }];
    let mut halves = Vec::with_capacity(2);
    for half in [
        scale.store_turns / 2,
        scale.store_turns - scale.store_turns / 2,
    ] {
        let stats = fleet.run(scale.store_half_limit, half).await?;
        turns += stats.turns;
        halves.push(stats);
        tokio::time::sleep(scale.settle).await;
        checkpoints.push(Checkpoint {
            turns,
            rss_kib: gateway.rss_kib()?,
        });
    }
    fleet.close().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let listed_messages = listed_messages(&http, port, &token)
        .await
        .map_err(|e| e.to_string());
    let last_message = last_message(&http, port, &token, "agent:main:bench:dm:0")
        .await
        .map_err(|e| e.to_string());
    Ok(StoreFigures {
        checkpoints,
        halves,
        listed_messages,
        last_message,
        db_bytes: db_bytes(gateway.home())?,
    })
}

/// `GET` of `path` on the gateway with the operator token, as JSON.
async fn get_json(
    http: &reqwest::Client,
    port: u16,
    token: &str,
    path: &str,
) -> BenchResult<Value> {
    let response = http
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        return Err(format!("GET {path}: {status}: {body}").into());
    }
    Ok(serde_json::from_str(&body)?)
}

/// The messages of every session, summed from `GET /api/sessions?limit=1000`.
async fn listed_messages(http: &reqwest::Client, port: u16, token: &str) -> BenchResult<u64> {
    let listing = get_json(http, port, token, "/api/sessions?limit=1000").await?;
    let sessions = listing["sessions"]
        .as_array()
        .ok_or_else(|| format!("no sessions array in {listing}"))?;
    Ok(sessions
        .iter()
        .filter_map(|session| session["messages"].as_u64())
        .sum())
}

/// The last stored message of `key` (`GET /api/sessions/{key}/messages?limit=1`), as
/// `role: text`.
async fn last_message(
    http: &reqwest::Client,
    port: u16,
    token: &str,
    key: &str,
) -> BenchResult<String> {
    let path = format!("/api/sessions/{key}/messages?limit=1");
    let page = get_json(http, port, token, &path).await?;
    let last = page["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .ok_or_else(|| format!("no messages in {page}"))?;
    Ok(format!(
        "{}: {}",
        last["role"].as_str().unwrap_or("?"),
        last["text"].as_str().unwrap_or("?")
    ))
}

/// Bytes of `troupe.db` and its WAL and shared-memory files under `home`.
fn db_bytes(home: &Path) -> BenchResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(home)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("troupe.db") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// The provider part; `Ok(Err(note))` if the fake LLM does not work.
async fn measure_providers(scale: &Scale) -> BenchResult<Result<Vec<ProviderFigures>, String>> {
    let Ok(fake) = std::panic::catch_unwind(FakeLlm::start) else {
        return Ok(Err("the fake LLM server did not start".to_owned()));
    };
    let base = fake.base_url();
    let http = direct::http_client()?;
    for format in Format::ALL {
        if let Err(error) = direct::stream_one(&http, &base, format, "smoke").await {
            let label = format.label();
            return Ok(Err(format!(
                "the fake LLM does not answer {label}: {error}"
            )));
        }
    }
    let files = Format::ALL
        .iter()
        .map(|format| {
            let path = PathBuf::from(format!("agents/{}/agent.toml", format.agent()));
            let agent = format!(
                "provider = \"{}\"\nmodel = \"fake-model\"\n",
                format.label()
            );
            (path, agent)
        })
        .collect();
    let env = [
        ("TROUPE__PROVIDERS__OPENAI__BASE_URL", format!("{base}/v1")),
        ("TROUPE__PROVIDERS__ANTHROPIC__BASE_URL", base.clone()),
        ("OPENAI_API_KEY", "bench-fake-key".to_owned()),
        ("ANTHROPIC_API_KEY", "bench-fake-key".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let mut gateway = start_gateway(env, files).await?;
    let (port, token) = (gateway.port(), gateway.token()?);
    let mut fleets = Vec::with_capacity(Format::ALL.len());
    for format in Format::ALL {
        let key = format!("agent:{}:main", format.agent());
        turns::smoke_turn(port, &token, &key).await?;
        let mut fleet = Fleet::open(port, &token, format.agent(), PROVIDER_SESSIONS).await?;
        fleet.run(scale.warmup, usize::MAX).await?;
        direct::closed_loops(&http, &base, format, PROVIDER_SESSIONS, scale.warmup).await?;
        fleets.push((format, fleet, Vec::new(), Vec::new(), Duration::ZERO));
    }
    let length = scale.phase / scale.rounds as u32;
    for _ in 0..scale.rounds {
        for (format, fleet, direct_rounds, gateway_rounds, gateway_cpu) in &mut fleets {
            let alone =
                direct::closed_loops(&http, &base, *format, PROVIDER_SESSIONS, length).await?;
            direct_rounds.push(alone);
            let cpu_before = gateway.cpu_time()?;
            gateway_rounds.push(fleet.run(length, usize::MAX).await?);
            *gateway_cpu += gateway.cpu_time()?.saturating_sub(cpu_before);
        }
    }
    let mut figures = Vec::with_capacity(fleets.len());
    for (format, fleet, direct_rounds, gateway_rounds, gateway_cpu) in fleets {
        fleet.close().await;
        figures.push(ProviderFigures {
            format,
            direct: TurnStats::one_after_another(direct_rounds),
            gateway: TurnStats::one_after_another(gateway_rounds),
            gateway_cpu,
        });
    }
    drop(gateway);
    drop(fake);
    Ok(Ok(figures))
}

/// The results table, targets beside figures.
fn build_table(scale: &Scale, figures: &Figures) -> Table {
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release"
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut table = Table::new(format!("troupe turn_load ({profile}, {cores} cores)"));
    add_echo_rows(&mut table, scale, figures);
    add_store_rows(&mut table, figures);
    add_provider_rows(&mut table, scale, figures);
    table
}

/// Turns/s and latency per session count, and the overhead target.
fn add_echo_rows(table: &mut Table, scale: &Scale, figures: &Figures) {
    let levels = match &figures.echo {
        Ok((idle, levels)) => {
            let rss = idle.anon_kib + idle.file_kib;
            table.check(
                "gateway at rest: RSS (anon + file)",
                format!(
                    "{} ({} + {})",
                    report::mb(rss),
                    report::mb(idle.anon_kib),
                    report::mb(idle.file_kib)
                ),
                "< 15 MB",
                rss < IDLE_RSS_TARGET_KIB,
            );
            table.info(
                "gateway at rest: context switches per second",
                format!("{:.0}", idle.switches_per_sec),
            );
            levels
        }
        Err(error) => {
            return table.error("echo turns, p99 at 1 session", "< 2 ms", error);
        }
    };
    for level in levels {
        let (sessions, stats) = (level.sessions, &level.stats);
        let conns = sessions.min(turns::MAX_CONNECTIONS);
        let name = format!(
            "echo, {} / {}",
            plural(sessions, "session"),
            plural(conns, "conn")
        );
        table.info(
            format!("{name}: submit → final"),
            rate_and_latency(stats, &stats.final_us),
        );
        table.info(
            format!("{name}: submit → accepted"),
            latency(&stats.accepted_us),
        );
        table.info(
            format!("{name}: gateway CPU per turn"),
            cpu_per_turn(level.gateway_cpu, stats.turns),
        );
        table.info(
            format!("{name}: gateway context switches per turn"),
            per_turn(level.switches, stats.turns),
        );
        problems(table, &format!("echo at {sessions} sessions"), stats);
    }
    if let Some(one) = levels.iter().find(|level| level.sessions == 1) {
        let one = &one.stats;
        let (accepted, done) = (
            report::p50_p99(&one.accepted_us).0,
            report::p50_p99(&one.final_us).0,
        );
        if accepted < 10_000 && (NAGLE_STALL_US..NAGLE_STALL_US + 10_000).contains(&done) {
            table.note(
                "echo, 1 session",
                "accepted within a few ms but final only after 40-50 ms: the signature of \
                 Nagle's algorithm on the gateway's socket (several small frames in a row) \
                 meeting the client's delayed ACK; TCP_NODELAY on accepted sockets removes it",
            );
        }
    }
    for level in levels
        .iter()
        .filter(|l| l.sessions == 1 || l.sessions == RATE_LEVEL)
    {
        let (sessions, stats) = (level.sessions, &level.stats);
        let name = format!("echo, {}", plural(sessions, "session"));
        if sessions == 1 {
            let (_, p99) = report::p50_p99(&stats.final_us);
            table.check(
                format!("{name}: p99 submit → final"),
                report::us(p99),
                "< 2 ms",
                p99 < P99_TARGET_US && stats.turns > 0,
            );
        } else {
            table.check(
                format!("{name}: turns/s"),
                report::thousands(stats.rate() as u64),
                "≥ 3,500",
                stats.rate() >= RATE_TARGET,
            );
        }
        let cpu_us = level.gateway_cpu.as_secs_f64() * 1e6 / stats.turns.max(1) as f64;
        table.check(
            format!("{name}: gateway CPU per turn"),
            cpu_per_turn(level.gateway_cpu, stats.turns),
            "≤ 250 µs",
            cpu_us <= CPU_TARGET_US && stats.turns > 0,
        );
    }
    table.note(
        "echo",
        &format!(
            "closed loops, {:.1} s per session count after {:.1} s of warm-up; echo has no \
             model time, so submit → final is the gateway's own work per turn (and queueing \
             behind the other sessions on the shared cores)",
            scale.phase.as_secs_f64(),
            scale.warmup.as_secs_f64()
        ),
    );
}

/// RSS at each checkpoint, growth, rates, what was stored.
fn add_store_rows(table: &mut Table, figures: &Figures) {
    let store = match &figures.store {
        Ok(store) => store,
        Err(error) => return table.error("RSS growth with stored messages", "< 5 MB", error),
    };
    let rates: Vec<String> = store
        .halves
        .iter()
        .map(|half| format!("{:.0}", half.rate()))
        .collect();
    table.info(
        format!("memory part: turns/s, {STORE_SESSIONS} sessions (1st / 2nd half)"),
        format!("{} turns/s", rates.join(" / ")),
    );
    for (i, half) in store.halves.iter().enumerate() {
        problems(table, &format!("memory part, half {}", i + 1), half);
    }
    let (Some(first), Some(last)) = (store.checkpoints.first(), store.checkpoints.last()) else {
        return;
    };
    for (i, point) in store.checkpoints.iter().enumerate() {
        let messages = report::thousands(2 * point.turns as u64);
        let label = match i {
            0 => format!("RSS before: warm-up done, {messages} messages"),
            _ => format!("RSS at {messages} messages"),
        };
        table.info(label, report::mb(point.rss_kib));
    }
    table.info(
        format!(
            "RSS growth over {} messages",
            report::thousands(2 * (last.turns - first.turns) as u64)
        ),
        signed_mb(last.rss_kib as i64 - first.rss_kib as i64),
    );
    if let [.., half, end] = store.checkpoints.as_slice() {
        let growth = end.rss_kib as i64 - half.rss_kib as i64;
        table.check(
            format!(
                "RSS growth over the last {} messages",
                report::thousands(2 * (end.turns - half.turns) as u64)
            ),
            signed_mb(growth),
            "< 5 MB",
            growth < GROWTH_TARGET_KIB,
        );
    }
    match &store.listed_messages {
        Ok(count) => table.info(
            "messages stored (sum over GET /api/sessions)",
            report::thousands(*count),
        ),
        Err(error) => table.error("messages stored (GET /api/sessions)", "", error),
    }
    match &store.last_message {
        Ok(text) => table.info("last message of dm:0 (GET …/messages)", text.clone()),
        Err(error) => table.error("last message of dm:0 (GET …/messages)", "", error),
    }
    let per_message = store.db_bytes as f64 / (2 * last.turns).max(1) as f64;
    table.info(
        "database files (troupe.db + WAL)",
        format!(
            "{} ({per_message:.0} B/message)",
            report::mb(store.db_bytes / 1024)
        ),
    );
}

/// The fake alone and through the gateway, per format, and the difference.
fn add_provider_rows(table: &mut Table, scale: &Scale, figures: &Figures) {
    let measured = match &figures.providers {
        Ok(Ok(measured)) => measured,
        Ok(Err(note)) => {
            table.info("providers (fake LLM)", "skipped");
            return table.note("providers", note);
        }
        Err(error) => return table.error("providers (fake LLM)", "", error),
    };
    let n = PROVIDER_SESSIONS;
    for figures in measured {
        let name = figures.format.label();
        let (direct, gateway) = (&figures.direct, &figures.gateway);
        table.info(
            format!("{name}, fake alone ({n} loops): request → end"),
            rate_and_latency(direct, &direct.final_us).replace("turns/s", "req/s"),
        );
        table.info(
            format!("{name}, fake alone: request → first delta"),
            latency(&direct.first_token_us),
        );
        table.info(
            format!("{name}, gateway ({n} sessions): submit → final"),
            rate_and_latency(gateway, &gateway.final_us),
        );
        table.info(
            format!("{name}, gateway: submit → first delta"),
            latency(&gateway.first_token_us),
        );
        table.info(
            format!("{name}, gateway: CPU per turn"),
            cpu_per_turn(figures.gateway_cpu, gateway.turns),
        );
        let (direct_final, gateway_final) = (
            report::p50_p99(&direct.final_us),
            report::p50_p99(&gateway.final_us),
        );
        let (direct_first, gateway_first) = (
            report::p50_p99(&direct.first_token_us),
            report::p50_p99(&gateway.first_token_us),
        );
        table.info(
            format!("{name}, added by the gateway: final"),
            format!(
                "p50 {}  p99 {}",
                signed_us(gateway_final.0, direct_final.0),
                signed_us(gateway_final.1, direct_final.1)
            ),
        );
        table.info(
            format!("{name}, added by the gateway: first delta"),
            format!(
                "p50 {}  p99 {}",
                signed_us(gateway_first.0, direct_first.0),
                signed_us(gateway_first.1, direct_first.1)
            ),
        );
        problems(table, &format!("{name}, fake alone"), direct);
        problems(table, &format!("{name}, gateway"), gateway);
    }
    let round = scale.phase.as_secs_f64() / scale.rounds as f64;
    table.note(
        "providers",
        &format!(
            "{} rounds of {round:.2} s per target, the fake alone and the gateway taking turns; \
             the fake runs in this process, so it shares the cores with the gateway; the \
             gateway also sends each session's history (up to 50 messages), the direct \
             requests one message",
            scale.rounds
        ),
    );
}

/// `1,234 turns/s  p50 1.20 ms  p99 3.40 ms`.
fn rate_and_latency(stats: &TurnStats, samples: &[u32]) -> String {
    format!(
        "{} turns/s  {}",
        report::thousands(stats.rate() as u64),
        latency(samples)
    )
}

/// CPU time per turn, e.g. `412 µs`; the gateway's own work, whatever the latency.
fn cpu_per_turn(cpu: Duration, turns: usize) -> String {
    if turns == 0 {
        return "no turns".to_owned();
    }
    let per_turn = cpu.as_secs_f64() * 1e6 / turns as f64;
    report::us(per_turn.round() as u32)
}

/// A count per turn with one decimal, e.g. `11.3`.
fn per_turn(count: u64, turns: usize) -> String {
    if turns == 0 {
        return "no turns".to_owned();
    }
    format!("{:.1}", count as f64 / turns as f64)
}

/// `1 session`, `32 sessions`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `p50 1.20 ms  p99 3.40 ms`.
fn latency(samples: &[u32]) -> String {
    let (p50, p99) = report::p50_p99(samples);
    format!("p50 {}  p99 {}", report::us(p50), report::us(p99))
}

/// Failed turns and wrong replies of `stats`, as a note under the table.
fn problems(table: &mut Table, label: &str, stats: &TurnStats) {
    if stats.failed == 0 && stats.wrong_replies == 0 {
        return;
    }
    let first = stats.first_problem.as_deref().unwrap_or("?");
    table.note(
        label,
        &format!(
            "{} failed, {} wrong replies, of {}; first: {first}",
            stats.failed,
            stats.wrong_replies,
            stats.turns + stats.failed
        ),
    );
}

/// `a - b` microseconds with a sign, e.g. `+1.20 ms`.
fn signed_us(a: u32, b: u32) -> String {
    let sign = if a >= b { '+' } else { '-' };
    format!("{sign}{}", report::us(a.abs_diff(b)))
}

/// A signed KiB difference as MB, e.g. `+1.3 MB`.
fn signed_mb(kib: i64) -> String {
    let sign = if kib >= 0 { '+' } else { '-' };
    format!("{sign}{}", report::mb(kib.unsigned_abs()))
}

/// A progress line, printed as the run goes.
fn progress(what: &str) {
    println!("turn_load: {what} ...");
}
