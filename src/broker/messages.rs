//! Every actor message of the broker core, in one place, named by intent, each with its
//! reply type.
//!
//! These are what a protocol front end (the native connection today, AMQP 0-9-1 later)
//! and an embedding application send. They carry no wire types. Choice of send mode is
//! part of the contract and documented on each message: `send().await` where the reply
//! is the flow control, `do_send` where a window or credit already bounds the traffic.

use crate::broker::exchange::ExchangeSpec;
use crate::broker::queue::{QueueHandle, QueueSpec};
use crate::error::BrokerError;
use crate::message::{FieldTable, Message};
use actix::prelude::*;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Identifies the connection or embedded session that owns exclusive queues and unacked
/// deliveries. When the owner goes, its exclusive queues are deleted and its unacked
/// deliveries requeued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(pub u64);

// ---------------------------------------------------------------- registry (per vhost)

/// Declares an exchange, or with `passive` checks that it exists.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeclareExchange {
    /// Name and settings.
    pub spec: ExchangeSpec,
    /// Only check existence (NOT_FOUND when absent); settings are not compared.
    pub passive: bool,
}

/// Deletes an exchange and every binding to or from it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeleteExchange {
    /// The exchange.
    pub name: String,
    /// Refuse (PRECONDITION_FAILED) while the exchange has bindings.
    pub if_unused: bool,
}

/// What a queue declare answers: the name (generated when asked with an empty one) and
/// the current counts, as AMQP's `queue.declare-ok` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDeclared {
    /// The queue's name.
    pub name: String,
    /// Messages ready for delivery.
    pub messages: u64,
    /// Consumers attached.
    pub consumers: u32,
    /// In a cluster, on a node that is not the queue's home: the home, whose counts
    /// [`QueueDeclared::with_home_counts`] asks for (the counts above are then zeros).
    #[doc(hidden)]
    pub home: AskHome,
}

/// A stand-in's home to ask for a declare's counts (see [`QueueDeclared`]).
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct AskHome(pub(crate) Option<Arc<crate::cluster::Home>>);

impl std::fmt::Debug for AskHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(home) => write!(f, "AskHome({})", home.describe()),
            None => f.write_str("AskHome(none)"),
        }
    }
}

/// Whether there is a home to ask, not which: two answers for the same queue compare
/// equal by their counts.
impl PartialEq for AskHome {
    fn eq(&self, other: &Self) -> bool {
        self.0.is_some() == other.0.is_some()
    }
}

impl Eq for AskHome {}

impl QueueDeclared {
    /// The queue's real counts: through a node that is not the queue's home, asked of
    /// the home (RabbitMQ answers a declare with them from any node), within a
    /// deadline; `NOT_FOUND` naming the home when it cannot be asked. Called by the
    /// declare's caller once the registry has answered, so that no registry waits on
    /// another node.
    pub async fn with_home_counts(mut self) -> Result<Self, BrokerError> {
        if let Some(home) = self.home.0.take() {
            let counts = home.declare_counts().await?;
            self.messages = counts.messages;
            self.consumers = counts.consumers;
        }
        Ok(self)
    }
}

/// Declares a queue, or with `passive` checks that it exists.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<QueueDeclared, BrokerError>")]
pub struct DeclareQueue {
    /// Name (empty = generate one) and settings.
    pub spec: QueueSpec,
    /// Only check existence.
    pub passive: bool,
    /// The declaring connection or session: owner of an exclusive queue.
    pub owner: OwnerId,
    /// Where to run a new queue's actor: the declaring connection's arbiter, so that a
    /// connection consuming from the queue it declared crosses no thread per delivery
    /// (RabbitMQ places a queue on the declaring connection's node likewise). `None` =
    /// round-robin over the workers.
    pub placement: Option<actix::ArbiterHandle>,
}

/// Deletes a queue; answers the number of messages it held.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct DeleteQueue {
    /// The queue.
    pub name: String,
    /// Refuse while the queue has consumers.
    pub if_unused: bool,
    /// Refuse while the queue holds messages.
    pub if_empty: bool,
    /// `if_empty` counts ready messages only, as RabbitMQ does (AMQP); otherwise
    /// unacked and delayed ones count too.
    pub ready_only: bool,
    /// Who asks (an exclusive queue may be deleted by its owner only).
    pub owner: OwnerId,
}

