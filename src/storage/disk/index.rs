//! The writer's index: which segment holds which live message, and when a segment may
//! be deleted. Pure bookkeeping over `Replay`, no I/O.
//!
//! Reclamation rule. A segment may be deleted when it is not the active one, holds no
//! live message, and every older segment whose messages its tombstones (acks, purges,
//! deletes) removed is already gone. The last condition matters: deleting a segment
//! whose ack still covers a message in an older, surviving segment would bring that
//! message back at the next recovery. Watermarks and next ids need no such care: each
//! new segment starts with a mark of every queue.
//!
//! Compaction. One long-lived message would pin its segment, and through acks that
//! cross segment boundaries every later segment too. So a segment whose live messages
//! are few (at most a quarter of those it received) is compacted: the writer copies its
//! live records, frame for frame, to the active segment (a later copy of an id replaces
//! the earlier one at replay) and the segment becomes dead. Copying at most a quarter
//! of what it frees keeps the cost bounded.

use super::codec::Entry;
use crate::storage::record::{QueueId, Record};
use crate::storage::replay::Replay;
use std::collections::{BTreeMap, BTreeSet};

/// Where a stored frame is: its segment and its byte offset in the segment file
/// (page-in reads it back from there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// The segment's sequence number.
    pub seg: u64,
    /// The offset of the frame's length field.
    pub off: u64,
    /// For a publish, the message's accounted size (its body length, as length limits
    /// count it), known before the body is read back; 0 for other records.
    pub size: u32,
}

