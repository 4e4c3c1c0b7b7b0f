//! What a client asks of a queue of another node beyond publishing and plain
//! consuming, served by the queue's home as on RabbitMQ (3 real processes): a stream
//! consumed through a node that is not its home from `first`, from an offset and from
//! `next`, each delivery carrying its `x-stream-offset`; a consumer's `x-priority`
//! honoured by the home; a declare through a stand-in answered with the home queue's
//! counts (also while two nodes redeclare each other's home queues at once), and
//! refused naming the home when it is down.

use super::classic_forward::{declare_on, held};
use super::quorum::{connect, next_delivery, try_consume};
use super::quorum_forward::{publish_confirmed, text};
use super::{three_led, Node};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions, ConsumeOptions};
use actormq::FieldValue;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;
use tokio::task::block_in_place;

/// A consumer of stream `queue` on `ch` (prefetch set) from `offset`.
async fn consume_from(ch: &Channel, queue: &str, tag: &str, offset: AMQPValue) -> lapin::Consumer {
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        args,
    )
    .await
    .unwrap_or_else(|e| panic!("consumer '{tag}' through a node that is not the home: {e}"))
}

/// The bodies and `x-stream-offset` headers of the next `n` deliveries (acked: a
/// stream's acks are its consumer's credit).
async fn offsets(consumer: &mut lapin::Consumer, n: usize) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let d = next_delivery(consumer).await;
        let headers = d.properties.headers().clone().unwrap_or_default();
        let offset = match headers.inner().get("x-stream-offset") {
            Some(AMQPValue::LongLongInt(o)) => *o,
            other => panic!("the x-stream-offset header: {other:?}"),
        };
        out.push((text(&d.data), offset));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    out
}

fn records(range: std::ops::Range<i64>) -> Vec<(String, i64)> {
    range.map(|o| (format!("r{o}"), o)).collect()
}

