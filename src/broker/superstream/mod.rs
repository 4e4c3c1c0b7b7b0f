//! Super streams: a partitioned stream, RabbitMQ's form of a Kafka topic. A super stream
//! `s` is an exchange `s` (argument `x-super-stream = true`) with N stream queues
//! `s-0` .. `s-N-1` (or `s-<key>` per binding key) bound to it, each binding carrying
//! its partition index in `x-stream-partition-order`, as `rabbitmq-streams
//! add_super_stream` lays it out. See docs/STREAMS.md.
//!
//! With `--partitions N` the exchange has type `x-super-stream` ([`exchange`]): it
//! routes by the MurmurHash3 of the routing key ([`hash`]), the rule of RabbitMQ's
//! stream clients, so every protocol gets hash routing. With binding keys it is a
//! `direct` exchange (a key names its partition), as on RabbitMQ.
//!
//! [`SuperStreamSpec`] is the pure layout; [`declare`], [`delete`] and [`partitions`]
//! apply it through the registry, for every front end alike. Each partition queue also
//! carries its index in the queue argument `x-stream-partition-order`, which is how a
//! partition knows which member of a consumer group is its active one
//! ([`crate::broker::stream::group`]).

pub mod exchange;
pub mod hash;
mod ops;

pub use exchange::{SuperStreamExchange, TYPE as EXCHANGE_TYPE};
pub use hash::{murmur3_32, partition_of};
pub use ops::{declare, delete, partitions};

use crate::broker::exchange::ExchangeSpec;
use crate::broker::queue::QueueSpec;
use crate::error::BrokerError;
use crate::message::{FieldTable, FieldValue};

/// The exchange argument marking a super stream (RabbitMQ's).
pub const SUPER_STREAM_ARG: &str = "x-super-stream";
/// The partition index: a binding argument (RabbitMQ's) and, here, a queue argument.
pub const PARTITION_ORDER: &str = "x-stream-partition-order";
/// The most partitions one super stream may have (each is a stream with its own log).
pub const MAX_PARTITIONS: u32 = 1024;

/// How the partitions are named and routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitions {
    /// `n` partitions `name-0` .. `name-{n-1}`, routed by the hash of the routing key.
    Count(u32),
    /// One partition `name-<key>` per key, routed by the key (a `direct` exchange).
    Keys(Vec<String>),
}

/// A super stream to declare.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperStreamSpec {
    /// The super stream (and its exchange's) name.
    pub name: String,
    /// The partitions.
    pub partitions: Partitions,
    /// Arguments of every partition queue (`x-max-length-bytes`, `x-max-age`, ...).
    pub arguments: FieldTable,
}

/// One partition of a super stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The stream queue.
    pub queue: String,
    /// The key binding it to the exchange.
    pub binding_key: String,
    /// Its index (`x-stream-partition-order`).
    pub order: u32,
}

impl SuperStreamSpec {
    /// `n` hash-routed partitions.
    ///
    /// ```
    /// use actormq::broker::superstream::SuperStreamSpec;
    /// let s = SuperStreamSpec::with_partitions("invoices", 3);
    /// let queues: Vec<_> = s.layout().into_iter().map(|p| p.queue).collect();
    /// assert_eq!(queues, ["invoices-0", "invoices-1", "invoices-2"]);
    /// ```
    pub fn with_partitions(name: &str, n: u32) -> Self {
        SuperStreamSpec {
            name: name.to_string(),
            partitions: Partitions::Count(n),
            arguments: FieldTable::new(),
        }
    }

    /// One key-routed partition per binding key.
    pub fn with_binding_keys(name: &str, keys: &[&str]) -> Self {
        SuperStreamSpec {
            name: name.to_string(),
            partitions: Partitions::Keys(keys.iter().map(|k| k.to_string()).collect()),
            arguments: FieldTable::new(),
        }
    }

    /// The spec a native `declare_super_stream` request gives: exactly one of a
    /// partition count (> 0) and binding keys (non-empty).
    pub fn from_wire(
        name: String,
        partitions: u32,
        binding_keys: Vec<String>,
        arguments: FieldTable,
    ) -> Result<Self, BrokerError> {
        let partitions = match (partitions, binding_keys.is_empty()) {
            (n, true) if n > 0 => Partitions::Count(n),
            (0, false) => Partitions::Keys(binding_keys),
            _ => {
                return Err(BrokerError::precondition(format!(
                    "invalid super stream '{name}': give either partitions (> 0) or binding keys, not both"
                )))
            }
        };
        Ok(SuperStreamSpec {
            name,
            partitions,
            arguments,
        })
    }

