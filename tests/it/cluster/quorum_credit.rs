//! A quorum queue's consumer credit (3 real processes): while its client settles fast,
//! the group checks a consumer out more than its prefetch, so that an ack frees the
//! client's slot at once while the `Settle` commits; yet the client never holds more
//! than its prefetch unacked, and a client that settles nothing holds no more than
//! that in the group once it has been idle a while (the extra goes back unmarked), or
//! at once when a get wants the messages. Every message is delivered, and none whose
//! ack committed comes again after kill -9 of the group's leader. A consumer slower
//! than a commit writes one log entry per ack; a follower's client holds no more than
//! its prefetch across a leader change.

use super::quorum::{declare_quorum, next_delivery, publish_numbered, queue_leader, try_consume};
use super::quorum_forward::{counts, text};
use super::three_led;
use crate::support::DEADLINE;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const PREFETCH: u16 = 10;
const P: u64 = PREFETCH as u64;
const TOTAL: u64 = 300;
/// Acked (and committed) on the follower's consumer before the kill.
const BEFORE_KILL: usize = 150;

fn number(d: &lapin::message::Delivery) -> u64 {
    text(&d.data).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_consumer_holds_at_most_its_prefetch_gets_everything_and_nothing_acked_again_after_a_kill(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "credit", "").await;
    let all: Vec<_> = nodes.iter().collect();
    let led = queue_leader(&all, "credit").await;
    publish_numbered(&nodes[0], "credit", 0..TOTAL).await;
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    let other = (at + 1) % nodes.len();

    // On the leader's node, a client that holds its prefetch and settles nothing
    // holds no more than that in the group: the rest stays ready.
    let (lconn, lch, mut lc) = try_consume(&nodes[at], "credit", PREFETCH).await.unwrap();
    let mut held = Vec::new();
    for n in 0..P {
        let d = next_delivery(&mut lc).await;
        assert_eq!(number(&d), n, "in order");
        held.push(d);
    }
    counts(&nodes[at], "credit", TOTAL - P, P).await;
    // It acks 0..=5 at once (one frame): holding less than half its prefetch, it
    // could run dry before the ack commits, so the extra is registered with it. The
    // freed slots take the next in order (10..=15), first deliveries.
    let multiple = BasicAckOptions { multiple: true };
    held.drain(..6)
        .next_back()
        .unwrap()
        .ack(multiple)
        .await
        .unwrap();
    for n in P..P + 6 {
        let d = next_delivery(&mut lc).await;
        assert_eq!(number(&d), n);
        assert!(!d.redelivered);
        held.push(d);
    }
    // The extra (16..=25) was checked out ahead of the commits; once the client has
    // held its prefetch, settling nothing, for a while, it goes back unsent and the
    // group holds what the client holds. A client sent more than its prefetch would
    // hold more here, for good; an extra never given back too.
    counts(&nodes[at], "credit", TOTAL - 6 - P, P).await;
    // Round trips on the client's connection come after anything the leader sent.
    for _ in 0..3 {
        lconn.create_channel().await.unwrap();
    }
    assert!(
        lc.next().now_or_never().is_none(),
        "the client was sent more than its prefetch"
    );
    // The channel goes: what its client had (6..=15) comes back marked; what was
    // only checked out to it (16..=25) was given back unmarked.
    lch.close(200, "bye".into()).await.unwrap();
    drop(held);

    // On a follower, through its consume session: every message, the client never
    // holding more than its prefetch (it reads all that is ready before it acks).
    let (_fconn, _fch, mut fc) = try_consume(&nodes[other], "credit", PREFETCH)
        .await
        .unwrap();
    // Numbers 0..=5, acked on the leader's node, never come again.
    let mut first: BTreeMap<u64, bool> = (0..6).map(|n| (n, false)).collect();
    let mut acked: BTreeSet<u64> = (0..6).collect();
    let mut killed = false;
    let mut unacked: Vec<lapin::message::Delivery> = Vec::new();
    let end = Instant::now() + DEADLINE * 3;
    loop {
        assert!(Instant::now() < end, "seen {} of {TOTAL}", first.len());
        let next = match unacked.is_empty() {
            true => tokio::time::timeout(Duration::from_millis(500), fc.next()).await,
            false => Ok(fc.next().now_or_never().flatten()),
        };
        match next {
            Ok(Some(d)) => {
                let d = d.unwrap();
                let n = number(&d);
                assert!(!acked.contains(&n), "{n} came again, its ack committed");
                first.entry(n).or_insert(d.redelivered);
                unacked.push(d);
                assert!(
                    unacked.len() <= PREFETCH as usize,
                    "the client holds {} unacked, prefetch {PREFETCH}",
                    unacked.len()
                );
            }
            Ok(None) if !unacked.is_empty() => {
                for d in unacked.drain(..) {
                    if !killed {
                        acked.insert(number(&d));
                    }
                    d.ack(BasicAckOptions::default()).await.unwrap();
                }
                if !killed && acked.len() >= BEFORE_KILL {
                    // Every ack sent so far committed (the group holds exactly the
                    // others), then kill -9 of the group's leader.
                    let left = TOTAL - acked.len() as u64;
                    let end = Instant::now() + DEADLINE;
                    loop {
                        let q = nodes[at].api().get("/api/queues/%2F/credit").await.json();
                        let held = q["messages_ready"].as_u64().unwrap_or(0)
                            + q["messages_unacknowledged"].as_u64().unwrap_or(0);
                        if held == left {
                            break;
                        }
                        assert!(Instant::now() < end, "the acks committed: {q}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    nodes[at].kill9();
                    killed = true;
                }
            }
            Ok(None) => panic!("the follower's consumer ended"),
            Err(_) => {
                // Nothing for a while: everything seen and settled ends the test.
                if first.len() as u64 == TOTAL && killed {
                    let q = nodes[other]
                        .api()
                        .get("/api/queues/%2F/credit")
                        .await
                        .json();
                    if q["messages_ready"] == 0 && q["messages_unacknowledged"] == 0 {
                        break;
                    }
                }
            }
        }
    }
    assert_eq!(first.len() as u64, TOTAL, "every message delivered");
    for n in 6..P + 6 {
        assert!(first[&n], "{n} was sent to the closed channel: marked");
    }
    for n in P + 6..2 * P + 6 {
        assert!(!first[&n], "{n} was only checked out to it: unmarked");
    }
}

/// The last log index of the (only) quorum group, as `node`'s member has it.
fn group_log(node: &super::Node) -> u64 {
    block_in_place(|| {
        super::wait_for("the group's log index", DEADLINE, || {
            let s = node.status()?;
            let me = s["nodes"]
                .as_array()?
                .iter()
                .find(|n| n[0]["id"] == node.id)?;
            me[0]["groups"][0]["last_log_index"].as_u64()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_consumer_slower_than_a_commit_writes_one_log_entry_per_ack() {
    const ACKS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "slow", "").await;
    let all: Vec<_> = nodes.iter().collect();
    let led = queue_leader(&all, "slow").await;
    publish_numbered(&nodes[0], "slow", 0..TOTAL).await;
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    let (_conn, _ch, mut c) = try_consume(&nodes[at], "slow", PREFETCH).await.unwrap();
    let mut held = VecDeque::new();
    for n in 0..P {
        let d = next_delivery(&mut c).await;
        assert_eq!(number(&d), n, "in order");
        held.push_back(d);
    }
    counts(&nodes[at], "slow", TOTAL - P, P).await;
    let before = group_log(&nodes[at]);
    // One ack at a time, each once its commit and all it led to are applied (the
    // group holds exactly what the client holds): slower than a commit, however
    // loaded the machine. Before, each ack took the extra (about a prefetch of
    // checkouts) and the next idle moment gave it back: two entries per ack.
    for k in 0..ACKS {
        let d = held.pop_front().unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        let d = next_delivery(&mut c).await;
        assert_eq!(number(&d), P + k, "in order");
        assert!(!d.redelivered);
        held.push_back(d);
        counts(&nodes[at], "slow", TOTAL - P - k - 1, P).await;
    }
    let written = group_log(&nodes[at]) - before;
    eprintln!("slow consumer: {written} log entries for {ACKS} acks");
    assert!(
        written <= ACKS + 2,
        "{written} log entries for {ACKS} acks of a slow consumer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_takes_at_once_what_an_idle_consumer_holds_beyond_its_prefetch() {
    const ALL: u64 = 2 * P + 6;
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "idle", "").await;
    let all: Vec<_> = nodes.iter().collect();
    let led = queue_leader(&all, "idle").await;
    publish_numbered(&nodes[0], "idle", 0..ALL).await;
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    let (conn, _ch, mut c) = try_consume(&nodes[at], "idle", PREFETCH).await.unwrap();
    let mut held = Vec::new();
    for n in 0..P {
        let d = next_delivery(&mut c).await;
        assert_eq!(number(&d), n);
        held.push(d);
    }
    // 0..=5 acked at once: the extra is registered with them, and once they commit
    // 10..=15 go to the client and 16..=25 (the rest of the queue) wait checked out
    // to it, nothing ready.
    let multiple = BasicAckOptions { multiple: true };
    held.drain(..6)
        .next_back()
        .unwrap()
        .ack(multiple)
        .await
        .unwrap();
    for n in P..P + 6 {
        assert_eq!(number(&next_delivery(&mut c).await), n);
    }
    // A get (on another node, through its consume session) does not answer empty
    // while the consumer holds them idle: the extra goes back at once (not a second
    // later), unmarked, and the get takes the first.
    let other = &nodes[(at + 1) % nodes.len()];
    let gconn = super::quorum::connect(other).await;
    let gch = gconn.create_channel().await.unwrap();
    let got = gch
        .basic_get("idle".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the get takes what the idle consumer held back");
    assert_eq!(number(&got.delivery), 2 * P - 4);
    assert!(
        !got.delivery.redelivered,
        "only checked out before: unmarked"
    );
    // The client still holds its prefetch and was sent nothing more.
    counts(&nodes[at], "idle", P - 1, P).await;
    for _ in 0..3 {
        conn.create_channel().await.unwrap();
    }
    assert!(
        c.next().now_or_never().is_none(),
        "the client was sent more than its prefetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_client_holds_at_most_its_prefetch_across_a_leader_change() {
    const ALL: u64 = 4 * P;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "across", "").await;
    let all: Vec<_> = nodes.iter().collect();
    let led = queue_leader(&all, "across").await;
    publish_numbered(&nodes[0], "across", 0..ALL).await;
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    let other = (at + 1) % nodes.len();
    // A consumer on a follower, through its consume session: its client takes its
    // prefetch and holds it.
    let (fconn, _fch, mut fc) = try_consume(&nodes[other], "across", PREFETCH)
        .await
        .unwrap();
    let mut held: VecDeque<lapin::message::Delivery> = VecDeque::new();
    for n in 0..P {
        let d = next_delivery(&mut fc).await;
        assert_eq!(number(&d), n);
        held.push_back(d);
    }
    counts(&nodes[other], "across", ALL - P, P).await;
    nodes[at].kill9();
    // The new leader's takeover returns 0..=9, and they come again marked; their
    // first deliveries, still held, count there against the prefetch: each ack (of
    // an old delivery or a new one) lets exactly one more come, never a new
    // prefetch's worth beside the old. Before, the new leader sent 10 at once.
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut received = 0;
    while received < ALL {
        if let Some(d) = held.pop_front() {
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        let mut came = vec![next_delivery(&mut fc).await];
        // Round trips on the client's connection come after anything its node wrote
        // with that delivery.
        for _ in 0..2 {
            fconn.create_channel().await.unwrap();
        }
        while let Some(Some(d)) = fc.next().now_or_never() {
            came.push(d.unwrap());
        }
        for d in came {
            *seen.entry(number(&d)).or_default() += 1;
            held.push_back(d);
            received += 1;
        }
        assert!(
            held.len() <= PREFETCH as usize,
            "the client holds {} unacked, prefetch {PREFETCH}",
            held.len()
        );
    }
    for d in held.drain(..) {
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        seen.len() as u64,
        ALL,
        "every message after the kill: {seen:?}"
    );
    assert!(
        (0..P).all(|n| seen[&n] == 1),
        "the held ones came again once each"
    );
    counts(&nodes[(at + 2) % 3], "across", 0, 0).await;
}