/// Before: refused with NOT_ALLOWED "stream consumers are not forwarded between
/// nodes" (a consume session carried no consumer arguments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_consumed_through_a_node_that_is_not_its_home_from_first_an_offset_and_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    let (home, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    declare_on(
        &nodes,
        home,
        "fs",
        r#"{"durable":true,"arguments":{"x-queue-type":"stream"}}"#,
    )
    .await;
    let pconn = connect(b).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "fs", (0..5).map(|o| format!("r{o}"))).await;

    // Consumed on C, which is not the home.
    let conn = connect(c).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let first = LongString::from("first");
    let mut from_first = consume_from(&ch, "fs", "first", AMQPValue::LongString(first)).await;
    assert_eq!(offsets(&mut from_first, 5).await, records(0..5));
    let mut at_3 = consume_from(&ch, "fs", "at-3", AMQPValue::LongLongInt(3)).await;
    assert_eq!(offsets(&mut at_3, 2).await, records(3..5));
    // From `next`, on a channel of its own (its session opens for it): answered once
    // the home attached it, so what is published after the answer (here through a
    // third node, whose link to the home is open) is read, and nothing before it.
    let next_ch = conn.create_channel().await.unwrap();
    next_ch
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let next = LongString::from("next");
    let mut from_next = consume_from(&next_ch, "fs", "next", AMQPValue::LongString(next)).await;
    publish_confirmed(&pch, "fs", (5..8).map(|o| format!("r{o}"))).await;
    assert_eq!(offsets(&mut from_next, 3).await, records(5..8));
    // The others read on as the stream grows.
    assert_eq!(offsets(&mut from_first, 3).await, records(5..8));
    assert_eq!(offsets(&mut at_3, 3).await, records(5..8));
    let q = home.api().get("/api/queues/%2F/fs").await.json();
    assert_eq!(q["consumers"], 3, "C's consumers, at the home: {q}");

    // actormq's native client asks for runs of records: through a node that is not
    // the home it gets them one delivery each, with their offsets.
    let native = Client::connect(ConnectOptions::new(c.native.clone()))
        .await
        .unwrap();
    let options = ConsumeOptions::prefetch(10).arg("x-stream-offset", 6i64);
    let mut at_6 = native.consume("fs", &options).await.unwrap();
    for want in 6i64..8 {
        let d = tokio::time::timeout(DEADLINE, at_6.next())
            .await
            .expect("a native delivery within the deadline")
            .expect("the consumer is open")
            .expect("a delivery");
        let o = d
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-stream-offset"));
        assert_eq!(o, Some(&FieldValue::Int(want)));
        assert_eq!(&d.body[..], format!("r{want}").as_bytes());
        d.ack().unwrap();
    }

    // The home's rules, checked on C before anything is sent: a stream consumer acks.
    let e = connect(c)
        .await
        .create_channel()
        .await
        .unwrap()
        .basic_consume(
            "fs".into(),
            "no-ack".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("a no-ack stream consumer is refused, as at the home");
    assert!(
        e.to_string().contains("no-ack consume is not supported"),
        "{e}"
    );

    // The home down: a consume through C is refused naming it (not answered and then
    // cancelled: its answer waits for the home).
    let home_id = nodes[0].id;
    drop((pconn, conn, native));
    nodes[0].kill9();
    let ch = connect(&nodes[2]).await.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let e = ch
        .basic_consume(
            "fs".into(),
            "down".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("a stream consumer whose home is down is refused");
    home_down(&e.to_string(), home_id);
    super::assert_no_panic(&nodes[1..]);
}

/// Before: the home served a consumer of another node at the default priority, so
/// the two below shared the messages round robin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_consumer_on_a_node_that_is_not_the_home_is_preferred_by_the_home() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let (home, b) = (&nodes[0], &nodes[1]);
    declare_on(&nodes, home, "prio", r#"{"durable":true}"#).await;

    // A default consumer on the home, and one with x-priority 10 on B; both with
    // room for every message.
    let (_hconn, _hch, _default) = try_consume(home, "prio", 100).await.unwrap();
    let bconn = connect(b).await;
    let bch = bconn.create_channel().await.unwrap();
    bch.basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-priority".into(), AMQPValue::LongInt(10));
    let mut high = bch
        .basic_consume(
            "prio".into(),
            "high".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap();
    super::queue_until(home, "prio", "both consumers at the home", |q| {
        q["consumers"] == 2
    })
    .await;

    // Every message goes to the higher priority consumer while it has room: it gets
    // all 50 (round robin would have given it about half, and this would time out).
    let pconn = connect(home).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "prio", (0..50).map(|n| n.to_string())).await;
    for n in 0..50 {
        let d = next_delivery(&mut high).await;
        assert_eq!(
            text(&d.data),
            n.to_string(),
            "in order, all to B's consumer"
        );
    }
    held(home, "prio", 0, 50).await;
    let consumers = b.api().get("/api/consumers").await.json();
    let listed = consumers
        .as_array()
        .and_then(|all| all.iter().find(|c| c["consumer_tag"] == "high"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed["arguments"]["x-priority"], 10, "{consumers}");
    super::assert_no_panic(&nodes);
}

/// A declare of queue `counted` through `node` (a stand-in there).
async fn declare_through(node: &Node, passive: bool) -> Result<lapin::Queue, lapin::Error> {
    let ch = connect(node).await.create_channel().await.unwrap();
    let options = QueueDeclareOptions {
        passive,
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("counted".into(), options, FieldTable::default())
        .await
}

/// Before: a stand-in answered 0 messages and 0 consumers (it holds none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declare_through_a_stand_in_reports_the_home_s_counts_and_names_a_home_that_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_on(&nodes, &nodes[0], "counted", r#"{"durable":true}"#).await;
    let home = &nodes[0];
    let pconn = connect(home).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "counted", (0..3).map(|n| n.to_string())).await;
    // A consumer on the home holding one: 2 ready, 1 consumer.
    let (cconn, _ch, mut consumer) = try_consume(home, "counted", 1).await.unwrap();
    let _held = next_delivery(&mut consumer).await;
    held(home, "counted", 2, 1).await;
    for passive in [true, false] {
        let q = declare_through(&nodes[2], passive)
            .await
            .expect("declared through a node that is not the home");
        assert_eq!(
            (q.message_count(), q.consumer_count()),
            (2, 1),
            "passive {passive}: the home's counts"
        );
    }

    // The home down: NOT_FOUND naming it, as RabbitMQ answers for a queue whose node
    // is down (not counts that look real).
    let home_id = nodes[0].id;
    drop((pconn, cconn));
    nodes[0].kill9();
    let e = declare_through(&nodes[2], true)
        .await
        .expect_err("a declare of a queue whose home is down fails");
    home_down(&e.to_string(), home_id);
    super::assert_no_panic(&nodes[1..]);
}

/// `e` is the NOT_FOUND that names home node `home_id` as down.
fn home_down(e: &str, home_id: u64) {
    assert!(
        e.contains("NOT_FOUND")
            && e.contains(&format!("home node {home_id} is down or inaccessible")),
        "{e}"
    );
}

/// Redeclares of queue `name` through `node` on `channels` channels at once, `rounds`
/// each: every one must answer `messages` (the home's count).
async fn redeclares(
    node: &Node,
    name: &'static str,
    messages: u32,
    channels: usize,
    rounds: usize,
) {
    let conn = connect(node).await;
    let mut all = Vec::new();
    for _ in 0..channels {
        let ch = conn.create_channel().await.unwrap();
        all.push(async move {
            for round in 0..rounds {
                let q = ch
                    .queue_declare(
                        name.into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "round {round}: '{name}' redeclared through node {}: {e}",
                            node.id
                        )
                    });
                assert_eq!(
                    q.message_count(),
                    messages,
                    "round {round}: the home's count"
                );
            }
        });
    }
    futures_util::future::join_all(all).await;
}

/// Two nodes each redeclaring the other's home queue, many times at once. Before
/// 82c2d27 a stand-in asked its home for the counts inside its registry's atomic
/// declare, and the home asked its own registry: two registries each waiting on the
/// other, until 5 s passed and the declare failed with a false NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_redeclaring_each_others_home_queues_at_once_get_the_homes_counts() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    declare_on(&nodes, &nodes[0], "home1", r#"{"durable":true}"#).await;
    declare_on(&nodes, &nodes[1], "home2", r#"{"durable":true}"#).await;
    for (home, queue, n) in [(&nodes[0], "home1", 3), (&nodes[1], "home2", 5)] {
        let conn = connect(home).await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        publish_confirmed(&ch, queue, (0..n).map(|i| i.to_string())).await;
        held(home, queue, n, 0).await;
    }
    // 4 channels a side, 25 redeclares each: the two registries' declares overlap
    // again and again. Bounded: each would take 5 s and fail had they waited on each
    // other.
    let both = async {
        tokio::join!(
            redeclares(&nodes[1], "home1", 3, 4, 25),
            redeclares(&nodes[0], "home2", 5, 4, 25),
        )
    };
    tokio::time::timeout(DEADLINE * 2, both)
        .await
        .expect("200 redeclares within the deadline");
    super::assert_no_panic(&nodes);
}
