//! Stream arguments with RabbitMQ's names: the declare arguments a stream acts on
//! ([`StreamConfig`]) and where a consumer starts (`x-stream-offset`, [`StartAt`]).

use crate::error::BrokerError;
use crate::message::{FieldTable, FieldValue};

/// RabbitMQ's default `x-stream-max-segment-size-bytes`: 500 MB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;

/// The consumer argument naming a consumer whose offset the broker keeps.
pub const CONSUMER_NAME: &str = "x-stream-consumer-name";

/// The retention and segment settings of a stream, parsed from its declare arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// `x-max-length-bytes`: segments are removed from the front above this size.
    pub max_bytes: Option<u64>,
    /// `x-max-age` in milliseconds: segments whose newest record is older go.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes`.
    pub max_segment_bytes: u64,
}

impl StreamConfig {
    /// Parses (validated) declare arguments.
    pub fn from_arguments(args: &FieldTable) -> StreamConfig {
        let int = |k: &str| {
            args.get(k)
                .and_then(FieldValue::as_int)
                .and_then(|i| u64::try_from(i).ok())
        };
        StreamConfig {
            max_bytes: int("x-max-length-bytes"),
            max_age_ms: args
                .get("x-max-age")
                .and_then(FieldValue::as_str)
                .and_then(parse_interval),
            max_segment_bytes: int("x-stream-max-segment-size-bytes")
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_SEGMENT_BYTES),
        }
    }
}

/// Milliseconds of an interval in RabbitMQ's form: a positive integer and one unit of
/// `Y M D h m s` (years of 365 days, months of 30), e.g. `7D`, `1h`, `30m`.
pub fn parse_interval(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        'Y' => 365 * 86_400,
        'M' => 30 * 86_400,
        'D' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1000)
}

/// Checks the stream-only declare arguments and the properties a stream must have
/// (durable, not exclusive, not auto-delete), with RabbitMQ's wording.
pub fn validate(
    name: &str,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    args: &FieldTable,
) -> Result<(), BrokerError> {
    let property = |what: &str| {
        Err(BrokerError::precondition(format!(
            "invalid property '{what}' for queue '{name}': a stream is always durable, never exclusive nor auto-delete"
        )))
    };
    if !durable {
        return property("non-durable");
    }
    if exclusive {
        return property("exclusive-owner");
    }
    if auto_delete {
        return property("auto-delete");
    }
    if let Some(v) = args.get("x-max-age") {
        if v.as_str().and_then(parse_interval).is_none() {
            return Err(BrokerError::precondition(format!(
                "invalid arg 'x-max-age' for queue '{name}': expected a string such as \"7D\" (a positive integer and one of the units Y M D h m s), got {} {v}",
                v.type_name()
            )));
        }
    }
    if let Some(v) = args.get("x-stream-max-segment-size-bytes") {
        if !matches!(v, FieldValue::Int(i) if *i > 0) {
            return Err(BrokerError::precondition(format!(
                "invalid arg 'x-stream-max-segment-size-bytes' for queue '{name}': expected a positive integer, got {} {v}",
                v.type_name()
            )));
        }
    }
    Ok(())
}

/// Where a consumer starts reading (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first retained offset.
    First,
    /// The start of the last chunk.
    Last,
    /// What is appended from now on (the default).
    Next,
    /// This offset (the first retained one if it is gone, the next if beyond).
    Offset(u64),
    /// The first record appended at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// Reads `x-stream-offset`: `first`, `last`, `next`, a non-negative integer (an
/// offset), a table `{"timestamp": seconds}` (what an AMQP timestamp value becomes), or
/// an interval string (`"1h"`: that long ago). `None` when absent.
pub fn start_at(
    args: &FieldTable,
    queue: &str,
    now_ms: i64,
) -> Result<Option<StartAt>, BrokerError> {
    let Some(v) = args.get("x-stream-offset") else {
        return Ok(None);
    };
    let start = match v {
        FieldValue::Str(s) => match s.as_str() {
            "first" => Some(StartAt::First),
            "last" => Some(StartAt::Last),
            "next" => Some(StartAt::Next),
            other => {
                parse_interval(other).map(|ms| StartAt::Timestamp(now_ms.saturating_sub(ms as i64)))
            }
        },
        FieldValue::Int(i) if *i >= 0 => Some(StartAt::Offset(*i as u64)),
        FieldValue::Table(t) => match t.get("timestamp") {
            Some(FieldValue::Int(secs)) => Some(StartAt::Timestamp(secs.saturating_mul(1000))),
            _ => None,
        },
        _ => None,
    };
    start.map(Some).ok_or_else(|| {
        BrokerError::precondition(format!(
            "invalid arg 'x-stream-offset' for a consumer of queue '{queue}': expected first, last, next, a non-negative offset, a timestamp or an interval such as \"1h\", got {} {v}",
            v.type_name()
        ))
    })
}

