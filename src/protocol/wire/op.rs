//! The operations of a `request` frame: every client operation that gets a reply.

use crate::message::FieldTable;
use serde::{Deserialize, Serialize};

/// The consumer argument (`true`) by which a consume asks for a stream's records as
/// runs (`deliver_run` frames) instead of one `deliver` frame each. An argument rather
/// than a field of `consume`, so that a broker from before runs, which ignores consumer
/// arguments it does not know, still serves a client that asks for them, with `deliver`
/// frames. The broker takes it out of the arguments it keeps.
pub const RUNS_ARGUMENT: &str = "x-actormq-runs";

/// The operations a request can carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Declare (or check, with `passive`) an exchange.
    DeclareExchange {
        /// Name.
        name: String,
        /// Type: direct, fanout, topic, headers, or a registered one.
        kind: String,
        /// Survives restarts.
        durable: bool,
        /// Deleted with its last binding.
        auto_delete: bool,
        /// Not publishable directly.
        internal: bool,
        /// Only check that it exists.
        passive: bool,
        /// Arguments.
        arguments: FieldTable,
    },
    /// Delete an exchange.
    DeleteExchange {
        /// Name.
        name: String,
        /// Refuse while bound.
        if_unused: bool,
    },
    /// Declare (or check, with `passive`) a queue.
    DeclareQueue {
        /// Name; empty = generated.
        name: String,
        /// Survives restarts.
        durable: bool,
        /// Owned by this connection.
        exclusive: bool,
        /// Deleted when its last consumer leaves.
        auto_delete: bool,
        /// Only check that it exists.
        passive: bool,
        /// Arguments (`x-message-ttl`, ...).
        arguments: FieldTable,
    },
    /// Delete a queue.
    DeleteQueue {
        /// Name.
        name: String,
        /// Refuse while it has consumers.
        if_unused: bool,
        /// Refuse while it holds messages.
        if_empty: bool,
    },
    /// Remove the ready messages of a queue.
    PurgeQueue {
        /// Name.
        name: String,
    },
    /// Bind a queue to an exchange.
    Bind {
        /// Source exchange.
        exchange: String,
        /// Destination queue.
        queue: String,
        /// Binding key.
        routing_key: String,
        /// Binding arguments.
        arguments: FieldTable,
    },
    /// Remove a queue binding.
    Unbind {
        /// Source exchange.
        exchange: String,
        /// Destination queue.
        queue: String,
        /// Binding key.
        routing_key: String,
        /// Binding arguments.
        arguments: FieldTable,
    },
    /// Bind an exchange to an exchange.
    BindExchange {
        /// Source exchange.
        source: String,
        /// Destination exchange.
        destination: String,
        /// Binding key.
        routing_key: String,
        /// Binding arguments.
        arguments: FieldTable,
    },
    /// Remove an exchange-to-exchange binding.
    UnbindExchange {
        /// Source exchange.
        source: String,
        /// Destination exchange.
        destination: String,
        /// Binding key.
        routing_key: String,
        /// Binding arguments.
        arguments: FieldTable,
    },
    /// Start a consumer.
    Consume {
        /// Queue.
        queue: String,
        /// Consumer tag; empty = generated.
        consumer_tag: String,
        /// Maximum unacked deliveries; 0 = unlimited.
        prefetch: u32,
        /// Deliveries need no ack.
        no_ack: bool,
        /// Refuse other consumers on the queue.
        exclusive: bool,
        /// Consumer arguments. [`RUNS_ARGUMENT`] among them asks for stream records
        /// as runs.
        arguments: FieldTable,
    },
    /// Stop a consumer.
    Cancel {
        /// Consumer tag.
        consumer_tag: String,
    },
    /// Pull one message.
    Get {
        /// Queue.
        queue: String,
        /// No ack needed.
        no_ack: bool,
    },
    /// Close the connection cleanly (the reply is the last frame).
    Close,
    /// Declare a super stream in one operation: its exchange, its partition streams and
    /// their bindings (docs/STREAMS.md). Exactly one of `partitions` (> 0) and
    /// `binding_keys` (non-empty) is given.
    DeclareSuperStream {
        /// Name of the super stream and its exchange.
        name: String,
        /// N partitions `name-0` .. `name-N-1`, routed by the hash of the routing key.
        #[serde(default)]
        partitions: u32,
        /// One partition `name-KEY` per key, routed by the key.
        #[serde(default)]
        binding_keys: Vec<String>,
        /// Arguments of every partition stream.
        #[serde(default)]
        arguments: FieldTable,
    },
    /// Delete a super stream: its partition streams and its exchange.
    DeleteSuperStream {
        /// Name.
        name: String,
    },
}
