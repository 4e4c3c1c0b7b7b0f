//! Queue declare arguments, consumer arguments and the message properties a queue acts
//! on, with RabbitMQ's names and types.
//!
//! A known argument with a wrong type or value fails the declare with
//! PRECONDITION_FAILED naming the argument and the expected type. Unknown arguments are
//! kept and ignored, as RabbitMQ does. [`QueueConfig`] is the parsed, typed form the
//! queue actor works from; the message helpers ([`message_ttl`], [`message_delay`],
//! [`validate_message`]) read the `expiration` property and the `x-delay` header.

use crate::broker::queue::QueueSpec;
use crate::error::BrokerError;
use crate::message::{FieldTable, FieldValue, Message};

/// What a known argument must be.
enum Expect {
    /// A non-negative integer.
    NonNegative,
    /// A positive integer.
    Positive,
    /// An integer in 1..=255.
    Priority,
    /// A string.
    Str,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A boolean.
    Bool,
}

const KNOWN: &[(&str, Expect)] = &[
    ("x-message-ttl", Expect::NonNegative),
    ("x-expires", Expect::Positive),
    ("x-max-length", Expect::NonNegative),
    ("x-max-length-bytes", Expect::NonNegative),
    (
        "x-overflow",
        Expect::OneOf(&["drop-head", "reject-publish", "reject-publish-dlx"]),
    ),
    ("x-dead-letter-exchange", Expect::Str),
    ("x-dead-letter-routing-key", Expect::Str),
    ("x-delivery-limit", Expect::NonNegative),
    ("x-max-priority", Expect::Priority),
    ("x-delivery-delay", Expect::NonNegative),
    ("x-consumer-timeout", Expect::Positive),
    ("x-dedup-window", Expect::Positive),
    ("x-single-active-consumer", Expect::Bool),
    ("x-quorum-initial-group-size", Expect::Positive),
    (
        "x-dead-letter-strategy",
        Expect::OneOf(&["at-most-once", "at-least-once"]),
    ),
];

/// Checks the known arguments of `spec`.
pub fn validate(spec: &QueueSpec) -> Result<(), BrokerError> {
    for (key, expect) in KNOWN {
        let Some(v) = spec.arguments.get(*key) else {
            continue;
        };
        let problem = match (expect, v) {
            (Expect::NonNegative, FieldValue::Int(i)) if *i >= 0 => None,
            (Expect::NonNegative, _) => Some("a non-negative integer".to_string()),
            (Expect::Positive, FieldValue::Int(i)) if *i > 0 => None,
            (Expect::Positive, _) => Some("a positive integer".to_string()),
            (Expect::Priority, FieldValue::Int(i)) if (1..=255).contains(i) => None,
            (Expect::Priority, _) => Some("an integer from 1 to 255".to_string()),
            (Expect::Str, FieldValue::Str(_)) => None,
            (Expect::Str, _) => Some("a string".to_string()),
            (Expect::OneOf(allowed), FieldValue::Str(s)) if allowed.contains(&s.as_str()) => None,
            (Expect::OneOf(allowed), _) => Some(format!("one of {}", allowed.join(", "))),
            (Expect::Bool, FieldValue::Bool(_)) => None,
            (Expect::Bool, _) => Some("a boolean".to_string()),
        };
        if let Some(expected) = problem {
            return Err(BrokerError::precondition(format!(
                "invalid arg '{key}' for queue '{}': expected {expected}, got {} {}",
                spec.name,
                v.type_name(),
                v
            )));
        }
    }
    if spec.arguments.contains_key("x-dead-letter-routing-key")
        && !spec.arguments.contains_key("x-dead-letter-exchange")
    {
        // RabbitMQ's rule: a routing key alone would dead-letter nowhere.
        return Err(BrokerError::precondition(format!(
            "invalid arg 'x-dead-letter-routing-key' for queue '{}': it requires 'x-dead-letter-exchange'",
            spec.name
        )));
    }
    Ok(())
}

/// The queue types this broker runs (`x-queue-type`).
pub const QUEUE_TYPES: &[&str] = &["classic", "quorum", "stream"];

