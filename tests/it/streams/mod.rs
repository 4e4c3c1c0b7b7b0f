//! Stream queues (issue #15): declare, publish through exchanges, read without removing
//! from any offset, retention, named consumers' stored offsets across a restart, and
//! RabbitMQ's refusals. Over TCP with the native client against a real broker.

mod amqp;
mod bodies;
mod crash;
mod damage;
mod embed;
mod groups;
mod mgmt;
mod offsets;
mod perf;
mod publish;
mod queues;
mod recovery_point;
mod replay;
mod runs;
mod superstream;

use crate::support::{TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions, ConsumeOptions, Consumer, Delivery, QueueOptions};
use actormq::FieldValue;
use futures_util::StreamExt;
use std::future::Future;

async fn connect(server: &TestServer) -> Client {
    Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect("connects")
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("not within {DEADLINE:?}: {what}"))
}

/// Stream declare options (durable, `x-queue-type = stream`).
fn stream() -> QueueOptions {
    QueueOptions::durable().arg("x-queue-type", "stream")
}

/// Consume options with a prefetch and a start.
fn from(offset: impl Into<FieldValue>) -> ConsumeOptions {
    ConsumeOptions::prefetch(10).arg("x-stream-offset", offset)
}

/// Publishes `prefix0..prefix{n-1}` to `queue` and waits for every confirm.
async fn publish_n(c: &Client, queue: &str, prefix: &str, n: usize) {
    let mut confirms = Vec::new();
    for i in 0..n {
        confirms.push(c.publish("", queue, format!("{prefix}{i}")).await.unwrap());
    }
    for confirm in confirms {
        within("a confirm", confirm).await.unwrap();
    }
}

/// The next `n` deliveries, acked.
async fn take(consumer: &mut Consumer, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        let d = within("a delivery", consumer.next())
            .await
            .expect("consumer open")
            .expect("a delivery");
        d.ack().unwrap();
        out.push(d);
    }
    out
}

/// The `x-stream-offset` header of each delivery.
fn offsets(ds: &[Delivery]) -> Vec<i64> {
    ds.iter()
        .map(|d| {
            d.properties
                .headers
                .as_ref()
                .and_then(|h| h.get("x-stream-offset"))
                .and_then(FieldValue::as_int)
                .expect("x-stream-offset header")
        })
        .collect()
}

fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8(d.body.to_vec()).unwrap())
        .collect()
}
