//! A stream over AMQP 0-9-1 through lapin, as a RabbitMQ streams user drives it:
//! `x-queue-type` at declare, `basic.qos` then `basic.consume` with `x-stream-offset`
//! (a string or an AMQP timestamp), the offset back in each delivery's headers.

use super::within;
use crate::support::TestServer;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

async fn channel(server: &TestServer) -> (Connection, Channel) {
    let addr = server.handle().amqp_addrs()[0];
    let url = format!("amqp://guest:guest@{addr}/%2f");
    let conn = within(
        "connect",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("lapin connects");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

fn offset_arg(v: AMQPValue) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-stream-offset".into(), v);
    t
}

/// The `x-stream-offset` header of the next `n` deliveries (acked).
async fn read(consumer: &mut lapin::Consumer, n: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for _ in 0..n {
        let d = within("a delivery", consumer.next())
            .await
            .unwrap()
            .unwrap();
        let headers = d.properties.headers().clone().unwrap_or_default();
        let v = headers
            .inner()
            .iter()
            .find(|(k, _)| k.as_str() == "x-stream-offset")
            .map(|(_, v)| v.clone());
        out.push(match v {
            Some(AMQPValue::LongLongInt(i)) => i,
            other => panic!("x-stream-offset header: {other:?}"),
        });
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_client_declares_and_replays_a_stream_from_a_string_or_a_timestamp() {
    let server = TestServer::start();
    let (_conn, ch) = channel(&server).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch.queue_declare(
        "s".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        let c = ch
            .basic_publish(
                "".into(),
                "s".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        assert!(within("confirm", c).await.unwrap().is_ack());
    }
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut first = ch
        .basic_consume(
            "s".into(),
            "a".into(),
            BasicConsumeOptions::default(),
            offset_arg(AMQPValue::LongString(LongString::from("first"))),
        )
        .await
        .unwrap();
    assert_eq!(read(&mut first, 3).await, vec![0, 1, 2]);
    let mut since_epoch = ch
        .basic_consume(
            "s".into(),
            "b".into(),
            BasicConsumeOptions::default(),
            offset_arg(AMQPValue::Timestamp(1)),
        )
        .await
        .unwrap();
    assert_eq!(read(&mut since_epoch, 3).await, vec![0, 1, 2]);
    let mut at = ch
        .basic_consume(
            "s".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            offset_arg(AMQPValue::LongLongInt(2)),
        )
        .await
        .unwrap();
    assert_eq!(read(&mut at, 1).await, vec![2]);

    // Without a prefetch the consume is refused (406), on a channel of its own.
    let (_c2, bare) = channel(&server).await;
    let e = bare
        .basic_consume(
            "s".into(),
            "d".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("406") || e.to_string().contains("PRECONDITION"),
        "{e}"
    );
}