/// Refuses a new queue (of `vhost`) whose `x-queue-type` is not built here, a stream
/// that is not durable or is exclusive or auto-delete (see
/// [`crate::broker::stream::args`]), and a quorum queue that breaks RabbitMQ's rules
/// for one (see [`crate::broker::queue::quorum`]). Silently making a classic queue of
/// an unknown type would hide that it lacks the semantics its user asked for. Checked
/// on new declares only: a durable queue stored by an older version that accepted any
/// type keeps running (as the classic queue it always was) instead of failing to start.
pub fn check_queue_type(vhost: &str, spec: &QueueSpec) -> Result<(), BrokerError> {
    let Some(v) = spec.arguments.get("x-queue-type") else {
        return Ok(());
    };
    match v.as_str() {
        Some("stream") => crate::broker::stream::args::validate(
            &spec.name,
            spec.durable,
            spec.exclusive,
            spec.auto_delete,
            &spec.arguments,
        ),
        Some("quorum") => crate::broker::queue::quorum::validate(vhost, spec),
        Some(t) if QUEUE_TYPES.contains(&t) => Ok(()),
        Some(t) => Err(BrokerError::precondition(format!(
            "invalid arg 'x-queue-type' for queue '{}': queue type '{t}' is not supported; known types: {}",
            spec.name,
            QUEUE_TYPES.join(", ")
        ))),
        None => Err(BrokerError::precondition(format!(
            "invalid arg 'x-queue-type' for queue '{}': expected a string, got {} {}",
            spec.name,
            v.type_name(),
            v
        ))),
    }
}

/// True when `spec` declares a stream queue (`x-queue-type = "stream"`).
pub fn is_stream(spec: &QueueSpec) -> bool {
    spec.arguments
        .get("x-queue-type")
        .and_then(FieldValue::as_str)
        == Some("stream")
}

/// What a queue does when a length limit is reached (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages to make room.
    #[default]
    DropHead,
    /// Refuse new messages; the publisher gets a nack.
    RejectPublish,
    /// Refuse new messages and dead-letter them.
    RejectPublishDlx,
}

impl Overflow {
    /// The argument's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }
}

