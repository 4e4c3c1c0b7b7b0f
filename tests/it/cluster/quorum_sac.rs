//! `x-single-active-consumer` on a quorum queue replicated across a 3-node cluster
//! (real processes): the first registered consumer takes every message; when it is
//! cancelled the next registered one takes over, and when that one's connection goes
//! the third does, each in registration order, wherever the clients connect. A
//! follower's management API shows only the active one of its forwarded consumers as
//! active.

use super::quorum::{connect, declare_quorum, publish_numbered, queue_leader, try_consume};
use super::quorum_dlx::next;
use super::{leader, three_led, three_nodes, Node};
use crate::support::DEADLINE;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// `count` deliveries of `consumer`, acked: their bodies.
async fn take(consumer: &mut lapin::Consumer, count: usize, who: &str) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..count {
        let d = next(consumer, &format!("{who} after {got:?}")).await;
        got.push(std::str::from_utf8(&d.data).unwrap().parse().unwrap());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_active_consumer_takes_everything_until_it_goes_then_the_next_registered() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "sac", r#","x-single-active-consumer":true"#).await;
    // Registered in this order, each on its own node (two are forwarded to the
    // group's leader).
    let (_ca, cha, mut a) = try_consume(&nodes[0], "sac", 10).await.unwrap();
    let (cb, _chb, mut b) = try_consume(&nodes[1], "sac", 10).await.unwrap();
    let (_cc, _chc, mut c) = try_consume(&nodes[2], "sac", 10).await.unwrap();
    publish_numbered(&nodes[1], "sac", 0..8).await;
    assert_eq!(take(&mut a, 8, "a").await, (0..8).collect::<Vec<_>>());
    // Cancelled: the next registered (b) takes over.
    cha.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    publish_numbered(&nodes[2], "sac", 8..12).await;
    assert_eq!(
        take(&mut b, 4, "b").await,
        [8, 9, 10, 11],
        "b had nothing before a went"
    );
    // b's connection goes: c takes over.
    drop(b);
    cb.close(200, "bye".into()).await.unwrap();
    publish_numbered(&nodes[0], "sac", 12..16).await;
    assert_eq!(
        take(&mut c, 4, "c").await,
        [12, 13, 14, 15],
        "c had nothing before b went"
    );
}

/// A consumer on `node` of `queue` with its own `tag` (prefetch 10).
async fn consume_tagged(node: &Node, queue: &str, tag: &str) -> (Connection, Channel, Consumer) {
    let conn = connect(node).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let c = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("a consume on a follower");
    (conn, ch, c)
}

/// Waits until `node`'s `/api/consumers` lists exactly `want` (tag, active) for
/// `queue`, in tag order.
async fn listed_become(node: &Node, queue: &str, want: &[(&str, bool)]) {
    let end = Instant::now() + DEADLINE;
    loop {
        let rows = node.api().get("/api/consumers").await.json();
        let mut got: Vec<(String, bool)> = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["queue"]["name"] == queue)
            .map(|r| {
                let tag = r["consumer_tag"].as_str().unwrap_or_default().to_string();
                (tag, r["active"].as_bool().unwrap_or(false))
            })
            .collect();
        got.sort();
        let wanted: Vec<(String, bool)> = want.iter().map(|(t, a)| (t.to_string(), *a)).collect();
        if got == wanted {
            return;
        }
        assert!(
            Instant::now() < end,
            "node {} lists {got:?} for '{queue}', not {wanted:?}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_lists_only_the_single_active_one_of_its_forwarded_consumers_as_active() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let all: Vec<&Node> = nodes.iter().collect();
    declare_quorum(&nodes[0], "sacl", r#","x-single-active-consumer":true"#).await;
    let led = queue_leader(&all, "sacl").await;
    // A follower of the group (a member: the group is on all three nodes).
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    let (_ca, cha, mut first) = consume_tagged(follower, "sacl", "first").await;
    // Registered (it takes a message) before the second one is.
    publish_numbered(&nodes[0], "sacl", 0..1).await;
    next(&mut first, "the first consumer")
        .await
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let (_cb, _chb, _second) = consume_tagged(follower, "sacl", "second").await;
    listed_become(follower, "sacl", &[("first", true), ("second", false)]).await;
    // The first cancelled: the second is the active one, on the follower's listing too.
    cha.basic_cancel("first".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    listed_become(follower, "sacl", &[("second", true)]).await;
}
