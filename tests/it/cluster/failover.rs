//! kill -9 the leader: a new leader is elected among the two left and a change
//! commits; the killed node restarts on its data directory and catches up.

use super::{converged, has, leader, three_nodes, wait_for};
use crate::support::DEADLINE;
use std::time::Instant;
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_catches_up_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    let old = {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all))
    };
    let at = nodes.iter().position(|n| n.id == old).unwrap();
    let status = nodes[at]
        .api()
        .put("/api/queues/%2F/before", r#"{"durable":true}"#)
        .await
        .status;
    assert_eq!(status, 201);
    {
        let all: Vec<_> = nodes.iter().collect();
        converged(&all, |d| has(d, "queues", "before")).await;
    }

    nodes[at].kill9();
    let killed = Instant::now();
    let survivor = nodes.iter().find(|n| n.id != old).unwrap();
    let api = survivor.api();
    // Each try waits for a leader up to cluster.commit_timeout_ms.
    let end = Instant::now() + DEADLINE * 2;
    loop {
        let s = api
            .put("/api/queues/%2F/after", r#"{"durable":true}"#)
            .await
            .status;
        if (200..300).contains(&s) {
            break;
        }
        assert!(
            Instant::now() < end,
            "no declare succeeded after the leader died (HTTP {s})"
        );
    }
    eprintln!(
        "failover (leader kill -9 to the next successful declare): {:?}",
        killed.elapsed()
    );
    let survivors: Vec<_> = nodes.iter().filter(|n| n.id != old).collect();
    let new = block_in_place(|| leader(&survivors));
    assert_ne!(new, old, "a new leader");

    block_in_place(|| nodes[at].restart());
    let all: Vec<_> = nodes.iter().collect();
    converged(&all, |d| {
        has(d, "queues", "before") && has(d, "queues", "after")
    })
    .await;
    // Its log caught up: no lag left.
    block_in_place(|| {
        wait_for("the restarted node has no lag", DEADLINE, || {
            let s = nodes[at].status()?;
            let nodes = s["nodes"].as_array()?.clone();
            (nodes.len() == 3 && nodes.iter().all(|n| n[1] == 0)).then_some(())
        })
    });
}
