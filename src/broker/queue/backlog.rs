//! The backlog of a durable queue beyond its in-memory head (RabbitMQ's lazy queues).
//!
//! A durable queue keeps at most `storage.queue_ram_messages` ready messages in its
//! [`ReadyStore`](super::ready::ReadyStore) (the head). Messages arriving while the head
//! is full, or while anything waits here already (FIFO), wait in the backlog instead,
//! and a persistent one lets go of its body once its `Publish` record is in the store
//! ([`Backlog::page_out`]): it is then an id and a few numbers, not a body. As the head
//! drains to half, the front of the backlog moves in: bodies still in memory at once,
//! the others by a read from the store ([`Backlog::read_request`], answered into
//! [`Backlog::paged_in`]). Transient messages cannot be paged out (they are on no disk)
//! and wait here with their body.
//!
//! After a restart, the messages of a long queue come back as ids only (the store
//! reads back the bodies of the head alone): they wait here, stored, and their TTL and
//! delay are applied when they reach the head ([`Promoted::recovered`]).
//!
//! Small messages that stay in memory here (transient ones, and every message of a
//! transient queue's backlog) are packed into a byte log ([`super::packed`]) rather
//! than kept as `Arc<Message>`s: a few dozen bytes each instead of a few hundred.
//!
//! Only the head is visible to consumers and TTL timers: a message in the backlog
//! expires once it reaches the head, as in RabbitMQ's classic queues. Queues with
//! priorities start no backlog of new messages (a late high-priority message must not
//! wait behind a low-priority backlog); only recovered messages start one, and while
//! they wait new messages queue behind them (FIFO within a priority, and the head keeps
//! draining so they are read back).

use super::packed::PackedLog;
use super::timers::Millis;
use crate::message::Message;
use std::collections::VecDeque;
use std::sync::Arc;

/// Most messages read back at once: one read holds the store's writer thread (and so
/// the group commits of every queue) for a bounded time.
const MAX_READ: usize = 1024;

/// Where a waiting message's body is.
#[derive(Debug)]
enum Body {
    /// In memory.
    Ram(Arc<Message>),
    /// Only in the store, under this id.
    Stored(u64),
    /// Packed in the backlog's byte log, this many bytes long.
    Packed(u32),
}

/// Largest body packed when the message is the queue's alone.
const PACK_MAX_BODY: usize = 4096;

/// Largest body packed when other queues hold the same message (copying more would
/// cost more than sharing it saves).
const PACK_MAX_SHARED_BODY: usize = 256;

/// A message waiting in the backlog.
#[derive(Debug)]
struct Waiting {
    body: Body,
    /// Its TTL deadline, fixed when it was published.
    expires: Millis,
    /// Its body's length (for length limits; the memory it is accounted for while in
    /// RAM is computed from the message, which is at hand then); 32 bits keep an entry
    /// at 32 bytes, and no frame is that large.
    bytes: u32,
    /// Deliveries before (a recovered message), saturated: 16 bits keep the entry at 32
    /// bytes.
    deliveries: u16,
    /// Recovered after a restart without its body: `expires` is not known yet.
    recovered: bool,
}

/// A delivery count as a backlog entry keeps it.
fn saturate(deliveries: u32) -> u16 {
    u16::try_from(deliveries).unwrap_or(u16::MAX)
}

/// A message leaving the backlog for the head.
#[derive(Debug)]
pub struct Promoted {
    /// The message.
    pub message: Arc<Message>,
    /// Its TTL deadline.
    pub expires: Millis,
    /// Deliveries before (0 = never delivered).
    pub deliveries: u32,
    /// Recovered after a restart without its body: its TTL (and delay, unless it was
    /// delivered before) start now, and `expires` means nothing.
    pub recovered: bool,
}

/// A read the queue must ask of the store: its answer goes to [`Backlog::paged_in`]
/// with the same `epoch`.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Changes on purge: an answer to an older epoch is ignored.
    pub epoch: u64,
    /// Store ids of the messages at the front, in order.
    pub ids: Vec<u64>,
}

