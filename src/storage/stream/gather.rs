//! When a stream's writer holds a group open for more appends before its fsync.
//!
//! On this machine's disk an fsync of 50 records takes about as long as one of 900
//! (its time is the device's flush, not the bytes), so the records per fsync set the
//! rate of a publisher bound by its confirms window. Such a publisher refills its
//! window only once a confirm comes, and not at once: its first messages come one by
//! one, the rest over a millisecond or two. A writer that was idle and fsyncs those
//! first arrivals alone spends a whole fsync on a handful of records while the rest of
//! the refill waits behind it. The groups then settle into one of nearly the whole
//! window and one of a few records: about three fsyncs per window instead of two, and
//! the writer idle between them (docs/BENCHMARKS.md, "spub6").
//!
//! So a group that begins with fewer than half the records of the group before it
//! stays open (its appends are written as they come) until it holds half, or for at
//! most about one fsync's time (what its records would have waited had an fsync been
//! under way when they came), capped at [`MAX_LINGER`]. Steady traffic makes groups of
//! about the same size, which never wait; nor does a publisher of one record at a
//! time, whose groups are all of one. A confirm still follows the fsync of its record
//! and of every record before it; only when that fsync starts moves.

use std::time::Duration;

/// The longest a group stays open for more appends, whatever the fsyncs take.
pub const MAX_LINGER: Duration = Duration::from_millis(2);

/// The writer's memory of its last groups, from which it decides how long a new one
/// may wait for more appends.
#[derive(Debug, Clone, Default)]
pub struct Gather {
    /// Records in the last group fsynced.
    last_records: u64,
    /// A moving average of the fsync's time (a quarter of each new one).
    sync_time: Duration,
    /// Set by tests: the linger, whatever the fsyncs take.
    fixed: Option<Duration>,
}

impl Gather {
    /// A policy whose linger is always `linger` (for tests that must not race a
    /// measured fsync time).
    #[cfg(test)]
    pub fn fixed(linger: Duration) -> Self {
        Gather {
            fixed: Some(linger),
            ..Gather::default()
        }
    }

    /// How long a group that begins with `records` may stay open for more appends;
    /// `None` when it is fsynced at once.
    pub fn linger(&self, records: u64) -> Option<Duration> {
        if !self.wants_more(records) {
            return None;
        }
        let linger = self.fixed.unwrap_or(self.sync_time.min(MAX_LINGER));
        (!linger.is_zero()).then_some(linger)
    }

    /// Whether an open group of `records` still waits for more: it holds fewer than
    /// half the records of the group before it.
    pub fn wants_more(&self, records: u64) -> bool {
        records.saturating_mul(2) < self.last_records
    }

    /// Takes note of a group fsynced: its records, and how long its fsync took.
    pub fn finished(&mut self, records: u64, sync: Duration) {
        self.last_records = records;
        self.sync_time = if self.sync_time.is_zero() {
            sync
        } else {
            (self.sync_time * 3 + sync) / 4
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(records: u64, sync_ms: u64) -> Gather {
        let mut g = Gather::default();
        g.finished(records, Duration::from_millis(sync_ms));
        g
    }

    #[test]
    fn a_small_group_lingers_for_about_one_fsync() {
        let g = after(900, 1);
        assert_eq!(g.linger(40), Some(Duration::from_millis(1)));
        assert!(g.wants_more(449));
        assert!(!g.wants_more(450), "half the last group is enough");
    }

    #[test]
    fn the_linger_is_capped_however_slow_the_fsyncs() {
        let g = after(900, 30);
        assert_eq!(g.linger(1), Some(MAX_LINGER));
    }

    #[test]
    fn no_linger_when_the_group_is_large_enough() {
        let g = after(900, 1);
        assert_eq!(g.linger(450), None);
        assert_eq!(g.linger(2_000), None);
        // The first group, and a publisher of one record at a time.
        assert_eq!(Gather::default().linger(1), None);
        assert_eq!(after(1, 1).linger(1), None);
    }

    #[test]
    fn the_fsync_time_is_a_moving_average() {
        let mut g = after(900, 4);
        g.finished(900, Duration::ZERO);
        assert_eq!(g.linger(1), Some(MAX_LINGER), "3 ms after one fast fsync");
        for _ in 0..20 {
            g.finished(900, Duration::from_micros(100));
        }
        let l = g.linger(1).expect("lingers");
        assert!(l < Duration::from_micros(200), "{l:?}");
    }
}
