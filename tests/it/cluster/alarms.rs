//! Cluster-wide resource alarms (real processes, 3 nodes, node 1 with a 512 KiB memory
//! watermark): node 1's memory alarm blocks AMQP publishers on node 2, told so by
//! `connection.blocked` naming node 1 and the resource, even to a queue of node 2's own;
//! a publish there is held, not confirmed, not queued; `/api/nodes` and the alarms
//! health check on node 2 show node 1 in alarm; once node 1's alarm clears, node 2's
//! publishers are unblocked and the held publish is confirmed. The same with a quorum
//! queue, whose every member holds each body: node 1, a member at its watermark, blocks
//! the publishers of the other members (AMQP, and the native protocol's Blocked).

use super::classic_forward::{declare_on, three_with};
use super::quorum::{connect, declare_quorum, next_delivery, publish_persistent, try_consume};
use super::{queue_until, Node};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions};
use futures_util::{Stream, StreamExt};
use lapin::options::{BasicAckOptions, ConfirmSelectOptions};
use lapin::{Channel, Event};
use std::pin::Pin;
use std::time::Duration;
use tokio::task::block_in_place;

const WATERMARK: usize = 512 * 1024;

type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Three nodes, node 1 with the small watermark.
fn cluster(root: &std::path::Path) -> Vec<Node> {
    let broker = format!("[broker]\nmemory_high_watermark = {WATERMARK}\n");
    three_with(root, &broker, "")
}

/// A lapin publisher on `node` with confirms on, and its connection's events.
async fn publisher(node: &Node) -> (lapin::Connection, Channel, Events) {
    let conn = connect(node).await;
    let events: Events = Box::pin(conn.events_listener());
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch, events)
}

/// The reason of the next `connection.blocked`.
async fn blocked(events: &mut Events) -> String {
    loop {
        match tokio::time::timeout(DEADLINE, events.next()).await {
            Ok(Some(Event::ConnectionBlocked(reason))) => return reason,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the connection closed"),
            Err(_) => panic!("no connection.blocked within {DEADLINE:?}"),
        }
    }
}

/// Waits for the next `connection.unblocked`.
async fn unblocked(events: &mut Events) {
    loop {
        match tokio::time::timeout(DEADLINE, events.next()).await {
            Ok(Some(Event::ConnectionUnblocked)) => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the connection closed"),
            Err(_) => panic!("no connection.unblocked within {DEADLINE:?}"),
        }
    }
}

/// Publishes 1 MiB to `queue` through `ch`: confirmed (node 1 is below its watermark
/// before it, and at it after).
async fn fill(ch: &Channel, queue: &str) {
    let confirm = publish_persistent(ch, queue, &vec![b'x'; 2 * WATERMARK]).await;
    assert!(
        confirm.await.unwrap().is_ack(),
        "the first publish is confirmed"
    );
}

/// Publishes `body` to `queue` in a task of its own: must still be waiting after two
/// seconds (held while blocked). The task, resolving with the publish's confirm.
async fn held_publish(
    ch: &Channel,
    queue: &str,
    body: &'static [u8],
) -> tokio::task::JoinHandle<bool> {
    let (ch, queue) = (ch.clone(), queue.to_string());
    let mut pending = tokio::spawn(async move {
        let confirm = publish_persistent(&ch, &queue, body).await;
        confirm.await.unwrap().is_ack()
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut pending)
            .await
            .is_err(),
        "a publish while another node is in alarm is held, not confirmed"
    );
    pending
}

/// The held publish `pending` is confirmed (not nacked) within the deadline.
async fn confirmed(pending: tokio::task::JoinHandle<bool>, when: &str) {
    let acked = tokio::time::timeout(DEADLINE, pending)
        .await
        .unwrap_or_else(|_| panic!("{when}"))
        .unwrap();
    assert!(acked, "confirmed, not nacked");
}

/// `node`'s `/api/nodes` entry for node `id`.
async fn node_entry(node: &Node, id: u64) -> serde_json::Value {
    let all = node.api().get("/api/nodes").await.json();
    all.as_array()
        .and_then(|all| all.iter().find(|n| n["id"] == id).cloned())
        .unwrap_or_else(|| panic!("node {id} in /api/nodes: {all}"))
}

