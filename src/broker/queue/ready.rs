//! The ready messages of one queue: one FIFO per priority level (a single level unless
//! the queue was declared with `x-max-priority`), highest level served first.
//!
//! Within a level messages are ordered by their sequence number (`seq`, increasing with
//! arrival), so a requeued message goes back to its original place: a binary search by
//! `seq`, near the head. The same search finds a message in the middle of the queue
//! when its TTL runs out; it is then turned into a tombstone (its message dropped at
//! once, the slot left in place) rather than shifted out, so prompt expiry costs
//! O(log n). Tombstones are skipped at the head and swept when they outnumber the live
//! messages of a level, which keeps the cost amortised O(1).

use super::timers::{Millis, NEVER};
use crate::message::Message;
use std::collections::VecDeque;
use std::sync::Arc;

/// A message waiting for delivery.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Arrival order within the queue: where the message goes back when requeued.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Delivered before.
    pub redelivered: bool,
    /// Deliveries so far.
    pub delivery_count: u32,
    /// When it expires ([`NEVER`] without a TTL).
    pub expires: Millis,
}

/// One slot of a level: a ready message, or the tombstone of an expired one.
#[derive(Debug)]
struct Slot {
    seq: u64,
    /// None once removed out of order (a tombstone).
    message: Option<Arc<Message>>,
    redelivered: bool,
    delivery_count: u32,
    expires: Millis,
}

impl Slot {
    fn take(&mut self) -> Option<Ready> {
        let message = self.message.take()?;
        Some(Ready {
            seq: self.seq,
            message,
            redelivered: self.redelivered,
            delivery_count: self.delivery_count,
            expires: self.expires,
        })
    }
}

impl From<Ready> for Slot {
    fn from(r: Ready) -> Slot {
        Slot {
            seq: r.seq,
            message: Some(r.message),
            redelivered: r.redelivered,
            delivery_count: r.delivery_count,
            expires: r.expires,
        }
    }
}

/// One priority level.
#[derive(Debug, Default)]
struct Level {
    /// Slots by increasing `seq`.
    slots: VecDeque<Slot>,
    /// Slots that are not tombstones.
    live: usize,
}

impl Level {
    fn find(&self, seq: u64) -> Option<usize> {
        let i = self.slots.partition_point(|s| s.seq < seq);
        (self.slots.get(i)?.seq == seq).then_some(i)
    }

    /// Drops tombstones at the head, and all of them once they dominate.
    fn tidy(&mut self) {
        while self.slots.front().is_some_and(|s| s.message.is_none()) {
            self.slots.pop_front();
        }
        let dead = self.slots.len() - self.live;
        if dead > 64 && dead > self.live {
            self.slots.retain(|s| s.message.is_some());
        }
    }
}

/// Ready messages by priority level.
#[derive(Debug)]
pub struct ReadyStore {
    /// Index = priority level.
    levels: Vec<Level>,
    /// Bit per level: set while it holds a live message.
    nonempty: [u64; 4],
    /// Live messages in all levels.
    live: usize,
    /// Bytes of their bodies (for `x-max-length-bytes`).
    body_bytes: usize,
    /// Bytes of memory they are accounted for (bodies, properties, headers: see
    /// [`Message::accounted_size`]), for the memory watermark.
    bytes: usize,
}

impl ReadyStore {
    /// A store for priorities 0..=`max_priority`.
    pub fn new(max_priority: u8) -> Self {
        ReadyStore {
            levels: (0..=max_priority).map(|_| Level::default()).collect(),
            nonempty: [0; 4],
            live: 0,
            body_bytes: 0,
            bytes: 0,
        }
    }

    /// Ready messages.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when none is ready.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes of memory the ready messages are accounted for.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of ready bodies alone (for `x-max-length-bytes`).
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// The level of `m`: its `priority` property, capped at the highest level.
    pub fn level_of(&self, m: &Message) -> u8 {
        let top = (self.levels.len() - 1) as u8;
        m.properties.priority.unwrap_or(0).min(top)
    }

    fn mark(&mut self, level: usize) {
        let live = self.levels[level].live > 0;
        let (w, b) = (level / 64, level % 64);
        if live {
            self.nonempty[w] |= 1 << b;
        } else {
            self.nonempty[w] &= !(1 << b);
        }
    }

    fn top_level(&self) -> Option<usize> {
        (0..4)
            .rev()
            .find(|&w| self.nonempty[w] != 0)
            .map(|w| w * 64 + 63 - self.nonempty[w].leading_zeros() as usize)
    }

    /// Adds a message that arrived after every message already here.
    pub fn push_back(&mut self, r: Ready) {
        let level = self.level_of(&r.message) as usize;
        self.bytes += r.message.accounted_size();
        self.body_bytes += r.message.body.len();
        let l = &mut self.levels[level];
        debug_assert!(l.slots.back().is_none_or(|s| s.seq < r.seq));
        l.slots.push_back(r.into());
        l.live += 1;
        self.live += 1;
        self.mark(level);
    }

    /// Puts a message back in its place by `seq` (a requeue).
    pub fn insert(&mut self, r: Ready) {
        let level = self.level_of(&r.message) as usize;
        self.bytes += r.message.accounted_size();
        self.body_bytes += r.message.body.len();
        let l = &mut self.levels[level];
        let pos = l.slots.partition_point(|s| s.seq < r.seq);
        l.slots.insert(pos, r.into());
        l.live += 1;
        self.live += 1;
        self.mark(level);
    }

