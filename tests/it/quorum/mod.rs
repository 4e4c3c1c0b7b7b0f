//! Quorum queues (`x-queue-type = "quorum"`) on a single broker, as RabbitMQ 3.x
//! behaves: accepted from every front end with its rules and texts, every message
//! stored (a confirm means on disk, `delivery_mode` or not), `x-delivery-count` on
//! redeliveries, `x-delivery-limit` dead-lettering, and survival of `kill -9`.
//! Replication across a cluster is tested in `tests/it/cluster`.
//!
//! - [`declare`]: native, AMQP, embedded, HTTP and definitions import.
//! - [`redelivery`]: the delivery count header, the delivery limit, length limits.
//! - [`crash`]: confirmed messages (transient ones too) survive `kill -9`.

mod crash;
mod declare;
mod redelivery;

use actormq::client::{Client, ConnectOptions, QueueOptions};

/// A quorum queue's declare options (durable, as it must be).
pub fn quorum() -> QueueOptions {
    QueueOptions::durable().arg("x-queue-type", "quorum")
}

/// A native client with confirms on, connected to `addr`.
pub async fn client(addr: &str) -> Client {
    crate::durability::within(
        "connect",
        Client::connect(ConnectOptions::new(addr).confirms(true)),
    )
    .await
    .expect("connects")
}
