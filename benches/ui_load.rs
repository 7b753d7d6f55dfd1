//! # `ui_load`: how fast the control UI connects and shows a reply, in headless Chromium
//!
//! Starts the `troupe` binary of this profile (`gateway run --port 0`, a fresh
//! `TROUPE_HOME`, the echo agent) and one headless Chromium over chromedriver (installed
//! with apt when missing, as in `tests/ui.rs`). With the token already in the page's
//! storage, each run navigates to `http://127.0.0.1:<port>/` (a fresh session each time)
//! and measures, from the navigation's start (`performance.timeOrigin`):
//!
//! 1. to `hello-ok` (the page's `connect` answered);
//! 2. to the first reply delta of a message the page sends as soon as its session is loaded;
//!
//! and, for that message, from the send to its first delta. Prints p50 and p99 of each over
//! the runs, and the size of the assets. Never fails on a figure.
//!
//! ```text
//! cargo bench --bench ui_load            # 30 runs
//! TROUPE_BENCH_RUNS=100 cargo bench --bench ui_load
//! ```
//!
//! Built and run by `cargo test --benches` (no `--bench` flag), it skips itself unless
//! `TROUPE_BENCH_QUICK` is set (then 5 runs).

#[allow(
    dead_code,
    reason = "shared with gateway_load and turn_load, which use the parts this bench does not"
)]
mod support;

#[path = "../tests/support/browser.rs"]
mod browser;

use std::time::Duration;

use browser::Browser;
use support::process::{ServerKind, ServerProcess};
use support::report::p50_p99;
use support::{BoxError, within};

/// How long one run may take before the benchmark gives up.
const STUCK_AFTER: Duration = Duration::from_secs(60);

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let quick = std::env::var("TROUPE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if !quick && !args.iter().any(|arg| arg == "--bench") {
        println!("ui_load: skipped; run `cargo bench --bench ui_load` or set TROUPE_BENCH_QUICK=1");
        return Ok(());
    }
    let runs: usize = match std::env::var("TROUPE_BENCH_RUNS") {
        Ok(v) => v.parse()?,
        Err(_) if quick => 5,
        Err(_) => 30,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(runs))
}

/// The script a run polls: the three times once the reply's first delta is in, else null.
const TIMES: &str = "return window.troupeFirstDeltaAt === undefined ? null : \
    [window.troupeConnectedAt, window.troupeFirstDeltaAt, window.troupeBenchSentAt]";

/// Sends one message as soon as the page has connected and picked its session.
const SEND_WHEN_READY: &str = "
    const tick = () => {
      const ready = document.getElementById('conn-status').dataset.state === 'connected'
        && document.getElementById('session-select').value.startsWith('agent:main:bench-');
      if (!ready) { setTimeout(tick, 1); return; }
      document.getElementById('chat-input').value = 'ping';
      window.troupeBenchSentAt = performance.now();
      document.getElementById('send').click();
    };
    tick();
    return true;";

async fn measure(runs: usize) -> Result<(), BoxError> {
    let (gateway, _) = ServerProcess::start(ServerKind::Gateway).await?;
    let token = gateway.token()?;
    let url = format!("http://127.0.0.1:{}/", gateway.port());
    let b = Browser::start(1200, 900).await;
    b.client.goto(&url).await?;
    let set = format!("localStorage.setItem('troupe.ui.token', {token:?}); return true");
    b.js(&set).await;

    let (mut connect, mut first_delta, mut send_to_delta) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        b.js(&format!(
            "localStorage.setItem('troupe.ui.session', 'agent:main:bench-{run}'); return true"
        ))
        .await;
        b.client.goto(&url).await?;
        b.js(SEND_WHEN_READY).await;
        let times = within("a run's first reply delta", STUCK_AFTER, async {
            loop {
                let v = b.js(TIMES).await;
                if let Some(t) = v.as_array() {
                    let f = |i: usize| t.get(i).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
                    return Ok::<_, BoxError>((f(0), f(1), f(2)));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await?;
        let us = |ms: f64| (ms * 1000.0).round().max(0.0) as u32;
        connect.push(us(times.0));
        first_delta.push(us(times.1));
        send_to_delta.push(us(times.1 - times.2));
    }
    b.close().await;

    let total: usize = {
        let http = reqwest::Client::new();
        let mut sum = 0;
        for path in [
            "",
            "ui/app.css",
            "ui/app.js",
            "ui/conn.js",
            "ui/dom.js",
            "ui/chat.js",
            "ui/tree.js",
            "ui/panels.js",
            "ui/icon.svg",
        ] {
            sum += http
                .get(format!("{url}{path}"))
                .send()
                .await?
                .bytes()
                .await?
                .len();
        }
        sum
    };
    println!("ui_load: control UI in headless Chromium on loopback, {runs} runs (echo agent)");
    println!("  assets: {:.1} KiB in 9 files", total as f64 / 1024.0);
    for (label, samples) in [
        ("navigation -> hello-ok", &mut connect),
        ("navigation -> first reply delta", &mut first_delta),
        ("send -> first reply delta", &mut send_to_delta),
    ] {
        samples.sort_unstable();
        let (p50, p99) = p50_p99(samples);
        println!(
            "  {label:<34} p50 {:>7.1} ms   p99 {:>7.1} ms",
            f64::from(p50) / 1000.0,
            f64::from(p99) / 1000.0
        );
    }
    Ok(())
}
