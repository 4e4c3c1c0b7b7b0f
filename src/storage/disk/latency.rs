//! fdatasync latencies of the message log: a histogram with fixed buckets, kept in
//! relaxed atomics by the writer thread (one `fetch_add` pair per fsync, next to a
//! system call that takes far longer) and read by `/metrics` when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (100 µs to 1 s); slower ones fall in
/// the last, unbounded bucket.
pub const BOUNDS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Counts per bucket and the sum of every latency.
#[derive(Debug, Default)]
pub struct SyncLatency {
    /// Per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl SyncLatency {
    /// Records one fsync that took `took`.
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_MICROS
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BOUNDS_MICROS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
    }

    /// A reading, with `syncs` the store's count of fsyncs.
    pub fn snapshot(&self, syncs: u64) -> SyncStats {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BOUNDS_MICROS.len());
        for (b, bound) in self.buckets.iter().zip(BOUNDS_MICROS) {
            cumulative += b.load(Ordering::Relaxed);
            buckets.push((bound as f64 / 1e6, cumulative));
        }
        let count = cumulative + self.buckets[BOUNDS_MICROS.len()].load(Ordering::Relaxed);
        SyncStats {
            syncs,
            buckets,
            count,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// What the message log's fsyncs cost so far (see [`crate::storage::MessageStore::sync_stats`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncStats {
    /// fdatasync calls on segments (group commits and rolls).
    pub syncs: u64,
    /// Cumulative counts at each bound (seconds), Prometheus' `le` buckets without +Inf.
    pub buckets: Vec<(f64, u64)>,
    /// Latencies recorded (the +Inf bucket).
    pub count: u64,
    /// Sum of the latencies, in seconds.
    pub sum_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_cumulative_buckets() {
        let h = SyncLatency::default();
        h.record(Duration::from_micros(80));
        h.record(Duration::from_micros(700));
        h.record(Duration::from_secs(3));
        let s = h.snapshot(3);
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[2], (0.0005, 1));
        assert_eq!(s.buckets[3], (0.001, 2));
        assert_eq!(s.buckets.last().unwrap().1, 2, "3 s is above every bound");
        assert!((s.sum_seconds - 3.00078).abs() < 1e-9);
    }
}
