//! A quorum queue through the faults that take a group's disks rather than one process:
//! the whole cluster going down (one node stopped, two killed) and coming back, and a
//! member that lost its data directory rejoining the group and then being needed for a
//! majority. Every confirmed message must come back, in order, and an acked one never.

use super::quorum::{consume_on_leader, declare_quorum, publish_numbered};
use super::{assert_no_panic, leader, member_id, three_nodes, wait_for, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use serde_json::Value;
use tokio::task::block_in_place;

const MESSAGES: u64 = 300;
const ACKED: u64 = 100;

/// The queue's row in `/api/queues` on `node`.
async fn queue_row(node: &Node, name: &str) -> Value {
    node.api()
        .get(&format!("/api/queues/%2F/{name}"))
        .await
        .json()
}

/// Receives the next `count` deliveries of `consumer`: (number, redelivered, delivery).
async fn receive(
    consumer: &mut lapin::Consumer,
    count: u64,
) -> Vec<(u64, bool, lapin::message::Delivery)> {
    let mut got = Vec::new();
    while (got.len() as u64) < count {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} deliveries", got.len()))
            .expect("the consumer goes on")
            .expect("a delivery");
        let n: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
        got.push((n, d.redelivered, d));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_keeps_its_messages_through_a_cluster_restart_and_a_lost_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    declare_quorum(&nodes[0], "kept", "").await;

    // Every publish confirmed (a majority has it on disk) before the cluster goes down.
    publish_numbered(&nodes[1], "kept", 0..MESSAGES).await;

    // The whole cluster goes down: one node stopped gracefully, two killed.
    nodes[0].stop();
    for n in nodes.iter_mut().skip(1) {
        n.kill9();
    }
    for n in nodes.iter_mut() {
        block_in_place(|| n.restart());
    }
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }

    // Everything comes back in publish order, never delivered before; the first
    // ACKED are acked, the rest returned by closing the connection.
    {
        let all: Vec<_> = nodes.iter().collect();
        let (at, conn, mut consumer) = consume_on_leader(&all, "kept", 1000).await;
        let got = receive(&mut consumer, MESSAGES).await;
        let numbers: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(numbers, (0..MESSAGES).collect::<Vec<_>>(), "all, in order");
        assert!(got.iter().all(|g| !g.1), "nothing marked redelivered");
        for (_, _, d) in got.iter().take(ACKED as usize) {
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        let leader_node = nodes.iter().find(|n| n.id == at).unwrap();
        let end = std::time::Instant::now() + DEADLINE;
        while queue_row(leader_node, "kept").await["messages_unacknowledged"] != MESSAGES - ACKED {
            assert!(std::time::Instant::now() < end, "the acks were committed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        drop(got);
        conn.close(200, "done".into()).await.unwrap();
    }

    // A member that is not the group's leader loses its data directory (the lowest
    // such member: the one that writes a group's first membership, so that a rejoin
    // must not write it again over the group's log) and comes back empty.
    let (group_leader, lost) = {
        let row = queue_row(&nodes[0], "kept").await;
        let group_leader = member_id(&row["leader"]).expect("a group leader");
        let members: Vec<u64> = row["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(member_id)
            .collect();
        assert_eq!(members.len(), 3, "{row}");
        let lost = *members
            .iter()
            .filter(|m| **m != group_leader)
            .min()
            .unwrap();
        (group_leader, lost)
    };
    let at_lost = nodes.iter().position(|n| n.id == lost).unwrap();
    nodes[at_lost].kill9();
    std::fs::remove_dir_all(nodes[at_lost].data_dir()).unwrap();
    block_in_place(|| nodes[at_lost].restart());
    block_in_place(|| {
        wait_for("the emptied member caught up", DEADLINE * 2, || {
            let s = nodes[at_lost].status()?;
            let group_of = |id: u64| -> Option<Value> {
                let n = s["nodes"].as_array()?.iter().find(|n| n[0]["id"] == id)?;
                Some(n[0]["groups"][0].clone())
            };
            let (mine, theirs) = (group_of(lost)?, group_of(group_leader)?);
            (mine["leader"] == group_leader
                && mine["applied_index"].as_u64().is_some()
                && mine["applied_index"] == theirs["last_log_index"])
                .then_some(())
        })
    });

    // Now the group's leader dies: the emptied member is half of the majority left.
    let at_leader = nodes.iter().position(|n| n.id == group_leader).unwrap();
    nodes[at_leader].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != group_leader).collect();
    let (at, _conn, mut consumer) = consume_on_leader(&survivors, "kept", 1000).await;
    let got = receive(&mut consumer, MESSAGES - ACKED).await;
    let numbers: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        numbers,
        (ACKED..MESSAGES).collect::<Vec<_>>(),
        "the unacked ones, in order, and no acked one"
    );
    assert!(
        got.iter().all(|g| g.1),
        "each was delivered before the restart: marked redelivered"
    );
    // Nothing more is checked out or waiting: no acked message came back.
    let row = queue_row(nodes.iter().find(|n| n.id == at).unwrap(), "kept").await;
    assert_eq!(row["messages"], MESSAGES - ACKED, "{row}");
    assert_eq!(row["messages_unacknowledged"], MESSAGES - ACKED, "{row}");
    assert_no_panic(&nodes);
}
