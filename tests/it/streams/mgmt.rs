//! The management API lists a stream with its type and its log's length.

use crate::mgmt::http::{server, Http};
use actormq::client::{Client, ConnectOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_shows_a_stream_with_its_type_and_length() {
    let server = server();
    let http = Http::guest(&server);
    let c = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();
    c.declare_queue("s", &super::stream()).await.unwrap();
    c.declare_queue("plain", &Default::default()).await.unwrap();
    super::publish_n(&c, "s", "m", 4).await;
    let mut reader = c.consume("s", &super::from("first")).await.unwrap();
    super::take(&mut reader, 4).await;
    let q = http.get("/api/queues/%2F/s").await.json();
    assert_eq!(q["type"], "stream", "{q}");
    assert_eq!(q["messages"], 4, "reading removed nothing: {q}");
    let plain = http.get("/api/queues/%2F/plain").await.json();
    assert_eq!(plain["type"], "classic");
}
