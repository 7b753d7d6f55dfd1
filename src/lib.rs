//! # troupe: the gateway binary's edges
//!
//! The supervision tree and actors live in the `troupe-actors` crate; this crate holds what
//! faces the outside world:
//!
//! - [`cli`]: the command line; [`exit`]: its exit codes.
//! - [`config`]: layered, validated configuration; [`agents`]: agents from config and
//!   disk; [`paths`]: the state dir.
//! - [`server`]: `gateway run` (PID lock, bind, tree, HTTP server, graceful drain);
//!   [`reload`]: config hot reload (file watch, `SIGHUP`, `config.get|patch`).
//! - [`http`]: HTTP and WebSocket routes on the one port; [`gateway`]: the OpenClaw
//!   WebSocket protocol (frames, handshake, methods, one actor per connection).
//! - [`daemon`]: background `start | stop | status`; [`client`]: the CLI's WS client.
//! - [`ops`]: `install`, `logs`, `doctor`; [`chat`]: `troupe chat`; [`agents_list`]:
//!   `troupe agents list`; [`pidfile`], [`logging`].

pub mod agents;
pub mod agents_list;
pub mod bind;
pub mod channel_checks;
pub mod chat;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod gateway;
pub mod http;
pub mod logging;
pub mod ops;
pub mod paths;
pub mod pidfile;
pub mod reexec;
pub mod reload;
pub mod server;

use std::collections::HashMap;
use std::time::Duration;

use cli::{Cli, Command, GatewayCommand};
use paths::StatePaths;

/// Runs a parsed command line; returns the exit code. A panic that reaches here (a bug)
/// still ends with one line on stderr and exit 70, never a silent 101.
pub fn dispatch(cli: Cli) -> i32 {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch_command(cli))) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".into());
            eprintln!(
                "troupe: internal error: {what}; exiting {} (please report this)",
                exit::ESCALATED
            );
            exit::ESCALATED
        }
    }
}

fn dispatch_command(cli: Cli) -> i32 {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    // `--config` reaches client commands (token, password, port) the way TROUPE_CONFIG does.
    if let Some(file) = &cli.config {
        env.insert("TROUPE_CONFIG".into(), file.display().to_string());
    }
    let paths = StatePaths::from_env(&env);
    let config_file = cli.config.as_deref();
    match cli.command {
        Command::Gateway { command } => match command {
            GatewayCommand::Run(flags) => server::run(&paths, config_file, &flags, &env),
            GatewayCommand::Start(flags) => daemon::start(&paths, config_file, &flags),
            GatewayCommand::Stop => daemon::stop(&paths, drain_timeout(&paths, config_file, &env)),
            GatewayCommand::Restart(flags) => {
                let code = daemon::stop(&paths, drain_timeout(&paths, config_file, &env));
                if code != exit::OK {
                    return code;
                }
                daemon::start(&paths, config_file, &flags)
            }
            GatewayCommand::Status { json, deep, client } => {
                daemon::status(&paths, &env, json, deep, &client)
            }
            GatewayCommand::Install => ops::install(&paths, &env),
            GatewayCommand::Uninstall => ops::uninstall(&env),
            GatewayCommand::Call {
                method,
                params,
                expect_final,
                client,
            } => call(&paths, &env, &method, params, expect_final, &client),
        },
        Command::Logs { follow, lines } => ops::logs(&paths, lines, follow),
        Command::Doctor => ops::doctor(&paths, config_file, &env),
        Command::Chat {
            agent,
            session,
            message,
            json,
            client,
        } => {
            let options = chat::ChatOptions {
                agent,
                session,
                message,
                json,
            };
            chat::run(&paths, &env, options, &client)
        }
        Command::Pairing { command } => match command {
            cli::PairingCommand::List { client } => {
                call(&paths, &env, "pairing.list", None, false, &client)
            }
            cli::PairingCommand::Approve { code, client } => {
                let params = serde_json::json!({ "code": code }).to_string();
                call(
                    &paths,
                    &env,
                    "pairing.approve",
                    Some(params),
                    false,
                    &client,
                )
            }
        },
        Command::Cron { command } => cron_command(&paths, &env, command),
        Command::Channels { command } => match command {
            cli::ChannelsCommand::Status { probe, client } => {
                let params = probe.then(|| serde_json::json!({ "probe": true }).to_string());
                call(&paths, &env, "channels.status", params, false, &client)
            }
        },
        Command::Agents { command } => match command {
            cli::AgentsCommand::List { json, client } => {
                agents_list::run(&paths, &env, json, &client)
            }
        },
    }
}

/// `troupe cron ...`: each subcommand is one `cron.*` request.
fn cron_command(
    paths: &StatePaths,
    env: &HashMap<String, String>,
    command: cli::CronCommand,
) -> i32 {
    use serde_json::json;
    let (method, params, client) = match command {
        cli::CronCommand::List { client } => ("cron.list", None, client),
        cli::CronCommand::Add {
            id,
            schedule,
            message,
            agent,
            tz,
            session,
            overlap,
            catch_up,
            client,
        } => {
            let job = json!({
                "id": id, "schedule": schedule, "message": message, "agentId": agent,
                "tz": tz, "sessionKey": session, "overlap": overlap, "catchUp": catch_up,
            });
            ("cron.add", Some(json!({ "job": job })), client)
        }
        cli::CronCommand::Rm { id, client } => ("cron.remove", Some(json!({ "id": id })), client),
        cli::CronCommand::Run { id, client } => ("cron.run", Some(json!({ "id": id })), client),
        cli::CronCommand::Runs { id, limit, client } => (
            "cron.runs",
            Some(json!({ "id": id, "limit": limit })),
            client,
        ),
    };
    call(
        paths,
        env,
        method,
        params.map(|p| p.to_string()),
        false,
        &client,
    )
}

fn drain_timeout(
    paths: &StatePaths,
    config_file: Option<&std::path::Path>,
    env: &HashMap<String, String>,
) -> Duration {
    server::load_config(paths, config_file, env, &Default::default())
        .map(|c| c.shutdown_timeout)
        .unwrap_or(Duration::from_secs(10))
}

fn call(
    paths: &StatePaths,
    env: &HashMap<String, String>,
    method: &str,
    params: Option<String>,
    expect_final: bool,
    flags: &cli::ClientFlags,
) -> i32 {
    let params = match params.map(|p| serde_json::from_str::<serde_json::Value>(&p)) {
        Some(Err(e)) => {
            eprintln!("troupe: --params is not valid JSON: {e}");
            return exit::CONFIG;
        }
        Some(Ok(v)) => Some(v),
        None => None,
    };
    let target = client::Target::resolve(flags, paths, env);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return exit::FAILURE;
    };
    match runtime.block_on(client::call(
        &target,
        method,
        params,
        expect_final,
        Duration::from_secs(flags.timeout),
    )) {
        Ok(payload) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&payload).unwrap_or_default()
            );
            exit::OK
        }
        Err(client::ClientError::Refused(error)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "error": error }))
                    .unwrap_or_default()
            );
            exit::FAILURE
        }
        Err(e) => {
            eprintln!("troupe: {e}");
            exit::FAILURE
        }
    }
}
