//! The first commands: declare, publish lines, consume, purge, delete, serve.

use super::{deadline, fails, ok, ok_with, ready, run, run_cmd, BIN};
use crate::support::{TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions};
use actormq::FieldValue;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn declare_queue_prints_it_and_passive_checks_existence() {
    let server = TestServer::start();
    assert_eq!(
        ok(&server, &["declare-queue", "jobs", "--durable"]),
        "name: jobs\nmessages: 0\nconsumers: 0\n"
    );
    assert_eq!(
        ok(&server, &["declare-queue", "jobs", "--passive"]),
        "name: jobs\nmessages: 0\nconsumers: 0\n"
    );
    let err = fails(&server, &["declare-queue", "missing", "--passive"]);
    assert!(err.starts_with("error: NOT_FOUND - "), "{err}");
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn queue_arguments_are_typed_like_rabbitmq() {
    let server = TestServer::start();
    let err = fails(
        &server,
        &["declare-queue", "q1", "--arg", "x-message-ttl=abc"],
    );
    assert!(err.starts_with("error: PRECONDITION_FAILED - "), "{err}");
    ok(
        &server,
        &["declare-queue", "q2", "--arg", "x-message-ttl=60000"],
    );
    let usage = run(
        &server,
        &["declare-queue", "q3", "--arg", "no-equals"],
        None,
    );
    assert_eq!(usage.status.code(), Some(2), "a usage error");
}

#[test]
fn lines_published_with_confirm_are_consumed_in_order() {
    let server = TestServer::start();
    ok(&server, &["declare-exchange", "ex", "--type", "direct"]);
    ok(&server, &["declare-queue", "q"]);
    ok(
        &server,
        &[
            "bind",
            "--exchange",
            "ex",
            "--queue",
            "q",
            "--routing-key",
            "k",
        ],
    );
    ok_with(
        &server,
        &[
            "publish",
            "--exchange",
            "ex",
            "--routing-key",
            "k",
            "--confirm",
        ],
        Some("one\ntwo\r\n\nthree"),
    );
    assert_eq!(ready(&server, "q"), 4);
    let out = ok(
        &server,
        &[
            "consume",
            "--queue",
            "q",
            "--count",
            "4",
            "--timeout",
            &deadline(),
        ],
    );
    assert_eq!(out, "one\ntwo\n\nthree\n");
    assert_eq!(ready(&server, "q"), 0, "consumed messages are acked");
}

#[test]
fn consume_stops_after_count_and_leaves_the_rest() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    ok_with(
        &server,
        &["publish", "--routing-key", "q", "--confirm"],
        Some("a\nb\nc\nd\ne\n"),
    );
    let t = deadline();
    assert_eq!(
        ok(
            &server,
            &["consume", "--queue", "q", "--count", "2", "--timeout", &t]
        ),
        "a\nb\n"
    );
    assert_eq!(
        ok(
            &server,
            &[
                "consume",
                "--queue",
                "q",
                "--count",
                "2",
                "--no-ack",
                "--timeout",
                &t
            ]
        ),
        "c\nd\n"
    );
    assert_eq!(ready(&server, "q"), 1);
}

#[test]
fn consume_exits_after_the_timeout_without_messages() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "empty"]);
    let out = ok(
        &server,
        &["consume", "--queue", "empty", "--timeout", "0.2"],
    );
    assert_eq!(out, "");
}

