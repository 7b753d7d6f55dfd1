//! # `channel_load`: Telegram channel benchmark of the Troupe gateway
//!
//! Starts the `troupe` binary (`troupe gateway run --port 0`, fresh `TROUPE_HOME`) with one
//! `[[channels.telegram]]` account polling the fake Telegram Bot API of the tests
//! (`tests/support/fake_telegram.rs`, in this process, 127.0.0.1 only), `dm_policy = "open"`,
//! answered by the built-in echo agent. Each chat runs a closed loop: the fake queues a DM,
//! the gateway long-polls it, journals it, runs the echo turn and calls `sendMessage`; the
//! next DM of that chat is queued once the reply arrived. It prints:
//!
//! 1. inbound messages/s and p50/p99 from the fake queueing the update (a waiting long poll
//!    is woken at once, so this is when the fake releases it) to `sendMessage` arriving at
//!    the fake, with 1 and 100 chats;
//! 2. the gateway's RSS with 10 idle accounts, beside the same gateway with none.
//!
//! It prints figures and never asserts a target (goal: p99 under 5 ms at 100 chats).
//!
//! ```text
//! cargo bench --bench channel_load
//! ```
//!
//! `TROUPE_BENCH_QUICK=1` runs 2 s phases (else 10 s; `TROUPE_BENCH_SECS` overrides). Built
//! and run by `cargo test --benches` (no `--bench` flag), it skips itself unless
//! `TROUPE_BENCH_QUICK` is set.

#[allow(
    dead_code,
    reason = "shared with gateway_load and turn_load, which use the parts this bench does not"
)]
mod support;

#[path = "../tests/support/fake_telegram.rs"]
mod fake_telegram;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_telegram::FakeTelegram;
use support::process::{ServerKind, ServerProcess, Setup};
use support::report;
use support::{BenchResult, BoxError, env_flag};

/// The bot token the fake accepts.
const TOKEN: &str = "4242:BENCH-token";

/// Chat counts measured.
const CHAT_LEVELS: [i64; 2] = [1, 100];

/// Idle accounts of the memory part.
const MEMORY_ACCOUNTS: usize = 10;

/// How long one message may take before the run is given up.
const STUCK_AFTER: Duration = Duration::from_secs(30);

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let quick = env_flag("TROUPE_BENCH_QUICK");
    if !quick && !args.iter().any(|arg| arg == "--bench") {
        println!(
            "channel_load: skipped; run `cargo bench --bench channel_load` or set TROUPE_BENCH_QUICK=1"
        );
        return Ok(());
    }
    let secs = match std::env::var("TROUPE_BENCH_SECS") {
        Ok(v) => v.parse::<u64>()?,
        Err(_) if quick => 2,
        Err(_) => 10,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!("channel_load: Telegram DMs through the echo agent, {secs} s per level");
        for chats in CHAT_LEVELS {
            match measure_chats(chats, Duration::from_secs(secs)).await {
                Ok(line) => println!("  {line}"),
                Err(e) => println!("  {chats} chats: error: {e}"),
            }
        }
        match measure_memory().await {
            Ok(line) => println!("  {line}"),
            Err(e) => println!("  memory: error: {e}"),
        }
    });
    Ok(())
}

/// `config.toml` with `accounts` Telegram accounts polling `fake`.
fn config(fake: &FakeTelegram, accounts: usize) -> String {
    (0..accounts)
        .map(|i| {
            format!(
                "[[channels.telegram]]\naccount = \"a{i}\"\ntoken_env = \"TG_BENCH_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 10\ndm_policy = \"open\"\n",
                fake.api_url()
            )
        })
        .collect()
}

async fn start_gateway(fake: &FakeTelegram, accounts: usize) -> BenchResult<ServerProcess> {
    let setup = Setup {
        env: vec![("TG_BENCH_TOKEN".into(), TOKEN.into())],
        files: vec![(PathBuf::from("config.toml"), config(fake, accounts))],
    };
    let (server, _) = ServerProcess::start_with(ServerKind::Gateway, &setup).await?;
    Ok(server)
}

/// Closed loops over `chats` chats for `duration`: messages/s and update → sendMessage.
async fn measure_chats(chats: i64, duration: Duration) -> BenchResult<String> {
    let fake = Arc::new(FakeTelegram::start(TOKEN));
    let _gateway = start_gateway(&fake, 1).await?;
    // Warm up: one round trip per chat (the first poll, the agent, the sessions).
    run_loops(&fake, chats, Duration::ZERO, 1).await?;
    let started = Instant::now();
    let pushed = run_loops(&fake, chats, duration, 0).await?;
    let elapsed = started.elapsed();
    let arrived: HashMap<(i64, String), Instant> = fake
        .sent()
        .into_iter()
        .map(|s| ((s.chat_id, s.text), s.at))
        .collect();
    let mut samples: Vec<u32> = pushed
        .iter()
        .filter_map(|(chat, text, at)| {
            let sent = arrived.get(&(*chat, format!("echo: {text}")))?;
            Some(
                sent.saturating_duration_since(*at)
                    .as_micros()
                    .min(u32::MAX as u128) as u32,
            )
        })
        .collect();
    samples.sort_unstable();
    let (p50, p99) = report::p50_p99(&samples);
    Ok(format!(
        "{chats:>3} chats: {:.0} messages/s ({} round trips), update -> sendMessage p50 {} p99 {}",
        pushed.len() as f64 / elapsed.as_secs_f64(),
        samples.len(),
        report::us(p50),
        report::us(p99),
    ))
}

/// Each chat sends, waits for its reply, and repeats for `duration` (at least `min` times).
/// Returns every message sent: chat, text and when it was queued at the fake.
async fn run_loops(
    fake: &Arc<FakeTelegram>,
    chats: i64,
    duration: Duration,
    min: usize,
) -> BenchResult<Vec<(i64, String, Instant)>> {
    static ROUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let round = ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let poll = if chats > 10 {
        Duration::from_millis(5)
    } else {
        Duration::from_micros(200)
    };
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for chat in 0..chats {
        let fake = fake.clone();
        let user = 5_000 + chat;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = 0usize;
            while i < min || Instant::now() < deadline {
                let text = format!("r{round} c{chat} m{i}");
                let want = format!("echo: {text}");
                let at = Instant::now();
                fake.dm(user, &text);
                loop {
                    if fake.texts_to(user).contains(&want) {
                        break;
                    }
                    if at.elapsed() > STUCK_AFTER {
                        return Err(format!(
                            "chat {user}: no reply to {text:?} within {STUCK_AFTER:?}"
                        ));
                    }
                    tokio::time::sleep(poll).await;
                }
                out.push((user, text, at));
                i += 1;
            }
            Ok::<_, String>(out)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// RSS of a gateway with no channel and with [`MEMORY_ACCOUNTS`] idle accounts.
async fn measure_memory() -> BenchResult<String> {
    let fake = FakeTelegram::start(TOKEN);
    let mut bare = start_gateway(&fake, 0).await?;
    let mut with = start_gateway(&fake, MEMORY_ACCOUNTS).await?;
    // Let every account connect and settle into its long poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (bare_kib, with_kib) = (bare.rss_kib()?, with.rss_kib()?);
    Ok(format!(
        "RSS with {MEMORY_ACCOUNTS} idle Telegram accounts: {} (no channel: {}, +{} per account)",
        report::mb(with_kib),
        report::mb(bare_kib),
        report::mb(with_kib.saturating_sub(bare_kib) / MEMORY_ACCOUNTS as u64),
    ))
}
