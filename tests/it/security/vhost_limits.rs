//! RabbitMQ's virtual host limits, `max-queues` and `max-connections`: set over HTTP
//! (`/api/vhost-limits`) and with the CLI, refused in RabbitMQ's words in both
//! protocols, a vhost's `max-connections` overriding `server.max_connections_per_vhost`,
//! and exported and imported with the definitions as RabbitMQ's `vhost-limits`
//! parameters.

use crate::mgmt::http::{server, Http};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions, QueueOptions};
use actormq::ErrorCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queues_refuses_the_next_queue_in_both_protocols() {
    let s = server();
    let http = Http::guest(&s);
    let r = http
        .put(
            "/api/vhost-limits/%2F/max-queues",
            &json!({"value": 2}).to_string(),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        http.get("/api/vhost-limits").await.json(),
        json!([{"vhost": "/", "value": {"max-queues": 2}}])
    );
    let client = Client::connect(ConnectOptions::new(s.addr.to_string()))
        .await
        .unwrap();
    for q in ["a", "b"] {
        client
            .declare_queue(q, &QueueOptions::default())
            .await
            .unwrap();
    }
    // A redeclare of an existing queue is no new queue.
    client
        .declare_queue("a", &QueueOptions::default())
        .await
        .unwrap();
    let e = client
        .declare_queue("c", &QueueOptions::default())
        .await
        .expect_err("over max-queues");
    assert_eq!(e.code(), Some(ErrorCode::PreconditionFailed), "{e}");
    assert!(
        e.to_string()
            .contains("cannot declare queue 'c': queue limit in vhost '/' (2) is reached"),
        "{e}"
    );
    // AMQP: a channel error 406 with the same words.
    let url = format!("amqp://guest:guest@{}/%2f", s.handle().amqp_addrs()[0]);
    let conn = tokio::time::timeout(
        DEADLINE,
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let e = ch
        .queue_declare(
            "d".into(),
            Default::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect_err("over max-queues");
    let text = e.to_string();
    assert!(
        text.contains("PRECONDITION_FAILED - cannot declare queue 'd': queue limit in vhost '/' (2) is reached"),
        "{text}"
    );
    // Clearing the limit makes room.
    let r = http.delete("/api/vhost-limits/%2F/max-queues").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(http.get("/api/vhost-limits/%2F").await.json(), json!([]));
    client
        .declare_queue("c", &QueueOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_max_connections_overrides_the_broker_wide_default() {
    let s = server();
    let http = Http::guest(&s);
    let connect = || Client::connect(ConnectOptions::new(s.addr.to_string()));
    let r = http
        .put(
            "/api/vhost-limits/%2F/max-connections",
            &json!({"value": 1}).to_string(),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let _first = connect().await.expect("the vhost's one connection");
    let e = connect()
        .await
        .expect_err("over the vhost's max-connections");
    assert_eq!(e.code(), Some(ErrorCode::NotAllowed), "{e}");
    assert!(
        e.to_string().contains(
            "access to vhost '/' refused for user 'guest': connection limit (1) is reached"
        ),
        "{e}"
    );
    // 0: no connection at all; negative: no limit (RabbitMQ's values).
    http.put(
        "/api/vhost-limits/%2F/max-connections",
        &json!({"value": 0}).to_string(),
    )
    .await;
    assert!(connect().await.is_err());
    http.put(
        "/api/vhost-limits/%2F/max-connections",
        &json!({"value": -1}).to_string(),
    )
    .await;
    connect().await.expect("no limit again");
    assert_eq!(http.get("/api/vhost-limits").await.json(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_are_refused_naming_them() {
    let s = server();
    let http = Http::guest(&s);
    for (path, body, says) in [
        (
            "/api/vhost-limits/%2F/max-channels",
            json!({"value": 1}),
            "unknown vhost limit 'max-channels'",
        ),
        (
            "/api/vhost-limits/%2F/max-queues",
            json!({"value": "ten"}),
            "not an integer",
        ),
        (
            "/api/vhost-limits/%2F/max-queues",
            json!({}),
            "\\\"value\\\" is required",
        ),
    ] {
        let r = http.put(path, &body.to_string()).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text());
        assert!(r.text().contains(says), "{path} {body}: {}", r.text());
    }
    let r = http
        .put(
            "/api/vhost-limits/nope/max-queues",
            &json!({"value": 1}).to_string(),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Administrators only.
    http.put(
        "/api/users/watcher",
        &json!({"password": "pw", "tags": "monitoring"}).to_string(),
    )
    .await;
    let watcher = Http::new(&s).user("watcher", "pw");
    let r = watcher
        .put(
            "/api/vhost-limits/%2F/max-queues",
            &json!({"value": 1}).to_string(),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_travel_with_the_definitions_and_the_cli_sets_them() {
    let s = server();
    let http = Http::guest(&s);
    let url = format!("http://{}", s.handle().http_addrs()[0]);
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(crate::cli::BIN);
        cmd.args(args).args(["--http-url", &url]);
        crate::cli::run_cmd(&mut cmd, None)
    };
    let out = cli(&[
        "set-vhost-limits",
        r#"{"max-queues": 7, "max-connections": 9}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        http.get("/api/vhost-limits/%2F").await.json()[0]["value"],
        json!({"max-queues": 7, "max-connections": 9})
    );
    // Exported as RabbitMQ does: a runtime parameter of component vhost-limits.
    let defs = http.get("/api/definitions").await.json();
    let params = defs["parameters"].as_array().unwrap();
    assert!(
        params.iter().any(|p| p["component"] == "vhost-limits"
            && p["vhost"] == "/"
            && p["value"] == json!({"max-queues": 7, "max-connections": 9})),
        "{params:?}"
    );
    // A set replaces: a limit it does not name is cleared.
    let out = cli(&["set-vhost-limits", r#"{"max-queues": 3}"#]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        http.get("/api/vhost-limits/%2F").await.json()[0]["value"],
        json!({"max-queues": 3})
    );
    let out = cli(&["set-vhost-limits", r#"{"max-queue": 3}"#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-queue"));
    let out = cli(&["clear-vhost-limits"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(http.get("/api/vhost-limits").await.json(), json!([]));
    // Imported back from the file exported before.
    let r = http.post("/api/definitions", &defs.to_string()).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        http.get("/api/vhost-limits/%2F").await.json()[0]["value"],
        json!({"max-queues": 7, "max-connections": 9})
    );
    let bad = json!({"parameters": [{"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-queues": "x"}}]});
    let r = http.post("/api/definitions", &bad.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("vhost-limits of vhost '/'"),
        "{}",
        r.text()
    );
}

#[test]
fn limits_are_kept_across_a_restart() {
    use actormq::definitions::VhostLimits;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = actormq::Settings::default();
    settings.storage.data_dir = dir.path().to_path_buf();
    let start = || {
        actormq::Broker::builder()
            .workers(1)
            .storage(settings.storage.options())
            .start()
            .expect("the broker starts on its data directory")
    };
    let limits = VhostLimits {
        max_connections: Some(3),
        max_queues: Some(0),
    };
    let broker = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(broker.set_vhost_limits("/", limits)).unwrap();
    broker.shutdown();
    let broker = start();
    assert_eq!(
        broker.vhost_limits("/"),
        limits,
        "restored from the snapshot"
    );
    broker.shutdown();
}
