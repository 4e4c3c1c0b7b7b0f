//! Queues, exchanges, bindings, vhosts, users and permissions over HTTP, checked
//! against what the native client sees.

use super::http::{server, Http};
use crate::support::{eventually, DEADLINE};
use actormq::client::{Client, ConnectOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_over_http_shows_its_depth_is_purged_and_deleted() {
    let server = server();
    let http = Http::guest(&server);
    let r = http
        .put(
            "/api/queues/%2F/jobs",
            r#"{"durable":true,"arguments":{"x-max-length":100}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        http.put(
            "/api/queues/%2F/jobs",
            r#"{"durable":true,"arguments":{"x-max-length":100}}"#
        )
        .await
        .status,
        204
    );
    let clash = http
        .put("/api/queues/%2F/jobs", r#"{"durable":false}"#)
        .await;
    assert_eq!(clash.status, 400, "{}", clash.text());
    assert_eq!(clash.json()["error"], "bad_request");

    let client = Client::connect(ConnectOptions::new(server.addr.to_string()).confirms(true))
        .await
        .unwrap();
    for i in 0..3 {
        let confirm = client.publish("", "jobs", format!("m{i}")).await.unwrap();
        tokio::time::timeout(DEADLINE, confirm)
            .await
            .unwrap()
            .unwrap();
    }
    let q = http.get("/api/queues/%2F/jobs").await.json();
    assert_eq!(q["name"], "jobs");
    assert_eq!(q["vhost"], "/");
    assert_eq!(q["durable"], true);
    assert_eq!(q["arguments"]["x-max-length"], 100);
    assert_eq!(q["messages_ready"], 3, "{q}");
    assert_eq!(q["messages"], 3);
    assert_eq!(q["messages_unacknowledged"], 0);
    assert_eq!(q["consumers"], 0);

    let page = http
        .get("/api/queues?page=1&page_size=10&name=job")
        .await
        .json();
    assert_eq!(page["item_count"], 1, "{page}");
    assert_eq!(page["items"][0]["messages"], 3);

    let refused = http.delete("/api/queues/%2F/jobs?if-empty=true").await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(
        http.delete("/api/queues/%2F/jobs/contents").await.status,
        204
    );
    eventually("the purge shows", || async {
        http.get("/api/queues/%2F/jobs").await.json()["messages"] == 0
    })
    .await;
    assert_eq!(http.delete("/api/queues/%2F/jobs").await.status, 204);
    let gone = http.get("/api/queues/%2F/jobs").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"], "not_found");
    assert_eq!(http.delete("/api/queues/%2F/jobs").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_and_bindings_round_trip() {
    let server = server();
    let http = Http::guest(&server);
    let r = http
        .put(
            "/api/exchanges/%2F/events",
            r#"{"type":"topic","durable":false}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let x = http.get("/api/exchanges/%2F/events").await.json();
    assert_eq!(x["type"], "topic");
    assert_eq!(x["durable"], false);
    let d = http.get("/api/exchanges/%2F/amq.default").await.json();
    assert_eq!(d["name"], "");
    assert_eq!(
        http.put("/api/queues/%2F/audit", r#"{"durable":false}"#)
            .await
            .status,
        201
    );
    let r = http
        .post(
            "/api/bindings/%2F/e/events/q/audit",
            r#"{"routing_key":"orders.*"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let list = http.get("/api/bindings/%2F/e/events/q/audit").await.json();
    assert_eq!(list[0]["routing_key"], "orders.*", "{list}");
    assert_eq!(list[0]["destination_type"], "queue");
    let all = http.get("/api/bindings/%2F").await.json();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    let r = http
        .delete("/api/bindings/%2F/e/events/q/audit/orders.*")
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        http.get("/api/bindings/%2F")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(http.delete("/api/exchanges/%2F/events").await.status, 204);
    assert_eq!(http.get("/api/exchanges/%2F/events").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_users_and_permissions_round_trip() {
    let server = server();
    let admin = Http::guest(&server);
    assert_eq!(admin.put("/api/vhosts/staging", "").await.status, 201);
    assert_eq!(admin.put("/api/vhosts/staging", "").await.status, 204);
    let names: Vec<String> = admin
        .get("/api/vhosts")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["/", "staging"]);

    let r = admin
        .put("/api/users/ops", r#"{"password":"pw","tags":"management"}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let u = admin.get("/api/users/ops").await.json();
    assert_eq!(u["tags"][0], "management");
    assert!(u["password_hash"].as_str().unwrap().starts_with("$pbkdf2"));
    let bad = admin
        .put("/api/permissions/staging/ops", r#"{"configure":"("}"#)
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("invalid configure pattern"),
        "{}",
        bad.text()
    );
    let r = admin
        .put(
            "/api/permissions/staging/ops",
            r#"{"configure":".*","write":".*","read":".*"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let p = admin.get("/api/permissions/staging/ops").await.json();
    assert_eq!(p["vhost"], "staging");

    // A management user sees and changes its own vhosts only.
    let ops = Http::new(&server).user("ops", "pw");
    let seen = ops.get("/api/vhosts").await.json();
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["name"], "staging");
    assert_eq!(
        ops.put("/api/queues/staging/work", r#"{"durable":false}"#)
            .await
            .status,
        201
    );
    assert_eq!(
        ops.get("/api/queues/staging").await.json()[0]["name"],
        "work"
    );
    assert_eq!(ops.get("/api/queues/%2F").await.status, 403);
    assert_eq!(ops.put("/api/vhosts/mine", "").await.status, 403);

    assert_eq!(
        admin.delete("/api/permissions/staging/ops").await.status,
        204
    );
    assert_eq!(admin.get("/api/permissions/staging/ops").await.status, 404);
    assert_eq!(ops.get("/api/queues/staging").await.status, 403);
    assert_eq!(admin.delete("/api/users/ops").await.status, 204);
    assert_eq!(admin.get("/api/users/ops").await.status, 404);
    assert_eq!(
        Http::new(&server)
            .user("ops", "pw")
            .get("/api/whoami")
            .await
            .status,
        401
    );
    assert_eq!(admin.delete("/api/vhosts/staging").await.status, 204);
    assert_eq!(admin.get("/api/vhosts/staging").await.status, 404);
}