    /// Refuses an empty name, no partitions, too many, or empty or repeated keys.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |why: String| {
            Err(BrokerError::precondition(format!(
                "invalid super stream '{}': {why}",
                self.name
            )))
        };
        if self.name.is_empty() {
            return bad("the name is empty".into());
        }
        match &self.partitions {
            Partitions::Count(n) if !(1..=MAX_PARTITIONS).contains(n) => {
                bad(format!("partitions must be 1 to {MAX_PARTITIONS}, got {n}"))
            }
            Partitions::Keys(keys) if keys.is_empty() || keys.len() > MAX_PARTITIONS as usize => {
                bad(format!(
                    "1 to {MAX_PARTITIONS} binding keys are needed, got {}",
                    keys.len()
                ))
            }
            Partitions::Keys(keys) => {
                let mut seen = std::collections::HashSet::new();
                for k in keys {
                    if k.is_empty() {
                        return bad("a binding key is empty".into());
                    }
                    if !seen.insert(k) {
                        return bad(format!("binding key '{k}' is given twice"));
                    }
                }
                Ok(())
            }
            Partitions::Count(_) => Ok(()),
        }
    }

    /// The partitions in order.
    pub fn layout(&self) -> Vec<Partition> {
        let keys: Vec<String> = match &self.partitions {
            Partitions::Count(n) => (0..*n).map(|i| i.to_string()).collect(),
            Partitions::Keys(keys) => keys.clone(),
        };
        keys.into_iter()
            .zip(0u32..)
            .map(|(key, order)| Partition {
                queue: format!("{}-{key}", self.name),
                binding_key: key,
                order,
            })
            .collect()
    }

    /// The exchange: durable, `x-super-stream = true`, hash-routing for a partition
    /// count, `direct` for binding keys.
    pub fn exchange(&self) -> ExchangeSpec {
        let kind = match self.partitions {
            Partitions::Count(_) => EXCHANGE_TYPE,
            Partitions::Keys(_) => "direct",
        };
        let mut spec = ExchangeSpec::new(&self.name, kind);
        spec.durable = true;
        spec.arguments
            .insert(SUPER_STREAM_ARG.into(), FieldValue::Bool(true));
        spec
    }

    /// The stream queue of partition `p`: the spec's arguments, `x-queue-type =
    /// stream` and the partition's index.
    pub fn queue(&self, p: &Partition) -> QueueSpec {
        let mut arguments = self.arguments.clone();
        arguments.insert("x-queue-type".into(), "stream".into());
        arguments.insert(PARTITION_ORDER.into(), i64::from(p.order).into());
        QueueSpec {
            name: p.queue.clone(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments,
        }
    }
}

/// The binding arguments of partition `p` (RabbitMQ's).
pub fn binding_arguments(p: &Partition) -> FieldTable {
    let mut args = FieldTable::new();
    args.insert(PARTITION_ORDER.into(), i64::from(p.order).into());
    args
}

/// True when an exchange's arguments mark it as a super stream.
pub fn is_super_stream(exchange: &ExchangeSpec) -> bool {
    matches!(
        exchange.arguments.get(SUPER_STREAM_ARG),
        Some(FieldValue::Bool(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_keys_name_the_partitions_in_order() {
        let s = SuperStreamSpec::with_binding_keys("inv", &["amer", "emea"]);
        let l = s.layout();
        assert_eq!(l[1].queue, "inv-emea");
        assert_eq!((l[1].binding_key.as_str(), l[1].order), ("emea", 1));
        assert_eq!(s.exchange().kind, "direct");
        assert!(is_super_stream(&s.exchange()));
        let q = s.queue(&l[1]);
        assert!(q.durable);
        assert_eq!(q.arguments.get(PARTITION_ORDER), Some(&FieldValue::Int(1)));
        assert_eq!(
            q.arguments.get("x-queue-type"),
            Some(&FieldValue::Str("stream".into()))
        );
    }

    #[test]
    fn bad_layouts_are_refused_with_a_reason() {
        for s in [
            SuperStreamSpec::with_partitions("s", 0),
            SuperStreamSpec::with_partitions("s", MAX_PARTITIONS + 1),
            SuperStreamSpec::with_partitions("", 3),
            SuperStreamSpec::with_binding_keys("s", &[]),
            SuperStreamSpec::with_binding_keys("s", &["a", ""]),
            SuperStreamSpec::with_binding_keys("s", &["a", "a"]),
        ] {
            let e = s.validate().unwrap_err();
            assert!(e.to_string().contains("invalid super stream"), "{e}");
        }
        assert!(SuperStreamSpec::with_partitions("s", 6).validate().is_ok());
        assert_eq!(
            SuperStreamSpec::with_partitions("s", 6).exchange().kind,
            EXCHANGE_TYPE
        );
    }
}
