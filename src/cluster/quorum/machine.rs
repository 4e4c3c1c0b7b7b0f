//! The state machine of one quorum queue: what every member of its Raft group applies,
//! in log order, to reach the same queue. Pure: no I/O, no clock, no actix; every input
//! is a [`Command`] in a committed entry, so each member (and a member rebuilt from a
//! snapshot) holds exactly the same messages, delivery counts and checkouts.
//!
//! - Messages get their id from the order they are applied in: ids increase in publish
//!   order, which is the queue's order. Many publishes travel in one
//!   [`Command::Enqueue`] (one entry, one fsync per group commit); a node's publisher
//!   numbers its entries ([`Command::EnqueueFrom`]), so one written again after a
//!   lost answer is enqueued once (`machine/writers.rs`).
//! - Consumers are part of the state: the leader registers each one with its credit
//!   (its prefetch) by a committed [`Command::Consume`], and the machine **checks
//!   messages out to consumers as it applies** an `Enqueue`, or a `Settle` / `Return`
//!   that frees credit or gives a message back, in turn among the consumers with
//!   credit (as RabbitMQ's quorum queues do). A delivery therefore needs no commit of
//!   its own: the leader's node sends what its member's apply checked out
//!   ([`Applied::checkouts`]), and every member knows every checkout, so a new leader
//!   redelivers it marked (redelivered, delivery count) and a message acked
//!   ([`Command::Settle`]) before a failover is never delivered again.
//! - A `basic.get` is a one-off checkout the leader names ([`Command::Deliver`]).
//! - A new leader (or a consumer gone) returns the checkouts of consumers it no longer
//!   serves and drops those consumers ([`Command::Return`]).
//! - A returned message goes back to its place (ids order the ready set), as RabbitMQ
//!   does; past `x-delivery-limit` it is dead instead (to be dead-lettered by the
//!   leader when the queue has a dead-letter exchange, else dropped).
//! - `x-max-length(-bytes)` with `x-overflow` drop-head or reject-publish.
//! - Limits changed by a policy after the declare ([`Command::SetLimits`]), at the
//!   same entry on every member (`machine/limits.rs`).
//! - `x-single-active-consumer`: only the earliest registered consumer is checked
//!   messages out to; the next in registration order takes over when it goes.
//! - TTLs (`x-message-ttl`, a message's `expiration`) on the leader's clock: time
//!   comes from committed [`Command::Clock`] entries only (the leader writes one before
//!   each publish batch, and when the head's deadline passes), so every member expires
//!   the same messages. As RabbitMQ's quorum queues do, only the head expires: a
//!   message with a short TTL behind one with a long TTL waits for it. A message is
//!   alive through its deadline's millisecond, so a TTL of 0 still reaches a consumer
//!   with credit at its publish.
//! - Dead-lettering at most once (the default): a message that dies leaves the queue
//!   and is handed to the leader in [`Applied::dead`]. At least once
//!   ([`Limits::at_least_once`]): it stays in the queue, in death order, counted
//!   against the length limits and never delivered, until the leader's republish of
//!   it is confirmed and [`Command::DeadSettled`] commits (`machine/dead.rs`).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

mod command;
mod dead;
mod limits;
mod read;
mod writers;
pub use command::{Applied, Command, ConsumerKey, DeadReason, Limits, Settle};
pub use dead::DeadLetter;

/// Credit of a consumer with no prefetch limit (AMQP prefetch 0): RabbitMQ's quorum
/// queues use the same figure, so an unlimited consumer cannot take a whole backlog
/// into the leader's memory at once.
pub const UNLIMITED_CREDIT: u32 = 2000;

/// What the machine needs to know of a message: its body's size (for
/// `x-max-length-bytes`) and what it costs in memory (for the broker's watermark).
pub trait Weighed {
    /// Bytes of the body.
    fn body_len(&self) -> usize;

    /// Bytes the memory watermark counts for it (the body alone unless told more).
    fn accounted_len(&self) -> usize {
        self.body_len()
    }

    /// Its own TTL in ms (the `expiration` property), if any.
    fn ttl_ms(&self) -> Option<u64> {
        None
    }
}

/// A registered consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Attached {
    /// Most unsettled checkouts.
    credit: u32,
    /// Checked out to it, unsettled.
    held: u32,
    /// Its place in registration order (single active consumer).
    #[serde(default)]
    seq: u64,
    /// The consumer of another node it was made for (see [`Command::Consume`]).
    #[serde(default)]
    origin: Option<ConsumerKey>,
}

