//! A reader's records as ranges of the stream's shared blocks ([`super::cache`]): a read
//! hands a consumer the consecutive records it found in each block as one [`Span`] (the
//! block, and which of its records), not a record each. Four consumers replaying the
//! same part of a stream then share the block's records without each taking, queueing
//! and dropping a handle per record, and the stream cuts a run (`deliver_run`) out of
//! a span by its frames' file positions, without touching the records in between.
//!
//! A block's records are frames laid one after another in one mapping of their segment
//! (the block keeps each frame's position), so the frames of any records `a..b` of a
//! span are the one slice `positions[a]..positions[b]` of that mapping.

use super::cache::Block;
use super::codec;
use super::StreamRecord;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;

/// Records `from..to` of a shared block, in offset order, with the bytes they are
/// accounted for in a consumer's read-ahead.
#[derive(Debug, Clone)]
pub struct Span {
    block: Arc<Block>,
    from: usize,
    to: usize,
    /// Accounted bytes of the records left: what each record is accounted for as read
    /// (stored), plus the messages decoded for this reader.
    bytes: u64,
}

impl Span {
    /// Records `from..to` of `block`, accounted as stored plus `decoded` bytes of
    /// messages decoded for the reader. Empty ranges and ranges past the block are
    /// refused (`None`).
    pub fn new(block: Arc<Block>, from: usize, to: usize, decoded: u64) -> Option<Self> {
        if from >= to || to > block.records.len() {
            return None;
        }
        let bytes = stored_bytes(&block, from, to) + decoded;
        Some(Span {
            block,
            from,
            to,
            bytes,
        })
    }

    /// The offset of its first record.
    pub fn first(&self) -> u64 {
        self.block.start + self.from as u64
    }

    /// Records in it.
    pub fn len(&self) -> usize {
        self.to - self.from
    }

    /// Never true: a span that loses its last record is dropped by its holder
    /// ([`Self::advance`] answers what it was accounted for).
    pub fn is_empty(&self) -> bool {
        self.from == self.to
    }

    /// Accounted bytes of the records left.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Its `i`th record (0 is the first).
    pub fn record(&self, i: usize) -> &StreamRecord {
        &self.block.records[self.from + i]
    }

    /// Its records, in order.
    pub fn records(&self) -> &[StreamRecord] {
        &self.block.records[self.from..self.to]
    }

    /// The mapping its frames lie in, and where its first frame starts there.
    pub fn frames_at(&self) -> (&Bytes, usize) {
        (&self.block.map, self.block.positions[self.from])
    }

    /// Where the frames of its first `n` records lie in [`Self::frames_at`]'s mapping.
    pub fn frames(&self, n: usize) -> Range<usize> {
        let p = &self.block.positions;
        p[self.from]..p[self.from + n.min(self.len())]
    }

    /// How many of its first `n` records have their frames within `room` bytes (0 when
    /// the first frame alone is larger).
    pub fn fitting(&self, n: usize, room: usize) -> usize {
        let p = &self.block.positions;
        let start = p[self.from];
        let ends = &p[self.from + 1..=self.from + n.min(self.len())];
        ends.partition_point(|&end| end - start <= room)
    }

    /// How many of its first `n` records start within `bytes` bytes of frames (a read
    /// takes records until the bytes it took reach its bound), at least one.
    pub fn starting_within(&self, n: usize, bytes: usize) -> usize {
        let p = &self.block.positions;
        let start = p[self.from];
        let starts = &p[self.from..self.from + n.min(self.len())];
        starts.partition_point(|&s| s - start < bytes).max(1)
    }

    /// Drops its first `n` records (taken by a delivery); answers the bytes they were
    /// accounted for (all that is left once it is empty, so the holder's count comes
    /// back to what it was).
    pub fn advance(&mut self, n: usize) -> u64 {
        let n = n.min(self.len());
        let left = self.len() - n;
        let taken = if left == 0 {
            self.bytes
        } else {
            self.bytes
                .min(stored_bytes(&self.block, self.from, self.from + n) + self.decoded_share(n))
        };
        self.from += n;
        self.bytes -= taken;
        taken
    }

    /// The part of the decoded messages' bytes that `n` of its records carry
    /// (proportionally: a reader decodes every record of its span).
    fn decoded_share(&self, n: usize) -> u64 {
        let stored = stored_bytes(&self.block, self.from, self.to);
        let decoded = self.bytes.saturating_sub(stored);
        decoded * n as u64 / self.len() as u64
    }
}

/// What records `from..to` of `block` are accounted for as read (stored): the sum of
/// their [`StreamRecord::size`], worked out from their frames' positions.
fn stored_bytes(block: &Block, from: usize, to: usize) -> u64 {
    let frames = (block.positions[to] - block.positions[from]) as u64;
    let n = (to - from) as u64;
    frames - n * codec::FIELDS_IN_FRAME as u64 + n * super::record::STORED_OVERHEAD
}

#[cfg(test)]
mod tests;
