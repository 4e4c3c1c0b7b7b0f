//! Figures, not checks (ignored; run with `cargo test --test it cluster::measure --
//! --ignored --nocapture`): the latency of a definitions change on a single node and
//! in a 3-node cluster (on the leader and on a follower), a loop of durable queue
//! declares over the native protocol.

use super::{leader, three_nodes, Node};
use actormq::client::{Client, ConnectOptions, QueueOptions};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const DECLARES: usize = 300;

async fn declares(node: &Node, prefix: &str) -> Duration {
    let client = Client::connect(ConnectOptions::new(node.native.clone()))
        .await
        .unwrap();
    let durable = QueueOptions {
        durable: true,
        ..Default::default()
    };
    let start = Instant::now();
    for i in 0..DECLARES {
        client
            .declare_queue(&format!("{prefix}-{i}"), &durable)
            .await
            .unwrap();
    }
    start.elapsed() / DECLARES as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn declare_latency_single_node_and_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let single = block_in_place(|| Node::start(&dir.path().join("single"), 0, "", &[]));
    let one = declares(&single, "s").await;
    drop(single);
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    let l = block_in_place(|| leader(&all));
    let on_leader = declares(nodes.iter().find(|n| n.id == l).unwrap(), "l").await;
    let on_follower = declares(nodes.iter().find(|n| n.id != l).unwrap(), "f").await;
    eprintln!(
        "durable queue declare, mean of {DECLARES}: single node {one:?}, cluster leader {on_leader:?}, cluster follower {on_follower:?}"
    );
}
