//! The node, channels, consumers, health checks, sorting, and getting and publishing
//! messages over HTTP, against real clients (lapin over AMQP, the native client).

use super::http::{enc, http_addr, server, Http};
use crate::support::{eventually, DEADLINE};
use actormq::client::{Client, ConnectOptions};
use actormq::ConsumeOptions;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|v| v[field].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_and_health_checks_answer_as_rabbitmq() {
    let server = server();
    let http = Http::guest(&server);
    let nodes = http.get("/api/nodes").await.json();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    let node = &nodes[0];
    let name = node["name"].as_str().unwrap();
    assert_eq!(
        name,
        http.get("/api/overview").await.json()["node"],
        "{node}"
    );
    assert!(node["uptime"].is_u64());
    assert_eq!(node["mem_alarm"], false);
    assert_eq!(node["disk_free_alarm"], false);
    assert!(node["mem_limit"].is_u64() && node["disk_free_limit"].is_u64());
    assert!(node["disk_free"].as_u64().is_some_and(|f| f > 0), "{node}");
    assert!(node["running"].as_bool().unwrap());
    if cfg!(target_os = "linux") {
        assert!(node["fd_used"].as_u64().is_some_and(|n| n > 0), "{node}");
    }
    assert_eq!(
        http.get(&format!("/api/nodes/{}", enc(name))).await.status,
        200
    );
    assert_eq!(http.get("/api/nodes/rabbit@elsewhere").await.status, 404);

    let local = http.get("/api/health/checks/local-alarms").await;
    assert_eq!(local.status, 200, "{}", local.text());
    assert_eq!(local.json()["status"], "ok");
    let port = http_addr(&server).port();
    let listening = http
        .get(&format!("/api/health/checks/port-listener/{port}"))
        .await;
    assert_eq!(listening.status, 200, "{}", listening.text());
    assert_eq!(listening.json()["port"], port);
    // Port 1 is privileged: no test broker listens there.
    let missing = http.get("/api/health/checks/port-listener/1").await;
    assert_eq!(missing.status, 503);
    assert_eq!(missing.json()["status"], "failed");
    assert_eq!(missing.json()["missing"], 1);
    let bad = http.get("/api/health/checks/port-listener/http").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_consumers_of_amqp_and_native_connections_are_listed() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(http.put("/api/queues/%2F/watched", "{}").await.status, 201);
    let url = format!("amqp://guest:guest@{}/%2f", server.handle().amqp_addrs()[0]);
    let amqp = tokio::time::timeout(
        DEADLINE,
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let _first = amqp.create_channel().await.unwrap();
    let second = amqp.create_channel().await.unwrap();
    second
        .basic_qos(7, BasicQosOptions::default())
        .await
        .unwrap();
    let _consumer = second
        .basic_consume(
            "watched".into(),
            "amqp-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let native = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();
    let _native_consumer = native
        .consume(
            "watched",
            &ConsumeOptions {
                consumer_tag: "native-consumer".into(),
                no_ack: true,
                ..ConsumeOptions::default()
            },
        )
        .await
        .unwrap();

    eventually("three channels listed", || async {
        http.get("/api/channels")
            .await
            .json()
            .as_array()
            .unwrap()
            .len()
            == 3
    })
    .await;
    let channels = http.get("/api/channels?sort=name").await.json();
    let amqp_conn = http
        .get("/api/connections")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["protocol"] == "AMQP 0-9-1")
        .expect("the AMQP connection")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let second_name = format!("{amqp_conn} (2)");
    let ch2 = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == second_name.as_str())
        .unwrap_or_else(|| panic!("{second_name} in {channels}"));
    assert_eq!(ch2["number"], 2);
    assert_eq!(ch2["consumer_count"], 1, "{ch2}");
    assert_eq!(ch2["prefetch_count"], 7);
    assert_eq!(ch2["user"], "guest");
    assert_eq!(ch2["vhost"], "/");
    assert_eq!(ch2["connection_details"]["name"], amqp_conn.as_str());
    let one = http
        .get(&format!("/api/channels/{}", enc(&second_name)))
        .await;
    assert_eq!(one.status, 200, "{}", one.text());
    let of_conn = http
        .get(&format!("/api/connections/{}/channels", enc(&amqp_conn)))
        .await
        .json();
    assert_eq!(names(&of_conn, "name").len(), 2, "{of_conn}");
    assert_eq!(
        http.get("/api/vhosts/%2F/channels")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let consumers = http
        .get("/api/consumers/%2F?sort=consumer_tag")
        .await
        .json();
    assert_eq!(
        names(&consumers, "consumer_tag"),
        ["amqp-consumer", "native-consumer"],
        "{consumers}"
    );
    let c = &consumers[0];
    assert_eq!(c["queue"]["name"], "watched");
    assert_eq!(c["queue"]["vhost"], "/");
    assert_eq!(c["ack_required"], true);
    assert_eq!(c["prefetch_count"], 7);
    assert_eq!(c["active"], true);
    assert_eq!(c["channel_details"]["number"], 2);
    assert_eq!(c["channel_details"]["connection_name"], amqp_conn.as_str());
    let n = &consumers[1];
    assert_eq!(n["ack_required"], false);
    assert_eq!(n["channel_details"]["number"], 1, "{n}");
    assert_eq!(
        http.get("/api/consumers")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(http.get("/api/consumers/nowhere").await.status, 404);

    // One queue's page lists its own consumers, as RabbitMQ's (nameko's suite counts
    // a queue's consumers so).
    let watched = http.get("/api/queues/%2F/watched").await.json();
    let mut tags = names(&watched["consumer_details"], "consumer_tag");
    tags.sort();
    assert_eq!(tags, ["amqp-consumer", "native-consumer"], "{watched}");
    let detail = &watched["consumer_details"].as_array().unwrap();
    let amqp_one = detail.iter().find(|c| c["consumer_tag"] == "amqp-consumer");
    assert_eq!(amqp_one.unwrap()["channel_details"]["number"], 2);
    assert_eq!(http.put("/api/queues/%2F/idle", "{}").await.status, 201);
    let idle = http.get("/api/queues/%2F/idle").await.json();
    assert_eq!(idle["consumer_details"], serde_json::json!([]), "{idle}");
    amqp.close(200, "bye".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_published_and_got_over_http_as_rabbitmq_does() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(http.put("/api/queues/%2F/peek", "{}").await.status, 201);
    let publish = |body: &'static str| {
        let http = http.clone();
        async move {
            http.post("/api/exchanges/%2F/amq.default/publish", body)
                .await
        }
    };
    let r = publish(
        r#"{"routing_key":"peek","payload":"hello","payload_encoding":"string",
            "properties":{"content_type":"text/plain","headers":{"k":"v"}}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["routed"], true);
    // Bytes 0x00 0xff: not UTF-8, so answered as base64.
    let r = publish(
        r#"{"routing_key":"peek","payload":"AP8=","payload_encoding":"base64","properties":{}}"#,
    )
    .await;
    assert_eq!(r.json()["routed"], true, "{}", r.text());
    let r = publish(
        r#"{"routing_key":"nowhere","payload":"x","payload_encoding":"string","properties":{}}"#,
    )
    .await;
    assert_eq!(r.json()["routed"], false);
    let bad = publish(r#"{"routing_key":"peek","payload":"x","payload_encoding":"hex"}"#).await;
    assert_eq!(bad.status, 400);
    // As over AMQP, a message may not claim another user.
    let spoof =
        publish(r#"{"routing_key":"peek","payload":"x","properties":{"user_id":"admin"}}"#).await;
    assert_eq!(spoof.status, 400, "{}", spoof.text());
    assert!(spoof.text().contains("authenticated user was 'guest'"));
    let missing = http
        .post(
            "/api/exchanges/%2F/no-such-exchange/publish",
            r#"{"routing_key":"","payload":"x","payload_encoding":"string","properties":{}}"#,
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text());

    let get = |body: &'static str| {
        let http = http.clone();
        async move { http.post("/api/queues/%2F/peek/get", body).await }
    };
    let r =
        get(r#"{"count":5,"ackmode":"ack_requeue_true","encoding":"auto","truncate":50000}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let msgs = r.json();
    assert_eq!(msgs.as_array().unwrap().len(), 2, "{msgs}");
    let m = &msgs[0];
    assert_eq!(m["payload"], "hello");
    assert_eq!(m["payload_encoding"], "string");
    assert_eq!(m["payload_bytes"], 5);
    assert_eq!(m["exchange"], "");
    assert_eq!(m["routing_key"], "peek");
    assert_eq!(m["redelivered"], false);
    assert_eq!(m["message_count"], 1);
    assert_eq!(m["properties"]["content_type"], "text/plain");
    assert_eq!(m["properties"]["headers"]["k"], "v", "{m}");
    assert_eq!(msgs[1]["payload"], "AP8=");
    assert_eq!(msgs[1]["payload_encoding"], "base64");

    // Requeued: both still there, now redelivered; truncate cuts the payload shown.
    let q = http.get("/api/queues/%2F/peek").await.json();
    assert_eq!(q["messages_ready"], 2, "{q}");
    let r = get(r#"{"count":1,"ackmode":"reject_requeue_true","encoding":"base64","truncate":2}"#)
        .await
        .json();
    assert_eq!(r[0]["redelivered"], true, "{r}");
    assert_eq!(r[0]["payload"], "aGU=", "'he' in base64");
    assert_eq!(r[0]["payload_bytes"], 5);
    let r = get(r#"{"count":1,"ackmode":"ack_requeue_false","encoding":"auto"}"#)
        .await
        .json();
    assert_eq!(r[0]["payload"], "hello");
    assert_eq!(
        http.get("/api/queues/%2F/peek").await.json()["messages_ready"],
        1
    );

    for bad in [
        r#"{"count":0,"ackmode":"ack_requeue_true"}"#,
        r#"{"count":1,"ackmode":"keep_it"}"#,
        r#"{"ackmode":"ack_requeue_true"}"#,
    ] {
        let r = get(bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request");
    }
    let none = http
        .post(
            "/api/queues/%2F/no-such-queue/get",
            r#"{"count":1,"ackmode":"ack_requeue_true"}"#,
        )
        .await;
    assert_eq!(none.status, 404, "{}", none.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_sort_by_any_field_and_reverse() {
    let server = server();
    let http = Http::guest(&server);
    for (name, depth) in [("b", 3), ("a", 1), ("c", 2)] {
        assert_eq!(
            http.put(&format!("/api/queues/%2F/{name}"), "{}")
                .await
                .status,
            201
        );
        for _ in 0..depth {
            let body = format!(
                r#"{{"routing_key":"{name}","payload":"x","payload_encoding":"string","properties":{{}}}}"#
            );
            let r = http
                .post("/api/exchanges/%2F/amq.default/publish", &body)
                .await;
            assert_eq!(r.json()["routed"], true);
        }
    }
    let by = |q: &'static str| {
        let http = http.clone();
        async move { names(&http.get(q).await.json(), "name") }
    };
    assert_eq!(by("/api/queues?sort=name").await, ["a", "b", "c"]);
    assert_eq!(
        by("/api/queues?sort=name&sort_reverse=true").await,
        ["c", "b", "a"]
    );
    assert_eq!(by("/api/queues/%2F?sort=messages").await, ["a", "c", "b"]);
    let page = http
        .get("/api/queues?sort=messages&sort_reverse=true&page=1&page_size=2")
        .await
        .json();
    assert_eq!(names(&page["items"], "name"), ["b", "c"], "{page}");
    let xs = by("/api/exchanges/%2F?sort=name&sort_reverse=true").await;
    let mut sorted = xs.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(xs, sorted);
}
