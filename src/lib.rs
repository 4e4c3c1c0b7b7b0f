//! # actormq
//!
//! A message broker on actix actors: every exchange, queue and client connection is an
//! actor. Run it as a networked broker, or embed it in a Rust service.
//!
//! ## Layout
//! - [`message`]: messages, properties, typed header tables.
//! - [`error`]: [`BrokerError`] and its stable [`ErrorCode`]s.
//! - [`definitions`]: what the broker and each virtual host *are* (virtual hosts, users,
//!   exchanges, queues, bindings), pure values changed only by commands; the seam of
//!   the metadata snapshot and of replication.
//! - [`broker`]: the actor core — registry per virtual host (applies definition
//!   commands, runs the actors), exchange actors and the
//!   [`ExchangeType`](broker::exchange::ExchangeType) trait, queue actors, the memory
//!   watermark, durability, and every actor message in [`broker::messages`].
//! - [`storage`]: the message store (memory and segmented disk log behind one trait) and
//!   the metadata snapshot.
//! - [`channel`]: the protocol-neutral channel core, a plain struct holding every rule
//!   of a client channel once (exchange cache, publish window and outcomes, confirms,
//!   delivery tags, settlements, consumers, prefetch, release): the native connection
//!   and a [`Session`] are one channel each, an AMQP connection N.
//! - [`embed`]: the in-process API ([`Session`], one channel; [`Consumer`]).
//! - [`options`]: declaration and consumer options, taken by both [`Session`] and
//!   [`client::Client`].
//! - [`protocol`]: the native wire protocol, a pure codec (no I/O, no actix).
//! - [`server`]: the network front ends ([`server::FrontEnd`]: listeners on a running
//!   broker, the registry of live connections, a shutdown that loses nothing), the
//!   native connection actor (codec + socket + one channel), authentication, and
//!   [`server::http`] (the management HTTP API and Prometheus `/metrics`).
//! - [`client`]: the async Rust client of the native protocol.
//! - `perf`: the load generator behind `actormq perf` (feature `cli`, on by default).
//! - [`settings`]: `Settings.toml` and environment overrides.
//! - [`logging`]: the binary's log subscriber (text or JSON, colour on terminals).
//! - [`amqp`]: the AMQP 0-9-1 front end (listener, codec, connection actor with N
//!   channels).

pub mod amqp;
pub mod broker;
pub mod channel;
pub mod cluster;
pub mod definitions;
pub mod embed;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod message;
pub mod options;
pub mod settings;

pub use broker::{Broker, BrokerBuilder, BrokerHandle};
pub use embed::{Confirm, Confirmation, Consumer, Received, Session};
pub use error::{BrokerError, ErrorCode};
pub use message::{FieldTable, FieldValue, Message, Properties, TypedValue};
pub use options::{ConsumeOptions, ExchangeOptions, QueueOptions};
pub use settings::Settings;
pub mod client;
#[cfg(feature = "cli")]
pub mod perf;
pub mod protocol;
pub mod server;
pub mod storage;
