//! The cluster port is closed to whoever lacks the cluster secret (and, with
//! `cluster.tls`, a certificate of the cluster's CA): a node with the wrong secret
//! neither joins nor changes definitions, a raw frame without the handshake is
//! dropped, and a cluster over mutual TLS forms and replicates.

use super::{converged, free_port, has, leader, three_nodes, wait_for, Node, SECRET};
use crate::security::pki::Pki;
use crate::support::DEADLINE;
use std::io::{Read, Write};
use std::time::Instant;
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_neither_joins_nor_changes_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));

    // It lists the three as seeds, with a secret of the right length but not theirs.
    let addr = format!("127.0.0.1:{}", free_port());
    let seeds: Vec<(u64, String)> = nodes
        .iter()
        .map(|n| (n.id, n.cluster.clone()))
        .chain([(4, addr.clone())])
        .collect();
    let intruder = block_in_place(|| {
        Node::start_with(
            &dir.path().join("n4"),
            4,
            &addr,
            &seeds,
            "secret = \"not-the-cluster-secret-000000\"\ncommit_timeout_ms = 1000",
            "",
        )
    });
    // Each side logs the other's refusal, naming the address.
    block_in_place(|| {
        wait_for("the seeds refuse node 4", DEADLINE, || {
            nodes
                .iter()
                .any(|n| n.logs().contains("cluster port: peer refused"))
                .then_some(())
        })
    });
    assert!(
        nodes
            .iter()
            .any(|n| n.logs().contains("wrong cluster secret")),
        "the reason is logged"
    );
    // Its own declare cannot commit anywhere.
    let s = intruder
        .api()
        .put("/api/queues/%2F/intruder", r#"{"durable":true}"#)
        .await
        .status;
    assert!(!(200..300).contains(&s), "HTTP {s}");
    // The CLI with the wrong secret is refused too: no membership change.
    let out = block_in_place(|| {
        std::process::Command::new(super::BIN)
            .args(["cluster", "--secret", "not-the-cluster-secret-000000"])
            .args(["add-node", "4", &addr, "--node", &nodes[0].cluster])
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.secret"), "{err}");

    // The three never heard of node 4 nor of its queue, and go on.
    let status = block_in_place(|| nodes[0].status()).expect("status with the secret");
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3, "{status}");
    let s = nodes[1]
        .api()
        .put("/api/queues/%2F/ours", r#"{"durable":true}"#)
        .await
        .status;
    assert_eq!(s, 201);
    let defs = converged(&all, |d| has(d, "queues", "ours")).await;
    assert!(!has(&defs, "queues", "intruder"), "{defs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_frame_sent_without_the_handshake_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let node =
        block_in_place(|| Node::start(&dir.path().join("n1"), 1, &addr, &[(1, addr.clone())]));
    block_in_place(|| leader(&[&node]));

    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    let me = raw.local_addr().unwrap();
    // The node speaks first: its challenge.
    let mut challenge = [0u8; 8 + 32];
    raw.read_exact(&mut challenge).unwrap();
    assert_eq!(&challenge[..6], b"AMQCLU");
    // A well-formed frame of the node-to-node protocol: (request id, Rpc::Status).
    let body = rmp_serde::to_vec(&(1u64, "Status")).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.write_all(&frame).unwrap();
    // Closed (a reset, as the frame was left unread) without an answer.
    let started = Instant::now();
    let mut got = Vec::new();
    match raw.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "no answer: {got:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(started.elapsed() < DEADLINE, "closed, not left open");
    block_in_place(|| {
        wait_for("the refusal is logged with the address", DEADLINE, || {
            let logs = node.logs();
            logs.lines()
                .any(|l| l.contains("peer refused") && l.contains(&me.to_string()))
                .then_some(())
        })
    });
    // Peers with the secret are still served.
    assert!(block_in_place(|| node.status()).is_some());
}

/// Settings for mutual TLS on the cluster port with `pki`'s certificate `name`.
fn tls_section(pki: &Pki, name: &str, key: &str) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
        pki.path(name).display(),
        pki.path(key).display(),
        pki.path("ca.pem").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_mutual_tls_forms_and_replicates() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let seeds: Vec<(u64, String)> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let extra = format!("secret = \"{SECRET}\"\ntls = true");
    // Every node presents the CA's certificate for 127.0.0.1.
    let section = tls_section(&pki, "server.pem", "server.key");
    let nodes: Vec<Node> = seeds
        .iter()
        .map(|(id, a)| {
            block_in_place(|| {
                Node::start_with(
                    &dir.path().join(format!("n{id}")),
                    *id,
                    a,
                    &seeds,
                    &extra,
                    &section,
                )
            })
        })
        .collect();
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    let s = nodes[2]
        .api()
        .put("/api/queues/%2F/over-tls", r#"{"durable":true}"#)
        .await
        .status;
    assert_eq!(s, 201);
    converged(&all, |d| has(d, "queues", "over-tls")).await;

    // Plain TCP with the right secret gets no answer: the port speaks TLS.
    let out = block_in_place(|| {
        std::process::Command::new(super::BIN)
            .args([
                "cluster",
                "--secret",
                SECRET,
                "status",
                "--node",
                &nodes[0].cluster,
            ])
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    // The right secret and a certificate of another CA: refused in the TLS handshake.
    let stranger = dir.path().join("stranger.toml");
    std::fs::write(
        &stranger,
        format!(
            "[cluster]\nnode_id = 9\n{extra}\n\n{}",
            tls_section(&pki, "stranger.pem", "stranger.key")
        ),
    )
    .unwrap();
    let out = block_in_place(|| {
        std::process::Command::new(super::BIN)
            .arg("cluster")
            .arg("--config")
            .arg(&stranger)
            .args(["status", "--node", &nodes[0].cluster])
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    block_in_place(|| {
        wait_for("the TLS refusal is logged", DEADLINE, || {
            nodes[0]
                .logs()
                .lines()
                .any(|l| l.contains("peer refused") && l.to_lowercase().contains("certificate"))
                .then_some(())
        })
    });

    // SIGHUP re-reads the certificate files (the same ones here; the swap itself is
    // the transport's unit test): logged, the node keeps running, and new TLS
    // connections to it (the CLI's) and the log's traffic go on.
    nodes[0].signal(libc::SIGHUP);
    block_in_place(|| {
        wait_for("the reload is logged", DEADLINE, || {
            nodes[0]
                .logs()
                .contains("the cluster port's TLS certificate, key and CA reloaded")
                .then_some(())
        })
    });
    assert!(block_in_place(|| nodes[0].status()).is_some());
    let s = nodes[1]
        .api()
        .put("/api/queues/%2F/after-reload", r#"{"durable":true}"#)
        .await
        .status;
    assert_eq!(s, 201);
    converged(&all, |d| has(d, "queues", "after-reload")).await;
}
