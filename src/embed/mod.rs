//! The embedding API: a [`Session`] is what a Rust service uses to declare, publish and
//! consume in-process, with no TCP at all. It sends the same actor messages a network
//! connection does, with the same flow control (publish window, memory watermark,
//! consumer credit).

mod consumer;
mod session;

/// The declaration and consumer options, shared with the network client ([`crate::options`]).
pub use crate::options::{ConsumeOptions, ExchangeOptions, QueueOptions};
pub use consumer::{Consumer, Received};
pub use session::{Confirm, Confirmation, Returned, Session};
