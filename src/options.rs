//! Options of a declaration or a consumer, shared by both front ends: the in-process
//! [`Session`](crate::Session) and the network [`Client`](crate::client::Client) take
//! these same types (re-exported as `actormq::client::QueueOptions` and so on), so code
//! moves between embedding and TCP without translating options.
//!
//! Each is a plain struct with public fields and RabbitMQ's defaults, plus builders:
//!
//! ```
//! use actormq::options::{ConsumeOptions, ExchangeOptions, QueueOptions};
//! let jobs = QueueOptions::durable().arg("x-max-length", 10_000i64);
//! let mine = QueueOptions::new().exclusive().auto_delete();
//! let check = QueueOptions::new().passive();
//! let events = ExchangeOptions::durable().arg("alternate-exchange", "unrouted");
//! let worker = ConsumeOptions::prefetch(1).tag("worker-1");
//! assert!(jobs.durable && mine.exclusive && check.passive && events.durable);
//! assert_eq!(worker.consumer_tag, "worker-1");
//! ```
//!
//! The broker keeps its own internal forms ([`QueueSpec`], [`ExchangeSpec`],
//! [`ConsumerSpec`]), built from these by the front ends.

use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::ConsumerSpec;
use crate::broker::queue::QueueSpec;
use crate::message::{FieldTable, FieldValue};

/// Options of a queue declaration. The default is a transient, shared queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueOptions {
    /// Survives a broker restart, and so do the persistent messages it holds. A broker
    /// without storage refuses it (see
    /// [`BrokerBuilder::transient_durables`](crate::BrokerBuilder::transient_durables)).
    pub durable: bool,
    /// Owned by the declaring connection or session, deleted with it, refused to others.
    pub exclusive: bool,
    /// Deleted when its last consumer leaves (after having had one).
    pub auto_delete: bool,
    /// Only check that the queue exists (NOT_FOUND otherwise); the other options are
    /// then ignored.
    pub passive: bool,
    /// Arguments, with RabbitMQ's names and types (`x-message-ttl` is an integer).
    pub arguments: FieldTable,
}

impl QueueOptions {
    /// A transient queue (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// A durable queue.
    pub fn durable() -> Self {
        QueueOptions {
            durable: true,
            ..Default::default()
        }
    }

    /// Makes the queue exclusive to the declaring connection or session.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Makes the queue delete itself when its last consumer leaves.
    pub fn auto_delete(mut self) -> Self {
        self.auto_delete = true;
        self
    }

    /// Only checks that the queue exists.
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        self.arguments.insert(key.to_string(), value.into());
        self
    }

    /// The broker's form of the declaration of queue `name`.
    pub fn to_spec(&self, name: &str) -> QueueSpec {
        QueueSpec {
            name: name.to_string(),
            durable: self.durable,
            exclusive: self.exclusive,
            auto_delete: self.auto_delete,
            arguments: self.arguments.clone(),
        }
    }
}

/// Options of an exchange declaration. The default is a transient exchange.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExchangeOptions {
    /// Survives a broker restart. A broker without storage refuses it (see
    /// [`BrokerBuilder::transient_durables`](crate::BrokerBuilder::transient_durables)).
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly, only through exchange-to-exchange bindings.
    pub internal: bool,
    /// Only check that the exchange exists (NOT_FOUND otherwise).
    pub passive: bool,
    /// Arguments (`alternate-exchange`, ...).
    pub arguments: FieldTable,
}

impl ExchangeOptions {
    /// A transient exchange (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// A durable exchange.
    pub fn durable() -> Self {
        ExchangeOptions {
            durable: true,
            ..Default::default()
        }
    }

    /// Makes the exchange delete itself when its last binding goes.
    pub fn auto_delete(mut self) -> Self {
        self.auto_delete = true;
        self
    }

