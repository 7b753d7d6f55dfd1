//! Liveness as progress: a child bumps a shared heartbeat counter from its own context, and
//! marks legitimate long work (opening the store, an atomic write) as busy. The supervisor
//! reads both without messaging the child, so a check never waits behind real work in the
//! mailbox, and a slow disk is not taken for a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context};

/// How often a child that does not say otherwise beats.
pub const DEFAULT_BEAT_EVERY: Duration = Duration::from_millis(250);

/// While a child is busy with declared legitimate work, a stall is tolerated this many
/// times longer than the hang timeout before it counts as a hang.
pub const BUSY_LEASH: u32 = 12;

#[derive(Debug)]
struct Counters {
    beats: AtomicU64,
    busy: AtomicUsize,
    beat_every: Duration,
}

/// Shared between a child and its supervisor (cheap to clone).
#[derive(Clone, Debug)]
pub struct Liveness(Arc<Counters>);

impl Default for Liveness {
    fn default() -> Self {
        Self::new(DEFAULT_BEAT_EVERY)
    }
}

impl Liveness {
    /// Counters for a child that beats every `beat_every`.
    pub fn new(beat_every: Duration) -> Self {
        Self(Arc::new(Counters {
            beats: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            beat_every: beat_every.max(Duration::from_millis(1)),
        }))
    }

    /// Records progress (the child's context ran).
    pub fn beat(&self) {
        self.0.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Beats now and then every beat period from the actor's own context: the beats stop
    /// when the context stops running (a handler that never returns, a blocked thread).
    pub fn attach<A>(&self, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        self.beat();
        let me = self.clone();
        ctx.run_interval(self.0.beat_every, move |_, _| me.beat());
    }

    /// Marks legitimate long work in flight until the returned guard drops.
    pub fn busy(&self) -> BusyGuard {
        self.0.busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }

    /// Beats so far.
    pub fn beats(&self) -> u64 {
        self.0.beats.load(Ordering::Relaxed)
    }

    /// Whether declared long work is in flight.
    pub fn is_busy(&self) -> bool {
        self.0.busy.load(Ordering::Relaxed) > 0
    }

    /// The beat period.
    pub fn beat_every(&self) -> Duration {
        self.0.beat_every
    }
}

/// Declared long work in flight; dropping it ends the work (and counts as progress).
#[derive(Debug)]
pub struct BusyGuard(Liveness);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let _ = self
            .0
            .0
            .busy
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.0.beat();
    }
}

/// The supervisor's view of one child's progress: when the counter last moved.
#[derive(Debug)]
pub struct ProgressWatch {
    liveness: Liveness,
    last_beats: u64,
    last_progress: Instant,
}

impl ProgressWatch {
    /// Starts watching at `now`.
    pub fn new(liveness: Liveness, now: Instant) -> Self {
        Self {
            last_beats: liveness.beats(),
            liveness,
            last_progress: now,
        }
    }

    /// The counters watched.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Whether the child made no progress for longer than it may: `hang_timeout` (at
    /// least three beat periods), or [`BUSY_LEASH`] times that while it is busy.
    pub fn stalled(&mut self, now: Instant, hang_timeout: Duration) -> Option<Duration> {
        let beats = self.liveness.beats();
        if beats != self.last_beats {
            self.last_beats = beats;
            self.last_progress = now;
            return None;
        }
        let mut allowed = hang_timeout.max(self.liveness.beat_every() * 3);
        if self.liveness.is_busy() {
            allowed *= BUSY_LEASH;
        }
        let stalled = now.saturating_duration_since(self.last_progress);
        (stalled > allowed).then_some(stalled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_beats_is_never_stalled() {
        let l = Liveness::new(Duration::from_millis(10));
        let t = Instant::now();
        let mut w = ProgressWatch::new(l.clone(), t);
        for i in 1..10 {
            l.beat();
            assert_eq!(
                w.stalled(t + Duration::from_secs(i), Duration::from_secs(1)),
                None
            );
        }
    }

    #[test]
    fn silence_past_the_hang_timeout_is_a_stall() {
        let l = Liveness::new(Duration::from_millis(10));
        let t = Instant::now();
        let mut w = ProgressWatch::new(l, t);
        let timeout = Duration::from_secs(1);
        assert_eq!(w.stalled(t + Duration::from_millis(900), timeout), None);
        assert!(
            w.stalled(t + Duration::from_millis(1100), timeout)
                .is_some()
        );
    }

    #[test]
    fn busy_work_gets_a_longer_leash_and_ending_it_counts_as_progress() {
        let l = Liveness::new(Duration::from_millis(10));
        let t = Instant::now();
        let mut w = ProgressWatch::new(l.clone(), t);
        let timeout = Duration::from_secs(1);
        let busy = l.busy();
        assert_eq!(w.stalled(t + Duration::from_secs(5), timeout), None);
        assert!(w.stalled(t + Duration::from_secs(13), timeout).is_some());
        drop(busy);
        assert!(!l.is_busy());
        assert_eq!(w.stalled(t + Duration::from_secs(14), timeout), None);
    }

    #[test]
    fn slow_beaters_get_at_least_three_beat_periods() {
        let l = Liveness::new(Duration::from_secs(1));
        let t = Instant::now();
        let mut w = ProgressWatch::new(l, t);
        let timeout = Duration::from_millis(300);
        assert_eq!(w.stalled(t + Duration::from_millis(2900), timeout), None);
        assert!(
            w.stalled(t + Duration::from_millis(3100), timeout)
                .is_some()
        );
    }
}
