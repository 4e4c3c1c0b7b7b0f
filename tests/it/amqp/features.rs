//! AMQP features beyond the basic paths: properties seen natively, server-named queues
//! and the `amq.*` exchanges, transactions, the connection listing, direct reply-to.

use super::*;

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

/// A publish that races the deletion of its queue (an auto-delete queue whose last
/// consumer just cancelled) is routed nowhere, as RabbitMQ counts it: confirmed, and
/// returned when mandatory. Never nacked: a nack tells the publisher the broker failed
/// to store what it should have, and it would publish again into a queue that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_racing_an_auto_delete_queue_s_deletion_is_confirmed_never_nacked() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let (mut delivered, mut returned) = (0, 0);
    for round in 0..100 {
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let name = q.name().as_str().to_string();
        let tag = format!("c{round}");
        ch.basic_consume(
            name.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        // The cancel deletes the queue; publishes sent right after it meet the queue
        // while it goes, or after it went.
        ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..5 {
            let body = format!("{round}.{i}");
            let c = ch
                .basic_publish(
                    "".into(),
                    name.as_str().into(),
                    mandatory,
                    body.as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            pending.push((body, c));
        }
        for (body, c) in pending {
            let c = within("a confirm", c).await.unwrap();
            assert!(c.is_ack(), "{body}: {c:?}");
            match c.take_message() {
                Some(r) => {
                    assert_eq!(r.reply_code, 312, "{body}");
                    returned += 1;
                }
                None => delivered += 1,
            }
        }
    }
    // Both sides of the race were seen (the test is about the one in between).
    assert!(
        returned > 0,
        "none of the publishes came after the deletion"
    );
    assert_eq!(delivered + returned, 500);
}
