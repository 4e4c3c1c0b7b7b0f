//! `delivery_count` goes on across restarts (as in RabbitMQ's quorum queues), and
//! `x-delivery-limit` with it: a persistent message delivered and left unsettled when
//! the broker stops comes back counted as delivered once more.

use super::{runtime, within, BrokerProcess};
use crate::support::eventually;
use actormq::client::{Client, ConnectOptions, Delivery, PublishOptions, QueueOptions};
use actormq::FieldValue;

async fn connect(broker: &BrokerProcess) -> Client {
    within(
        "connect",
        Client::connect(ConnectOptions::new(&broker.addr)),
    )
    .await
    .unwrap()
}

/// Gets the head of `queue` without ack.
async fn get(c: &Client, queue: &str) -> Delivery {
    within("a get", c.get(queue, false))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{queue} is empty"))
        .delivery
}

/// A confirmed persistent publish to `queue`: the log is written in order, so every
/// record appended before it (the delivery just made) is on disk once it is confirmed.
async fn persist(c: &Client, queue: &str, body: &str) {
    let confirm = c
        .publish_with("", queue, body, &PublishOptions::default().persistent())
        .await
        .unwrap();
    within("a confirm", confirm).await.unwrap();
}

#[test]
fn delivery_count_and_the_delivery_limit_go_on_across_restarts() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();

    // Round 1: delivered once, never settled, then kill -9.
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("dlq", &QueueOptions::durable())
            .await
            .unwrap();
        c.declare_queue("sync", &QueueOptions::durable())
            .await
            .unwrap();
        let work = QueueOptions::durable()
            .arg("x-delivery-limit", 3i64)
            .arg("x-dead-letter-exchange", "")
            .arg("x-dead-letter-routing-key", "dlq");
        c.declare_queue("work", &work).await.unwrap();
        persist(&c, "work", "poison").await;
        let d = get(&c, "work").await;
        assert_eq!((d.redelivered, d.delivery_count), (false, 1));
        persist(&c, "sync", "after the first delivery").await;
    });
    broker.kill9();

    // Round 2: it comes back counted (2, not 1); requeued and delivered again (3), left
    // unsettled, then a graceful stop.
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        let d = get(&c, "work").await;
        assert_eq!((d.redelivered, d.delivery_count), (true, 2));
        c.nack(d.delivery_tag, false, true).unwrap();
        let d = get(&c, "work").await;
        assert_eq!((d.redelivered, d.delivery_count), (true, 3));
        persist(&c, "sync", "after the third delivery").await;
    });
    broker.stop();

    // Round 3: delivery 4 is past the limit of 3: the requeue dead-letters it.
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        let d = get(&c, "work").await;
        assert_eq!((d.redelivered, d.delivery_count), (true, 4));
        c.nack(d.delivery_tag, false, true).unwrap();
        eventually("the message dead-lettered", || async {
            let q = c.declare_queue("dlq", &QueueOptions::durable()).await;
            q.unwrap().messages == 1
        })
        .await;
        let dead = c.get("dlq", true).await.unwrap().unwrap().delivery;
        assert_eq!(&dead.body[..], b"poison");
        let reason = dead
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-death"))
            .and_then(|v| match v {
                FieldValue::Array(a) => a.first().cloned(),
                _ => None,
            });
        let Some(FieldValue::Table(death)) = reason else {
            panic!("no x-death header: {:?}", dead.properties.headers);
        };
        assert_eq!(
            death.get("reason"),
            Some(&FieldValue::from("delivery_limit"))
        );
        assert!(c.get("work", true).await.unwrap().is_none());
    });
    broker.stop();
}
