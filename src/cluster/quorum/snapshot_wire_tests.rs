//! Chunked snapshots: the receiver's reassembly, the sender's chunks, and a member
//! behind its leader's purged log catching up over real cluster ports, the leader
//! capturing its queue once however often openraft asks.

use super::*;
use crate::cluster::quorum::group::tests::config;
use crate::cluster::quorum::machine::{Command, Limits, QueueMachine};
use crate::cluster::quorum::wire::tests::{
    applied, leader, msg, ready, start_member, three_nodes_with,
};
use openraft::{CommittedLeaderId, LogId};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

fn meta(id: &str) -> SnapshotMeta<NodeId, BasicNode> {
    SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 9)),
        last_membership: Default::default(),
        snapshot_id: id.into(),
    }
}

fn chunk(id: &str, offset: u64, data: &[u8], done: bool) -> SnapshotChunk {
    SnapshotChunk {
        vote: Vote::new(1, 1),
        meta: meta(id),
        offset,
        data: Bytes::copy_from_slice(data),
        done,
    }
}

#[test]
fn chunks_in_order_make_the_whole_and_one_out_of_order_ends_the_transfer() {
    let r = Receiving::default();
    assert!(matches!(
        r.add(1, chunk("a", 0, b"", false)),
        Ok(Received::More)
    ));
    assert!(matches!(
        r.add(1, chunk("a", 0, b"abc", false)),
        Ok(Received::More)
    ));
    assert!(matches!(
        r.add(1, chunk("a", 3, b"de", false)),
        Ok(Received::More)
    ));
    match r.add(1, chunk("a", 5, b"f", true)) {
        Ok(Received::Whole { bytes, meta, .. }) => {
            assert_eq!(bytes, b"abcdef");
            assert_eq!(meta.snapshot_id, "a");
        }
        _ => panic!("the whole snapshot at the last chunk"),
    }
    // A gap: refused, and the transfer is over (the next chunk finds none open).
    r.add(1, chunk("b", 0, b"abc", false)).ok().unwrap();
    let e = r.add(1, chunk("b", 4, b"x", false)).err().unwrap();
    assert!(e.contains("chunk at offset 4, expected 3"), "{e}");
    let e = r.add(1, chunk("b", 3, b"d", true)).err().unwrap();
    assert!(e.contains("no transfer of it is open"), "{e}");
    // Another snapshot's chunk in the middle of a transfer ends it too.
    r.add(1, chunk("c", 0, b"abc", false)).ok().unwrap();
    assert!(r.add(1, chunk("d", 3, b"x", false)).is_err());
    // A new first chunk starts over; groups do not mix.
    r.add(1, chunk("e", 0, b"ab", false)).ok().unwrap();
    r.add(2, chunk("e", 0, b"zz", false)).ok().unwrap();
    r.add(1, chunk("e", 0, b"xy", false)).ok().unwrap();
    match r.add(1, chunk("e", 2, b"z", true)) {
        Ok(Received::Whole { bytes, .. }) => assert_eq!(bytes, b"xyz"),
        _ => panic!("whole"),
    }
}

/// A queue of `n` messages as a snapshot.
fn snapshot_of(n: u64) -> GroupSnapshot {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(Command::Enqueue((1..=n).map(|i| msg(1, i)).collect()));
    GroupSnapshot {
        machine: Arc::new(q),
    }
}

#[tokio::test]
async fn the_sender_probes_then_sends_the_encoded_queue_in_chunks_of_the_size_asked() {
    let snap = snapshot_of(100);
    let whole = rmp_serde::to_vec(&snap).unwrap();
    let sent = Arc::new(StdMutex::new(Vec::new()));
    let receiving = Arc::new(Receiving::default());
    let (s, r) = (sent.clone(), receiving.clone());
    let answer = send(
        Vote::new(1, 1),
        meta("q-9"),
        snap.clone(),
        256,
        Duration::from_secs(1),
        move |c: SnapshotChunk, ttl| {
            s.lock()
                .unwrap()
                .push((c.offset, c.data.len(), c.done, ttl));
            let reply = match r.add(1, c) {
                Ok(Received::More) => Ok(None),
                Ok(Received::Whole { vote, bytes, .. }) => {
                    let back: GroupSnapshot = rmp_serde::from_slice(&bytes).unwrap();
                    assert_eq!(back, snap, "the queue sent is the queue received");
                    Ok(Some(SnapshotResponse { vote }))
                }
                Err(e) => Err(e),
            };
            async move { Ok(GroupReply::SnapshotChunk(reply)) }
        },
    )
    .await;
    assert!(answer.is_ok());
    let sent = sent.lock().unwrap().clone();
    // The probe, then every chunk of at most 256 bytes, in order, the last marked.
    assert_eq!(sent[0], (0, 0, false, Duration::from_secs(1)));
    let chunks = &sent[1..];
    assert_eq!(chunks.len(), whole.len().div_ceil(256));
    let mut offset = 0;
    for (i, (at, len, done, ttl)) in chunks.iter().enumerate() {
        assert_eq!(*at, offset);
        assert!(*len <= 256 && *len > 0);
        assert_eq!(*done, i + 1 == chunks.len());
        let long = *done && *ttl > Duration::from_secs(1);
        assert!(long || !*done, "the last chunk waits for the install");
        offset += *len as u64;
    }
    assert_eq!(offset as usize, whole.len());
}

