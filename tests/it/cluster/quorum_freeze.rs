//! A quorum queue's group leader frozen (SIGSTOP) past the election timeout: the new
//! leader redelivers what the frozen one's consumer held, marked, and nothing acked;
//! thawed, the old leader moves its consumer to the new one (no cancel, no reconnect).

use super::quorum::{connect, consume_on_leader, declare_quorum, delivery_count, next_delivery};
use super::{leader, three_nodes, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_group_leader_is_replaced_and_moves_its_consumers_when_thawed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "frozen", "").await;
    let (old, _conn, mut consumer) = consume_on_leader(&all, "frozen", 100).await;
    let follower = nodes.iter().find(|n| n.id != old).unwrap();
    let pconn = connect(follower).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for n in 0..10u64 {
        let c = pch
            .basic_publish(
                "".into(),
                "frozen".into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(c.is_ack(), "publish {n} confirmed");
    }
    // 0..5 acked, 5..10 held.
    for n in 0..10u64 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(std::str::from_utf8(&d.data).unwrap(), n.to_string());
        if n < 5 {
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    let leader_node = nodes.iter().find(|n| n.id == old).unwrap();
    super::queue_until(leader_node, "frozen", "acks not committed", |q| {
        q["messages_unacknowledged"] == 5 && q["messages"] == 5
    })
    .await;

    // Frozen past the election timeout: the others elect a leader, which redelivers
    // what was held (marked) and nothing that was acked.
    leader_node.signal(libc::SIGSTOP);
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != old).collect();
    let (new, _conn2, mut consumer2) = consume_on_leader(&survivors, "frozen", 100).await;
    let mut again = Vec::new();
    for _ in 0..5 {
        let d = tokio::time::timeout(DEADLINE, consumer2.next())
            .await
            .expect("a redelivery")
            .unwrap()
            .unwrap();
        assert!(d.redelivered, "marked");
        assert_eq!(delivery_count(&d), Some(1));
        again.push(std::str::from_utf8(&d.data).unwrap().to_string());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(again, ["5", "6", "7", "8", "9"]);

    // Thawed, the old leader hears the later term: its consumer is not cancelled but
    // moved to the new leader (a consume session), and goes on receiving there
    // without reconnecting. An ack of a delivery tag it held from the old leader
    // settles nothing (that message was redelivered and acked above).
    drop(consumer2);
    drop(_conn2);
    leader_node.signal(libc::SIGCONT);
    let what = format!("the thawed node follows node {new}");
    super::queue_until(leader_node, "frozen", &what, |q| {
        let moved = q["leader"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("node{new}@")));
        moved && q["messages"] == 0 && q["consumers"] == 1
    })
    .await;
    let c = pch
        .basic_publish(
            "".into(),
            "frozen".into(),
            BasicPublishOptions::default(),
            b"after the thaw",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(c.is_ack(), "confirmed");
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("the moved consumer receives")
        .expect("not cancelled")
        .expect("a delivery");
    assert_eq!(std::str::from_utf8(&d.data).unwrap(), "after the thaw");
    assert!(!d.redelivered);
    d.ack(BasicAckOptions::default()).await.unwrap();
    super::queue_until(
        leader_node,
        "frozen",
        "the moved consumer's ack committed",
        |q| q["messages"] == 0 && q["messages_unacknowledged"] == 0,
    )
    .await;
}
