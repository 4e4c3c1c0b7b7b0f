//! Faults on real processes: the leader frozen (SIGSTOP) past the election timeout
//! then thawed, the whole cluster restarted, a follower's data directory lost, a
//! follower thawed while the others are frozen (its reads of queues, exchanges and
//! bindings wait for the cluster). After each, every node's definitions are equal and
//! hold every acknowledged change.

use super::{converged, has, leader, three_nodes, wait_for, Node};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions};
use actormq::message::FieldTable;
use serde_json::Value;
use std::time::Instant;
use tokio::task::block_in_place;

/// Declares durable queue `name` on `node`, retrying while the cluster has no leader
/// (each try waits up to the commit timeout).
async fn declare(node: &Node, name: &str) {
    let end = Instant::now() + DEADLINE * 2;
    loop {
        let s = node
            .api()
            .put(&format!("/api/queues/%2F/{name}"), r#"{"durable":true}"#)
            .await
            .status;
        if (200..300).contains(&s) {
            return;
        }
        assert!(Instant::now() < end, "declaring {name}: HTTP {s}");
    }
}

/// Node `id`'s own entry in a status.
fn view_of(status: &Value, id: u64) -> Option<Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n[0]["id"] == id)
        .map(|n| n[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_then_steps_down_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    let old = block_in_place(|| leader(&all));
    let at = nodes.iter().position(|n| n.id == old).unwrap();
    let old_term = block_in_place(|| nodes[at].status())
        .and_then(|s| view_of(&s, old))
        .and_then(|v| v["term"].as_u64())
        .expect("the leader's term");
    declare(&nodes[at], "before").await;
    converged(&all, |d| has(d, "queues", "before")).await;

    nodes[at].signal(libc::SIGSTOP);
    let survivors: Vec<_> = nodes.iter().filter(|n| n.id != old).collect();
    // The two elect one of them: the frozen leader's silence outlasted the timeout.
    let new = block_in_place(|| {
        wait_for("a new leader among the two", DEADLINE * 2, || {
            let l = survivors[0].status()?["leader"].as_u64()?;
            (l != old).then_some(l)
        })
    });
    declare(survivors[1], "during").await;
    nodes[at].signal(libc::SIGCONT);

    // The old leader hears the new term, follows, and is sent what it missed.
    block_in_place(|| {
        wait_for("the old leader follows the new one", DEADLINE * 2, || {
            let s = nodes[at].status()?;
            let me = view_of(&s, old)?;
            (s["leader"] == new && me["role"] == "follower" && me["term"].as_u64()? > old_term)
                .then_some(())
        })
    });
    converged(&all, |d| {
        has(d, "queues", "before") && has(d, "queues", "during")
    })
    .await;
    declare(&nodes[at], "after").await;
    converged(&all, |d| has(d, "queues", "after")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_restarts_with_its_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    let api = nodes[1].api();
    let x = api
        .put(
            "/api/exchanges/%2F/ledger",
            r#"{"type":"direct","durable":true}"#,
        )
        .await;
    assert_eq!(x.status, 201);
    declare(&nodes[2], "books").await;
    let b = api
        .post(
            "/api/bindings/%2F/e/ledger/q/books",
            r#"{"routing_key":"k"}"#,
        )
        .await;
    assert!((200..300).contains(&b.status), "HTTP {}", b.status);
    let before = {
        let all: Vec<_> = nodes.iter().collect();
        converged(&all, |d| {
            has(d, "queues", "books") && has(d, "exchanges", "ledger")
        })
        .await
    };

    // All three go down (one stopped gracefully, two killed), then come back.
    nodes[0].stop();
    for n in nodes.iter_mut().skip(1) {
        n.kill9();
    }
    for n in nodes.iter_mut() {
        block_in_place(|| n.restart());
    }
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    let after = converged(&all, |d| has(d, "queues", "books")).await;
    assert_eq!(
        after, before,
        "the definitions survived the restart unchanged"
    );
    declare(&nodes[0], "new").await;
    converged(&all, |d| has(d, "queues", "new")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lost_its_data_directory_rejoins_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    let old = {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all))
    };
    let at = nodes.iter().position(|n| n.id != old).unwrap();
    declare(&nodes[at], "kept").await;
    {
        let all: Vec<_> = nodes.iter().collect();
        converged(&all, |d| has(d, "queues", "kept")).await;
    }

    nodes[at].kill9();
    std::fs::remove_dir_all(nodes[at].data_dir()).unwrap();
    let other = nodes.iter().position(|n| n.id != nodes[at].id).unwrap();
    declare(&nodes[other], "while-away").await;
    block_in_place(|| nodes[at].restart());

    let all: Vec<_> = nodes.iter().collect();
    converged(&all, |d| {
        has(d, "queues", "kept") && has(d, "queues", "while-away")
    })
    .await;
    block_in_place(|| {
        wait_for("the emptied node has no lag", DEADLINE, || {
            let s = nodes[at].status()?;
            let v = s["nodes"].as_array()?.clone();
            (v.len() == 3 && v.iter().all(|n| n[1] == 0)).then_some(())
        })
    });
    // It knew it had lost its log (and held its vote), and no leader fell over it. Its
    // watch on what it has applied says "voting again" up to a poll (100 ms) after the
    // status shows no lag: waited for, not assumed.
    block_in_place(|| {
        wait_for("the emptied node votes again", DEADLINE, || {
            nodes[at].logs().contains("voting again").then_some(())
        })
    });
    let logs = nodes[at].logs();
    assert!(logs.contains("voter with an empty log"), "{logs}");
    for n in &nodes {
        assert!(
            !n.logs().contains("panicked"),
            "node {}: {}",
            n.id,
            n.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thawed_follower_answers_a_redeclare_from_the_cluster_state() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    let l = block_in_place(|| leader(&all));
    let leader_node = nodes.iter().find(|n| n.id == l).unwrap();
    let follower = nodes.iter().find(|n| n.id != l).unwrap();
    declare(leader_node, "q").await;
    converged(&all, |d| has(d, "queues", "q")).await;

    let third = nodes
        .iter()
        .find(|n| n.id != l && n.id != follower.id)
        .unwrap();

    // The follower misses the delete; then the two others freeze, so nothing can
    // bring it up to date while it is asked.
    follower.signal(libc::SIGSTOP);
    let s = leader_node.api().delete("/api/queues/%2F/q").await.status;
    assert_eq!(s, 204);
    leader_node.signal(libc::SIGSTOP);
    third.signal(libc::SIGSTOP);
    follower.signal(libc::SIGCONT);
    let api = follower.api();
    let mut redeclare = tokio::spawn(async move {
        api.put("/api/queues/%2F/q", r#"{"durable":true}"#)
            .await
            .status
    });
    // A stale answer would come now, from the follower's own definitions; the right
    // one waits for the cluster (given a moment to show which it is).
    let waited = std::time::Duration::from_secs(2);
    if let Ok(done) = tokio::time::timeout(waited, &mut redeclare).await {
        panic!("answered without the cluster: HTTP {:?}", done.unwrap());
    }
    leader_node.signal(libc::SIGCONT);
    third.signal(libc::SIGCONT);
    // Once the others are back: created again (201), not found "existing" (204).
    assert_eq!(redeclare.await.unwrap(), 201);
    converged(&all, |d| has(d, "queues", "q")).await;
}

/// True when the export lists a binding from exchange `source` to queue `queue` with
/// `key`.
fn bound(defs: &Value, source: &str, queue: &str, key: &str) -> bool {
    defs["bindings"].as_array().is_some_and(|a| {
        a.iter().any(|b| {
            b["source"] == source
                && b["destination"] == queue
                && b["destination_type"] == "queue"
                && b["routing_key"] == key
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thawed_follower_answers_exchange_and_binding_reads_from_the_cluster_state() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    let l = block_in_place(|| leader(&all));
    let leader_node = nodes.iter().find(|n| n.id == l).unwrap();
    let follower = nodes.iter().find(|n| n.id != l).unwrap();
    let third = nodes
        .iter()
        .find(|n| n.id != l && n.id != follower.id)
        .unwrap();
    let on_leader = leader_node.api();
    let direct = r#"{"type":"direct","durable":true}"#;
    for x in ["gone", "routes"] {
        let s = on_leader
            .put(&format!("/api/exchanges/%2F/{x}"), direct)
            .await;
        assert_eq!(s.status, 201, "exchange {x}");
    }
    declare(leader_node, "jobs").await;
    let b = on_leader
        .post(
            "/api/bindings/%2F/e/routes/q/jobs",
            r#"{"routing_key":"unbound"}"#,
        )
        .await;
    assert_eq!(b.status, 201);
    converged(&all, |d| {
        has(d, "exchanges", "gone") && bound(d, "routes", "jobs", "unbound")
    })
    .await;

    // The follower misses four changes, then the two others freeze.
    follower.signal(libc::SIGSTOP);
    assert_eq!(
        on_leader.delete("/api/exchanges/%2F/gone").await.status,
        204
    );
    let s = on_leader.put("/api/exchanges/%2F/fresh", direct).await;
    assert_eq!(s.status, 201);
    declare(leader_node, "late").await;
    let s = on_leader
        .delete("/api/bindings/%2F/e/routes/q/jobs/unbound")
        .await;
    assert_eq!(s.status, 204);
    leader_node.signal(libc::SIGSTOP);
    third.signal(libc::SIGSTOP);
    follower.signal(libc::SIGCONT);

    // Each read would be answered at once from the follower's stale definitions: the
    // exchange 'gone' as existing (204, not made again), 'fresh' as deleted though
    // unknown (nothing proposed), queue 'late' as NOT_FOUND, the binding as there.
    let api = follower.api();
    let redeclare =
        tokio::spawn(async move { api.put("/api/exchanges/%2F/gone", direct).await.status });
    let api = follower.api();
    let bind_late = tokio::spawn(async move {
        api.post(
            "/api/bindings/%2F/e/routes/q/late",
            r#"{"routing_key":"k"}"#,
        )
        .await
        .status
    });
    let native = |n: &Node| ConnectOptions::new(n.native.clone());
    let client = Client::connect(native(follower)).await.unwrap();
    let delete_fresh = tokio::spawn(async move { client.delete_exchange("fresh", false).await });
    let client = Client::connect(native(follower)).await.unwrap();
    let rebind = tokio::spawn(async move {
        client
            .bind_queue("jobs", "routes", "unbound", FieldTable::new())
            .await
    });
    let waited = std::time::Duration::from_secs(2);
    tokio::time::sleep(waited).await;
    for (what, done) in [
        ("redeclare of 'gone'", redeclare.is_finished()),
        ("bind to 'late'", bind_late.is_finished()),
        ("delete of 'fresh'", delete_fresh.is_finished()),
        ("rebind of 'unbound'", rebind.is_finished()),
    ] {
        assert!(!done, "{what} was answered without the cluster");
    }
    leader_node.signal(libc::SIGCONT);
    third.signal(libc::SIGCONT);

    // Answered from the cluster's state once the others are back.
    assert_eq!(redeclare.await.unwrap(), 201, "'gone' is declared again");
    assert_eq!(
        bind_late.await.unwrap(),
        201,
        "'late' exists in the cluster"
    );
    delete_fresh.await.unwrap().expect("'fresh' deleted");
    rebind.await.unwrap().expect("bound again");
    converged(&all, |d| {
        has(d, "exchanges", "gone")
            && !has(d, "exchanges", "fresh")
            && bound(d, "routes", "late", "k")
            && bound(d, "routes", "jobs", "unbound")
    })
    .await;
}