/// Removes every ready message of a queue; answers how many.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct PurgeQueue {
    /// The queue.
    pub name: String,
    /// Who asks.
    pub owner: OwnerId,
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindTarget {
    /// A queue, by name.
    Queue(String),
    /// An exchange, by name (exchange-to-exchange binding).
    Exchange(String),
}

impl BindTarget {
    /// The target's name.
    pub fn name(&self) -> &str {
        match self {
            BindTarget::Queue(n) | BindTarget::Exchange(n) => n,
        }
    }
}

/// Adds a binding from an exchange to a queue or exchange (idempotent).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct Bind {
    /// The source exchange.
    pub exchange: String,
    /// The destination.
    pub target: BindTarget,
    /// The binding key.
    pub routing_key: String,
    /// Binding arguments (headers exchanges match on them).
    pub arguments: FieldTable,
    /// Who asks (exclusive queues are bound by their owner only).
    pub owner: OwnerId,
}

/// Removes a binding (succeeds when it does not exist, as RabbitMQ does).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct Unbind {
    /// The binding to remove, matched on all of exchange, target, key and arguments.
    pub binding: Bind,
}

/// Finds an exchange to publish to.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<crate::broker::exchange::ExchangeHandle, BrokerError>")]
pub struct LookupExchange {
    /// The exchange.
    pub name: String,
}

/// Finds a queue to consume from or get; refuses an exclusive queue of another owner.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<QueueHandle, BrokerError>")]
pub struct LookupQueue {
    /// The queue.
    pub name: String,
    /// Who asks.
    pub owner: OwnerId,
}

/// An owner (connection or session) has gone: delete its exclusive queues.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct OwnerGone(pub OwnerId);

/// A queue deleted itself (auto-delete, expiry): forget it and its bindings.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct QueueGone {
    /// The queue's name.
    pub name: Arc<str>,
    /// The queue's incarnation, so a stale notice cannot remove a newer queue of the same
    /// name.
    pub incarnation: u64,
}

/// A replicated quorum queue's group leader found the queue unused for its
/// `x-expires` period: the registry has its delete committed through the definitions
/// log, as any `queue.delete` is, so every node deletes it (and its group) once the
/// entry applies there, the leader's node included. Answers once committed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct QueueUnused {
    /// The queue's name.
    pub name: Arc<str>,
    /// The queue's incarnation: a notice of an earlier queue of the same name (deleted
    /// and declared again meanwhile) deletes nothing.
    pub incarnation: u64,
}

// ------------------------------------------------------------------------- publishing

/// The outcome of one published message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    /// How many queues took it (0 = unroutable, or refused everywhere). A message routed
    /// through an alternate exchange counts the queues it reached there.
    pub queues: u32,
    /// Set when a queue refused it (a full queue with `x-overflow` reject-publish, or a
    /// property the broker cannot read): the publisher gets a nack with this error, as
    /// RabbitMQ nacks a message any of its queues rejected. Queues that took it keep it.
    pub refused: Option<BrokerError>,
    /// A dead letter dropped at queues it reached because it would close a dead-letter
    /// cycle: routed nowhere for good, not for want of a binding (an at-least-once
    /// dead-lettering settles it instead of retrying it).
    pub cycle: bool,
}

impl Routed {
    /// Reached `n` queues, refused by none.
    pub fn to(queues: u32) -> Self {
        Routed {
            queues,
            refused: None,
            cycle: false,
        }
    }

    /// Refused with `e`.
    pub fn refused(e: BrokerError) -> Self {
        Routed {
            queues: 0,
            refused: Some(e),
            cycle: false,
        }
    }

    /// Adds what another destination (a custom exchange actor, the alternate exchange)
    /// answered for the same message.
    pub fn merge(&mut self, other: Routed) {
        self.queues += other.queues;
        self.cycle |= other.cycle;
        if self.refused.is_none() {
            self.refused = other.refused;
        }
    }
}

impl From<u32> for Routed {
    fn from(queues: u32) -> Self {
        Routed::to(queues)
    }
}

