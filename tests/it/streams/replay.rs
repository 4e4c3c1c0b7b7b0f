//! A replay from the segment files delivers each record as it was published. A native
//! consumer reading the files is handed the record's stored exchange, routing key and
//! properties copied into its frames (not decoded and encoded again), an AMQP consumer
//! a message decoded from them: both must carry every property and header as the
//! publisher set it (plus `x-stream-offset`), as the same records delivered from the
//! tail cache before a restart do.

use super::*;
use actormq::client::PublishOptions;
use actormq::{FieldTable, Properties, TypedValue};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, LongString};

const N: usize = 40;

/// Every property set, and headers of every kind of value, varying with `i`.
fn rich(i: usize) -> Properties {
    let mut nested = FieldTable::new();
    nested.insert("depth".into(), FieldValue::Int(2));
    nested.insert("name".into(), FieldValue::from(format!("n{i}")));
    let mut h = FieldTable::new();
    h.insert("int".into(), FieldValue::Int(-(i as i64) * 1_000_003));
    h.insert("str".into(), FieldValue::from(format!("héllo-{i}")));
    h.insert("float".into(), FieldValue::Float(i as f64 + 0.5));
    h.insert("bool".into(), FieldValue::Bool(i % 2 == 0));
    h.insert("void".into(), FieldValue::Void);
    h.insert(
        "bytes".into(),
        FieldValue::Bytes(vec![0, 255, i as u8].into()),
    );
    h.insert(
        "array".into(),
        FieldValue::Array(vec![FieldValue::Int(1), FieldValue::from("two")]),
    );
    h.insert("table".into(), FieldValue::Table(nested));
    h.insert("i32".into(), FieldValue::Typed(TypedValue::I32(-7)));
    h.insert("u8".into(), FieldValue::Typed(TypedValue::U8(200)));
    h.insert(
        "decimal".into(),
        FieldValue::Typed(TypedValue::Decimal {
            scale: 2,
            value: 31_415,
        }),
    );
    h.insert(
        "when".into(),
        FieldValue::Typed(TypedValue::Timestamp(1_700_000_000 + i as u64)),
    );
    Properties {
        content_type: Some("application/json".into()),
        content_encoding: Some("identity".into()),
        headers: Some(h),
        delivery_mode: Some(2),
        priority: Some((i % 10) as u8),
        correlation_id: Some(format!("corr-{i}")),
        reply_to: Some("replies".into()),
        expiration: Some("3600000".into()),
        message_id: Some(format!("id-{i}")),
        timestamp: Some(1_700_000_000 + i as u64),
        kind: Some("order.created".into()),
        user_id: Some("guest".into()),
        app_id: Some("replay-test".into()),
    }
}

fn body(i: usize) -> String {
    format!("body-{i}-{}", "z".repeat(i * 37))
}

/// `got` is `want` with the header `x-stream-offset` = `offset` added: field by field,
/// and header by header.
fn assert_as_published(what: &str, got: &Properties, want: &Properties, offset: usize) {
    assert_eq!(got.content_type, want.content_type, "{what}: content_type");
    assert_eq!(
        got.content_encoding, want.content_encoding,
        "{what}: content_encoding"
    );
    assert_eq!(
        got.delivery_mode, want.delivery_mode,
        "{what}: delivery_mode"
    );
    assert_eq!(got.priority, want.priority, "{what}: priority");
    assert_eq!(
        got.correlation_id, want.correlation_id,
        "{what}: correlation_id"
    );
    assert_eq!(got.reply_to, want.reply_to, "{what}: reply_to");
    assert_eq!(got.expiration, want.expiration, "{what}: expiration");
    assert_eq!(got.message_id, want.message_id, "{what}: message_id");
    assert_eq!(got.timestamp, want.timestamp, "{what}: timestamp");
    assert_eq!(got.kind, want.kind, "{what}: type");
    assert_eq!(got.user_id, want.user_id, "{what}: user_id");
    assert_eq!(got.app_id, want.app_id, "{what}: app_id");
    let got_h = got.headers.as_ref().expect("headers");
    let want_h = want.headers.as_ref().expect("headers");
    for (k, v) in want_h {
        assert_eq!(got_h.get(k), Some(v), "{what}: header {k}");
    }
    assert_eq!(
        got_h.get("x-stream-offset"),
        Some(&FieldValue::Int(offset as i64)),
        "{what}: x-stream-offset"
    );
    assert_eq!(got_h.len(), want_h.len() + 1, "{what}: no other header");
}

