//! `actormq cluster grow` / `shrink`: a quorum queue group of one member grows onto the
//! two other nodes, which its leader catches up; its first member is then shrunk out
//! and killed (after publishing once more from outside the group), and the two
//! members it gained hold every message, in order. A group's
//! last member is never shrunk out, a node that is no voter is refused, and
//! `--even` leaves a group of an odd size alone. A node shrunk out of a group and
//! grown back in serves its queue again once it leads (its queue actor follows the
//! new member).

use super::quorum::{
    consume_on_leader, declare_quorum, publish_numbered, queue_leader, try_consume,
};
use super::regroup::{group_of, member_view};
use super::{assert_no_panic, cluster_of, wait_for, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use tokio::task::block_in_place;

const MESSAGES: u64 = 150;

/// Waits until every node of `nodes` records `want` as the members of `queue`.
async fn members_become(nodes: &[&Node], queue: &str, want: &[u64]) {
    let end = std::time::Instant::now() + DEADLINE * 2;
    loop {
        let mut agreed = true;
        for n in nodes {
            agreed &= group_of(n, queue).await.1 == want;
        }
        if agreed {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "the members of '{queue}' did not become {want:?}: {:?}",
            group_of(nodes[0], queue).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `actormq cluster ARGS` asked of `node`, which must succeed: its output.
fn cli_ok(node: &Node, args: &[&str]) -> String {
    block_in_place(|| node.cli(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_grows_onto_new_members_which_carry_it_once_its_first_member_is_shrunk_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| cluster_of(dir.path(), 3));
    let one = r#","x-quorum-initial-group-size":1"#;
    declare_quorum(&nodes[0], "grown", one).await;
    declare_quorum(&nodes[0], "solo", one).await;
    let (_, first) = group_of(&nodes[0], "grown").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let first = first[0];
    publish_numbered(&nodes[1], "grown", 0..MESSAGES).await;
    let others: Vec<u64> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != first)
        .collect();

    // A node that is no voter is refused; `--even` leaves a group of one alone.
    let refused = block_in_place(|| nodes[0].cli(&["grow", "9"])).unwrap_err();
    assert!(refused.contains("node 9 is not a voter"), "{refused}");
    let id = others[0].to_string();
    let out = cli_ok(&nodes[2], &["grow", &id, "--even", "--queue", "grown"]);
    assert!(
        out.contains("0 quorum queue groups changed, 1 left"),
        "{out}"
    );

    // Grown onto both other nodes, one at a time (only `grown`: `--queue`).
    for id in &others {
        let out = cli_ok(&nodes[2], &["grow", &id.to_string(), "--queue", "grown"]);
        assert!(out.contains("1 quorum queue groups changed"), "{out}");
    }
    let all: Vec<&Node> = nodes.iter().collect();
    members_become(&all, "grown", &[1, 2, 3]).await;
    let (_, solo) = group_of(&nodes[0], "solo").await;
    assert_eq!(solo.len(), 1, "'solo' was not selected: {solo:?}");
    // Each new member catches up with the group's log.
    for id in &others {
        let node = nodes.iter().find(|n| n.id == *id).unwrap();
        block_in_place(|| {
            wait_for("a new member caught up", DEADLINE * 2, || {
                let mine = member_view(node, *id)?;
                let leader = mine["leader"].as_u64()?;
                let theirs = member_view(node, leader)?;
                (mine["applied_index"].as_u64().is_some()
                    && mine["applied_index"] == theirs["last_log_index"])
                    .then_some(())
            })
        });
    }

    // The first member is shrunk out (asked of another node) and its member stops; a
    // group's last member is not.
    let out = cli_ok(&nodes[1], &["shrink", &first.to_string()]);
    assert!(
        out.contains("1 quorum queue groups changed")
            && (solo != [first] || out.contains("1 left")),
        "{out}"
    );
    members_become(&all, "grown", &others).await;
    let out = cli_ok(
        &nodes[1],
        &["shrink", &solo[0].to_string(), "--queue", "solo"],
    );
    assert!(
        out.contains("0 quorum queue groups changed, 1 left"),
        "{out}"
    );
    assert_eq!(
        group_of(&nodes[0], "solo").await.1,
        solo,
        "its last member stays"
    );
    let at_first = nodes.iter().position(|n| n.id == first).unwrap();
    block_in_place(|| {
        wait_for("the shrunk member stopped", DEADLINE * 2, || {
            let s = nodes[at_first].status()?;
            let me = s["nodes"]
                .as_array()?
                .iter()
                .find(|n| n[0]["id"] == first)?;
            let groups = me[0]["groups"].as_array()?;
            // `solo` may be its own still; `grown`'s member is gone.
            (groups.len() == usize::from(solo == [first])).then_some(())
        })
    });

    // Its node, now outside the group, still publishes to it: its queue finds the
    // group's new members (it started when the node was the only one).
    publish_numbered(&nodes[at_first], "grown", MESSAGES..MESSAGES + 1).await;

    // Without the first member at all, the two it gained hold every message.
    nodes[at_first].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != first).collect();
    let (_, _conn, mut consumer) = consume_on_leader(&survivors, "grown", 500).await;
    for want in 0..=MESSAGES {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {want} of {}", MESSAGES + 1))
            .expect("the consumer goes on")
            .expect("a delivery");
        let n: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
        assert_eq!(n, want, "in order");
        assert!(!d.redelivered, "never delivered before");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_no_panic(&nodes);
}

/// `node`'s own quorum group members, as its `cluster status` lists them.
fn groups_run_by(node: &Node) -> Option<usize> {
    let s = node.status()?;
    let me = s["nodes"]
        .as_array()?
        .iter()
        .find(|n| n[0]["id"] == node.id)?;
    Some(me[0]["groups"].as_array()?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shrunk_out_and_grown_back_in_serves_the_queue_again_when_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| cluster_of(dir.path(), 3));
    let all: Vec<&Node> = nodes.iter().collect();
    declare_quorum(&nodes[0], "back", "").await;
    members_become(&all, "back", &[1, 2, 3]).await;
    // The group's leader goes out (its member stops once its removal is applied; a
    // follower's would only after a minute without news) and comes back (a new member
    // starts): the queue actor on its node must follow the new one.
    let led = queue_leader(&all, "back").await;
    let back = nodes.iter().find(|n| n.id == led).unwrap();
    let others: Vec<u64> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != back.id)
        .collect();
    let asked = nodes.iter().find(|n| n.id != back.id).unwrap();
    cli_ok(asked, &["shrink", &back.id.to_string(), "--queue", "back"]);
    members_become(&all, "back", &others).await;
    block_in_place(|| {
        wait_for("the shrunk member stopped", DEADLINE * 2, || {
            (groups_run_by(back)? == 0).then_some(())
        })
    });
    cli_ok(asked, &["grow", &back.id.to_string(), "--queue", "back"]);
    members_become(&all, "back", &[1, 2, 3]).await;
    // The two others go out, one at a time: the grown-back member is left alone in
    // the group, and leads it.
    for (i, id) in others.iter().enumerate() {
        cli_ok(back, &["shrink", &id.to_string(), "--queue", "back"]);
        let mut left = vec![back.id];
        left.extend(&others[i + 1..]);
        left.sort_unstable();
        members_become(&all, "back", &left).await;
    }
    assert_eq!(queue_leader(&[back], "back").await, back.id);
    // Its node serves the queue: a consumer there gets what is published.
    let (_conn, _ch, mut consumer) = try_consume(back, "back", 50)
        .await
        .expect("the leader's node serves a consumer");
    publish_numbered(back, "back", 0..20).await;
    for want in 0..20 {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!("only {want} of 20 reached the grown-back leader's consumer")
            })
            .expect("the consumer goes on")
            .expect("a delivery");
        let n: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
        assert_eq!(n, want, "in order");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_no_panic(&nodes);
}
