//! The management API's queue figures from any node (3 real processes), as RabbitMQ's
//! API shows them: a classic queue (and a stream) listed on a node that is not its
//! home shows the home's messages and consumers, those served through another node
//! counted once; with the home frozen, then killed, the listing still answers, the
//! queue marked `down`.

use super::classic_forward::{declare_on, held};
use super::quorum::{connect, next_delivery, try_consume};
use super::quorum_forward::publish_confirmed;
use super::{member_id, three_led, Node};
use lapin::options::ConfirmSelectOptions;
use serde_json::Value;
use tokio::task::block_in_place;

/// `node`'s `/api/queues` row of `name` (vhost `/`), from the whole listing.
async fn listed(node: &Node, name: &str) -> Value {
    let all = node.api().get("/api/queues").await.json();
    all.as_array()
        .and_then(|a| a.iter().find(|q| q["name"] == name).cloned())
        .unwrap_or_else(|| panic!("node {}: '{name}' not listed: {all}", node.id))
}

/// The figures a listing shows of a queue: total, ready, unacked, consumers.
fn figures(q: &Value) -> [&Value; 4] {
    [
        &q["messages"],
        &q["messages_ready"],
        &q["messages_unacknowledged"],
        &q["consumers"],
    ]
}

/// Before: node B listed the stand-in's own figures (0 messages; C's forwarded
/// consumer counted on C only), while a declare there answered the home's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_listed_on_a_node_that_is_not_its_home_shows_the_home_s_figures_or_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    let home_id = nodes[0].id;
    declare_on(&nodes, &nodes[0], "listed", r#"{"durable":true}"#).await;
    let stream = r#"{"durable":true,"arguments":{"x-queue-type":"stream"}}"#;
    declare_on(&nodes, &nodes[0], "listed-stream", stream).await;
    let (home, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    let pconn = connect(home).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "listed", (0..5).map(|n| n.to_string())).await;
    publish_confirmed(&pch, "listed-stream", (0..2).map(|n| n.to_string())).await;
    // A consumer on C, served by the home through a session, holding two.
    let (_cconn, _ch, mut consumer) = try_consume(c, "listed", 2).await.unwrap();
    let _one = next_delivery(&mut consumer).await;
    let _two = next_delivery(&mut consumer).await;
    held(home, "listed", 3, 2).await;

    let want = [5, 3, 2, 1].map(Value::from);
    for node in [b, c] {
        let q = listed(node, "listed").await;
        assert_eq!(figures(&q), want.each_ref(), "node {}: {q}", node.id);
        assert_eq!(q["state"], "running", "{q}");
        assert_eq!(member_id(&q["node"]), Some(home_id), "{q}");
        let one = node.api().get("/api/queues/%2F/listed").await.json();
        assert_eq!(figures(&one), want.each_ref(), "node {}: {one}", node.id);
        let s = listed(node, "listed-stream").await;
        assert_eq!(
            s["messages"], 2,
            "node {}: the stream's records: {s}",
            node.id
        );
    }

    // The home frozen (silent), then killed (refusing): B's listing still answers,
    // the home's queues marked down without counts, the others' as before.
    for kill in [false, true] {
        if kill {
            nodes[0].kill9();
        } else {
            nodes[0].signal(libc::SIGSTOP);
        }
        let b = &nodes[1];
        let q = listed(b, "listed").await;
        assert_eq!(q["state"], "down", "kill {kill}: {q}");
        assert_eq!(member_id(&q["node"]), Some(home_id), "{q}");
        assert!(q.get("messages").is_none(), "no counts that look real: {q}");
        assert_eq!(listed(b, "listed-stream").await["state"], "down");
        let one = b.api().get("/api/queues/%2F/listed").await.json();
        assert_eq!(one["state"], "down", "kill {kill}: {one}");
    }
    super::assert_no_panic(&nodes[1..]);
}
