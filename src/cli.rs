//! The command line (DESIGN.md §4).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Troupe: a self-healing agent gateway.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about)]
pub struct Cli {
    /// Config file (default: $TROUPE_HOME/config.toml; env TROUPE_CONFIG).
    #[arg(long, global = true, env = "TROUPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run and manage the gateway.
    Gateway {
        /// What to do.
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// Print the gateway log.
    Logs {
        /// Keep printing as the log grows.
        #[arg(long, short)]
        follow: bool,
        /// Lines to print from the end.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
    },
    /// Diagnose config, state dir, port, stale PID file, store and providers.
    Doctor,
    /// Chat with an agent through the gateway (/abort, /reset, /history, /quit). From a
    /// pipe, or with --message, it sends, waits for the replies, prints them and exits
    /// non-zero if any failed.
    Chat {
        /// Agent id (default: main).
        #[arg(long)]
        agent: Option<String>,
        /// Session key (default: agent:<agent>:main).
        #[arg(long)]
        session: Option<String>,
        /// Send this one message, print the reply and exit (instead of reading stdin).
        #[arg(long, short)]
        message: Option<String>,
        /// Print one JSON object per reply ({runId, sessionKey, status, reply, error?}).
        #[arg(long)]
        json: bool,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Approve chat senders who asked to pair (`list`, `approve <code>`).
    Pairing {
        /// What to do.
        #[command(subcommand)]
        command: PairingCommand,
    },
    /// Scheduled jobs (`list`, `add`, `rm`, `run`, `runs`).
    Cron {
        /// What to do.
        #[command(subcommand)]
        command: CronCommand,
    },
    /// Chat-platform accounts (`status`).
    Channels {
        /// What to do.
        #[command(subcommand)]
        command: ChannelsCommand,
    },
    /// The running gateway's agents (`list`).
    Agents {
        /// What to do.
        #[command(subcommand)]
        command: AgentsCommand,
    },
}

/// `troupe agents ...`.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// One line per agent: id, provider, model, the state of its node in the supervision
    /// tree (and its restarts, if any).
    List {
        /// Print JSON: `{agents: [{id, provider, model, realModel, state, restarts}]}`.
        #[arg(long)]
        json: bool,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
}

/// `troupe pairing ...`.
#[derive(Debug, Subcommand)]
pub enum PairingCommand {
    /// Pending pairing requests (code, channel, account, sender, expiry).
    List {
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Approve a pairing code: its sender may talk to the agent from now on.
    Approve {
        /// The code the sender was given.
        code: String,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
}

/// `troupe cron ...`.
#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Every job with its next fire time.
    List {
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Adds a job.
    Add {
        /// Job id (letters, digits, '-' or '_').
        id: String,
        /// Schedule: "30 9 * * 1-5", "@daily", "every 5m" or "at 2030-01-01T09:00:00Z".
        #[arg(long)]
        schedule: String,
        /// The message sent to the agent.
        #[arg(long)]
        message: String,
        /// Agent (default: main).
        #[arg(long, default_value = "main")]
        agent: String,
        /// IANA time zone of the schedule (default: the host's).
        #[arg(long)]
        tz: Option<String>,
        /// Session key (default: cron:<id>).
        #[arg(long)]
        session: Option<String>,
        /// A fire while the previous run is active: skip | queue.
        #[arg(long, default_value = "skip")]
        overlap: String,
        /// Fires missed while the gateway was down: skip | run_once.
        #[arg(long, default_value = "skip")]
        catch_up: String,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Removes a job.
    Rm {
        /// Job id.
        id: String,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Fires a job now (recorded as manual).
    Run {
        /// Job id.
        id: String,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
    /// A job's run ledger, newest first.
    Runs {
        /// Job id.
        id: String,
        /// Rows to print.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
}

/// `troupe channels ...`.
#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// Per account: state, connected since, last inbound/outbound, last error, restarts,
    /// pending deliveries.
    Status {
        /// Also check each account's token live (Telegram `getMe`, Discord `GET /users/@me`).
        #[arg(long)]
        probe: bool,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
}

/// Flags shared by `run`, `start` and `restart`.
#[derive(Debug, Args, Clone, Default)]
pub struct RunFlags {
    /// Port (0 = ephemeral; the bound port goes to run/troupe.port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Bind address (`loopback` or an IP).
    #[arg(long)]
    pub bind: Option<String>,
    /// Gateway token.
    #[arg(long)]
    pub token: Option<String>,
    /// Stop a gateway already running on this home first.
    #[arg(long)]
    pub force: bool,
    /// Debug logging.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Where and how a client command reaches the gateway.
#[derive(Debug, Args, Clone, Default)]
pub struct ClientFlags {
    /// Gateway URL (default: ws://127.0.0.1:<port from run/troupe.port or config>).
    #[arg(long)]
    pub url: Option<String>,
    /// Token (default: TROUPE_GATEWAY_TOKEN, then gateway.auth.token, then the state dir's token file).
    #[arg(long)]
    pub token: Option<String>,
    /// Password, when gateway.auth.mode = "password" (default: TROUPE_GATEWAY_PASSWORD).
    #[arg(long)]
    pub password: Option<String>,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// `troupe gateway ...`.
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Run in the foreground (what a service manager runs).
    Run(RunFlags),
    /// Start in the background and wait until ready.
    Start(RunFlags),
    /// Stop the background gateway (graceful drain).
    Stop,
    /// Stop, then start.
    Restart(RunFlags),
    /// Pid, uptime, URL, agents; `--deep` prints the supervision tree.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Include the supervision tree.
        #[arg(long)]
        deep: bool,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Install a systemd user unit (Linux) or launchd agent (macOS).
    Install,
    /// Remove the service unit.
    Uninstall,
    /// Send one WebSocket request and print the JSON reply.
    Call {
        /// Method name (`health`, `status`, `supervisor.tree`, ...).
        method: String,
        /// Parameters as JSON.
        #[arg(long)]
        params: Option<String>,
        /// Wait for the final response of a two-stage method (`agent`).
        #[arg(long)]
        expect_final: bool,
        /// Connection flags.
        #[command(flatten)]
        client: ClientFlags,
    },
}
