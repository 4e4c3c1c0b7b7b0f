//! Policies reach a replicated quorum queue's limits: the policies in force when its
//! declare commits (replicated before it in the log, so every member's machine gets
//! the same limits), merged as RabbitMQ merges them for quorum queues: the lower
//! `max-length`, and the policy's `overflow` over the argument's; and a policy set,
//! changed or cleared later (operator policies too), which the group's leader writes
//! into the group's log, so every member switches at the same entry, a new leader
//! enforces it, and a member that was down gets it as it catches up.

use super::quorum::{connect, declare_quorum, publish_numbered, publish_persistent, queue_leader};
use super::{queue_until, three_led, Node};
use crate::support::DEADLINE;
use lapin::options::{BasicGetOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_in_force_at_the_declare_sets_a_quorum_queues_length_limit_and_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    put(
        &nodes[0],
        "/api/policies/%2F/cap",
        r#"{"pattern":"^capped$","definition":{"max-length":2,"overflow":"reject-publish","dead-letter-strategy":"at-least-once"},"apply-to":"queues"}"#,
    )
    .await;
    // Its own arguments ask for more and for drop-head: the policy's lower limit and
    // its overflow apply.
    declare_quorum(
        &nodes[1],
        "capped",
        r#","x-max-length":5,"x-overflow":"drop-head""#,
    )
    .await;
    let (_conn, ch) = confirming(&nodes[2]).await;
    let mut answers = Vec::new();
    for body in ["one", "two", "three"] {
        answers.push(confirmed(&ch, "capped", body).await);
    }
    assert_eq!(answers, [true, true, false], "the third is refused (nack)");
    // Nothing was dropped from the head: the two first are there, on every node.
    for n in &nodes {
        queue_until(n, "capped", "the two first kept", |q| q["messages"] == 2).await;
    }
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_set_after_the_declare_lowers_max_length_on_every_member_and_a_new_leader_enforces_it(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "later", r#","x-max-length":10"#).await;
    publish_numbered(&nodes[1], "later", 1..6).await;
    for n in &nodes {
        queue_until(n, "later", "five queued", |q| q["messages"] == 5).await;
    }
    put(
        &nodes[2],
        "/api/policies/%2F/cap",
        r#"{"pattern":"^later$","definition":{"max-length":2},"apply-to":"queues"}"#,
    )
    .await;
    // drop-head: the oldest go at once, at the same entry of the group's log on
    // every member (as RabbitMQ's quorum queues drop at a configuration change).
    for n in &nodes {
        queue_until(n, "later", "the policy's limit on every member", |q| {
            q["messages"] == 2 && q["group_limits"]["max_length"] == 2
        })
        .await;
    }
    // The group's leader killed: the new one enforces the policy's limit.
    let all: Vec<&Node> = nodes.iter().collect();
    let led = queue_leader(&all, "later").await;
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    nodes[at].kill9();
    let survivor = &nodes[(at + 1) % 3];
    publish_numbered(survivor, "later", 6..9).await;
    for n in nodes.iter().filter(|n| n.id != led) {
        queue_until(n, "later", "still two after three more", |q| {
            q["messages"] == 2
        })
        .await;
    }
    assert_eq!(gets(survivor, "later", 3).await, ["7", "8"], "the newest");
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_an_operator_policy_restores_the_arguments_limit_on_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(
        &nodes[0],
        "bounded",
        r#","x-max-length":3,"x-overflow":"reject-publish""#,
    )
    .await;
    put(
        &nodes[1],
        "/api/operator-policies/%2F/op-cap",
        r#"{"pattern":"^bounded$","definition":{"max-length":1},"apply-to":"queues"}"#,
    )
    .await;
    for n in &nodes {
        queue_until(n, "bounded", "the operator policy's limit", |q| {
            q["group_limits"]["max_length"] == 1
        })
        .await;
    }
    let (_conn, ch) = confirming(&nodes[2]).await;
    assert!(confirmed(&ch, "bounded", "a").await);
    assert!(
        !confirmed(&ch, "bounded", "b").await,
        "past the operator policy's max-length 1: refused (the argument's reject-publish)"
    );
    let r = nodes[2]
        .api()
        .delete("/api/operator-policies/%2F/op-cap")
        .await;
    assert!((200..300).contains(&r.status), "clear: {}", r.text());
    for n in &nodes {
        queue_until(n, "bounded", "the argument's limit again", |q| {
            q["group_limits"]["max_length"] == 3 && q["group_limits_at"].as_u64() > Some(0)
        })
        .await;
    }
    let mut answers = Vec::new();
    for body in ["c", "d", "e"] {
        answers.push(confirmed(&ch, "bounded", body).await);
    }
    assert_eq!(answers, [true, true, false], "three at most, as declared");
    for n in &nodes {
        queue_until(n, "bounded", "three held", |q| q["messages"] == 3).await;
    }
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_made_while_a_member_is_down_reaches_it_when_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "behind", r#","x-max-length":10"#).await;
    publish_numbered(&nodes[0], "behind", 1..5).await;
    for n in &nodes {
        queue_until(n, "behind", "four queued", |q| q["messages"] == 4).await;
    }
    // A member that does not lead the group goes down; the policy is set meanwhile.
    let all: Vec<&Node> = nodes.iter().collect();
    let led = queue_leader(&all, "behind").await;
    let down = nodes.iter().position(|n| n.id != led).unwrap();
    nodes[down].kill9();
    let up = nodes.iter().position(|n| n.id == led).unwrap();
    put(
        &nodes[up],
        "/api/policies/%2F/cap",
        r#"{"pattern":"^behind$","definition":{"max-length":2},"apply-to":"queues"}"#,
    )
    .await;
    for (i, n) in nodes.iter().enumerate() {
        if i != down {
            queue_until(n, "behind", "two left on the members up", |q| {
                q["messages"] == 2
            })
            .await;
        }
    }
    // Back, it catches up with the group's log (the change at its entry there).
    block_in_place(|| nodes[down].restart());
    queue_until(&nodes[down], "behind", "the change reached it", |q| {
        q["messages"] == 2 && q["group_limits"]["max_length"] == 2
    })
    .await;
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_made_while_the_group_has_no_leader_is_written_by_its_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    // One member: down, the group has no leader at all.
    declare_quorum(
        &nodes[0],
        "alone",
        r#","x-max-length":10,"x-quorum-initial-group-size":1"#,
    )
    .await;
    publish_numbered(&nodes[1], "alone", 1..5).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let member = queue_leader(&all, "alone").await;
    let at = nodes.iter().position(|n| n.id == member).unwrap();
    queue_until(&nodes[at], "alone", "four queued", |q| q["messages"] == 4).await;
    nodes[at].kill9();
    put(
        &nodes[(at + 1) % 3],
        "/api/policies/%2F/cap",
        r#"{"pattern":"^alone$","definition":{"max-length":2},"apply-to":"queues"}"#,
    )
    .await;
    // Back, it leads again with its machine behind the definitions: it writes them.
    block_in_place(|| nodes[at].restart());
    queue_until(
        &nodes[at],
        "alone",
        "its next leader wrote the change",
        |q| q["messages"] == 2 && q["group_limits"]["max_length"] == 2,
    )
    .await;
    super::assert_no_panic(&nodes);
}

/// A `PUT` on `node`'s management API that must succeed.
async fn put(node: &Node, path: &str, body: &str) {
    let r = node.api().put(path, body).await;
    assert!((200..300).contains(&r.status), "PUT {path}: {}", r.text());
}

/// A channel on `node` with publisher confirms.
async fn confirming(node: &Node) -> (Connection, Channel) {
    let conn = connect(node).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// Publishes `body` to `queue` and answers whether it was confirmed (ack).
async fn confirmed(ch: &Channel, queue: &str, body: &str) -> bool {
    let c = publish_persistent(ch, queue, body.as_bytes()).await;
    c.await.unwrap().is_ack()
}

/// The bodies of up to `n` messages taken from `queue` on `node` (auto-ack gets,
/// on a new channel after one a get's error closed), until one finds it empty.
async fn gets(node: &Node, queue: &str, n: usize) -> Vec<String> {
    let conn = connect(node).await;
    let mut ch = conn.create_channel().await.unwrap();
    let end = Instant::now() + DEADLINE;
    let mut bodies = Vec::new();
    while bodies.len() < n {
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
        {
            Ok(Some(m)) => bodies.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
            Ok(None) => break,
            Err(e) => {
                assert!(Instant::now() < end, "gets on node {}: {e}", node.id);
                tokio::time::sleep(Duration::from_millis(100)).await;
                ch = conn.create_channel().await.unwrap();
            }
        }
    }
    bodies
}
