//! The state machine of one quorum queue: what every member of its Raft group applies,
//! in log order, to reach the same queue. Pure: no I/O, no clock, no actix; every input
//! is a [`Command`] in a committed entry, so each member (and a member rebuilt from a
//! snapshot) holds exactly the same messages, delivery counts and checkouts.
//!
//! - Messages get their id from the order they are applied in: ids increase in publish
//!   order, which is the queue's order. Many publishes travel in one
//!   [`Command::Enqueue`] (one entry, one fsync per group commit).
//! - The leader's node serves consumers. Before it hands a message out it records the
//!   delivery ([`Command::Deliver`]); what it hands out is therefore known to every
//!   member, so a new leader redelivers it marked (redelivered, delivery count) and a
//!   message acked ([`Command::Settle`]) before a failover is never delivered again.
//! - A new leader (or a consumer gone) returns the checkouts of consumers it no longer
//!   serves ([`Command::Return`]).
//! - A returned message goes back to its place (ids order the ready set), as RabbitMQ
//!   does; past `x-delivery-limit` it is dead instead (to be dead-lettered by the
//!   leader when the queue has a dead-letter exchange, else dropped).
//! - `x-max-length(-bytes)` with `x-overflow` drop-head or reject-publish.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the machine needs to know of a message: its body's size (for
/// `x-max-length-bytes`).
pub trait Weighed {
    /// Bytes of the body.
    fn body_len(&self) -> usize;
}

/// Who a checkout belongs to: a node and a consumer on it. Consumers are served on
/// the leader's node, so a leader change returns every checkout of another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsumerKey {
    /// The node serving the consumer.
    pub node: u64,
    /// The consumer's id on that node.
    pub consumer: u64,
}

/// What a settlement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settle {
    /// Done with: the message leaves the queue.
    Ack,
    /// Nack / reject with requeue: back to its place, its delivery count kept.
    Requeue,
    /// Nack / reject without requeue: the message is dead (dead-lettered or dropped).
    Reject,
}

/// The queue's limits, from its declare arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow = reject-publish` (else drop-head).
    pub reject_publish: bool,
    /// `x-delivery-limit`: a message returned more often is dead.
    pub delivery_limit: Option<u64>,
}

/// One command of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command<M> {
    /// Publishes, in order (a batch of one group commit).
    Enqueue(Vec<M>),
    /// The leader hands these messages to `to`.
    Deliver {
        /// The consumer.
        to: ConsumerKey,
        /// Message ids, each ready.
        ids: Vec<u64>,
    },
    /// Settlements of checked-out messages.
    Settle {
        /// Message ids.
        ids: Vec<u64>,
        /// What becomes of them.
        how: Settle,
    },
    /// Every checkout of consumers on nodes other than `keep_node` goes back (a new
    /// leader), or of `consumer` only.
    Return {
        /// Return the checkouts of every node but this one (`None`: keep none).
        keep_node: Option<u64>,
        /// Return only this consumer's checkouts.
        consumer: Option<ConsumerKey>,
    },
    /// Every ready message goes (checked-out ones stay).
    Purge,
    /// Several of the leader's commands in one entry, applied in order (its
    /// deliveries and settlements made while the previous entry committed).
    Batch(Vec<Command<M>>),
}

/// Why a message left the queue dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadReason {
    /// Rejected without requeue.
    Rejected,
    /// Dropped from the head by a length limit.
    MaxLen,
    /// Returned more often than `x-delivery-limit`.
    DeliveryLimit,
}

/// What applying a command answered (the same on every member).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<M> {
    /// Per enqueued message: its id, or `None` when refused (reject-publish).
    pub enqueued: Vec<Option<u64>>,
    /// Messages that died, for the leader to dead-letter.
    pub dead: Vec<(M, DeadReason)>,
    /// Messages purged.
    pub purged: u64,
}

