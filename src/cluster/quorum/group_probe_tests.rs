//! What a group's new leader sends the survivor before its first commit, with the
//! group's own openraft configuration (`cluster::node::group_config`). The survivor
//! holds the whole log already; the new leader does not know it and probes. With
//! openraft's default `max_payload_entries` (300) the first probe was the whole tail
//! from the log's middle: at full rate, 100-360 entries of a megabyte each, one append
//! apiece, before a failover's first confirm.

use super::tests::{applied, initialize_three, leader, msg, raft, Router};
use super::*;
use crate::cluster::log_store::LogStore;
use crate::cluster::node::{group_config, GROUP_PAYLOAD_ENTRIES};
use crate::cluster::settings::ClusterSettings;
use openraft::Raft;
use std::sync::atomic::Ordering;

/// Entries written before the leader goes: the log's tail from its middle is half
/// of them.
const ENTRIES: u64 = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_finds_what_the_survivor_holds_without_sending_the_whole_tail() {
    // The defaults but for faster elections, as the suite's other groups.
    let settings: ClusterSettings = toml::from_str(
        "node_id = 1\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\nheartbeat_ms = 100",
    )
    .unwrap();
    let config = group_config(&settings);
    assert_eq!(config.max_payload_entries, GROUP_PAYLOAD_ENTRIES);
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    for id in 1..=3 {
        let log: LogStore<QueueTypes> = LogStore::open(&dir.path().join(id.to_string())).unwrap();
        let sm = GroupStateMachine::new(Limits::default());
        let raft = Raft::new(id, config.clone(), router.clone(), log, sm)
            .await
            .unwrap();
        router.members.lock().unwrap().insert(id, raft);
    }
    initialize_three(&router).await;
    let first = leader(&router, &[1, 2, 3]).await;
    let mut last = 0;
    for i in 0..ENTRIES {
        let r = raft(&router, first)
            .client_write(Command::Enqueue(vec![msg(i)]))
            .await
            .unwrap();
        last = r.log_id.index;
    }
    for id in 1..=3 {
        applied(&router, id, last).await;
    }

    // The leader goes; count what the new one sends the survivor up to its first commit.
    let gone = router.members.lock().unwrap().remove(&first).unwrap();
    gone.shutdown().await.unwrap();
    router.entries_sent.store(0, Ordering::SeqCst);
    let rest: Vec<NodeId> = (1..=3).filter(|id| *id != first).collect();
    let second = leader(&router, &rest).await;
    let r = raft(&router, second)
        .client_write(Command::Enqueue(vec![msg(ENTRIES)]))
        .await
        .unwrap();
    let survivor = rest.iter().copied().find(|id| *id != second).unwrap();
    applied(&router, survivor, r.log_id.index).await;
    let sent = router.entries_sent.load(Ordering::SeqCst) as u64;
    // The whole tail from the middle is ENTRIES / 2 and more (123 here); a search in
    // probes of GROUP_PAYLOAD_ENTRIES takes about log2(ENTRIES / 16) of them (59).
    assert!(
        sent < ENTRIES * 3 / 8,
        "the new leader sent {sent} entries the survivor held (of {last})"
    );
    for id in rest {
        raft(&router, id).shutdown().await.unwrap();
    }
}
