//! Heartbeat liveness of a Discord shard. serenity keeps the heartbeat to itself, but each
//! ACK makes its shard runner report a fresh latency to the shard manager; the actor reads
//! it a few times a second, so a changed latency is an ACK, and the gap between ACKs is the
//! heartbeat interval.

use std::time::{Duration, Instant};

/// How often the shard's heartbeat ACKs are checked.
pub const ACK_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Heartbeat intervals without an ACK after which the shard counts as dead.
pub const MISSED_ACKS: u32 = 3;

/// The shortest silence that counts as missed ACKs (whatever the interval).
pub const MIN_ACK_SILENCE: Duration = Duration::from_secs(5);

/// Heartbeat ACK progress, observed through serenity's shard manager: each ACK updates the
/// runner's latency, so a changed latency is an ACK.
#[derive(Default)]
pub struct AckProgress {
    latency: Option<Duration>,
    last_ack: Option<Instant>,
    /// The longest gap seen between two ACKs (≈ the heartbeat interval).
    spacing: Option<Duration>,
    /// Set while a read of the shard manager is in flight.
    pub checking: bool,
}

impl AckProgress {
    /// Records what the shard manager reports now; true when that is a new ACK.
    pub fn observe(&mut self, latency: Option<Duration>, now: Instant) -> bool {
        let acked = latency.is_some() && latency != self.latency;
        if acked {
            if let Some(last) = self.last_ack {
                let gap = now.duration_since(last);
                self.spacing = Some(self.spacing.map_or(gap, |s| s.max(gap)));
            }
            self.last_ack = Some(now);
        }
        self.latency = latency;
        acked
    }

    /// How long the shard has gone without an ACK, when that is longer than `intervals`
    /// heartbeat intervals (known once two ACKs were seen).
    pub fn silent_for(&self, intervals: f64, floor: Duration, now: Instant) -> Option<Duration> {
        let spacing = self.spacing?;
        let silence = now.duration_since(self.last_ack?);
        (silence > spacing.mul_f64(intervals).max(floor)).then_some(silence)
    }
}

#[cfg(test)]
mod tests {
    use super::AckProgress;
    use std::time::{Duration, Instant};

    #[test]
    fn a_changed_latency_is_an_ack_and_silence_is_measured_in_intervals() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut acks = AckProgress::default();
        acks.observe(Some(Duration::from_millis(3)), at(0));
        assert_eq!(
            acks.silent_for(1.5, Duration::ZERO, at(5000)),
            None,
            "one ACK gives no interval"
        );
        acks.observe(Some(Duration::from_millis(4)), at(1000));
        acks.observe(Some(Duration::from_millis(4)), at(1900));
        assert_eq!(acks.silent_for(1.5, Duration::ZERO, at(2200)), None);
        assert_eq!(
            acks.silent_for(1.5, Duration::ZERO, at(3000)),
            Some(Duration::from_millis(2000))
        );
        assert_eq!(acks.silent_for(3.0, Duration::from_secs(5), at(5000)), None);
        assert!(
            acks.silent_for(3.0, Duration::from_secs(5), at(6500))
                .is_some()
        );
    }
}
