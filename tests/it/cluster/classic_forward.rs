//! Classic queues reachable from every node of a 3-node cluster (real processes): a
//! publish on a node that is not the queue's home is forwarded there and confirmed
//! once the home has it (on disk: durable queue, persistent messages), in order; a
//! consumer or a get on a third node is served by the home through a consume session,
//! with its acks honoured and what it held redelivered, marked, when its connection
//! closes; a purge there is refused naming the home. With the home killed, a publish
//! is nacked naming it and a consumer is cancelled naming it; once the home is back, a
//! new consume works. The home's memory alarm holds a publish forwarded from another
//! node until it clears, and a publisher that consumes the queue with acks through
//! another node is never locked up by the home's flow control.

use super::quorum::{connect, next_delivery, try_consume};
use super::quorum_forward::{publish_confirmed, text};
use super::{free_port, leader, three_led, Node};
use crate::support::DEADLINE;
use actormq::client::{Client, ClientError, ConnectOptions, ConsumeOptions, PublishOptions};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueuePurgeOptions};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Declares durable classic queue `name` through `home`'s API (its home), and waits
/// until every node knows it.
async fn declare_classic(nodes: &[Node], home: &Node, name: &str) {
    declare_on(nodes, home, name, r#"{"durable":true}"#).await;
}

/// Declares queue `name` (the API's JSON `body`) through `home`'s API, and waits until
/// every node knows it.
pub(super) async fn declare_on(nodes: &[Node], home: &Node, name: &str, body: &str) {
    let r = home
        .api()
        .put(&format!("/api/queues/%2F/{name}"), body)
        .await;
    assert!((200..300).contains(&r.status), "declare: {}", r.text());
    for n in nodes {
        super::queue_until(n, name, "the queue is known", |q| q["name"] == name).await;
    }
}

/// Waits until the home's `queue` holds `ready` ready and `unacked` unacked messages.
pub(super) async fn held(home: &Node, queue: &str, ready: u64, unacked: u64) {
    let what = format!("{ready} ready, {unacked} unacked on the home");
    super::queue_until(home, queue, &what, |q| {
        q["messages_ready"] == ready && q["messages_unacknowledged"] == unacked
    })
    .await;
}

/// Publishes `body` to `queue` through `client`, which must refuse it (`because`);
/// answers the refusal's text.
async fn publish_refused(client: &Client, queue: &str, body: &str, because: &str) -> String {
    let refused = client
        .publish("", queue, body)
        .await
        .unwrap()
        .await
        .expect_err(because);
    refused.to_string()
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

    // A purge on C is refused naming the home (a stand-in holds nothing: it used to
    // answer 0 and leave the home's messages), and the home keeps them.
    publish_confirmed(&pch, "cf", ["kept".to_string()]).await;
    held(home, "cf", 1, 0).await;
    let e = gch
        .queue_purge("cf".into(), QueuePurgeOptions::default())
        .await
        .expect_err("a purge on a node that is not the home is refused");
    let e = e.to_string();
    assert!(
        e.contains("purge it there") && e.contains(&format!("node {}", home.id)),
        "{e}"
    );
    held(home, "cf", 1, 0).await;
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_home_killed_a_classic_queue_nacks_and_cancels_naming_it_and_serves_again_once_back(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_classic(&nodes, &nodes[0], "down").await;
    let (home_id, b, c) = (nodes[0].id, &nodes[1], &nodes[2]);

    // The consumer on C through the native client, whose cancel carries the reason.
    let cclient = Client::connect(ConnectOptions::new(c.native.clone()))
        .await
        .unwrap();
    let mut consumer = cclient
        .consume("down", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    let native = Client::connect(ConnectOptions::new(b.native.clone()))
        .await
        .unwrap();
    native
        .publish("", "down", "before")
        .await
        .unwrap()
        .await
        .expect("confirmed through the home");
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("a delivery within the deadline")
        .expect("the consumer is open")
        .expect("a delivery");
    assert_eq!(d.body, b"before".as_slice());
    d.ack().unwrap();
    held(&nodes[0], "down", 0, 0).await;

    nodes[0].kill9();
    let c = &nodes[2];
    // A publish on B: nacked, naming the home.
    let why = publish_refused(&native, "down", "lost", "its home is down").await;
    assert!(
        why.contains(&format!("home node {home_id} is down or inaccessible")),
        "{why}"
    );
    // C's consumer: cancelled by the broker, naming the home (not a connection
    // error, nor a stream that just ends).
    let cancelled = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("the consumer is told within the deadline");
    match cancelled {
        Some(Err(ClientError::ConsumerCancelled { reason, .. })) => assert!(
            reason.contains(&format!("home node {home_id} is down or inaccessible")),
            "{reason}"
        ),
        other => panic!("the broker cancels the consumer naming the home: {other:?}"),
    }
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
    declare_on(
        &nodes,
        home,
        "full",
        r#"{"durable":true,"arguments":{"x-max-length":2,"x-overflow":"reject-publish"}}"#,
    )
    .await;
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
    let why = publish_refused(&native, "full", "3", "the home's queue is full").await;
    assert!(
        why.contains("'full'") && why.contains("reject-publish"),
        "{why}"
    );
    held(home, "full", 2, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_another_node_takes_forwarded_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let home = &nodes[0];
    declare_on(
        &nodes,
        home,
        "st",
        r#"{"durable":true,"arguments":{"x-queue-type":"stream"}}"#,
    )
    .await;
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
    // Its consumers on other nodes: classic_forward_args.
}

/// Three nodes, ids 1 to 3, node 1 with `home_sections` (its `[broker]` lines), the
/// others with `sections`, once they have a leader.
pub(super) fn three_with(root: &Path, home_sections: &str, sections: &str) -> Vec<Node> {
    let seeds: Vec<(u64, String)> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let nodes: Vec<Node> = seeds
        .iter()
        .map(|(id, addr)| {
            Node::start_with(
                &root.join(format!("n{id}")),
                *id,
                addr,
                &seeds,
                &format!("secret = \"{}\"", super::SECRET),
                if *id == 1 { home_sections } else { sections },
            )
        })
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    leader(&all);
    nodes
}

/// Whether `node` reports its memory alarm raised (its own entry of `/api/nodes`).
async fn mem_alarm(node: &Node) -> bool {
    let all = node.api().get("/api/nodes").await.json();
    all.as_array()
        .and_then(|all| all.iter().find(|n| n["id"] == node.id))
        .is_some_and(|own| own["mem_alarm"] == true)
}

/// Regression (review finding 1): the home handed a forwarded batch to its queue
/// whatever its own alarms said, so producers on other nodes filled it without limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_s_memory_alarm_holds_a_publish_forwarded_from_another_node_until_it_clears() {
    const WATERMARK: usize = 512 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let home_broker = format!("[broker]\nmemory_high_watermark = {WATERMARK}\n");
    let nodes = block_in_place(|| three_with(dir.path(), &home_broker, ""));
    let (home, b) = (&nodes[0], &nodes[1]);
    declare_classic(&nodes, home, "alarm").await;
    let body = vec![b'x'; 2 * WATERMARK];

    // The first publish on B finds the home below its watermark, and raises its alarm.
    let native = Client::connect(ConnectOptions::new(b.native.clone()))
        .await
        .unwrap();
    native
        .publish("", "alarm", &body)
        .await
        .unwrap()
        .await
        .expect("the home was below its watermark: confirmed");
    held(home, "alarm", 1, 0).await;
    let end = Instant::now() + DEADLINE;
    while !mem_alarm(home).await {
        assert!(Instant::now() < end, "the home raises its memory alarm");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!mem_alarm(b).await, "B holds nothing: no alarm there");

    // The second is held by the home: not confirmed, not queued.
    let confirm = native.publish("", "alarm", &body).await.unwrap();
    let mut pending = tokio::spawn(confirm);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut pending)
            .await
            .is_err(),
        "a publish forwarded to a home in alarm is held, not confirmed"
    );
    held(home, "alarm", 1, 0).await;

    // A consumer on the home takes the first: the alarm clears, the second is queued
    // and confirmed, and delivered.
    let local = Client::connect(ConnectOptions::new(home.native.clone()))
        .await
        .unwrap();
    let mut consumer = local
        .consume("alarm", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    for n in 0..2 {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("delivery {n} within the deadline"))
            .expect("the consumer is open")
            .expect("a delivery");
        assert_eq!(d.body.len(), body.len());
        d.ack().unwrap();
    }
    tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("confirmed once the home's alarm clears")
        .unwrap()
        .expect("confirmed, not nacked");
    held(home, "alarm", 0, 0).await;
    super::assert_no_panic(&nodes);
}

/// Regression (review finding 2): a stand-in dropped its publisher, so the home's
/// flow control held the batch of a publisher that also consumes the queue with acks
/// (through the same connection on another node) without the bound a local one gets:
/// its acks waited behind its held publishes, and it was locked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_consumes_the_queue_through_another_node_is_never_locked_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = "[broker]\nqueue_flow_threshold = 50\npublish_window = 1\n";
    let nodes = block_in_place(|| three_with(dir.path(), broker, broker));
    let (home, b) = (&nodes[0], &nodes[1]);
    declare_classic(&nodes, home, "selflock").await;
    let client = Client::connect(ConnectOptions::new(b.native.clone()))
        .await
        .unwrap();
    // Past the threshold before the consumer comes: the home's flow control holds the
    // next publishes until the consumer has brought the depth down to half.
    const BEFORE: usize = 200;
    for i in 0..BEFORE {
        client
            .publish("", "selflock", i.to_string())
            .await
            .unwrap()
            .await
            .expect("no consumer yet: confirmed");
    }
    let mut consumer = client
        .consume("selflock", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    const N: usize = 600;
    let publisher = client.clone();
    let publish = tokio::spawn(async move {
        let no_confirm = PublishOptions {
            confirm: Some(false),
            ..Default::default()
        };
        for i in BEFORE..N {
            drop(
                publisher
                    .publish_with("", "selflock", i.to_string(), &no_confirm)
                    .await
                    .unwrap(),
            );
        }
    });
    tokio::time::timeout(DEADLINE * 3, async {
        for i in 0..N {
            let d = consumer.next().await.expect("a delivery").unwrap();
            assert_eq!(d.body, i.to_string().as_bytes());
            d.ack().unwrap();
        }
    })
    .await
    .expect("every message consumed on the publishing connection, through node 2");
    publish.await.unwrap();
    held(home, "selflock", 0, 0).await;
    super::assert_no_panic(&nodes);
}
