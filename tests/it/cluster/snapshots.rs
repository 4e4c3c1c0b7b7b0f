//! Snapshots of the definitions log (real processes, a snapshot every 20 entries and
//! the log purged behind it but for 2): a node that joins after the purge is sent the
//! snapshot and gets every definition (durable and transient, classic and quorum
//! queues with their groups, bindings, users, virtual hosts) and serves them; a node
//! restarted after a purge comes back with the same definitions; a node that was down
//! while the others purged catches up through the snapshot, deletions and a quorum
//! group placed on it included.

use super::{converged, free_port, has, leader, queue_until, Node, SECRET};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions, QueueOptions};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// `[cluster]` lines: the secret, and small snapshots.
pub(super) fn extra() -> String {
    format!("secret = \"{SECRET}\"\nsnapshot_entries = 20\nsnapshot_keep_entries = 2")
}

/// Three nodes taking a snapshot every 20 entries.
pub(super) fn cluster(root: &std::path::Path) -> Vec<Node> {
    let seeds: Vec<(u64, String)> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    seeds
        .iter()
        .map(|(id, addr)| {
            Node::start_with(
                &root.join(format!("n{id}")),
                *id,
                addr,
                &seeds,
                &extra(),
                "",
            )
        })
        .collect()
}

pub(super) fn ok(status: u16, what: &str) {
    assert!((200..300).contains(&status), "{what}: HTTP {status}");
}

/// Node `n`'s view of itself in the cluster's status.
fn own_view(n: &Node) -> Option<Value> {
    let s = n.status()?;
    s["nodes"]
        .as_array()?
        .iter()
        .map(|e| e[0].clone())
        .find(|v| v["id"] == n.id)
}

/// The last entry `n` applied.
pub(super) fn applied(n: &Node) -> u64 {
    let v = own_view(n).expect("the node answers");
    v["applied_index"].as_u64().expect("an applied index")
}

/// Declares and deletes a durable queue on `on` (two log entries each time) until
/// every node of `live` has purged its log past `index`.
pub(super) async fn churn_until_purged(on: &Node, live: &[&Node], index: u64) {
    let client = Client::connect(ConnectOptions::new(on.native.clone()))
        .await
        .unwrap();
    let durable = QueueOptions {
        durable: true,
        ..Default::default()
    };
    let end = Instant::now() + DEADLINE * 3;
    loop {
        for _ in 0..10 {
            client.declare_queue("churn", &durable).await.unwrap();
            client.delete_queue("churn").await.unwrap();
        }
        let purged: Vec<Option<u64>> = block_in_place(|| {
            live.iter()
                .map(|n| own_view(n).and_then(|v| v["purged_index"].as_u64()))
                .collect()
        });
        if purged.iter().all(|p| p.is_some_and(|p| p > index)) {
            return;
        }
        assert!(
            Instant::now() < end,
            "the log was not purged past {index}: {purged:?}"
        );
    }
}