fn assert_delivery(what: &str, d: &Delivery, i: usize) {
    let what = format!("{what}, record {i}");
    assert_eq!(
        (d.exchange.as_str(), d.routing_key.as_str()),
        ("", "s"),
        "{what}"
    );
    assert_eq!(&d.body[..], body(i).as_bytes(), "{what}: body");
    assert_eq!((d.redelivered, d.delivery_count), (false, 1), "{what}");
    assert_as_published(&what, &d.properties, &rich(i), i);
}

/// The next `n` AMQP deliveries (acked).
async fn amqp_read(consumer: &mut lapin::Consumer, n: usize) -> Vec<lapin::message::Delivery> {
    let mut out = Vec::new();
    for _ in 0..n {
        let d = within("an AMQP delivery", consumer.next())
            .await
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        out.push(d);
    }
    out
}

async fn amqp_consume(server: &TestServer, tag: &str) -> (lapin::Connection, lapin::Consumer) {
    let addr = server.handle().amqp_addrs()[0];
    let url = format!("amqp://guest:guest@{addr}/%2f");
    let conn = within(
        "AMQP connect",
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from("first")),
    );
    let consumer = ch
        .basic_consume("s".into(), tag.into(), BasicConsumeOptions::default(), args)
        .await
        .unwrap();
    (conn, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_the_files_delivers_every_property_and_header_as_published() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let start = || {
        let dir = dir.clone();
        TestServer::with(move |s| s.storage.data_dir = dir)
    };
    let (tail, tail_amqp) = {
        let server = start();
        let c = connect(&server).await;
        c.declare_queue("s", &stream()).await.unwrap();
        let mut confirms = Vec::new();
        for i in 0..N {
            let opts = PublishOptions {
                properties: rich(i),
                ..PublishOptions::default()
            };
            confirms.push(c.publish_with("", "s", body(i), &opts).await.unwrap());
        }
        for confirm in confirms {
            within("a confirm", confirm).await.unwrap();
        }
        // From the tail cache: native, the records as stored at append (their frames'
        // bytes); AMQP, the messages they were encoded from.
        let mut sub = c.consume("s", &from("first")).await.unwrap();
        let tail = take(&mut sub, N).await;
        let (_conn, mut amqp) = amqp_consume(&server, "before").await;
        (tail, amqp_read(&mut amqp, N).await)
    };
    for (i, d) in tail.iter().enumerate() {
        assert_delivery("from the tail cache", d, i);
    }
    // Restarted, the tail cache is empty: every record is read from the segment files,
    // kept as stored and copied into the native frames.
    let server = start();
    let c = connect(&server).await;
    let mut sub = c.consume("s", &from("first")).await.unwrap();
    let files = take(&mut sub, N).await;
    for (i, (d, before)) in files.iter().zip(&tail).enumerate() {
        assert_delivery("native, from the files", d, i);
        assert_eq!(
            d.properties, before.properties,
            "record {i}: as from the tail"
        );
    }
    // Over AMQP the same records are decoded from the files: as before the restart.
    let (_conn, mut amqp) = amqp_consume(&server, "after").await;
    let after = amqp_read(&mut amqp, N).await;
    for (i, (d, before)) in after.iter().zip(&tail_amqp).enumerate() {
        assert_eq!(d.data, body(i).as_bytes(), "AMQP record {i}: body");
        assert_eq!(d.routing_key.as_str(), "s", "AMQP record {i}");
        assert_eq!(
            d.properties, before.properties,
            "AMQP record {i}: properties"
        );
        let offset = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        assert_eq!(
            offset,
            Some(AMQPValue::LongLongInt(i as i64)),
            "AMQP record {i}"
        );
    }
}
