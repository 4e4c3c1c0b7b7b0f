//! Consumers on any node, more: a node that is no member of the quorum queue's group
//! serves consumers and gets; the consume rate on the leader and on a follower (a
//! measurement, ignored).

use super::quorum::{connect, declare_quorum, next_delivery, queue_leader, try_consume};
use super::quorum_forward::{counts, publish_confirmed, text};
use super::{leader, three_nodes, Node};
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions};
use std::time::Instant;
use tokio::task::block_in_place;

/// Consumes `n` messages of `queue` on `node` with acks: the rate.
async fn consume_rate(node: &Node, queue: &str, n: usize, prefetch: u16) -> f64 {
    let (_conn, _ch, mut consumer) = try_consume(node, queue, prefetch).await.unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let d = next_delivery(&mut consumer).await;
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand (cargo test --test it quorum_forward_more::measure -- --ignored --nocapture)"]
async fn measure_consume_rate_on_the_leader_and_on_a_follower() {
    const N: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "rate", "").await;
    let led = queue_leader(&all, "rate").await;
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    let pconn = connect(follower).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for prefetch in [50u16, 500] {
        publish_confirmed(&pch, "rate", (0..N).map(|n| n.to_string())).await;
        let on_leader = consume_rate(leader_node, "rate", N, prefetch).await;
        counts(leader_node, "rate", 0, 0).await;
        publish_confirmed(&pch, "rate", (0..N).map(|n| n.to_string())).await;
        let on_follower = consume_rate(follower, "rate", N, prefetch).await;
        counts(leader_node, "rate", 0, 0).await;
        eprintln!(
            "quorum consume, {N} messages with acks, prefetch {prefetch}: on the leader {on_leader:.0}/s, on a follower {on_follower:.0}/s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_no_member_of_the_group_serves_a_consumer_and_a_get() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    // One member: the two other nodes run no member and know no leader of their own.
    declare_quorum(&nodes[0], "solo", r#","x-quorum-initial-group-size":1"#).await;
    let led = queue_leader(&all, "solo").await;
    let member = nodes.iter().find(|n| n.id == led).unwrap();
    let outsider = nodes.iter().find(|n| n.id != led).unwrap();
    let pconn = connect(outsider).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "solo", (0..20).map(|n| n.to_string())).await;
    let gch = connect(outsider).await.create_channel().await.unwrap();
    let got = gch
        .basic_get("solo".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(text(&got.delivery.data), "0");
    let (_conn, _ch, mut consumer) = try_consume(outsider, "solo", 5).await.unwrap();
    for n in 1..20 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(text(&d.data), n.to_string());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    counts(member, "solo", 0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_a_follower_or_a_node_outside_the_group_is_committed_through_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    // Two members: one follower, and one node that runs no member.
    declare_quorum(&nodes[0], "purged", r#","x-quorum-initial-group-size":2"#).await;
    let led = queue_leader(&all, "purged").await;
    let (_, members) = super::regroup::group_of(&nodes[0], "purged").await;
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();
    let follower = nodes
        .iter()
        .find(|n| n.id != led && members.contains(&n.id))
        .unwrap();
    let outsider = nodes.iter().find(|n| !members.contains(&n.id)).unwrap();
    let pconn = connect(follower).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "purged", (0..30).map(|n| n.to_string())).await;
    // One message held by a consumer: a purge takes ready messages only.
    let (_conn, _ch, mut consumer) = try_consume(leader_node, "purged", 1).await.unwrap();
    let held = next_delivery(&mut consumer).await;
    assert_eq!(text(&held.data), "0");
    counts(leader_node, "purged", 29, 1).await;

    assert_eq!(purge(follower, "purged").await, 29, "purged on a follower");
    counts(leader_node, "purged", 0, 1).await;
    publish_confirmed(&pch, "purged", ["30".to_string()]).await;
    assert_eq!(
        purge(outsider, "purged").await,
        1,
        "purged on a node outside the group"
    );
    counts(leader_node, "purged", 0, 1).await;

    // The purged messages are gone: after the held one comes a new one.
    publish_confirmed(&pch, "purged", ["31".to_string()]).await;
    held.ack(BasicAckOptions::default()).await.unwrap();
    let next = next_delivery(&mut consumer).await;
    assert_eq!(text(&next.data), "31");
    assert!(!next.redelivered);
}

/// `queue.purge` of `queue` on `node` over AMQP: the count purged.
async fn purge(node: &Node, queue: &str) -> u32 {
    let conn = connect(node).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge(queue.into(), Default::default())
        .await
        .expect("the purge is committed, not refused")
}
