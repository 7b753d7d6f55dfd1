//! Which `Host` and `Origin` values name this gateway (DNS-rebinding defence, DESIGN.md
//! §11): a loopback name or address, the address the connection reached, or one of
//! `gateway.allowed_hosts`. A page on an attacker's domain that resolves to 127.0.0.1
//! still sends its own name as `Host`, so it is refused whatever the auth mode.

use std::net::{IpAddr, SocketAddr};

/// A `Host` (or an `Origin`'s authority) split into a lower-case host, IPv6 without
/// brackets and without a trailing dot, and its port if given. `None` when malformed.
pub fn split_host(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim().to_ascii_lowercase();
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (v6.to_string(), port)
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.parse().ok()?)),
            Some(_) => return None,
            None => (value.clone(), None),
        }
    };
    let host = host.strip_suffix('.').unwrap_or(&host).to_string();
    (!host.is_empty()).then_some((host, port))
}

/// Whether `host` (from [`split_host`]) names this gateway: `localhost`, a loopback
/// address, `local` (the address the connection reached), or an allowed name.
pub fn names_gateway(host: &str, local: Option<IpAddr>, allowed: &[String]) -> bool {
    if host == "localhost" || allowed.iter().any(|a| a == host) {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.to_canonical().is_loopback() || Some(ip) == local,
        Err(_) => false,
    }
}

/// Whether a browser page with this `Origin` may open a WebSocket to the gateway: its host
/// must name the gateway (as for `Host`), and a loopback or bound-address origin must also
/// be on the gateway's port (another local web app is another site).
pub fn origin_allowed(origin: &str, local: Option<SocketAddr>, allowed: &[String]) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let Some((host, port)) = split_host(authority) else {
        return false;
    };
    if allowed.contains(&host) {
        return true;
    }
    if !names_gateway(&host, local.map(|l| l.ip()), &[]) {
        return false;
    }
    let port = port.or(match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    });
    local.is_some_and(|l| port == Some(l.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway_host(value: &str) -> bool {
        let local: IpAddr = "192.168.1.5".parse().expect("ip");
        split_host(value).is_some_and(|(h, _)| {
            names_gateway(&h, Some(local), &["troupe.example.com".to_string()])
        })
    }

    #[test]
    fn loopback_names_and_addresses_pass_with_or_without_port() {
        for ok in [
            "localhost",
            "LOCALHOST:18789",
            "localhost.:80",
            "127.0.0.1",
            "127.0.0.1:18789",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:18789",
            "[::ffff:127.0.0.1]:5",
        ] {
            assert!(gateway_host(ok), "{ok} names the gateway");
        }
    }

    #[test]
    fn the_bound_address_and_allowed_names_pass() {
        assert!(gateway_host("192.168.1.5:18789"));
        assert!(gateway_host("Troupe.Example.com"));
        assert!(gateway_host("troupe.example.com:443"));
    }

    #[test]
    fn other_names_and_malformed_hosts_are_refused() {
        for bad in [
            "evil.example",
            "evil.example:18789",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "192.168.1.6",
            "",
            "::1",
            "[::1",
            "localhost:http",
            "example.com:18789:1",
        ] {
            assert!(!gateway_host(bad), "{bad:?} is refused");
        }
    }

    #[test]
    fn origins_must_name_the_gateway_and_its_port() {
        let local: SocketAddr = "127.0.0.1:18789".parse().expect("addr");
        let allowed = ["ui.example.com".to_string()];
        let ok = |o: &str| origin_allowed(o, Some(local), &allowed);
        assert!(ok("http://127.0.0.1:18789"));
        assert!(ok("http://localhost:18789/"));
        assert!(ok("https://ui.example.com"));
        assert!(!ok("https://evil.example"));
        assert!(!ok("http://evil.example:18789"), "same port, other name");
        assert!(!ok("http://localhost:3000"), "another local web app");
        assert!(!ok("http://localhost"), "port 80 is not the gateway's");
        assert!(!ok("null"));
    }
}
