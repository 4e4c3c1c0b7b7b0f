//! AMQP reply codes: which errors close a channel and which the whole connection, and
//! reply texts in RabbitMQ's form (`NOT_FOUND - no queue 'x' in vhost '/'`), since users
//! search for them.

use crate::error::{BrokerError, ErrorCode};
use amq_protocol::types::ShortString;

/// An error to report with `channel.close` or `connection.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// The reply code (403, 404, 501, ...).
    pub code: u16,
    /// `NAME - message`.
    pub text: String,
    /// Class and method of the offending method (0, 0 when none).
    pub method: (u16, u16),
}

impl AmqpError {
    /// An error with `code`, its name and `message`.
    pub fn new(code: u16, message: impl std::fmt::Display) -> Self {
        AmqpError {
            code,
            text: format!("{} - {message}", name(code)),
            method: (0, 0),
        }
    }

    /// The same error, naming the method that caused it.
    pub fn on(mut self, method: (u16, u16)) -> Self {
        self.method = method;
        self
    }

    /// True for the codes that close the whole connection (AMQP's "hard" errors).
    pub fn is_connection_level(&self) -> bool {
        !matches!(self.code, 311..=313 | 403..=406)
    }

    /// The reply text as a short string (cut to 255 bytes).
    pub fn short_text(&self) -> ShortString {
        let mut end = self.text.len().min(255);
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        ShortString::try_new(&self.text[..end]).unwrap_or_default()
    }
}

impl From<&BrokerError> for AmqpError {
    fn from(e: &BrokerError) -> Self {
        AmqpError::new(code_of(e.code()), e.message())
    }
}

impl From<BrokerError> for AmqpError {
    fn from(e: BrokerError) -> Self {
        AmqpError::from(&e)
    }
}

/// The AMQP reply code for a broker error code.
pub fn code_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::AccessRefused => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::ResourceLocked => 405,
        ErrorCode::PreconditionFailed => 406,
        ErrorCode::ConnectionForced => 320,
        ErrorCode::FrameTooLarge | ErrorCode::HeartbeatTimeout => 501,
        ErrorCode::BadFrame => 502,
        ErrorCode::UnsupportedVersion => 505,
        ErrorCode::ResourceError => 506,
        ErrorCode::NotAllowed => 530,
        ErrorCode::UnknownOperation => 540,
        ErrorCode::InternalError => 541,
    }
}

/// The spec's name of a reply code.
pub fn name(code: u16) -> &'static str {
    match code {
        200 => "OK",
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_read_as_rabbitmq_writes_them() {
        let e = AmqpError::from(BrokerError::not_found("queue", "x", "/"));
        assert_eq!(e.code, 404);
        assert_eq!(e.text, "NOT_FOUND - no queue 'x' in vhost '/'");
        assert!(!e.is_connection_level());
        assert!(AmqpError::new(501, "too big").is_connection_level());
        assert!(AmqpError::from(BrokerError::not_allowed("x")).is_connection_level());
    }
}