/// Takes one message from `queue` through a consumer on `node`, and acks it.
async fn take_one(node: &Node, queue: &str) {
    let (_conn, _ch, mut consumer) = try_consume(node, queue, 1).await.expect("a consume");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data.len(), 2 * WATERMARK);
    d.ack(BasicAckOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_on_one_node_blocks_amqp_publishers_on_another_until_it_clears() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| cluster(dir.path()));
    let (a, b) = (&nodes[0], &nodes[1]);
    // "fill" lives on node 1, "work" on node 2.
    declare_on(&nodes, a, "fill", "{}").await;
    declare_on(&nodes, b, "work", "{}").await;
    let (_conn, ch, mut events) = publisher(b).await;

    // Forwarded to node 1 and confirmed: node 1 is in alarm, and B's publisher told.
    fill(&ch, "fill").await;
    let reason = blocked(&mut events).await;
    assert!(
        reason.contains("low on memory") && reason.contains("node 1"),
        "{reason}"
    );
    assert!(
        !reason.contains("memory high watermark"),
        "B is not: {reason}"
    );

    // B's management API shows node 1 in alarm, not itself; its cluster-wide alarms
    // check fails naming node 1, its local one passes.
    assert_eq!(node_entry(b, 1).await["mem_alarm"], true);
    assert_eq!(node_entry(b, 2).await["mem_alarm"], false);
    assert_eq!(node_entry(b, 3).await["mem_alarm"], false);
    let check = b.api().get("/api/health/checks/alarms").await;
    assert_eq!(check.status, 503, "{}", check.text());
    assert!(check.text().contains("node1@"), "{}", check.text());
    let local = b.api().get("/api/health/checks/local-alarms").await;
    assert_eq!(local.status, 200, "{}", local.text());
    // `cluster status` on B: each node's own alarms, as it reports them.
    let status = block_in_place(|| b.status()).expect("status");
    let alarms_of = |id: u64| {
        status["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n[0]["id"] == id))
            .map(|n| n[0]["alarms"].clone())
    };
    assert_eq!(
        alarms_of(1),
        Some(serde_json::json!(["memory"])),
        "{status}"
    );
    assert_eq!(alarms_of(2), Some(serde_json::json!([])), "{status}");
    let table = block_in_place(|| b.cli(&["status"])).unwrap();
    assert!(
        table.contains("alarms") && table.contains("memory"),
        "{table}"
    );

    // A publish on B, even to B's own queue, is held: not confirmed, not queued.
    let pending = held_publish(&ch, "work", b"held").await;
    queue_until(b, "work", "nothing queued", |q| q["messages_ready"] == 0).await;

    // A consumer on node 1 takes what filled it: its alarm clears, B's publisher is
    // unblocked, and the held publish is queued and confirmed.
    take_one(a, "fill").await;
    unblocked(&mut events).await;
    confirmed(pending, "confirmed once node 1's alarm clears").await;
    queue_until(b, "work", "the held publish", |q| q["messages_ready"] == 1).await;
    assert_eq!(node_entry(b, 1).await["mem_alarm"], false);
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_member_s_memory_alarm_blocks_publishers_on_the_other_members() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| cluster(dir.path()));
    let (b, c) = (&nodes[1], &nodes[2]);
    declare_quorum(b, "qq", "").await;
    for n in &nodes {
        queue_until(n, "qq", "the queue is known", |q| q["name"] == "qq").await;
    }
    let native = Client::connect(ConnectOptions::new(c.native.clone()))
        .await
        .unwrap();
    let (_conn, ch, mut events) = publisher(b).await;

    // Committed by a majority; node 1's member holds the body too, at its watermark.
    fill(&ch, "qq").await;
    let reason = blocked(&mut events).await;
    assert!(
        reason.contains("low on memory") && reason.contains("node 1"),
        "{reason}"
    );
    // The native protocol's Blocked on C says the same.
    let end = std::time::Instant::now() + DEADLINE;
    while !native
        .blocked_reason()
        .is_some_and(|r| r.contains("low on memory (node 1)"))
    {
        assert!(std::time::Instant::now() < end, "C's native client is told");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pending = held_publish(&ch, "qq", b"held").await;
    queue_until(b, "qq", "only the first", |q| q["messages"] == 1).await;

    // A consumer on C takes and acks it: every member drops it, node 1 clears, and
    // the held publish is committed and confirmed.
    take_one(c, "qq").await;
    unblocked(&mut events).await;
    confirmed(pending, "confirmed once node 1's alarm clears").await;
    queue_until(b, "qq", "the held publish", |q| q["messages"] == 1).await;
    tokio::time::timeout(DEADLINE, native.wait_unblocked())
        .await
        .expect("C's native client is unblocked")
        .unwrap();
    super::assert_no_panic(&nodes);
}

/// A node that cannot be reached is not in alarm (as RabbitMQ clears the alarms of a
/// node it sees go down): with node 1 killed in alarm, node 2's publishers go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_alarm_that_goes_down_no_longer_blocks_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| cluster(dir.path()));
    declare_on(&nodes, &nodes[0], "fill", "{}").await;
    declare_on(&nodes, &nodes[1], "work", "{}").await;
    let (_conn, ch, mut events) = publisher(&nodes[1]).await;
    fill(&ch, "fill").await;
    blocked(&mut events).await;
    let pending = held_publish(&ch, "work", b"held").await;

    nodes[0].kill9();
    unblocked(&mut events).await;
    confirmed(pending, "confirmed once node 1 is gone").await;
    assert_eq!(node_entry(&nodes[1], 1).await["mem_alarm"], false);
    let check = nodes[1].api().get("/api/health/checks/alarms").await;
    assert_eq!(check.status, 200, "{}", check.text());
    super::assert_no_panic(&nodes[1..]);
}
