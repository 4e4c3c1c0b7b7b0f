//! The AMQP 0-9-1 listener, driven by lapin (a client no one here wrote) for the main
//! paths and by raw frames for the error paths (`raw`).

mod cancel;
mod compat;
mod features;
mod flow;
mod perf;
mod perf_failover;
mod raw;
mod suites;
mod tables;

use crate::support::{TestServer, DEADLINE};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::future::Future;

/// The AMQP address of a test server.
fn amqp_url(server: &TestServer) -> String {
    let addr = server.handle().amqp_addrs()[0];
    format!("amqp://guest:guest@{addr}/%2f")
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("not within {DEADLINE:?}: {what}"))
}

async fn connect(server: &TestServer) -> Connection {
    within(
        "connect",
        Connection::connect(&amqp_url(server), ConnectionProperties::default()),
    )
    .await
    .expect("lapin connects")
}

async fn declare(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_confirms_then_consume_with_acks() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "jobs").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..20 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "jobs".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        let c = within("confirm", confirm).await.unwrap();
        assert!(c.is_ack(), "message {i} confirmed");
    }
    let mut consumer = ch
        .basic_consume(
            "jobs".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..20 {
        let d = within("delivery", consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.data, format!("m{i}").into_bytes());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let q = ch
        .queue_declare(
            "jobs".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    conn.close(200, "bye".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_with_requeue_redelivers_marked_redelivered() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "q").await;
    ch.basic_publish(
        "".into(),
        "q".into(),
        BasicPublishOptions::default(),
        b"again",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            "q".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = within("first", consumer.next()).await.unwrap().unwrap();
    assert!(!d.redelivered);
    d.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = within("redelivery", consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert!(d.redelivered);
    assert_eq!(d.data, b"again");
    d.ack(BasicAckOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_answers_a_message_then_get_empty() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "g").await;
    ch.basic_publish(
        "".into(),
        "g".into(),
        BasicPublishOptions::default(),
        b"one",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = within("get", async {
        loop {
            if let Some(m) = ch
                .basic_get("g".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"one");
    assert_eq!(got.message_count, 0);
    let empty = ch
        .basic_get("g".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(empty.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_mandatory_message_is_returned_with_no_route() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "amq.direct".into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let c = within("confirm", confirm).await.unwrap();
    let returned = c.take_message().expect("returned");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.data, b"lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_bounds_unacked_deliveries() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "p").await;
    for _ in 0..5 {
        ch.basic_publish(
            "".into(),
            "p".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "p".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let a = within("1st", consumer.next()).await.unwrap().unwrap();
    let _b = within("2nd", consumer.next()).await.unwrap().unwrap();
    // With two unacked, the queue holds the other three back.
    let ready = ch
        .queue_declare(
            "p".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        ready.message_count(),
        3,
        "nothing beyond prefetch 2 delivered"
    );
    a.ack(BasicAckOptions::default()).await.unwrap();
    let _c = within("3rd after an ack", consumer.next())
        .await
        .unwrap()
        .unwrap();
}

/// Passive-declares `q`: its ready count.
async fn ready(ch: &Channel, q: &str) -> u32 {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// The kombu / Celery trap: a qos raised while the channel's consumer holds its only
/// unacked delivery must reach that consumer (regression guard for docs/AMQP.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_qos_reaches_the_channels_existing_consumers() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "eta").await;
    for _ in 0..5 {
        ch.basic_publish(
            "".into(),
            "eta".into(),
            BasicPublishOptions::default(),
            b"task",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    ch.basic_qos(1, BasicQosOptions { global: false })
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            "eta".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _held = within("1st", consumer.next()).await.unwrap().unwrap();
    assert_eq!(ready(&ch, "eta").await, 4, "prefetch 1 holds the rest");
    ch.basic_qos(3, BasicQosOptions { global: false })
        .await
        .unwrap();
    let _b = within("2nd after the raise", consumer.next())
        .await
        .unwrap()
        .unwrap();
    let _c = within("3rd after the raise", consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready(&ch, "eta").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumer() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "doomed").await;
    let mut consumer = ch
        .basic_consume(
            "doomed".into(),
            "watcher".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let other = conn.create_channel().await.unwrap();
    other
        .queue_delete("doomed".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // lapin ends the consumer's stream on basic.cancel from the broker.
    let end = within("cancel notification", consumer.next()).await;
    assert!(end.is_none(), "stream ended by the broker's cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_error_closes_only_that_channel() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let bad = conn.create_channel().await.unwrap();
    let good = conn.create_channel().await.unwrap();
    let err = bad
        .queue_declare(
            "missing".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("NOT_FOUND - no queue 'missing' in vhost '/'"),
        "{text}"
    );
    // The other channel of the same connection carries on.
    declare(&good, "alive").await;
    good.basic_publish(
        "".into(),
        "alive".into(),
        BasicPublishOptions::default(),
        b"ok",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = within("get on the good channel", async {
        loop {
            if let Some(m) = good
                .basic_get("alive".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"ok");
    assert!(conn.status().connected());
}
