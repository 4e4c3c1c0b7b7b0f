//! No election while a quorum queue member installs a snapshot (3 real processes): a
//! member down while its group's log was snapshotted and purged is sent the snapshot
//! when it comes back, and stands for no election while it installs it, however long
//! that takes. The install is made to outlast the election timeout (at most 1.2 s
//! here) by the test-only pause `ACTORMQ_TEST_SNAPSHOT_INSTALL_PAUSE_MS`
//! (`src/cluster/quorum/install_hold.rs` says why a real snapshot cannot do it in a
//! test). Before ad38ea8 the member stood for election mid-install, the leader stepped
//! down, and the transfer started over.

use super::quorum::{connect, declare_quorum, publish_persistent, queue_leader};
use super::{queue_until, three_led, wait_for, Node};
use crate::support::DEADLINE;
use lapin::options::ConfirmSelectOptions;
use tokio::task::block_in_place;

/// Messages published while the member is down, each in its own entry: past the
/// 500 entries after which a group snapshots its queue (and purges its log behind,
/// keeping 100).
const PUBLISHED: u64 = 650;

/// The install's pause: over twice the test nodes' longest election timeout (1.2 s).
const PAUSE_MS: &str = "3000";

/// The group's term as `node`'s member knows it.
async fn term(node: &Node, queue: &str) -> u64 {
    let q = node
        .api()
        .get(&format!("/api/queues/%2F/{queue}"))
        .await
        .json();
    q["group_term"].as_u64().unwrap_or_else(|| panic!("{q}"))
}

/// The snapshot installs `node` logged.
fn installs(node: &Node) -> usize {
    node.logs()
        .matches("quorum queue group: installing the snapshot received")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_installing_a_snapshot_stands_for_no_election_however_long_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "behind", "").await;
    let all: Vec<&Node> = nodes.iter().collect();
    let led = queue_leader(&all, "behind").await;
    let leader_at = nodes.iter().position(|n| n.id == led).unwrap();
    let down = (leader_at + 1) % 3;
    nodes[down].kill9();

    // One at a time, each confirmed before the next: an entry each.
    let ch = connect(&nodes[leader_at])
        .await
        .create_channel()
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let body = vec![b'x'; 1024];
    for n in 0..PUBLISHED {
        let c = publish_persistent(&ch, "behind", &body).await;
        assert!(c.await.unwrap().is_ack(), "publish {n} confirmed");
    }
    let before = term(&nodes[leader_at], "behind").await;

    // Back with every install held 3 s: its log is behind the leader's purged one, so
    // it is sent the snapshot.
    nodes[down].set_env("ACTORMQ_TEST_SNAPSHOT_INSTALL_PAUSE_MS", PAUSE_MS);
    block_in_place(|| nodes[down].restart());
    block_in_place(|| {
        wait_for("the member installed a snapshot", DEADLINE, || {
            (installs(&nodes[down]) > 0).then_some(())
        })
    });
    queue_until(&nodes[down], "behind", "the member caught up", |q| {
        q["messages"] == PUBLISHED
    })
    .await;
    // No election: the term is the one before, on both, and it took one install.
    for n in [&nodes[leader_at], &nodes[down]] {
        assert_eq!(
            term(n, "behind").await,
            before,
            "node {}: the group's term changed (an election) while node {} installed",
            n.id,
            nodes[down].id
        );
    }
    assert_eq!(installs(&nodes[down]), 1, "{}", nodes[down].logs());
    super::assert_no_panic(&nodes);
}
