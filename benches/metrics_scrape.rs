//! # `metrics_scrape`: the cost of rendering `/metrics`, by hand and with prometheus-client
//!
//! Renders the `/metrics` text of a tree the size of a real gateway's (root, store,
//! session-queue, scheduler, `mcp` with 2 servers, `agents` with 4 agents, `clients` with
//! 1,000 connections (not listed), `channels` with 2 accounts) and a store that has run
//! every one of its 37 operations, the two ways the gateway can build it:
//!
//! - `served before`: the Prometheus 0.0.4 text exactly as the gateway built it before
//!   (a `format!` per line, copied here);
//! - `by hand`: the same text with the store's lines written straight into the buffer
//!   (`writeln!`, no string per line): what a tuned hand-built renderer costs;
//! - `prometheus-client`: the OpenMetrics text through a custom collector over the same
//!   snapshot (what `/metrics` serves now).
//!
//! It prints µs per scrape (median of 15 rounds of 2,000 renders) and heap allocations
//! and bytes per scrape (a counting global allocator), and checks that both texts carry
//! the same samples (names, labels, values). It never asserts a speed.
//!
//! ```text
//! cargo bench --bench metrics_scrape
//! ```
//!
//! `TROUPE_BENCH_QUICK=1` runs 3 rounds of 200. Built and run by `cargo test --benches`
//! (no `--bench` flag), it skips itself unless `TROUPE_BENCH_QUICK` is set.

#![allow(clippy::expect_used)]

use std::alloc::System;
use std::collections::BTreeMap;
use std::time::Instant;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use troupe::http::metrics::{Figures, render, render_by_hand};
use troupe_actors::store::{LATENCY_BUCKETS_US, OpStat, OpStats};
use troupe_actors::supervisor::{NodeState, TreeNode};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Every store operation's name (each one appears in `/metrics` once it ran).
const OPS: [&str; 37] = [
    "accept_turn",
    "start_run",
    "finish_run",
    "close_runs",
    "recover_runs",
    "clear_session",
    "sweep",
    "get_run",
    "history",
    "list_sessions",
    "usage_report",
    "usage_daily",
    "info",
    "channel_load_offset",
    "channel_journal",
    "channel_pending_inbound",
    "channel_pending_deliveries",
    "channel_record_reply",
    "channel_mark_sent",
    "channel_mark_failed",
    "channel_count_pending",
    "channel_resume",
    "pairing_list",
    "pairing_approve",
    "discord_known_channels",
    "discord_journal",
    "channel_record_send",
    "channel_send_status",
    "cron_sync",
    "cron_save",
    "cron_delete",
    "cron_record",
    "cron_record_batch",
    "cron_finish_batch",
    "cron_finish",
    "cron_runs",
    "hook_interrupted",
];

fn node(id: &str, kind: &str, children: Vec<TreeNode>) -> TreeNode {
    TreeNode {
        id: id.into(),
        kind: kind.into(),
        state: NodeState::Running,
        restarts: id.len() as u32 % 3,
        last_exit: None,
        started_at: Some(1_700_000_000_000),
        mailbox: id.len() % 5,
        next_attempt_at: None,
        children,
        child_count: None,
        unstoppable: 0,
    }
}

/// A tree the size of a real gateway's.
fn tree() -> TreeNode {
    let agents = ["main", "ops", "research", "support"]
        .iter()
        .map(|a| node(&format!("agent:{a}"), "agent", Vec::new()))
        .collect();
    let mut clients = node("clients", "supervisor", Vec::new());
    clients.child_count = Some(1_000);
    node(
        "root",
        "supervisor",
        vec![
            node("store", "store", Vec::new()),
            node("session-queue", "session-queue", Vec::new()),
            node(
                "mcp",
                "supervisor",
                vec![
                    node("mcp:files", "mcp", Vec::new()),
                    node("mcp:search", "mcp", Vec::new()),
                ],
            ),
            node("agents", "supervisor", agents),
            clients,
            node(
                "channels",
                "supervisor",
                vec![
                    node("telegram:main", "channel", Vec::new()),
                    node("discord:main", "channel", Vec::new()),
                ],
            ),
            node("scheduler", "scheduler", Vec::new()),
        ],
    )
}

