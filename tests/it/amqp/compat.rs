//! Behaviours real clients' own test suites rely on (py-amqp, kombu, aio-pika,
//! amqplib), as RabbitMQ 3.x gives them.

use super::{connect, declare};
use crate::support::TestServer;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_right_after_a_publish_on_the_same_channel_sees_it() {
    // py-amqp's and kombu's suites publish and basic.get at once, with no confirm.
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "ordered").await;
    for i in 0..20u8 {
        ch.basic_publish(
            "".into(),
            "ordered".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let got = ch
            .basic_get("ordered".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        assert_eq!(got.map(|m| m.delivery.data), Some(vec![i]), "round {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbinding_what_is_already_gone_answers_unbind_ok() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "q").await;
    ch.queue_unbind(
        "q".into(),
        "no-such-exchange".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .expect("queue.unbind-ok");
    ch.exchange_unbind(
        "no-dest".into(),
        "no-source".into(),
        "k".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.unbind-ok");
    assert!(ch.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_beside_an_exclusive_consumer_is_refused_in_exclusive_use() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "solo").await;
    let _first = ch
        .basic_consume(
            "solo".into(),
            "first".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let other = conn.create_channel().await.unwrap();
    let err = other
        .basic_consume(
            "solo".into(),
            "second".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ACCESS_REFUSED - queue 'solo' in vhost '/' in exclusive use"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_publish_closes_the_connection_with_not_implemented() {
    // RabbitMQ 3 dropped `immediate`; py-amqp's suite expects 540 NOT_IMPLEMENTED.
    let server = TestServer::start();
    let conn = connect(&server).await;
    // The close may come before or after a later request is sent; lapin reports the
    // broker's reason as a connection event either way.
    let mut events = Box::pin(conn.events_listener());
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .basic_publish(
            "".into(),
            "anything".into(),
            BasicPublishOptions {
                immediate: true,
                ..Default::default()
            },
            b"now",
            BasicProperties::default(),
        )
        .await;
    let reason = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(e) = event {
                return e.to_string();
            }
        }
        "no error event before the stream ended".to_string()
    })
    .await
    .expect("the connection is closed with a reason");
    assert!(
        reason.contains("NOT_IMPLEMENTED - immediate=true"),
        "{reason}"
    );
    assert!(ch
        .queue_declare(
            "after".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_empty_counts_ready_messages_only() {
    // aio-pika deletes with if_empty=true by default, often holding an unacked get.
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    for q in ["held", "ready"] {
        declare(&ch, q).await;
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let _unacked = ch
        .basic_get("held".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("one");
    let if_empty = QueueDeleteOptions {
        if_empty: true,
        ..Default::default()
    };
    ch.queue_delete("held".into(), if_empty)
        .await
        .expect("one unacked, none ready: empty as RabbitMQ reads it");
    let err = ch
        .queue_delete("ready".into(), if_empty)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PRECONDITION_FAILED - queue 'ready' in vhost '/' not empty"),
        "{err}"
    );
}
