//! Virtual host limits (`/api/vhost-limits`) are the cluster's, as RabbitMQ keeps
//! them in its replicated metadata: set through one node, every node lists them and
//! enforces them. Before, they were set on the node asked only (the others neither
//! listed nor enforced them).

use super::{queue_until, three_led};
use crate::support::DEADLINE;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_limits_set_through_one_node_are_listed_and_enforced_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let r = nodes[0]
        .api()
        .put(
            "/api/vhost-limits/%2F/max-queues",
            &json!({"value": 1}).to_string(),
        )
        .await;
    assert!((200..300).contains(&r.status), "set: {}", r.text());
    let want = json!([{"vhost": "/", "value": {"max-queues": 1}}]);
    for n in &nodes {
        let end = Instant::now() + DEADLINE;
        loop {
            let got = n.api().get("/api/vhost-limits").await.json();
            if got == want {
                break;
            }
            assert!(Instant::now() < end, "node {}: {got}", n.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = nodes[1]
        .api()
        .put("/api/queues/%2F/first", r#"{"durable":true}"#)
        .await;
    assert!((200..300).contains(&r.status), "first: {}", r.text());
    queue_until(&nodes[2], "first", "the first queue known", |q| {
        q["name"] == "first"
    })
    .await;
    // Another node refuses the next queue, in RabbitMQ's words.
    let r = nodes[2]
        .api()
        .put("/api/queues/%2F/second", r#"{"durable":true}"#)
        .await;
    assert!(!(200..300).contains(&r.status), "second: {}", r.text());
    assert!(
        r.text()
            .contains("cannot declare queue 'second': queue limit in vhost '/' (1) is reached"),
        "{}",
        r.text()
    );
    // Cleared through another node: the queue is taken anywhere.
    let r = nodes[2]
        .api()
        .delete("/api/vhost-limits/%2F/max-queues")
        .await;
    assert!((200..300).contains(&r.status), "clear: {}", r.text());
    let end = Instant::now() + DEADLINE;
    loop {
        let r = nodes[0]
            .api()
            .put("/api/queues/%2F/second", r#"{"durable":true}"#)
            .await;
        if (200..300).contains(&r.status) {
            break;
        }
        assert!(Instant::now() < end, "second after the clear: {}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    super::assert_no_panic(&nodes);
}
