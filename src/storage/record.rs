//! What a queue appends to a [`MessageStore`](super::MessageStore), and what recovery
//! answers. Plain data: a queue is named by its virtual host and name, a message by the
//! queue-local, increasing `u64` id the queue gave it.

use crate::message::Message;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A durable queue, by virtual host and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    /// The virtual host.
    pub vhost: Arc<str>,
    /// The queue's name within it.
    pub name: Arc<str>,
}

impl QueueId {
    /// The queue `name` of `vhost`.
    pub fn new(vhost: &str, name: &str) -> Self {
        QueueId {
            vhost: Arc::from(vhost),
            name: Arc::from(name),
        }
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queue '{}' in vhost '{}'", self.name, self.vhost)
    }
}

/// One change to the durable state of a queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A persistent message entered a durable queue with `id` (ids increase within a
    /// queue; a requeue does not append anything).
    Publish {
        /// The queue.
        queue: QueueId,
        /// The queue-local id.
        id: u64,
        /// The message: exchange, routing key, properties and body.
        message: Arc<Message>,
    },
    /// Messages left the queue for good: acked, or removed by TTL, a length limit or
    /// dead-lettering. Unknown ids are ignored (they may have been reclaimed already).
    Ack {
        /// The queue.
        queue: QueueId,
        /// The ids removed.
        ids: Vec<u64>,
    },
    /// Every message with an id up to `up_to` may have been delivered: after a restart
    /// those still stored come back marked redelivered. Only the highest value counts.
    Delivered {
        /// The queue.
        queue: QueueId,
        /// The highest id handed to a consumer so far.
        up_to: u64,
    },
    /// Messages delivered more than once so far, with their number of deliveries (the
    /// delivery being made included). A first delivery needs no such record: the
    /// `Delivered` watermark covers it. Only the highest count of an id counts; written
    /// again at the start of every segment for the messages still live, like the
    /// watermark, so that reclaiming old segments never loses a count. Added after the
    /// first version of the log: a log without any recovers with counts of 1 at most.
    DeliveryCounts {
        /// The queue.
        queue: QueueId,
        /// (id, deliveries so far) pairs.
        counts: Vec<(u64, u32)>,
    },
    /// A purge: every message with an id below `below` is removed, except the ids in
    /// `except` (the unacked deliveries, which a purge leaves alone, as in RabbitMQ).
    Purge {
        /// The queue.
        queue: QueueId,
        /// The queue's next id at the time of the purge.
        below: u64,
        /// The ids that stay (delivered, not yet settled).
        except: Vec<u64>,
    },
    /// The queue was deleted with everything in it.
    DeleteQueue {
        /// The queue.
        queue: QueueId,
    },
}

impl Record {
    /// The queue the record is about.
    pub fn queue(&self) -> &QueueId {
        match self {
            Record::Publish { queue, .. }
            | Record::Ack { queue, .. }
            | Record::Delivered { queue, .. }
            | Record::DeliveryCounts { queue, .. }
            | Record::Purge { queue, .. }
            | Record::DeleteQueue { queue } => queue,
        }
    }
}

/// A message that survived, as recovery answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredMessage {
    /// The queue-local id it was published with.
    pub id: u64,
    /// True when it may have been delivered before the restart (id at or below the
    /// queue's delivered watermark).
    pub redelivered: bool,
    /// How many times it may have been delivered before the restart: its highest
    /// `DeliveryCounts` count, else 1 when `redelivered`, else 0. Its next delivery
    /// carries one more.
    pub deliveries: u32,
    /// The message.
    pub message: Arc<Message>,
}

/// A message that survived whose body recovery left on disk (a long queue's backlog:
/// see `storage.queue_ram_messages`); the queue reads it with
/// [`MessageStore::read`](super::MessageStore::read) when it gets near the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedMessage {
    /// The queue-local id it was published with.
    pub id: u64,
    /// As for [`RecoveredMessage::redelivered`].
    pub redelivered: bool,
    /// As for [`RecoveredMessage::deliveries`].
    pub deliveries: u32,
    /// About its size in bytes (its stored record), for length limits until it is read.
    pub size: u32,
}

/// One queue as recovery answers it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecoveredQueue {
    /// The surviving messages, ids increasing.
    pub messages: Vec<RecoveredMessage>,
    /// The surviving messages after those, ids increasing, bodies left on disk (empty
    /// unless the store was opened with a `queue_ram_messages` below the queue's length).
    pub paged: Vec<PagedMessage>,
    /// The id the queue should give its next message: above every id the store has
    /// seen for this queue, so ids are never reused across restarts.
    pub next_id: u64,
}

/// Everything that survived, by queue. Queues the metadata no longer lists (deleted
/// while their records were still in the log) may appear: the registry drops them.
pub type Recovered = BTreeMap<QueueId, RecoveredQueue>;