/// The typed settings a queue acts on, parsed from its (validated) declare arguments.
/// Durations are in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueConfig {
    /// `x-message-ttl`: ready messages older than this expire.
    pub message_ttl: Option<u64>,
    /// `x-expires`: the queue deletes itself after being unused this long.
    pub expires: Option<u64>,
    /// `x-max-length`: most ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: most bytes of ready message bodies.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange`: where dead messages are republished.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`: replaces the routing key of dead-lettered messages.
    pub dead_letter_routing_key: Option<String>,
    /// `x-delivery-limit`: a message delivered more than this many times is
    /// dead-lettered (or dropped) instead of requeued.
    pub delivery_limit: Option<u64>,
    /// `x-max-priority`: the highest message priority honoured (0 = not a priority queue).
    pub max_priority: u8,
    /// `x-delivery-delay`: every message waits this long before it becomes visible.
    pub delivery_delay: u64,
    /// `x-consumer-timeout`: an unacked delivery older than this is requeued.
    pub consumer_timeout: Option<u64>,
    /// `x-dedup-window`: a `message_id` seen this recently is not enqueued again.
    pub dedup_window: Option<u64>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-queue-type = quorum`: every message is stored and redeliveries carry
    /// `x-delivery-count` (see [`crate::broker::queue::quorum`]).
    pub quorum: bool,
}

impl QueueConfig {
    /// What the actor of a replicated quorum queue acts on itself: its dead-letter
    /// target (its leader republishes what dies). Everything else of a replicated
    /// queue is its group's (limits, TTL) or not replicated; its inert classic body
    /// must not act on it (an `x-expires` there would delete the queue on one node).
    pub fn dead_letter_only(&self) -> QueueConfig {
        QueueConfig {
            dead_letter_exchange: self.dead_letter_exchange.clone(),
            dead_letter_routing_key: self.dead_letter_routing_key.clone(),
            ..QueueConfig::default()
        }
    }

    /// Validates `spec`'s arguments and parses them.
    pub fn from_spec(spec: &QueueSpec) -> Result<QueueConfig, BrokerError> {
        validate(spec)?;
        Ok(Self::from_arguments(&spec.arguments))
    }

    /// Parses already validated arguments (a value of the wrong type counts as absent).
    pub fn from_arguments(args: &FieldTable) -> QueueConfig {
        let int = |k: &str| {
            args.get(k)
                .and_then(FieldValue::as_int)
                .and_then(|i| u64::try_from(i).ok())
        };
        let string = |k: &str| args.get(k).and_then(FieldValue::as_str).map(str::to_string);
        let overflow = match args.get("x-overflow").and_then(FieldValue::as_str) {
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
        QueueConfig {
            message_ttl: int("x-message-ttl"),
            expires: int("x-expires"),
            max_length: int("x-max-length"),
            max_length_bytes: int("x-max-length-bytes"),
            overflow,
            dead_letter_exchange: string("x-dead-letter-exchange"),
            dead_letter_routing_key: string("x-dead-letter-routing-key"),
            delivery_limit: int("x-delivery-limit"),
            max_priority: int("x-max-priority").map_or(0, |p| p.min(255) as u8),
            delivery_delay: int("x-delivery-delay").unwrap_or(0),
            consumer_timeout: int("x-consumer-timeout"),
            dedup_window: int("x-dedup-window"),
            single_active_consumer: args
                .get("x-single-active-consumer")
                .and_then(FieldValue::as_bool)
                .unwrap_or(false),
            quorum: crate::broker::queue::quorum::is_quorum_args(args),
        }
    }

    /// A description of the length limits, for refusal messages.
    pub fn limits_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.max_length {
            parts.push(format!("x-max-length {n}"));
        }
        if let Some(n) = self.max_length_bytes {
            parts.push(format!("x-max-length-bytes {n}"));
        }
        parts.join(", ")
    }
}

/// The consumer priority (`x-priority` consume argument; 0 when absent).
pub fn consumer_priority(arguments: &FieldTable, queue: &str) -> Result<i64, BrokerError> {
    match arguments.get("x-priority") {
        None => Ok(0),
        Some(v) if v.as_int().is_some() => Ok(v.as_int().unwrap_or_default()),
        Some(v) => Err(BrokerError::precondition(format!(
            "invalid arg 'x-priority' for a consumer of queue '{queue}': expected an integer, got {} {}",
            v.type_name(),
            v
        ))),
    }
}

/// The per-message TTL in milliseconds (`expiration`, a decimal string), if valid.
pub fn message_ttl(m: &Message) -> Option<u64> {
    m.properties.expiration.as_deref()?.parse().ok()
}

/// The delay asked for by the `x-delay` header in milliseconds (negative = none).
pub fn message_delay(m: &Message) -> Option<u64> {
    m.header("x-delay")
        .and_then(FieldValue::as_int)
        .map(|d| d.max(0) as u64)
}

/// Refuses a message whose `expiration` or `x-delay` the broker cannot read.
pub fn validate_message(m: &Message) -> Result<(), BrokerError> {
    if let Some(e) = &m.properties.expiration {
        if e.parse::<u64>().is_err() {
            return Err(BrokerError::precondition(format!(
                "invalid expiration '{e}': expected a non-negative integer number of milliseconds, as a string"
            )));
        }
    }
    match m.header("x-delay") {
        None => Ok(()),
        Some(v) if v.as_int().is_some() => Ok(()),
        Some(v) => Err(BrokerError::precondition(format!(
            "invalid header 'x-delay': expected an integer number of milliseconds, got {} {}",
            v.type_name(),
            v
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::sync::Arc;

    fn spec_with(key: &str, v: FieldValue) -> QueueSpec {
        let mut s = QueueSpec::new("q");
        s.arguments.insert(key.into(), v);
        s
    }

    #[test]
    fn a_ttl_given_as_a_string_is_refused_naming_the_argument() {
        let e = validate(&spec_with("x-message-ttl", "60000".into())).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PreconditionFailed);
        assert!(e.message().contains("'x-message-ttl'"), "{e}");
        assert!(e.message().contains("non-negative integer"), "{e}");
    }

    #[test]
    fn only_built_queue_types_are_accepted() {
        check_queue_type("/", &spec_with("x-queue-type", "classic".into())).unwrap();
        check_queue_type("/", &spec_with("x-other", "lazy".into())).unwrap();
        for t in ["stream", "quorum"] {
            let mut s = spec_with("x-queue-type", t.into());
            s.durable = true;
            check_queue_type("/", &s).unwrap();
            s.durable = false;
            let e = check_queue_type("/", &s).unwrap_err();
            assert!(e.message().contains("'non-durable'"), "{e}");
        }
        for t in ["lazy", "mirrored"] {
            let e = check_queue_type("/", &spec_with("x-queue-type", t.into())).unwrap_err();
            assert_eq!(e.code(), ErrorCode::PreconditionFailed);
            assert!(e.message().contains(&format!("'{t}'")), "{e}");
            assert!(
                e.message().contains("known types: classic, quorum, stream"),
                "{e}"
            );
        }
        let e = check_queue_type("/", &spec_with("x-queue-type", FieldValue::Int(1))).unwrap_err();
        assert!(e.message().contains("expected a string"), "{e}");
    }

    #[test]
    fn valid_and_unknown_arguments_pass() {
        validate(&spec_with("x-message-ttl", FieldValue::Int(60000))).unwrap();
        validate(&spec_with("x-overflow", "reject-publish".into())).unwrap();
        validate(&spec_with("x-custom-thing", FieldValue::Bool(true))).unwrap();
    }

    #[test]
    fn out_of_range_priority_is_refused() {
        assert!(validate(&spec_with("x-max-priority", FieldValue::Int(256))).is_err());
        assert!(validate(&spec_with("x-overflow", "drop-tail".into())).is_err());
    }

    #[test]
    fn a_dead_letter_routing_key_needs_an_exchange() {
        let e = validate(&spec_with("x-dead-letter-routing-key", "k".into())).unwrap_err();
        assert!(e.message().contains("'x-dead-letter-exchange'"), "{e}");
    }

    #[test]
    fn config_is_parsed_from_the_arguments() {
        let mut s = spec_with("x-message-ttl", FieldValue::Int(500));
        for (k, v) in [
            ("x-overflow", FieldValue::from("reject-publish-dlx")),
            ("x-dead-letter-exchange", "dlx".into()),
            ("x-max-priority", FieldValue::Int(9)),
            ("x-single-active-consumer", true.into()),
        ] {
            s.arguments.insert(k.into(), v);
        }
        let c = QueueConfig::from_spec(&s).unwrap();
        assert_eq!(c.message_ttl, Some(500));
        assert_eq!(c.overflow, Overflow::RejectPublishDlx);
        assert_eq!(c.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(c.max_priority, 9);
        assert!(c.single_active_consumer);
        assert_eq!(c.expires, None);
    }

    #[test]
    fn consumer_priority_must_be_an_integer() {
        let mut args = FieldTable::new();
        assert_eq!(consumer_priority(&args, "q").unwrap(), 0);
        args.insert("x-priority".into(), FieldValue::Int(-3));
        assert_eq!(consumer_priority(&args, "q").unwrap(), -3);
        args.insert("x-priority".into(), "high".into());
        let e = consumer_priority(&args, "q").unwrap_err();
        assert!(e.message().contains("'x-priority'"), "{e}");
    }

    #[test]
    fn message_properties_are_read_and_checked() {
        let mut m = Message::new("", "q", "b").with_header("x-delay", FieldValue::Int(-5));
        assert_eq!(message_delay(&m), Some(0));
        Arc::make_mut(&mut m.properties).expiration = Some("250".into());
        assert_eq!(message_ttl(&m), Some(250));
        validate_message(&m).unwrap();
        Arc::make_mut(&mut m.properties).expiration = Some("soon".into());
        assert!(validate_message(&m).is_err());
        let m = Message::new("", "q", "b").with_header("x-delay", "10");
        assert!(validate_message(&m)
            .unwrap_err()
            .message()
            .contains("'x-delay'"));
    }
}
