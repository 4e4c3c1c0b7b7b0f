//! Header tables cross actormq as the client wrote them: every AMQP 0-9-1 field type
//! as RabbitMQ reads it, AMQP to AMQP and AMQP to the native protocol and back.

use super::{connect, declare, within};
use crate::support::TestServer;
use lapin::options::*;
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;

/// One value of every field type, and the same nested in an array and a table.
fn every_type() -> FieldTable {
    let scalars = vec![
        AMQPValue::Boolean(false),
        AMQPValue::ShortShortInt(-128),
        AMQPValue::ShortShortUInt(255),
        AMQPValue::ShortInt(-300),
        AMQPValue::ShortUInt(65535),
        AMQPValue::LongInt(-70_000),
        AMQPValue::LongUInt(4_000_000_000),
        AMQPValue::LongLongInt(-(1 << 40)),
        AMQPValue::Float(0.5),
        AMQPValue::Double(1e-300),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 3,
            value: 1_234_567,
        }),
        AMQPValue::LongString("utf-8 ✓".into()),
        AMQPValue::LongString(LongString::from(vec![0xc3u8, 0x28, 0x00])),
        AMQPValue::Timestamp(1_700_000_123),
        AMQPValue::ByteArray(vec![0u8, 255, 7].into()),
        AMQPValue::Void,
    ];
    let mut inner = FieldTable::default();
    for (i, v) in scalars.iter().enumerate() {
        inner.insert(format!("n{i}").as_str().into(), v.clone());
    }
    let mut t = inner.clone();
    let mut nested = scalars;
    nested.push(AMQPValue::FieldTable(inner.clone()));
    t.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(nested)),
    );
    t.insert("table".into(), AMQPValue::FieldTable(inner));
    t
}

fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/x-test".into())
        .with_content_encoding("identity".into())
        .with_headers(every_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr".into())
        .with_reply_to("replies".into())
        .with_expiration("600000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("kind".into())
        .with_user_id("guest".into())
        .with_app_id("app".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_type_crosses_amqp_and_native_unchanged() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "types").await;
    declare(&ch, "types-back").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..2 {
        let c = ch
            .basic_publish(
                "".into(),
                "types".into(),
                BasicPublishOptions::default(),
                b"body",
                properties(),
            )
            .await
            .unwrap();
        within("confirm", c).await.unwrap();
    }

    // AMQP to AMQP.
    let got = ch
        .basic_get("types".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.properties, properties());

    // AMQP to native, republished natively, back to AMQP.
    let client = actormq::client::Client::connect(actormq::client::ConnectOptions::new(
        server.addr.to_string(),
    ))
    .await
    .unwrap();
    let native = client
        .get("types", true)
        .await
        .unwrap()
        .expect("the second message");
    let options = actormq::client::PublishOptions {
        confirm: Some(true),
        properties: native.delivery.properties.clone(),
        ..Default::default()
    };
    let confirm = client
        .publish_with("", "types-back", &native.delivery.body[..], &options)
        .await
        .unwrap();
    within("native confirm", confirm).await.unwrap();
    let back = ch
        .basic_get("types-back".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the republished message");
    assert_eq!(back.delivery.properties, properties());
    assert_eq!(back.delivery.data, b"body");
}

/// The `time` of a delivery's first `x-death` entry, as AMQP carried it.
fn death_time(props: &BasicProperties) -> AMQPValue {
    let headers = props.headers().as_ref().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death array: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() else {
        panic!("no x-death entry: {deaths:?}");
    };
    first.inner()["time"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_death_time_is_a_timestamp_over_amqp_and_natively() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "dead").await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("dead".into()),
    );
    ch.queue_declare("work".into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..2 {
        let c = ch
            .basic_publish(
                "".into(),
                "work".into(),
                BasicPublishOptions::default(),
                b"job",
                BasicProperties::default(),
            )
            .await
            .unwrap();
        within("confirm", c).await.unwrap();
    }
    for _ in 0..2 {
        let got = ch
            .basic_get("work".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("a job");
        ch.basic_reject(
            got.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        )
        .await
        .unwrap();
    }
    // Over AMQP: field type 'T', seconds since the epoch, as RabbitMQ writes it.
    let got = within("the first dead letter", async {
        loop {
            if let Some(m) = ch
                .basic_get("dead".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    match death_time(&got.delivery.properties) {
        AMQPValue::Timestamp(t) => assert!(t > 1_700_000_000 && t <= now + 1, "{t}"),
        other => panic!("x-death time is not a timestamp: {other:?}"),
    }
    // Natively: a typed timestamp too.
    let client = actormq::client::Client::connect(actormq::client::ConnectOptions::new(
        server.addr.to_string(),
    ))
    .await
    .unwrap();
    let native = within("the second dead letter", async {
        loop {
            if let Some(m) = client.get("dead", true).await.unwrap() {
                return m;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let headers = native
        .delivery
        .properties
        .headers
        .as_ref()
        .expect("headers");
    let Some(actormq::FieldValue::Array(deaths)) = headers.get("x-death") else {
        panic!("no x-death: {headers:?}");
    };
    let Some(actormq::FieldValue::Table(first)) = deaths.first() else {
        panic!("no x-death entry: {deaths:?}");
    };
    assert!(
        matches!(
            first.get("time"),
            Some(actormq::FieldValue::Typed(actormq::TypedValue::Timestamp(t))) if *t > 1_700_000_000
        ),
        "{first:?}"
    );
}
