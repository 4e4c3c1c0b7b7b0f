//! A stream consumer's unacknowledged deliveries, kept as spans: a span is consecutive
//! delivery ids given to consecutive offsets, so a run handed over as one item
//! ([`crate::broker::messages::RecordRun`]) costs one entry however many records it
//! holds, and an ack of a run's prefix (a `multiple` ack) shortens the span at the
//! front. Ids only grow, so a delivery is appended at the back, and acks mostly come in
//! order, so they leave from the front: a ring buffer where a `BTreeMap` spent ~4% of a
//! replay's broker CPU on its nodes. An ack inside a span splits it in two (at most one
//! more entry per ack, and never more entries than records).

use std::collections::VecDeque;

/// Deliveries `id .. id + count` of offsets `offset .. offset + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    id: u64,
    offset: u64,
    count: u64,
}

impl Span {
    fn end(&self) -> u64 {
        self.id + self.count
    }
}

/// What [`Unacked::remove_run`] took out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Removed {
    /// How many of the ids asked for were held.
    pub count: u64,
    /// The highest offset among them.
    pub last_offset: Option<u64>,
}

/// Unacked deliveries of one consumer, by increasing delivery id.
#[derive(Debug, Default)]
pub(super) struct Unacked {
    spans: VecDeque<Span>,
    /// Deliveries held (the sum of the spans' counts): the consumer's prefetch counts
    /// records, not spans.
    len: usize,
}

impl Unacked {
    /// Notes delivery `id` of `offset`.
    #[cfg(test)]
    pub(super) fn insert(&mut self, id: u64, offset: u64) {
        self.insert_run(id, offset, 1);
    }

    /// Notes deliveries `id .. id + count` of offsets `offset .. offset + count`.
    pub(super) fn insert_run(&mut self, id: u64, offset: u64, count: u64) {
        debug_assert!(count > 0);
        debug_assert!(self.spans.back().is_none_or(|s| s.end() <= id), "ids grow");
        self.len += count as usize;
        self.spans.push_back(Span { id, offset, count });
    }

    /// Takes delivery `id` out; answers its offset.
    #[cfg(test)]
    pub(super) fn remove(&mut self, id: u64) -> Option<u64> {
        self.remove_run(id, 1).last_offset
    }

    /// Takes deliveries `id .. id + count` out, those held (the others are not this
    /// consumer's, or were settled before).
    pub(super) fn remove_run(&mut self, id: u64, count: u64) -> Removed {
        let end = id.saturating_add(count);
        let mut removed = Removed::default();
        let mut i = self.spans.partition_point(|s| s.end() <= id);
        while let Some(s) = self.spans.get(i).copied() {
            if s.id >= end {
                break;
            }
            let (lo, hi) = (s.id.max(id), s.end().min(end));
            removed.count += hi - lo;
            removed.last_offset = Some(s.offset + (hi - 1 - s.id));
            let right = Span {
                id: hi,
                offset: s.offset + (hi - s.id),
                count: s.end() - hi,
            };
            match (lo > s.id, right.count > 0) {
                (false, false) => {
                    self.spans.remove(i);
                }
                (false, true) => {
                    self.spans[i] = right;
                    i += 1;
                }
                (true, false) => {
                    self.spans[i].count = lo - s.id;
                    i += 1;
                }
                (true, true) => {
                    self.spans[i].count = lo - s.id;
                    self.spans.insert(i + 1, right);
                    i += 2;
                }
            }
        }
        self.len -= removed.count as usize;
        removed
    }

    /// How many deliveries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The lowest offset held.
    pub(super) fn min_offset(&self) -> Option<u64> {
        self.spans.iter().map(|s| s.offset).min()
    }

    /// Spans held (entries, not records).
    #[cfg(test)]
    fn spans(&self) -> usize {
        self.spans.len()
    }
}

impl IntoIterator for Unacked {
    type Item = (u64, u64);
    type IntoIter = Box<dyn Iterator<Item = (u64, u64)>>;

    /// Every delivery as (id, offset), by id.
    fn into_iter(self) -> Self::IntoIter {
        Box::new(
            self.spans
                .into_iter()
                .flat_map(|s| (0..s.count).map(move |k| (s.id + k, s.offset + k))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_in_any_order_find_their_delivery() {
        let mut u = Unacked::default();
        for (id, offset) in [(3, 30), (5, 50), (9, 10), (12, 11)] {
            u.insert(id, offset);
        }
        assert_eq!(u.min_offset(), Some(10));
        assert_eq!(u.remove(5), Some(50), "out of order");
        assert_eq!(u.remove(5), None, "once");
        assert_eq!(u.remove(3), Some(30), "the front");
        assert_eq!(u.remove(4), None);
        u.insert(17, 70);
        assert_eq!(u.len(), 3);
        assert_eq!(
            u.into_iter().collect::<Vec<_>>(),
            vec![(9, 10), (12, 11), (17, 70)]
        );
    }

    #[test]
    fn a_single_ack_inside_a_run_splits_it() {
        let mut u = Unacked::default();
        u.insert_run(10, 100, 7); // ids 10..=16, offsets 100..=106
        assert_eq!(u.remove(13), Some(103));
        assert_eq!((u.len(), u.spans()), (6, 2));
        assert_eq!(u.remove(13), None, "once");
        assert_eq!(u.remove(10), Some(100), "the run's first");
        assert_eq!(u.remove(16), Some(106), "the run's last");
        assert_eq!(
            u.into_iter().collect::<Vec<_>>(),
            vec![(11, 101), (12, 102), (14, 104), (15, 105)]
        );
    }

    #[test]
    fn a_range_across_runs_takes_what_is_held() {
        let mut u = Unacked::default();
        u.insert_run(1, 0, 5); // 1..=5
        u.insert_run(6, 5, 5); // 6..=10
        u.insert_run(20, 40, 3); // 20..=22 (another consumer had 11..=19)
        assert_eq!(u.remove(3), Some(2));
        // 1..=8: 3 is gone, 1, 2, 4, 5, 6, 7, 8 are taken; 9, 10 stay.
        assert_eq!(
            u.remove_run(1, 8),
            Removed {
                count: 7,
                last_offset: Some(7)
            }
        );
        assert_eq!((u.len(), u.spans()), (5, 2));
        assert_eq!(u.min_offset(), Some(8));
        // 9..=21 across the gap of ids this consumer never had.
        assert_eq!(
            u.remove_run(9, 13),
            Removed {
                count: 4,
                last_offset: Some(41)
            }
        );
        assert_eq!(u.into_iter().collect::<Vec<_>>(), vec![(22, 42)]);
    }

    #[test]
    fn ids_not_held_remove_nothing() {
        let mut u = Unacked::default();
        u.insert_run(5, 50, 2);
        assert_eq!(u.remove_run(1, 4), Removed::default(), "before");
        assert_eq!(u.remove_run(7, 100), Removed::default(), "after");
        assert_eq!(u.remove_run(u64::MAX, 5), Removed::default(), "no overflow");
        assert_eq!(u.len(), 2);
        assert_eq!(u.remove_run(4, 2).count, 1, "overlapping the front");
        assert_eq!(u.min_offset(), Some(51));
    }
}
