//! Super streams: declared and deleted in one operation (native protocol, HTTP API,
//! CLI), laid out as RabbitMQ lays them out, and routed by the murmur3 rule of
//! RabbitMQ's stream clients from the native protocol and from AMQP alike.

use super::{connect, offsets, take, within};
use crate::cli::{run_cmd, BIN};
use crate::mgmt::http::{server, Http};
use actormq::broker::superstream::SuperStreamSpec;
use actormq::client::ConsumeOptions;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::process::Command;

/// (routing key, partition among 6), computed with an implementation of MurmurHash3
/// x86_32 (seed 104729) independent of the broker's, checked against the published
/// murmur3 test vectors.
const KEYS_OF_6: [(&str, usize); 8] = [
    ("hello", 3),
    ("order-1", 0),
    ("order-2", 2),
    ("amer", 2),
    ("emea", 4),
    ("ab", 0),
    ("abc", 3),
    ("invoice-42", 0),
];

fn find(list: &Value, pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|v| pred(v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_super_stream_is_declared_and_deleted_in_one_request_with_rabbitmq_s_layout() {
    let server = server();
    let http = Http::guest(&server);
    let c = connect(&server).await;
    let mut spec = SuperStreamSpec::with_partitions("inv", 3);
    spec.arguments
        .insert("x-max-length-bytes".into(), 1_000_000.into());
    c.declare_super_stream(&spec).await.unwrap();
    // Again with the same layout: nothing changes.
    c.declare_super_stream(&spec).await.unwrap();

    let x = http.get("/api/exchanges/%2F/inv").await.json();
    assert_eq!(x["type"], "x-super-stream", "{x}");
    assert_eq!(x["durable"], true);
    assert_eq!(x["arguments"]["x-super-stream"], true, "{x}");
    let queues = http.get("/api/queues/%2F").await.json();
    for i in 0..3 {
        let name = format!("inv-{i}");
        let q = find(&queues, |q| q["name"] == name.as_str());
        assert_eq!(q.len(), 1, "{name} in {queues}");
        assert_eq!(q[0]["type"], "stream");
        assert_eq!(q[0]["arguments"]["x-max-length-bytes"], 1_000_000);
        assert_eq!(q[0]["arguments"]["x-stream-partition-order"], i);
    }
    let bindings = http.get("/api/bindings/%2F").await.json();
    let mine = find(&bindings, |b| b["source"] == "inv");
    assert_eq!(mine.len(), 3, "{bindings}");
    for b in mine {
        let key: i64 = b["routing_key"].as_str().unwrap().parse().unwrap();
        assert_eq!(b["destination"], format!("inv-{key}").as_str());
        assert_eq!(b["arguments"]["x-stream-partition-order"], key, "{b}");
    }
    let shown = http.get("/api/stream/super-streams/%2F/inv").await.json();
    assert_eq!(
        shown["partitions"],
        serde_json::json!(["inv-0", "inv-1", "inv-2"])
    );

    // Bad layouts are refused with the reason, nothing is created.
    let bad = SuperStreamSpec::with_binding_keys("dup", &["a", "a"]);
    let e = c.declare_super_stream(&bad).await.unwrap_err().to_string();
    assert!(e.contains("given twice"), "{e}");
    assert_eq!(http.get("/api/exchanges/%2F/dup").await.status, 404);

    c.delete_super_stream("inv").await.unwrap();
    assert_eq!(http.get("/api/exchanges/%2F/inv").await.status, 404);
    let queues = http.get("/api/queues/%2F").await.json();
    assert!(find(&queues, |q| q["name"].as_str().unwrap().starts_with("inv-")).is_empty());
    let e = c.delete_super_stream("inv").await.unwrap_err().to_string();
    assert!(e.contains("no super stream 'inv'"), "{e}");
    // An exchange that is not a super stream is not deleted as one.
    c.declare_exchange("plain", "direct", &Default::default())
        .await
        .unwrap();
    let e = c
        .delete_super_stream("plain")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a super stream"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_keys_go_to_the_murmur3_partition_from_native_and_amqp_publishers() {
    let server = server();
    let c = connect(&server).await;
    c.declare_super_stream(&SuperStreamSpec::with_partitions("r", 6))
        .await
        .unwrap();
    // Half the keys over the native protocol, half over AMQP (lapin).
    for (key, _) in &KEYS_OF_6[..4] {
        let confirm = c.publish("r", key, key.to_string()).await.unwrap();
        within("a confirm", confirm).await.unwrap();
    }
    let addr = server.handle().amqp_addrs()[0];
    let amqp = Connection::connect(
        &format!("amqp://guest:guest@{addr}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = amqp.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (key, _) in &KEYS_OF_6[4..] {
        let confirm = ch
            .basic_publish(
                "r".into(),
                (*key).into(),
                BasicPublishOptions::default(),
                key.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        assert!(within("an AMQP confirm", confirm).await.unwrap().is_ack());
    }
    for p in 0..6 {
        let want: Vec<&str> = KEYS_OF_6
            .iter()
            .filter(|(_, i)| *i == p)
            .map(|(k, _)| *k)
            .collect();
        let q = format!("r-{p}");
        let mut reader = c.consume(&q, &super::from("first")).await.unwrap();
        let got = take(&mut reader, want.len()).await;
        assert_eq!(super::bodies(&got), want, "partition {p}");
        assert_eq!(offsets(&got), (0..want.len() as i64).collect::<Vec<_>>());
        reader.cancel().await.unwrap();
        let stats = server.handle().broker().session().queue_stats(&q).await;
        assert_eq!(
            stats.unwrap().ready,
            want.len() as u64,
            "nothing else in {q}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_and_deletes_a_key_routed_super_stream_over_the_http_api() {
    let server = server();
    let http = Http::guest(&server);
    let url = format!("http://{}", server.handle().http_addrs()[0]);
    let cli = |args: &[&str]| {
        let out = run_cmd(
            Command::new(BIN).args(args).args(["--http-url", &url]),
            None,
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = cli(&[
        "add-super-stream",
        "regions",
        "--binding-keys",
        "amer,emea",
        "--max-age",
        "7D",
    ]);
    assert!(ok, "{err}");
    let shown = http
        .get("/api/stream/super-streams/%2F/regions")
        .await
        .json();
    assert_eq!(
        shown["partitions"],
        serde_json::json!(["regions-amer", "regions-emea"])
    );
    let x = http.get("/api/exchanges/%2F/regions").await.json();
    assert_eq!(x["type"], "direct", "key routing, as RabbitMQ: {x}");
    let q = http.get("/api/queues/%2F/regions-emea").await.json();
    assert_eq!(q["arguments"]["x-max-age"], "7D");
    // A key names its partition.
    let c = connect(&server).await;
    within("confirm", c.publish("regions", "emea", "e").await.unwrap())
        .await
        .unwrap();
    let mut reader = c
        .consume(
            "regions-emea",
            &ConsumeOptions::prefetch(5).arg("x-stream-offset", "first"),
        )
        .await
        .unwrap();
    assert_eq!(super::bodies(&take(&mut reader, 1).await), ["e"]);
    reader.cancel().await.unwrap();
    // Both layouts over HTTP: 400 naming the rule, nothing declared.
    let r = http
        .put(
            "/api/stream/super-streams/%2F/both",
            r#"{"partitions": 2, "binding-keys": ["a"]}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not both"), "{}", r.text());
    assert_eq!(http.get("/api/exchanges/%2F/both").await.status, 404);
    // Neither or both layouts: refused by the command line.
    let (ok, err) = cli(&["add-super-stream", "x"]);
    assert!(!ok && err.contains("--partitions"), "{err}");
    let (ok, err) = cli(&["delete-super-stream", "regions"]);
    assert!(ok, "{err}");
    assert_eq!(http.get("/api/queues/%2F/regions-amer").await.status, 404);
    let (ok, err) = cli(&["delete-super-stream", "regions"]);
    assert!(!ok && err.contains("no super stream"), "{err}");
}
