//! The consuming side of the broker core's messages: deliveries to consumers, their
//! credit, consumes, cancels, settlements, gets, and what a queue tells about its
//! consumers and counts (re-exported by [`crate::broker::messages`]).

use super::OwnerId;
use crate::broker::queue::QueueHandle;
use crate::error::BrokerError;
use crate::message::{FieldTable, Message};
use actix::prelude::*;
use std::sync::Arc;

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
    /// Never reached its client (its consumer was cancelled, or its asker gone, before
    /// it was written): back where it was as if never delivered, so it is neither
    /// marked redelivered nor brought nearer `x-delivery-limit` by an attempt that
    /// never happened. Not a client's settlement: the broker's own, for deliveries it
    /// dropped on their way (a forwarded consumer's, a consume session's unread).
    Unsent,
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

/// Counts of a queue. Carried between cluster nodes for a management listing
/// (`Rpc::QueueStats`): a change of its fields is a cluster protocol change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
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