    /// Takes the next message to deliver: the oldest of the highest non-empty level.
    pub fn pop_front(&mut self) -> Option<Ready> {
        let level = self.top_level()?;
        let l = &mut self.levels[level];
        let r = loop {
            let mut slot = l.slots.pop_front()?;
            if let Some(r) = slot.take() {
                break r;
            }
        };
        l.live -= 1;
        l.tidy();
        self.live -= 1;
        self.bytes -= r.message.accounted_size();
        self.body_bytes -= r.message.body.len();
        self.mark(level);
        Some(r)
    }

    /// True while message `seq` of `level` is ready.
    pub fn contains(&self, level: u8, seq: u64) -> bool {
        let l = &self.levels[level as usize];
        l.find(seq).is_some_and(|i| l.slots[i].message.is_some())
    }

    /// Takes message `seq` of `level` out of the middle of the queue, if it is ready.
    pub fn remove(&mut self, level: u8, seq: u64) -> Option<Ready> {
        let l = &mut self.levels[level as usize];
        let i = l.find(seq)?;
        let r = l.slots[i].take()?;
        l.live -= 1;
        l.tidy();
        self.live -= 1;
        self.bytes -= r.message.accounted_size();
        self.body_bytes -= r.message.body.len();
        self.mark(level as usize);
        Some(r)
    }

    /// Drops every ready message; answers how many.
    pub fn clear(&mut self) -> usize {
        let n = self.live;
        for l in &mut self.levels {
            l.slots.clear();
            l.live = 0;
        }
        self.nonempty = [0; 4];
        self.live = 0;
        self.bytes = 0;
        self.body_bytes = 0;
        n
    }

    /// `(expires, (seq, level))` of every ready message with a TTL (to rebuild the
    /// expiry heap).
    pub fn deadlines(&self) -> impl Iterator<Item = (Millis, (u64, u8))> + '_ {
        self.levels.iter().enumerate().flat_map(|(level, l)| {
            l.slots
                .iter()
                .filter(|s| s.message.is_some() && s.expires != NEVER)
                .map(move |s| (s.expires, (s.seq, level as u8)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(seq: u64, priority: Option<u8>) -> Ready {
        let mut m = Message::new("", "q", format!("m{seq}"));
        Arc::make_mut(&mut m.properties).priority = priority;
        Ready {
            seq,
            message: Arc::new(m),
            redelivered: false,
            delivery_count: 0,
            expires: NEVER,
        }
    }

    fn drain(s: &mut ReadyStore) -> Vec<u64> {
        std::iter::from_fn(|| s.pop_front())
            .map(|r| r.seq)
            .collect()
    }

    #[test]
    fn a_single_level_is_fifo_and_requeue_restores_the_place() {
        let mut s = ReadyStore::new(0);
        for seq in 1..=4 {
            s.push_back(ready(seq, Some(7)));
        }
        let one = s.pop_front().unwrap();
        let two = s.pop_front().unwrap();
        s.insert(two);
        s.insert(one);
        assert_eq!(s.len(), 4);
        assert_eq!(drain(&mut s), [1, 2, 3, 4]);
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn higher_priority_first_fifo_within_a_priority_capped_at_the_max() {
        let mut s = ReadyStore::new(5);
        s.push_back(ready(1, None));
        s.push_back(ready(2, Some(3)));
        s.push_back(ready(3, Some(200)));
        s.push_back(ready(4, Some(3)));
        s.push_back(ready(5, Some(5)));
        assert_eq!(s.level_of(&ready(0, Some(9)).message), 5);
        assert_eq!(drain(&mut s), [3, 5, 2, 4, 1]);
    }

    #[test]
    fn removing_from_the_middle_leaves_a_tombstone_that_is_skipped() {
        let mut s = ReadyStore::new(0);
        for seq in 1..=5 {
            s.push_back(ready(seq, None));
        }
        assert!(s.contains(0, 3));
        assert_eq!(s.remove(0, 3).unwrap().seq, 3);
        assert!(!s.contains(0, 3));
        assert!(s.remove(0, 3).is_none(), "already gone");
        assert!(s.remove(0, 1).is_some());
        assert_eq!(s.len(), 3);
        assert_eq!(s.body_bytes(), 6);
        assert_eq!(s.bytes(), 3 * ready(0, None).message.accounted_size());
        assert_eq!(drain(&mut s), [2, 4, 5]);
    }

    #[test]
    fn tombstones_are_swept_when_they_dominate() {
        let mut s = ReadyStore::new(0);
        for seq in 0..1000 {
            s.push_back(ready(seq, None));
        }
        for seq in (1..1000).filter(|q| q % 10 != 0) {
            s.remove(0, seq);
        }
        assert_eq!(s.len(), 100);
        assert!(s.levels[0].slots.len() < 300, "{}", s.levels[0].slots.len());
        let left = drain(&mut s);
        assert_eq!(left.len(), 100);
        assert!(left.iter().all(|q| q % 10 == 0));
    }

    #[test]
    fn deadlines_list_live_messages_with_a_ttl() {
        let mut s = ReadyStore::new(1);
        let mut a = ready(1, Some(1));
        a.expires = 100;
        let mut b = ready(2, None);
        b.expires = 50;
        s.push_back(a);
        s.push_back(b);
        s.push_back(ready(3, None));
        let mut d: Vec<_> = s.deadlines().collect();
        d.sort();
        assert_eq!(d, [(50, (2, 0)), (100, (1, 1))]);
        s.clear();
        assert_eq!(s.deadlines().count(), 0);
    }
}
