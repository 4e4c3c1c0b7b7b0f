//! `[limits]`: consumers per channel (RabbitMQ's `consumer_max_per_channel`, in its
//! words) and the depth and encoded size of a message's headers, in both protocols.

use crate::support::{TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions, ConsumeOptions, PublishOptions, QueueOptions};
use actormq::message::{FieldTable, FieldValue, Properties};
use actormq::ErrorCode;
use lapin::types::{AMQPValue, FieldTable as AmqpTable};

fn amqp_url(server: &TestServer) -> String {
    format!("amqp://guest:guest@{}/%2f", server.handle().amqp_addrs()[0])
}

async fn lapin_connect(server: &TestServer) -> lapin::Connection {
    tokio::time::timeout(
        DEADLINE,
        lapin::Connection::connect(&amqp_url(server), lapin::ConnectionProperties::default()),
    )
    .await
    .expect("in time")
    .expect("lapin connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_per_channel_are_bounded_in_both_protocols() {
    let server = TestServer::with(|s| s.limits.consumer_max_per_channel = 2);
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    let _a = client
        .consume("q", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    let _b = client
        .consume("q", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    let e = client
        .consume("q", &ConsumeOptions::prefetch(1))
        .await
        .expect_err("a third consumer");
    assert_eq!(e.code(), Some(ErrorCode::NotAllowed), "{e}");
    assert!(
        e.to_string()
            .contains("reached maximum (2) of consumers per channel"),
        "{e}"
    );
    // The connection goes on.
    client
        .declare_queue("still-open", &QueueOptions::default())
        .await
        .expect("the native connection stays open");

    // AMQP: a connection error, as RabbitMQ's.
    let conn = lapin_connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    // Kept: lapin cancels a consumer it drops.
    let mut kept = Vec::new();
    for tag in ["a", "b"] {
        let c = ch
            .basic_consume(
                "q".into(),
                tag.into(),
                Default::default(),
                AmqpTable::default(),
            )
            .await
            .unwrap();
        kept.push(c);
    }
    // lapin may answer before the broker's close arrives: the error then shows on the
    // channel's next operation.
    let third = ch
        .basic_consume(
            "q".into(),
            "c".into(),
            Default::default(),
            AmqpTable::default(),
        )
        .await;
    let text = match third {
        Err(e) => e.to_string(),
        Ok(_) => {
            crate::support::eventually("the connection is closed", || {
                let closed = !conn.status().connected();
                async move { closed }
            })
            .await;
            let e = ch
                .basic_qos(1, Default::default())
                .await
                .expect_err("closed");
            e.to_string()
        }
    };
    assert!(
        text.contains("NOT_ALLOWED - reached maximum (2) of consumers per channel"),
        "{text}"
    );
}

/// A headers table nested `levels` deep (the table itself is level 1).
fn nested(levels: usize) -> FieldTable {
    let mut v = FieldValue::Int(1);
    for _ in 1..levels {
        v = FieldValue::Table([("k".to_string(), v)].into());
    }
    [("top".to_string(), v)].into()
}

fn with_headers(headers: FieldTable) -> PublishOptions {
    PublishOptions {
        properties: Properties {
            headers: Some(headers),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_headers_over_the_depth_or_size_limit_are_nacked_naming_it() {
    let server = TestServer::with(|s| {
        s.limits.max_header_depth = 4;
        s.limits.max_header_bytes = 4096;
    });
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();
    client
        .declare_queue("h", &QueueOptions::default())
        .await
        .unwrap();
    let publish = |h: FieldTable| {
        let client = &client;
        async move {
            client
                .publish_with("", "h", "x", &with_headers(h))
                .await
                .unwrap()
                .await
        }
    };
    publish(nested(4)).await.expect("4 levels are allowed");
    let e = publish(nested(5)).await.expect_err("5 levels are not");
    assert_eq!(e.code(), Some(ErrorCode::PreconditionFailed), "{e}");
    assert!(e.to_string().contains("limits.max_header_depth (4)"), "{e}");
    let big: FieldTable = [("b".to_string(), FieldValue::Str("x".repeat(5000)))].into();
    let e = publish(big).await.expect_err("5000 bytes are over 4096");
    assert!(
        e.to_string().contains("limits.max_header_bytes (4096)"),
        "{e}"
    );
    publish(FieldTable::new())
        .await
        .expect("the connection goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_headers_over_the_depth_limit_close_the_channel_with_406() {
    let server = TestServer::with(|s| s.limits.max_header_depth = 3);
    let conn = lapin_connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    let mut deep = AmqpTable::default();
    deep.insert("n".into(), AMQPValue::LongLongInt(1));
    for _ in 0..3 {
        let mut outer = AmqpTable::default();
        outer.insert("k".into(), AMQPValue::FieldTable(deep));
        deep = outer;
    }
    ch.confirm_select(Default::default()).await.unwrap();
    let published = ch
        .basic_publish(
            "".into(),
            "nowhere".into(),
            Default::default(),
            b"x",
            lapin::BasicProperties::default().with_headers(deep),
        )
        .await;
    let outcome = match published {
        Ok(confirm) => confirm.await.map(drop),
        Err(e) => Err(e),
    };
    let e = match outcome {
        Err(e) => e.to_string(),
        Ok(()) => {
            // The close may come after the confirm future resolved: the channel's next
            // operation reports it.
            crate::support::eventually("the channel is closed", || {
                let closed = !ch.status().connected();
                async move { closed }
            })
            .await;
            ch.basic_qos(1, Default::default())
                .await
                .expect_err("closed")
                .to_string()
        }
    };
    assert!(
        e.contains("PRECONDITION_FAILED - headers table nested 4 levels deep, deeper than limits.max_header_depth (3)"),
        "{e}"
    );
    // The connection stays: another channel works.
    let ch2 = conn.create_channel().await.expect("the connection is open");
    ch2.queue_declare("after".into(), Default::default(), AmqpTable::default())
        .await
        .unwrap();
}
