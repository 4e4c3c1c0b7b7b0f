//! A quorum group follows the cluster's membership: a member node that dies for good
//! and is removed (`actormq cluster remove-node`) is replaced in its groups by the node
//! outside them, which the group's leader adds and catches up; the group then survives
//! one more failure, which the replacement's copy carries.

use super::quorum::{consume_on_leader, declare_quorum, publish_numbered};
use super::{assert_no_panic, cluster_of, leader, member_id, wait_for, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use serde_json::Value;
use tokio::task::block_in_place;

const MESSAGES: u64 = 150;

/// The group's leader and members as `node`'s `/api/queues` has them.
pub(super) async fn group_of(node: &Node, queue: &str) -> (Option<u64>, Vec<u64>) {
    let row = node
        .api()
        .get(&format!("/api/queues/%2F/{queue}"))
        .await
        .json();
    let mut members: Vec<u64> = row["members"]
        .as_array()
        .map(|m| m.iter().filter_map(member_id).collect())
        .unwrap_or_default();
    members.sort_unstable();
    (member_id(&row["leader"]), members)
}

/// `node`'s view of group member `id` in `cluster status` (its first group).
pub(super) fn member_view(node: &Node, id: u64) -> Option<Value> {
    let s = node.status()?;
    let n = s["nodes"].as_array()?.iter().find(|n| n[0]["id"] == id)?;
    Some(n[0]["groups"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_replaced_in_its_groups_and_the_replacement_carries_a_majority() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| cluster_of(dir.path(), 4));
    let definitions_leader = {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all))
    };
    // Three members on four nodes: one node is outside the group.
    declare_quorum(&nodes[0], "moved", "").await;
    let (_, members) = group_of(&nodes[0], "moved").await;
    assert_eq!(members.len(), 3, "{members:?}");
    let outside = nodes
        .iter()
        .map(|n| n.id)
        .find(|id| !members.contains(id))
        .unwrap();
    publish_numbered(&nodes[0], "moved", 0..MESSAGES).await;

    // A member that leads neither the definitions nor the group dies for good and is
    // removed.
    let (group_leader, _) = group_of(&nodes[0], "moved").await;
    let gone = *members
        .iter()
        .find(|m| Some(**m) != group_leader && **m != definitions_leader)
        .expect("a member leading nothing");
    let at_gone = nodes.iter().position(|n| n.id == gone).unwrap();
    nodes[at_gone].kill9();
    let asker = nodes.iter().find(|n| n.id != gone).unwrap();
    let removed = block_in_place(|| asker.cli(&["remove-node", &gone.to_string()]));
    assert_eq!(removed.unwrap().trim(), "ok");

    // The node outside the group replaces it, and is caught up by the group's leader.
    let live: Vec<&Node> = nodes.iter().filter(|n| n.id != gone).collect();
    let mut want: Vec<u64> = members.iter().copied().filter(|m| *m != gone).collect();
    want.push(outside);
    want.sort_unstable();
    let end = std::time::Instant::now() + DEADLINE * 2;
    loop {
        let mut agreed = true;
        for n in &live {
            agreed &= group_of(n, "moved").await.1 == want;
        }
        if agreed {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the members did not become {want:?}: {:?}",
            group_of(live[0], "moved").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let newcomer = nodes.iter().find(|n| n.id == outside).unwrap();
    let group_leader = block_in_place(|| {
        wait_for("the replacement caught up", DEADLINE * 2, || {
            let mine = member_view(newcomer, outside)?;
            let leader = mine["leader"].as_u64()?;
            let theirs = member_view(newcomer, leader)?;
            (mine["applied_index"].as_u64().is_some()
                && mine["applied_index"] == theirs["last_log_index"])
                .then_some(leader)
        })
    });

    // One more original member dies (the group's leader, unless the replacement
    // leads already): the replacement is needed for a majority, and has every message.
    let victim = if group_leader != outside {
        group_leader
    } else {
        *want.iter().find(|m| **m != outside).unwrap()
    };
    let at_victim = nodes.iter().position(|n| n.id == victim).unwrap();
    nodes[at_victim].kill9();
    let survivors: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.id != gone && n.id != victim)
        .collect();
    let (_, _conn, mut consumer) = consume_on_leader(&survivors, "moved", 500).await;
    for want in 0..MESSAGES {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {want} of {MESSAGES}"))
            .expect("the consumer goes on")
            .expect("a delivery");
        let n: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
        assert_eq!(n, want, "in order");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_no_panic(&nodes);
}