/// A store that has run every operation.
fn store() -> OpStats {
    let mut stats = OpStats::default();
    for (i, op) in OPS.iter().enumerate() {
        let count = 1_000 + i as u64 * 37;
        let buckets = (0..LATENCY_BUCKETS_US.len())
            .map(|b| count * (b as u64 + 1) / (LATENCY_BUCKETS_US.len() as u64 + 1))
            .collect();
        stats.ops.insert(
            op,
            OpStat {
                count,
                errors: i as u64 % 2,
                total_us: count * 180,
                buckets,
            },
        );
    }
    stats.batches = 12_345;
    stats.batched_writes = 45_678;
    stats
}

/// The `/metrics` text exactly as the gateway built it before `prometheus-client`.
fn served_before(f: &Figures) -> String {
    let mut out = String::new();
    out.push_str("# HELP troupe_uptime_seconds Seconds since the gateway started.\n# TYPE troupe_uptime_seconds gauge\n");
    out.push_str(&format!(
        "troupe_uptime_seconds {:.3}\n",
        f.uptime_ms as f64 / 1000.0
    ));
    let clients = f.tree.children.iter().find(|c| c.id == "clients");
    let connections = clients
        .map(|c| c.child_count.unwrap_or(c.children.len()))
        .unwrap_or(0);
    out.push_str("# HELP troupe_ws_connections Open WebSocket connections.\n# TYPE troupe_ws_connections gauge\n");
    out.push_str(&format!("troupe_ws_connections {connections}\n"));
    out.push_str(
        "# HELP troupe_ready 1 when every permanent child is running.\n# TYPE troupe_ready gauge\n",
    );
    out.push_str(&format!("troupe_ready {}\n", u8::from(f.ready)));
    out.push_str("# HELP troupe_unstoppable_nodes Killed nodes still running (a handler blocking its thread cannot be stopped); they leak until the process exits.\n# TYPE troupe_unstoppable_nodes gauge\n");
    out.push_str(&format!("troupe_unstoppable_nodes {}\n", f.unstoppable));
    let mut nodes = Vec::new();
    collect(&f.tree, &mut nodes);
    out.push_str("# HELP troupe_child_restarts_total Restarts of each supervised child.\n# TYPE troupe_child_restarts_total counter\n");
    for n in &nodes {
        out.push_str(&format!(
            "troupe_child_restarts_total{{id=\"{}\",kind=\"{}\"}} {}\n",
            n.id, n.kind, n.restarts
        ));
    }
    out.push_str("# HELP troupe_child_mailbox Work queued in each child as last reported.\n# TYPE troupe_child_mailbox gauge\n");
    for n in &nodes {
        out.push_str(&format!(
            "troupe_child_mailbox{{id=\"{}\",kind=\"{}\"}} {}\n",
            n.id, n.kind, n.mailbox
        ));
    }
    out.push_str(
        "# HELP troupe_child_up 1 when the child is running.\n# TYPE troupe_child_up gauge\n",
    );
    for n in &nodes {
        out.push_str(&format!(
            "troupe_child_up{{id=\"{}\",kind=\"{}\"}} {}\n",
            n.id,
            n.kind,
            u8::from(n.state == NodeState::Running)
        ));
    }
    if let Some(stats) = &f.store {
        out.push_str("# HELP troupe_store_op_seconds Time of each store operation, by operation.\n# TYPE troupe_store_op_seconds histogram\n");
        for (op, stat) in &stats.ops {
            for (bound, count) in LATENCY_BUCKETS_US.iter().zip(&stat.buckets) {
                let le = *bound as f64 / 1e6;
                out.push_str(&format!(
                    "troupe_store_op_seconds_bucket{{op=\"{op}\",le=\"{le}\"}} {count}\n"
                ));
            }
            out.push_str(&format!(
                "troupe_store_op_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {}\n",
                stat.count
            ));
            out.push_str(&format!(
                "troupe_store_op_seconds_sum{{op=\"{op}\"}} {}\n",
                stat.total_us as f64 / 1e6
            ));
            out.push_str(&format!(
                "troupe_store_op_seconds_count{{op=\"{op}\"}} {}\n",
                stat.count
            ));
        }
        out.push_str("# HELP troupe_store_op_errors_total Failed store operations, by operation.\n# TYPE troupe_store_op_errors_total counter\n");
        for (op, stat) in &stats.ops {
            out.push_str(&format!(
                "troupe_store_op_errors_total{{op=\"{op}\"}} {}\n",
                stat.errors
            ));
        }
        out.push_str("# HELP troupe_store_batches_total Write transactions committed (group commit).\n# TYPE troupe_store_batches_total counter\n");
        out.push_str(&format!("troupe_store_batches_total {}\n", stats.batches));
        out.push_str("# HELP troupe_store_batched_writes_total Writes in those transactions.\n# TYPE troupe_store_batched_writes_total counter\n");
        out.push_str(&format!(
            "troupe_store_batched_writes_total {}\n",
            stats.batched_writes
        ));
    }
    out
}