#[test]
fn a_confirmed_publish_to_a_missing_exchange_fails_with_not_found() {
    let server = TestServer::start();
    let out = run(
        &server,
        &[
            "publish",
            "--exchange",
            "nope",
            "--routing-key",
            "k",
            "--confirm",
            "m",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: NOT_FOUND - "), "{err}");
}

#[test]
fn an_unconfirmed_publish_to_a_missing_exchange_still_reports_not_found() {
    let server = TestServer::start();
    let err = fails(
        &server,
        &["publish", "--exchange", "nope", "--routing-key", "k", "m"],
    );
    assert!(err.starts_with("error: NOT_FOUND - "), "{err}");
}

#[test]
fn purge_and_delete_print_message_counts() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q"]);
    ok(
        &server,
        &["publish", "--routing-key", "q", "--confirm", "first"],
    );
    ok(&server, &["publish", "--routing-key", "q", "second"]);
    assert_eq!(ok(&server, &["purge", "q"]), "2\n");
    ok(
        &server,
        &["publish", "--routing-key", "q", "--confirm", "third"],
    );
    assert_eq!(ok(&server, &["delete-queue", "q"]), "1\n");
    let err = fails(&server, &["declare-queue", "q", "--passive"]);
    assert!(err.starts_with("error: NOT_FOUND"), "{err}");
}

#[test]
fn exchanges_are_declared_and_deleted() {
    let server = TestServer::start();
    ok(
        &server,
        &["declare-exchange", "logs", "--type", "fanout", "--durable"],
    );
    ok(&server, &["delete-exchange", "logs"]);
    let err = fails(
        &server,
        &["declare-exchange", "bad", "--type", "no-such-type"],
    );
    assert!(err.starts_with("error: PRECONDITION_FAILED"), "{err}");
}

#[test]
fn headers_and_persistence_reach_the_message() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "q", "--durable"]);
    ok(
        &server,
        &[
            "publish",
            "--routing-key",
            "q",
            "--persistent",
            "--confirm",
            "--header",
            "attempt=3",
            "--header",
            "tenant=acme",
            "body",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(async {
        let client = Client::connect(ConnectOptions::new(server.addr.to_string()))
            .await
            .unwrap();
        client.get("q", true).await.unwrap().expect("a message")
    });
    let p = &got.delivery.properties;
    assert!(p.is_persistent());
    let headers = p.headers.as_ref().expect("headers");
    assert_eq!(headers.get("attempt"), Some(&FieldValue::Int(3)));
    assert_eq!(headers.get("tenant"), Some(&FieldValue::Str("acme".into())));
    assert_eq!(&got.delivery.body[..], b"body");
}

#[test]
fn hash_password_prints_a_phc_string_from_an_argument_or_stdin() {
    let from_arg = run_cmd(Command::new(BIN).args(["hash-password", "s3cret"]), None);
    assert!(from_arg.status.success(), "{from_arg:?}");
    let from_arg = String::from_utf8(from_arg.stdout).unwrap();
    assert!(from_arg.starts_with("$pbkdf2-sha256$"), "{from_arg}");
    assert!(
        actormq::server::auth::verify_password("s3cret", from_arg.trim_end()),
        "{from_arg}"
    );
    let from_stdin = run_cmd(Command::new(BIN).arg("hash-password"), Some(b"s3cret\n"));
    let from_stdin = String::from_utf8(from_stdin.stdout).unwrap();
    assert!(
        actormq::server::auth::verify_password("s3cret", from_stdin.trim_end()),
        "{from_stdin}"
    );
}

#[test]
fn serve_with_a_missing_config_file_fails_naming_it() {
    let out = run_cmd(
        Command::new(BIN).args(["serve", "--config", "/nonexistent/actormq.toml"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/nonexistent/actormq.toml"), "{err}");
}

#[test]
fn no_subcommand_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .env("ACTORMQ__SERVER__BIND", "127.0.0.1:0")
        .env("ACTORMQ__AMQP__BIND", "127.0.0.1:0")
        .env("ACTORMQ__HTTP__BIND", "127.0.0.1:0")
        .env("ACTORMQ__BROKER__WORKERS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It says where it listens once it is ready.
    let addr = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .find_map(|l| l.strip_prefix("actormq listening on ").map(str::to_string))
        .expect("the listening line");
    let out = Command::new(BIN)
        .args(["--server", &addr, "declare-queue", "served"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
}

#[test]
fn publish_message_id_is_deduplicated_and_priority_orders_delivery() {
    let server = TestServer::start();
    ok(
        &server,
        &["declare-queue", "dedup", "--arg", "x-dedup-window=60000"],
    );
    for _ in 0..2 {
        ok(
            &server,
            &[
                "publish",
                "--routing-key",
                "dedup",
                "--message-id",
                "m-1",
                "--confirm",
                "once",
            ],
        );
    }
    // The second publish was confirmed but not enqueued again.
    assert_eq!(ok(&server, &["purge", "dedup"]).trim(), "1");

    ok(
        &server,
        &["declare-queue", "prio", "--arg", "x-max-priority=9"],
    );
    for (body, priority) in [("low", "1"), ("high", "9")] {
        ok(
            &server,
            &[
                "publish",
                "--routing-key",
                "prio",
                "--priority",
                priority,
                "--confirm",
                body,
            ],
        );
    }
    let out = ok(
        &server,
        &[
            "consume",
            "--queue",
            "prio",
            "--count",
            "2",
            "--timeout",
            &deadline(),
        ],
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["high", "low"]);
}

#[test]
fn publish_expiration_removes_the_message_even_behind_the_head() {
    let server = TestServer::start();
    ok(&server, &["declare-queue", "ttl"]);
    ok(
        &server,
        &["publish", "--routing-key", "ttl", "--confirm", "kept"],
    );
    ok(
        &server,
        &[
            "publish",
            "--routing-key",
            "ttl",
            "--expiration",
            "1",
            "--confirm",
            "gone",
        ],
    );
    // No consumer: the expired message (second in line) must leave on its own.
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let n = ready(&server, "ttl");
        if n == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "expired message still queued: {n} ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = ok(
        &server,
        &[
            "consume",
            "--queue",
            "ttl",
            "--count",
            "1",
            "--timeout",
            &deadline(),
        ],
    );
    assert_eq!(out.trim(), "kept");
}
