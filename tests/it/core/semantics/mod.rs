//! The queue semantics RabbitMQ, SQS and NATS users reach for (issue 5), through the
//! embedding API: TTL and queue expiry, length limits, dead-lettering, delivery limits,
//! priorities, delayed delivery, consumer timeouts, deduplication, alternate exchanges,
//! single active consumer and consumer priorities.
//!
//! Durations are short (tens to hundreds of milliseconds) and every wait is on a
//! condition with a deadline; nothing asserts how long anything took.

mod alternate;
mod dead_letters;
mod delayed;
mod delivery;
mod expiry;
mod limits;

pub use super::*;
pub use actormq::broker::messages::QueueStats;
pub use actormq::{Confirmation, FieldValue};
pub use std::sync::Arc;

/// Queue options with declare arguments.
pub fn with_args(args: &[(&str, FieldValue)]) -> QueueOptions {
    args.iter()
        .fold(QueueOptions::new(), |o, (k, v)| o.arg(k, v.clone()))
}

/// Declares queue `name` with `args`.
pub async fn declare(s: &Session, name: &str, args: &[(&str, FieldValue)]) {
    s.declare_queue(name, &with_args(args))
        .await
        .unwrap_or_else(|e| panic!("declare queue {name}: {e}"));
}

/// A message for queue `queue` through the default exchange.
pub fn msg(queue: &str, body: &str) -> Message {
    Message::new("", queue, body.to_string())
}

/// `m` with a per-message TTL (`expiration`).
pub fn expiring(mut m: Message, ttl_ms: u64) -> Message {
    Arc::make_mut(&mut m.properties).expiration = Some(ttl_ms.to_string());
    m
}

/// `m` with a `priority`.
pub fn prioritised(mut m: Message, priority: u8) -> Message {
    Arc::make_mut(&mut m.properties).priority = Some(priority);
    m
}

/// Publishes `m` and awaits the broker's answer (an error is a nack).
pub async fn send(s: &Session, m: Message) -> Result<Confirmation, BrokerError> {
    let confirm = s.publish(m).await?;
    within("a confirmation", confirm).await
}

/// The counts of `queue`.
pub async fn stats(s: &Session, queue: &str) -> QueueStats {
    s.queue_stats(queue)
        .await
        .unwrap_or_else(|e| panic!("stats of {queue}: {e}"))
}

/// Waits until the broker holds no message bytes at all: nothing in any queue, nothing
/// on its way (dead letters in flight included).
pub async fn memory_settles_at_zero(broker: &TestBroker) {
    eventually("the memory gauge back at zero", || async {
        broker.memory().used() == 0
    })
    .await;
}

/// The `x-death` entries of a delivery, most recent first.
pub fn deaths(r: &Received) -> Vec<FieldTable> {
    match r.message.header("x-death") {
        Some(FieldValue::Array(a)) => a
            .iter()
            .map(|e| match e {
                FieldValue::Table(t) => t.clone(),
                other => panic!("an x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array: {other:?}"),
    }
}

/// One field of an `x-death` entry.
pub fn field<'a>(entry: &'a FieldTable, key: &str) -> &'a FieldValue {
    entry
        .get(key)
        .unwrap_or_else(|| panic!("no '{key}' in {entry:?}"))
}

/// Consume options with a prefetch.
pub fn prefetch(n: u32) -> ConsumeOptions {
    ConsumeOptions {
        prefetch: n,
        ..Default::default()
    }
}
