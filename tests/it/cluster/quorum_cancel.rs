//! A forwarded consumer's cancel (issue 17, real processes): the consumer is on a node
//! that does not lead the quorum queue, so its session forwards it to the leader, and
//! deliveries are on their way from there when the client cancels. After the
//! cancel-ok no delivery comes for that consumer; one in flight at the cancel is
//! either delivered before the cancel-ok or given back to the queue as never
//! delivered (not marked redelivered, no attempt counted toward `x-delivery-limit`).

use super::quorum::{connect, declare_quorum, queue_leader, try_consume};
use super::quorum_forward::{publish_confirmed, text};
use super::quorum_session::rest_is_in_the_queue;
use super::{assert_no_panic, leader, three_nodes, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions, ConfirmSelectOptions};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Three nodes, quorum queue `queue` declared with `extra` arguments and `n`
/// messages ("0", "1", ...) published with confirms on a follower: the leader's node
/// and a follower.
async fn loaded(
    dir: &std::path::Path,
    queue: &str,
    extra: &str,
    n: usize,
) -> (Vec<Node>, usize, usize) {
    let nodes = block_in_place(|| three_nodes(dir));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], queue, extra).await;
    let led = queue_leader(&all, queue).await;
    let leader_at = nodes.iter().position(|n| n.id == led).unwrap();
    let follower_at = nodes.iter().position(|n| n.id != led).unwrap();
    let conn = connect(&nodes[follower_at]).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&ch, queue, (0..n).map(|i| i.to_string())).await;
    (nodes, leader_at, follower_at)
}

/// The leader's figures of `queue`: ready and unacked.
async fn figures(node: &Node, queue: &str) -> (u64, u64) {
    let q = node
        .api()
        .get(&format!("/api/queues/%2F/{queue}"))
        .await
        .json();
    let n = |k: &str| q[k].as_u64().unwrap_or(u64::MAX);
    (n("messages_ready"), n("messages_unacknowledged"))
}

/// Defect 1: the follower's queue answered the cancel as soon as it had passed it to
/// the session, so deliveries the session handed the client's connection before it
/// took the cancel came after the cancel-ok (the AMQP connection writes an auto-ack
/// consumer's as "already the client's"; a client reusing the tag takes them as the
/// new consumer's). A raw client consumes with no-ack, cancels after ten deliveries
/// while a transport window of them is on its way, reads up to the cancel-ok, waits
/// until the leader holds nothing unacked (every delivery the session made is then in
/// the connection's mailbox, or written), and syncs with a `basic.qos`: any delivery
/// between the cancel-ok and the qos-ok is late. In rounds; then every message was
/// received before a cancel-ok exactly once or is still in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_forwarded_consumer_s_cancel_ok_nothing_more_comes_for_it() {
    use crate::security::amqp_raw::{cancel, consume_no_ack, frame, handshake, method};
    use tokio::io::{AsyncWriteExt, BufReader};
    const N: usize = 9000;
    const ROUNDS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, l, f) = loaded(dir.path(), "late", "", N).await;
    let (leader_node, follower) = (&nodes[l], &nodes[f]);

    let s = tokio::net::TcpStream::connect(follower.amqp.to_string())
        .await
        .unwrap();
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd);
    handshake(&mut tokio::io::join(&mut rd, &mut wr), 2047).await;
    wr.write_all(&method(1, 20, 10, &[0])).await.unwrap();
    let (mut seen, mut twice, mut late) = (BTreeSet::new(), 0, 0);
    for round in 0..ROUNDS {
        if figures(leader_node, "late").await.0 < 1500 {
            break;
        }
        let tag = format!("auto{round}");
        wr.write_all(&consume_no_ack(1, "late", &tag))
            .await
            .unwrap();
        let cancel_frame = cancel(1, &tag);
        // Up to the cancel-ok, then up to the qos-ok: deliveries in the second part
        // are late.
        let (mut n, mut after_ok, mut body_next) = (0, false, false);
        loop {
            let (kind, ch, p) = frame(&mut rd).await;
            match (kind, ch) {
                (1, 1) if p[..4] == [0, 60, 0, 60] => body_next = true,
                (1, 1) if p[..4] == [0, 60, 0, 31] => {
                    after_ok = true;
                    let what = "nothing unacked after the cancel";
                    super::queue_until(leader_node, "late", what, |q| {
                        q["messages_unacknowledged"] == 0
                    })
                    .await;
                    wr.write_all(&method(1, 60, 10, &[0, 0, 0, 0, 0, 0, 0]))
                        .await
                        .unwrap();
                }
                (1, 1) if p[..4] == [0, 60, 0, 11] => break,
                (3, 1) if body_next => {
                    body_next = false;
                    if after_ok {
                        late += 1;
                        continue;
                    }
                    if !seen.insert(text(&p).parse::<usize>().unwrap()) {
                        twice += 1;
                    }
                    n += 1;
                    if n == 10 {
                        wr.write_all(&cancel_frame).await.unwrap();
                    }
                }
                _ => {}
            }
        }
        eprintln!("round {round}: {n} received before the cancel-ok, {late} late so far");
    }
    assert_eq!(late, 0, "deliveries after a cancel-ok");
    assert_eq!(
        twice, 0,
        "an auto-ack delivery written before a cancel-ok came again"
    );
    let (ready, unacked) = figures(leader_node, "late").await;
    assert_eq!(
        (ready, unacked),
        ((N - seen.len()) as u64, 0),
        "the queue holds exactly what the client did not receive"
    );
    let received = seen.len();
    rest_is_in_the_queue(follower, leader_node, "late", N, seen, received).await;
    assert_no_panic(&nodes);
}

