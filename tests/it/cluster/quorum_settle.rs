//! A quorum queue's settlements made into shared commit rounds (3 real processes): a
//! consumer on the group leader's node settles out of order, with single and
//! multiple acks, nacks with and without requeue, a poison message past
//! `x-delivery-limit`; the leader is killed -9 mid-way, with acks on their way; a
//! consumer on a survivor finishes. Every message ends settled exactly once: none
//! whose ack committed is delivered again, none lost, a requeued one comes back
//! marked, and the dead-letter queue holds each rejected and poison message once
//! with its reason. The settlements of many frames share one entry here (the
//! leader's commands and the publishes in one commit round: `src/cluster/quorum/
//! rounds.rs`), so a round that dropped, doubled or reordered one would show.

use super::quorum::{declare_quorum, publish_numbered, queue_leader, try_consume};
use super::quorum_dlx::{drain_dlq, TO_DLQ};
use super::quorum_forward::{counts, text};
use super::{three_led, Node};
use crate::support::DEADLINE;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const TOTAL: u64 = 600;
const PREFETCH: u16 = 20;

/// What the test does with message `n`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Acked (singly or by a multiple ack).
    Ack,
    /// Rejected without requeue: dead (`rejected`).
    Reject,
    /// Nacked with requeue on its first delivery, acked when it comes back marked.
    RequeueOnce,
    /// Always nacked with requeue: dead past `x-delivery-limit` 2 (`delivery_limit`).
    Poison,
}

fn kind(n: u64) -> Kind {
    match (n % 10, n % 100) {
        (_, 51) => Kind::Poison,
        (3, _) => Kind::Reject,
        (7, _) => Kind::RequeueOnce,
        _ => Kind::Ack,
    }
}

/// The client's side of the bookkeeping.
#[derive(Default)]
struct Book {
    /// Deliveries seen per message.
    seen: BTreeMap<u64, u32>,
    /// Acks sent (committed or not).
    acked: BTreeSet<u64>,
    /// Acks known committed (the group held exactly the rest afterwards).
    committed: BTreeSet<u64>,
    /// Settled for good by the client: acked, rejected, or the poison's last nack.
    gone: BTreeSet<u64>,
    /// RequeueOnce messages nacked once.
    requeued: BTreeSet<u64>,
    /// Flushes made (to alternate the ways of acking).
    flushes: u64,
}

impl Book {
    /// Takes a delivery: checks it may come, and records it.
    fn took(&mut self, d: &Delivery) -> u64 {
        let n: u64 = text(&d.data).parse().unwrap();
        assert!(
            !self.committed.contains(&n),
            "{n} delivered again: its ack had committed"
        );
        let times = self.seen.entry(n).or_default();
        *times += 1;
        if *times > 1 {
            assert!(d.redelivered, "{n} came again unmarked");
        }
        n
    }

