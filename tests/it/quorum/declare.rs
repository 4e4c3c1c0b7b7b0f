//! A quorum queue is declared from every front end with RabbitMQ's rules: always
//! durable, never exclusive nor auto-delete, some arguments refused, each with
//! RabbitMQ's PRECONDITION_FAILED text; it is listed with `type: "quorum"`.

use super::{client, quorum};
use crate::durability::within;
use crate::mgmt::http::{server, Http};
use actormq::client::{ClientError, QueueOptions};
use actormq::ErrorCode;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

/// The code and text of a refused native declare.
async fn refused(c: &actormq::client::Client, name: &str, o: QueueOptions) -> String {
    match c.declare_queue(name, &o).await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::PreconditionFailed, "{message}");
            message
        }
        other => panic!("declare of {name} should be refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_client_declares_a_quorum_queue_and_breaking_its_rules_is_refused() {
    let s = server();
    let c = client(&s.addr.to_string()).await;
    let cases = [
        (
            QueueOptions::new().arg("x-queue-type", "quorum"),
            "invalid property 'non-durable' for queue 'bad' in vhost '/'",
        ),
        (
            quorum().exclusive(),
            "invalid property 'exclusive-owner' for queue 'bad' in vhost '/'",
        ),
        (
            quorum().auto_delete(),
            "invalid property 'auto-delete' for queue 'bad' in vhost '/'",
        ),
        (
            quorum().arg("x-max-priority", 5i64),
            "invalid arg 'x-max-priority' for queue 'bad' in vhost '/'",
        ),
        (
            quorum().arg("x-queue-mode", "lazy"),
            "invalid arg 'x-queue-mode' for queue 'bad' in vhost '/'",
        ),
        (
            quorum().arg("x-overflow", "reject-publish-dlx"),
            "invalid arg 'x-overflow' with value 'reject-publish-dlx' for queue 'bad' in vhost '/'",
        ),
    ];
    for (options, text) in cases {
        // Each refusal closes only the operation: the connection goes on.
        assert_eq!(refused(&c, "bad", options).await, text);
    }
    let e = refused(&c, "bad", quorum().arg("x-quorum-initial-group-size", 0i64)).await;
    assert!(e.contains("'x-quorum-initial-group-size'"), "{e}");
    let info = c
        .declare_queue(
            "orders",
            &quorum()
                .arg("x-quorum-initial-group-size", 3i64)
                .arg("x-delivery-limit", 5i64)
                .arg("x-max-length", 1000i64)
                .arg("x-overflow", "reject-publish"),
        )
        .await
        .expect("a valid quorum declare");
    assert_eq!(info.messages, 0);
    // Redeclared as it is: fine; without its type: inequivalent, as in RabbitMQ.
    c.declare_queue(
        "orders",
        &quorum()
            .arg("x-quorum-initial-group-size", 3i64)
            .arg("x-delivery-limit", 5i64)
            .arg("x-max-length", 1000i64)
            .arg("x-overflow", "reject-publish"),
    )
    .await
    .unwrap();
    let e = refused(&c, "orders", QueueOptions::durable()).await;
    assert!(e.contains("inequivalent arg"), "{e}");

    let http = Http::guest(&s);
    let q = http.get("/api/queues/%2F/orders").await.json();
    assert_eq!(q["type"], "quorum", "{q}");
    assert_eq!(q["durable"], true);
    // RabbitMQ's quorum fields: this node leads and is the only member.
    assert_eq!(q["leader"], q["node"], "{q}");
    assert_eq!(q["members"], serde_json::json!([q["node"].clone()]), "{q}");
    assert_eq!(http.get("/api/queues/%2F/bad").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_client_gets_rabbitmq_s_refusal_and_declares_a_quorum_queue() {
    let s = server();
    let addr = s.handle().amqp_addrs()[0];
    let url = format!("amqp://guest:guest@{addr}/%2f");
    let conn = within(
        "connect",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("lapin connects");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let ch = conn.create_channel().await.unwrap();
    let e = ch
        .queue_declare("qq".into(), QueueDeclareOptions::default(), args.clone())
        .await
        .expect_err("a non-durable quorum queue is refused");
    let text = e.to_string();
    assert!(text.contains("PRECONDITION_FAILED"), "{text}");
    assert!(
        text.contains("invalid property 'non-durable' for queue 'qq' in vhost '/'"),
        "{text}"
    );
    // The channel closed; the connection goes on.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "qq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("a durable quorum queue");
    let q = Http::guest(&s).get("/api/queues/%2F/qq").await.json();
    assert_eq!(q["type"], "quorum", "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_a_definitions_import_declare_quorum_queues_with_the_same_rules() {
    let s = server();
    let http = Http::guest(&s);
    let r = http
        .put(
            "/api/queues/%2F/hq",
            r#"{"durable":false,"arguments":{"x-queue-type":"quorum"}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("invalid property 'non-durable' for queue 'hq' in vhost '/'"),
        "{}",
        r.text()
    );
    let r = http
        .put(
            "/api/queues/%2F/hq",
            r#"{"durable":true,"arguments":{"x-queue-type":"quorum","x-delivery-limit":2}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    let file = serde_json::json!({"queues": [
        {"name": "imported", "vhost": "/", "durable": true, "auto_delete": false,
         "arguments": {"x-queue-type": "quorum", "x-quorum-initial-group-size": 3}}
    ]});
    let r = http.post("/api/definitions", &file.to_string()).await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let bad = serde_json::json!({"queues": [
        {"name": "prio", "vhost": "/", "durable": true, "auto_delete": false,
         "arguments": {"x-queue-type": "quorum", "x-max-priority": 4}}
    ]});
    let r = http.post("/api/definitions", &bad.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("invalid arg 'x-max-priority'"),
        "{}",
        r.text()
    );

    let all = http.get("/api/queues").await.json();
    let types: Vec<(String, String)> = all
        .as_array()
        .expect("a list")
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(types.contains(&("hq".into(), "quorum".into())), "{types:?}");
    assert!(
        types.contains(&("imported".into(), "quorum".into())),
        "{types:?}"
    );
    assert!(!types.iter().any(|(n, _)| n == "prio"), "{types:?}");
}

#[tokio::test]
async fn an_embedded_session_declares_a_quorum_queue() {
    let dir = tempfile::tempdir().unwrap();
    let broker = actormq::Broker::builder()
        .workers(2)
        .storage(actormq::storage::StorageOptions::in_dir(dir.path()))
        .start()
        .expect("starts");
    let s = broker.session();
    let e = s
        .declare_queue("eq", &QueueOptions::new().arg("x-queue-type", "quorum"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PreconditionFailed);
    assert_eq!(
        e.message(),
        "invalid property 'non-durable' for queue 'eq' in vhost '/'"
    );
    s.declare_queue("eq", &quorum()).await.expect("declared");
    broker.shutdown();
}

#[test]
fn the_command_line_declares_a_quorum_queue_and_shows_the_refusal() {
    let s = crate::support::TestServer::start();
    let err = crate::cli::fails(&s, &["declare-queue", "cq", "--arg", "x-queue-type=quorum"]);
    assert!(
        err.contains("PRECONDITION_FAILED")
            && err.contains("invalid property 'non-durable' for queue 'cq' in vhost '/'"),
        "{err}"
    );
    crate::cli::ok(
        &s,
        &[
            "declare-queue",
            "cq",
            "--durable",
            "--arg",
            "x-queue-type=quorum",
            "--arg",
            "x-delivery-limit=3",
        ],
    );
}
