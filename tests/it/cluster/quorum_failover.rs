//! kill -9 of a quorum queue group's leader while a publisher on each of the two other
//! nodes publishes with confirms (real processes): every publish is answered, a
//! confirm or a nack, none is left hanging, and confirms resume on both.
//!
//! The group's log is filled first (tens of thousands of publishes, in entries of
//! many messages each), because that is what stalled the group under its new leader:
//! the new leader's first append to the other survivor carried half of its log, too
//! large to be taken within openraft's time to live for an append (the heartbeat
//! interval), and was sent again and again while nothing was committed. Appends are
//! now bounded in bytes (`src/cluster/log_store.rs`).

use super::quorum::{connect, declare_quorum, publish_persistent};
use super::{leader, three_nodes, Node};
use crate::support::DEADLINE;
use lapin::options::ConfirmSelectOptions;
use lapin::Channel;
use lapin::PublisherConfirm;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Messages in the group's log before the kill.
const PREFILL: u64 = 40_000;
/// Confirms outstanding per publisher.
const WINDOW: usize = 200;
/// Confirms each survivor's publisher must get for publishes made after the kill.
const AFTER: u64 = 500;

/// What one publisher saw.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    nacked: AtomicU64,
    /// Acks of publishes made after the kill.
    acked_after: AtomicU64,
}

/// The group leader's node id, as `/api/queues` on `node` names it (`node2@...`).
async fn group_leader(node: &Node, queue: &str) -> Option<u64> {
    let q = node
        .api()
        .get(&format!("/api/queues/%2F/{queue}"))
        .await
        .json();
    q["leader"]
        .as_str()?
        .strip_prefix("node")?
        .split('@')
        .next()?
        .parse()
        .ok()
}

async fn confirm_channel(node: &Node) -> (lapin::Connection, Channel) {
    let conn = connect(node).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// Settles one confirm into `tally`: it must come (ack or nack) within the deadline.
async fn settle(c: PublisherConfirm, after: bool, tally: &Tally) {
    let answered = tokio::time::timeout(DEADLINE, c)
        .await
        .expect("every publish is answered (confirm or nack), none left hanging");
    match answered {
        Ok(c) if c.is_ack() => {
            tally.acked.fetch_add(1, Ordering::Relaxed);
            if after {
                tally.acked_after.fetch_add(1, Ordering::Relaxed);
            }
        }
        _ => {
            tally.nacked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_on_both_survivors_get_every_publish_answered_when_the_group_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    declare_quorum(&nodes[0], "qf", "").await;
    let end = Instant::now() + DEADLINE;
    let old = loop {
        if let Some(l) = group_leader(&nodes[0], "qf").await {
            break l;
        }
        assert!(Instant::now() < end, "the group has no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Fill the group's log through its leader (many publishes per entry).
    let started = Instant::now();
    {
        let at = nodes.iter().position(|n| n.id == old).unwrap();
        let (_conn, ch) = confirm_channel(&nodes[at]).await;
        let body = vec![b'p'; 1024];
        let mut window = VecDeque::new();
        for _ in 0..PREFILL {
            window.push_back(publish_persistent(&ch, "qf", &body).await);
            if window.len() >= 1000 {
                let c = window.pop_front().unwrap();
                assert!(c.await.unwrap().is_ack(), "a prefill publish confirmed");
            }
        }
        for c in window {
            assert!(c.await.unwrap().is_ack(), "a prefill publish confirmed");
        }
    }
    eprintln!(
        "quorum leader kill: {PREFILL} messages in the group's log in {:?}",
        started.elapsed()
    );

    // A publisher with confirms on each survivor.
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for node in nodes.iter().filter(|n| n.id != old) {
        let (conn, ch) = confirm_channel(node).await;
        let tally = Arc::new(Tally::default());
        let (killed, stop, t) = (killed.clone(), stop.clone(), tally.clone());
        let task = tokio::spawn(async move {
            let _conn = conn;
            let mut window = VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                let after = killed.load(Ordering::Relaxed);
                window.push_back((publish_persistent(&ch, "qf", b"m").await, after));
                while window.len() >= WINDOW {
                    let (c, after) = window.pop_front().unwrap();
                    settle(c, after, &t).await;
                }
            }
            for (c, after) in window {
                settle(c, after, &t).await;
            }
        });
        publishers.push((node.id, tally, task));
    }
    let end = Instant::now() + DEADLINE;
    while publishers
        .iter()
        .any(|(_, t, _)| t.acked.load(Ordering::Relaxed) < 200)
    {
        assert!(Instant::now() < end, "both publishers get confirms");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let at = nodes.iter().position(|n| n.id == old).unwrap();
    nodes[at].kill9();
    let kill = Instant::now();
    killed.store(true, Ordering::Relaxed);

    // Confirms resume on both survivors.
    let end = Instant::now() + DEADLINE * 2;
    let mut resumed = vec![None; publishers.len()];
    loop {
        for (i, (_, t, task)) in publishers.iter().enumerate() {
            assert!(!task.is_finished(), "a publisher stopped: {task:?}");
            if resumed[i].is_none() && t.acked_after.load(Ordering::Relaxed) > 0 {
                resumed[i] = Some(kill.elapsed());
            }
        }
        if publishers
            .iter()
            .all(|(_, t, _)| t.acked_after.load(Ordering::Relaxed) >= AFTER)
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "confirms did not resume on both survivors after the kill: {:?}",
            publishers
                .iter()
                .map(|(id, t, _)| (
                    *id,
                    t.acked_after.load(Ordering::Relaxed),
                    t.nacked.load(Ordering::Relaxed)
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for (id, t, task) in publishers {
        // Each awaits its outstanding confirms, each within the deadline.
        task.await.expect("a publisher finishes");
        eprintln!(
            "quorum leader kill: publisher on node {id}: {} confirmed ({} after the kill), {} nacked",
            t.acked.load(Ordering::Relaxed),
            t.acked_after.load(Ordering::Relaxed),
            t.nacked.load(Ordering::Relaxed)
        );
        acked += t.acked.load(Ordering::Relaxed);
    }
    eprintln!(
        "quorum leader kill: kill -9 to the first confirm after it, per survivor: {resumed:?}"
    );
    // What was confirmed is in the queue (a nacked publish may be there too).
    let survivor = nodes.iter().find(|n| n.id != old).unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        let q = survivor.api().get("/api/queues/%2F/qf").await.json();
        if q["messages"].as_u64().unwrap_or(0) >= PREFILL + acked {
            break;
        }
        assert!(
            Instant::now() < end,
            "confirmed messages missing from the queue: {} < {}",
            q["messages"],
            PREFILL + acked
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