/// Consumer arguments as the AMQP front end hands them on: an AMQP timestamp given as
/// `x-stream-offset` (RabbitMQ's way to start at a point in time) becomes
/// `{"timestamp": seconds}`, since actormq's tables read every AMQP integer and
/// timestamp alike as `Int`, which here means an offset.
pub fn amqp_consume_arguments(
    mut args: FieldTable,
    raw: &amq_protocol::types::FieldTable,
) -> FieldTable {
    let stamp = raw
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == "x-stream-offset")
        .and_then(|(_, v)| match v {
            amq_protocol::types::AMQPValue::Timestamp(t) => Some(*t),
            _ => None,
        });
    if let Some(t) = stamp {
        let secs = FieldValue::Int(i64::try_from(t).unwrap_or(i64::MAX));
        args.insert(
            "x-stream-offset".into(),
            FieldValue::Table(FieldTable::from([("timestamp".to_string(), secs)])),
        );
    }
    args
}

/// Reads `x-stream-consumer-name` (a non-empty string), if given.
pub fn consumer_name(args: &FieldTable, queue: &str) -> Result<Option<String>, BrokerError> {
    match args.get(CONSUMER_NAME) {
        None => Ok(None),
        Some(FieldValue::Str(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(BrokerError::precondition(format!(
            "invalid arg '{CONSUMER_NAME}' for a consumer of queue '{queue}': expected a non-empty string, got {} {v}",
            v.type_name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_use_rabbitmq_units() {
        assert_eq!(parse_interval("7D"), Some(7 * 86_400_000));
        assert_eq!(parse_interval("1h"), Some(3_600_000));
        assert_eq!(parse_interval("30m"), Some(1_800_000));
        assert_eq!(parse_interval("2Y"), Some(2 * 365 * 86_400_000));
        assert_eq!(parse_interval("1M"), Some(30 * 86_400_000));
        assert_eq!(parse_interval("10s"), Some(10_000));
        for bad in ["", "D", "7d", "x1h", "-1h", "1.5h"] {
            assert_eq!(parse_interval(bad), None, "{bad}");
        }
    }

    fn args(v: FieldValue) -> FieldTable {
        FieldTable::from([("x-stream-offset".to_string(), v)])
    }

    #[test]
    fn every_start_form_is_read() {
        let now = 10_000_000;
        let s = |v: FieldValue| start_at(&args(v), "s", now).unwrap().unwrap();
        assert_eq!(s("first".into()), StartAt::First);
        assert_eq!(s("last".into()), StartAt::Last);
        assert_eq!(s("next".into()), StartAt::Next);
        assert_eq!(s(FieldValue::Int(42)), StartAt::Offset(42));
        assert_eq!(s("1h".into()), StartAt::Timestamp(now - 3_600_000));
        let ts = FieldTable::from([("timestamp".to_string(), FieldValue::Int(1_700_000_000))]);
        assert_eq!(
            s(FieldValue::Table(ts)),
            StartAt::Timestamp(1_700_000_000_000)
        );
        assert_eq!(start_at(&FieldTable::new(), "s", now).unwrap(), None);
        for bad in [FieldValue::Int(-1), "later".into(), FieldValue::Bool(true)] {
            let e = start_at(&args(bad), "s", now).unwrap_err();
            assert!(e.message().contains("'x-stream-offset'"), "{e}");
        }
    }

    #[test]
    fn a_stream_must_be_durable_and_its_arguments_valid() {
        let t = FieldTable::new();
        validate("s", true, false, false, &t).unwrap();
        let e = validate("s", false, false, false, &t).unwrap_err();
        assert!(e.message().contains("'non-durable'"), "{e}");
        assert!(validate("s", true, true, false, &t).is_err());
        assert!(validate("s", true, false, true, &t).is_err());
        let bad = FieldTable::from([("x-max-age".to_string(), FieldValue::Int(5))]);
        assert!(validate("s", true, false, false, &bad).is_err());
        let c = StreamConfig::from_arguments(&FieldTable::from([
            ("x-max-age".to_string(), "1D".into()),
            ("x-max-length-bytes".to_string(), FieldValue::Int(1000)),
        ]));
        assert_eq!(c.max_age_ms, Some(86_400_000));
        assert_eq!(c.max_bytes, Some(1000));
        assert_eq!(c.max_segment_bytes, DEFAULT_SEGMENT_BYTES);
    }
}
