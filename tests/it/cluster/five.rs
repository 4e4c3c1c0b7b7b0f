//! A five-node cluster: quorum groups placed over five nodes (3 members by default, 5
//! when asked), a publisher on a node that is no member of its queue's group, and two
//! nodes killed at once (a minority of the cluster, one member of the 3-member group
//! and its leader among them): definitions still change, both queues still serve every
//! confirmed message in order, and the killed nodes catch up when they come back.

use super::quorum::{consume_on_leader, declare_quorum, publish_numbered};
use super::{assert_no_panic, cluster_of, converged, has, leader, member_id, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use tokio::task::block_in_place;

const MESSAGES: u64 = 200;

/// The leader and members of quorum queue `name` as `node` sees them, once it knows a
/// leader.
async fn group_of(node: &Node, name: &str) -> (u64, Vec<u64>) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let row = node
            .api()
            .get(&format!("/api/queues/%2F/{name}"))
            .await
            .json();
        if let Some(leader) = member_id(&row["leader"]) {
            let members = row["members"]
                .as_array()
                .map(|m| m.iter().filter_map(member_id).collect())
                .unwrap_or_default();
            return (leader, members);
        }
        assert!(
            std::time::Instant::now() < end,
            "no leader for {name}: {row}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Consumes `queue` from its leader among `nodes`: every message, in order, acked.
async fn drain_in_order(nodes: &[&Node], queue: &str) {
    let (_, _conn, mut consumer) = consume_on_leader(nodes, queue, 500).await;
    for want in 0..MESSAGES {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("{queue}: only {want} of {MESSAGES}"))
            .expect("the consumer goes on")
            .expect("a delivery");
        let n: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
        assert_eq!(n, want, "{queue}: in order");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_lose_two_and_keep_their_definitions_and_quorum_queues() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| cluster_of(dir.path(), 5));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    declare_quorum(&nodes[0], "three", "").await;
    declare_quorum(&nodes[1], "five", r#","x-quorum-initial-group-size":5"#).await;
    let (three_leader, three) = group_of(&nodes[2], "three").await;
    let (_, five) = group_of(&nodes[2], "five").await;
    assert_eq!(three.len(), 3, "three members by default: {three:?}");
    assert_eq!(five.len(), 5, "five when asked: {five:?}");

    // Published through a node that runs no member of the group: forwarded.
    let outsiders: Vec<u64> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| !three.contains(id))
        .collect();
    assert_eq!(outsiders.len(), 2);
    let publisher = nodes.iter().find(|n| n.id == outsiders[0]).unwrap();
    publish_numbered(publisher, "three", 0..MESSAGES).await;
    publish_numbered(publisher, "five", 0..MESSAGES).await;

    // Two of five die: the 3-member group's leader and the other outsider.
    let victims = [three_leader, outsiders[1]];
    for n in nodes.iter_mut().filter(|n| victims.contains(&n.id)) {
        n.kill9();
    }
    let survivors: Vec<&Node> = nodes.iter().filter(|n| !victims.contains(&n.id)).collect();
    block_in_place(|| leader(&survivors));
    let r = survivors[0]
        .api()
        .put("/api/queues/%2F/after", r#"{"durable":true}"#)
        .await;
    assert!((200..300).contains(&r.status), "declare: {}", r.text());
    converged(&survivors, |d| has(d, "queues", "after")).await;
    drain_in_order(&survivors, "three").await;
    drain_in_order(&survivors, "five").await;

    // The two come back and catch up.
    for n in nodes.iter_mut().filter(|n| victims.contains(&n.id)) {
        block_in_place(|| n.restart());
    }
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, |d| has(d, "queues", "after")).await;
    assert_no_panic(&nodes);
}
