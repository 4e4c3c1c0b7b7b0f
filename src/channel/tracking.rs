//! A channel's bookkeeping, pure and unit-tested: delivery tags of unacked deliveries
//! and the publish confirms still outstanding.

use crate::broker::queue::QueueHandle;
use std::collections::VecDeque;

/// Unacked deliveries: which queue holds them and under which ids. One delivery
/// (`count` 1), or a stream's run of records handed over as one (`count` records,
/// tags `tag .. tag + count` for queue ids `id .. id + count`), tracked and settled as
/// a range while the client sees a tag per record.
#[derive(Debug, Clone)]
pub struct Unacked<Q = QueueHandle> {
    /// The channel's delivery tag (of the first record of a run).
    pub tag: u64,
    /// The queue.
    pub queue: Q,
    /// The queue's id of the message (of the first record of a run).
    pub id: u64,
    /// How many consecutive tags and ids (at least 1).
    pub count: u64,
}

impl<Q> Unacked<Q> {
    /// The tag after its last.
    fn end(&self) -> u64 {
        self.tag + self.count
    }
}

impl<Q: Clone> Unacked<Q> {
    /// Cuts it at `tag` (inside it, not its first): `self` keeps the tags before, the
    /// answer holds `tag` and the ones after.
    fn split_off(&mut self, tag: u64) -> Unacked<Q> {
        let k = tag - self.tag;
        let rest = Unacked {
            tag,
            queue: self.queue.clone(),
            id: self.id + k,
            count: self.count - k,
        };
        self.count = k;
        rest
    }
}

/// Unacked deliveries of a channel, by increasing delivery tag.
#[derive(Debug)]
pub struct UnackedTags<Q = QueueHandle> {
    entries: VecDeque<Unacked<Q>>,
    /// Tags held (the sum of the entries' counts).
    len: usize,
}

impl<Q> Default for UnackedTags<Q> {
    fn default() -> Self {
        UnackedTags {
            entries: VecDeque::new(),
            len: 0,
        }
    }
}

impl<Q: Clone> UnackedTags<Q> {
    /// Records a delivery; tags must increase.
    pub fn push(&mut self, tag: u64, queue: Q, id: u64) {
        self.push_run(tag, queue, id, 1);
    }

    /// Records a run of `count` deliveries: tags `tag ..` for ids `id ..`; tags must
    /// increase.
    pub fn push_run(&mut self, tag: u64, queue: Q, id: u64, count: u64) {
        debug_assert!(count > 0);
        debug_assert!(self.entries.back().is_none_or(|e| e.end() <= tag));
        self.len += count as usize;
        self.entries.push_back(Unacked {
            tag,
            queue,
            id,
            count,
        });
    }

    /// Deliveries outstanding (a run counts its records).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the delivery `tag`, or with `multiple` every delivery up to it (`tag` 0 with
    /// `multiple` = all, as in AMQP). None when `tag` is not outstanding. A run that
    /// `tag` falls inside is cut: the part settled is taken, the rest stays.
    pub fn take(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked<Q>>> {
        if multiple && tag == 0 {
            self.len = 0;
            return Some(self.entries.drain(..).collect());
        }
        // The entry holding `tag`: the last that starts at or before it.
        let at = self
            .entries
            .partition_point(|e| e.tag <= tag)
            .checked_sub(1)?;
        let e = &mut self.entries[at];
        // AMQP: naming a tag that is not outstanding is an error, `multiple` or not.
        if tag >= e.end() {
            return None;
        }
        let after = (tag + 1 < e.end()).then(|| e.split_off(tag + 1));
        let taken = if multiple {
            let taken: Vec<_> = self.entries.drain(..=at).collect();
            if let Some(after) = after {
                self.entries.push_front(after);
            }
            taken
        } else {
            let one = if e.tag < tag {
                let one = e.split_off(tag);
                if let Some(after) = after {
                    self.entries.insert(at + 1, after);
                }
                one
            } else {
                let one = self.entries.remove(at).expect("found");
                if let Some(after) = after {
                    self.entries.insert(at, after);
                }
                one
            };
            vec![one]
        };
        self.len -= taken.iter().map(|e| e.count as usize).sum::<usize>();
        Some(taken)
    }

    /// Puts taken deliveries back (a rolled-back transaction's acks), keeping the tags
    /// in order.
    pub fn restore(&mut self, entries: Vec<Unacked<Q>>) {
        for e in entries {
            self.len += e.count as usize;
            let at = self.entries.partition_point(|x| x.tag < e.tag);
            self.entries.insert(at, e);
        }
    }

    /// Takes everything (the channel is closing).
    pub fn drain(&mut self) -> Vec<Unacked<Q>> {
        self.len = 0;
        self.entries.drain(..).collect()
    }
}

/// What a channel hands one queue to settle: single ids, and runs as (first id, count).
#[derive(Debug, Default)]
pub struct QueueIds {
    /// Single deliveries' ids (a run's part of one record included).
    pub ids: Vec<u64>,
    /// Parts of runs of more than one record: (first id, count).
    pub runs: Vec<(u64, u32)>,
}

impl QueueIds {
    /// Adds the ids of `e`.
    fn add<Q>(&mut self, e: &Unacked<Q>) {
        match e.count {
            1 => self.ids.push(e.id),
            n => self.runs.push((e.id, n as u32)),
        }
    }

