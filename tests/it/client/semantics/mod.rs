//! The queue semantics of issue 5 over the network: the native protocol through the
//! Rust client, against a real broker on an ephemeral port. Each feature tested at the
//! actor level in `core::semantics` is exercised here end to end: the arguments travel
//! as typed MessagePack, headers such as `x-death` come back in deliveries, and refusals
//! come back as nacks with a code.

mod consumers;
mod messages;

use super::{connect, within};
pub use crate::support::{eventually, TestServer};
pub use actormq::client::{
    Client, ClientError, ConsumeOptions, Delivery, ExchangeOptions, PublishOptions, QueueOptions,
};
pub use actormq::{ErrorCode, FieldTable, FieldValue};
pub use futures_util::StreamExt;

/// Declares `name` with `args`.
pub async fn declare(client: &Client, name: &str, args: &[(&str, FieldValue)]) {
    let mut opts = QueueOptions::default();
    for (k, v) in args {
        opts = opts.arg(k, v.clone());
    }
    client
        .declare_queue(name, &opts)
        .await
        .unwrap_or_else(|e| panic!("declare {name}: {e}"));
}

/// Ready messages of `queue` (a passive declare).
pub async fn ready(client: &Client, queue: &str) -> u64 {
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    client
        .declare_queue(queue, &passive)
        .await
        .unwrap()
        .messages
}

/// Publishes and awaits the broker's answer.
pub async fn send(
    client: &Client,
    exchange: &str,
    key: &str,
    body: &str,
    opts: &PublishOptions,
) -> Result<actormq::client::Confirmation, ClientError> {
    let c = client.publish_with(exchange, key, body, opts).await?;
    within("the broker's answer", c).await
}

/// The next delivery of `consumer`.
pub async fn next(consumer: &mut actormq::client::Consumer) -> Delivery {
    within("a delivery", consumer.next())
        .await
        .expect("the stream goes on")
        .expect("a delivery")
}

/// The body as text.
pub fn text(d: &Delivery) -> String {
    String::from_utf8(d.body.to_vec()).unwrap()
}

/// The `x-death` entries of a delivery, most recent first.
pub fn deaths(d: &Delivery) -> Vec<FieldTable> {
    match d.properties.headers.as_ref().and_then(|h| h.get("x-death")) {
        Some(FieldValue::Array(a)) => a
            .iter()
            .map(|e| match e {
                FieldValue::Table(t) => t.clone(),
                other => panic!("not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death: {other:?}"),
    }
}

/// Every message of `queue`, got with no_ack, as text.
pub async fn drain(client: &Client, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(g) = client.get(queue, true).await.unwrap() {
        out.push(text(&g.delivery));
    }
    out
}
