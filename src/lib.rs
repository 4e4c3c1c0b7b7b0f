//! # actormq
//!
//! A message broker on actix actors: every exchange, queue and client connection is an
//! actor. Run it as a networked broker, or embed it in a Rust service.
//!
//! ## Layout
//! - [`message`]: messages, properties, typed header tables.
//! - [`error`]: [`BrokerError`] and its stable [`ErrorCode`]s.
//! - [`broker`]: the actor core — registry per virtual host, exchange actors and the
//!   [`ExchangeType`](broker::exchange::ExchangeType) trait, queue actors, the memory
//!   watermark, and every actor message in [`broker::messages`].
//! - [`embed`]: the in-process API ([`Session`], [`Consumer`]).
//! - [`options`]: declaration and consumer options, taken by both [`Session`] and
//!   [`client::Client`].
//! - [`settings`]: `Settings.toml` and environment overrides.

pub mod broker;
pub mod definitions;
pub mod embed;
pub mod error;
pub mod message;
pub mod options;
pub mod settings;

pub use broker::{Broker, BrokerBuilder, BrokerHandle};
pub use embed::{Confirm, Confirmation, Consumer, Received, Session};
pub use error::{BrokerError, ErrorCode};
pub use message::{FieldTable, FieldValue, Message, Properties};
pub use options::{ConsumeOptions, ExchangeOptions, QueueOptions};
pub use settings::Settings;
pub mod client;
pub mod perf;
pub mod protocol;
pub mod server;
pub mod storage;
