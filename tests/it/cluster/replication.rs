//! A change made on a follower, through the management API (the cluster's name
//! included), reaches every node; a queue's messages live on its home node, and a
//! publish on another node is forwarded there.

use super::{converged, has, leader, three_nodes};
use actormq::client::{Client, ConnectOptions};
use tokio::task::block_in_place;

fn ok(status: u16, what: &str) {
    assert!((200..300).contains(&status), "{what}: HTTP {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_changed_on_a_follower_reach_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    let leader_id = block_in_place(|| leader(&all));
    let follower = nodes.iter().find(|n| n.id != leader_id).unwrap();
    let api = follower.api();
    // The cluster's name, before the rest: every node has it once they converge.
    ok(
        api.put("/api/cluster-name", r#"{"name":"eu-prod"}"#)
            .await
            .status,
        "cluster name",
    );
    let x = api
        .put(
            "/api/exchanges/%2F/orders",
            r#"{"type":"topic","durable":true}"#,
        )
        .await;
    ok(x.status, "exchange");
    ok(
        api.put("/api/queues/%2F/jobs", r#"{"durable":true}"#)
            .await
            .status,
        "queue",
    );
    let b = api
        .post(
            "/api/bindings/%2F/e/orders/q/jobs",
            r#"{"routing_key":"eu.#"}"#,
        )
        .await;
    ok(b.status, "binding");
    let u = api
        .put(
            "/api/users/alice",
            r#"{"password":"pw","tags":"monitoring"}"#,
        )
        .await;
    ok(u.status, "user");
    let p = api
        .put(
            "/api/policies/%2F/cap",
            r#"{"pattern":"^jobs$","definition":{"max-length":10},"apply-to":"queues"}"#,
        )
        .await;
    ok(p.status, "policy");
    let defs = converged(&all, |d| {
        has(d, "exchanges", "orders")
            && has(d, "queues", "jobs")
            && has(d, "users", "alice")
            && has(d, "policies", "cap")
            && d["bindings"].as_array().is_some_and(|b| !b.is_empty())
    })
    .await;
    assert_eq!(defs["bindings"][0]["routing_key"], "eu.#");
    for n in &nodes {
        let name = n.api().get("/api/cluster-name").await.json();
        assert_eq!(name["name"], "eu-prod", "node {}", n.id);
    }

    // The queue's messages live on the follower that declared it: a publish there is
    // confirmed, and so is one on another node, forwarded to the home.
    let home = Client::connect(ConnectOptions::new(follower.native.clone()))
        .await
        .unwrap();
    home.publish("orders", "eu.fr", "here")
        .await
        .unwrap()
        .await
        .unwrap();
    let other = nodes.iter().find(|n| n.id != follower.id).unwrap();
    let elsewhere = Client::connect(ConnectOptions::new(other.native.clone()))
        .await
        .unwrap();
    elsewhere
        .publish("orders", "eu.fr", "there")
        .await
        .unwrap()
        .await
        .expect("a publish to a queue of another node is forwarded and confirmed");

    // The same over AMQP with confirms: an ack.
    let amqp = lapin::Connection::connect(
        &format!("amqp://guest:guest@{}/%2f", other.amqp),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = amqp.create_channel().await.unwrap();
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "orders".into(),
            "eu.fr".into(),
            lapin::options::BasicPublishOptions::default(),
            b"there",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        confirm.is_ack(),
        "AMQP publish to a queue of another node: {confirm:?}"
    );
    // All three on the home, none on the other node (a stand-in holds nothing: that
    // node's own totals), which lists the home's figures (as RabbitMQ's API does).
    super::queue_until(follower, "jobs", "the three publishes on the home", |q| {
        q["messages"] == 3
    })
    .await;
    let totals = other.api().get("/api/overview").await.json();
    let held = &totals["queue_totals"]["messages"];
    assert_eq!(*held, 0, "the stand-in holds nothing: {totals}");
    let there = other.api().get("/api/queues/%2F/jobs").await.json();
    assert_eq!(there["messages"], 3, "the home's figures: {there}");

    // A delete on another node removes it everywhere.
    ok(
        other.api().delete("/api/queues/%2F/jobs").await.status,
        "delete",
    );
    converged(&all, |d| {
        !has(d, "queues", "jobs") && has(d, "exchanges", "orders")
    })
    .await;
}
