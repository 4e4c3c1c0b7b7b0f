//! The largest message a cluster node takes, on a quorum queue (real processes, 3
//! nodes, lapin with confirms): a message at the limit is confirmed and consumed
//! intact from another node; one byte more is refused at publish with 406, naming the
//! limit and the setting, instead of being appended on the leader and never reaching a
//! follower in time (issue 17's review: 120 MiB nacked after 10 s, elections).

use super::quorum::{connect, declare_quorum, publish_persistent, queue_leader, try_consume};
use super::three_led;
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::task::block_in_place;

/// `cluster::rpc::MAX_REPLICATED_MESSAGE`, the default and cap of
/// `amqp.max_message_size` with `[cluster]`.
const LIMIT: usize = 16 << 20;

/// A body whose every byte depends on its place, so that a chunk lost, repeated or
/// moved shows.
fn body(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_message_at_the_cluster_limit_replicates_and_one_byte_more_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "big", "").await;
    let all: Vec<_> = nodes.iter().collect();
    let led = queue_leader(&all, "big").await;
    let on_leader = nodes.iter().find(|n| n.id == led).unwrap();
    let elsewhere = nodes.iter().find(|n| n.id != led).unwrap();

    let conn = connect(on_leader).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let sent = body(LIMIT);
    let confirm = publish_persistent(&ch, "big", &sent).await;
    let confirm = tokio::time::timeout(DEADLINE, confirm)
        .await
        .expect("the confirm within the deadline")
        .unwrap();
    assert!(confirm.is_ack(), "{LIMIT} bytes: {confirm:?}");

    // Consumed from another node (its consume session at the group's leader).
    let (_c, cch, mut consumer) = try_consume(elsewhere, "big", 1).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("the delivery within the deadline")
        .expect("a delivery")
        .expect("no consumer error");
    assert!(
        got.data.len() == sent.len() && got.data == sent,
        "the body intact"
    );
    got.ack(BasicAckOptions::default()).await.unwrap();
    drop(cch);

    // One byte more: the channel is closed with 406 naming the limit and its key.
    let refused = publish_persistent(&ch, "big", &body(LIMIT + 1)).await;
    let refused = tokio::time::timeout(DEADLINE, refused)
        .await
        .expect("an answer within the deadline");
    assert!(
        !matches!(&refused, Ok(c) if c.is_ack()),
        "{} bytes confirmed: {refused:?}",
        LIMIT + 1
    );
    let after = ch
        .queue_declare(
            "big".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let text = format!("{refused:?} {after:?} {:?}", ch.status());
    assert!(
        text.contains(&format!(
            "message size {} is larger than configured max size {LIMIT} (amqp.max_message_size)",
            LIMIT + 1
        )) && text.contains("PRECONDITION_FAILED"),
        "{text}"
    );
    // The connection and the node go on: a small publish on a new channel is confirmed.
    let ch2 = conn.create_channel().await.unwrap();
    ch2.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let small = publish_persistent(&ch2, "big", b"after").await;
    let small = tokio::time::timeout(DEADLINE, small)
        .await
        .unwrap()
        .unwrap();
    assert!(small.is_ack(), "{small:?}");
    super::assert_no_panic(&nodes);
}