/// The messages behind the head of a durable queue.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Ready messages the head may hold; 0 = no backlog (every message in the head).
    head_limit: usize,
    /// New messages may wait here (not in a queue with priorities).
    takes_new: bool,
    entries: VecDeque<Waiting>,
    /// Body bytes of every entry (for `x-max-length-bytes`).
    bytes: usize,
    /// Bytes of memory the entries with their body in memory are accounted for
    /// ([`Message::accounted_size`]).
    ram_bytes: usize,
    /// Trailing entries not yet offered to [`Backlog::page_out`].
    fresh: usize,
    /// Leading entries being read from the store (0 = no read in flight).
    reading: usize,
    /// See [`ReadRequest::epoch`].
    epoch: u64,
    /// The bodies of the [`Body::Packed`] entries, in order.
    packed: PackedLog,
}

impl Backlog {
    /// A backlog behind a head of `head_limit` ready messages (0 = none); with
    /// `takes_new` false, it holds only recovered messages (a queue with priorities).
    pub fn new(head_limit: usize, takes_new: bool) -> Self {
        let mut b = Backlog::default();
        b.configure(head_limit, takes_new);
        b
    }

    /// Changes the head's size and whether new messages may wait here.
    pub fn configure(&mut self, head_limit: usize, takes_new: bool) {
        self.head_limit = head_limit;
        self.takes_new = takes_new;
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Body bytes of every waiting message (for `x-max-length-bytes`).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of memory the waiting messages still in memory are accounted for.
    pub fn ram_bytes(&self) -> usize {
        self.ram_bytes
    }

    /// True when a message arriving now must wait here: older messages wait already
    /// (FIFO), or the head is full and new messages may start a backlog.
    pub fn takes(&self, head_len: usize) -> bool {
        self.head_limit > 0
            && (!self.entries.is_empty() || (self.takes_new && head_len >= self.head_limit))
    }

    /// Adds a message behind every other; packed if it is small and `packable` (it
    /// will not be paged out to the store instead).
    pub fn push(
        &mut self,
        message: Arc<Message>,
        expires: Millis,
        deliveries: u32,
        packable: bool,
    ) {
        let bytes = message.body.len();
        self.bytes += bytes;
        self.ram_bytes += message.accounted_size();
        self.fresh += 1;
        let small = match Arc::strong_count(&message) {
            1 => bytes <= PACK_MAX_BODY,
            _ => bytes <= PACK_MAX_SHARED_BODY,
        };
        let body = match packable && small {
            true => self.packed.pack(&message).map(Body::Packed),
            false => None,
        };
        self.entries.push_back(Waiting {
            body: body.unwrap_or(Body::Ram(message)),
            bytes: bytes as u32,
            expires,
            deliveries: saturate(deliveries),
            recovered: false,
        });
    }

    /// Adds a message recovered without its body, stored under `id`, behind every
    /// other.
    pub fn push_stored(&mut self, id: u64, size: u32, deliveries: u32) {
        self.bytes += size as usize;
        self.entries.push_back(Waiting {
            body: Body::Stored(id),
            bytes: size,
            expires: super::timers::NEVER,
            deliveries: saturate(deliveries),
            recovered: true,
        });
    }

    /// Offers the messages added since the last call: each one for which `stored_id`
    /// answers a store id lets go of its body. Call it once their records are appended.
    pub fn page_out(&mut self, mut stored_id: impl FnMut(&Arc<Message>) -> Option<u64>) {
        let from = self.entries.len() - self.fresh.min(self.entries.len());
        for w in self.entries.range_mut(from..) {
            if let Body::Ram(m) = &w.body {
                if let Some(id) = stored_id(m) {
                    self.ram_bytes -= m.accounted_size();
                    w.body = Body::Stored(id);
                }
            }
        }
        self.fresh = 0;
    }

    /// The front message, if its body is in memory and the head has room for it.
    pub fn promote(&mut self, head_len: usize) -> Option<Promoted> {
        if head_len >= self.head_limit || self.reading > 0 {
            return None;
        }
        if matches!(self.entries.front()?.body, Body::Stored(_)) {
            return None;
        }
        let w = self.entries.pop_front()?;
        self.fresh = self.fresh.min(self.entries.len());
        self.bytes -= w.bytes as usize;
        let message = match w.body {
            Body::Ram(m) => m,
            Body::Packed(len) => Arc::new(self.packed.unpack(len)),
            Body::Stored(_) => unreachable!("checked above"),
        };
        self.ram_bytes -= message.accounted_size();
        Some(Promoted {
            message,
            expires: w.expires,
            deliveries: u32::from(w.deliveries),
            recovered: w.recovered,
        })
    }

    /// The read to ask of the store, if the head has drained to half, the front waits
    /// on disk and no read is in flight: the leading stored ids, enough to refill the
    /// head (at most `MAX_READ`; the next read follows the answer).
    pub fn read_request(&mut self, head_len: usize) -> Option<ReadRequest> {
        if self.reading > 0 || head_len > self.head_limit / 2 {
            return None;
        }
        let want = (self.head_limit - head_len).min(MAX_READ);
        let ids: Vec<u64> = self
            .entries
            .iter()
            .take(want)
            .map_while(|w| match w.body {
                Body::Stored(id) => Some(id),
                Body::Ram(_) | Body::Packed(_) => None,
            })
            .collect();
        if ids.is_empty() {
            return None;
        }
        self.reading = ids.len();
        Some(ReadRequest {
            epoch: self.epoch,
            ids,
        })
    }

    /// Takes the answer to a read: the messages found get their bodies back. Answers
    /// the store ids asked for and not found (lost: their records were damaged), which
    /// leave the backlog; `None` for a stale answer (the queue was purged since), which
    /// is ignored.
    pub fn paged_in(&mut self, epoch: u64, pages: Vec<(u64, Arc<Message>)>) -> Option<Vec<u64>> {
        if epoch != self.epoch || self.reading == 0 {
            return None;
        }
        let asked = std::mem::take(&mut self.reading).min(self.entries.len());
        let mut pages = pages.into_iter().peekable();
        let mut lost = Vec::new();
        let mut kept = Vec::with_capacity(asked);
        for mut w in self.entries.drain(..asked) {
            let Body::Stored(id) = w.body else {
                kept.push(w);
                continue;
            };
            match pages.next_if(|(found, _)| *found == id) {
                Some((_, m)) => {
                    self.ram_bytes += m.accounted_size();
                    w.body = Body::Ram(m);
                    kept.push(w);
                }
                None => {
                    self.bytes -= w.bytes as usize;
                    lost.push(id);
                }
            }
        }
        for w in kept.into_iter().rev() {
            self.entries.push_front(w);
        }
        self.fresh = self.fresh.min(self.entries.len());
        Some(lost)
    }

    /// A read failed: forget it, so that the next [`Backlog::read_request`] asks again.
    pub fn read_failed(&mut self, epoch: u64) {
        if epoch == self.epoch {
            self.reading = 0;
        }
    }

    /// Drops every waiting message (a purge); answers how many.
    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.packed.clear();
        self.bytes = 0;
        self.ram_bytes = 0;
        self.fresh = 0;
        self.reading = 0;
        self.epoch += 1;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::timers::NEVER;

    fn msg(i: u64) -> Arc<Message> {
        Arc::new(Message::new("", "q", format!("m{i}")))
    }

    fn body(m: &Message) -> String {
        String::from_utf8_lossy(&m.body).into_owned()
    }

    /// A backlog behind a head of 4 holding m1..=m`n`, all paged out as ids 1..=n.
    fn paged(n: u64) -> Backlog {
        let mut b = Backlog::new(4, true);
        for i in 1..=n {
            b.push(msg(i), NEVER, 0, false);
        }
        b.page_out(|m| body(m)[1..].parse().ok());
        b
    }

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Waiting>(), 32);
    }

    #[test]
    fn takes_messages_only_behind_a_full_head_and_then_keeps_fifo() {
        let mut b = Backlog::new(4, true);
        assert!(!b.takes(3));
        assert!(b.takes(4));
        b.push(msg(1), NEVER, 0, false);
        assert!(
            b.takes(0),
            "older messages wait: a new one goes behind them"
        );
        assert!(!Backlog::new(0, true).takes(1_000_000), "0 = no backlog");
        let mut recovered_only = Backlog::new(4, false);
        assert!(
            !recovered_only.takes(4),
            "a priority queue starts no backlog"
        );
        recovered_only.push_stored(1, 10, 0);
        assert!(
            recovered_only.takes(0),
            "but new messages queue behind recovered ones"
        );
    }

    #[test]
    fn paged_out_messages_keep_no_body_in_memory_but_count_for_limits() {
        let mut b = Backlog::new(4, true);
        b.push(msg(1), NEVER, 0, false);
        b.push(msg(2), NEVER, 0, false);
        let size = b.bytes();
        assert_eq!(b.ram_bytes(), size);
        // Only message 2 is stored (1 is transient).
        b.page_out(|m| (body(m) == "m2").then_some(2));
        assert_eq!(b.bytes(), size);
        assert_eq!(b.ram_bytes(), size / 2);
        // m1 is in memory: promoted at once; m2 needs a read.
        assert_eq!(body(&b.promote(0).unwrap().message), "m1");
        assert!(b.promote(0).is_none());
        assert_eq!(b.read_request(0).unwrap().ids, vec![2]);
    }

    #[test]
    fn a_read_is_asked_once_the_head_is_half_empty_and_refills_it_in_order() {
        let mut b = paged(10);
        assert!(b.read_request(3).is_none(), "head above half");
        let r = b.read_request(2).unwrap();
        assert_eq!(r.ids, vec![1, 2], "enough to refill the head");
        assert!(b.read_request(0).is_none(), "one read at a time");
        assert!(b.promote(0).is_none(), "nothing in memory at the front");
        let lost = b.paged_in(r.epoch, vec![(1, msg(1)), (2, msg(2))]);
        assert_eq!(lost, Some(vec![]));
        let got: Vec<String> = std::iter::from_fn(|| b.promote(2))
            .map(|p| body(&p.message))
            .collect();
        assert_eq!(got, ["m1", "m2"]);
        assert_eq!(b.len(), 8);
        assert_eq!(b.read_request(0).unwrap().ids, vec![3, 4, 5, 6]);
    }

    #[test]
    fn small_transient_messages_are_packed_and_come_back_the_same() {
        let mut b = Backlog::new(2, true);
        let shared = msg(2);
        let _other_queue = shared.clone();
        let big = Arc::new(Message::new("", "q", vec![1u8; PACK_MAX_BODY + 1]));
        b.push(msg(1), NEVER, 0, true);
        b.push(shared.clone(), 5, 1, true);
        b.push(big.clone(), NEVER, 0, true);
        b.push(msg(4), NEVER, 0, false);
        assert!(matches!(b.entries[0].body, Body::Packed(_)));
        assert!(
            matches!(b.entries[1].body, Body::Packed(_)),
            "small: copied"
        );
        assert!(matches!(b.entries[2].body, Body::Ram(_)), "too big to copy");
        assert!(matches!(b.entries[3].body, Body::Ram(_)), "not packable");
        let total = b.ram_bytes();
        assert_eq!(total, b.bytes());
        let one = b.promote(0).unwrap();
        assert_eq!(*one.message, *msg(1));
        let two = b.promote(0).unwrap();
        assert_eq!(
            (*two.message == *shared, two.expires, two.deliveries),
            (true, 5, 1)
        );
        assert!(Arc::ptr_eq(&b.promote(1).unwrap().message, &big));
        assert!(b.promote(2).is_none(), "head full");
        assert_eq!(b.ram_bytes(), 2, "m4 is left");
    }

    #[test]
    fn ids_not_found_are_lost_and_leave_the_backlog() {
        let mut b = paged(3);
        let total = b.bytes();
        let r = b.read_request(0).unwrap();
        assert_eq!(r.ids, vec![1, 2, 3]);
        let lost = b.paged_in(r.epoch, vec![(1, msg(1)), (3, msg(3))]);
        assert_eq!(lost, Some(vec![2]));
        assert_eq!(b.len(), 2);
        assert_eq!(b.bytes(), total / 3 * 2);
        assert_eq!(body(&b.promote(0).unwrap().message), "m1");
        assert_eq!(body(&b.promote(0).unwrap().message), "m3");
        assert_eq!((b.len(), b.bytes(), b.ram_bytes()), (0, 0, 0));
    }

    #[test]
    fn an_answer_after_a_purge_is_ignored_and_a_failed_read_is_asked_again() {
        let mut b = paged(3);
        let r = b.read_request(0).unwrap();
        b.read_failed(r.epoch);
        let r = b.read_request(0).unwrap();
        assert_eq!(b.clear(), 3);
        assert_eq!(b.paged_in(r.epoch, vec![(1, msg(1))]), None, "stale");
        assert!(b.is_empty());
        assert_eq!((b.bytes(), b.ram_bytes()), (0, 0));
    }
}