/// A message in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Held<M> {
    message: M,
    /// Deliveries so far.
    deliveries: u32,
    /// The last millisecond (on the machine's clock) it is alive, when it has a TTL.
    #[serde(default)]
    expires_at: Option<u64>,
}

/// A ready message as the leader hands it out.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready<'a, M> {
    /// Its id (what [`Command::Deliver`] and [`Command::Settle`] name).
    pub id: u64,
    /// The message.
    pub message: &'a M,
    /// Deliveries before this one (0 for a first delivery).
    pub deliveries: u32,
    /// The last millisecond it is alive (on the leader's clock), when it has a TTL: a
    /// `basic.get` passes over one whose deadline has passed.
    pub deadline: Option<u64>,
}

/// The replicated state of one quorum queue (also its snapshot).
///
/// ```
/// use actormq::cluster::quorum::machine::{Command, ConsumerKey, Limits, QueueMachine, Settle, Weighed};
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Body(Vec<u8>);
/// impl Weighed for Body {
///     fn body_len(&self) -> usize {
///         self.0.len()
///     }
/// }
///
/// let mut q = QueueMachine::new(Limits::default());
/// let to = ConsumerKey { node: 1, consumer: 1 };
/// q.apply(Command::Consume { consumer: to, credit: 1, origin: None });
/// let a = q.apply(Command::Enqueue(vec![Body(b"a".to_vec()), Body(b"b".to_vec())]));
/// assert_eq!(a.enqueued, [Some(1), Some(2)]);
/// // Checked out as the publish applied: one, the consumer's credit.
/// assert_eq!(a.checkouts, [(to, 1)]);
/// // The ack frees the credit: the next one goes out as the ack applies.
/// let a = q.apply(Command::Settle { ids: vec![1], how: Settle::Ack });
/// assert_eq!(a.checkouts, [(to, 2)]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueMachine<M> {
    limits: Limits,
    next_id: u64,
    ready: BTreeMap<u64, Held<M>>,
    ready_bytes: u64,
    checked_out: BTreeMap<u64, (ConsumerKey, Held<M>)>,
    /// Registered consumers.
    consumers: BTreeMap<ConsumerKey, Attached>,
    /// The registered consumers with credit left, in turn order (each once).
    service: VecDeque<ConsumerKey>,
    /// [`Weighed::accounted_len`] of every message held, ready or checked out.
    held_bytes: u64,
    /// The latest [`Command::Clock`] applied (ms since the Unix epoch on the leader).
    #[serde(default)]
    clock_ms: u64,
    /// The registration number of the next new consumer.
    #[serde(default)]
    next_seq: u64,
    /// [`Command::Touch`]es applied: the redeclares the leader's `x-expires` lease
    /// counts as uses.
    #[serde(default)]
    touches: u64,
    /// Dead messages kept until their dead-lettering is confirmed (at-least-once), by
    /// death number: in the order they died. Absent from queues written before
    /// at-least-once dead-lettering: none. (A path, not `default`: no `M: Default`.)
    #[serde(default = "BTreeMap::new")]
    dead: BTreeMap<u64, dead::Kept<M>>,
    /// Body bytes of `dead`: they count against `x-max-length-bytes` as RabbitMQ
    /// counts its dead-lettered messages.
    #[serde(default)]
    dead_bytes: u64,
    /// The death number given last (death numbers are what `DeadSettled` names).
    #[serde(default)]
    last_dead: u64,
    /// The definitions entry that set `limits` (0: the declare's). Absent from queues
    /// written before policies reached groups: the declare's.
    #[serde(default)]
    limits_at: u64,
    /// Per writer of [`Command::EnqueueFrom`] (by its id), the last entries it had
    /// applied: a retried entry is enqueued once (`machine/writers.rs`). Absent from
    /// queues written before publishes were numbered: none.
    #[serde(default)]
    writers: BTreeMap<u64, writers::Writer>,
}

impl<M: Clone + Weighed> QueueMachine<M> {
    /// An empty queue with `limits`.
    pub fn new(limits: Limits) -> Self {
        QueueMachine {
            limits,
            next_id: 1,
            ready: BTreeMap::new(),
            ready_bytes: 0,
            checked_out: BTreeMap::new(),
            consumers: BTreeMap::new(),
            service: VecDeque::new(),
            held_bytes: 0,
            clock_ms: 0,
            next_seq: 0,
            touches: 0,
            dead: BTreeMap::new(),
            dead_bytes: 0,
            last_dead: 0,
            limits_at: 0,
            writers: BTreeMap::new(),
        }
    }

