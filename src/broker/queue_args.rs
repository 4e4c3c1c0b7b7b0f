//! Validation of queue declare arguments, with RabbitMQ's names and types.
//!
//! A known argument with a wrong type or value fails the declare with
//! PRECONDITION_FAILED naming the argument and the expected type. Unknown arguments are
//! kept and ignored, as RabbitMQ does.

use crate::broker::queue::QueueSpec;
use crate::error::BrokerError;
use crate::message::FieldValue;

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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

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
}
