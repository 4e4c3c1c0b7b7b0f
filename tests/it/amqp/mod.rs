//! The AMQP 0-9-1 listener, driven by lapin (a client no one here wrote) for the main
//! paths and by raw frames for the error paths (`raw`).

mod compat;
mod flow;
mod raw;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_over_amqp_keeps_its_properties_natively() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "cross").await;
    let mut headers = FieldTable::default();
    headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    headers.insert("n".into(), AMQPValue::LongLongInt(42));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_correlation_id("corr-1".into())
        .with_delivery_mode(2)
        .with_priority(3)
        .with_timestamp(1_700_000_000)
        .with_headers(headers);
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let c = ch
        .basic_publish(
            "".into(),
            "cross".into(),
            BasicPublishOptions::default(),
            b"{}",
            props,
        )
        .await
        .unwrap();
    within("confirm", c).await.unwrap();
    let client = actormq::client::Client::connect(actormq::client::ConnectOptions::new(
        server.addr.to_string(),
    ))
    .await
    .unwrap();
    let got = client
        .get("cross", true)
        .await
        .unwrap()
        .expect("the message");
    let p = &got.delivery.properties;
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(p.delivery_mode, Some(2));
    assert_eq!(p.priority, Some(3));
    assert_eq!(p.timestamp, Some(1_700_000_000));
    let h = p.headers.as_ref().expect("headers");
    assert_eq!(h["tenant"], actormq::FieldValue::Str("acme".into()));
    assert_eq!(h["n"], actormq::FieldValue::Int(42));
    assert_eq!(&got.delivery.body[..], b"{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queues_and_the_amq_exchanges_exist() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
    for x in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    ] {
        ch.exchange_declare(
            x.into(),
            lapin::ExchangeKind::Custom(String::new()),
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{x}: {e}"));
    }
    ch.queue_bind(
        q.name().clone(),
        "amq.fanout".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "amq.fanout".into(),
        "any".into(),
        BasicPublishOptions::default(),
        b"fan",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = within("fanout", async {
        loop {
            if let Some(m) = ch
                .basic_get(q.name().clone(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"fan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_hold_publishes_and_acks_until_commit() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "tx").await;
    ch.tx_select().await.unwrap();
    let publish = |body: &'static [u8]| {
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                "".into(),
                "tx".into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
    };
    publish(b"dropped").await;
    ch.tx_rollback().await.unwrap();
    assert_eq!(ready(&ch, "tx").await, 0, "rolled back");
    publish(b"kept").await;
    assert_eq!(ready(&ch, "tx").await, 0, "held until commit");
    ch.tx_commit().await.unwrap();
    assert_eq!(
        ready(&ch, "tx").await,
        1,
        "in the queue once commit-ok came"
    );
    let got = ch
        .basic_get("tx".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("the committed message");
    assert_eq!(got.delivery.data, b"kept");
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.tx_rollback().await.unwrap();
    // The ack was rolled back: the delivery is unacked again and can be acked.
    ch.basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    ch.tx_commit().await.unwrap();
    let other = conn.create_channel().await.unwrap();
    ch.close(200, "bye".into()).await.unwrap();
    assert_eq!(ready(&other, "tx").await, 0, "the committed ack removed it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_connections_are_listed_with_their_channels_and_can_be_closed() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let _a = conn.create_channel().await.unwrap();
    let _b = conn.create_channel().await.unwrap();
    let registry = server.handle().front_end().connections();
    crate::support::eventually("listed with two channels", || async {
        registry
            .list()
            .iter()
            .any(|c| c.protocol == "amqp" && c.channels == 2 && c.user == "guest" && c.vhost == "/")
    })
    .await;
    let id = registry
        .list()
        .into_iter()
        .find(|c| c.protocol == "amqp")
        .unwrap()
        .id;
    assert!(registry.close(&id.to_string(), "maintenance"));
    crate::support::eventually("closed by the operator", || async {
        !conn.status().connected()
    })
    .await;
    crate::support::eventually("gone from the list", || async { registry.is_empty() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_carries_a_reply_without_a_queue() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let client = conn.create_channel().await.unwrap();
    let service = conn.create_channel().await.unwrap();
    declare(&service, "rpc").await;
    let mut replies = client
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    client
        .basic_publish(
            "".into(),
            "rpc".into(),
            BasicPublishOptions::default(),
            b"ping",
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
        )
        .await
        .unwrap();
    let request = within("the request", async {
        loop {
            if let Some(m) = service
                .basic_get("rpc".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
        }
    })
    .await;
    let reply_to = request
        .delivery
        .properties
        .reply_to()
        .clone()
        .expect("reply_to");
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "{reply_to}"
    );
    service
        .basic_publish(
            "".into(),
            reply_to,
            BasicPublishOptions::default(),
            b"pong",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let reply = within("the reply", replies.next()).await.unwrap().unwrap();
    assert_eq!(reply.data, b"pong");
}