#[tokio::test]
async fn a_member_that_is_down_costs_a_probe_and_no_encoding() {
    let calls = Arc::new(StdMutex::new(0));
    let c = calls.clone();
    let answer = send(
        Vote::new(1, 1),
        meta("q-9"),
        snapshot_of(10),
        256,
        Duration::from_secs(1),
        move |_: SnapshotChunk, _| {
            *c.lock().unwrap() += 1;
            async { Err(Unreachable::new(&std::io::Error::other("down"))) }
        },
    )
    .await;
    assert!(matches!(answer, Err(SendError::Unreachable(_))));
    assert_eq!(*calls.lock().unwrap(), 1, "the probe only");
}

/// Waits until `f` holds, for at most 30 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < end, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_in_chunks_and_the_leader_captures_once() {
    let dir = tempfile::tempdir().unwrap();
    let group = 21;
    // Purged right behind each snapshot, chunks of 4 KiB (the queue is ~60 KiB).
    let mut c = (*config()).clone();
    c.max_in_snapshot_log_to_keep = 0;
    c.snapshot_max_chunk_size = 4096;
    let c = Arc::new(c);
    let mut nodes = three_nodes_with(dir.path(), &[group], c.clone()).await;
    let l = leader(&nodes, &[0, 1, 2], group).await;
    let down = (l + 1) % 3;
    nodes[down]
        .groups
        .remove(group)
        .unwrap()
        .shutdown()
        .await
        .unwrap();

    // Published while it is down, then snapshotted and purged on the leader.
    let raft = nodes[l].groups.get(group).unwrap();
    let mut last = 0;
    for b in 0..20 {
        let ms = (1..=100).map(|i| msg(21, b * 100 + i)).collect();
        last = raft
            .client_write(Command::Enqueue(ms))
            .await
            .unwrap()
            .log_id
            .index;
    }
    raft.trigger().snapshot().await.unwrap();
    until("the leader purged its log", || {
        raft.metrics()
            .borrow()
            .purged
            .is_some_and(|p| p.index >= last)
    })
    .await;

    // openraft asks for the snapshot at each try to send it to the member that is
    // down: the leader captures its queue at most once for all of them.
    let sm = nodes[l].machines[&group].clone();
    let (asked0, captured0) = sm.lagging_counts();
    until("openraft asked for the snapshot again and again", || {
        sm.lagging_counts().0 >= asked0 + 3
    })
    .await;
    let (asked, captured) = sm.lagging_counts();
    eprintln!(
        "asked {} times while the member was down, captured {} times",
        asked - asked0,
        captured - captured0
    );
    assert!(
        captured <= captured0 + 1,
        "{} captures for {} requests",
        captured - captured0,
        asked - asked0
    );

    // Back: it is sent the snapshot, in chunks, and holds every message.
    start_member(dir.path(), &mut nodes[down], down, group, c).await;
    applied(&nodes, down, group, last).await;
    let expected: Vec<(u64, u64, u32)> = (1..=2000).map(|i| (21, i, 0)).collect();
    assert_eq!(ready(&nodes[down].machines[&group]), expected);
    let installed = nodes[down]
        .groups
        .get(group)
        .unwrap()
        .metrics()
        .borrow()
        .snapshot;
    assert!(installed.is_some_and(|s| s.index >= last), "{installed:?}");
    // ~60 KiB in chunks of 4 KiB, after the probe (and any earlier tries' chunks).
    let chunks = nodes[down].groups.snapshot_chunks();
    assert!(chunks > 10, "the snapshot came in {chunks} chunks");
    for n in &nodes {
        n.groups.remove(group).unwrap().shutdown().await.unwrap();
    }
}
