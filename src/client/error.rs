//! [`ClientError`]: every way a client operation can fail, as one enum.
//!
//! A broker refusal keeps the broker's [`ErrorCode`] and message unchanged, so an
//! application can switch on [`ClientError::code`] exactly as it would on a
//! [`BrokerError`](crate::BrokerError) from the embedded API.

use crate::error::ErrorCode;
use std::io;
use std::sync::Arc;

/// Why a client operation failed.
///
/// Cloneable, because one connection failure is handed to every operation waiting on
/// that connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker refused the operation, refused the connection, or closed it with this
    /// error. Displays as `CODE - message`, e.g. `NOT_FOUND - no queue 'q' in vhost '/'`.
    #[error("{code} - {message}")]
    Server {
        /// The broker's stable code.
        code: ErrorCode,
        /// The broker's message, naming what it concerns.
        message: String,
    },
    /// A socket error (connect, read or write).
    #[error("{context}: {source}")]
    Io {
        /// What the client was doing, e.g. `connecting to 127.0.0.1:5680`.
        context: String,
        /// The error (shared: one failure reaches every waiter).
        #[source]
        source: Arc<io::Error>,
    },
    /// The connection is closed: by [`Client::close`](super::Client::close), by dropping
    /// every handle, or by the broker without an error frame.
    #[error("connection closed")]
    Closed,
    /// The broker sent nothing for two heartbeat intervals.
    #[error("{code} - no frame from the broker for {secs} s", code = ErrorCode::HeartbeatTimeout)]
    HeartbeatTimeout {
        /// Seconds waited.
        secs: u64,
    },
    /// A message too large for the broker's maximum frame size; nothing was sent.
    #[error("{code} - frame of {size} bytes exceeds the broker's maximum of {max} bytes", code = ErrorCode::FrameTooLarge)]
    FrameTooLarge {
        /// Encoded size of the frame.
        size: usize,
        /// The broker's maximum (from its Welcome).
        max: usize,
    },
    /// The broker cancelled this consumer (for example, its queue was deleted).
    #[error("consumer '{consumer_tag}' cancelled by the broker: {reason}")]
    ConsumerCancelled {
        /// The consumer's tag.
        consumer_tag: String,
        /// The broker's reason.
        reason: String,
    },
    /// The broker sent something this client cannot make sense of: an undecodable
    /// frame, or a reply of the wrong kind.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server at the address does not speak actormq's protocol: its first bytes
    /// are no frame a broker would send (an HTTP or AMQP server, say).
    #[error("{addr} is not an actormq server{}", said_suffix(.said))]
    NotAnActormqServer {
        /// The address connected to.
        addr: String,
        /// The start of what it sent, when that reads as text (`HTTP/1.1 400 ...`).
        said: Option<String>,
    },
}

/// `" (it said \"...\")"` for the text a foreign server sent, if any.
fn said_suffix(said: &Option<String>) -> String {
    match said {
        Some(text) => format!(" (it said {text:?})"),
        None => String::new(),
    }
}

impl ClientError {
    /// The stable error code: the broker's for [`ClientError::Server`], and the matching
    /// code for a heartbeat timeout or an oversized frame; `None` for the others.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::HeartbeatTimeout { .. } => Some(ErrorCode::HeartbeatTimeout),
            ClientError::FrameTooLarge { .. } => Some(ErrorCode::FrameTooLarge),
            _ => None,
        }
    }

    /// The broker's message, for [`ClientError::Server`].
    pub fn server_message(&self) -> Option<&str> {
        match self {
            ClientError::Server { message, .. } => Some(message),
            _ => None,
        }
    }

    pub(crate) fn server(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Server {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, e: io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            source: Arc::new(e),
        }
    }

    pub(crate) fn unexpected(what: &str, got: impl std::fmt::Debug) -> Self {
        ClientError::Protocol(format!("expected {what}, got {got:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_displays_code_then_message() {
        let e = ClientError::server(ErrorCode::NotFound, "no queue 'q' in vhost '/'");
        assert_eq!(e.to_string(), "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        assert_eq!(e.server_message(), Some("no queue 'q' in vhost '/'"));
        assert_eq!(ClientError::Closed.code(), None);
    }
}