    /// Makes the exchange internal (reachable only from other exchanges).
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    /// Only checks that the exchange exists.
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }

    /// Adds an argument, e.g. `alternate-exchange`.
    pub fn arg(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        self.arguments.insert(key.to_string(), value.into());
        self
    }

    /// The broker's form of the declaration of exchange `name` of type `kind`.
    pub fn to_spec(&self, name: &str, kind: &str) -> ExchangeSpec {
        ExchangeSpec {
            name: name.to_string(),
            kind: kind.to_string(),
            durable: self.durable,
            auto_delete: self.auto_delete,
            internal: self.internal,
            arguments: self.arguments.clone(),
        }
    }
}

/// Options of a consumer. The default has prefetch 100, as RabbitMQ's clients do.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeOptions {
    /// Consumer tag; empty lets the broker choose one.
    pub consumer_tag: String,
    /// Unacked deliveries this consumer may hold at most; 0 = unlimited. Ignored with
    /// `no_ack`. It bounds what a consumer holds, it does not share work evenly: a free
    /// consumer takes the next message whoever had the previous one.
    pub prefetch: u32,
    /// Deliveries count as acknowledged once sent.
    pub no_ack: bool,
    /// Refuse other consumers on the queue while this one is attached.
    pub exclusive: bool,
    /// Consumer arguments (`x-priority`).
    pub arguments: FieldTable,
    /// The network client asks for a stream's records as runs (on by default): one
    /// frame carries many consecutive records as the stream stores them, and the client
    /// checks each record's checksum and splits the run into the same deliveries as
    /// one frame each would give (docs/PROTOCOL.md, `deliver_run`). Off, every record
    /// comes in its own `deliver` frame. Nothing changes for other queues, and the
    /// embedding API ignores it.
    pub runs: bool,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            consumer_tag: String::new(),
            prefetch: 100,
            no_ack: false,
            exclusive: false,
            arguments: FieldTable::new(),
            runs: true,
        }
    }
}

impl ConsumeOptions {
    /// The defaults (prefetch 100).
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults with this prefetch.
    pub fn prefetch(prefetch: u32) -> Self {
        ConsumeOptions {
            prefetch,
            ..Default::default()
        }
    }

    /// Sets the consumer tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.consumer_tag = tag.into();
        self
    }

    /// Deliveries count as acknowledged once sent (no settling).
    pub fn no_ack(mut self) -> Self {
        self.no_ack = true;
        self
    }

    /// Makes this the queue's only consumer while attached.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Asks for a `deliver` frame per stream record instead of runs (see
    /// [`runs`](Self::runs)).
    ///
    /// ```
    /// use actormq::ConsumeOptions;
    /// assert!(ConsumeOptions::new().runs);
    /// assert!(!ConsumeOptions::new().without_runs().runs);
    /// ```
    pub fn without_runs(mut self) -> Self {
        self.runs = false;
        self
    }

    /// Adds a consumer argument, e.g. `x-priority` (an integer: consumers of higher
    /// priority get messages first while they have room).
    pub fn arg(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        self.arguments.insert(key.to_string(), value.into());
        self
    }
}

impl From<&ConsumeOptions> for ConsumerSpec {
    fn from(o: &ConsumeOptions) -> Self {
        ConsumerSpec {
            tag: o.consumer_tag.clone(),
            prefetch: o.prefetch,
            auto_ack: o.no_ack,
            exclusive: o.exclusive,
            arguments: o.arguments.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_map_to_the_broker_forms() {
        let q = QueueOptions::durable()
            .auto_delete()
            .arg("x-max-length", 5i64)
            .to_spec("jobs");
        assert!(q.durable && q.auto_delete && !q.exclusive);
        assert_eq!(q.name, "jobs");
        assert!(q.arguments.contains_key("x-max-length"));
        let x = ExchangeOptions::new().internal().to_spec("mid", "topic");
        assert!(x.internal && !x.durable);
        assert_eq!((x.name.as_str(), x.kind.as_str()), ("mid", "topic"));
        let c = ConsumerSpec::from(&ConsumeOptions::prefetch(1).tag("w").no_ack());
        assert_eq!((c.tag.as_str(), c.prefetch, c.auto_ack), ("w", 1, true));
    }
}
