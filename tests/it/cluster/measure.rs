//! Figures, not checks (ignored; run with `cargo test --test it cluster::measure --
//! --ignored --nocapture`): the latency of a definitions change on a single node and
//! in a 3-node cluster (on the leader and on a follower), a loop of durable queue
//! declares over the native protocol; the definitions log on disk after many
//! declare/delete cycles of an RPC client's reply queue, and the time a node takes to
//! join, with and without snapshots.

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

/// The bytes of `node`'s definitions log on disk (its segments).
fn log_bytes(node: &Node) -> u64 {
    std::fs::read_dir(node.data_dir().join("raft"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("log"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// `node`'s own last log index and purged index.
fn log_indexes(node: &Node) -> (u64, Option<u64>) {
    log_indexes_of(node, node.id)
}

/// Node `id`'s last log index and purged index, as `asked` reports them.
fn log_indexes_of(asked: &Node, id: u64) -> (u64, Option<u64>) {
    let s = asked.status().unwrap();
    let me = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].clone())
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("node {id} is not in {s}"));
    (
        me["last_log_index"].as_u64().unwrap_or(0),
        me["purged_index"].as_u64(),
    )
}

/// `cycles` declares and deletes of one queue on `node` (the options of an RPC
/// client's reply queue: `exclusive`, or auto-delete but not exclusive).
async fn queue_cycles(node: &Node, cycles: usize, exclusive: bool) {
    let client = Client::connect(ConnectOptions::new(node.native.clone()))
        .await
        .unwrap();
    let options = QueueOptions {
        exclusive,
        auto_delete: true,
        ..Default::default()
    };
    for _ in 0..cycles {
        client.declare_queue("rpc-reply", &options).await.unwrap();
        client.delete_queue("rpc-reply").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn definitions_log_on_disk_and_a_joins_time_with_and_without_snapshots() {
    const ROUNDS: usize = 3;
    const CYCLES: usize = 1_000;
    for (label, snapshots) in [
        ("no snapshots (before)", "snapshot_entries = 0"),
        (
            "a snapshot every 1,000 entries, 100 kept",
            "snapshot_entries = 1000\nsnapshot_keep_entries = 100",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("secret = \"{}\"\n{snapshots}", super::SECRET);
        let seeds: Vec<(u64, String)> = (1..=3)
            .map(|id| (id, format!("127.0.0.1:{}", super::free_port())))
            .collect();
        let nodes: Vec<Node> = block_in_place(|| {
            seeds
                .iter()
                .map(|(id, a)| {
                    Node::start_with(
                        &dir.path().join(format!("n{id}")),
                        *id,
                        a,
                        &seeds,
                        &extra,
                        "",
                    )
                })
                .collect()
        });
        let all: Vec<_> = nodes.iter().collect();
        let l = block_in_place(|| leader(&all));
        let on = nodes.iter().find(|n| n.id == l).unwrap();
        let (before, _) = block_in_place(|| log_indexes(on));
        queue_cycles(on, CYCLES, true).await;
        let (after, _) = block_in_place(|| log_indexes(on));
        eprintln!(
            "{label}: {CYCLES} exclusive queue declare/delete cycles: log index {before} -> {after}"
        );
        for round in 1..=ROUNDS {
            let start = Instant::now();
            queue_cycles(on, CYCLES, false).await;
            let took = start.elapsed();
            let (last, purged) = block_in_place(|| log_indexes(on));
            eprintln!(
                "{label}: {} auto-delete queue cycles ({took:?}): last index {last}, purged {purged:?}, log on disk {} bytes",
                round * CYCLES,
                log_bytes(on)
            );
        }
        let addr = format!("127.0.0.1:{}", super::free_port());
        let fourth =
            block_in_place(|| Node::start_with(&dir.path().join("n4"), 4, &addr, &[], &extra, ""));
        let start = Instant::now();
        let added = block_in_place(|| on.cli(&["add-node", "4", &addr]));
        assert_eq!(added.unwrap().trim(), "ok");
        let added = start.elapsed();
        let (last, _) = block_in_place(|| log_indexes(on));
        // Until it has applied everything (add-node returns once openraft counts the
        // learner caught up, which may be before).
        block_in_place(|| {
            super::wait_for("node 4 applied the log", Duration::from_secs(120), || {
                let s = on.status()?;
                let me = s["nodes"]
                    .as_array()?
                    .iter()
                    .map(|e| e[0].clone())
                    .find(|v| v["id"] == 4)?;
                (me["applied_index"].as_u64()? >= last).then_some(())
            })
        });
        let joined = start.elapsed();
        let (fourth_last, fourth_purged) = block_in_place(|| log_indexes_of(on, 4));
        eprintln!(
            "{label}: add-node of a 4th node with the log at {last}: {added:?}, applied all {joined:?} (its log: last {fourth_last}, purged {fourth_purged:?}, {} bytes)",
            log_bytes(&fourth)
        );
    }
}
