//! `gateway.port_fallback`: a busy port makes the gateway try the next N ports and write the
//! one it bound to `run/troupe.port`; with the default 0 a busy port still exits 98.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::*;

/// Holds a port whose next port is free (as far as can be told), returning both.
fn hold_port_with_a_free_neighbour() -> (TcpListener, u16) {
    eventually_sync(WAIT, "a held port with a free next port", || {
        let held = TcpListener::bind("127.0.0.1:0").ok()?;
        let port = held.local_addr().ok()?.port();
        (port < 65_000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok())
            .then_some((held, port))
    })
}

fn spawn(home: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(troupe_bin());
    cmd.args(["gateway", "run", "--port", &port.to_string()])
        .env("TROUPE_HOME", home)
        .env_remove("TROUPE_GATEWAY_TOKEN")
        .env_remove("TROUPE_GATEWAY_PORT")
        .env_remove("TROUPE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn troupe")
}

/// Waits for the exit code, killing the process (and failing) if it keeps running.
fn exit_code(child: &mut Child, what: &str) -> i32 {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually_sync(WAIT, what, || {
            child.try_wait().expect("try_wait").map(|s| s.code())
        })
    }));
    match code {
        Ok(code) => code.unwrap_or(-1),
        Err(panic) => {
            let _ = child.kill();
            let _ = child.wait();
            std::panic::resume_unwind(panic)
        }
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    err
}

fn logs(home: &Path) -> String {
    std::fs::read_dir(home.join("logs"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[test]
fn a_busy_port_with_fallback_binds_a_later_port_and_writes_it() {
    let (_dir, home) = fresh_home();
    let (held, port) = hold_port_with_a_free_neighbour();
    let mut child = spawn(&home, port, &[("TROUPE__GATEWAY__PORT_FALLBACK", "3")]);
    let bound: u16 = eventually_sync(WAIT, "run/troupe.port written", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the gateway exited with {status}: {}",
                stderr_of(&mut child)
            );
        }
        std::fs::read_to_string(home.join("run/troupe.port"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    assert!(
        bound > port && bound <= port + 3,
        "bound {bound}, expected one of the 3 ports after {port}"
    );
    assert_eq!(
        bound,
        port + 1,
        "the next port was free, so it is the one bound"
    );
    let log = eventually_sync(WAIT, "the fallback is logged", || {
        let log = logs(&home);
        log.contains("gateway.port_fallback").then_some(log)
    });
    assert!(
        log.contains(&format!("port {port} was in use; bound port {bound}")),
        "{log}"
    );
    let healthy = std::net::TcpStream::connect(("127.0.0.1", bound)).is_ok();
    assert!(healthy, "the gateway answers on {bound}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(exit_code(&mut child, "the gateway stops on SIGTERM"), 0);
    drop(held);
}

#[test]
fn a_busy_port_without_fallback_still_exits_98() {
    let (_dir, home) = fresh_home();
    let (held, port) = hold_port_with_a_free_neighbour();
    let mut child = spawn(&home, port, &[("TROUPE__GATEWAY__PORT_FALLBACK", "0")]);
    let code = exit_code(&mut child, "a refused start exits");
    let err = stderr_of(&mut child);
    assert_eq!(code, 98, "stderr: {err}");
    assert!(err.contains(&port.to_string()), "names the port: {err}");
    assert!(err.contains("port_fallback"), "suggests the key: {err}");
    drop(held);
}

#[test]
fn too_large_a_port_fallback_exits_64_naming_the_key() {
    let (_dir, home) = fresh_home();
    let mut child = spawn(&home, 0, &[("TROUPE__GATEWAY__PORT_FALLBACK", "1000")]);
    let code = exit_code(&mut child, "invalid config exits");
    let err = stderr_of(&mut child);
    assert_eq!(code, 64, "stderr: {err}");
    assert!(err.contains("gateway.port_fallback"), "{err}");
}
