//! Rate limiting of wrong credentials per client address (DESIGN.md §11), shared by the
//! HTTP routes and the WebSocket handshake.
//!
//! Only a *wrong* credential counts: a request without one (a web page's `<img>`, a probe)
//! is refused by authentication but never counted, so it cannot lock anyone out. After
//! `max_failures` wrong credentials within `window`, further wrong ones from that address
//! are answered "rate limited" (with the time left) until the window has passed. A correct
//! credential is never refused by the limiter and does not reset the count, so a client
//! that succeeds now and then does not buy guesses for a neighbour on the same address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong credentials per address in a fixed window that starts at the first one.
#[derive(Debug)]
pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Most addresses remembered; older entries are dropped first when full.
const MAX_TRACKED: usize = 10_000;

impl AuthLimiter {
    /// Allows `max_failures` wrong credentials per `window` per address.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a wrong credential from `ip`: `Ok(())` while the address is within its
    /// allowance, `Err(retry_after)` once it has used it up (that attempt is not counted).
    pub fn wrong_credential(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
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
        let elapsed = now.duration_since(entry.1);
        if elapsed >= self.window {
            *entry = (0, now);
        } else if entry.0 >= self.max_failures {
            return Err(self.window - elapsed);
        }
        entry.0 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_limited_after_the_allowance_and_freed_after_the_window() {
        let limiter = AuthLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.wrong_credential(ip, t), Ok(()));
        }
        assert_eq!(
            limiter.wrong_credential(ip, t + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        assert_eq!(
            limiter.wrong_credential(other, t),
            Ok(()),
            "other addresses are unaffected"
        );
        assert_eq!(
            limiter.wrong_credential(ip, t + Duration::from_secs(61)),
            Ok(())
        );
    }

    #[test]
    fn refused_attempts_do_not_extend_the_window() {
        let limiter = AuthLimiter::new(1, Duration::from_secs(60));
        let ip: IpAddr = "::1".parse().expect("ip");
        let t = Instant::now();
        assert_eq!(limiter.wrong_credential(ip, t), Ok(()));
        for s in 1..60 {
            assert!(
                limiter
                    .wrong_credential(ip, t + Duration::from_secs(s))
                    .is_err()
            );
        }
        assert_eq!(
            limiter.wrong_credential(ip, t + Duration::from_secs(60)),
            Ok(())
        );
    }
}
