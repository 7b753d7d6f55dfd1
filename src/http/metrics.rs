//! `/metrics`: the tree's and the store's figures, built at scrape time from snapshots (the
//! tree's `DescribeTree`, the store's `OpStats`), in the OpenMetrics text format through
//! `prometheus-client` (a custom collector over the snapshot). [`render_by_hand`] is the
//! earlier hand-built Prometheus 0.0.4 text, kept for the comparison in
//! `benches/metrics_scrape.rs` and the exposition tests.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use troupe_actors::store::{LATENCY_BUCKETS_US, OpStats};
use troupe_actors::supervisor::{NodeState, TreeNode};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape shows.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Milliseconds since the gateway started.
    pub uptime_ms: u64,
    /// Every permanent child runs.
    pub ready: bool,
    /// Killed nodes still running.
    pub unstoppable: usize,
    /// The supervision tree.
    pub tree: TreeNode,
    /// The store's per-operation figures, if it answered.
    pub store: Option<OpStats>,
    /// Whether each chat channel account is connected to its platform, by tree id.
    pub channels: Vec<(String, bool)>,
}

impl Figures {
    /// Open WebSocket connections (the `clients` supervisor's children).
    fn connections(&self) -> usize {
        self.tree
            .children
            .iter()
            .find(|c| c.id == "clients")
            .map(|c| c.child_count.unwrap_or(c.children.len()))
            .unwrap_or(0)
    }

    /// Every node below the root except WS sessions, depth first.
    fn nodes(&self) -> Vec<&TreeNode> {
        let mut out = Vec::new();
        collect(&self.tree, &mut out);
        out
    }
}

fn collect<'a>(node: &'a TreeNode, out: &mut Vec<&'a TreeNode>) {
    for child in node.children.iter().filter(|c| c.kind != "ws") {
        out.push(child);
        collect(child, out);
    }
}

/// The OpenMetrics text of a scrape (through `prometheus-client`).
pub fn render(figures: Figures) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(figures)));
    let mut out = String::with_capacity(4096);
    // Writing to a String cannot fail; an encoder error would be a bug in the collector.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "cannot encode /metrics");
    }
    out
}

/// One scrape's figures as a `prometheus-client` collector.
#[derive(Debug)]
struct Snapshot(Figures);

/// Histogram bucket bounds of store operation latency, in seconds.
fn bucket_bounds() -> impl Iterator<Item = f64> {
    LATENCY_BUCKETS_US.iter().map(|us| *us as f64 / 1e6)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = &self.0;
        gauge(
            &mut enc,
            "troupe_uptime_seconds",
            "Seconds since the gateway started.",
            f.uptime_ms as f64 / 1000.0,
        )?;
        gauge(
            &mut enc,
            "troupe_ws_connections",
            "Open WebSocket connections.",
            f.connections() as i64,
        )?;
        gauge(
            &mut enc,
            "troupe_ready",
            "1 when every permanent child is running.",
            i64::from(f.ready),
        )?;
        gauge(
            &mut enc,
            "troupe_unstoppable_nodes",
            "Killed nodes still running (a handler blocking its thread cannot be stopped); they leak until the process exits.",
            f.unstoppable as i64,
        )?;
        let nodes = f.nodes();
        let mut m = enc.encode_descriptor(
            "troupe_child_restarts",
            "Restarts of each supervised child.",
            None,
            MetricType::Counter,
        )?;
        for n in &nodes {
            let labels = [("id", n.id.as_str()), ("kind", n.kind.as_str())];
            ConstCounter::new(u64::from(n.restarts)).encode(m.encode_family(&labels)?)?;
        }
        let mut m = enc.encode_descriptor(
            "troupe_child_mailbox",
            "Work queued in each child as last reported.",
            None,
            MetricType::Gauge,
        )?;
        for n in &nodes {
            let labels = [("id", n.id.as_str()), ("kind", n.kind.as_str())];
            ConstGauge::new(n.mailbox as i64).encode(m.encode_family(&labels)?)?;
        }
        let mut m = enc.encode_descriptor(
            "troupe_child_up",
            "1 when the child is running.",
            None,
            MetricType::Gauge,
        )?;
        for n in &nodes {
            let labels = [("id", n.id.as_str()), ("kind", n.kind.as_str())];
            let up = i64::from(n.state == NodeState::Running);
            ConstGauge::new(up).encode(m.encode_family(&labels)?)?;
        }
        let mut m = enc.encode_descriptor(
            "troupe_channel_connected",
            "1 when the chat channel account's last exchange with its platform succeeded.",
            None,
            MetricType::Gauge,
        )?;
        for (id, connected) in &f.channels {
            let labels = [("channel", id.as_str())];
            ConstGauge::new(i64::from(*connected)).encode(m.encode_family(&labels)?)?;
        }
        if let Some(stats) = &f.store {
            store(&mut enc, stats)?;
        }
        Ok(())
    }
}

