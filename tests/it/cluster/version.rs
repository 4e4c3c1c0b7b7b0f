//! The version gate: a peer announcing another cluster protocol is refused in the
//! handshake with both versions named, on both sides, and `cluster status` shows the
//! version each node speaks.

use super::{leader, wait_for, Node};
use crate::support::DEADLINE;
use actormq::cluster::CLUSTER_PROTOCOL;
use std::io::{Read, Write};
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaking_another_cluster_protocol_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", super::free_port());
    let node =
        block_in_place(|| Node::start(&dir.path().join("n1"), 1, &addr, &[(1, addr.clone())]));
    block_in_place(|| leader(&[&node]));

    // A fake node 7, one version ahead, over raw TCP.
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    let me = raw.local_addr().unwrap();
    // The node speaks first: magic, its version and id, its challenge.
    let mut hello = [0u8; 8 + 4 + 8 + 32];
    raw.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[..6], b"AMQCLU");
    let announced = u32::from_be_bytes(hello[8..12].try_into().unwrap());
    assert_eq!(announced, CLUSTER_PROTOCOL);
    assert_eq!(u64::from_be_bytes(hello[12..20].try_into().unwrap()), 1);
    let ours = CLUSTER_PROTOCOL + 1;
    let mut msg = hello[..8].to_vec();
    msg.extend_from_slice(&ours.to_be_bytes());
    msg.extend_from_slice(&7u64.to_be_bytes());
    msg.extend_from_slice(&[3u8; 32]); // a challenge
    msg.extend_from_slice(&[0u8; 32]); // no proof: the version is refused first
    raw.write_all(&msg).unwrap();
    // The refusal: a one byte, then its text.
    let mut verdict = [0u8; 3];
    raw.read_exact(&mut verdict).unwrap();
    assert_eq!(verdict[0], 1, "refused");
    let mut why = vec![0u8; u16::from_be_bytes([verdict[1], verdict[2]]) as usize];
    raw.read_exact(&mut why).unwrap();
    let why = String::from_utf8(why).unwrap();
    let expected = format!(
        "node 7 ({me}) speaks cluster protocol {ours}, this node (node 1) {CLUSTER_PROTOCOL}: \
         stop every node and upgrade them all; see docs/CLUSTERING.md"
    );
    assert!(why.starts_with(&expected), "{why}");
    // Then closed.
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the refusal: {rest:?}");
    // Logged on the node, as an error.
    block_in_place(|| {
        wait_for("the refusal is logged", DEADLINE, || {
            node.logs()
                .lines()
                .any(|l| l.contains("ERROR") && l.contains(&expected))
                .then_some(())
        })
    });

    // The node serves peers of its own version, and says which that is.
    let status = block_in_place(|| node.status()).expect("status");
    assert_eq!(
        status["nodes"][0][0]["protocol"], CLUSTER_PROTOCOL,
        "{status}"
    );
    let table = block_in_place(|| node.cli(&["status"])).unwrap();
    assert!(table.contains("protocol"), "{table}");
}
