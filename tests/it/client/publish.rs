//! Publishing: confirms, the publish window, mandatory returns, refusals, blocking.

use super::{connect, options, within};
use crate::support::{eventually, TestServer};
use actormq::client::{Client, ConsumeOptions, PublishOptions, QueueOptions};
use actormq::ErrorCode;
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipelined_publish_is_confirmed_in_sequence() {
    let server = TestServer::start();
    // A window far smaller than the publishes: publish must wait for confirms.
    let mut opts = options(&server);
    opts.max_unconfirmed = 16;
    let client = Client::connect(opts).await.unwrap();
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..2000 {
        confirms.push(client.publish("", "q", format!("m{i}")).await.unwrap());
    }
    let seqs: Vec<u64> = confirms.iter().map(|c| c.seq()).collect();
    assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
    for c in confirms {
        let done = within("confirm", c).await.expect("confirmed");
        assert!(done.is_confirmed() && !done.is_returned());
    }
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    assert_eq!(
        client.declare_queue("q", &passive).await.unwrap().messages,
        2000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandatory_unroutable_publish_comes_back_with_its_confirm() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let opts = PublishOptions::default()
        .mandatory()
        .header("tenant", "acme");
    let c = client
        .publish_with("", "no-such-queue", "lost", &opts)
        .await
        .unwrap();
    let done = within("confirm", c).await.expect("still confirmed");
    let r = done.returned.expect("returned");
    assert_eq!((r.code, r.reason.as_str()), (312, "NO_ROUTE"));
    assert_eq!(r.routing_key, "no-such-queue");
    assert_eq!(&r.body[..], b"lost");
    let tenant = r.properties.headers.as_ref().and_then(|h| h.get("tenant"));
    assert_eq!(tenant.and_then(|v| v.as_str()), Some("acme"));

    client
        .declare_queue("here", &QueueOptions::default())
        .await
        .unwrap();
    let c = client
        .publish_with("", "here", "kept", &PublishOptions::default().mandatory())
        .await
        .unwrap();
    assert!(!within("confirm", c).await.unwrap().is_returned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_a_missing_exchange_is_nacked_with_not_found() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let c = client.publish("no-such-exchange", "k", "x").await.unwrap();
    let err = within("nack", c).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    // The connection goes on.
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    within("confirm", client.publish("", "q", "y").await.unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_publishes_arrive_without_confirms() {
    let server = TestServer::start();
    let client = Client::connect(options(&server).confirms(false))
        .await
        .unwrap();
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    for i in 0..500 {
        let c = client.publish("", "q", format!("{i}")).await.unwrap();
        assert_eq!(c.seq(), 0);
        assert!(!c.await.unwrap().is_confirmed(), "ready at once");
    }
    let mut consumer = client
        .consume("q", &ConsumeOptions::prefetch(50))
        .await
        .unwrap();
    for i in 0..500 {
        let d = within("delivery", consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.body, format!("{i}").as_bytes(), "in order");
        d.ack().unwrap();
    }
    // A per-publish override asks for a confirm on this connection anyway.
    let c = client
        .publish_with(
            "",
            "q",
            "confirmed",
            &PublishOptions {
                confirm: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(c.seq(), 1);
    assert!(within("confirm", c).await.unwrap().is_confirmed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_message_keeps_its_properties() {
    let server = TestServer::start();
    let client = connect(&server).await;
    client
        .declare_queue("q", &QueueOptions::durable())
        .await
        .unwrap();
    let mut opts = PublishOptions::default().persistent().header("n", 7i64);
    opts.properties.content_type = Some("text/plain".into());
    client
        .publish_with("", "q", "body", &opts)
        .await
        .unwrap()
        .await
        .unwrap();
    let got = client.get("q", false).await.unwrap().expect("a message");
    let p = &got.delivery.properties;
    assert!(p.is_persistent());
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        p.headers
            .as_ref()
            .and_then(|h| h.get("n"))
            .and_then(|v| v.as_int()),
        Some(7)
    );
    got.delivery.ack().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_before_sending() {
    let server = TestServer::with(|s| s.server.max_frame_size = 4096);
    let client = connect(&server).await;
    let err = client.publish("", "q", vec![0u8; 8192]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FrameTooLarge), "{err}");
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .expect("the connection is unharmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_see_blocked_and_unblocked_around_the_memory_watermark() {
    let server = TestServer::with(|s| s.broker.memory_high_watermark = 1000);
    let publisher = connect(&server).await;
    let admin = connect(&server).await;
    publisher
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    assert!(!publisher.is_blocked());
    let c = publisher.publish("", "q", vec![b'x'; 2000]).await.unwrap();
    within("confirm", c).await.unwrap();
    eventually("the publisher is told it is blocked", || async {
        publisher.is_blocked()
    })
    .await;
    assert!(publisher.blocked_reason().is_some());
    // A blocked publisher's connection is not read; another connection drains.
    assert_eq!(admin.purge_queue("q").await.unwrap(), 1);
    within("unblocked", publisher.wait_unblocked())
        .await
        .unwrap();
    assert!(!publisher.is_blocked());
}
