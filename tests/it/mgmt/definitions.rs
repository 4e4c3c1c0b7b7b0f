//! `/api/definitions`: export and import in RabbitMQ's format, between two brokers,
//! idempotent, all or nothing, and RabbitMQ's own SHA-256 password hashes.

use super::http::{server, Http};
use base64ct::{Base64, Encoding};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The definitions without what differs between two brokers by nature.
fn comparable(mut d: Value) -> Value {
    for k in [
        "product_version",
        "rabbit_version",
        "rabbitmq_version",
        "product_name",
    ] {
        d.as_object_mut().unwrap().remove(k);
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_move_between_brokers_and_import_twice_as_once() {
    let a = server();
    let http = Http::guest(&a);
    for (path, body) in [
        ("/api/vhosts/prod", ""),
        (
            "/api/users/app",
            r#"{"password":"pw","tags":["management"]}"#,
        ),
        ("/api/permissions/prod/app", "{}"),
        ("/api/exchanges/prod/orders", r#"{"type":"topic"}"#),
        (
            "/api/queues/prod/billing",
            r#"{"arguments":{"x-max-length":100}}"#,
        ),
        (
            "/api/policies/prod/ttl",
            r#"{"pattern":"^billing$","definition":{"message-ttl":60000},"apply-to":"queues","priority":2}"#,
        ),
    ] {
        let r = http.put(path, body).await;
        assert!(r.status == 201 || r.status == 204, "{path}: {}", r.text());
    }
    let r = http
        .post(
            "/api/bindings/prod/e/orders/q/billing",
            r#"{"routing_key":"order.*"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    let exported = http.get("/api/definitions").await.json();
    assert_eq!(exported["product_name"], "actormq");
    let app = exported["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "app")
        .unwrap();
    assert_eq!(app["hashing_algorithm"], "pbkdf2_sha256_phc");
    assert_eq!(app["tags"], json!(["management"]));
    assert!(exported["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!({"user":"app","vhost":"prod","configure":".*","write":".*","read":".*"})));
    assert_eq!(exported["queues"][0]["name"], "billing", "{exported}");
    assert_eq!(exported["queues"][0]["vhost"], "prod");
    assert_eq!(exported["exchanges"][0]["type"], "topic");
    assert_eq!(exported["bindings"][0]["routing_key"], "order.*");
    assert_eq!(exported["bindings"][0]["destination_type"], "queue");
    assert_eq!(exported["policies"][0]["definition"]["message-ttl"], 60000);

    // A vhost's own file: no users, items without vhost.
    let one = http.get("/api/definitions/prod").await.json();
    assert!(one.get("users").is_none(), "{one}");
    assert_eq!(one["queues"][0]["name"], "billing");
    assert!(one["queues"][0].get("vhost").is_none());

    let b = server();
    let other = Http::guest(&b);
    let text = exported.to_string();
    for _ in 0..2 {
        let r = other.post("/api/definitions", &text).await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let again = other.get("/api/definitions").await.json();
    assert_eq!(comparable(again), comparable(exported));
    // The imported user logs in with its password; the policy applies.
    let app = Http::new(&b).user("app", "pw");
    assert_eq!(app.get("/api/whoami").await.status, 200);
    let q = other.get("/api/queues/prod/billing").await.json();
    assert_eq!(q["policy"], "ttl", "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_bad_item_names_it_and_applies_nothing() {
    let s = server();
    let http = Http::guest(&s);
    let file = json!({
        "vhosts": [{"name": "staging"}],
        "queues": [{"name": "fine", "vhost": "staging", "durable": true, "auto_delete": false, "arguments": {}}],
        "bindings": [{"source": "missing", "vhost": "staging", "destination": "fine",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}]
    });
    let r = http.post("/api/definitions", &file.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let reason = r.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("binding from 'missing'"), "{reason}");
    assert!(reason.contains("nothing imported"), "{reason}");
    assert_eq!(http.get("/api/vhosts/staging").await.status, 404);

    let bad_arg =
        json!({"queues": [{"name": "q", "vhost": "/", "arguments": {"x-max-length": "ten"}}]});
    let r = http.post("/api/definitions", &bad_arg.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("queue 'q'"), "{}", r.text());
    assert_eq!(http.get("/api/queues/%2F/q").await.status, 404);
    // A new queue is checked as a declare is: a quorum queue must be durable.
    let quorum = json!({"queues": [{"name": "qq", "vhost": "/", "durable": false,
                                    "arguments": {"x-queue-type": "quorum"}}]});
    let r = http.post("/api/definitions", &quorum.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("invalid property 'non-durable' for queue 'qq' in vhost '/'"),
        "{}",
        r.text()
    );
    assert_eq!(http.post("/api/definitions", "{not json").await.status, 400);
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password)).
fn rabbit_hash(password: &str) -> String {
    let salt = [0x12u8, 0x34, 0x56, 0x78];
    let mut raw = salt.to_vec();
    raw.extend_from_slice(
        &Sha256::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize(),
    );
    Base64::encode_string(&raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_exported_from_rabbitmq_log_in_with_their_passwords() {
    let s = server();
    let http = Http::guest(&s);
    let hash = rabbit_hash("from-rabbit");
    let file = json!({
        "rabbit_version": "3.12.4",
        "users": [{"name": "ops", "password_hash": hash,
                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": "administrator", "limits": {}}],
        "permissions": [{"user": "ops", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
    });
    let r = http.post("/api/definitions", &file.to_string()).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let ops = Http::new(&s).user("ops", "from-rabbit");
    assert_eq!(
        ops.get("/api/whoami").await.json()["tags"],
        json!(["administrator"])
    );
    assert_eq!(
        Http::new(&s)
            .user("ops", "wrong")
            .get("/api/whoami")
            .await
            .status,
        401
    );
    // Exported back in RabbitMQ's form.
    let users = http.get("/api/definitions").await.json()["users"].clone();
    let ops = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "ops")
        .unwrap();
    assert_eq!(ops["password_hash"], hash.as_str());
    assert_eq!(ops["hashing_algorithm"], "rabbit_password_hashing_sha256");

    let md5 = json!({"users": [{"name": "old", "password_hash": "abc", "hashing_algorithm": "rabbit_password_hashing_md5", "tags": ""}]});
    let r = http.post("/api/definitions", &md5.to_string()).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("user 'old'"), "{}", r.text());
}
