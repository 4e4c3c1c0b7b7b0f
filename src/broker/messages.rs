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

mod consuming;
pub use consuming::*;
