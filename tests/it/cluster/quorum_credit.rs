//! A quorum queue's consumer credit (3 real processes): while its client settles, the
//! group checks a consumer out more than its prefetch, so that an ack frees the
//! client's slot at once while the `Settle` commits; yet the client never holds more
//! than its prefetch unacked, and a client that settles nothing holds no more than
//! that in the group (the extra goes back unmarked). Every message is delivered, and
//! none whose ack committed comes again after kill -9 of the group's leader.

use super::quorum::{declare_quorum, next_delivery, publish_numbered, queue_leader, try_consume};
use super::quorum_forward::{counts, text};
use super::three_led;
use crate::support::DEADLINE;
use futures_util::{FutureExt, StreamExt};
use lapin::options::BasicAckOptions;
use std::collections::{BTreeMap, BTreeSet};
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
    // An ack frees one slot: the next in order comes, first delivery.
    held.remove(0)
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let d = next_delivery(&mut lc).await;
    assert_eq!(number(&d), P);
    assert!(!d.redelivered);
    held.push(d);
    // Its settlement made the group check out more than the prefetch (11..=20, ahead
    // of the commits); once the client holds its prefetch again and settles nothing,
    // that extra goes back unsent and the group holds what the client holds. A
    // client sent more than its prefetch would hold more here, for good.
    counts(&nodes[at], "credit", TOTAL - 1 - P, P).await;
    // Round trips on the client's connection come after anything the leader sent.
    for _ in 0..3 {
        lconn.create_channel().await.unwrap();
    }
    assert!(
        lc.next().now_or_never().is_none(),
        "the client was sent more than its prefetch"
    );
    // The channel goes: what its client had (1..=10) comes back marked; what was
    // only checked out to it (11..=20) was given back unmarked.
    lch.close(200, "bye".into()).await.unwrap();
    drop(held);

    // On a follower, through its consume session: every message, the client never
    // holding more than its prefetch (it reads all that is ready before it acks).
    let (_fconn, _fch, mut fc) = try_consume(&nodes[other], "credit", PREFETCH)
        .await
        .unwrap();
    // Number 0, acked on the leader's node, never comes again.
    let mut first: BTreeMap<u64, bool> = BTreeMap::from([(0, false)]);
    let mut acked: BTreeSet<u64> = BTreeSet::from([0]);
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
                // Checked up to the kill only: deliveries of the dead leader's session
                // the client still holds are no one's to count at the next leader
                // (their acks settle nothing; they come again).
                assert!(
                    killed || unacked.len() <= PREFETCH as usize,
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
    for n in 1..=P {
        assert!(first[&n], "{n} was sent to the closed channel: marked");
    }
    for n in P + 1..=2 * P {
        assert!(!first[&n], "{n} was only checked out to it: unmarked");
    }
}
