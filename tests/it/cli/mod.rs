//! The `actormq` binary against a real broker: exit codes, output, argument typing.
//! Helpers here; tests by area in the submodules.

mod admin;
mod basics;
mod config;
mod connect;
mod get_consume;
mod mgmt;
mod publish;

use crate::support::{TestServer, DEADLINE};
use std::io::Write;
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_actormq");

/// Runs `actormq --server ADDR ARGS...`, feeding `stdin` when given.
pub fn run(server: &TestServer, args: &[&str], stdin: Option<&str>) -> Output {
    run_bytes(server, args, stdin.map(str::as_bytes))
}

/// Runs `actormq --server ADDR ARGS...`, feeding `stdin` bytes when given.
pub fn run_bytes(server: &TestServer, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let server_flag = ["--server".to_string(), server.addr.to_string()];
    run_cmd(Command::new(BIN).args(server_flag).args(args), stdin)
}

/// Runs a prepared command with piped output, feeding `stdin` when given.
pub fn run_cmd(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let mut child = cmd
        .env_remove("ACTORMQ_PASSWORD")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs and expects success; answers standard output.
pub fn ok(server: &TestServer, args: &[&str]) -> String {
    ok_with(server, args, None)
}

pub fn ok_with(server: &TestServer, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(server, args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure (exit status 1); answers standard error.
pub fn fails(server: &TestServer, args: &[&str]) -> String {
    let out = run(server, args, None);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// A generous --timeout, so a consume can never hang the test.
pub fn deadline() -> String {
    DEADLINE.as_secs().to_string()
}

/// `declare-queue NAME --passive`'s ready-message count.
pub fn ready(server: &TestServer, queue: &str) -> u64 {
    let out = ok(server, &["declare-queue", queue, "--passive"]);
    out.lines()
        .find_map(|l| l.strip_prefix("messages: "))
        .unwrap_or_else(|| panic!("no messages line in {out:?}"))
        .parse()
        .unwrap()
}
