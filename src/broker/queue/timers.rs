//! The deadlines of one queue, as plain data: message expiry, consumer (visibility)
//! timeouts, and delayed messages waiting to become visible.
//!
//! Each is a binary min-heap, so a million pending deadlines cost a few dozen bytes each
//! and nothing at all while none is due: the queue actor arms a single timer for the
//! earliest deadline of all of them ([`super::state::QueueState::next_deadline`]) and
//! re-arms it as that changes. [`DeadlineHeap`] entries are removed lazily: the owner
//! checks on pop whether the keyed item is still there, and rebuilds the heap when stale
//! entries outnumber live ones, which keeps its memory bounded by what the queue holds.
//!
//! Time is [`Millis`]: milliseconds since the queue's own epoch (an `Instant` taken by
//! the actor), so this module needs no clock and is tested with plain numbers.

use crate::message::Message;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Milliseconds since the queue's epoch.
pub type Millis = u64;

/// "No deadline".
pub const NEVER: Millis = u64::MAX;

/// Stale entries tolerated beyond twice the live ones before a rebuild.
const COMPACT_SLACK: usize = 1024;

/// Deadlines keyed by `K`, earliest first. Entries whose item has gone are skipped by
/// the owner and dropped when popped.
#[derive(Debug)]
pub struct DeadlineHeap<K: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Millis, K)>>,
}

impl<K: Ord + Copy> Default for DeadlineHeap<K> {
    fn default() -> Self {
        DeadlineHeap {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> DeadlineHeap<K> {
    /// Adds a deadline.
    pub fn push(&mut self, at: Millis, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry, live or stale.
    pub fn peek(&self) -> Option<(Millis, K)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Removes the earliest entry.
    pub fn pop(&mut self) -> Option<(Millis, K)> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// Entries, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// True when stale entries have grown well past the `live` ones: time to
    /// [`rebuild`](Self::rebuild).
    pub fn needs_compaction(&self, live: usize) -> bool {
        self.heap.len() > 2 * live + COMPACT_SLACK
    }

    /// Replaces the entries with `live` ones (O(n)).
    pub fn rebuild(&mut self, live: impl IntoIterator<Item = (Millis, K)>) {
        let entries: Vec<Reverse<(Millis, K)>> = live.into_iter().map(Reverse).collect();
        self.heap = BinaryHeap::from(entries);
    }
}

/// A message waiting for its delay to pass.
#[derive(Debug)]
struct Delayed {
    /// When it becomes visible.
    due: Millis,
    /// Arrival order, so messages due at the same millisecond keep their order.
    order: u64,
    message: Arc<Message>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// Messages not yet visible (`x-delay` header, `x-delivery-delay` queue argument),
/// earliest due first, in arrival order among equal due times. 24 bytes per message
/// besides the message itself.
#[derive(Debug, Default)]
pub struct DelayQueue {
    heap: BinaryHeap<Delayed>,
    /// Next arrival number.
    next: u64,
    /// Bytes of memory held (see [`Message::accounted_size`]).
    bytes: usize,
    /// Bytes of bodies held (for `x-max-length-bytes`).
    body_bytes: usize,
}

impl DelayQueue {
    /// Holds `message` until `due`.
    pub fn push(&mut self, due: Millis, message: Arc<Message>) {
        self.bytes += message.accounted_size();
        self.body_bytes += message.body.len();
        let order = self.next;
        self.next += 1;
        self.heap.push(Delayed {
            due,
            order,
            message,
        });
    }

    /// When the earliest message becomes visible.
    pub fn next_due(&self) -> Option<Millis> {
        self.heap.peek().map(|d| d.due)
    }

    /// Takes the earliest message if it is due at `now`, with its due time.
    pub fn pop_due(&mut self, now: Millis) -> Option<(Millis, Arc<Message>)> {
        if self.heap.peek()?.due > now {
            return None;
        }
        let d = self.heap.pop()?;
        self.bytes -= d.message.accounted_size();
        self.body_bytes -= d.message.body.len();
        Some((d.due, d.message))
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Bytes of memory the waiting messages are accounted for.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of the waiting bodies (for `x-max-length-bytes`).
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// Drops every waiting message; answers how many.
    pub fn clear(&mut self) -> usize {
        let n = self.heap.len();
        self.heap.clear();
        self.bytes = 0;
        self.body_bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> Arc<Message> {
        Arc::new(Message::new("", "q", body.to_string()))
    }

    #[test]
    fn deadlines_pop_earliest_first() {
        let mut h = DeadlineHeap::default();
        h.push(30, 1u64);
        h.push(10, 2);
        h.push(20, 3);
        assert_eq!(h.peek(), Some((10, 2)));
        assert_eq!(h.pop(), Some((10, 2)));
        assert_eq!(h.pop(), Some((20, 3)));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn compaction_is_asked_for_only_when_stale_entries_dominate() {
        let mut h = DeadlineHeap::default();
        for i in 0..2000u64 {
            h.push(i, i);
        }
        assert!(!h.needs_compaction(1000));
        assert!(h.needs_compaction(10));
        h.rebuild((0..10u64).map(|i| (i * 2, i)));
        assert_eq!(h.len(), 10);
        assert_eq!(h.peek(), Some((0, 0)));
    }

    #[test]
    fn delayed_messages_come_out_when_due_in_due_then_arrival_order() {
        let mut d = DelayQueue::default();
        d.push(50, msg("late"));
        d.push(10, msg("first"));
        d.push(10, msg("second"));
        assert_eq!(d.bytes(), 15);
        assert_eq!(d.next_due(), Some(10));
        assert!(d.pop_due(9).is_none());
        let got: Vec<_> = std::iter::from_fn(|| d.pop_due(10))
            .map(|(_, m)| String::from_utf8(m.body.to_vec()).unwrap())
            .collect();
        assert_eq!(got, ["first", "second"]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.bytes(), 4);
        assert_eq!(d.clear(), 1);
        assert_eq!((d.len(), d.bytes()), (0, 0));
    }
}
