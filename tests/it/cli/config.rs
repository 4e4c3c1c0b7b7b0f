//! `serve`: configuration errors that name the key, and the log output (colour only on a
//! terminal, JSON on request, the data directory's absolute path).

use super::{run_cmd, BIN};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

#[test]
fn a_bad_config_value_names_the_key_the_value_and_the_allowed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    for (text, expect) in [
        (
            "[storage]\nfsync = \"sometimes\"\n",
            &["storage.fsync", "sometimes", "`always`", "`interval_ms`"][..],
        ),
        (
            "[server]\nheartbeat = 5\n",
            &["server.heartbeat", "unknown field", "`heartbeat_secs`"],
        ),
        (
            "[log]\nformat = \"xml\"\n",
            &["log.format", "xml", "`json`"],
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = run_cmd(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&file)
                .env_remove("RUST_LOG"),
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("bad.toml"), "{err}");
        for e in expect {
            assert!(err.contains(e), "{text}: {e} not in {err}");
        }
    }
}

/// Runs `serve` in an empty directory with `log.format = format` until it listens,
/// stops it with SIGTERM, and answers its standard error and the directory.
fn serve_log(format: &str) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("ACTORMQ__SERVER__BIND", "127.0.0.1:0")
        .env("ACTORMQ__AMQP__BIND", "127.0.0.1:0")
        .env("ACTORMQ__HTTP__BIND", "127.0.0.1:0")
        .env("ACTORMQ__BROKER__WORKERS", "1")
        .env("ACTORMQ__LOG__FORMAT", format)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listening = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .any(|l| l.starts_with("actormq listening on "));
    assert!(listening, "the listening line");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {err}");
    (err, dir)
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_and_name_the_data_directory() {
    let (err, dir) = serve_log("text");
    assert!(!err.contains('\x1b'), "ANSI codes in a pipe: {err:?}");
    let line = err
        .lines()
        .find(|l| l.contains("storage directory"))
        .unwrap_or_else(|| panic!("no data_dir line in {err}"));
    let name = dir.path().file_name().unwrap().to_str().unwrap();
    assert!(line.contains("data_dir=/") && line.contains(name), "{line}");
    assert!(line.trim_end().ends_with("data"), "{line}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (err, _dir) = serve_log("json");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let data_dir = lines
        .iter()
        .find_map(|l| l["fields"]["data_dir"].as_str())
        .expect("a data_dir field");
    assert!(
        data_dir.starts_with('/') && data_dir.ends_with("data"),
        "{data_dir}"
    );
    assert!(lines.iter().all(|l| l["level"].is_string()), "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "shutting down"),
        "{err}"
    );
}
