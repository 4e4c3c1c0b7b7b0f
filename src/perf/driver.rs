//! What the load generator needs from a broker, so one orchestration measures actormq
//! and an AMQP 0-9-1 broker (RabbitMQ) the same way: set up the topology, open
//! connections, publish with or without confirms, consume with acks, read queue depth.

use super::{PerfArgs, PerfExchange, QueueType};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The exchange and queues of a run, and the keys that route to each queue.
pub struct Topology {
    /// The exchange published to.
    pub exchange: String,
    /// The queues bound to it.
    pub queues: Vec<String>,
    /// The exchange type.
    pub kind: PerfExchange,
    /// Stream queues (`--stream`): durable, `x-queue-type = stream`, each consumer
    /// reading from `first`.
    pub stream: bool,
    /// The `x-queue-type` of the queues, none for a classic queue.
    pub queue_type: Option<&'static str>,
}

impl Topology {
    /// Names from the run's options.
    pub fn new(a: &PerfArgs) -> Self {
        Topology {
            exchange: format!("{}.x", a.prefix),
            queues: (0..a.queues.max(1))
                .map(|i| format!("{}.q{i}", a.prefix))
                .collect(),
            kind: a.exchange_type,
            stream: a.stream || a.queue_type == QueueType::Stream,
            queue_type: if a.stream {
                Some("stream")
            } else {
                match a.queue_type {
                    QueueType::Classic => None,
                    QueueType::Quorum => Some("quorum"),
                    QueueType::Stream => Some("stream"),
                }
            },
        }
    }

    /// Whether the queues are durable: quorum queues and streams always are (brokers
    /// refuse them otherwise), classic ones when the messages are persistent.
    pub fn durable(&self, persistent: bool) -> bool {
        persistent || self.queue_type.is_some()
    }

    /// The exchange type's name.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            PerfExchange::Direct => "direct",
            PerfExchange::Fanout => "fanout",
            PerfExchange::Topic => "topic",
        }
    }

    /// The binding key of queue `i`.
    pub fn binding_key(&self, i: usize) -> String {
        match self.kind {
            PerfExchange::Direct => format!("k{i}"),
            PerfExchange::Fanout => String::new(),
            PerfExchange::Topic => format!("k{i}.#"),
        }
    }

    /// A routing key that reaches queue `i`.
    pub fn routing_key(&self, i: usize) -> String {
        match self.kind {
            PerfExchange::Direct => format!("k{i}"),
            PerfExchange::Fanout => String::new(),
            PerfExchange::Topic => format!("k{i}.perf"),
        }
    }
}

/// One delivery as the load generator sees it.
pub struct Received {
    /// The body (the first 8 bytes are the send time).
    pub body: Bytes,
    /// The delivery tag, to ack with.
    pub tag: u64,
    /// The broker marked it redelivered (it was delivered before, maybe to this very
    /// consumer, and requeued).
    pub redelivered: bool,
}

/// A broker to load.
pub trait Driver: Send + Sync + 'static {
    /// A connection that consumers share.
    type Conn: Conn;
    /// A publishing connection.
    type Producer: Producer;

    /// Declares the exchange, deletes the queues, and recreates and binds those from
    /// index `first_declared` on; the others are declared by their first consumer, on
    /// its own connection (as applications do, and so that a broker may place a queue
    /// beside its consumer).
    fn setup<'a>(
        &'a self,
        topo: &'a Topology,
        durable: bool,
        first_declared: usize,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Opens a connection for consumers.
    fn connect(&self) -> BoxFuture<'_, Result<Self::Conn, String>>;
    /// Opens an idle connection as an application holds one (`--idle-connections`):
    /// with AMQP, one channel open on it.
    fn idle(&self) -> BoxFuture<'_, Result<Box<dyn Send>, String>> {
        Box::pin(async move { Ok(Box::new(self.connect().await?) as Box<dyn Send>) })
    }
    /// Opens a publishing connection.
    fn producer(
        &self,
        confirm: bool,
        window: usize,
    ) -> BoxFuture<'_, Result<Self::Producer, String>>;
    /// Messages ready in `queues` (summed).
    fn depth<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, u64>;
    /// Deletes `queues` with whatever they hold (`--delete-queues`, after a run).
    fn delete_queues<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), String>>;
}

/// A connection consumers are made on.
pub trait Conn: Send + Sync + 'static {
    /// The consumer type.
    type Consumer: Consumer;
    /// Starts a consumer on `queue`, declaring and binding the queue first when
    /// `declare` says how; with `stream`, the queue is a stream and the consumer reads
    /// it from `first`.
    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: u32,
        auto_ack: bool,
        stream: bool,
        declare: Option<Declare<'a>>,
    ) -> BoxFuture<'a, Result<Self::Consumer, String>>;
}

/// How a consumer declares its queue.
#[derive(Clone, Copy)]
pub struct Declare<'a> {
    /// The exchange to bind to.
    pub exchange: &'a str,
    /// The binding key.
    pub binding_key: &'a str,
    /// A durable queue.
    pub durable: bool,
    /// Its `x-queue-type`, none for a classic queue.
    pub queue_type: Option<&'a str>,
}

/// A publisher.
pub trait Producer: Send + 'static {
    /// Publishes one message; with confirms on, answers a future resolved to true when
    /// the broker confirmed it (false when it refused or returned it).
    fn publish<'a>(
        &'a mut self,
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        persistent: bool,
    ) -> BoxFuture<'a, Result<Option<BoxFuture<'static, bool>>, String>>;
    /// True once the connection (or its channel) failed: a confirm that then resolves
    /// false was lost with it, not refused by the broker.
    fn closed(&self) -> bool {
        false
    }
    /// True while the broker says the connection is blocked (`connection.blocked`: a
    /// memory or disk alarm): its publishes wait, unread, and no confirm comes.
    fn blocked(&self) -> bool {
        false
    }
}

/// A consumer.
pub trait Consumer: Send + 'static {
    /// The next delivery, None when the consumer ended.
    fn next(&mut self) -> BoxFuture<'_, Option<Received>>;
    /// The next delivery if one is ready now, without waiting and without the boxed
    /// future of [`next`](Self::next) (an allocation per delivery): deliveries arrive
    /// in batches, and the driver takes what is ready this way first. None when none
    /// is ready now (or the consumer ended; `next` then says so).
    fn try_next(&mut self) -> Option<Received> {
        None
    }
    /// Acks `tag` (and every earlier one with `multiple`).
    fn ack(&mut self, tag: u64, multiple: bool);
}
