//! `actormq cluster add-node` / `remove-node` / `status` on a running cluster.

use super::{converged, free_port, has, leader, three_nodes, wait_for, Node};
use crate::support::DEADLINE;
use tokio::task::block_in_place;

/// The members node `n` reports, by id.
fn members(n: &Node) -> Option<Vec<u64>> {
    let s = n.status()?;
    let mut ids: Vec<u64> = s["nodes"]
        .as_array()?
        .iter()
        .filter_map(|e| e[0]["id"].as_u64())
        .collect();
    ids.sort();
    Some(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_added_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    let status = nodes[0]
        .api()
        .put("/api/queues/%2F/q", r#"{"durable":true}"#)
        .await
        .status;
    assert_eq!(status, 201);

    // No seeds: it waits to be added.
    let addr = format!("127.0.0.1:{}", free_port());
    let fourth = block_in_place(|| Node::start(&dir.path().join("n4"), 4, &addr, &[]));
    let added = block_in_place(|| nodes[1].cli(&["add-node", "4", &addr]));
    assert_eq!(added.unwrap().trim(), "ok");
    let with_fourth: Vec<_> = nodes.iter().chain([&fourth]).collect();
    converged(&with_fourth, |d| has(d, "queues", "q")).await;
    block_in_place(|| {
        wait_for("four members", DEADLINE, || {
            (members(&fourth)? == [1, 2, 3, 4]).then_some(())
        })
    });
    let text = block_in_place(|| nodes[0].cli(&["status"])).unwrap();
    assert!(text.starts_with("leader: "), "{text}");
    assert_eq!(text.lines().count(), 2 + 4, "{text}");

    let removed = block_in_place(|| nodes[2].cli(&["remove-node", "4"]));
    assert_eq!(removed.unwrap().trim(), "ok");
    block_in_place(|| {
        wait_for("three members", DEADLINE, || {
            (members(&nodes[0])? == [1, 2, 3]).then_some(())
        })
    });
    // Restarted with seeds, the removed node does not ask to join again: it refuses
    // to start, saying why and what to do.
    let mut fourth = fourth;
    let seeds: Vec<(u64, String)> = nodes
        .iter()
        .map(|n| (n.id, n.cluster.clone()))
        .chain([(4, addr.clone())])
        .collect();
    let log = block_in_place(|| fourth.try_restart_with(&seeds)).unwrap_err();
    assert!(log.contains("was removed from the cluster"), "{log}");
    assert!(log.contains("data_dir/raft"), "{log}");
    assert_eq!(block_in_place(|| members(&nodes[0])), Some(vec![1, 2, 3]));
    // The three go on taking changes.
    let status = nodes[2]
        .api()
        .put("/api/queues/%2F/r", r#"{"durable":true}"#)
        .await
        .status;
    assert_eq!(status, 201);
    converged(&all, |d| has(d, "queues", "r")).await;

    // Removing a node that is not a member is refused.
    let unknown = block_in_place(|| nodes[0].cli(&["remove-node", "9"]));
    assert!(unknown.unwrap_err().contains("NOT_FOUND"));
}