/// A message in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Held<M> {
    message: M,
    /// Deliveries so far.
    deliveries: u32,
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
/// let ids = q.apply(Command::Enqueue(vec![Body(b"a".to_vec()), Body(b"b".to_vec())])).enqueued;
/// assert_eq!(ids, [Some(1), Some(2)]);
/// let to = ConsumerKey { node: 1, consumer: 1 };
/// q.apply(Command::Deliver { to, ids: vec![1] });
/// q.apply(Command::Settle { ids: vec![1], how: Settle::Requeue });
/// // Back at its place, counted as delivered once.
/// let head = q.peek(1).next().unwrap();
/// assert_eq!((head.id, head.deliveries), (1, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueMachine<M> {
    limits: Limits,
    next_id: u64,
    ready: BTreeMap<u64, Held<M>>,
    ready_bytes: u64,
    checked_out: BTreeMap<u64, (ConsumerKey, Held<M>)>,
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
        }
    }

    /// Ready messages.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Checked-out (delivered, unsettled) messages.
    pub fn checked_out_len(&self) -> usize {
        self.checked_out.len()
    }

    /// Who holds checked-out message `id` (the leader checks a committed `Deliver`
    /// took effect before it sends the message).
    pub fn holder(&self, id: u64) -> Option<ConsumerKey> {
        self.checked_out.get(&id).map(|(c, _)| *c)
    }

    /// The first `n` ready messages, in queue order: what the leader may hand out next.
    pub fn peek(&self, n: usize) -> impl Iterator<Item = Ready<'_, M>> {
        self.ready.iter().take(n).map(|(id, h)| Ready {
            id: *id,
            message: &h.message,
            deliveries: h.deliveries,
        })
    }

    /// Applies one committed command.
    pub fn apply(&mut self, command: Command<M>) -> Applied<M> {
        let mut out = Applied {
            enqueued: Vec::new(),
            dead: Vec::new(),
            purged: 0,
        };
        match command {
            Command::Enqueue(messages) => {
                for m in messages {
                    let id = self.enqueue(m, &mut out.dead);
                    out.enqueued.push(id);
                }
            }
            Command::Deliver { to, ids } => {
                for id in ids {
                    // A message settled or delivered since the leader chose it (a
                    // stale proposal of an old leader) is skipped.
                    if let Some(mut h) = self.take_ready(id) {
                        h.deliveries = h.deliveries.saturating_add(1);
                        self.checked_out.insert(id, (to, h));
                    }
                }
            }
            Command::Settle { ids, how } => {
                for id in ids {
                    let Some((_, h)) = self.checked_out.remove(&id) else {
                        continue;
                    };
                    match how {
                        Settle::Ack => {}
                        Settle::Reject => out.dead.push((h.message, DeadReason::Rejected)),
                        Settle::Requeue => self.give_back(id, h, &mut out.dead),
                    }
                }
            }
            Command::Return {
                keep_node,
                consumer,
            } => {
                let back: Vec<u64> = self
                    .checked_out
                    .iter()
                    .filter(|(_, (c, _))| match consumer {
                        Some(only) => *c == only,
                        None => Some(c.node) != keep_node,
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in back {
                    let (_, h) = self.checked_out.remove(&id).expect("listed");
                    self.give_back(id, h, &mut out.dead);
                }
            }
            Command::Purge => {
                out.purged = self.ready.len() as u64;
                self.ready.clear();
                self.ready_bytes = 0;
            }
            Command::Batch(commands) => {
                for c in commands {
                    let a = self.apply(c);
                    out.enqueued.extend(a.enqueued);
                    out.dead.extend(a.dead);
                    out.purged += a.purged;
                }
            }
        }
        out
    }

    fn enqueue(&mut self, message: M, dead: &mut Vec<(M, DeadReason)>) -> Option<u64> {
        let size = message.body_len() as u64;
        if self.limits.reject_publish && self.is_full(0, 0) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.ready_bytes += size;
        self.ready.insert(
            id,
            Held {
                message,
                deliveries: 0,
            },
        );
        if !self.limits.reject_publish {
            // drop-head: the oldest ready messages make room.
            while self.is_over() {
                let Some((&head, _)) = self.ready.iter().next() else {
                    break;
                };
                let h = self.take_ready(head).expect("the head");
                dead.push((h.message, DeadReason::MaxLen));
            }
        }
        Some(id)
    }

    /// At or over a limit (before adding `len` messages of `bytes`).
    fn is_full(&self, len: u64, bytes: u64) -> bool {
        let n = self.ready.len() as u64 + len;
        let b = self.ready_bytes + bytes;
        self.limits.max_length.is_some_and(|m| n >= m)
            || self.limits.max_length_bytes.is_some_and(|m| b >= m)
    }

    /// Over a limit.
    fn is_over(&self) -> bool {
        self.limits
            .max_length
            .is_some_and(|m| self.ready.len() as u64 > m)
            || self
                .limits
                .max_length_bytes
                .is_some_and(|m| self.ready_bytes > m)
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
            dead.push((h.message, DeadReason::DeliveryLimit));
            return;
        }
        self.ready_bytes += h.message.body_len() as u64;
        self.ready.insert(id, h);
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
