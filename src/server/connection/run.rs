//! Gathering a native consumer's stream records into runs (`deliver_run` frames): the
//! records of one `Deliver` batch whose storage frames lie one after another in the
//! same bytes (a segment's mapping, or the chunk they were appended in) go out as one
//! slice of those bytes behind one head, instead of a frame each.
//!
//! A run holds only what the queue handed over in the batch, which its consumer's
//! credit (prefetch and window, counted in records) bounded: a run never carries more
//! records than the prefetch allows. It ends at a record whose frame is not adjacent
//! to the one before (another segment or chunk, a record skipped by a timestamp
//! start), at a change of the redelivered flag, and at the byte bound.

use crate::broker::messages::Delivery;
use bytes::Bytes;
use std::ops::Range;

/// A run being gathered.
pub(super) struct Run {
    /// Most bytes of records in one run.
    max: usize,
    /// The bytes its records lie in, and where they are.
    records: Option<(Bytes, Range<usize>)>,
    first_tag: u64,
    count: u32,
    redelivered: bool,
    delivery_count: u32,
}

/// A finished run.
pub(super) struct Finished {
    /// The records' frames, one slice.
    pub records: Bytes,
    pub first_tag: u64,
    pub count: u32,
    pub redelivered: bool,
    pub delivery_count: u32,
}

impl Run {
    pub(super) fn new(max: usize) -> Self {
        Run {
            max,
            records: None,
            first_tag: 0,
            count: 0,
            redelivered: false,
            delivery_count: 0,
        }
    }

    /// Adds delivery `d` (delivery tag `tag`) to the run when it is a record with its
    /// storage frame at hand that extends the run (or starts it, the run being empty).
    /// Answers false, the run left as it was, otherwise: the caller then writes the run
    /// ([`Self::finish`]) and tries again, and a record still refused goes out as a
    /// `deliver` frame of its own.
    pub(super) fn take(&mut self, d: &Delivery, tag: u64) -> bool {
        let Some((whole, frame)) = d.stored.as_deref().and_then(|s| s.frame_in()) else {
            return false;
        };
        if frame.len() > self.max {
            return false;
        }
        if let Some((bytes, range)) = &mut self.records {
            let extends = range.end == frame.start
                && same(bytes, whole)
                && self.redelivered == d.redelivered
                && self.delivery_count == d.delivery_count
                && self.first_tag + u64::from(self.count) == tag
                && frame.end - range.start <= self.max;
            if extends {
                range.end = frame.end;
                self.count += 1;
                return true;
            }
            return false;
        }
        self.records = Some((whole.clone(), frame));
        self.first_tag = tag;
        self.count = 1;
        self.redelivered = d.redelivered;
        self.delivery_count = d.delivery_count;
        true
    }

    /// The run gathered, if any; the run is empty afterwards.
    pub(super) fn finish(&mut self) -> Option<Finished> {
        let (bytes, range) = self.records.take()?;
        Some(Finished {
            records: bytes.slice(range),
            first_tag: self.first_tag,
            count: std::mem::take(&mut self.count),
            redelivered: self.redelivered,
            delivery_count: self.delivery_count,
        })
    }
}

/// The same bytes (not only equal ones): one mapping or chunk.
fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}
