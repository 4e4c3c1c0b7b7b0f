//! Topology commands: bind and unbind (to queues and exchanges), conditional deletes,
//! and the refusal of a server-named queue.

use super::{fails, ok, ready, run};
use crate::support::TestServer;

fn publish(server: &TestServer, exchange: &str, key: &str, body: &str) -> String {
    ok(
        server,
        &[
            "publish",
            "--exchange",
            exchange,
            "--routing-key",
            key,
            "--confirm",
            body,
        ],
    )
}

#[test]
fn unbind_stops_routing_to_a_queue() {
    let server = TestServer::start();
    ok(&server, &["declare-exchange", "ex", "--type", "direct"]);
    ok(&server, &["declare-queue", "q"]);
    let binding = ["--exchange", "ex", "--queue", "q", "--routing-key", "k"];
    ok(&server, &[&["bind"][..], &binding].concat());
    publish(&server, "ex", "k", "routed");
    assert_eq!(ready(&server, "q"), 1);
    ok(&server, &[&["unbind"][..], &binding].concat());
    let summary = publish(&server, "ex", "k", "dropped");
    assert_eq!(
        summary.trim_end(),
        "published 1, confirmed 1, nacked 0, unroutable 1"
    );
    assert_eq!(ready(&server, "q"), 1);
}

#[test]
fn exchanges_bind_to_exchanges_and_unbind() {
    let server = TestServer::start();
    ok(&server, &["declare-exchange", "front", "--type", "topic"]);
    ok(&server, &["declare-exchange", "back", "--type", "fanout"]);
    ok(&server, &["declare-queue", "q"]);
    ok(&server, &["bind", "--exchange", "back", "--queue", "q"]);
    let e2e = [
        "--exchange",
        "front",
        "--to-exchange",
        "back",
        "--routing-key",
        "orders.*",
    ];
    ok(&server, &[&["bind"][..], &e2e].concat());
    publish(&server, "front", "orders.new", "through two exchanges");
    publish(&server, "front", "audit.new", "not bound");
    assert_eq!(ready(&server, "q"), 1);
    ok(&server, &[&["unbind"][..], &e2e].concat());
    publish(&server, "front", "orders.new", "unbound");
    assert_eq!(ready(&server, "q"), 1);
    let err = fails(
        &server,
        &["bind", "--exchange", "front", "--to-exchange", "missing"],
    );
    assert!(err.starts_with("error: NOT_FOUND"), "{err}");
}

#[test]
fn conditional_deletes_refuse_a_queue_in_use_or_not_empty() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    publish(&server, "", "q", "m");
    let err = fails(&server, &["delete-queue", "q", "--if-empty"]);
    assert!(err.starts_with("error: PRECONDITION_FAILED"), "{err}");
    assert_eq!(ready(&server, "q"), 1, "still there");
    // No consumer: --if-unused deletes it.
    assert_eq!(ok(&server, &["delete-queue", "q", "--if-unused"]), "1\n");

    ok(&server, &["declare-exchange", "ex", "--type", "fanout"]);
    ok(&server, &["declare-queue", "bound"]);
    ok(&server, &["bind", "--exchange", "ex", "--queue", "bound"]);
    let err = fails(&server, &["delete-exchange", "ex", "--if-unused"]);
    assert!(err.starts_with("error: PRECONDITION_FAILED"), "{err}");
    ok(&server, &["unbind", "--exchange", "ex", "--queue", "bound"]);
    ok(&server, &["delete-exchange", "ex", "--if-unused"]);
}

#[test]
fn delete_queue_if_unused_refuses_a_queue_with_a_consumer() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "busy"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        actormq::client::Client::connect(actormq::client::ConnectOptions::new(
            server.addr.to_string(),
        ))
        .await
        .unwrap()
    });
    let _consumer = rt
        .block_on(client.consume("busy", &Default::default()))
        .unwrap();
    let err = fails(&server, &["delete-queue", "busy", "--if-unused"]);
    assert!(err.starts_with("error: PRECONDITION_FAILED"), "{err}");
}

#[test]
fn a_server_named_queue_is_refused_from_the_command_line() {
    let server = TestServer::start();
    let out = run(&server, &["declare-queue", ""], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("a queue name is needed"), "{err}");
}