    /// Applies one committed command, then checks ready messages out to the
    /// consumers with credit.
    pub fn apply(&mut self, command: Command<M>) -> Applied<M> {
        let mut out = Applied {
            enqueued: Vec::new(),
            dead: Vec::new(),
            purged: 0,
            checkouts: Vec::new(),
        };
        self.apply_one(command, &mut out);
        self.checkout(&mut out);
        out
    }

    fn apply_one(&mut self, command: Command<M>, out: &mut Applied<M>) {
        match command {
            Command::Enqueue(messages) => {
                for m in messages {
                    let id = self.enqueue(m, out);
                    out.enqueued.push(id);
                }
            }
            Command::EnqueueFrom {
                writer,
                seq,
                messages,
            } => self.enqueue_from(writer, seq, messages, out),
            Command::Deliver { to, ids } => {
                for id in ids {
                    // A message settled or delivered since the leader chose it (a
                    // stale proposal of an old leader) is skipped.
                    if let Some(mut h) = self.take_ready(id) {
                        if self.is_expired(&h) {
                            self.died(h.message, DeadReason::Expired, &mut out.dead);
                            continue;
                        }
                        h.deliveries = h.deliveries.saturating_add(1);
                        self.checked_out.insert(id, (to, h));
                        if let Some(c) = self.consumers.get_mut(&to) {
                            c.held += 1;
                        }
                    }
                }
            }
            Command::Settle { ids, how } => {
                for id in ids {
                    let Some((holder, mut h)) = self.checked_out.remove(&id) else {
                        continue;
                    };
                    self.freed(holder);
                    match how {
                        Settle::Ack => self.gone(&h.message),
                        Settle::Reject => self.died(h.message, DeadReason::Rejected, &mut out.dead),
                        Settle::Requeue => self.give_back(id, h, &mut out.dead),
                        Settle::Unsent => {
                            h.deliveries = h.deliveries.saturating_sub(1);
                            self.ready_bytes += h.message.body_len() as u64;
                            self.ready.insert(id, h);
                        }
                    }
                }
            }
            Command::Return {
                keep_node,
                consumer,
            } => {
                let concerned = |c: &ConsumerKey| match consumer {
                    Some(only) => *c == only,
                    None => Some(c.node) != keep_node,
                };
                let back: Vec<u64> = self
                    .checked_out
                    .iter()
                    .filter(|(_, (c, _))| concerned(c))
                    .map(|(id, _)| *id)
                    .collect();
                for id in back {
                    let (_, h) = self.checked_out.remove(&id).expect("listed");
                    self.give_back(id, h, &mut out.dead);
                }
                self.consumers.retain(|c, _| !concerned(c));
                self.service.retain(|c| !concerned(c));
            }
            Command::Purge => {
                out.purged += self.ready.len() as u64;
                for h in std::mem::take(&mut self.ready).into_values() {
                    self.gone(&h.message);
                }
                self.ready_bytes = 0;
            }
            Command::Consume {
                consumer,
                credit,
                origin,
            } => {
                let credit = credit.max(1);
                let c = match self.consumers.entry(consumer) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        self.next_seq += 1;
                        v.insert(Attached {
                            credit,
                            held: 0,
                            seq: self.next_seq,
                            origin: None,
                        })
                    }
                };
                c.credit = credit;
                if origin.is_some() {
                    c.origin = origin;
                }
                let serve = c.held < c.credit;
                let listed = self.service.contains(&consumer);
                if serve && !listed {
                    self.service.push_back(consumer);
                } else if !serve && listed {
                    self.service.retain(|c| *c != consumer);
                }
            }
            Command::Cancel { consumer } => {
                self.consumers.remove(&consumer);
                self.service.retain(|c| *c != consumer);
            }
            Command::Batch(commands) => {
                // Each as if in its own entry: the same queue and answers either way.
                for c in commands {
                    self.apply_one(c, out);
                    self.checkout(out);
                }
            }
            Command::Clock { now_ms } => {
                self.clock_ms = self.clock_ms.max(now_ms);
                self.expire_head(&mut out.dead);
            }
            Command::Touch => self.touches += 1,
            Command::DeadSettled { ids } => self.settle_dead(ids),
            Command::SetLimits { at, limits } => self.set_limits(at, limits, &mut out.dead),
        }
    }

    /// Past its deadline on the machine's clock.
    fn is_expired(&self, h: &Held<M>) -> bool {
        h.expires_at.is_some_and(|d| d < self.clock_ms)
    }

    /// The ready messages at the head past their deadline are dead, up to the first
    /// that is not (only the head expires).
    fn expire_head(&mut self, dead: &mut Vec<(M, DeadReason)>) {
        while let Some((&id, h)) = self.ready.iter().next() {
            if !self.is_expired(h) {
                return;
            }
            let h = self.take_ready(id).expect("the head");
            self.died(h.message, DeadReason::Expired, dead);
        }
    }

    /// Hands ready messages, in queue order, to the consumers with credit, one at a
    /// time in turn; a head past its deadline (a message returned after it) is dead
    /// instead.
    fn checkout(&mut self, out: &mut Applied<M>) {
        if self.limits.single_active {
            return self.checkout_to_active(out);
        }
        while let Some(key) = self.service.pop_front() {
            self.expire_head(&mut out.dead);
            let Some(&id) = self.ready.keys().next() else {
                self.service.push_front(key);
                return;
            };
            let Some(c) = self.consumers.get_mut(&key) else {
                continue;
            };
            c.held += 1;
            if c.held < c.credit {
                self.service.push_back(key);
            }
            let mut h = self.take_ready(id).expect("the head");
            h.deliveries = h.deliveries.saturating_add(1);
            self.checked_out.insert(id, (key, h));
            out.checkouts.push((key, id));
        }
    }

    /// [`Self::checkout`] with a single active consumer: to it only, up to its
    /// credit (the turn order is kept up to date but not used).
    fn checkout_to_active(&mut self, out: &mut Applied<M>) {
        let Some(key) = self.active_consumer() else {
            return;
        };
        loop {
            if self.consumers.get(&key).is_none_or(|c| c.held >= c.credit) {
                return;
            }
            self.expire_head(&mut out.dead);
            let Some(&id) = self.ready.keys().next() else {
                return;
            };
            if let Some(c) = self.consumers.get_mut(&key) {
                c.held += 1;
            }
            let mut h = self.take_ready(id).expect("the head");
            h.deliveries = h.deliveries.saturating_add(1);
            self.checked_out.insert(id, (key, h));
            out.checkouts.push((key, id));
        }
    }

    /// A checkout of `holder` was settled or returned: its credit back.
    fn freed(&mut self, holder: ConsumerKey) {
        if let Some(c) = self.consumers.get_mut(&holder) {
            let was_full = c.held >= c.credit;
            c.held = c.held.saturating_sub(1);
            if was_full && c.held < c.credit {
                self.service.push_back(holder);
            }
        }
    }

    /// A message left the queue (acked, dead, dropped, purged).
    fn gone(&mut self, message: &M) {
        self.held_bytes = self
            .held_bytes
            .saturating_sub(message.accounted_len() as u64);
    }

    /// One publish: checked out at once if a consumer has credit (then it does not
    /// count against a length limit, as in a classic queue and RabbitMQ's), else
    /// ready, the head dropped past a limit.
    fn enqueue(&mut self, message: M, out: &mut Applied<M>) -> Option<u64> {
        let size = message.body_len() as u64;
        if self.limits.reject_publish && self.is_full(0, 0) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.ready_bytes += size;
        self.held_bytes += message.accounted_len() as u64;
        let ttl = [self.limits.message_ttl, message.ttl_ms()]
            .into_iter()
            .flatten()
            .min();
        self.ready.insert(
            id,
            Held {
                message,
                deliveries: 0,
                expires_at: ttl.map(|t| self.clock_ms.saturating_add(t)),
            },
        );
        self.checkout(out);
        self.drop_head_over(&mut out.dead);
        Some(id)
    }

    fn take_ready(&mut self, id: u64) -> Option<Held<M>> {
        let h = self.ready.remove(&id)?;
        self.ready_bytes -= h.message.body_len() as u64;
        Some(h)
    }

    /// A checked-out message comes back: to its place, or dead past the limit.
    fn give_back(&mut self, id: u64, h: Held<M>, dead: &mut Vec<(M, DeadReason)>) {
        if self
            .limits
            .delivery_limit
            .is_some_and(|limit| u64::from(h.deliveries) > limit)
        {
            self.died(h.message, DeadReason::DeliveryLimit, dead);
            return;
        }
        self.ready_bytes += h.message.body_len() as u64;
        self.ready.insert(id, h);
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