    /// Adds what `other` holds.
    pub fn extend(&mut self, other: QueueIds) {
        self.ids.extend(other.ids);
        self.runs.extend(other.runs);
    }
}

/// Groups unacked entries by queue: (queue, ids) in first-seen order.
pub fn by_queue(entries: Vec<Unacked>) -> Vec<(QueueHandle, QueueIds)> {
    let mut out: Vec<(QueueHandle, QueueIds)> = Vec::new();
    for e in entries {
        match out.iter_mut().find(|(q, _)| q.same(&e.queue)) {
            Some((_, ids)) => ids.add(&e),
            None => {
                let mut ids = QueueIds::default();
                ids.add(&e);
                out.push((e.queue, ids));
            }
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
                count: 1,
            },
            Unacked {
                tag: 9,
                queue: "q",
                id: 90,
                count: 1,
            },
        ]);
        assert_eq!(
            tags(&u.take(9, true).unwrap()),
            [6, 7, 9],
            "restored in tag order"
        );
    }

    /// (tag, id, count) of each entry.
    fn spans(v: &[Unacked<&'static str>]) -> Vec<(u64, u64, u64)> {
        v.iter().map(|e| (e.tag, e.id, e.count)).collect()
    }

    #[test]
    fn a_single_ack_inside_a_run_takes_that_tag_only() {
        let mut u = UnackedTags::default();
        u.push_run(1, "q", 100, 7); // tags 1..=7, ids 100..=106
        assert_eq!(spans(&u.take(4, false).unwrap()), [(4, 103, 1)]);
        assert_eq!(u.len(), 6, "the others stay");
        assert!(u.take(4, false).is_none(), "twice is unknown");
        assert!(u.take(4, true).is_none(), "so is a multiple naming it");
        assert_eq!(
            spans(&u.take(1, false).unwrap()),
            [(1, 100, 1)],
            "its first"
        );
        assert_eq!(spans(&u.take(7, false).unwrap()), [(7, 106, 1)], "its last");
        assert_eq!(spans(&u.take(6, false).unwrap()), [(6, 105, 1)]);
        assert_eq!(u.len(), 3);
        assert_eq!(
            spans(&u.drain()),
            [(2, 101, 2), (5, 104, 1)],
            "what is left, in tag order"
        );
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn a_multiple_ack_takes_whole_runs_and_cuts_the_last() {
        let mut u = UnackedTags::default();
        u.push_run(1, "s", 10, 5); // 1..=5
        u.push(6, "q", 99); // a classic queue's delivery between runs
        u.push_run(7, "s", 20, 5); // 7..=11
        assert_eq!(
            spans(&u.take(9, true).unwrap()),
            [(1, 10, 5), (6, 99, 1), (7, 20, 3)]
        );
        assert_eq!(u.len(), 2);
        assert!(u.take(9, true).is_none(), "taken already");
        assert_eq!(spans(&u.take(11, true).unwrap()), [(10, 23, 2)]);
        assert!(u.is_empty());
    }

    #[test]
    fn tags_outside_every_run_are_unknown() {
        let mut u = UnackedTags::default();
        u.push_run(3, "s", 30, 4); // 3..=6
        u.push_run(9, "s", 40, 2); // 9..=10 (7 and 8 were auto-acked)
        for tag in [1, 2, 7, 8, 11, 1_000] {
            assert!(u.take(tag, false).is_none(), "single {tag}");
            assert!(u.take(tag, true).is_none(), "multiple {tag}");
        }
        assert!(u.take(0, false).is_none(), "tag 0 names nothing alone");
        assert_eq!(u.len(), 6, "nothing taken");
        let rolled_back = u.take(4, true).unwrap();
        assert_eq!(spans(&rolled_back), [(3, 30, 2)]);
        u.restore(rolled_back);
        assert_eq!(u.len(), 6);
        assert_eq!(
            spans(&u.take(0, true).unwrap()),
            [(3, 30, 2), (5, 32, 2), (9, 40, 2)],
            "restored before the rest of its run"
        );
    }

    #[test]
    fn by_queue_sends_runs_as_ranges_and_single_records_as_ids() {
        let mut u: UnackedTags<&'static str> = UnackedTags::default();
        u.push_run(1, "s", 10, 5);
        let taken = u.take(3, false).unwrap();
        let mut ids = QueueIds::default();
        ids.add(&taken[0]);
        for e in u.drain() {
            ids.add(&e);
        }
        assert_eq!(ids.ids, [12], "a run's part of one record goes as an id");
        assert_eq!(ids.runs, [(10, 2), (13, 2)]);
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
