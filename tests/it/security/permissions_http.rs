//! Permissions over the management API: `/api/permissions` and
//! `/api/topic-permissions`, the resource operations checked against the caller's
//! permissions (401 not_authorised, as RabbitMQ's management plugin), and the
//! definitions round trip with patterns and topic permissions.

use super::permissions::ann;
use crate::mgmt::http::{server, Http};
use actormq::definitions::Permission;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_resource_operations_use_the_callers_permissions() {
    let server = server();
    ann(&server, Permission::new("^ann-", "^ann-", "^ann-").unwrap()).await;
    let admin = Http::guest(&server);
    assert_eq!(admin.put("/api/queues/%2F/jobs", "{}").await.status, 201);
    let ann = Http::new(&server).user("ann", "pw");
    let who = "in vhost '/' refused for user 'ann'";
    let r = ann.put("/api/queues/%2F/jobs2", "{}").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": "not_authorised", "reason": format!("ACCESS_REFUSED - configure access to queue 'jobs2' {who}")})
    );
    assert_eq!(ann.put("/api/queues/%2F/ann-q", "{}").await.status, 201);
    let r = ann.delete("/api/queues/%2F/jobs").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = ann.delete("/api/queues/%2F/jobs/contents").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("read access to queue 'jobs'"),
        "{}",
        r.text()
    );
    let r = ann.put("/api/exchanges/%2F/x", r#"{"type":"topic"}"#).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = ann
        .post(
            "/api/bindings/%2F/e/amq.direct/q/ann-q",
            r#"{"routing_key":"k"}"#,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("read access to exchange 'amq.direct'"),
        "{}",
        r.text()
    );
    let publish =
        r#"{"routing_key":"ann-q","payload":"x","payload_encoding":"string","properties":{}}"#;
    let r = ann
        .post("/api/exchanges/%2F/amq.default/publish", publish)
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("write access to exchange 'amq.default'"),
        "{}",
        r.text()
    );
    let get = r#"{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}"#;
    let r = ann.post("/api/queues/%2F/jobs/get", get).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(ann.post("/api/queues/%2F/ann-q/get", get).await.status, 200);
    // The administrator goes through its own permissions too (guest has '.*').
    let r = admin
        .post("/api/exchanges/%2F/amq.default/publish", publish)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_and_topic_permissions_are_managed_over_http() {
    let server = server();
    let admin = Http::guest(&server);
    let user = r#"{"password":"pw","tags":"management"}"#;
    assert_eq!(admin.put("/api/users/ann", user).await.status, 201);
    let body = r#"{"configure":"^ann-","write":"","read":".*"}"#;
    assert_eq!(
        admin.put("/api/permissions/%2F/ann", body).await.status,
        201
    );
    assert_eq!(
        admin.put("/api/permissions/%2F/ann", body).await.status,
        204
    );
    assert_eq!(
        admin.get("/api/permissions/%2F/ann").await.json(),
        json!({"user": "ann", "vhost": "/", "configure": "^ann-", "write": "", "read": ".*"})
    );
    let bad = admin
        .put("/api/permissions/%2F/ann", r#"{"write":"[a-"}"#)
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("invalid write pattern"),
        "{}",
        bad.text()
    );
    let topic = r#"{"exchange":"amq.topic","write":"^{username}\\.","read":".*"}"#;
    let r = admin.put("/api/topic-permissions/%2F/ann", topic).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let expected = json!([{"user": "ann", "vhost": "/", "exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"}]);
    assert_eq!(
        admin.get("/api/topic-permissions/%2F/ann").await.json(),
        expected
    );
    assert_eq!(admin.get("/api/topic-permissions").await.json(), expected);
    assert_eq!(
        admin.get("/api/users/ann/topic-permissions").await.json(),
        expected
    );
    assert_eq!(
        admin.get("/api/vhosts/%2F/topic-permissions").await.json(),
        expected
    );
    let r = admin
        .put(
            "/api/topic-permissions/%2F/ann",
            r#"{"exchange":"amq.topic","write":"(","read":""}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin.put("/api/topic-permissions/%2F/nobody", topic).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Only administrators manage permissions.
    let ann = Http::new(&server).user("ann", "pw");
    assert_eq!(ann.get("/api/permissions").await.status, 403);
    assert_eq!(
        ann.put("/api/topic-permissions/%2F/ann", topic)
            .await
            .status,
        403
    );
    assert_eq!(
        admin.delete("/api/topic-permissions/%2F/ann").await.status,
        204
    );
    assert_eq!(
        admin.get("/api/topic-permissions/%2F/ann").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_carry_patterns_and_topic_permissions_both_ways() {
    let one = server();
    let admin = Http::guest(&one);
    let user = r#"{"password":"pw","tags":"management"}"#;
    assert_eq!(admin.put("/api/users/ann", user).await.status, 201);
    let body = r#"{"configure":"^ann-","write":"^(ann-.*|amq\\.default)$","read":""}"#;
    assert_eq!(
        admin.put("/api/permissions/%2F/ann", body).await.status,
        201
    );
    let topic = r#"{"exchange":"amq.topic","write":"^{username}\\.","read":"^{vhost}\\."}"#;
    assert_eq!(
        admin
            .put("/api/topic-permissions/%2F/ann", topic)
            .await
            .status,
        201
    );
    let defs = admin.get("/api/definitions").await.json();
    let perms: Vec<&Value> = defs["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["user"] == "ann")
        .collect();
    assert_eq!(
        perms,
        vec![
            &json!({"user": "ann", "vhost": "/", "configure": "^ann-", "write": "^(ann-.*|amq\\.default)$", "read": ""})
        ]
    );
    assert_eq!(
        defs["topic_permissions"],
        json!([{"user": "ann", "vhost": "/", "exchange": "amq.topic", "write": "^{username}\\.", "read": "^{vhost}\\."}])
    );
    // Into another broker: the same permissions, enforced there.
    let two = server();
    let other = Http::guest(&two);
    let r = other.post("/api/definitions", &defs.to_string()).await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    let back = other.get("/api/definitions").await.json();
    assert_eq!(back["permissions"], defs["permissions"]);
    assert_eq!(back["topic_permissions"], defs["topic_permissions"]);
    let ann = Http::new(&two).user("ann", "pw");
    assert_eq!(ann.put("/api/queues/%2F/ann-q", "{}").await.status, 201);
    assert_eq!(ann.put("/api/queues/%2F/q", "{}").await.status, 401);
    // A bad pattern in a file is refused naming the item; nothing applied.
    let mut bad = defs.clone();
    bad["permissions"][0]["read"] = json!("(");
    let r = other.post("/api/definitions", &bad.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("permission of user"), "{}", r.text());
}
