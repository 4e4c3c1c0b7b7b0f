//! A channel's bookkeeping, pure and unit-tested: delivery tags of unacked deliveries
//! and the publish confirms still outstanding.

use crate::broker::queue::QueueHandle;
use std::collections::VecDeque;

/// One unacked delivery: which queue holds it and under which id.
#[derive(Debug, Clone)]
pub struct Unacked<Q = QueueHandle> {
    /// The channel's delivery tag.
    pub tag: u64,
    /// The queue.
    pub queue: Q,
    /// The queue's id of the message.
    pub id: u64,
}

/// Unacked deliveries of a channel, by increasing delivery tag.
#[derive(Debug)]
pub struct UnackedTags<Q = QueueHandle> {
    entries: VecDeque<Unacked<Q>>,
}

impl<Q> Default for UnackedTags<Q> {
    fn default() -> Self {
        UnackedTags {
            entries: VecDeque::new(),
        }
    }
}

impl<Q> UnackedTags<Q> {
    /// Records a delivery; tags must increase.
    pub fn push(&mut self, tag: u64, queue: Q, id: u64) {
        debug_assert!(self.entries.back().is_none_or(|e| e.tag < tag));
        self.entries.push_back(Unacked { tag, queue, id });
    }

    /// Deliveries outstanding.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the delivery `tag`, or with `multiple` every delivery up to it (`tag` 0 with
    /// `multiple` = all, as in AMQP). None when `tag` is not outstanding.
    pub fn take(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked<Q>>> {
        if multiple {
            if tag == 0 {
                return Some(self.entries.drain(..).collect());
            }
            let end = self.entries.partition_point(|e| e.tag <= tag);
            // AMQP: `multiple` naming a tag that is not outstanding is an error.
            if end == 0 || self.entries[end - 1].tag != tag {
                return None;
            }
            return Some(self.entries.drain(..end).collect());
        }
        let pos = self.entries.binary_search_by_key(&tag, |e| e.tag).ok()?;
        self.entries.remove(pos).map(|e| vec![e])
    }

    /// Puts taken deliveries back (a rolled-back transaction's acks), keeping the tags
    /// in order.
    pub fn restore(&mut self, entries: Vec<Unacked<Q>>) {
        for e in entries {
            let at = self.entries.partition_point(|x| x.tag < e.tag);
            self.entries.insert(at, e);
        }
    }

    /// Takes everything (the channel is closing).
    pub fn drain(&mut self) -> Vec<Unacked<Q>> {
        self.entries.drain(..).collect()
    }
}

/// Groups unacked entries by queue: (queue, ids) in first-seen order.
pub fn by_queue(entries: Vec<Unacked>) -> Vec<(QueueHandle, Vec<u64>)> {
    let mut out: Vec<(QueueHandle, Vec<u64>)> = Vec::new();
    for e in entries {
        match out.iter_mut().find(|(q, _)| q.same(&e.queue)) {
            Some((_, ids)) => ids.push(e.id),
            None => out.push((e.queue, vec![e.id])),
        }
    }
    out
}

/// Where one publish stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Not answered yet.
    No,
    /// In every queue: covered by the next `multiple` confirm.
    Acked,
    /// Refused, and already told with a nack of its own.
    Nacked,
}

/// Publish sequence numbers awaiting their confirm, in order.
#[derive(Debug, Default)]
pub struct Confirms {
    /// (seq, state) in increasing seq order.
    pending: VecDeque<(u64, Settled)>,
    /// Highest seq seen, to refuse non-increasing ones.
    last_seq: u64,
}

impl Confirms {
    /// Registers `seq`; false when it does not increase.
    pub fn register(&mut self, seq: u64) -> bool {
        if seq <= self.last_seq {
            return false;
        }
        self.last_seq = seq;
        self.pending.push_back((seq, Settled::No));
        true
    }

    /// Marks `seq` acked (`ok`) or nacked.
    pub fn settle(&mut self, seq: u64, ok: bool) {
        if let Ok(i) = self.pending.binary_search_by_key(&seq, |(s, _)| *s) {
            self.pending[i].1 = if ok { Settled::Acked } else { Settled::Nacked };
        }
    }

    /// Pops the settled prefix; answers the highest acked seq popped, which one
    /// `multiple` confirm covers together with every acked one before it. Nacked ones
    /// were announced on their own and are skipped.
    pub fn advance(&mut self) -> Option<u64> {
        let mut last = None;
        while let Some(&(seq, state)) = self.pending.front() {
            match state {
                Settled::No => break,
                Settled::Acked => last = Some(seq),
                Settled::Nacked => {}
            }
            self.pending.pop_front();
        }
        last
    }

    /// Outstanding seqs.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &[Unacked<&'static str>]) -> Vec<u64> {
        v.iter().map(|e| e.tag).collect()
    }

    #[test]
    fn single_and_multiple_acks_take_the_right_tags() {
        let mut u = UnackedTags::default();
        for t in 1..=5 {
            u.push(t, "q", t * 10);
        }
        assert_eq!(tags(&u.take(3, false).unwrap()), [3]);
        assert!(u.take(3, false).is_none(), "twice is unknown");
        assert_eq!(tags(&u.take(4, true).unwrap()), [1, 2, 4]);
        assert!(u.take(9, true).is_none());
        assert!(u.take(9, false).is_none());
        assert_eq!(tags(&u.take(0, true).unwrap()), [5]);
        assert!(u.is_empty());
        u.push(7, "q", 70);
        u.restore(vec![
            Unacked {
                tag: 6,
                queue: "q",
                id: 60,
            },
            Unacked {
                tag: 9,
                queue: "q",
                id: 90,
            },
        ]);
        assert_eq!(
            tags(&u.take(9, true).unwrap()),
            [6, 7, 9],
            "restored in tag order"
        );
    }

    #[test]
    fn confirms_advance_over_the_settled_prefix_only() {
        let mut c = Confirms::default();
        for s in 1..=4 {
            assert!(c.register(s));
        }
        assert!(!c.register(4), "seq must increase");
        c.settle(2, true);
        assert_eq!(c.advance(), None);
        c.settle(1, true);
        assert_eq!(c.advance(), Some(2));
        c.settle(4, false);
        assert_eq!(c.advance(), None);
        c.settle(3, true);
        assert_eq!(c.advance(), Some(3), "the nacked 4 is not confirmed");
        assert!(c.is_empty());
    }
}
