//! `publish`: properties, bodies from files and NUL-separated records, confirm
//! summaries, mandatory returns.

use super::{fails, ok, ok_with, run, run_bytes};
use crate::support::TestServer;
use actormq::client::{Client, ConnectOptions, GetOk};

/// Gets every message of `queue` (no ack), through the client.
fn drain(server: &TestServer, queue: &str) -> Vec<GetOk> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect(ConnectOptions::new(server.addr.to_string()))
            .await
            .unwrap();
        let mut all = Vec::new();
        while let Some(got) = client.get(queue, true).await.unwrap() {
            all.push(got);
        }
        all
    })
}

#[test]
fn the_common_properties_reach_the_message() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    ok(
        &server,
        &[
            "publish",
            "--routing-key",
            "q",
            "--content-type",
            "application/json",
            "--content-encoding",
            "identity",
            "--correlation-id",
            "c-7",
            "--reply-to",
            "replies",
            "--message-id",
            "m-7",
            "--expiration",
            "60000",
            "--priority",
            "3",
            "--type",
            "order.created",
            "--app-id",
            "shop",
            "--confirm",
            "{}",
        ],
    );
    let got = drain(&server, "q");
    assert_eq!(got.len(), 1);
    let p = &got[0].delivery.properties;
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.content_encoding.as_deref(), Some("identity"));
    assert_eq!(p.correlation_id.as_deref(), Some("c-7"));
    assert_eq!(p.reply_to.as_deref(), Some("replies"));
    assert_eq!(p.message_id.as_deref(), Some("m-7"));
    assert_eq!(p.expiration.as_deref(), Some("60000"));
    assert_eq!(p.priority, Some(3));
    assert_eq!(p.kind.as_deref(), Some("order.created"));
    assert_eq!(p.app_id.as_deref(), Some("shop"));
}

#[test]
fn multi_line_bodies_survive_a_body_file_and_nul_separated_records() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.txt");
    std::fs::write(&file, "line one\nline two\n").unwrap();
    let file = file.to_str().unwrap();
    ok(
        &server,
        &[
            "publish",
            "--routing-key",
            "q",
            "--confirm",
            "--body-file",
            file,
        ],
    );
    let out = run_bytes(
        &server,
        &[
            "publish",
            "--routing-key",
            "q",
            "--confirm",
            "--split",
            "nul",
        ],
        Some(b"a\nb\0\0c\nd\0e"),
    );
    assert!(out.status.success(), "{out:?}");
    let out = run_bytes(
        &server,
        &["publish", "--routing-key", "q", "--body-file", "-"],
        Some(b"all\nof\nstdin"),
    );
    assert!(out.status.success(), "{out:?}");
    let bodies: Vec<_> = drain(&server, "q")
        .into_iter()
        .map(|g| String::from_utf8(g.delivery.body.to_vec()).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "line one\nline two\n",
            "a\nb",
            "",
            "c\nd",
            "e",
            "all\nof\nstdin"
        ]
    );
    let err = fails(
        &server,
        &[
            "publish",
            "--routing-key",
            "q",
            "--body-file",
            "/nonexistent/b",
        ],
    );
    assert!(err.contains("--body-file /nonexistent/b"), "{err}");
}

#[test]
fn confirm_prints_a_summary_counting_unroutable_messages() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    let out = ok_with(
        &server,
        &["publish", "--routing-key", "q", "--confirm"],
        Some("a\nb\nc\n"),
    );
    assert_eq!(out, "published 3, confirmed 3, nacked 0, unroutable 0\n");
    let out = ok_with(
        &server,
        &["publish", "--routing-key", "nowhere", "--confirm"],
        Some("a\nb\n"),
    );
    assert_eq!(out, "published 2, confirmed 2, nacked 0, unroutable 2\n");
}

#[test]
fn nacked_messages_are_counted_and_fail_the_command() {
    let server = TestServer::start();
    let out = run(
        &server,
        &[
            "publish",
            "--exchange",
            "missing",
            "--routing-key",
            "k",
            "--confirm",
        ],
        Some("a\nb\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "published 2, confirmed 0, nacked 2, unroutable 0\n"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: NOT_FOUND - "), "{err}");
    assert!(err.contains("(2 of 2 messages nacked)"), "{err}");
}

#[test]
fn mandatory_prints_returned_messages_and_fails() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    ok(
        &server,
        &["publish", "--routing-key", "q", "--mandatory", "routed"],
    );
    let out = run(
        &server,
        &["publish", "--routing-key", "nowhere", "--mandatory", "lost"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "",
        "no summary without --confirm"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("returned: 312 NO_ROUTE, exchange \"\", routing key \"nowhere\": \"lost\""),
        "{err}"
    );
    assert!(
        err.contains("error: 1 of 1 messages returned unroutable"),
        "{err}"
    );

    let out = run(
        &server,
        &[
            "publish",
            "--routing-key",
            "nowhere",
            "--mandatory",
            "--confirm",
        ],
        Some("x\ny\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "published 2, confirmed 2, nacked 0, returned 2\n"
    );
}