fn collect<'a>(node: &'a TreeNode, out: &mut Vec<&'a TreeNode>) {
    for child in node.children.iter().filter(|c| c.kind != "ws") {
        out.push(child);
        collect(child, out);
    }
}

fn figures() -> Figures {
    Figures {
        uptime_ms: 123_456_789,
        ready: true,
        unstoppable: 0,
        tree: tree(),
        store: Some(store()),
        channels: vec![("telegram:main".into(), true)],
    }
}

/// Median µs per render over `rounds` rounds of `per_round` renders.
fn time(rounds: usize, per_round: usize, mut render: impl FnMut() -> String) -> f64 {
    let mut per = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(render());
        }
        per.push(t0.elapsed().as_secs_f64() * 1e6 / per_round as f64);
    }
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

/// Heap allocations and bytes of one render.
fn allocations(render: impl FnOnce() -> String) -> (usize, usize, usize) {
    let region = Region::new(GLOBAL);
    let text = std::hint::black_box(render());
    let change = region.change();
    (
        change.allocations + change.reallocations,
        change.bytes_allocated,
        text.len(),
    )
}

/// `name{sorted labels}` → value of every sample line, `le` normalized to a number.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut labels: Vec<String> = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label=value");
                let v = v.trim_matches('"');
                match (k, v.parse::<f64>()) {
                    ("le", Ok(n)) => format!("le={n}"),
                    _ => format!("{k}={v}"),
                }
            })
            .collect();
        labels.sort();
        let value: f64 = value.parse().expect("a number");
        out.insert(format!("{name}{{{}}}", labels.join(",")), value);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = std::env::var("TROUPE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if !quick && !args.iter().any(|a| a == "--bench") {
        println!(
            "metrics_scrape: skipped; run `cargo bench --bench metrics_scrape` or set TROUPE_BENCH_QUICK=1"
        );
        return;
    }
    let (rounds, per_round) = if quick { (3, 200) } else { (15, 2_000) };
    let f = figures();
    let by_hand = render_by_hand(&f);
    let client = render(f.clone());
    let (a, b) = (samples(&by_hand), samples(&client));
    assert_eq!(a, b, "both texts carry the same samples");
    assert_eq!(a, samples(&served_before(&f)), "the same samples as before");
    println!(
        "metrics_scrape: {} nodes listed, {} store operations, {} samples",
        f.tree.children.len(),
        OPS.len(),
        a.len()
    );
    let before_us = time(rounds, per_round, || served_before(&f));
    let hand_us = time(rounds, per_round, || render_by_hand(&f));
    let client_us = time(rounds, per_round, || render(f.clone()));
    let clone_us = time(rounds, per_round, || {
        std::hint::black_box(f.clone());
        String::new()
    });
    let (before_allocs, before_bytes, before_len) = allocations(|| served_before(&f));
    let (hand_allocs, hand_bytes, hand_len) = allocations(|| render_by_hand(&f));
    let (client_allocs, client_bytes, client_len) = allocations(|| render(f.clone()));
    let (clone_allocs, clone_bytes, _) = allocations(|| {
        std::hint::black_box(f.clone());
        String::new()
    });
    println!(
        "  served before (0.0.4):    {before_us:>7.1} µs per scrape, {before_allocs:>5} allocations, {before_bytes:>7} bytes allocated, {before_len} bytes of text"
    );
    println!(
        "  by hand (0.0.4 text):     {hand_us:>7.1} µs per scrape, {hand_allocs:>5} allocations, {hand_bytes:>7} bytes allocated, {hand_len} bytes of text"
    );
    println!(
        "  prometheus-client (OM):   {client_us:>7.1} µs per scrape, {client_allocs:>5} allocations, {client_bytes:>7} bytes allocated, {client_len} bytes of text"
    );
    println!(
        "    of which the bench's copy of the snapshot (the gateway moves it): {clone_us:.1} µs, {clone_allocs} allocations, {clone_bytes} bytes"
    );
    println!(
        "  load average while it ran: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
