//! Restarting in place (`POST /api/restart`): the listening socket is handed to the next
//! process image as systemd's socket activation does (`LISTEN_FDS=1`, `LISTEN_PID`, fd 3),
//! and the same executable is re-executed with the same arguments, so the pid and the port
//! stay the same and connections that arrive meanwhile wait in the socket's backlog instead
//! of being refused. A gateway started by systemd with socket activation takes its socket
//! the same way.

use std::net::{IpAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use command_fds::{CommandFdExt, FdMapping};

/// The fd a handed-over socket has in the new image (the first of socket activation).
const HANDED_OVER_FD: i32 = 3;

/// The listening socket handed over by a previous image of this process (or by systemd),
/// if any. Call it first thing: it reads and removes `LISTEN_FDS` / `LISTEN_PID`.
pub fn inherited_listener() -> Option<TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    match fds.take_tcp_listener(0) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("troupe: ignoring the inherited socket: {e}");
            None
        }
    }
}

/// The inherited socket when it is what the config asks for (same address; the same port
/// or port 0); otherwise it is closed and the caller binds anew.
pub fn reuse(inherited: Option<TcpListener>, bind: IpAddr, port: u16) -> Option<TcpListener> {
    let listener = inherited?;
    let addr = listener.local_addr().ok()?;
    (addr.ip() == bind && (port == 0 || addr.port() == port)).then_some(listener)
}

/// Replaces this process with a new image of the same executable and arguments, handing it
/// `listener`. Returns only on failure, saying why.
pub fn exec_self(listener: TcpListener) -> String {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return format!("cannot find my own executable: {e}"),
    };
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", std::process::id().to_string())
        .env_remove("LISTEN_FDNAMES");
    let mapping = FdMapping {
        parent_fd: OwnedFd::from(listener),
        child_fd: HANDED_OVER_FD,
    };
    if let Err(e) = cmd.fd_mappings(vec![mapping]) {
        return format!("cannot hand the listening socket over: {e:?}");
    }
    let err = cmd.exec();
    format!("cannot re-execute {}: {err}", exe.display())
}
