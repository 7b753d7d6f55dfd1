//! Bounds on open connections (DESIGN.md §11): at most `gateway.max_connections` in all and
//! `gateway.max_connections_per_ip` from one address, HTTP and WebSocket alike (an upgraded
//! WebSocket keeps its connection). A connection is admitted or refused when it is accepted;
//! a refused one is answered 503 + `Retry-After` and closed by the edge middleware.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Counts of open admitted connections, shared by every HTTP worker.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// An admitted connection's place in the count; given back when dropped (when the
/// connection closes and actix drops its connection data).
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

/// What the edge knows about a connection, stored in its connection data on accept.
#[derive(Debug)]
pub struct AcceptedConnection {
    /// The local address the client reached (the bound address it may name in `Host`).
    pub local: Option<SocketAddr>,
    /// `Ok(slot)` when admitted; `Err(why)` when over a bound. Shared: an upgraded
    /// WebSocket keeps the slot after its HTTP request is dropped.
    pub admission: Result<Arc<ConnectionSlot>, String>,
}

impl ConnectionLimits {
    /// Allows `max_total` open connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            open: Mutex::new(OpenConnections::default()),
        })
    }

    /// Takes a slot for a new connection from `ip`, or says which bound it would pass.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max_total {
            return Err(format!(
                "the gateway has {} open connections, its limit (gateway.max_connections); retry shortly",
                open.total
            ));
        }
        let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(format!(
                "{ip} has {from_ip} open connections, the limit per address (gateway.max_connections_per_ip); close some or retry shortly"
            ));
        }
        open.total += 1;
        *open.per_ip.entry(ip).or_insert(0) += 1;
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Open admitted connections in all.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_bounded_in_all_and_per_address_and_slots_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = limits.admit(a).expect("first from a");
        let _a2 = limits.admit(a).expect("second from a");
        let err = limits.admit(a).expect_err("third from a");
        assert!(err.contains("max_connections_per_ip"), "{err}");
        let _b1 = limits.admit(b).expect("first from b");
        let err = limits.admit(b).expect_err("over the total");
        assert!(err.contains("gateway.max_connections"), "{err}");
        drop(a1);
        assert_eq!(limits.open(), 2);
        limits.admit(b).expect("a slot came back");
    }
}
