//! Policies reach a replicated quorum queue's limits: the policies in force when its
//! declare commits (replicated before it in the log, so every member's machine gets
//! the same limits), merged as RabbitMQ merges them for quorum queues: the lower
//! `max-length`, and the policy's `overflow` over the argument's.

use super::quorum::{connect, declare_quorum, publish_persistent};
use super::{three_led, Node};
use lapin::options::ConfirmSelectOptions;
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_in_force_at_the_declare_sets_a_quorum_queues_length_limit_and_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let p = nodes[0]
        .api()
        .put(
            "/api/policies/%2F/cap",
            r#"{"pattern":"^capped$","definition":{"max-length":2,"overflow":"reject-publish","dead-letter-strategy":"at-least-once"},"apply-to":"queues"}"#,
        )
        .await;
    assert!((200..300).contains(&p.status), "policy: {}", p.text());
    // Its own arguments ask for more and for drop-head: the policy's lower limit and
    // its overflow apply.
    declare_quorum(
        &nodes[1],
        "capped",
        r#","x-max-length":5,"x-overflow":"drop-head""#,
    )
    .await;
    let publisher: &Node = &nodes[2];
    let conn = connect(publisher).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut answers = Vec::new();
    for body in ["one", "two", "three"] {
        let c = publish_persistent(&ch, "capped", body.as_bytes()).await;
        answers.push(c.await.unwrap().is_ack());
    }
    assert_eq!(answers, [true, true, false], "the third is refused (nack)");
    // Nothing was dropped from the head: the two first are there, on every node.
    for n in &nodes {
        super::queue_until(n, "capped", "the two first kept", |q| q["messages"] == 2).await;
    }
    super::assert_no_panic(&nodes);
}
