//! What RabbitMQ's own HTTP client, `rabbitmq_http_client` (under `rabbitmqadmin` v2),
//! needs of the API (found by its integration suite): fields it requires when it
//! decodes a list, per queue type `apply-to` values, the default exchange by its empty
//! name, 404s its idempotent deletes rely on, and endpoints it calls.

use super::http::{server, Http};
use crate::support::{eventually, DEADLINE};
use lapin::options::ConfirmSelectOptions;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

async fn lapin_as(server: &crate::support::TestServer, user: &str, pw: &str) -> Connection {
    let url = format!("amqp://{user}:{pw}@{}/%2f", server.handle().amqp_addrs()[0]);
    tokio::time::timeout(
        DEADLINE,
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("in time")
    .expect("lapin connects")
}

async fn listed(http: &Http, path: &str) -> Vec<Value> {
    let r = http.get(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json().as_array().expect("a list").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_shows_its_unconfirmed_count_and_a_node_its_applications_description() {
    let server = server();
    let http = Http::guest(&server);
    let conn = lapin_as(&server, "guest", "guest").await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    eventually("the channel is listed", || async {
        !listed(&http, "/api/channels").await.is_empty()
    })
    .await;
    let channels = listed(&http, "/api/channels").await;
    assert_eq!(channels[0]["messages_unconfirmed"], 0, "{channels:?}");
    assert_eq!(channels[0]["confirm"], true, "{channels:?}");
    let nodes = listed(&http, "/api/nodes").await;
    let app = &nodes[0]["applications"][0];
    assert!(app["description"].is_string(), "{app}");
}

/// The `apply-to` values of RabbitMQ 3.12+: a policy for one queue type leaves the
/// queues of the others alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_for_one_queue_type_applies_to_queues_of_that_type_only() {
    let server = server();
    let http = Http::guest(&server);
    for (name, kind) in [("c", "classic"), ("qq", "quorum"), ("s", "stream")] {
        let body = format!(r#"{{"durable":true,"arguments":{{"x-queue-type":"{kind}"}}}}"#);
        let r = http.put(&format!("/api/queues/%2F/{name}"), &body).await;
        assert_eq!(r.status, 201, "{name}: {}", r.text());
    }
    let policy_of = |name: &'static str| {
        let http = &http;
        async move {
            let q = http.get(&format!("/api/queues/%2F/{name}")).await.json();
            q["policy"].as_str().map(str::to_string)
        }
    };
    for (apply_to, only) in [
        ("quorum_queues", "qq"),
        ("classic_queues", "c"),
        ("streams", "s"),
    ] {
        let body = format!(
            r#"{{"pattern":".*","apply-to":"{apply_to}","definition":{{"max-length":100}}}}"#
        );
        let r = http.put("/api/policies/%2F/p", &body).await;
        assert!(
            r.status == 201 || r.status == 204,
            "{apply_to}: {}",
            r.text()
        );
        let shown = http.get("/api/policies/%2F/p").await.json();
        assert_eq!(shown["apply-to"], apply_to);
        for q in ["c", "qq", "s"] {
            let expected = (q == only).then(|| "p".to_string());
            assert_eq!(
                policy_of(q).await,
                expected,
                "apply-to {apply_to}, queue {q}"
            );
        }
    }
    let op = http
        .put(
            "/api/operator-policies/%2F/op",
            r#"{"pattern":".*","apply-to":"quorum_queues","definition":{"delivery-limit":13}}"#,
        )
        .await;
    assert_eq!(op.status, 201, "{}", op.text());
    let qq = http.get("/api/queues/%2F/qq").await.json();
    assert_eq!(qq["operator_policy"], "op", "{qq}");
    let c = http.get("/api/queues/%2F/c").await.json();
    assert_eq!(c["operator_policy"], Value::Null, "{c}");
    // A refused policy's reason starts as RabbitMQ's does.
    let bad = http
        .put(
            "/api/policies/%2F/bad",
            r#"{"pattern":".*","definition":{"foo":"bar"}}"#,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["reason"]
            .as_str()
            .unwrap()
            .starts_with("Validation failed"),
        "{}",
        bad.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_the_default_exchange_by_its_empty_name_is_routed() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(http.put("/api/queues/%2F/q.get", "{}").await.status, 201);
    let r = http
        .post(
            "/api/exchanges/%2F//publish",
            r#"{"routing_key":"q.get","payload":"hi","payload_encoding":"string","properties":{}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["routed"], true);
    let got = http
        .post(
            "/api/queues/%2F/q.get/get",
            r#"{"count":1,"ackmode":"ack_requeue_false","encoding":"auto"}"#,
        )
        .await
        .json();
    assert_eq!(got[0]["payload"], "hi", "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_permissions_that_are_not_there_is_404() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(http.put("/api/vhosts/v", "").await.status, 201);
    // The creator got permissions on the new vhost: the first clear clears them.
    assert_eq!(http.delete("/api/permissions/v/guest").await.status, 204);
    assert_eq!(http.delete("/api/permissions/v/guest").await.status, 404);
    let topic = r#"{"exchange":"amq.topic","write":".*","read":".*"}"#;
    assert_eq!(
        http.put("/api/topic-permissions/v/guest", topic)
            .await
            .status,
        201
    );
    assert_eq!(
        http.delete("/api/topic-permissions/v/guest").await.status,
        204
    );
    assert_eq!(
        http.delete("/api/topic-permissions/v/guest").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_connections_are_listed_and_closed_by_user_name() {
    let server = server();
    let http = Http::guest(&server);
    let r = http
        .put("/api/users/ann", r#"{"password":"pw","tags":"management"}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(http.put("/api/permissions/%2F/ann", "{}").await.status, 201);
    let ann = lapin_as(&server, "ann", "pw").await;
    let _guest = lapin_as(&server, "guest", "guest").await;
    eventually("both connections are listed", || async {
        listed(&http, "/api/connections").await.len() == 2
    })
    .await;
    let anns = listed(&http, "/api/connections/username/ann").await;
    assert_eq!(anns.len(), 1, "{anns:?}");
    assert_eq!(anns[0]["user"], "ann");
    let r = http
        .send(
            "DELETE",
            "/api/connections/username/ann",
            &[("X-Reason", "maintenance")],
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    eventually("ann's connection is closed", || async {
        !ann.status().connected()
    })
    .await;
    eventually("only guest's connection is left", || async {
        let left = listed(&http, "/api/connections").await;
        left.len() == 1 && left[0]["user"] == "guest"
    })
    .await;
    // None left: still 204; no such user: 404.
    assert_eq!(
        http.delete("/api/connections/username/ann").await.status,
        204
    );
    assert_eq!(
        http.delete("/api/connections/username/nobody").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_without_any_permission_are_listed() {
    let server = server();
    let http = Http::guest(&server);
    for u in ["with", "without"] {
        let r = http
            .put(&format!("/api/users/{u}"), r#"{"password":"pw","tags":""}"#)
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    assert_eq!(
        http.put("/api/permissions/%2F/with", "{}").await.status,
        201
    );
    let names: Vec<Value> = listed(&http, "/api/users/without-permissions")
        .await
        .iter()
        .map(|u| u["name"].clone())
        .collect();
    assert_eq!(names, ["without"]);
    // The path is not taken for a user named "without-permissions".
    assert_eq!(http.get("/api/users/without").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_listener_and_quorum_critical_checks_answer() {
    let server = server();
    let http = Http::guest(&server);
    for p in ["amqp", "AMQP", "http"] {
        let r = http
            .get(&format!("/api/health/checks/protocol-listener/{p}"))
            .await;
        assert_eq!(r.status, 200, "{p}: {}", r.text());
    }
    for p in ["stomp", "https%2Fnon-existent"] {
        let r = http
            .get(&format!("/api/health/checks/protocol-listener/{p}"))
            .await;
        assert_eq!(r.status, 503, "{p}: {}", r.text());
        assert_eq!(r.json()["status"], "failed");
    }
    let r = http.get("/api/health/checks/node-is-quorum-critical").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A vhost's limits are RabbitMQ's runtime parameter `vhost-limits` / `limits`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_limits_are_the_vhost_limits_runtime_parameter() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(http.put("/api/vhosts/lim", "").await.status, 201);
    let path = "/api/parameters/vhost-limits/lim/limits";
    assert_eq!(http.get(path).await.status, 404);
    let body = r#"{"vhost":"lim","component":"vhost-limits","name":"limits","value":{"max-connections":9988}}"#;
    let r = http.put(path, body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let limits = http.get("/api/vhost-limits/lim").await.json();
    assert_eq!(limits[0]["value"]["max-connections"], 9988, "{limits}");
    let all = listed(&http, "/api/parameters").await;
    assert!(
        all.iter().any(|p| p["component"] == "vhost-limits"
            && p["vhost"] == "lim"
            && p["value"]["max-connections"] == 9988),
        "{all:?}"
    );
    assert_eq!(
        listed(&http, "/api/parameters/vhost-limits/lim")
            .await
            .len(),
        1
    );
    let bad = http.put(path, r#"{"value":{"max-bananas":1}}"#).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(
        http.get("/api/parameters/federation-upstream").await.status,
        404
    );
    assert_eq!(http.delete(path).await.status, 204);
    assert_eq!(http.delete(path).await.status, 404);
    assert!(listed(&http, "/api/vhost-limits/lim").await.is_empty());
}
