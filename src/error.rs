//! Errors of the broker core, each with a stable [`ErrorCode`].
//!
//! The code is what clients switch on (it travels on the wire unchanged); the message is
//! for people and always names the queue, exchange, argument or setting concerned, as
//! RabbitMQ's `PRECONDITION_FAILED - inequivalent arg 'durable' ...` does.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// Most bytes of a client-supplied string (user, vhost, consumer tag, name, ...) that
/// are logged or echoed in an error frame.
pub const CLIP_BYTES: usize = 256;

/// `s` as it may be logged or echoed: at most [`CLIP_BYTES`] bytes (cut on a character
/// boundary), then `…` and the full length. A client controls these strings and their
/// length (issue 16: a 10 MB user name added 20 MB to the log and came back in the
/// error frame).
///
/// ```
/// let long = "x".repeat(10_000);
/// let shown = actormq::error::clip(&long);
/// assert!(shown.ends_with("… (10000 bytes)"));
/// assert_eq!(actormq::error::clip("orders"), "orders");
/// ```
pub fn clip(s: &str) -> Cow<'_, str> {
    clip_to(s, CLIP_BYTES)
}

/// [`clip`] with another limit (whole error messages get a larger one).
pub fn clip_to(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len()))
}

/// Stable, machine-readable error codes. Their spelling is part of the wire protocol
/// (docs/PROTOCOL.md) and never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The named queue, exchange, consumer or virtual host does not exist.
    NotFound,
    /// The entity exists with other settings, an argument is invalid, a delivery tag is
    /// unknown, or a delete condition (`if_unused`, `if_empty`) does not hold.
    PreconditionFailed,
    /// Authentication failed or the operation is not permitted to this user.
    AccessRefused,
    /// The queue is exclusive to another connection, or has an exclusive consumer.
    ResourceLocked,
    /// The operation is not allowed on this entity (for example on the default exchange).
    NotAllowed,
    /// A frame exceeded the negotiated maximum frame size.
    FrameTooLarge,
    /// A frame could not be decoded.
    BadFrame,
    /// The frame named an operation this server does not know.
    UnknownOperation,
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion,
    /// A broker resource limit was hit (connections, memory, disk).
    ResourceError,
    /// The peer missed its heartbeats.
    HeartbeatTimeout,
    /// The broker is shutting down, or an operator closed the connection.
    ConnectionForced,
    /// A bug or an unexpected internal failure; the message says what.
    InternalError,
}

impl ErrorCode {
    /// The code as it is spelled on the wire, e.g. `NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorCode::AccessRefused => "ACCESS_REFUSED",
            ErrorCode::ResourceLocked => "RESOURCE_LOCKED",
            ErrorCode::NotAllowed => "NOT_ALLOWED",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::UnknownOperation => "UNKNOWN_OPERATION",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::ResourceError => "RESOURCE_ERROR",
            ErrorCode::HeartbeatTimeout => "HEARTBEAT_TIMEOUT",
            ErrorCode::ConnectionForced => "CONNECTION_FORCED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the broker core: a stable code and a message naming what it concerns.
///
/// ```
/// use actormq::{BrokerError, ErrorCode};
/// let e = BrokerError::not_found("queue", "orders", "/");
/// assert_eq!(e.code(), ErrorCode::NotFound);
/// assert_eq!(e.to_string(), "NOT_FOUND - no queue 'orders' in vhost '/'");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerError {
    code: ErrorCode,
    message: String,
}

impl BrokerError {
    /// An error with `code` and a human-readable `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        BrokerError {
            code,
            message: message.into(),
        }
    }

    /// `NOT_FOUND` for an entity of `kind` ("queue", "exchange", ...) named `name`
    /// (clipped: a lookup may name anything).
    pub fn not_found(kind: &str, name: &str, vhost: &str) -> Self {
        Self::new(
            ErrorCode::NotFound,
            format!("no {kind} '{}' in vhost '{}'", clip(name), clip(vhost)),
        )
    }

    /// `PRECONDITION_FAILED` with a message.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PreconditionFailed, message)
    }

    /// `ACCESS_REFUSED` with a message.
    pub fn access_refused(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AccessRefused, message)
    }

    /// `RESOURCE_LOCKED` with a message.
    pub fn locked(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceLocked, message)
    }

    /// `NOT_ALLOWED` with a message.
    pub fn not_allowed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotAllowed, message)
    }

    /// `INTERNAL_ERROR` with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }

    /// `CONNECTION_FORCED`: the broker is stopping.
    pub fn shutting_down() -> Self {
        Self::new(ErrorCode::ConnectionForced, "the broker is shutting down")
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message (without the code).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} - {}", self.code, self.message)
    }
}

impl std::error::Error for BrokerError {}

impl From<actix::MailboxError> for BrokerError {
    fn from(e: actix::MailboxError) -> Self {
        match e {
            actix::MailboxError::Closed => {
                BrokerError::new(ErrorCode::ConnectionForced, "target actor has stopped")
            }
            actix::MailboxError::Timeout => BrokerError::internal("actor request timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_kept_as_they_are() {
        let s = "a".repeat(CLIP_BYTES);
        assert!(matches!(clip(&s), Cow::Borrowed(b) if b == s));
    }

    #[test]
    fn long_strings_are_cut_and_their_length_noted() {
        let s = "a".repeat(10 * 1024 * 1024);
        let c = clip(&s);
        assert!(c.len() < CLIP_BYTES + 32, "{}", c.len());
        assert!(c.starts_with(&"a".repeat(CLIP_BYTES)));
        assert!(c.ends_with("… (10485760 bytes)"), "{c}");
    }

    #[test]
    fn the_cut_falls_on_a_character_boundary() {
        // 'é' is two bytes: byte CLIP_BYTES falls inside the 129th.
        let s = "é".repeat(200);
        let c = clip_to(&s, 257);
        assert!(c.starts_with(&"é".repeat(128)));
        assert!(c.ends_with("… (400 bytes)"), "{c}");
        assert_eq!(c.chars().filter(|&ch| ch == 'é').count(), 128);
    }

    #[test]
    fn not_found_clips_the_name() {
        let e = BrokerError::not_found("queue", &"q".repeat(100_000), "/");
        assert!(e.message().len() < 400, "{}", e.message().len());
        assert!(e.message().contains("(100000 bytes)"));
    }
}