fn gauge<V>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: V) -> std::fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn store(enc: &mut DescriptorEncoder, stats: &OpStats) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(
        "troupe_store_op_seconds",
        "Time of each store operation, by operation.",
        None,
        MetricType::Histogram,
    )?;
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(LATENCY_BUCKETS_US.len() + 1);
    for (op, stat) in &stats.ops {
        // The store counts cumulatively; the encoder wants each bucket's own count.
        buckets.clear();
        let mut below = 0;
        for (bound, cumulative) in bucket_bounds().zip(&stat.buckets) {
            buckets.push((bound, cumulative.saturating_sub(below)));
            below = *cumulative;
        }
        buckets.push((f64::INFINITY, stat.count.saturating_sub(below)));
        let labels = [("op", *op)];
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            stat.total_us as f64 / 1e6,
            stat.count,
            &buckets,
            None,
        )?;
    }
    let mut m = enc.encode_descriptor(
        "troupe_store_op_errors",
        "Failed store operations, by operation.",
        None,
        MetricType::Counter,
    )?;
    for (op, stat) in &stats.ops {
        let labels = [("op", *op)];
        ConstCounter::new(stat.errors).encode(m.encode_family(&labels)?)?;
    }
    let c = ConstCounter::new(stats.batches);
    let m = enc.encode_descriptor(
        "troupe_store_batches",
        "Write transactions committed (group commit).",
        None,
        MetricType::Counter,
    )?;
    c.encode(m)?;
    let c = ConstCounter::new(stats.batched_writes);
    let m = enc.encode_descriptor(
        "troupe_store_batched_writes",
        "Writes in those transactions.",
        None,
        MetricType::Counter,
    )?;
    c.encode(m)
}

/// The hand-built Prometheus 0.0.4 text the gateway served before `prometheus-client`
/// (same metric and label names; label values not escaped), for comparison.
pub fn render_by_hand(figures: &Figures) -> String {
    let mut out = String::new();
    out.push_str("# HELP troupe_uptime_seconds Seconds since the gateway started.\n# TYPE troupe_uptime_seconds gauge\n");
    out.push_str(&format!(
        "troupe_uptime_seconds {:.3}\n",
        figures.uptime_ms as f64 / 1000.0
    ));
    out.push_str("# HELP troupe_ws_connections Open WebSocket connections.\n# TYPE troupe_ws_connections gauge\n");
    out.push_str(&format!(
        "troupe_ws_connections {}\n",
        figures.connections()
    ));
    out.push_str(
        "# HELP troupe_ready 1 when every permanent child is running.\n# TYPE troupe_ready gauge\n",
    );
    out.push_str(&format!("troupe_ready {}\n", u8::from(figures.ready)));
    out.push_str("# HELP troupe_unstoppable_nodes Killed nodes still running (a handler blocking its thread cannot be stopped); they leak until the process exits.\n# TYPE troupe_unstoppable_nodes gauge\n");
    out.push_str(&format!(
        "troupe_unstoppable_nodes {}\n",
        figures.unstoppable
    ));
    let nodes = figures.nodes();
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
    out.push_str("# HELP troupe_channel_connected 1 when the chat channel account's last exchange with its platform succeeded.\n# TYPE troupe_channel_connected gauge\n");
    for (id, connected) in &figures.channels {
        let _ = writeln!(
            out,
            "troupe_channel_connected{{channel=\"{id}\"}} {}",
            u8::from(*connected)
        );
    }
    if let Some(stats) = &figures.store {
        store_by_hand(stats, &mut out);
    }
    out
}