/// A batch of messages published to an exchange.
///
/// Sent with `do_send`: the publisher's window of in-flight batches (waiting on `reply`)
/// is the bound, and a reply channel (rather than `send()`'s) means the batch is handled
/// even if the publisher stops waiting.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The messages, in publish order.
    pub messages: Vec<Arc<Message>>,
    /// Exchanges this batch already passed through (exchange-to-exchange loop guard).
    pub hops: Vec<Arc<str>>,
    /// Answered once every message is in every queue it routes to.
    pub reply: Option<oneshot::Sender<Result<Vec<Routed>, BrokerError>>>,
    /// True when a queue is dead-lettering these messages: the exchange then drops a
    /// message rather than close a dead-letter cycle (see
    /// [`crate::broker::queue::dead_letter::is_cycle`]). False for every publisher.
    pub dead_letter: bool,
    /// The connection or session that published the batch (None for dead letters):
    /// a queue whose flow control holds publishers must not wait on that owner's own
    /// acks, which sit unread behind its held publishes (see the queue actor's flow).
    pub publisher: Option<OwnerId>,
}

/// A batch of routed messages for one queue. Sent with `send()`: the exchange awaits the
/// answer before it answers the publisher, so a slow queue holds the publisher back.
#[derive(Message)]
#[rtype(result = "Result<Enqueued, BrokerError>")]
pub struct Enqueue {
    /// The messages, in order.
    pub messages: Vec<Arc<Message>>,
    /// Who published them ([`Publish::publisher`]).
    pub publisher: Option<OwnerId>,
    /// The publisher is known to consume from this queue with acks although it is no
    /// owner here: a batch forwarded by a stand-in whose session serves such a
    /// consumer. The queue's flow control then holds the answer at most
    /// `FLOW_MAX_HOLD`, as for a local publisher that consumes with acks.
    pub own_acks: bool,
    /// The publisher's answer, when this queue is the batch's one destination: the
    /// queue gives it once the batch is stored, instead of the exchange waiting.
    pub answer: Option<crate::broker::exchange::BatchAnswer>,
}

/// A queue's answer to [`Enqueue`]: which messages it refused, if any. Duplicates
/// dropped by a dedup window count as taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// Positions in the batch of the refused messages, increasing.
    pub refused: Vec<u32>,
    /// Why (RESOURCE_ERROR naming the queue, its limit and `x-overflow`), when some were.
    pub reason: Option<BrokerError>,
}

/// Adds a binding inside an exchange actor (sent by the registry).
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct AddBinding {
    /// Where matching messages go.
    pub destination: crate::broker::exchange::Destination,
    /// The binding key.
    pub routing_key: String,
    /// The binding arguments.
    pub arguments: FieldTable,
}

/// Removes a binding inside an exchange actor; answers whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RemoveBinding {
    /// The destination's name and kind.
    pub target: BindTarget,
    /// The binding key.
    pub routing_key: String,
    /// The binding arguments.
    pub arguments: FieldTable,
}

/// Stops an exchange actor (its exchange was deleted).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopExchange;

// ------------------------------------------------------------------------- consuming

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue's id of this delivery: what settlements name (a front end maps its
    /// delivery tags onto it). Every delivery of a message gets a new one, so settling
    /// a delivery that timed out (`x-consumer-timeout`) and was redelivered since
    /// cannot settle the redelivery.
    pub id: u64,
    /// True when the message was delivered before (requeued or recovered).
    pub redelivered: bool,
    /// How many times the message has been delivered, this delivery included.
    pub delivery_count: u32,
    /// The message, shared with every other queue it reached. Empty when `stored` is
    /// set: then that is the message.
    pub message: Arc<Message>,
    /// A stream record read back from its segment file, as it is stored, handed only
    /// to a consumer that asked for such ([`Consume::accepts_stored`]): a native
    /// connection copies its bytes into the deliver frame, so a replay neither decodes
    /// nor encodes the message's properties.
    pub stored: Option<Arc<crate::storage::stream::codec::StoredMessage>>,
    /// Consecutive stream records handed over as one item, for a consumer that takes
    /// runs ([`Consume::run_bytes`]): ids `id .. id + count`, all with this delivery's
    /// `redelivered` and `delivery_count`; `message` is empty and `stored` none. One
    /// delivery, one tracked tag range and one settlement per run instead of per
    /// record.
    pub run: Option<Box<RecordRun>>,
}

