//! Policies and operator policies over HTTP: they apply live to existing and new
//! queues with RabbitMQ's precedence rules, show in `/api/queues`, are refused naming
//! what is wrong, and survive a restart.

use super::http::{server, Http};
use crate::support::{eventually, TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions};
use serde_json::Value;

async fn publish(server: &TestServer, queue: &str, n: usize) {
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()).confirms(true))
        .await
        .unwrap();
    for i in 0..n {
        let confirm = client.publish("", queue, format!("m{i}")).await.unwrap();
        tokio::time::timeout(DEADLINE, confirm)
            .await
            .unwrap()
            .unwrap();
    }
    client.close().await.unwrap();
}

async fn queue(http: &Http, name: &str) -> Value {
    let r = http.get(&format!("/api/queues/%2F/{name}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_caps_existing_and_new_queues_live_with_rabbitmq_precedence() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(http.put("/api/queues/%2F/cap.old", "{}").await.status, 201);
    publish(&server, "cap.old", 5).await;
    assert_eq!(queue(&http, "cap.old").await["messages_ready"], 5);

    let put = http
        .put(
            "/api/policies/%2F/cap",
            r#"{"pattern":"^cap\\.","definition":{"max-length":2},"priority":1,"apply-to":"queues"}"#,
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    // Answered once the queues took it: the existing queue dropped its oldest at once.
    let q = queue(&http, "cap.old").await;
    assert_eq!(q["messages_ready"], 2, "{q}");
    assert_eq!(q["policy"], "cap");
    assert_eq!(q["operator_policy"], Value::Null);
    assert_eq!(q["effective_policy_definition"]["max-length"], 2);
    let listed = http.get("/api/policies/%2F").await.json();
    assert_eq!(listed[0]["name"], "cap", "{listed}");
    assert_eq!(listed[0]["apply-to"], "queues");
    assert_eq!(
        http.get("/api/policies/%2F/cap").await.json()["priority"],
        1
    );

    // A new queue gets it; a queue's own lower limit wins over it.
    assert_eq!(http.put("/api/queues/%2F/cap.new", "{}").await.status, 201);
    let own = r#"{"arguments":{"x-max-length":1}}"#;
    assert_eq!(http.put("/api/queues/%2F/cap.own", own).await.status, 201);
    publish(&server, "cap.new", 4).await;
    publish(&server, "cap.own", 4).await;
    assert_eq!(queue(&http, "cap.new").await["messages_ready"], 2);
    assert_eq!(queue(&http, "cap.own").await["messages_ready"], 1);

    // A higher-priority policy wins; an operator policy's lower limit merges in.
    let higher = r#"{"pattern":"^cap\\.new$","definition":{"max-length":3},"priority":5}"#;
    assert_eq!(http.put("/api/policies/%2F/more", higher).await.status, 201);
    let op = r#"{"pattern":".*","definition":{"max-length":10,"message-ttl":60000}}"#;
    let r = http.put("/api/operator-policies/%2F/ops", op).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let q = queue(&http, "cap.new").await;
    assert_eq!(q["policy"], "more", "{q}");
    assert_eq!(q["operator_policy"], "ops");
    assert_eq!(q["effective_policy_definition"]["max-length"], 3);
    assert_eq!(q["effective_policy_definition"]["message-ttl"], 60000);
    publish(&server, "cap.new", 4).await;
    assert_eq!(queue(&http, "cap.new").await["messages_ready"], 3);
    let op_low = r#"{"pattern":".*","definition":{"max-length":1}}"#;
    assert_eq!(
        http.put("/api/operator-policies/%2F/ops", op_low)
            .await
            .status,
        204
    );
    assert_eq!(queue(&http, "cap.new").await["messages_ready"], 1);

    // Cleared: the limits go with them.
    for path in [
        "/api/operator-policies/%2F/ops",
        "/api/policies/%2F/more",
        "/api/policies/%2F/cap",
    ] {
        assert_eq!(http.delete(path).await.status, 204, "{path}");
    }
    assert_eq!(http.delete("/api/policies/%2F/cap").await.status, 404);
    publish(&server, "cap.new", 4).await;
    let q = queue(&http, "cap.new").await;
    assert_eq!(q["messages_ready"], 5, "{q}");
    assert_eq!(q["policy"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_dead_letter_exchange_applies_to_a_running_queue() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(
        http.put("/api/exchanges/%2F/dlx", r#"{"type":"fanout"}"#)
            .await
            .status,
        201
    );
    for q in ["work", "dead"] {
        assert_eq!(
            http.put(&format!("/api/queues/%2F/{q}"), "{}").await.status,
            201
        );
    }
    assert_eq!(
        http.post("/api/bindings/%2F/e/dlx/q/dead", "{}")
            .await
            .status,
        201
    );
    let p = r#"{"pattern":"^work$","definition":{"dead-letter-exchange":"dlx","max-length":1},"apply-to":"queues"}"#;
    assert_eq!(http.put("/api/policies/%2F/dl", p).await.status, 201);
    publish(&server, "work", 3).await;
    assert_eq!(queue(&http, "work").await["messages_ready"], 1);
    eventually("the dropped messages are dead-lettered", || async {
        queue(&http, "dead").await["messages_ready"] == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_naming_what_is_wrong() {
    let server = server();
    let http = Http::guest(&server);
    for (body, needle) in [
        (
            r#"{"pattern":"^a","definition":{"max-lenght":1}}"#,
            "max-lenght",
        ),
        (
            r#"{"pattern":"(","definition":{"max-length":1}}"#,
            "regular expression",
        ),
        (
            r#"{"pattern":"^a","definition":{"max-length":"ten"}}"#,
            "'max-length'",
        ),
        (r#"{"pattern":"^a","definition":{}}"#, "empty"),
        (r#"{"definition":{"max-length":1}}"#, "pattern"),
        (
            r#"{"pattern":"^a","definition":{"max-length":1},"apply-to":"topics"}"#,
            "apply-to",
        ),
    ] {
        let r = http.put("/api/policies/%2F/p", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.json()["reason"].as_str().unwrap().contains(needle),
            "{body}: {}",
            r.text()
        );
    }
    let r = http
        .put(
            "/api/operator-policies/%2F/o",
            r#"{"pattern":"^a","definition":{"dead-letter-exchange":"x"}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        http.get("/api/policies").await.json(),
        serde_json::json!([])
    );
    // A management user without policymaker may read but not set policies.
    let user = r#"{"password":"pw","tags":"management"}"#;
    assert_eq!(http.put("/api/users/ann", user).await.status, 201);
    assert_eq!(http.put("/api/permissions/%2F/ann", "{}").await.status, 201);
    let ann = Http::new(&server).user("ann", "pw");
    assert_eq!(ann.get("/api/policies/%2F").await.status, 200);
    let ok = r#"{"pattern":"^a","definition":{"max-length":1}}"#;
    assert_eq!(ann.put("/api/policies/%2F/p", ok).await.status, 403);
    let maker = r#"{"password":"pw","tags":"policymaker"}"#;
    assert_eq!(http.put("/api/users/ann", maker).await.status, 204);
    assert_eq!(ann.put("/api/policies/%2F/p", ok).await.status, 201);
    assert_eq!(
        ann.put("/api/operator-policies/%2F/p", ok).await.status,
        403
    );
}

#[test]
fn policies_are_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let start = || {
        let p = path.clone();
        TestServer::with(move |s| {
            s.http.bind = vec!["127.0.0.1:0".into()];
            s.storage.data_dir = p;
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = start();
    rt.block_on(async {
        let http = Http::guest(&server);
        let p = r#"{"pattern":"^kept$","definition":{"max-length":2},"apply-to":"queues"}"#;
        assert_eq!(http.put("/api/policies/%2F/cap", p).await.status, 201);
        assert_eq!(http.put("/api/queues/%2F/kept", "{}").await.status, 201);
    });
    drop(server);
    let server = start();
    rt.block_on(async {
        let http = Http::guest(&server);
        assert_eq!(http.get("/api/policies/%2F/cap").await.status, 200);
        publish(&server, "kept", 4).await;
        let q = queue(&http, "kept").await;
        assert_eq!(q["messages_ready"], 2, "{q}");
        assert_eq!(q["policy"], "cap");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_gives_an_exchange_its_alternate_exchange_unless_it_has_one() {
    let server = server();
    let http = Http::guest(&server);
    for (x, kind) in [
        ("main", "direct"),
        ("own", "direct"),
        ("ae", "fanout"),
        ("ae2", "fanout"),
    ] {
        let body = match x {
            "own" => r#"{"type":"direct","arguments":{"alternate-exchange":"ae2"}}"#.to_string(),
            _ => format!(r#"{{"type":"{kind}"}}"#),
        };
        assert_eq!(
            http.put(&format!("/api/exchanges/%2F/{x}"), &body)
                .await
                .status,
            201
        );
    }
    for (q, x) in [("unrouted", "ae"), ("unrouted2", "ae2")] {
        assert_eq!(
            http.put(&format!("/api/queues/%2F/{q}"), "{}").await.status,
            201
        );
        let bind = http
            .post(&format!("/api/bindings/%2F/e/{x}/q/{q}"), "{}")
            .await;
        assert_eq!(bind.status, 201);
    }
    let p = r#"{"pattern":"^(main|own)$","definition":{"alternate-exchange":"ae"},"apply-to":"exchanges"}"#;
    assert_eq!(http.put("/api/policies/%2F/ae", p).await.status, 201);
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()).confirms(true))
        .await
        .unwrap();
    for x in ["main", "own"] {
        let confirm = client.publish(x, "nowhere", "lost?").await.unwrap();
        tokio::time::timeout(DEADLINE, confirm)
            .await
            .unwrap()
            .unwrap();
    }
    // The exchange's own argument wins over the policy.
    assert_eq!(queue(&http, "unrouted").await["messages_ready"], 1);
    assert_eq!(queue(&http, "unrouted2").await["messages_ready"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_expires_policies_apply_to_running_queues() {
    let server = server();
    let http = Http::guest(&server);
    for q in ["ttl.q", "exp.q"] {
        assert_eq!(
            http.put(&format!("/api/queues/%2F/{q}"), "{}").await.status,
            201
        );
    }
    let ttl = r#"{"pattern":"^ttl\\.","definition":{"message-ttl":50},"apply-to":"queues"}"#;
    assert_eq!(http.put("/api/policies/%2F/ttl", ttl).await.status, 201);
    publish(&server, "ttl.q", 3).await;
    eventually("messages published under the TTL policy expire", || async {
        queue(&http, "ttl.q").await["messages"] == 0
    })
    .await;
    let exp = r#"{"pattern":"^exp\\.","definition":{"expires":100},"apply-to":"queues"}"#;
    assert_eq!(http.put("/api/policies/%2F/exp", exp).await.status, 201);
    eventually("the unused queue expires under the policy", || async {
        http.get("/api/queues/%2F/exp.q").await.status == 404
    })
    .await;
    assert_eq!(http.get("/api/queues/%2F/ttl.q").await.status, 200);
}