/// Defect 2: a delivery on its way from the leader when its forwarded consumer was
/// cancelled, never written to the client, went back as a requeue: marked
/// redelivered, and one attempt nearer `x-delivery-limit`. With a limit of 1, a
/// client that then nacks such a message (with requeue) the first time it sees it had
/// it dead-lettered (here dropped) for an attempt it never had. A consumer with acks
/// on a follower takes one of a transport window in flight and cancels; a second one
/// nacks each message it sees for the first time, then acks it: every message comes,
/// and none marked redelivered the first time a client sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_off_by_a_forwarded_cancel_is_not_a_delivery_attempt() {
    const N: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, l, f) = loaded(dir.path(), "limit", r#","x-delivery-limit":1"#, N).await;
    let (leader_node, follower) = (&nodes[l], &nodes[f]);

    let mut seen = BTreeSet::new();
    // A prefetch beyond the transport window (1000): deliveries keep coming, up to
    // a window of them in flight, until the cancel, which comes at the first.
    let (_c1, ch1, mut first) = try_consume(follower, "limit", 4000).await.unwrap();
    let d = super::quorum::next_delivery(&mut first).await;
    seen.insert(text(&d.data).parse::<usize>().unwrap());
    let tag = first.tag().to_string();
    ch1.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await
        .unwrap();
    d.ack(BasicAckOptions::default()).await.unwrap();
    // What came before the cancel-ok was seen: acked too.
    while let Ok(Some(d)) = tokio::time::timeout(DEADLINE, first.next()).await {
        let d = d.unwrap();
        seen.insert(text(&d.data).parse::<usize>().unwrap());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    eprintln!(
        "first consumer: {} received before its cancel-ok",
        seen.len()
    );

    let (_c2, _ch2, mut second) = try_consume(follower, "limit", 100).await.unwrap();
    let (mut nacked, mut acked, mut marked) = (BTreeSet::new(), 0, 0);
    let end = Instant::now() + DEADLINE * 2;
    while seen.len() + acked < N {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(1), second.next()).await else {
            let (ready, unacked) = figures(leader_node, "limit").await;
            assert!(
                Instant::now() < end && (ready, unacked) != (0, 0),
                "{} of {N} messages gone unseen ({marked} marked redelivered when first seen)",
                N - seen.len() - acked
            );
            continue;
        };
        let d = next.expect("not cancelled").unwrap();
        let id = text(&d.data).parse::<usize>().unwrap();
        assert!(!seen.contains(&id), "message {id} was acked before");
        if nacked.insert(id) {
            marked += usize::from(d.redelivered);
            d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        } else {
            d.ack(BasicAckOptions::default()).await.unwrap();
            acked += 1;
        }
    }
    assert_eq!(marked, 0, "messages marked redelivered when first seen");
    super::quorum_forward::counts(leader_node, "limit", 0, 0).await;
    assert_no_panic(&nodes);
}
