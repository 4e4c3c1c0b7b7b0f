//! The operating commands (`list`, `status`, users, vhosts, permissions, policies,
//! definitions, `close-connection`) against a real broker's management API.

use super::{ok, run, run_cmd, BIN};
use crate::support::{eventually_sync, TestServer};
use serde_json::{json, Value};
use std::process::{Command, Output};

fn server() -> TestServer {
    TestServer::with(|s| s.http.bind = vec!["127.0.0.1:0".into()])
}

/// Runs `actormq ARGS... --http-url URL` (the guest's defaults).
fn admin_run(server: &TestServer, args: &[&str]) -> Output {
    let url = format!("http://{}", server.handle().http_addrs()[0]);
    run_cmd(
        Command::new(BIN).args(args).args(["--http-url", &url]),
        None,
    )
}

fn admin(server: &TestServer, args: &[&str]) -> String {
    let out = admin_run(server, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn admin_json(server: &TestServer, args: &[&str]) -> Value {
    let out = admin(server, &[args, &["--format", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

#[test]
fn queues_and_policies_are_listed_as_tables_and_json() {
    let server = server();
    ok(&server, &["declare-queue", "jobs"]);
    ok(
        &server,
        &["publish", "--routing-key", "jobs", "--confirm", "a"],
    );
    ok(
        &server,
        &["publish", "--routing-key", "jobs", "--confirm", "b"],
    );
    admin(
        &server,
        &[
            "set-policy",
            "cap",
            "^jobs$",
            r#"{"max-length":1}"#,
            "--apply-to",
            "queues",
            "--priority",
            "3",
        ],
    );
    let table = admin(&server, &["list", "queues"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "vhost",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "policy"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row, ["/", "jobs", "1", "0", "0", "cap"], "{table}");
    let picked = admin_json(
        &server,
        &[
            "list",
            "queues",
            "--vhost",
            "/",
            "--columns",
            "name,messages_ready,effective_policy_definition.max-length",
        ],
    );
    assert_eq!(
        picked,
        json!([{"name": "jobs", "messages_ready": 1, "effective_policy_definition.max-length": 1}])
    );
    let policies = admin_json(&server, &["list", "policies"]);
    assert_eq!(policies[0]["name"], "cap", "{policies}");
    assert_eq!(policies[0]["priority"], 3);
    admin(&server, &["clear-policy", "cap"]);
    assert_eq!(admin_json(&server, &["list", "policies"]), json!([]));
    let out = admin_run(&server, &["clear-policy", "cap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    let out = admin_run(
        &server,
        &["set-policy", "bad", ".*", r#"{"max-length":"x"}"#],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'max-length'"),
        "{out:?}"
    );
}

#[test]
fn users_vhosts_and_permissions_are_managed() {
    let server = server();
    admin(&server, &["add-vhost", "prod"]);
    admin(
        &server,
        &["add-user", "ann", "s3cret", "--tags", "management"],
    );
    admin(&server, &["set-permissions", "ann", "--vhost", "prod"]);
    let users = admin_json(&server, &["list", "users", "--columns", "name,tags"]);
    assert!(
        users
            .as_array()
            .unwrap()
            .contains(&json!({"name": "ann", "tags": ["management"]})),
        "{users}"
    );
    // ann may now use the API on prod.
    let url = format!("http://{}", server.handle().http_addrs()[0]);
    let as_ann = run_cmd(
        Command::new(BIN).args([
            "list",
            "vhosts",
            "--http-url",
            &url,
            "--user",
            "ann",
            "--password",
            "s3cret",
            "--format",
            "json",
        ]),
        None,
    );
    assert!(as_ann.status.success(), "{as_ann:?}");
    let seen: Value = serde_json::from_slice(&as_ann.stdout).unwrap();
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["name"], "prod");
    admin(
        &server,
        &["set-user-tags", "ann", "monitoring", "policymaker"],
    );
    let users = admin_json(&server, &["list", "users"]);
    let ann = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "ann")
        .unwrap();
    assert_eq!(ann["tags"], json!(["monitoring", "policymaker"]));
    // RabbitMQ's patterns, positional as rabbitmqctl's or as flags.
    admin(&server, &["set-permissions", "ann", "^x$", ".*", ""]);
    admin(
        &server,
        &[
            "set-permissions",
            "ann",
            "--vhost",
            "prod",
            "--read",
            "^ann-",
        ],
    );
    let perms = admin_json(&server, &["list", "permissions"]);
    let of_ann: Vec<&Value> = perms
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["user"] == "ann")
        .collect();
    assert_eq!(
        of_ann,
        vec![
            &json!({"user": "ann", "vhost": "/", "configure": "^x$", "write": ".*", "read": ""}),
            &json!({"user": "ann", "vhost": "prod", "configure": ".*", "write": ".*", "read": "^ann-"}),
        ]
    );
    admin(
        &server,
        &[
            "set-topic-permissions",
            "ann",
            "amq.topic",
            "^{username}\\.",
            ".*",
        ],
    );
    let topics = admin_json(&server, &["list", "topic-permissions", "--vhost", "/"]);
    assert_eq!(
        topics,
        json!([{"user": "ann", "vhost": "/", "exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"}])
    );
    admin(&server, &["clear-topic-permissions", "ann", "amq.topic"]);
    let topics = admin_json(&server, &["list", "topic-permissions"]);
    assert_eq!(topics, json!([]));
    let refused = admin_run(&server, &["set-permissions", "ann", "(", ".*", ".*"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("invalid configure pattern"),
        "{refused:?}"
    );
    admin(&server, &["delete-user", "ann"]);
    let again = admin_run(&server, &["delete-user", "ann"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no user 'ann'"),
        "{again:?}"
    );
    admin(&server, &["delete-vhost", "prod"]);
    let vhosts = admin_json(&server, &["list", "vhosts", "--columns", "name"]);
    assert_eq!(vhosts, json!([{"name": "/"}]));
}

#[test]
fn definitions_are_exported_to_a_file_and_imported_elsewhere() {
    let a = server();
    ok(
        &a,
        &["declare-exchange", "orders", "--type", "topic", "--durable"],
    );
    ok(&a, &["declare-queue", "billing", "--durable"]);
    ok(
        &a,
        &[
            "bind",
            "--exchange",
            "orders",
            "--queue",
            "billing",
            "--routing-key",
            "o.*",
        ],
    );
    admin(
        &a,
        &["set-policy", "ttl", "^billing$", r#"{"message-ttl":1000}"#],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    let file = file.to_str().unwrap();
    admin(&a, &["export-definitions", file]);
    let b = server();
    admin(&b, &["import-definitions", file]);
    let queues = admin_json(&b, &["list", "queues", "--columns", "name,durable,policy"]);
    assert_eq!(
        queues,
        json!([{"name": "billing", "durable": true, "policy": "ttl"}])
    );
    let bindings = admin_json(
        &b,
        &[
            "list",
            "bindings",
            "--columns",
            "source,destination,routing_key",
        ],
    );
    assert_eq!(
        bindings,
        json!([{"source": "orders", "destination": "billing", "routing_key": "o.*"}])
    );
    std::fs::write(
        file,
        "{\"queues\":[{\"name\":\"amq.nope\",\"vhost\":\"/\"}]}",
    )
    .unwrap();
    let out = admin_run(&b, &["import-definitions", file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("queue 'amq.nope'"),
        "{out:?}"
    );
}

#[test]
fn status_reports_the_broker_and_close_connection_closes_one() {
    let server = server();
    let status = admin(&server, &["status"]);
    for needle in [
        "product: actormq",
        "listener: ",
        "memory: ",
        "alarms: none",
        "queues: 0",
    ] {
        assert!(status.contains(needle), "{needle:?} not in {status}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(actormq::client::Client::connect(
            actormq::client::ConnectOptions::new(server.addr.to_string()),
        ))
        .unwrap();
    let connections = admin_json(&server, &["list", "connections"]);
    let name = connections[0]["name"].as_str().unwrap().to_string();
    admin(
        &server,
        &["close-connection", &name, "--reason", "maintenance"],
    );
    eventually_sync("the connection is closed", || {
        admin_json(&server, &["list", "connections"]) == json!([])
    });
    drop(client);
}

#[test]
fn the_api_address_comes_from_the_settings_and_server_is_refused() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("Settings.toml");
    let bind = server.handle().http_addrs()[0];
    std::fs::write(&config, format!("[http]\nbind = [\"{bind}\"]\n")).unwrap();
    let out = run_cmd(
        Command::new(BIN)
            .args(["list", "vhosts", "--format", "json", "--config"])
            .arg(&config),
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let vhosts: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vhosts[0]["name"], "/");
    // `--server` is the native protocol's address: refused, saying what to give.
    let out = run(&server, &["list", "queues"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--http-url"),
        "{out:?}"
    );
}
