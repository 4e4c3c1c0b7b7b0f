//! Dead-lettering as RabbitMQ does it, as pure functions: the `x-death` header written
//! on a dead-lettered message, and the detection of dead-letter cycles.
//!
//! `x-death` is an array of tables, most recent death first. Each table has `queue`,
//! `reason` (`rejected`, `expired`, `maxlen`, `delivery_limit`), `count`, `exchange`
//! (where the message had been published), `routing-keys` (an array) and `time`
//! (seconds since the Unix epoch, a timestamp: AMQP's field type `T`, as RabbitMQ
//! writes it), plus `original-expiration` when the message had a
//! per-message TTL (which is removed, so it does not expire again in the dead-letter
//! queue). A message dying again in the same queue for the same reason increments that
//! entry's `count` and moves it to the front. `x-first-death-{queue,reason,exchange}` are
//! set once, `x-last-death-{queue,reason,exchange}` every time.
//!
//! A cycle (RabbitMQ's rule) is a dead-lettered message about to enter a queue it
//! already died in, with no `rejected` death since: nothing but timers and limits would
//! ever stop it, so it is dropped. A cycle with a rejection in it is a client's choice
//! (a retry loop) and is allowed.

use crate::message::{FieldTable, FieldValue, Message, TypedValue};
use std::sync::Arc;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// Dropped by a length limit (`x-overflow` drop-head or reject-publish-dlx).
    MaxLen,
    /// Delivered more than `x-delivery-limit` times.
    DeliveryLimit,
}

impl Reason {
    /// The reason as `x-death` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::MaxLen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Where a dead-lettered message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `x-dead-letter-exchange`.
    pub exchange: Arc<str>,
    /// `x-dead-letter-routing-key`; None keeps the message's own routing key.
    pub routing_key: Option<String>,
}

fn field<'a>(entry: &'a FieldValue, key: &str) -> Option<&'a FieldValue> {
    match entry {
        FieldValue::Table(t) => t.get(key),
        _ => None,
    }
}

fn is_entry(entry: &FieldValue, queue: &str, reason: &str) -> bool {
    field(entry, "queue").and_then(FieldValue::as_str) == Some(queue)
        && field(entry, "reason").and_then(FieldValue::as_str) == Some(reason)
}

/// The message `m`, dead-lettered from `queue` for `reason` at `now_secs`, addressed to
/// `target`. The body is shared, not copied.
pub fn dead_letter(
    m: &Message,
    queue: &str,
    reason: Reason,
    target: &Target,
    now_secs: i64,
) -> Message {
    let mut out = m.clone();
    let props = Arc::make_mut(&mut out.properties);
    props.expiration = None;
    let headers = props.headers.get_or_insert_with(FieldTable::new);
    let mut deaths = match headers.remove("x-death") {
        Some(FieldValue::Array(a)) => a,
        _ => Vec::new(),
    };
    let entry = match deaths
        .iter()
        .position(|d| is_entry(d, queue, reason.as_str()))
    {
        Some(i) => {
            let mut e = deaths.remove(i);
            if let FieldValue::Table(t) = &mut e {
                let count = t.get("count").and_then(FieldValue::as_int).unwrap_or(0);
                t.insert("count".into(), FieldValue::Int(count + 1));
            }
            e
        }
        None => {
            let mut t = FieldTable::new();
            t.insert("count".into(), FieldValue::Int(1));
            t.insert("reason".into(), reason.as_str().into());
            t.insert("queue".into(), queue.into());
            let secs = u64::try_from(now_secs).unwrap_or(0);
            t.insert(
                "time".into(),
                FieldValue::Typed(TypedValue::Timestamp(secs)),
            );
            t.insert("exchange".into(), FieldValue::Str(m.exchange.to_string()));
            t.insert(
                "routing-keys".into(),
                FieldValue::Array(vec![m.routing_key.as_str().into()]),
            );
            if let Some(e) = &m.properties.expiration {
                t.insert("original-expiration".into(), e.as_str().into());
            }
            FieldValue::Table(t)
        }
    };
    deaths.insert(0, entry);
    headers.insert("x-death".into(), FieldValue::Array(deaths));
    for (what, value) in [
        ("queue", queue),
        ("reason", reason.as_str()),
        ("exchange", &m.exchange),
    ] {
        headers
            .entry(format!("x-first-death-{what}"))
            .or_insert_with(|| value.into());
        headers.insert(format!("x-last-death-{what}"), value.into());
    }
    out.exchange = target.exchange.clone();
    if let Some(k) = &target.routing_key {
        out.routing_key = k.clone();
    }
    out
}

