//! `x-single-active-consumer` on a quorum queue replicated across a 3-node cluster
//! (real processes): the first registered consumer takes every message; when it is
//! cancelled the next registered one takes over, and when that one's connection goes
//! the third does, each in registration order, wherever the clients connect.

use super::quorum::{declare_quorum, publish_numbered, try_consume};
use super::quorum_dlx::next;
use super::{leader, three_nodes};
use lapin::options::{BasicAckOptions, BasicCancelOptions};
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