/// Stream records whose storage frames lie one after another in the same bytes (a
/// segment's mapping, or the chunk they were appended in), handed to a consumer of runs
/// as those bytes: the native connection writes them as one `deliver_run` frame
/// (docs/PROTOCOL.md 6.4.1) without looking at a record.
#[derive(Debug, Clone)]
pub struct RecordRun {
    /// The records' frames, back to back: one slice of the bytes they are stored in.
    pub records: bytes::Bytes,
    /// How many records (at least 1).
    pub count: u32,
}

impl Delivery {
    /// How many records it carries: a run's count, else 1.
    pub fn records(&self) -> u32 {
        self.run.as_ref().map_or(1, |r| r.count)
    }
}

/// A batch of deliveries to one consumer.
///
/// Queues send it with `do_send`: the consumer's credit (prefetch and transport window)
/// already bounds what is in flight. The [`Credit`] inside returns the transport window
/// to the queue when dropped: hold it until the deliveries are written out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The consumer tag given at consume time.
    pub consumer_tag: Arc<str>,
    /// The queue, for acks.
    pub queue: QueueHandle,
    /// The deliveries, in queue order.
    pub deliveries: Vec<Delivery>,
    /// Transport credit for this batch, returned on drop.
    pub credit: Credit,
}

/// Transport credit held by a consumer for one delivered batch; dropping it tells the
/// queue the consumer can take that many more.
pub struct Credit {
    pub(crate) queue: Option<QueueHandle>,
    pub(crate) consumer: u64,
    pub(crate) amount: u32,
}

impl Credit {
    /// A credit that returns nothing (for tests and synthetic deliveries).
    pub fn none() -> Self {
        Credit {
            queue: None,
            consumer: 0,
            amount: 0,
        }
    }
}

impl std::fmt::Debug for Credit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credit({})", self.amount)
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            if self.amount > 0 {
                // The fast lane: the queue may have stopped, in which case there is
                // nobody left to credit.
                q.return_credit(self.consumer, self.amount);
            }
        }
    }
}

/// Returns transport credit to a queue (sent by [`Credit`]'s drop).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ReturnCredit {
    /// The queue's id of the consumer.
    pub consumer: u64,
    /// How many deliveries the consumer can take again.
    pub amount: u32,
}

/// Tells a consumer the broker cancelled it (its queue was deleted), as RabbitMQ's
/// consumer-cancel notification does.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ConsumerCancelled {
    /// The consumer tag.
    pub consumer_tag: Arc<str>,
    /// Why.
    pub reason: String,
}

/// The broker's form of a consumer's options, built by the front ends from
/// [`crate::options::ConsumeOptions`] (or from a Consume frame).
#[derive(Debug, Clone, Default)]
pub struct ConsumerSpec {
    /// Consumer tag; empty = generated by the queue.
    pub tag: String,
    /// Maximum unacked deliveries (0 = unlimited, still bounded by the transport window).
    pub prefetch: u32,
    /// Deliveries count as acked when sent.
    pub auto_ack: bool,
    /// Refuse other consumers while this one is attached.
    pub exclusive: bool,
    /// Consumer arguments (`x-priority` and friends).
    pub arguments: FieldTable,
}

/// Attaches a consumer to a queue; answers the consumer tag.
#[derive(Message)]
#[rtype(result = "Result<Arc<str>, BrokerError>")]
pub struct Consume {
    /// The options.
    pub options: ConsumerSpec,
    /// Who consumes (owner of the unacked deliveries).
    pub owner: OwnerId,
    /// Where deliveries go.
    pub deliver: Recipient<Deliver>,
    /// Where a broker-side cancel is announced (optional).
    pub cancelled: Option<Recipient<ConsumerCancelled>>,
    /// Maximum deliveries in transit (delivered, credit not yet returned).
    pub window: u32,
    /// The consumer writes native deliver frames and takes a stream's records as they
    /// are stored ([`Delivery::stored`], its `message` empty); others are given decoded
    /// messages only.
    pub accepts_stored: bool,
    /// The consumer takes a stream's records as runs ([`Delivery::run`]) of at most
    /// this many bytes of records (a native consumer that asked with `x-actormq-runs`;
    /// the bound keeps a run's frame within the connection's frame size); 0: no runs.
    pub run_bytes: usize,
}

