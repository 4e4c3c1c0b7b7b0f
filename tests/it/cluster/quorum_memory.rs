//! A quorum queue's messages under the memory watermark (real processes, 3 nodes):
//! every member holds each message, so each member node's gauge counts it; past the
//! watermark a publisher on a member node is blocked rather than filling the node, and
//! once a consumer has taken and acked the backlog the gauges come back to zero and the
//! blocked publisher finishes.

use super::quorum::{connect, declare_quorum, publish_persistent};
use super::{free_port, leader, Node};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions, ConsumeOptions};
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const WATERMARK: u64 = 2 * 1024 * 1024;
const BODY: usize = 8 * 1024;
/// 8 MiB of bodies: four times the watermark.
const TOTAL: u64 = 1024;

fn three_nodes_with_watermark(root: &Path) -> Vec<Node> {
    let seeds: Vec<(u64, String)> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let broker = format!("[broker]\nmemory_high_watermark = {WATERMARK}\n");
    seeds
        .iter()
        .map(|(id, addr)| {
            Node::start_with(
                &root.join(format!("n{id}")),
                *id,
                addr,
                &seeds,
                &format!("secret = \"{}\"", super::SECRET),
                &broker,
            )
        })
        .collect()
}

/// The node's own entry of `/api/nodes` (which lists every member).
async fn node_memory(node: &Node) -> Value {
    let nodes = node.api().get("/api/nodes").await.json();
    let own = nodes
        .as_array()
        .and_then(|all| all.iter().find(|n| n["id"] == node.id));
    own.cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_counts_on_every_member_s_gauge_and_blocks_its_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes_with_watermark(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    declare_quorum(&nodes[0], "mq", "").await;
    // The group's leader, from the queue's own record.
    let end = Instant::now() + DEADLINE * 2;
    let group_leader = loop {
        let q = nodes[0].api().get("/api/queues/%2F/mq").await.json();
        let led = q["leader"].as_str().and_then(|l| {
            nodes
                .iter()
                .find(|n| l.starts_with(&format!("node{}@", n.id)))
        });
        if let Some(n) = led {
            break n.id;
        }
        assert!(Instant::now() < end, "no leader for the queue's group: {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The publisher on a follower: its node's gauge counts its own copy.
    let follower = nodes.iter().find(|n| n.id != group_leader).unwrap();
    let pconn = connect(follower).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirmed = Arc::new(AtomicU64::new(0));
    let publishing = {
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            let body = vec![b'x'; BODY];
            let mut window = std::collections::VecDeque::new();
            for _ in 0..TOTAL {
                let c = publish_persistent(&pch, "mq", &body).await;
                window.push_back(c);
                if window.len() >= 50 {
                    let c = window.pop_front().unwrap().await.unwrap();
                    assert!(c.is_ack(), "a publish nacked");
                    confirmed.fetch_add(1, Ordering::SeqCst);
                }
            }
            for c in window {
                assert!(c.await.unwrap().is_ack(), "a publish nacked");
                confirmed.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // Every member counts the backlog; the publisher's node raises its alarm.
    let end = Instant::now() + DEADLINE * 3;
    loop {
        let mut used = Vec::new();
        for n in &nodes {
            used.push(node_memory(n).await["mem_used"].as_u64().unwrap_or(0));
        }
        let alarm = node_memory(follower).await["mem_alarm"] == true;
        if alarm && used.iter().all(|u| *u >= WATERMARK / 2) {
            break;
        }
        assert!(
            Instant::now() < end,
            "no memory alarm on the publisher's node; gauges {used:?}, {} confirmed",
            confirmed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Blocked: it cannot have gone on to the end (8 MiB against 2 MiB).
    assert!(
        !publishing.is_finished() && confirmed.load(Ordering::SeqCst) < TOTAL,
        "the publisher was not held back"
    );

    // A consumer takes and acks the backlog: the publisher is let go and finishes.
    // (Native: lapin sends nothing at all on a connection told `connection.blocked`.)
    let leader_node = nodes.iter().find(|n| n.id == group_leader).unwrap();
    let client = Client::connect(ConnectOptions::new(leader_node.native.clone()))
        .await
        .unwrap();
    let options = ConsumeOptions {
        prefetch: 100,
        ..Default::default()
    };
    let mut consumer = client
        .consume("mq", &options)
        .await
        .expect("consume on the leader");
    let mut got = 0u64;
    while got < TOTAL {
        let d = tokio::time::timeout(DEADLINE * 2, consumer.next())
            .await
            .expect("a delivery")
            .expect("the consumer goes on")
            .expect("a delivery");
        d.ack().unwrap();
        got += 1;
    }
    tokio::time::timeout(DEADLINE * 2, publishing)
        .await
        .expect("the publisher finishes once unblocked")
        .unwrap();
    assert_eq!(confirmed.load(Ordering::SeqCst), TOTAL);

    // Acked everywhere: every member's gauge is back to nothing held.
    let end = Instant::now() + DEADLINE * 2;
    loop {
        let mut used = Vec::new();
        for n in &nodes {
            used.push(
                node_memory(n).await["mem_used"]
                    .as_u64()
                    .unwrap_or(u64::MAX),
            );
        }
        if used.iter().all(|u| *u == 0) {
            break;
        }
        assert!(Instant::now() < end, "gauges not back to zero: {used:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
