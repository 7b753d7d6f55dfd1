//! The restart-intensity window and the backoff delay: pure logic, unit tested.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::spec::{Backoff, Intensity};

/// Sliding window of recent restarts.
pub struct RestartWindow {
    intensity: Intensity,
    restarts: VecDeque<Instant>,
}

impl RestartWindow {
    /// An empty window for the given intensity.
    pub fn new(intensity: Intensity) -> Self {
        Self {
            intensity,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; false when that exceeds the intensity (escalate).
    pub fn record(&mut self, now: Instant) -> bool {
        self.restarts.push_back(now);
        while let Some(first) = self.restarts.front() {
            if now.duration_since(*first) > self.intensity.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.len() as u32 <= self.intensity.max_restarts
    }
}

/// The delay before restart number `attempt` (0-based): `min · 2^attempt`, capped at `max`,
/// then scaled by a jitter factor in `[0.75, 1.25)` drawn from `unit` in `[0, 1)` and capped again.
pub fn backoff_delay(backoff: &Backoff, attempt: u32, unit: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(30));
    let base = backoff.min.saturating_mul(factor).min(backoff.max);
    base.mul_f64(0.75 + 0.5 * unit.clamp(0.0, 1.0))
        .min(backoff.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(max: u32, secs: u64) -> RestartWindow {
        RestartWindow::new(Intensity {
            max_restarts: max,
            period: Duration::from_secs(secs),
        })
    }

    #[test]
    fn restarts_within_intensity_are_allowed_and_one_more_escalates() {
        let mut w = window(3, 60);
        let t = Instant::now();
        assert!(w.record(t));
        assert!(w.record(t + Duration::from_secs(1)));
        assert!(w.record(t + Duration::from_secs(2)));
        assert!(!w.record(t + Duration::from_secs(3)));
    }

    #[test]
    fn restarts_older_than_the_period_are_forgotten() {
        let mut w = window(2, 10);
        let t = Instant::now();
        assert!(w.record(t));
        assert!(w.record(t + Duration::from_secs(5)));
        assert!(w.record(t + Duration::from_secs(11)));
        assert!(w.record(t + Duration::from_secs(16)));
        assert!(!w.record(t + Duration::from_secs(17)));
    }

    #[test]
    fn zero_intensity_escalates_on_first_restart() {
        assert!(!window(0, 60).record(Instant::now()));
    }

    #[test]
    fn backoff_doubles_and_caps_with_bounded_jitter() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        assert_eq!(backoff_delay(&b, 0, 0.5), Duration::from_secs(1));
        assert_eq!(backoff_delay(&b, 3, 0.5), Duration::from_secs(8));
        assert_eq!(backoff_delay(&b, 20, 0.5), Duration::from_secs(300));
        assert_eq!(backoff_delay(&b, 40, 0.99), Duration::from_secs(300));
        assert_eq!(backoff_delay(&b, 2, 0.0), Duration::from_secs(3));
        assert!(backoff_delay(&b, 2, 0.999) < Duration::from_secs(5));
    }
}
