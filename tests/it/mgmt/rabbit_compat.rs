//! Endpoints and fields RabbitMQ clients' management helpers call (found by
//! AMQPStorm's functional suite): the connections' `client_properties`, `use_regex`
//! name filters, users' bulk delete, the older node health check, the cluster's name
//! and the overview's `contexts`.

use super::http::{http_addr, server, Http};
use crate::support::{eventually, DEADLINE};
use lapin::{Connection, ConnectionProperties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lists_the_client_properties_its_client_sent() {
    let server = server();
    let http = Http::guest(&server);
    let url = format!("amqp://guest:guest@{}/%2f", server.handle().amqp_addrs()[0]);
    let _conn = tokio::time::timeout(
        DEADLINE,
        Connection::connect(
            &url,
            ConnectionProperties::default().with_connection_name("billing worker".into()),
        ),
    )
    .await
    .expect("in time")
    .expect("lapin connects");
    eventually("the connection is listed", || async {
        http.get("/api/connections")
            .await
            .json()
            .as_array()
            .is_some_and(|l| !l.is_empty())
    })
    .await;
    let list = http.get("/api/connections").await.json();
    let shown = &list[0]["client_properties"];
    assert_eq!(shown["connection_name"], "billing worker", "{shown}");
    assert_eq!(shown["product"], "lapin", "{shown}");
    assert_eq!(shown["capabilities"]["publisher_confirms"], true, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_filter_with_use_regex_is_a_regular_expression() {
    let server = server();
    let http = Http::guest(&server);
    for q in ["abc", "def", "xab"] {
        let r = http.put(&format!("/api/queues/%2F/{q}"), "{}").await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let names = |v: serde_json::Value| -> Vec<String> {
        let items = if v.is_array() { v } else { v["items"].clone() };
        items
            .as_array()
            .expect("a list")
            .iter()
            .map(|q| q["name"].as_str().unwrap().to_string())
            .collect()
    };
    let regex = http.get("/api/queues/%2F?name=%5Eab&use_regex=true").await;
    assert_eq!(names(regex.json()), ["abc"]);
    // Python's requests sends True as "True".
    let paged = http
        .get("/api/queues/%2F?name=%5Eab&use_regex=True&page=1&page_size=100")
        .await;
    assert_eq!(names(paged.json()), ["abc"]);
    // Without use_regex the name is a substring: "^ab" is in no name.
    let plain = http.get("/api/queues/%2F?name=ab").await;
    assert_eq!(names(plain.json()), ["abc", "xab"]);
    let bad = http.get("/api/queues/%2F?name=%28&use_regex=true").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_deleted_in_bulk() {
    let server = server();
    let http = Http::guest(&server);
    for u in ["u1", "u2", "u3"] {
        let r = http
            .put(&format!("/api/users/{u}"), r#"{"password":"pw","tags":""}"#)
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = http
        .post(
            "/api/users/bulk-delete",
            r#"{"users":["u1","u2","nobody"]}"#,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(http.get("/api/users/u1").await.status, 404);
    assert_eq!(http.get("/api/users/u2").await.status, 404);
    assert_eq!(http.get("/api/users/u3").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_node_check_the_cluster_name_and_the_contexts_answer() {
    let server = server();
    let http = Http::guest(&server);
    let overview = http.get("/api/overview").await.json();
    let node = overview["node"].as_str().expect("a node name").to_string();
    for path in [
        "/api/healthchecks/node".to_string(),
        "/api/healthchecks/node/".to_string(),
        format!("/api/healthchecks/node/{node}"),
    ] {
        let r = http.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["status"], "ok", "{path}");
    }
    assert_eq!(
        http.get("/api/healthchecks/node/other@host").await.status,
        404
    );
    assert_eq!(
        http.get("/api/cluster-name").await.json()["name"],
        overview["cluster_name"]
    );
    let port = http_addr(&server).port().to_string();
    let contexts = overview["contexts"].as_array().expect("contexts");
    assert!(
        contexts
            .iter()
            .any(|c| c["port"] == port.as_str() && c["node"] == node.as_str()),
        "{overview}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_can_be_renamed_by_an_administrator() {
    let server = server();
    let http = Http::guest(&server);
    let r = http.put("/api/cluster-name", r#"{"name":"eu-prod"}"#).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        http.get("/api/cluster-name").await.json()["name"],
        "eu-prod"
    );
    assert_eq!(
        http.get("/api/overview").await.json()["cluster_name"],
        "eu-prod"
    );
    let r = http.put("/api/cluster-name", r#"{"name":""}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("cluster name"), "{}", r.text());
    assert_eq!(
        http.get("/api/cluster-name").await.json()["name"],
        "eu-prod"
    );
}
