//! A quorum queue's redeliveries carry `x-delivery-count`; past `x-delivery-limit` a
//! message is dead-lettered (with a dead-letter exchange) or dropped; length limits,
//! TTL and `x-expires` act as on a classic queue.

use super::{client, quorum};
use crate::durability::within;
use crate::support::{eventually, TestServer};
use actormq::client::{Client, ConsumeOptions, Delivery, PublishOptions, QueueOptions};
use actormq::{ErrorCode, FieldValue};
use futures_util::StreamExt;
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

async fn next(c: &mut actormq::client::Consumer) -> Delivery {
    within("a delivery", c.next())
        .await
        .expect("the stream goes on")
        .expect("a delivery")
}

fn delivery_count_header(d: &Delivery) -> Option<FieldValue> {
    d.properties
        .headers
        .as_ref()
        .and_then(|h| h.get("x-delivery-count"))
        .cloned()
}

async fn send(c: &Client, key: &str, body: &str) -> Result<(), actormq::client::ClientError> {
    let confirm = c
        .publish_with("", key, body, &PublishOptions::default())
        .await?;
    within("a confirm", confirm).await.map(|_| ())
}

async fn depth(c: &Client, q: &str) -> u64 {
    c.declare_queue(q, &QueueOptions::new().passive())
        .await
        .expect("the queue exists")
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_count_up_and_the_delivery_limit_dead_letters() {
    let s = TestServer::start();
    let c = client(&s.addr.to_string()).await;
    c.declare_queue("dlq", &QueueOptions::durable())
        .await
        .unwrap();
    c.declare_queue(
        "work",
        &quorum()
            .arg("x-delivery-limit", 2i64)
            .arg("x-dead-letter-exchange", "")
            .arg("x-dead-letter-routing-key", "dlq"),
    )
    .await
    .unwrap();
    send(&c, "work", "poison").await.unwrap();
    let mut consumer = c
        .consume("work", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    // Delivered 3 times (returned twice is the limit); the third return kills it.
    for n in 1..=3u32 {
        let d = next(&mut consumer).await;
        assert_eq!(d.delivery_count, n);
        assert_eq!(d.redelivered, n > 1);
        let expected = (n > 1).then(|| FieldValue::Int(i64::from(n) - 1));
        assert_eq!(delivery_count_header(&d), expected, "delivery {n}");
        d.nack(true).unwrap();
    }
    let mut dead = c
        .consume("dlq", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    let d = next(&mut dead).await;
    assert_eq!(&d.body[..], b"poison");
    let death = match d.properties.headers.as_ref().and_then(|h| h.get("x-death")) {
        Some(FieldValue::Array(a)) => a[0].clone(),
        other => panic!("no x-death: {other:?}"),
    };
    match death {
        FieldValue::Table(t) => {
            assert_eq!(t.get("reason"), Some(&FieldValue::from("delivery_limit")));
            assert_eq!(t.get("queue"), Some(&FieldValue::from("work")));
        }
        other => panic!("x-death entry: {other:?}"),
    }
    d.ack().unwrap();
    eventually("the poison message left the quorum queue", || async {
        depth(&c, "work").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_exchange_a_message_past_the_limit_is_dropped() {
    let s = TestServer::start();
    let c = client(&s.addr.to_string()).await;
    c.declare_queue("work", &quorum().arg("x-delivery-limit", 0i64))
        .await
        .unwrap();
    send(&c, "work", "once").await.unwrap();
    send(&c, "work", "kept").await.unwrap();
    let got = c.get("work", false).await.unwrap().expect("a message");
    assert_eq!(&got.delivery.body[..], b"once");
    got.delivery.nack(true).unwrap();
    eventually("the returned message is dropped", || async {
        depth(&c, "work").await == 1
    })
    .await;
    let got = c.get("work", true).await.unwrap().expect("a message");
    assert_eq!(&got.delivery.body[..], b"kept");
    assert_eq!(delivery_count_header(&got.delivery), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_limits_and_overflow_act_on_a_quorum_queue() {
    let s = TestServer::start();
    let c = client(&s.addr.to_string()).await;
    c.declare_queue(
        "bounded",
        &quorum()
            .arg("x-max-length", 2i64)
            .arg("x-overflow", "reject-publish"),
    )
    .await
    .unwrap();
    send(&c, "bounded", "a").await.unwrap();
    send(&c, "bounded", "b").await.unwrap();
    let e = send(&c, "bounded", "c").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ResourceError), "{e}");
    c.declare_queue("head", &quorum().arg("x-max-length", 2i64))
        .await
        .unwrap();
    for b in ["a", "b", "c"] {
        send(&c, "head", b).await.unwrap();
    }
    let mut bodies = Vec::new();
    while let Some(g) = c.get("head", true).await.unwrap() {
        bodies.push(String::from_utf8(g.delivery.body.to_vec()).unwrap());
    }
    assert_eq!(bodies, ["b", "c"], "drop-head keeps the newest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_consumer_sees_x_delivery_count_on_a_redelivery() {
    let s = TestServer::start();
    let addr = s.handle().amqp_addrs()[0];
    let conn = within(
        "connect",
        Connection::connect(
            &format!("amqp://guest:guest@{addr}/%2f"),
            ConnectionProperties::default(),
        ),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        "qq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    // A transient message (delivery_mode 1): a quorum queue stores it all the same.
    ch.basic_publish(
        "".into(),
        "qq".into(),
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default().with_delivery_mode(1),
    )
    .await
    .unwrap();
    let count = |m: &lapin::message::BasicGetMessage| {
        m.properties.headers().as_ref().and_then(|h| {
            h.inner()
                .iter()
                .find(|(k, _)| k.as_str() == "x-delivery-count")
                .map(|(_, v)| v.clone())
        })
    };
    // Polled with the suite's deadline: a nack's requeue is asynchronous.
    let get = || async {
        let end = std::time::Instant::now() + crate::support::DEADLINE;
        loop {
            let got = ch
                .basic_get("qq".into(), BasicGetOptions::default())
                .await
                .unwrap();
            if let Some(m) = got {
                return m;
            }
            assert!(std::time::Instant::now() < end, "no message in qq");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let first = get().await;
    assert!(!first.delivery.redelivered);
    assert_eq!(count(&first), None);
    first
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let second = get().await;
    assert!(second.delivery.redelivered);
    match count(&second) {
        Some(AMQPValue::LongLongInt(1)) | Some(AMQPValue::LongInt(1)) => {}
        other => panic!("x-delivery-count: {other:?}"),
    }
}
