//! The native wire protocol: a pure codec, no I/O, no async, no actix.
//!
//! ```text
//!  0        4                                   4+len
//!  +--------+-----------------------------------+
//!  | len u32| MessagePack body (len bytes)      |   len is big-endian
//!  +--------+-----------------------------------+
//! ```
//!
//! The body is one [`ClientFrame`] or [`ServerFrame`], encoded by rmp-serde: an enum
//! variant is a one-entry map `{ "variant_name": [field, ...] }`, a struct is an array of
//! its fields in declaration order. docs/PROTOCOL.md specifies every frame for client
//! authors in other languages.
//!
//! [`frame`] splits a byte stream into frame bodies, telling "need more bytes" from "bad
//! frame"; [`wire`] holds the frame types and their encode / decode.

pub mod frame;
pub mod wire;

pub use frame::{FrameError, LENGTH_PREFIX};
pub use wire::*;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