/// A publish through `exchange` with `key` on `node`'s native port: its confirm.
async fn publish(node: &Node, exchange: &str, key: &str) -> Result<(), String> {
    let client = Client::connect(ConnectOptions::new(node.native.clone()))
        .await
        .unwrap();
    match client.publish(exchange, key, "m").await {
        Ok(confirm) => confirm.await.map(drop).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The members of quorum queue `queue` as `node` reports them.
async fn members(node: &Node, queue: &str) -> Value {
    let q = node
        .api()
        .get(&format!("/api/queues/%2F/{queue}"))
        .await
        .json();
    q["members"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_after_the_log_was_purged_is_sent_every_definition_and_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| cluster(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    let api = nodes[0].api();
    ok(api.put("/api/vhosts/v2", "{}").await.status, "vhost");
    ok(
        api.put("/api/users/app", r#"{"password":"pw","tags":"monitoring"}"#)
            .await
            .status,
        "user",
    );
    ok(
        api.put(
            "/api/permissions/%2F/app",
            r#"{"configure":".*","write":".*","read":".*"}"#,
        )
        .await
        .status,
        "permissions",
    );
    ok(
        api.put(
            "/api/exchanges/%2F/dx",
            r#"{"type":"direct","durable":true}"#,
        )
        .await
        .status,
        "durable exchange",
    );
    ok(
        api.put(
            "/api/exchanges/%2F/tx",
            r#"{"type":"fanout","durable":false}"#,
        )
        .await
        .status,
        "transient exchange",
    );
    ok(
        api.put("/api/queues/%2F/dq", r#"{"durable":true}"#)
            .await
            .status,
        "classic queue",
    );
    ok(
        api.put("/api/queues/%2F/tq", r#"{"durable":false}"#)
            .await
            .status,
        "transient queue",
    );
    super::quorum::declare_quorum(&nodes[0], "qq", "").await;
    for (path, what) in [
        ("/api/bindings/%2F/e/dx/q/dq", "durable binding"),
        (
            "/api/bindings/%2F/e/tx/q/qq",
            "transient binding to the quorum queue",
        ),
        ("/api/bindings/%2F/e/tx/q/tq", "transient binding"),
    ] {
        ok(api.post(path, r#"{"routing_key":"k"}"#).await.status, what);
    }
    let defined = block_in_place(|| applied(&nodes[0]));
    {
        let all: Vec<_> = nodes.iter().collect();
        churn_until_purged(&nodes[0], &all, defined).await;
    }

    // Node 4 joins: the entries of the definitions are gone from every log.
    let addr = format!("127.0.0.1:{}", free_port());
    let fourth =
        block_in_place(|| Node::start_with(&dir.path().join("n4"), 4, &addr, &[], &extra(), ""));
    let added = block_in_place(|| nodes[1].cli(&["add-node", "4", &addr]));
    assert_eq!(added.unwrap().trim(), "ok");
    {
        let all: Vec<_> = nodes.iter().chain([&fourth]).collect();
        converged(&all, |d| {
            ["dq", "tq", "qq"].iter().all(|q| has(d, "queues", q))
                && has(d, "exchanges", "dx")
                && has(d, "exchanges", "tx")
                && has(d, "users", "app")
                && has(d, "vhosts", "v2")
                && d["bindings"].as_array().is_some_and(|b| b.len() == 3)
        })
        .await;
    }
    assert!(
        fourth
            .logs()
            .contains("installing a snapshot of the definitions"),
        "node 4 was sent the log, not a snapshot"
    );
    let perms = fourth.api().get("/api/permissions/%2F/app").await;
    ok(perms.status, "permissions on node 4");
    // The quorum queue and its group are known there as everywhere...
    assert_eq!(members(&fourth, "qq").await, members(&nodes[0], "qq").await);
    assert_eq!(
        members(&fourth, "qq").await.as_array().map(Vec::len),
        Some(3)
    );
    // ...and a publish routed on node 4 reaches it through the transient binding
    // (to the transient queue too, forwarded to its home, node 1).
    publish(&fourth, "tx", "").await.unwrap();
    queue_until(&nodes[0], "qq", "the publish on node 4", |q| {
        q["messages"] == 1
    })
    .await;
    queue_until(&nodes[0], "tq", "the publish on node 4, at the home", |q| {
        q["messages"] == 1
    })
    .await;
    // The durable binding routes there too, to a queue of node 1.
    publish(&fourth, "dx", "k").await.unwrap();
    queue_until(&nodes[0], "dq", "the publish on node 4, at the home", |q| {
        q["messages"] == 1
    })
    .await;

    // A node restarted after the purge: the same definitions, the transient ones too.
    block_in_place(|| nodes[1].restart());
    let all: Vec<_> = nodes.iter().chain([&fourth]).collect();
    converged(&all, |d| {
        has(d, "exchanges", "tx") && d["bindings"].as_array().is_some_and(|b| b.len() == 3)
    })
    .await;
    let purged = block_in_place(|| own_view(&nodes[1]).map(|v| v["purged_index"].clone()));
    assert!(
        purged.as_ref().and_then(Value::as_u64) > Some(defined),
        "node 2's log is purged past the definitions: {purged:?}"
    );
    publish(&nodes[1], "tx", "").await.unwrap();
    queue_until(&nodes[0], "qq", "the publish on restarted node 2", |q| {
        q["messages"] == 2
    })
    .await;
    queue_until(&nodes[0], "tq", "the publish on restarted node 2", |q| {
        q["messages"] == 2
    })
    .await;
    super::assert_no_panic(&nodes);
    assert!(!fourth.logs().contains("panicked"), "{}", fourth.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_while_the_others_purged_catches_up_through_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| cluster(dir.path()));
    let led = {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all))
    };
    let api = nodes[0].api();
    for (path, body, what) in [
        (
            "/api/users/gone-user",
            r#"{"password":"pw","tags":""}"#,
            "user",
        ),
        (
            "/api/exchanges/%2F/gone-x",
            r#"{"type":"direct","durable":true}"#,
            "exchange",
        ),
        (
            "/api/exchanges/%2F/tx",
            r#"{"type":"fanout","durable":false}"#,
            "transient exchange",
        ),
        ("/api/queues/%2F/gone-q", r#"{"durable":true}"#, "queue"),
        (
            "/api/queues/%2F/dq",
            r#"{"durable":true}"#,
            "queue homed on node 1",
        ),
    ] {
        ok(api.put(path, body).await.status, what);
    }
    ok(
        api.post("/api/bindings/%2F/e/tx/q/dq", r#"{"routing_key":""}"#)
            .await
            .status,
        "binding",
    );
    {
        let all: Vec<_> = nodes.iter().collect();
        converged(&all, |d| {
            has(d, "exchanges", "tx") && has(d, "queues", "dq")
        })
        .await;
    }
    // A node that neither leads nor takes the changes goes down.
    let down_at = (1..3).find(|i| nodes[*i].id != led).unwrap();
    let other_at = 3 - down_at;
    block_in_place(|| nodes[down_at].kill9());
    let (first, other) = (&nodes[0], &nodes[other_at]);
    let api = first.api();
    for path in [
        "/api/users/gone-user",
        "/api/exchanges/%2F/gone-x",
        "/api/exchanges/%2F/tx",
        "/api/queues/%2F/gone-q",
        "/api/queues/%2F/dq",
    ] {
        ok(api.delete(path).await.status, path);
    }
    // `dq` again, now homed on the other node; a quorum queue whose group has the
    // node that is down (a voter still); a transient exchange bound to it.
    ok(
        other
            .api()
            .put("/api/queues/%2F/dq", r#"{"durable":true}"#)
            .await
            .status,
        "queue homed on the other node",
    );
    super::quorum::declare_quorum(first, "qq", "").await;
    ok(
        api.put(
            "/api/exchanges/%2F/tx2",
            r#"{"type":"fanout","durable":false}"#,
        )
        .await
        .status,
        "transient exchange",
    );
    ok(
        api.post("/api/bindings/%2F/e/tx2/q/qq", r#"{"routing_key":""}"#)
            .await
            .status,
        "binding",
    );
    let down_id = nodes[down_at].id;
    let in_group = members(first, "qq").await;
    assert!(
        in_group
            .as_array()
            .unwrap()
            .iter()
            .any(|m| super::member_id(m) == Some(down_id)),
        "the down node is a member of the group: {in_group}"
    );
    let defined = block_in_place(|| applied(first));
    churn_until_purged(first, &[first, other], defined).await;

    block_in_place(|| nodes[down_at].restart());
    let (first, other) = (&nodes[0], &nodes[other_at]);
    let all: Vec<_> = nodes.iter().collect();
    converged(&all, |d| {
        !has(d, "users", "gone-user")
            && !has(d, "exchanges", "gone-x")
            && !has(d, "exchanges", "tx")
            && !has(d, "queues", "gone-q")
            && has(d, "exchanges", "tx2")
            && has(d, "queues", "qq")
            && has(d, "queues", "dq")
    })
    .await;
    let back = &nodes[down_at];
    assert!(
        back.logs()
            .contains("installing a snapshot of the definitions"),
        "node {down_id} was sent the log, not a snapshot"
    );
    // `dq` now lives on the other node, there too: a publish on the restarted node
    // is forwarded there.
    publish(back, "", "dq").await.unwrap();
    queue_until(other, "dq", "the publish, at the queue's new home", |q| {
        q["messages"] == 1
    })
    .await;
    // Its member of the quorum queue's group runs: a publish there through the
    // transient exchange is confirmed, and its own member applies it.
    publish(back, "tx2", "").await.unwrap();
    queue_until(
        back,
        "qq",
        "the publish, applied by the restarted node's member",
        |q| q["messages"] == 1,
    )
    .await;
    let group = first.api().get("/api/queues/%2F/qq").await.json()["group"].clone();
    let end = Instant::now() + DEADLINE;
    loop {
        let groups = block_in_place(|| own_view(back).map(|v| v["groups"].clone()));
        let runs = groups
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|gs| gs.iter().any(|g| g["id"] == group));
        if runs {
            break;
        }
        assert!(
            Instant::now() < end,
            "node {down_id} runs no member of group {group}: {groups:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_through_a_snapshot_keeps_the_queues_it_held_before() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| cluster(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
        ok(
            nodes[0]
                .api()
                .put("/api/queues/%2F/shared", r#"{"durable":true}"#)
                .await
                .status,
            "queue",
        );
        let defined = block_in_place(|| applied(&nodes[0]));
        churn_until_purged(&nodes[0], &all, defined).await;
    }
    // A single broker (no [cluster]) with a queue holding a message.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut fourth = block_in_place(|| Node::start(&dir.path().join("n4"), 0, &addr, &[]));
    ok(
        fourth
            .api()
            .put("/api/queues/%2F/legacy", r#"{"durable":true}"#)
            .await
            .status,
        "queue",
    );
    let r = fourth
        .api()
        .post(
            "/api/exchanges/%2F/amq.default/publish",
            r#"{"properties":{"delivery_mode":2},"routing_key":"legacy","payload":"kept","payload_encoding":"string"}"#,
        )
        .await;
    assert!(r.json()["routed"] == true, "{}", r.text());
    // It becomes node 4 and joins: the snapshot it is sent does not have `legacy`
    // yet, which must not be deleted (with its message) before it is declared.
    fourth.kill9();
    fourth.id = 4;
    fourth.cluster_extra = extra();
    block_in_place(|| fourth.restart());
    let added = block_in_place(|| nodes[0].cli(&["add-node", "4", &addr]));
    assert_eq!(added.unwrap().trim(), "ok");
    let all: Vec<_> = nodes.iter().chain([&fourth]).collect();
    converged(&all, |d| {
        has(d, "queues", "legacy") && has(d, "queues", "shared")
    })
    .await;
    assert!(
        fourth
            .logs()
            .contains("installing a snapshot of the definitions"),
        "node 4 was sent the log, not a snapshot"
    );
    queue_until(&fourth, "legacy", "its message kept", |q| {
        q["messages"] == 1
    })
    .await;
}
