//! Which bytes of each segment file have had their frames' checksums verified, so that a
//! frame is checked once, not on every read: recovery verifies every frame of the
//! segments it scans (not those of sealed segments it trusts by their index files,
//! [`super::index_file`]), and the first read of any other frame verifies it (a sealed
//! segment's after a restart, the active segment's tail since). A segment's frames never
//! change once written (appends only past them; recovery cuts a torn tail before any
//! reader exists), so verified bytes stay verified until retention removes the segment.
//! Re-reads still check each frame's length against the file, the offsets' sequence and
//! the meta's structure; only the CRC over the payload is skipped. The CRC was 4-6% of a
//! replay's broker CPU.
//!
//! Kept as runs of bytes per segment, merged when they touch: a reader that starts in
//! the middle of a trusted segment (at a sparse index entry) verifies a run that does
//! not start at 0, and another reader's run joins it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Runs kept per segment at most; past it the shortest is forgotten (its frames are
/// checked again when read). Readers' runs merge as they read on, so few are ever held.
const MAX_RUNS: usize = 32;

/// Per segment (by its first offset), its verified byte runs: sorted, disjoint, not
/// touching.
#[derive(Debug, Default)]
pub struct Verified {
    runs: Mutex<HashMap<u64, Vec<(usize, usize)>>>,
}

impl Verified {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<(usize, usize)>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the verified bytes of `segment` from `pos` on end: `pos` itself when the
    /// byte at `pos` is not verified.
    pub fn through(&self, segment: u64, pos: usize) -> usize {
        self.lock()
            .get(&segment)
            .and_then(|runs| runs.iter().find(|(a, b)| *a <= pos && pos < *b))
            .map_or(pos, |r| r.1)
    }

    /// The frames of `segment` in `from..to` were verified: the run joins those it
    /// overlaps or touches.
    pub fn verified(&self, segment: u64, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let mut m = self.lock();
        let runs = m.entry(segment).or_default();
        let (mut a, mut b) = (from, to);
        runs.retain(|&(x, y)| {
            let joins = x <= b && y >= a;
            if joins {
                a = a.min(x);
                b = b.max(y);
            }
            !joins
        });
        let at = runs.partition_point(|r| r.0 < a);
        runs.insert(at, (a, b));
        if runs.len() > MAX_RUNS {
            let shortest = (0..runs.len())
                .min_by_key(|&i| runs[i].1 - runs[i].0)
                .expect("not empty");
            runs.remove(shortest);
        }
    }

    /// Forgets the segments before `first` (retention removed them).
    pub fn trim(&self, first: u64) {
        self.lock().retain(|s, _| *s >= first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_runs_merge_when_they_touch() {
        let v = Verified::default();
        assert_eq!(v.through(0, 0), 0);
        v.verified(0, 0, 100);
        v.verified(0, 200, 300);
        assert_eq!(v.through(0, 0), 100);
        assert_eq!(v.through(0, 150), 150, "not verified");
        assert_eq!(v.through(0, 250), 300, "a run after a gap is kept");
        v.verified(0, 100, 200);
        assert_eq!(v.through(0, 50), 300, "joined");
        v.verified(0, 0, 10);
        assert_eq!(v.through(0, 0), 300, "never shrinks");
        v.verified(7, 0, 5);
        v.trim(7);
        assert_eq!((v.through(0, 0), v.through(7, 0)), (0, 5));
    }

    #[test]
    fn the_shortest_run_goes_past_the_bound() {
        let v = Verified::default();
        for i in 0..MAX_RUNS {
            v.verified(0, i * 100, i * 100 + 50);
        }
        v.verified(0, 10_000, 10_001);
        assert_eq!(v.through(0, 10_000), 10_000, "the shortest was forgotten");
        assert_eq!(v.through(0, 0), 50);
        assert_eq!(v.lock()[&0].len(), MAX_RUNS);
    }
}
