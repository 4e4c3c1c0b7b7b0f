//! `get` (with ack, requeue, no-ack) and the JSON output of `get` and `consume`.

use super::{deadline, fails, ok, ready, run_bytes};
use crate::support::TestServer;
use serde_json::{json, Value};

#[test]
fn get_acks_requeues_or_takes_without_ack() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    ok(
        &server,
        &["publish", "--routing-key", "q", "--confirm", "first"],
    );
    ok(
        &server,
        &["publish", "--routing-key", "q", "--confirm", "second"],
    );
    let peek = ["get", "--queue", "q", "--ack-mode", "requeue"];
    assert_eq!(ok(&server, &peek), "first\n");
    assert_eq!(ready(&server, "q"), 2, "requeued");
    assert_eq!(ok(&server, &["get", "--queue", "q"]), "first\n");
    assert_eq!(ready(&server, "q"), 1, "acked");
    let take = ["get", "--queue", "q", "--ack-mode", "no-ack"];
    assert_eq!(ok(&server, &take), "second\n");
    assert_eq!(ready(&server, "q"), 0);
    let err = fails(&server, &["get", "--queue", "q"]);
    assert_eq!(err, "error: queue 'q' is empty\n");
    let err = fails(&server, &["get", "--queue", "missing"]);
    assert!(err.starts_with("error: NOT_FOUND"), "{err}");
}

#[test]
fn json_output_carries_routing_properties_headers_and_the_body() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    ok(
        &server,
        &[
            "publish",
            "--routing-key",
            "q",
            "--content-type",
            "text/plain",
            "--header",
            "attempt=2",
            "--confirm",
            "two\nlines",
        ],
    );
    let out = run_bytes(
        &server,
        &[
            "publish",
            "--routing-key",
            "q",
            "--confirm",
            "--body-file",
            "-",
        ],
        Some(&[0xff, 0x00, 0x10]),
    );
    assert!(out.status.success(), "{out:?}");
    let peek = [
        "get",
        "--queue",
        "q",
        "--ack-mode",
        "requeue",
        "--format",
        "json",
    ];
    let got: Value = serde_json::from_str(&ok(&server, &peek)).unwrap();
    assert_eq!(
        got,
        json!({
            "exchange": "",
            "routing_key": "q",
            "redelivered": false,
            "properties": {"content_type": "text/plain"},
            "headers": {"attempt": 2},
            "body": "two\nlines",
            "body_encoding": "text",
            "message_count": 1,
        })
    );
    let t = deadline();
    let consume = [
        "consume",
        "--queue",
        "q",
        "--count",
        "2",
        "--timeout",
        &t,
        "--format",
        "json",
    ];
    let out = ok(&server, &consume);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["redelivered"], json!(true), "requeued by the get");
    assert_eq!(lines[0]["body"], json!("two\nlines"));
    assert_eq!(lines[1]["body"], json!("/wAQ"));
    assert_eq!(lines[1]["body_encoding"], json!("base64"));
    assert_eq!(lines[1]["headers"], json!({}));
}
