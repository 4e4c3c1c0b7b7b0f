//! The version gate: a peer announcing another cluster protocol is refused in the
//! handshake with both versions named, on both sides, once it has proven the cluster
//! secret (a claim without the proof is refused as a wrong secret, and not logged as
//! a fact), and `cluster status` shows the version each node speaks.

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

    // A fake node 7, one version ahead, over raw TCP; first without the secret.
    let (verdict, me) = fake_peer(&addr, None);
    assert!(
        verdict.is_empty(),
        "no answer to a wrong proof: {verdict:?}"
    );
    block_in_place(|| {
        wait_for("the wrong proof is logged", DEADLINE, || {
            node.logs()
                .lines()
                .any(|l| l.contains(&me.to_string()) && l.contains("wrong cluster secret"))
                .then_some(())
        })
    });
    assert!(
        !node.logs().contains("speaks cluster protocol"),
        "an unproven version was taken for a fact:\n{}",
        node.logs()
    );
    // Then with it: refused for its version, with the node's own proof.
    let (verdict, me) = fake_peer(&addr, Some(super::SECRET));
    assert_eq!(verdict.len(), 1 + 32, "{verdict:?}");
    assert_eq!(verdict[0], 1, "refused");
    let ours = CLUSTER_PROTOCOL + 1;
    let expected = format!(
        "node 7 ({me}) speaks cluster protocol {ours}, this node (node 1) {CLUSTER_PROTOCOL}: \
         stop every node and upgrade them all; see docs/CLUSTERING.md"
    );
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

/// Connects to `addr` as a node 7 one cluster protocol ahead and answers the
/// handshake with a proof of `secret` (`None`: a wrong one); what the node answered
/// until it closed, and this end's address.
fn fake_peer(addr: &str, secret: Option<&str>) -> (Vec<u8>, std::net::SocketAddr) {
    use hmac::{Hmac, Mac};
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    let me = raw.local_addr().unwrap();
    // The node speaks first: magic, its version and id, its challenge.
    let mut hello = [0u8; 8 + 4 + 8 + 32];
    raw.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[..6], b"AMQCLU");
    let announced = u32::from_be_bytes(hello[8..12].try_into().unwrap());
    assert_eq!(announced, CLUSTER_PROTOCOL);
    assert_eq!(u64::from_be_bytes(hello[12..20].try_into().unwrap()), 1);
    let mut mine = (CLUSTER_PROTOCOL + 1).to_be_bytes().to_vec();
    mine.extend_from_slice(&7u64.to_be_bytes());
    mine.extend_from_slice(&[3u8; 32]); // a challenge
    let proof = match secret {
        Some(secret) => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(b"client");
            mac.update(&hello[8..]);
            mac.update(&mine);
            mac.finalize().into_bytes().to_vec()
        }
        None => vec![0u8; 32],
    };
    let mut msg = hello[..8].to_vec();
    msg.extend_from_slice(&mine);
    msg.extend_from_slice(&proof);
    raw.write_all(&msg).unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    (answer, me)
}
