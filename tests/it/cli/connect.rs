//! Connecting: where the password comes from, which commands take connection flags,
//! and a server that is not actormq.

use super::{fails, ok, run_cmd, BIN};
use crate::support::TestServer;
use actormq::settings::UserSettings;
use std::io::{Read, Write};
use std::process::Command;

fn with_user() -> TestServer {
    TestServer::with(|s| {
        s.users = vec![UserSettings {
            name: "app".into(),
            password_hash: actormq::server::auth::hash_password("s3cret"),
            vhosts: vec!["/".into()],
            loopback_only: false,
            tags: Vec::new(),
        }]
    })
}

/// `actormq ARGS... --server ADDR --user app`, with no ACTORMQ_PASSWORD unless
/// `tweak` sets it, and standard input not a terminal.
fn as_app(
    server: &TestServer,
    args: &[&str],
    tweak: impl FnOnce(&mut Command),
) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--server", &server.addr.to_string(), "--user", "app"])
        .env_remove("ACTORMQ_PASSWORD");
    tweak(&mut cmd);
    cmd.stdin(std::process::Stdio::null()).output().unwrap()
}

#[test]
fn the_password_comes_from_a_file_or_the_environment() {
    let server = with_user();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    let out = as_app(&server, &["declare-queue", "q"], |c| {
        c.arg("--password-file").arg(&file);
    });
    assert!(out.status.success(), "{out:?}");
    let out = as_app(&server, &["declare-queue", "q"], |c| {
        c.env("ACTORMQ_PASSWORD", "s3cret");
    });
    assert!(out.status.success(), "{out:?}");
    let out = as_app(&server, &["declare-queue", "q"], |c| {
        c.env("ACTORMQ_PASSWORD", "wrong");
    });
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: ACCESS_REFUSED"), "{err}");
}

#[test]
fn without_a_password_and_a_terminal_the_command_says_how_to_give_one() {
    let server = with_user();
    let out = as_app(&server, &["declare-queue", "q"], |_| {});
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no password for user 'app'"), "{err}");
    assert!(
        err.contains("--password-file") && err.contains("ACTORMQ_PASSWORD"),
        "{err}"
    );
    let out = as_app(&server, &["declare-queue", "q"], |c| {
        c.args(["--password-file", "/nonexistent/pw"]);
    });
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--password-file /nonexistent/pw"), "{err}");
}

#[test]
fn serve_and_hash_password_refuse_connection_flags() {
    for args in [
        &["--server", "127.0.0.1:1", "serve"][..],
        &["--user", "u", "hash-password", "x"],
        &["serve", "--server", "127.0.0.1:1"],
    ] {
        let out = run_cmd(Command::new(BIN).args(args), None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("--server") || err.contains("--user"), "{err}");
    }
}

#[test]
fn connection_flags_work_after_the_command_too() {
    let server = TestServer::start();
    let out = run_cmd(
        Command::new(BIN).args(["declare-queue", "q", "--server", &server.addr.to_string()]),
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ok(&server, &["purge", "q"]), "0\n");
}

#[test]
fn a_server_that_is_not_actormq_is_reported_as_such() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let http = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut hello = [0u8; 16];
        let _ = socket.read(&mut hello);
        let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let out = run_cmd(
        Command::new(BIN).args(["--server", &addr.to_string(), "declare-queue", "q"]),
        None,
    );
    http.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.trim_end(),
        format!("error: {addr} is not an actormq server (it said \"HTTP/1.1 400 Bad Request\")")
    );
}

#[test]
fn wrong_credentials_exit_with_access_refused() {
    let server = TestServer::start();
    let err = fails(&server, &["--password", "nope", "declare-queue", "q"]);
    assert!(err.starts_with("error: ACCESS_REFUSED"), "{err}");
}