/// True when the dead-lettered message `m` entering `queue` would close a fully
/// automatic cycle (see the module docs).
pub fn is_cycle(m: &Message, queue: &str) -> bool {
    let Some(FieldValue::Array(deaths)) = m.header("x-death") else {
        return false;
    };
    for d in deaths {
        if field(d, "reason").and_then(FieldValue::as_str) == Some(Reason::Rejected.as_str()) {
            return false;
        }
        if field(d, "queue").and_then(FieldValue::as_str) == Some(queue) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(exchange: &str, key: Option<&str>) -> Target {
        Target {
            exchange: exchange.into(),
            routing_key: key.map(str::to_string),
        }
    }

    fn deaths(m: &Message) -> &Vec<FieldValue> {
        match m.header("x-death") {
            Some(FieldValue::Array(a)) => a,
            other => panic!("no x-death: {other:?}"),
        }
    }

    fn get<'a>(e: &'a FieldValue, k: &str) -> &'a FieldValue {
        field(e, k).unwrap_or_else(|| panic!("no {k} in {e:?}"))
    }

    #[test]
    fn the_first_death_writes_an_entry_as_rabbitmq_does() {
        let mut m = Message::new("orders", "order.new", "b");
        Arc::make_mut(&mut m.properties).expiration = Some("500".into());
        let d = dead_letter(&m, "work", Reason::Expired, &target("dlx", Some("dead")), 7);
        assert_eq!(&*d.exchange, "dlx");
        assert_eq!(d.routing_key, "dead");
        assert_eq!(d.properties.expiration, None);
        assert_eq!(d.body, m.body);
        let e = &deaths(&d)[0];
        assert_eq!(get(e, "queue"), &FieldValue::from("work"));
        assert_eq!(get(e, "reason"), &FieldValue::from("expired"));
        assert_eq!(get(e, "count"), &FieldValue::Int(1));
        assert_eq!(get(e, "exchange"), &FieldValue::from("orders"));
        assert_eq!(get(e, "time"), &FieldValue::Typed(TypedValue::Timestamp(7)));
        assert_eq!(get(e, "original-expiration"), &FieldValue::from("500"));
        assert_eq!(
            get(e, "routing-keys"),
            &FieldValue::Array(vec!["order.new".into()])
        );
        assert_eq!(d.header("x-first-death-queue"), Some(&"work".into()));
        assert_eq!(d.header("x-last-death-reason"), Some(&"expired".into()));
    }

    #[test]
    fn dying_again_for_the_same_reason_counts_and_moves_to_the_front() {
        let m = Message::new("", "work", "b");
        let t = target("", Some("retry"));
        let a = dead_letter(&m, "work", Reason::Rejected, &t, 1);
        let b = dead_letter(&a, "retry", Reason::Expired, &target("", Some("work")), 2);
        let c = dead_letter(&b, "work", Reason::Rejected, &t, 3);
        let ds = deaths(&c);
        assert_eq!(ds.len(), 2);
        assert_eq!(get(&ds[0], "queue"), &FieldValue::from("work"));
        assert_eq!(get(&ds[0], "count"), &FieldValue::Int(2));
        assert_eq!(
            get(&ds[0], "time"),
            &FieldValue::Typed(TypedValue::Timestamp(1)),
            "first time kept"
        );
        assert_eq!(get(&ds[1], "queue"), &FieldValue::from("retry"));
        assert_eq!(c.header("x-first-death-reason"), Some(&"rejected".into()));
        assert_eq!(c.header("x-last-death-queue"), Some(&"work".into()));
    }

    #[test]
    fn an_automatic_cycle_is_detected_and_a_rejection_breaks_it() {
        let m = Message::new("", "a", "b");
        // a expires into b, b expires back towards a: a fully automatic cycle.
        let to_b = dead_letter(&m, "a", Reason::Expired, &target("", Some("b")), 1);
        assert!(!is_cycle(&to_b, "b"));
        let to_a = dead_letter(&to_b, "b", Reason::Expired, &target("", Some("a")), 2);
        assert!(is_cycle(&to_a, "a"));
        // A message rejected in a, then expiring in a retry queue, may go back to a.
        let rejected = dead_letter(&m, "a", Reason::Rejected, &target("", Some("r")), 1);
        assert!(!is_cycle(&rejected, "a"), "a rejection is never a cycle");
        let back = dead_letter(&rejected, "r", Reason::Expired, &target("", Some("a")), 2);
        assert!(!is_cycle(&back, "a"));
        assert!(!is_cycle(&m, "a"), "never dead-lettered");
    }
}
