//! The log's language for one quorum queue: the commands its leader and publishers
//! commit ([`Command`]), what they name (consumers, settlements, limits), and what
//! applying one answers ([`Applied`]).

use serde::{Deserialize, Serialize};

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
    /// Checked out but never sent (its consumer was cancelled first): back to its
    /// place as if not checked out, its delivery count as before.
    Unsent,
}

/// The queue's limits: its declare arguments merged with its policies.
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
    /// `x-message-ttl` (ms): a message at the head of the queue longer than this
    /// after its publish is dead (`expired`). Absent from groups declared before TTLs
    /// were replicated: none.
    #[serde(default)]
    pub message_ttl: Option<u64>,
    /// `x-single-active-consumer`: only the earliest registered consumer is given
    /// messages; when it goes (cancelled or returned) the next one in registration
    /// order takes over.
    #[serde(default)]
    pub single_active: bool,
    /// `x-expires` (ms): not the machine's to act on (it has no clock of its own).
    /// The group's leader deletes the queue once it has been unused this long, on its
    /// own clock, counting [`Command::Touch`]es, gets and consumers as uses (see the
    /// queue actor's `replica/lease.rs`). Absent from groups declared before it was
    /// replicated: none.
    #[serde(default)]
    pub expires: Option<u64>,
    /// `x-dead-letter-strategy = at-least-once` with `x-overflow = reject-publish`
    /// (without reject-publish RabbitMQ, and so this broker, dead-letters at most
    /// once): a dead message stays in the queue, counted against the length limits
    /// and never delivered, until the leader's republish of it is confirmed and
    /// [`Command::DeadSettled`] commits. Absent from groups declared before it: false.
    #[serde(default)]
    pub at_least_once: bool,
}

/// One command of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command<M> {
    /// Publishes, in order (a batch of one group commit).
    Enqueue(Vec<M>),
    /// A one-off checkout the leader names (`basic.get`): these messages go to `to`.
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
    /// Every checkout of consumers on nodes other than `keep_node` goes back and those
    /// consumers are dropped (a new leader), or of `consumer` only (its owner went).
    Return {
        /// Return the checkouts of every node but this one (`None`: keep none).
        keep_node: Option<u64>,
        /// Return only this consumer's checkouts.
        consumer: Option<ConsumerKey>,
    },
    /// Every ready message goes (checked-out ones stay).
    Purge,
    /// Registers `consumer` (or changes its credit): from now on the machine checks
    /// messages out to it while it holds fewer than `credit` unsettled.
    Consume {
        /// The consumer.
        consumer: ConsumerKey,
        /// Most unsettled checkouts (its prefetch; at least 1).
        credit: u32,
        /// A consumer made for one on a node that does not lead (through a consume
        /// session): that node and its id there, kept so that every member can tell
        /// whether it is the single active one. `None` keeps what was registered.
        #[serde(default)]
        origin: Option<ConsumerKey>,
    },
    /// `consumer` takes nothing more; what it holds stays checked out to it until
    /// settled or returned.
    Cancel {
        /// The consumer.
        consumer: ConsumerKey,
    },
    /// Several of the leader's commands in one entry, applied in order (its
    /// deliveries and settlements made while the previous entry committed).
    Batch(Vec<Command<M>>),
    /// The leader's wall clock read `now_ms` (ms since the Unix epoch) when it wrote
    /// this: the machine, which has no clock of its own, moves its clock there (never
    /// back), and the ready messages at the head whose deadline has passed are dead
    /// (`expired`). The leader writes one before every publish batch (the batch's TTLs
    /// count from it) and when the head's deadline passes.
    Clock {
        /// Milliseconds since the Unix epoch, on the leader.
        now_ms: u64,
    },
    /// The queue was used on some node (a redeclare, which any node answers itself):
    /// the machine counts it ([`super::QueueMachine::touches`]), so that the group's
    /// leader, wherever the redeclare was made, renews the queue's `x-expires` lease.
    Touch,
    /// At-least-once dead-lettering: the leader's republish of these kept dead
    /// messages (by death number) was confirmed by the queues it routed to, or they
    /// can go nowhere for good (a dead-letter cycle, no dead-letter exchange
    /// configured): they leave the queue. A number already gone is skipped (two
    /// leaders may both have republished a message; the second settle is a no-op).
    DeadSettled {
        /// Death numbers ([`super::DeadLetter::id`]).
        ids: Vec<u64>,
    },
    /// A policy changed the queue's limits: the definitions log's entry `at` (its
    /// index) gave it `limits` (its arguments merged with the policies then). Written
    /// by the group's leader once its node has applied that entry, and again by a new
    /// leader whose machine is behind the definitions, so every member switches at
    /// this entry. A change not newer than the machine's (`at` at most
    /// [`super::QueueMachine::limits_at`]: an older leader's, written late) is
    /// skipped. A lower `x-max-length(-bytes)` with drop-head drops from the head at
    /// once; with reject-publish the next publishes are refused; a new `message-ttl`
    /// counts for the messages published from now on (see `machine/limits.rs`).
    SetLimits {
        /// The index of the definitions entry that set them.
        at: u64,
        /// The limits from now on.
        limits: Limits,
    },
    /// Publishes, in order, as entry `seq` of `writer`: skipped (answered as when first
    /// applied) when the machine has applied that entry, or a later one of the same
    /// writer, already. What a node's publisher writes, so that an entry it writes
    /// again after a lost answer is not enqueued twice (`machine/writers.rs`). Last
    /// of the variants: an encoding that numbered them would keep the others' numbers.
    EnqueueFrom {
        /// The writer: a publisher's run, a random id drawn when it starts.
        writer: u64,
        /// The entry's number among the writer's, from 1, in the order it proposes
        /// them.
        seq: u64,
        /// The publishes.
        messages: Vec<M>,
    },
}

impl<M> Command<M> {
    /// The publishes of an [`Enqueue`](Command::Enqueue) or
    /// [`EnqueueFrom`](Command::EnqueueFrom) alone (not inside a batch).
    pub fn publishes(&self) -> Option<&[M]> {
        match self {
            Command::Enqueue(m) | Command::EnqueueFrom { messages: m, .. } => Some(m),
            _ => None,
        }
    }
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
    /// At the head of the queue past its TTL (`x-message-ttl` or its `expiration`).
    Expired,
}

/// What applying a command answered (the same on every member).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<M> {
    /// Per enqueued message: its id, or `None` when refused (reject-publish).
    pub enqueued: Vec<Option<u64>>,
    /// Messages that died, for the leader to dead-letter at most once (none with
    /// [`Limits::at_least_once`]: the queue keeps its dead, see [`Command::DeadSettled`]).
    pub dead: Vec<(M, DeadReason)>,
    /// Messages purged.
    pub purged: u64,
    /// Messages checked out to registered consumers by this command, in order: the
    /// leader's node sends them (every member computes the same list).
    pub checkouts: Vec<(ConsumerKey, u64)>,
}
