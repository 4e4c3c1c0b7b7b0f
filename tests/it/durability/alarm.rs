//! `storage.disk_free_limit`: below it, publishers are blocked as by the memory
//! watermark (the Blocked notice says why); consumers go on.

use crate::support::{eventually, TestServer};
use actormq::client::{Client, ConnectOptions, QueueOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_free_limit_above_the_free_space_blocks_publishers() {
    let server = TestServer::with(|s| s.storage.disk_free_limit = u64::MAX);
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect("connects: the alarm blocks publishing, not connecting");
    eventually("the client is told it is blocked", || async {
        client.is_blocked()
    })
    .await;
    let reason = client.blocked_reason().unwrap_or_default();
    assert!(
        reason.contains("storage.disk_free_limit"),
        "the notice names the limit: {reason}"
    );
    // Requests other than publishes still work.
    client
        .declare_queue("q", &QueueOptions::durable())
        .await
        .expect("declares while blocked");
    assert!(server.handle().broker().memory().is_blocked());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_limit_no_alarm() {
    let server = TestServer::with(|s| s.storage.disk_free_limit = 0);
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();
    client
        .publish("", "nowhere", "x")
        .await
        .unwrap()
        .await
        .expect("confirmed");
    assert!(!client.is_blocked());
}
