//! Binding the gateway's one port, with `gateway.port_fallback`: when the configured port is
//! taken, the next N ports are tried in order (several gateways on one host without choosing
//! ports); the port actually bound goes to `run/troupe.port` as always.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener};

/// Why no port could be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Every port tried is in use.
    #[error("{}", in_use_message(*.bind, *.first, *.last))]
    InUse {
        /// Address.
        bind: IpAddr,
        /// First port tried.
        first: u16,
        /// Last port tried.
        last: u16,
    },
    /// Binding failed for another reason (permissions, no such address).
    #[error("cannot bind {bind}:{port}: {error}")]
    Other {
        /// Address.
        bind: IpAddr,
        /// Port.
        port: u16,
        /// The OS error.
        error: std::io::Error,
    },
}

fn in_use_message(bind: IpAddr, first: u16, last: u16) -> String {
    if first == last {
        format!(
            "port {first} on {bind} is already in use; stop what holds it, choose another with --port, or set gateway.port_fallback to try the next ports"
        )
    } else {
        format!(
            "ports {first}-{last} on {bind} are all in use (port {first} and gateway.port_fallback = {}); stop what holds them or choose another with --port",
            last - first
        )
    }
}

/// A bound listener, and whether it is not the configured port.
#[derive(Debug)]
pub struct Bound {
    /// The listener.
    pub listener: TcpListener,
    /// The configured port, when a fallback port was bound instead.
    pub fell_back_from: Option<u16>,
}

/// Binds `bind:port`, else (only when it is in use) the next `fallback` ports in order.
/// Port 0 (ephemeral) never falls back; the tried range stops at 65535.
pub fn bind_with_fallback(bind: IpAddr, port: u16, fallback: u16) -> Result<Bound, BindError> {
    let last = if port == 0 {
        0
    } else {
        port.saturating_add(fallback)
    };
    for candidate in port..=last {
        match TcpListener::bind(SocketAddr::new(bind, candidate)) {
            Ok(listener) => {
                return Ok(Bound {
                    listener,
                    fell_back_from: (candidate != port).then_some(port),
                });
            }
            Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
            Err(error) => {
                return Err(BindError::Other {
                    bind,
                    port: candidate,
                    error,
                });
            }
        }
    }
    Err(BindError::InUse {
        bind,
        first: port,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn a_taken_port_without_fallback_is_an_error_naming_it() {
        let taken = TcpListener::bind((LOOPBACK, 0)).expect("hold a port");
        let port = taken.local_addr().expect("addr").port();
        let err = bind_with_fallback(LOOPBACK, port, 0).expect_err("in use");
        assert!(matches!(err, BindError::InUse { .. }), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }

    #[test]
    fn a_taken_port_falls_back_to_a_later_one_within_range() {
        let taken = TcpListener::bind((LOOPBACK, 0)).expect("hold a port");
        let port = taken.local_addr().expect("addr").port();
        if port > 65_000 {
            return; // too close to the end of the range to say anything
        }
        let bound = bind_with_fallback(LOOPBACK, port, 5).expect("a later port");
        let got = bound.listener.local_addr().expect("addr").port();
        assert!(got > port && got <= port + 5, "{got} after {port}");
        assert_eq!(bound.fell_back_from, Some(port));
    }
}