/// Detaches a consumer. Its unacked deliveries stay with the owner and can still be
/// acked (AMQP semantics); they are requeued when the owner goes.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct Cancel {
    /// The consumer tag.
    pub tag: String,
    /// Who asks.
    pub owner: OwnerId,
}

/// What to do with delivered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done with: remove.
    Ack,
    /// Put back where it was, marked redelivered.
    Requeue,
    /// Drop (dead-letter where configured).
    Discard,
}

/// Settles delivered messages (ack, or nack / reject with or without requeue).
///
/// Sent with `do_send`; the front end has already checked its delivery tags, so an
/// unknown id here (a delivery that timed out and went back to the queue) is skipped,
/// and the others are settled.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Settle {
    /// Who settles (must be the owner of the deliveries).
    pub owner: OwnerId,
    /// Queue ids of the messages.
    pub ids: Vec<u64>,
    /// What to do.
    pub settlement: Settlement,
}

/// Pulls one message (AMQP `basic.get`); answers it and the count left, or None.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Option<(Delivery, u64)>, BrokerError>")]
pub struct Get {
    /// Who gets (owner of the delivery when not auto-acked).
    pub owner: OwnerId,
    /// Count it acked at once.
    pub auto_ack: bool,
}

/// The owner went: drop its consumers and requeue its unacked deliveries.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Release(pub OwnerId);

/// Counts of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Messages ready for delivery.
    pub ready: u64,
    /// Delivered, not yet acked.
    pub unacked: u64,
    /// Dead messages a replicated quorum queue keeps until their at-least-once
    /// dead-lettering is confirmed (not ready, not delivered): RabbitMQ's
    /// `messages_dlx`.
    pub dead_lettering: u64,
    /// Their body bytes (`message_bytes_dlx`).
    pub dead_lettering_bytes: u64,
    /// Consumers attached.
    pub consumers: u32,
    /// Bytes of memory held (ready + unacked + delayed): bodies, properties and
    /// decoded headers, as the memory watermark counts them.
    pub bytes: u64,
    /// Messages waiting for their delay (`x-delay`, `x-delivery-delay`) to pass.
    pub delayed: u64,
    /// What the queue has done since it started (for rates).
    pub counts: MessageCounts,
}

/// Totals of what a queue did since it started: plain counters the queue actor bumps
/// as it works (no message is sent for them); the management API turns two readings
/// into rates. RabbitMQ's `message_stats` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageCounts {
    /// Messages enqueued (ready or delayed; not duplicates, not refused ones).
    pub publish: u64,
    /// Deliveries to consumers that ack.
    pub deliver: u64,
    /// Deliveries to auto-ack consumers.
    pub deliver_no_ack: u64,
    /// Messages fetched with `get` that must be acked.
    pub get: u64,
    /// Messages fetched with an auto-ack `get`.
    pub get_no_ack: u64,
    /// Deliveries and gets of messages delivered before.
    pub redeliver: u64,
    /// Deliveries acked.
    pub ack: u64,
}

impl MessageCounts {
    /// Every delivery and get (RabbitMQ's `deliver_get`).
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

/// Asks a queue for its counts.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "QueueStats")]
pub struct GetStats;

/// One consumer of a queue, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Its tag.
    pub tag: String,
    /// The channel (or native connection) it belongs to.
    pub owner: OwnerId,
    /// Maximum unacked deliveries, 0 = unlimited.
    pub prefetch: u32,
    /// False for an auto-ack consumer.
    pub ack_required: bool,
    /// False for a waiting consumer of a single-active-consumer queue.
    pub active: bool,
    /// `x-priority`.
    pub priority: i64,
}

/// Asks a queue for its consumers (read-only, for the management API).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<ConsumerInfo>")]
pub struct ListConsumers;
