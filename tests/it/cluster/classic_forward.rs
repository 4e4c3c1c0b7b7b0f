//! Classic queues reachable from every node of a 3-node cluster (real processes): a
//! publish on a node that is not the queue's home is forwarded there and confirmed
//! once the home has it (on disk: durable queue, persistent messages), in order; a
//! consumer or a get on a third node is served by the home through a consume session,
//! with its acks honoured and what it held redelivered, marked, when its connection
//! closes. With the home killed, a publish is nacked naming it and a consumer is
//! cancelled naming it; once the home is back, a new consume works.

use super::quorum::{connect, next_delivery, try_consume};
use super::quorum_forward::{publish_confirmed, text};
use super::{three_led, Node};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Declares durable classic queue `name` through `home`'s API (its home), and waits
/// until every node knows it.
async fn declare_classic(nodes: &[Node], home: &Node, name: &str) {
    let r = home
        .api()
        .put(&format!("/api/queues/%2F/{name}"), r#"{"durable":true}"#)
        .await;
    assert!((200..300).contains(&r.status), "declare: {}", r.text());
    for n in nodes {
        super::queue_until(n, name, "the queue is known", |q| q["name"] == name).await;
    }
}

/// Waits until the home's `queue` holds `ready` ready and `unacked` unacked messages.
async fn held(home: &Node, queue: &str, ready: u64, unacked: u64) {
    let what = format!("{ready} ready, {unacked} unacked on the home");
    super::queue_until(home, queue, &what, |q| {
        q["messages_ready"] == ready && q["messages_unacknowledged"] == unacked
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_queue_takes_publishes_and_serves_consumers_and_gets_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let (home, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    declare_classic(&nodes, home, "cf").await;

    // Published on B with confirms: every one confirmed, all on the home, in order.
    let pconn = connect(b).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "cf", (0..300).map(|n| n.to_string())).await;
    held(home, "cf", 300, 0).await;

    // Consumed on C: in order, first deliveries; the last 5 left unacked.
    let (conn, _ch, mut consumer) = try_consume(c, "cf", 20)
        .await
        .expect("a node that is not the home serves a consumer");
    let mut unacked = Vec::new();
    for n in 0..300 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(text(&d.data), n.to_string(), "in order");
        assert!(!d.redelivered, "{n}: a first delivery");
        if n < 295 {
            d.ack(BasicAckOptions::default()).await.unwrap();
        } else {
            unacked.push(d);
        }
    }
    held(home, "cf", 0, 5).await;
    let q = home.api().get("/api/queues/%2F/cf").await.json();
    assert_eq!(q["consumers"], 1, "C's consumer, at the home: {q}");

    // C's connection closes: the 5 it held come back, and to the next consumer
    // (on B this time) marked redelivered; its acks empty the queue.
    conn.close(200, "bye".into()).await.unwrap();
    drop(unacked);
    held(home, "cf", 5, 0).await;
    let (_conn, _ch, mut consumer) = try_consume(b, "cf", 20).await.unwrap();
    for n in 295..300 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(text(&d.data), n.to_string(), "in order");
        assert!(
            d.redelivered,
            "{n}: redelivered after C's connection closed"
        );
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    held(home, "cf", 0, 0).await;
    drop(consumer);
    _ch.close(200, "bye".into()).await.unwrap();

    // basic.get on C: unacked, held by the home until acked.
    publish_confirmed(&pch, "cf", ["got".to_string()]).await;
    let gch = connect(c).await.create_channel().await.unwrap();
    let end = Instant::now() + DEADLINE;
    let got = loop {
        if let Some(m) = gch
            .basic_get("cf".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            break m;
        }
        assert!(Instant::now() < end, "the get finds the message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(text(&got.delivery.data), "got");
    held(home, "cf", 0, 1).await;
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    held(home, "cf", 0, 0).await;
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_home_killed_a_classic_queue_nacks_and_cancels_naming_it_and_serves_again_once_back(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_classic(&nodes, &nodes[0], "down").await;
    let (home_id, b, c) = (nodes[0].id, &nodes[1], &nodes[2]);

    let (_conn, _ch, mut consumer) = try_consume(c, "down", 10).await.unwrap();
    let native = Client::connect(ConnectOptions::new(b.native.clone()))
        .await
        .unwrap();
    native
        .publish("", "down", "before")
        .await
        .unwrap()
        .await
        .expect("confirmed through the home");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.data), "before");
    d.ack(BasicAckOptions::default()).await.unwrap();
    held(&nodes[0], "down", 0, 0).await;

    nodes[0].kill9();
    let c = &nodes[2];
    // A publish on B: nacked, naming the home.
    let refused = native
        .publish("", "down", "lost")
        .await
        .unwrap()
        .await
        .expect_err("a publish to a queue whose home is down is refused");
    let why = refused.to_string();
    assert!(
        why.contains(&format!("home node {home_id} is down or inaccessible")),
        "{why}"
    );
    // C's consumer: cancelled by the broker (its stream ends).
    let cancelled = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("the consumer is told within the deadline");
    assert!(
        !matches!(cancelled, Some(Ok(_))),
        "no delivery: cancelled, {cancelled:?}"
    );
    // A get on C: a channel error naming the home.
    let gch = connect(c).await.create_channel().await.unwrap();
    let e = gch
        .basic_get("down".into(), BasicGetOptions { no_ack: false })
        .await
        .expect_err("a get on a queue whose home is down fails");
    assert!(
        e.to_string()
            .contains(&format!("home node {home_id} is down or inaccessible")),
        "{e}"
    );

    // The home back: publishes on B are confirmed again, and a new consumer on C
    // gets them.
    block_in_place(|| nodes[0].restart());
    let (b, c) = (&nodes[1], &nodes[2]);
    let native = Client::connect(ConnectOptions::new(b.native.clone()))
        .await
        .unwrap();
    let end = Instant::now() + DEADLINE * 2;
    loop {
        match native.publish("", "down", "after").await.unwrap().await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < end, "the home back takes publishes: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_conn, _ch, mut consumer) = try_consume(c, "down", 10).await.unwrap();
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.data), "after");
    d.ack(BasicAckOptions::default()).await.unwrap();
    held(&nodes[0], "down", 0, 0).await;
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_reject_publish_home_queue_nacks_a_forwarded_publish_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let home = &nodes[0];
    let r = home
        .api()
        .put(
            "/api/queues/%2F/full",
            r#"{"durable":true,"arguments":{"x-max-length":2,"x-overflow":"reject-publish"}}"#,
        )
        .await;
    assert!((200..300).contains(&r.status), "declare: {}", r.text());
    for n in &nodes {
        super::queue_until(n, "full", "the queue is known", |q| q["name"] == "full").await;
    }
    let native = Client::connect(ConnectOptions::new(nodes[1].native.clone()))
        .await
        .unwrap();
    for body in ["1", "2"] {
        native
            .publish("", "full", body)
            .await
            .unwrap()
            .await
            .expect("room on the home: confirmed");
    }
    let refused = native
        .publish("", "full", "3")
        .await
        .unwrap()
        .await
        .expect_err("the home's queue is full");
    let why = refused.to_string();
    assert!(
        why.contains("'full'") && why.contains("reject-publish"),
        "{why}"
    );
    held(home, "full", 2, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_another_node_takes_forwarded_publishes_and_refuses_consumers_naming_its_home()
{
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let home = &nodes[0];
    let r = home
        .api()
        .put(
            "/api/queues/%2F/st",
            r#"{"durable":true,"arguments":{"x-queue-type":"stream"}}"#,
        )
        .await;
    assert!((200..300).contains(&r.status), "declare: {}", r.text());
    for n in &nodes {
        super::queue_until(n, "st", "the stream is known", |q| q["name"] == "st").await;
    }
    let native = Client::connect(ConnectOptions::new(nodes[1].native.clone()))
        .await
        .unwrap();
    native
        .publish("", "st", "kept")
        .await
        .unwrap()
        .await
        .expect("forwarded to the stream's home and confirmed");
    super::queue_until(home, "st", "the record on the home", |q| q["messages"] == 1).await;
    // A consumer on node 2 is refused naming the home: a consume session carries no
    // x-stream-offset, so it would read from the wrong place.
    let e = try_consume(&nodes[1], "st", 10)
        .await
        .expect_err("a stream's consumer is not forwarded");
    assert!(
        e.contains("stream consumers are not forwarded")
            && e.contains(&format!("node {}", home.id)),
        "{e}"
    );
}
