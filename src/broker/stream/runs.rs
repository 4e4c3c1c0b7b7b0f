//! Gathering a consumer's records into runs as the stream hands them over: records
//! whose storage frames lie one after another in the same bytes (a segment's mapping,
//! or the chunk they were appended in) become one [`Delivery`] carrying those bytes
//! ([`RecordRun`]), with one span of delivery ids tracked unacked, instead of a
//! delivery and an unacked entry per record. The native connection writes it as one
//! `deliver_run` frame and its channel tracks it as one range of delivery tags, so
//! what a run costs the broker's bookkeeping does not grow with its records.
//!
//! Records read from the files come as ranges of the stream's shared blocks
//! ([`Span`]): a run takes as many of a span's records as its bounds allow in one step,
//! by their frames' positions; records of the tail cache are taken one by one.
//!
//! A run holds only what the consumer's credit (prefetch and window, counted in
//! records) lets the stream hand over in one pass: a prefetch of 7 gives runs of at
//! most 7. It ends at a record whose frame is not adjacent to the one before (another
//! segment or chunk, records skipped by a timestamp start), at a change of the
//! redelivered flag, and at the consumer's byte bound.

use super::reads::empty_message;
use super::unacked::Unacked;
use crate::broker::messages::{Delivery, RecordRun};
use crate::storage::stream::span::Span;
use crate::storage::stream::{RecordMessage, StreamRecord};
use bytes::Bytes;
use std::ops::Range;

/// A run being gathered.
pub(super) struct Gather {
    /// Most bytes of records in one run.
    max: usize,
    /// The bytes its records lie in, and where they are.
    records: Option<(Bytes, Range<usize>)>,
    /// The offset of its first record.
    first_offset: u64,
    /// Records in it.
    count: u32,
    /// Its records were delivered before (a group's new holder re-reading).
    redelivered: bool,
}

impl Gather {
    pub(super) fn new(max: usize) -> Self {
        Gather {
            max,
            records: None,
            first_offset: 0,
            count: 0,
            redelivered: false,
        }
    }

    /// Adds `record` (at `offset`) when it is stored with its frame at hand and extends
    /// the run (or starts it, the run being empty). Answers false, the run left as it
    /// was, otherwise: the caller then hands the run over ([`Self::finish`]) and tries
    /// again, and a record still refused goes as a delivery of its own.
    pub(super) fn take(&mut self, record: &StreamRecord, offset: u64, redelivered: bool) -> bool {
        let RecordMessage::Stored(s) = &record.message else {
            return false;
        };
        let Some((whole, frame)) = s.frame_in() else {
            return false;
        };
        if frame.len() > self.max {
            return false;
        }
        if let Some((bytes, range)) = &mut self.records {
            let extends = range.end == frame.start
                && same(bytes, whole)
                && self.first_offset + u64::from(self.count) == offset
                && self.redelivered == redelivered
                && self.count < u32::MAX
                && frame.end - range.start <= self.max;
            if extends {
                range.end = frame.end;
                self.count += 1;
            }
            return extends;
        }
        self.records = Some((whole.clone(), frame));
        self.first_offset = offset;
        self.count = 1;
        self.redelivered = redelivered;
        true
    }

    /// Adds as many as fit of the first `n` records of `span` (the first at `offset`)
    /// to the run, or starts it with them: the frames lie one after another in the
    /// span's mapping, so they are taken as one range, without touching the records.
    /// Answers how many were taken: none when they cannot extend the run (the caller
    /// then hands it over and tries again) or when the first frame alone is larger
    /// than a run may be (it goes as a delivery of its own).
    pub(super) fn take_span(
        &mut self,
        span: &Span,
        n: usize,
        offset: u64,
        redelivered: bool,
    ) -> usize {
        let (whole, start) = span.frames_at();
        let room = match &self.records {
            None => self.max,
            Some((bytes, range)) => {
                let extends = range.end == start
                    && same(bytes, whole)
                    && self.first_offset + u64::from(self.count) == offset
                    && self.redelivered == redelivered;
                if !extends {
                    return 0;
                }
                self.max.saturating_sub(range.len())
            }
        };
        let n = n.min((u32::MAX - self.count) as usize);
        let took = span.fitting(n, room);
        if took == 0 {
            return 0;
        }
        let frames = span.frames(took);
        match &mut self.records {
            Some((_, range)) => range.end = frames.end,
            None => {
                self.records = Some((whole.clone(), frames));
                self.first_offset = offset;
                self.redelivered = redelivered;
            }
        }
        self.count += took as u32;
        took
    }

    /// The run gathered as one delivery, if any, its ids taken from `next_delivery`
    /// and tracked in `unacked` as one span; the run is empty afterwards.
    pub(super) fn finish(
        &mut self,
        next_delivery: &mut u64,
        unacked: &mut Unacked,
    ) -> Option<Delivery> {
        let (bytes, range) = self.records.take()?;
        let count = std::mem::take(&mut self.count);
        let id = *next_delivery + 1;
        *next_delivery += u64::from(count);
        unacked.insert_run(id, self.first_offset, u64::from(count));
        Some(Delivery {
            id,
            redelivered: self.redelivered,
            delivery_count: 1 + u32::from(self.redelivered),
            message: empty_message(),
            stored: None,
            run: Some(Box::new(RecordRun {
                records: bytes.slice(range),
                count,
            })),
        })
    }
}

/// The same bytes (not only equal ones): one mapping or chunk.
fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}
