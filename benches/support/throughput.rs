//! The throughput patterns, run against the gateway and the bare server in alternating short
//! rounds, so that both see the same machine: the cores are shared with whatever else runs,
//! and a burst of outside load then hits both servers alike instead of one of them.

use std::time::Duration;

use super::client::{Client, LoadResult, closed_loops};
use super::{BenchResult, report};

/// Requests in flight for the "32 in flight" patterns.
pub const WINDOW: usize = 32;

/// A way of loading a server with `health` requests.
#[derive(Clone, Copy)]
pub enum Pattern {
    /// One connection, one request in flight.
    OneByOne,
    /// One connection, [`WINDOW`] requests in flight.
    Pipelined,
    /// [`WINDOW`] connections, one request in flight each.
    Fanout,
}

impl Pattern {
    /// Every pattern, in the order they are run and printed.
    pub const ALL: [Pattern; 3] = [Pattern::OneByOne, Pattern::Pipelined, Pattern::Fanout];

    /// Name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Pattern::OneByOne => "1 conn × 1",
            Pattern::Pipelined => "1 conn × 32 pipelined",
            Pattern::Fanout => "32 conns × 1",
        }
    }

    /// The share of the bare server's rate the gateway should reach, in percent.
    pub fn target_pct(self) -> f64 {
        match self {
            Pattern::OneByOne => 70.0,
            Pattern::Pipelined | Pattern::Fanout => 50.0,
        }
    }

    /// Connections the pattern uses.
    fn connections(self) -> usize {
        match self {
            Pattern::Fanout => WINDOW,
            Pattern::OneByOne | Pattern::Pipelined => 1,
        }
    }

    /// Runs one round of the pattern on `clients` for `duration`.
    async fn run(self, clients: &mut Vec<Client>, duration: Duration) -> BenchResult<LoadResult> {
        match self {
            Pattern::Fanout => closed_loops(clients, duration).await,
            Pattern::OneByOne | Pattern::Pipelined => {
                let client = clients.first_mut().ok_or("no connection left")?;
                match self {
                    Pattern::Pipelined => client.pipelined(WINDOW, duration).await,
                    _ => client.closed_loop(duration).await,
                }
            }
        }
    }
}

/// A server under test.
pub struct Server {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The token to connect with.
    pub token: String,
}

/// A pattern's rounds against one server.
pub struct Measured {
    /// All rounds together (latencies pooled).
    pub pooled: LoadResult,
    /// The rate of each round.
    pub round_rates: Vec<f64>,
}

impl Measured {
    /// The median round rate, requests per second.
    pub fn rate(&self) -> f64 {
        let mut rates = self.round_rates.clone();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    }

    /// Rate and latency for the report, e.g. `41,230 req/s  p50 22 µs  p99 61 µs`.
    pub fn summary(&self) -> String {
        let (p50, p99) = report::p50_p99(&self.pooled.latencies_us);
        format!(
            "{} req/s  p50 {}  p99 {}",
            report::thousands(self.rate() as u64),
            report::us(p50),
            report::us(p99)
        )
    }
}

/// How the rounds are cut.
pub struct Rounds {
    /// Rounds per server.
    pub count: usize,
    /// Length of one round.
    pub length: Duration,
    /// Unmeasured load before the first round.
    pub warmup: Duration,
}

/// Runs `pattern` against each server: a warm-up, then `rounds.count` rounds, taking turns.
/// A server that fails is left out of later rounds; its result is the error.
pub async fn compare(
    pattern: Pattern,
    servers: &[Server],
    rounds: &Rounds,
) -> Vec<Result<Measured, String>> {
    let mut sides = Vec::with_capacity(servers.len());
    for server in servers {
        sides.push(Side::open(pattern, server, rounds.warmup).await);
    }
    for _ in 0..rounds.count {
        for side in &mut sides {
            side.round(pattern, rounds.length).await;
        }
    }
    let mut results = Vec::with_capacity(sides.len());
    for side in sides {
        results.push(side.finish().await);
    }
    results
}

/// One server's connections and finished rounds.
struct Side {
    /// Open connections, reused from round to round.
    clients: Vec<Client>,
    /// Finished rounds.
    rounds: Vec<LoadResult>,
    /// Why this side stopped, if it did.
    error: Option<String>,
}

impl Side {
    /// Opens the pattern's connections and warms them up.
    async fn open(pattern: Pattern, server: &Server, warmup: Duration) -> Side {
        let mut side = Side {
            clients: Vec::new(),
            rounds: Vec::new(),
            error: None,
        };
        for _ in 0..pattern.connections() {
            match Client::connect(server.port, &server.token).await {
                Ok(client) => side.clients.push(client),
                Err(error) => {
                    side.error = Some(error.to_string());
                    return side;
                }
            }
        }
        if let Err(error) = pattern.run(&mut side.clients, warmup).await {
            side.error = Some(format!("warm-up: {error}"));
        }
        side
    }

    /// Runs one round, unless this side has already failed.
    async fn round(&mut self, pattern: Pattern, length: Duration) {
        if self.error.is_some() {
            return;
        }
        match pattern.run(&mut self.clients, length).await {
            Ok(load) => self.rounds.push(load),
            Err(error) => self.error = Some(error.to_string()),
        }
    }

    /// Closes the connections and sums up.
    async fn finish(self) -> Result<Measured, String> {
        for client in self.clients {
            client.close().await;
        }
        if let Some(error) = self.error {
            return Err(error);
        }
        let round_rates = self.rounds.iter().map(LoadResult::rate).collect();
        Ok(Measured {
            pooled: LoadResult::one_after_another(self.rounds),
            round_rates,
        })
    }
}
