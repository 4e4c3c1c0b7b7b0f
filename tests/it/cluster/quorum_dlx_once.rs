//! At-least-once dead-lettering of quorum queues replicated across a 3-node cluster
//! (real processes; `x-dead-letter-strategy = at-least-once` with `x-overflow =
//! reject-publish`): a rejected message lands in the dead-letter queue and leaves the
//! source; a dead message whose target cannot take it yet (its dead-letter exchange
//! does not exist) stays in every member's queue, counted against `x-max-length`, and
//! when its group's leader is killed -9 the new leader republishes it once the
//! exchange exists: never lost. Without reject-publish the strategy falls back to at
//! most once, as RabbitMQ's does, and the declare says so in the log.

use super::quorum::{connect, declare_quorum, publish_persistent, queue_leader, try_consume};
use super::quorum_dlx::{drain_dlq, next, publish_confirmed, TO_DLQ};
use super::{queue_until, three_led, wait_for, Node};
use crate::support::DEADLINE;
use lapin::options::{BasicRejectOptions, ConfirmSelectOptions};
use tokio::task::block_in_place;

/// The arguments of an at-least-once source queue (before its dead-letter target).
const AT_LEAST_ONCE: &str =
    r#","x-overflow":"reject-publish","x-dead-letter-strategy":"at-least-once""#;

/// Consumes one message of `queue` through `node` and rejects it without requeue.
async fn reject_one(node: &Node, queue: &str, body: &str) {
    let (_conn, _ch, mut consumer) = try_consume(node, queue, 1).await.expect("a consumer");
    let d = next(&mut consumer, body).await;
    assert_eq!(d.data, body.as_bytes());
    d.reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
}

/// `queue`'s (messages, messages_dlx) in a view of `node`.
fn counts(q: &serde_json::Value) -> (u64, u64) {
    (
        q["messages"].as_u64().unwrap_or(u64::MAX),
        q["messages_dlx"].as_u64().unwrap_or(u64::MAX),
    )
}

/// `queue`'s (messages, messages_dlx) on `node` once `ok` holds for them.
async fn counts_until(
    node: &Node,
    queue: &str,
    what: &str,
    ok: impl Fn(u64, u64) -> bool,
) -> (u64, u64) {
    let q = queue_until(node, queue, what, |q| {
        let (m, d) = counts(q);
        ok(m, d)
    })
    .await;
    counts(&q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_least_once_quorum_queue_dead_letters_a_rejected_message_and_lets_it_go() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "dlq", "").await;
    declare_quorum(&nodes[1], "work", &format!("{AT_LEAST_ONCE}{TO_DLQ}")).await;
    publish_confirmed(&nodes[2], "work", "bad").await;
    let all: Vec<&Node> = nodes.iter().collect();
    let led = queue_leader(&all, "work").await;
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    reject_one(follower, "work", "bad").await;

    let seen = drain_dlq(&nodes[0], 1, "sentinel").await;
    assert_eq!(
        seen,
        [(
            "bad".to_string(),
            "work".to_string(),
            "rejected".to_string(),
            1
        )],
        "dead-lettered once, as it died"
    );
    // Settled once confirmed: no member keeps it.
    for n in &nodes {
        counts_until(n, "work", "the dead letter settled", |m, d| {
            (m, d) == (0, 0)
        })
        .await;
    }
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_republishes_what_died_under_the_killed_one_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "dlq", "").await;
    // Its dead-letter exchange does not exist yet: no target can confirm a dead letter.
    declare_quorum(
        &nodes[0],
        "work",
        &format!(
            r#"{AT_LEAST_ONCE},"x-max-length":1,"x-dead-letter-exchange":"dlx","x-dead-letter-routing-key":"dlq""#
        ),
    )
    .await;
    let old = {
        let all: Vec<&Node> = nodes.iter().collect();
        queue_leader(&all, "work").await
    };
    let at = nodes.iter().position(|n| n.id == old).unwrap();
    let survivor = nodes.iter().position(|n| n.id != old).unwrap();
    publish_confirmed(&nodes[survivor], "work", "doomed").await;
    reject_one(&nodes[survivor], "work", "doomed").await;
    // The reject committed: every member keeps the dead message, none delivers it.
    for n in &nodes {
        counts_until(n, "work", "the dead message kept", |m, d| (m, d) == (0, 1)).await;
    }
    // It counts against x-max-length 1: a publish is refused (nack).
    {
        let conn = connect(&nodes[survivor]).await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let c = publish_persistent(&ch, "work", b"refused").await;
        assert!(
            c.await.unwrap().is_nack(),
            "the kept dead message fills the queue"
        );
    }

    nodes[at].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != old).collect();
    let new = queue_leader(&survivors, "work").await;
    assert_ne!(new, old);
    // The target appears (declared once the definitions have a leader among the
    // survivors): the new leader's next try is confirmed.
    block_in_place(|| super::leader(&survivors));
    let api = survivors[0].api();
    let r = api
        .put(
            "/api/exchanges/%2F/dlx",
            r#"{"type":"direct","durable":true}"#,
        )
        .await;
    assert!((200..300).contains(&r.status), "exchange: {}", r.text());
    let r = api
        .post("/api/bindings/%2F/e/dlx/q/dlq", r#"{"routing_key":"dlq"}"#)
        .await;
    assert!((200..300).contains(&r.status), "binding: {}", r.text());

    let seen = drain_dlq(survivors[1], 1, "sentinel").await;
    assert!(!seen.is_empty());
    for s in &seen {
        // At least once: a duplicate would be allowed, a loss or another death not.
        assert_eq!(
            s,
            &(
                "doomed".to_string(),
                "work".to_string(),
                "rejected".to_string(),
                1
            ),
            "{seen:?}"
        );
    }
    for n in &survivors {
        counts_until(n, "work", "the dead letter settled", |m, d| {
            (m, d) == (0, 0)
        })
        .await;
    }
    // Room again.
    publish_confirmed(survivors[0], "work", "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_without_reject_publish_falls_back_to_at_most_once_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    // No dead-letter exchange named "nowhere": at most once, the dead letter is dropped.
    declare_quorum(
        &nodes[0],
        "loose",
        r#","x-dead-letter-strategy":"at-least-once","x-dead-letter-exchange":"nowhere""#,
    )
    .await;
    block_in_place(|| {
        wait_for("the declare's fallback warning", DEADLINE, || {
            nodes[0]
                .logs()
                .contains("needs x-overflow 'reject-publish': this queue dead-letters at most once")
                .then_some(())
        })
    });
    publish_confirmed(&nodes[1], "loose", "gone").await;
    for n in &nodes {
        counts_until(n, "loose", "the message in every member", |m, _| m == 1).await;
    }
    reject_one(&nodes[2], "loose", "gone").await;
    // Gone from the queue in the reject's apply, in which it would have been kept.
    for n in &nodes {
        let (_, dead) = counts_until(n, "loose", "the message gone", |m, _| m == 0).await;
        assert_eq!(dead, 0, "node {}: at most once keeps nothing", n.id);
    }
}