fn store_by_hand(stats: &OpStats, out: &mut String) {
    out.push_str("# HELP troupe_store_op_seconds Time of each store operation, by operation.\n# TYPE troupe_store_op_seconds histogram\n");
    for (op, stat) in &stats.ops {
        for (le, count) in bucket_bounds().zip(&stat.buckets) {
            let _ = writeln!(
                out,
                "troupe_store_op_seconds_bucket{{op=\"{op}\",le=\"{le}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "troupe_store_op_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {}",
            stat.count
        );
        let _ = writeln!(
            out,
            "troupe_store_op_seconds_sum{{op=\"{op}\"}} {}",
            stat.total_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "troupe_store_op_seconds_count{{op=\"{op}\"}} {}",
            stat.count
        );
    }
    out.push_str("# HELP troupe_store_op_errors_total Failed store operations, by operation.\n# TYPE troupe_store_op_errors_total counter\n");
    for (op, stat) in &stats.ops {
        let _ = writeln!(
            out,
            "troupe_store_op_errors_total{{op=\"{op}\"}} {}",
            stat.errors
        );
    }
    out.push_str("# HELP troupe_store_batches_total Write transactions committed (group commit).\n# TYPE troupe_store_batches_total counter\n");
    let _ = writeln!(out, "troupe_store_batches_total {}", stats.batches);
    out.push_str("# HELP troupe_store_batched_writes_total Writes in those transactions.\n# TYPE troupe_store_batched_writes_total counter\n");
    let _ = writeln!(
        out,
        "troupe_store_batched_writes_total {}",
        stats.batched_writes
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use troupe_actors::store::OpStat;

    fn node(id: &str, kind: &str, children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            id: id.into(),
            kind: kind.into(),
            state: NodeState::Running,
            restarts: 2,
            last_exit: None,
            started_at: None,
            mailbox: 1,
            next_attempt_at: None,
            children,
            child_count: None,
            unstoppable: 0,
        }
    }

    fn figures(agent: &str) -> Figures {
        let mut stats = OpStats::default();
        stats.ops.insert(
            "accept_turn",
            OpStat {
                count: 10,
                errors: 1,
                total_us: 1234,
                buckets: vec![1, 2, 3, 4, 5, 6, 7, 9],
            },
        );
        stats.batches = 3;
        stats.batched_writes = 9;
        Figures {
            uptime_ms: 1500,
            ready: true,
            unstoppable: 0,
            tree: node(
                "root",
                "supervisor",
                vec![
                    node(
                        "agents",
                        "supervisor",
                        vec![node(agent, "agent", Vec::new())],
                    ),
                    node(
                        "clients",
                        "supervisor",
                        vec![node("ws:1", "ws", Vec::new())],
                    ),
                ],
            ),
            store: Some(stats),
            channels: vec![
                ("telegram:main".into(), true),
                ("discord:ops".into(), false),
            ],
        }
    }

    /// `name{sorted labels}` → value of each sample line (`le` read as a number).
    fn samples(text: &str) -> BTreeMap<String, f64> {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("parses");
        let mut out = BTreeMap::new();
        for s in scrape.samples {
            let labels: BTreeMap<_, _> = s.labels.iter().collect();
            let key = format!("{}{labels:?}", s.metric);
            match s.value {
                prometheus_parse::Value::Histogram(buckets) => {
                    for b in buckets {
                        out.insert(format!("{key} le={}", b.less_than), b.count);
                    }
                }
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => {
                    out.insert(key, v);
                }
                prometheus_parse::Value::Summary(_) => panic!("no summaries"),
            }
        }
        out
    }

    #[test]
    fn prometheus_client_carries_the_same_samples_as_the_hand_built_text() {
        let f = figures("agent:main");
        let by_hand = render_by_hand(&f);
        let client = render(f);
        assert!(client.ends_with("# EOF\n"), "{client}");
        let (a, b) = (samples(&by_hand), samples(&client));
        assert_eq!(a, b, "{by_hand}\n---\n{client}");
        assert!(
            a.contains_key(r#"troupe_child_restarts_total{"id": "agent:main", "kind": "agent"}"#)
        );
        assert!(!client.contains("ws:1"), "WS sessions are not listed");
        let inf = "troupe_store_op_seconds_bucket{le=\"+Inf\",op=\"accept_turn\"} 10";
        assert!(
            client.contains("troupe_channel_connected{channel=\"discord:ops\"} 0"),
            "{client}"
        );
        assert!(client.contains(inf), "{client}");
    }

    #[test]
    fn label_values_are_escaped_so_an_odd_id_cannot_break_the_exposition() {
        let client = render(figures("agent:a\"b\\c"));
        assert!(
            client.contains(r#"troupe_child_up{id="agent:a\"b\\c",kind="agent"} 1"#),
            "{client}"
        );
    }
}
