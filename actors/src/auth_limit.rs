//! Rate limiting of failed authentication attempts per client address (DESIGN.md §11):
//! after `max_failures` failures within `window`, the address is refused until the window
//! has passed. Shared by the HTTP routes and the WebSocket handshake; a success clears it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts per address in a sliding window.
#[derive(Debug)]
pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Most addresses remembered; older entries are dropped first when full.
const MAX_TRACKED: usize = 10_000;

impl AuthLimiter {
    /// Allows `max_failures` failures per `window` per address.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(retry_after)` while the address is blocked.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (count, since) = map.get(&ip)?;
        let elapsed = now.duration_since(*since);
        (*count >= self.max_failures && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Records a failed attempt.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let window = self.window;
            map.retain(|_, (_, since)| now.duration_since(*since) < window);
            if map.len() >= MAX_TRACKED {
                // Still full of live entries: forget the oldest so the map stays bounded.
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(ip, _)| *ip)
                {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// Forgets the address's failures after a successful attempt.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_the_limit_and_freed_after_the_window() {
        let limiter = AuthLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let t = Instant::now();
        for _ in 0..3 {
            assert!(limiter.blocked(ip, t).is_none());
            limiter.failed(ip, t);
        }
        assert_eq!(
            limiter.blocked(ip, t + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert!(
            limiter.blocked(other, t).is_none(),
            "other addresses are unaffected"
        );
        assert!(limiter.blocked(ip, t + Duration::from_secs(61)).is_none());
    }

    #[test]
    fn a_success_clears_the_failures() {
        let limiter = AuthLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = "::1".parse().expect("ip");
        let t = Instant::now();
        limiter.failed(ip, t);
        limiter.succeeded(ip);
        limiter.failed(ip, t);
        assert!(limiter.blocked(ip, t).is_none());
    }
}
