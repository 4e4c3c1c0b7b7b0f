//! Drift: what the log alone would let differ between nodes. A restarted node keeps
//! the cluster's transient definitions (and its own transient queues are deleted, as
//! RabbitMQ's die with their node); a node's definitions from before it joined are
//! declared to the cluster. (A removed node's restart: `membership`.)

use super::{converged, free_port, has, leader, three_nodes, Node};
use crate::support::DEADLINE;
use std::time::Instant;
use tokio::task::block_in_place;

/// Waits until GET `path` answers `want` on every node.
async fn everywhere(nodes: &[&Node], path: &str, want: u16) {
    let end = Instant::now() + DEADLINE * 2;
    loop {
        let mut got = Vec::new();
        for n in nodes {
            got.push(n.api().get(path).await.status);
        }
        if got.iter().all(|s| *s == want) {
            return;
        }
        assert!(
            Instant::now() < end,
            "GET {path}: {got:?}, not {want} everywhere"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn created(status: u16, what: &str) {
    assert!((200..300).contains(&status), "{what}: HTTP {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_transient_definitions_and_its_own_transient_queues_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    let (a, b) = (nodes[0].api(), nodes[1].api());
    created(
        a.put(
            "/api/exchanges/%2F/tx",
            r#"{"type":"fanout","durable":false}"#,
        )
        .await
        .status,
        "transient exchange",
    );
    created(
        a.put("/api/queues/%2F/tq-a", r#"{"durable":false}"#)
            .await
            .status,
        "transient queue homed on node 1",
    );
    created(
        b.put("/api/queues/%2F/tq-b", r#"{"durable":false}"#)
            .await
            .status,
        "transient queue homed on node 2",
    );
    for q in ["tq-a", "tq-b"] {
        created(
            a.post(
                &format!("/api/bindings/%2F/e/tx/q/{q}"),
                r#"{"routing_key":""}"#,
            )
            .await
            .status,
            "binding",
        );
    }
    {
        let all: Vec<_> = nodes.iter().collect();
        everywhere(&all, "/api/queues/%2F/tq-b", 200).await;
        everywhere(&all, "/api/bindings/%2F/e/tx/q/tq-a", 200).await;
    }

    block_in_place(|| nodes[1].restart());
    let all: Vec<_> = nodes.iter().collect();
    // Node 2's own transient queue died with it, everywhere; the rest is kept on
    // every node, node 2 included.
    everywhere(&all, "/api/queues/%2F/tq-b", 404).await;
    everywhere(&all, "/api/exchanges/%2F/tx", 200).await;
    everywhere(&all, "/api/queues/%2F/tq-a", 200).await;
    for n in &all {
        let bindings = n.api().get("/api/bindings/%2F/e/tx/q/tq-a").await.json();
        assert_eq!(bindings.as_array().map(Vec::len), Some(1), "node {}", n.id);
    }
    // A publish to tx on the restarted node routes to tq-a, and is forwarded to its
    // home, node 1 (as for any queue of another node): the route was restored.
    let r = nodes[1]
        .api()
        .post(
            "/api/exchanges/%2F/tx/publish",
            r#"{"properties":{},"routing_key":"","payload":"hi","payload_encoding":"string"}"#,
        )
        .await;
    let text = r.json().to_string();
    assert!(
        text.contains(r#""routed":true"#),
        "HTTP {}: {text}",
        r.status
    );
    super::queue_until(&nodes[0], "tq-a", "the publish, at tq-a's home", |q| {
        q["messages"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_and_the_name_a_node_held_before_joining_are_declared_to_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    // A single broker (no [cluster]) with a queue, a binding and a message.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut fourth = block_in_place(|| Node::start(&dir.path().join("n4"), 0, &addr, &[]));
    let api = fourth.api();
    created(
        api.put("/api/queues/%2F/legacy", r#"{"durable":true}"#)
            .await
            .status,
        "queue",
    );
    created(
        api.post(
            "/api/bindings/%2F/e/amq.topic/q/legacy",
            r#"{"routing_key":"old.#"}"#,
        )
        .await
        .status,
        "binding",
    );
    let r = api
        .post(
            "/api/exchanges/%2F/amq.default/publish",
            r#"{"properties":{"delivery_mode":2},"routing_key":"legacy","payload":"kept","payload_encoding":"string"}"#,
        )
        .await;
    created(r.status, "publish");
    // And a name, which the cluster (that has none) takes.
    let named = api
        .put("/api/cluster-name", r#"{"name":"legacy-name"}"#)
        .await;
    assert_eq!(named.status, 204, "{}", named.text());

    // It becomes node 4 (no seeds: it waits to be added) and is added.
    fourth.kill9();
    fourth.id = 4;
    block_in_place(|| fourth.restart());
    let added = block_in_place(|| nodes[0].cli(&["add-node", "4", &addr]));
    assert_eq!(added.unwrap().trim(), "ok");
    let all: Vec<_> = nodes.iter().chain([&fourth]).collect();
    let defs = converged(&all, |d| has(d, "queues", "legacy")).await;
    assert!(
        defs["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["source"] == "amq.topic" && b["destination"] == "legacy"),
        "{defs}"
    );
    // Every node reports the same name.
    let end = Instant::now() + DEADLINE;
    for n in &all {
        loop {
            let got = n.api().get("/api/cluster-name").await.json();
            if got["name"] == "legacy-name" {
                break;
            }
            assert!(Instant::now() < end, "node {}'s cluster name: {got}", n.id);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // Its message is still there, on its home.
    let end = Instant::now() + DEADLINE;
    loop {
        let q = fourth.api().get("/api/queues/%2F/legacy").await.json();
        if q["messages"] == 1 {
            break;
        }
        assert!(Instant::now() < end, "the message is gone: {q}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_brokers_quorum_queue_with_messages_keeps_its_node_out_of_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    // A single broker (no [cluster]) whose quorum queue holds two messages.
    let mut node = block_in_place(|| Node::start(&dir.path().join("n1"), 0, &addr, &[]));
    let api = node.api();
    created(
        api.put(
            "/api/queues/%2F/orders",
            r#"{"durable":true,"arguments":{"x-queue-type":"quorum"}}"#,
        )
        .await
        .status,
        "queue",
    );
    for body in ["one", "two"] {
        let r = api
            .post(
                "/api/exchanges/%2F/amq.default/publish",
                &format!(
                    r#"{{"properties":{{"delivery_mode":2}},"routing_key":"orders","payload":"{body}","payload_encoding":"string"}}"#
                ),
            )
            .await;
        assert!(r.json()["routed"] == true, "{}", r.text());
    }

    // As a cluster node it refuses to start, naming the queue and what it holds.
    node.kill9();
    node.id = 1;
    let refused = block_in_place(|| node.try_restart_with(&[(1, addr.clone())]));
    let log = refused.expect_err("a cluster node with a quorum backlog must not start");
    assert!(
        log.contains("'orders' in vhost '/' (2 messages)") && log.contains("without [cluster]"),
        "{log}"
    );

    // Nothing was lost: as a single broker again, the messages are there.
    node.id = 0;
    block_in_place(|| node.restart());
    let q = node.api().get("/api/queues/%2F/orders").await.json();
    assert_eq!(q["messages"], 2, "{q}");
}