impl Loc {
    /// The location `seg`:`off` of `record`.
    pub fn of(record: &Record, seg: u64, off: u64) -> Loc {
        let size = match record {
            Record::Publish { message, .. } => {
                u32::try_from(message.body.len()).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        Loc { seg, off, size }
    }
}

/// What the index knows of one segment.
#[derive(Debug, Default, Clone)]
struct SegmentStats {
    /// Live messages stored in it.
    live: u64,
    /// Publish records it holds, live or not (for the compaction ratio).
    published: u64,
    /// Older segments holding messages that records of this one removed.
    deps: BTreeSet<u64>,
}

/// Live messages by segment, plus the replayed queue state.
#[derive(Debug, Default)]
pub struct Index {
    /// Per queue: live ids and where they are stored, watermark, next id.
    replay: Replay<Loc>,
    /// Every segment on disk, by sequence number.
    segments: BTreeMap<u64, SegmentStats>,
}

impl Index {
    /// Registers a segment (at open, or when the log rolls to it).
    pub fn add_segment(&mut self, seq: u64) {
        self.segments.entry(seq).or_default();
    }

    /// Applies an entry stored at `loc`.
    pub fn apply(&mut self, entry: &Entry, loc: Loc) {
        match entry {
            Entry::Mark {
                queue,
                next_id,
                delivered,
            } => self.replay.mark(queue, *next_id, *delivered),
            Entry::Record(record) => self.apply_record(record, loc),
        }
    }

    /// Applies a record stored at `loc`.
    pub fn apply_record(&mut self, record: &Record, loc: Loc) {
        let seq = loc.seg;
        let mut killed = Vec::new();
        self.replay
            .apply(record, loc, None, &mut |l: Loc| killed.push(l.seg));
        if matches!(record, Record::Publish { .. }) {
            let s = self.segments.entry(seq).or_default();
            s.live += 1;
            s.published += 1;
        }
        for loc in killed {
            if let Some(s) = self.segments.get_mut(&loc) {
                s.live = s.live.saturating_sub(1);
            }
            if loc != seq {
                self.segments.entry(seq).or_default().deps.insert(loc);
            }
        }
    }

    /// Segments that may be deleted now (see the module docs), oldest first.
    pub fn reclaimable(&self, active: u64) -> Vec<u64> {
        self.segments
            .iter()
            .filter(|(seq, s)| {
                **seq != active
                    && s.live == 0
                    && s.deps.iter().all(|d| !self.segments.contains_key(d))
            })
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// The oldest segment worth compacting (see the module docs), if any.
    pub fn compactable(&self, active: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(seq, s)| **seq != active && s.live > 0 && s.live * 4 <= s.published)
            .map(|(seq, _)| *seq)
    }

    /// True when message `id` of `queue` is live and stored in segment `seq`.
    pub fn is_live_at(&self, queue: &QueueId, id: u64, seq: u64) -> bool {
        self.location(queue, id).is_some_and(|l| l.seg == seq)
    }

    /// Where the live message `id` of `queue` is stored.
    pub fn location(&self, queue: &QueueId, id: u64) -> Option<Loc> {
        self.replay.location(queue, id)
    }

    /// Forgets a deleted segment.
    pub fn remove_segment(&mut self, seq: u64) {
        self.segments.remove(&seq);
    }

    /// The segments known, in order.
    pub fn segments(&self) -> Vec<u64> {
        self.segments.keys().copied().collect()
    }

    /// Live messages in segment `seq`.
    pub fn live_in(&self, seq: u64) -> u64 {
        self.segments.get(&seq).map_or(0, |s| s.live)
    }

    /// Every queue's (next id, watermark), for the marks of a new segment.
    pub fn marks(&self) -> Vec<(QueueId, u64, u64)> {
        self.replay.marks()
    }

    /// Every queue's delivery counts of live messages, for the start of a new segment.
    pub fn counts(&self) -> Vec<(QueueId, Vec<(u64, u32)>)> {
        self.replay.counts()
    }

    /// How many times message `id` of `queue` may have been delivered.
    pub fn deliveries(&self, queue: &QueueId, id: u64) -> u32 {
        self.replay.deliveries(queue, id)
    }

    /// Every queue's live messages with their locations, watermark and next id.
    pub fn queues(&self) -> impl Iterator<Item = (&QueueId, Vec<(u64, Loc)>, u64, u64)> + '_ {
        self.replay.queues()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use std::sync::Arc;

    fn q() -> QueueId {
        QueueId::new("/", "q")
    }

    fn publish(ix: &mut Index, id: u64, seg: u64) {
        let m = Arc::new(Message::new("", "q", "x"));
        ix.apply_record(
            &Record::Publish {
                queue: q(),
                id,
                message: m,
            },
            Loc {
                seg,
                off: 0,
                size: 0,
            },
        );
    }

    fn ack(ix: &mut Index, ids: &[u64], seg: u64) {
        ix.apply_record(
            &Record::Ack {
                queue: q(),
                ids: ids.to_vec(),
            },
            Loc {
                seg,
                off: 0,
                size: 0,
            },
        );
    }

    #[test]
    fn a_segment_with_acks_for_an_older_surviving_segment_is_kept() {
        let mut ix = Index::default();
        for s in 1..=3 {
            ix.add_segment(s);
        }
        publish(&mut ix, 1, 1);
        publish(&mut ix, 2, 1);
        publish(&mut ix, 3, 2);
        ack(&mut ix, &[1, 3], 2);
        // Segment 2 has no live message, but its ack of id 1 must outlive segment 1,
        // which still holds id 2.
        assert_eq!(ix.reclaimable(3), Vec::<u64>::new());
        ack(&mut ix, &[2], 3);
        assert_eq!(ix.reclaimable(3), vec![1]);
        ix.remove_segment(1);
        assert_eq!(ix.reclaimable(3), vec![2]);
        ix.remove_segment(2);
        assert!(ix.reclaimable(3).is_empty(), "the active segment stays");
    }

    #[test]
    fn a_segment_with_few_live_messages_is_compactable() {
        let mut ix = Index::default();
        ix.add_segment(1);
        ix.add_segment(2);
        for id in 1..=8 {
            publish(&mut ix, id, 1);
        }
        ack(&mut ix, &[1, 2, 3, 4, 5], 1);
        assert_eq!(ix.compactable(2), None, "3 of 8 live");
        ack(&mut ix, &[6], 1);
        assert_eq!(ix.compactable(2), Some(1), "2 of 8 live");
        assert!(ix.is_live_at(&q(), 7, 1));
        // The copy to the active segment moves it.
        publish(&mut ix, 7, 2);
        publish(&mut ix, 8, 2);
        assert!(!ix.is_live_at(&q(), 7, 1));
        assert_eq!(ix.live_in(1), 0);
        assert_eq!(ix.reclaimable(2), vec![1]);
    }

    #[test]
    fn acks_within_one_segment_free_it_alone() {
        let mut ix = Index::default();
        ix.add_segment(1);
        ix.add_segment(2);
        publish(&mut ix, 1, 1);
        ack(&mut ix, &[1], 1);
        assert_eq!(ix.live_in(1), 0);
        assert_eq!(ix.reclaimable(2), vec![1]);
    }
}
