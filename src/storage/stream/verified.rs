//! How much of each segment file has had its frames' checksums verified, so that a
//! frame is checked once, not on every read: recovery verifies every frame of the
//! files it opens, and the first read of a frame appended since (the active segment's
//! tail) verifies it. A segment's frames never change once written (appends only past
//! them; recovery cuts a torn tail before any reader exists), so a verified prefix stays
//! verified until retention removes the segment. Re-reads still check each frame's
//! length against the file, the offsets' sequence and the meta's structure; only the
//! CRC over the payload is skipped. The CRC was 4-6% of a replay's broker CPU.

use std::collections::HashMap;
use std::sync::Mutex;

/// Per segment (by its first offset), the length of its verified prefix in bytes.
#[derive(Debug, Default)]
pub struct Verified {
    upto: Mutex<HashMap<u64, usize>>,
}

impl Verified {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        self.upto.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes from the start of `segment` whose frames are verified.
    pub fn upto(&self, segment: u64) -> usize {
        self.lock().get(&segment).copied().unwrap_or(0)
    }

    /// The frames of `segment` in `from..to` were verified: the prefix grows when they
    /// join it (a run verified after a gap is not remembered; it is checked again).
    pub fn verified(&self, segment: u64, from: usize, to: usize) {
        let mut m = self.lock();
        let upto = m.entry(segment).or_insert(0);
        if from <= *upto && to > *upto {
            *upto = to;
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
    fn the_verified_prefix_grows_only_contiguously() {
        let v = Verified::default();
        assert_eq!(v.upto(0), 0);
        v.verified(0, 0, 100);
        v.verified(0, 200, 300);
        assert_eq!(v.upto(0), 100, "a run after a gap is not remembered");
        v.verified(0, 50, 250);
        assert_eq!(v.upto(0), 250);
        v.verified(0, 0, 10);
        assert_eq!(v.upto(0), 250, "never shrinks");
        v.verified(7, 0, 5);
        v.trim(7);
        assert_eq!((v.upto(0), v.upto(7)), (0, 5));
    }
}