    /// Settles what the client holds: nacks and rejects one by one, then the acks,
    /// either in reverse order one by one, or all with one multiple ack (every
    /// earlier delivery of the channel is settled by then).
    async fn flush(&mut self, held: &mut Vec<(u64, Delivery)>) {
        let mut acks = Vec::new();
        for (n, d) in held.drain(..) {
            match kind(n) {
                Kind::Ack => acks.push((n, d)),
                Kind::RequeueOnce if self.requeued.contains(&n) => acks.push((n, d)),
                Kind::RequeueOnce => {
                    self.requeued.insert(n);
                    d.nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
                    .unwrap();
                }
                Kind::Reject => {
                    self.gone.insert(n);
                    d.reject(BasicRejectOptions { requeue: false })
                        .await
                        .unwrap();
                }
                Kind::Poison => {
                    // The third delivery's nack puts it past the limit of 2.
                    if self.seen[&n] >= 3 {
                        self.gone.insert(n);
                    }
                    d.nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
                    .unwrap();
                }
            }
        }
        self.flushes += 1;
        for (n, _) in &acks {
            self.acked.insert(*n);
            self.gone.insert(*n);
        }
        if self.flushes % 2 == 0 {
            if let Some((_, last)) = acks.pop() {
                last.ack(BasicAckOptions { multiple: true }).await.unwrap();
            }
        } else {
            for (_, d) in acks.into_iter().rev() {
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
        }
    }
}

/// Waits until `node`'s member holds exactly what the client has not settled for
/// good: every settlement sent so far committed.
async fn all_committed(node: &Node, book: &Book) {
    let left = TOTAL - book.gone.len() as u64;
    super::queue_until(node, "settle", &format!("{left} held"), |q| {
        q["messages_ready"].as_u64().unwrap_or(0)
            + q["messages_unacknowledged"].as_u64().unwrap_or(0)
            == left
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_sharing_commit_rounds_settle_every_message_once_across_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "dlq", "").await;
    declare_quorum(
        &nodes[0],
        "settle",
        &format!(r#","x-delivery-limit":2{TO_DLQ}"#),
    )
    .await;
    let all: Vec<_> = nodes.iter().collect();
    let led = queue_leader(&all, "settle").await;
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    let other = (at + 1) % nodes.len();
    publish_numbered(&nodes[other], "settle", 0..TOTAL).await;

    let mut book = Book::default();
    let mut held: Vec<(u64, Delivery)> = Vec::new();
    // On the leader's node: settles in flushes of 7 (or whatever came) until half
    // is settled.
    let (_lconn, _lch, mut lc) = try_consume(&nodes[at], "settle", PREFETCH).await.unwrap();
    let end = Instant::now() + DEADLINE * 2;
    while book.gone.len() < TOTAL as usize / 2 {
        assert!(
            Instant::now() < end,
            "settled {} before the kill",
            book.gone.len()
        );
        let d = tokio::time::timeout(Duration::from_millis(300), lc.next()).await;
        match d {
            Ok(Some(d)) => {
                let d = d.unwrap();
                let n = book.took(&d);
                held.push((n, d));
                if held.len() >= 7 {
                    book.flush(&mut held).await;
                }
            }
            Ok(None) => panic!("the consumer ended"),
            Err(_) => book.flush(&mut held).await,
        }
    }
    book.flush(&mut held).await;
    // Everything settled so far committed, and its dead letters are in (an at most
    // once dead-lettering still to be made when its leader dies is lost, by design).
    all_committed(&nodes[at], &book).await;
    book.committed = book.acked.clone();
    let dead = book
        .gone
        .iter()
        .filter(|n| kind(**n) != Kind::Ack && kind(**n) != Kind::RequeueOnce)
        .count() as u64;
    counts(&nodes[at], "dlq", dead, 0).await;
    // Acks on their way as the leader dies: whatever came since, acked at once,
    // then kill -9 (each may or may not have committed: one that did not comes
    // again, marked).
    let end = Instant::now() + DEADLINE;
    while held.len() < 5 && Instant::now() < end {
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), lc.next()).await {
            let d = d.unwrap();
            let n = book.took(&d);
            held.push((n, d));
        }
    }
    for (n, d) in held.drain(..) {
        match kind(n) {
            Kind::Ack => {
                book.acked.insert(n);
                book.gone.insert(n);
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            // Held on its third delivery: the takeover's return puts it past the
            // limit (dead-lettered by the new leader).
            Kind::Poison if book.seen[&n] >= 3 => {
                book.gone.insert(n);
            }
            // Others stay held: they come back, marked, from the new leader.
            _ => {}
        }
    }
    nodes[at].kill9();
    // Those acks that did not commit are not settled for good after all.
    let unsure: BTreeSet<u64> = book.acked.difference(&book.committed).copied().collect();

    // A consumer on a survivor finishes; an unsure ack's message may come again.
    let (_fconn, _fch, mut fc) = try_consume(&nodes[other], "settle", PREFETCH)
        .await
        .unwrap();
    let end = Instant::now() + DEADLINE * 3;
    loop {
        assert!(
            Instant::now() < end,
            "settled {} of {TOTAL}",
            book.gone.len()
        );
        let next = match held.is_empty() {
            true => tokio::time::timeout(Duration::from_millis(500), fc.next()).await,
            false => Ok(fc.next().now_or_never().flatten()),
        };
        match next {
            Ok(Some(d)) => {
                let d = d.unwrap();
                let n = book.took(&d);
                if unsure.contains(&n) {
                    // Its ack did not commit: it is the client's again.
                    book.gone.remove(&n);
                }
                held.push((n, d));
                if held.len() >= 7 {
                    book.flush(&mut held).await;
                }
            }
            Ok(None) if !held.is_empty() => book.flush(&mut held).await,
            Ok(None) => panic!("the survivor's consumer ended"),
            Err(_) => {
                // Done once the group holds nothing (an unsure ack's message may
                // still be on its way back; a poison message whose third delivery
                // the client had not read yet died in the takeover's return).
                let q = nodes[other]
                    .api()
                    .get("/api/queues/%2F/settle")
                    .await
                    .json();
                if q["messages_ready"] == 0 && q["messages_unacknowledged"] == 0 {
                    break;
                }
            }
        }
    }
    // Nothing left on either survivor, every message delivered.
    for i in [other, (at + 2) % 3] {
        counts(&nodes[i], "settle", 0, 0).await;
    }
    assert_eq!(book.seen.len() as u64, TOTAL, "every message delivered");
    let unacked: Vec<u64> = (0..TOTAL)
        .filter(|n| matches!(kind(*n), Kind::Ack | Kind::RequeueOnce) && !book.acked.contains(n))
        .collect();
    assert!(unacked.is_empty(), "never acked: {unacked:?}");
    for (n, times) in &book.seen {
        match kind(*n) {
            Kind::RequeueOnce => assert!(*times >= 2, "{n}: requeued, came back"),
            Kind::Ack | Kind::Reject => {}
            Kind::Poison => assert!(*times <= 3, "{n}: past the limit after 3"),
        }
    }
    // The dead letters: each rejected and poison message once, with its reason.
    let letters = drain_dlq(&nodes[other], (TOTAL / 10 + TOTAL / 100) as usize, "end").await;
    let mut by_number: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (body, queue, reason, _) in letters {
        assert_eq!(queue, "settle");
        by_number
            .entry(body.parse().unwrap())
            .or_default()
            .push(reason);
    }
    let expected: BTreeMap<u64, Vec<String>> = (0..TOTAL)
        .filter_map(|n| match kind(n) {
            Kind::Reject => Some((n, vec!["rejected".to_string()])),
            Kind::Poison => Some((n, vec!["delivery_limit".to_string()])),
            _ => None,
        })
        .collect();
    assert_eq!(
        by_number, expected,
        "each dead letter once, with its reason"
    );
}
