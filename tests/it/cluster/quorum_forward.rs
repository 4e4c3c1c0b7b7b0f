//! Consumers on any node of a 3-node cluster (real processes): a consume or a get on
//! a node that does not lead the quorum queue's group is served by the leader
//! through a consume session; the consumer follows a new leader after kill -9 of the
//! old one without reconnecting; a consumer that goes gives its messages back (native
//! protocol too); an exclusive consume the leader refuses is cancelled
//! ([`super::quorum_forward_more`]: a node that is no member of the group; a measure).

use super::quorum::{
    connect, declare_quorum, delivery_count, next_delivery, publish_persistent, queue_leader,
    try_consume,
};
use super::{leader, three_nodes, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions};
use lapin::Channel;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Publishes `bodies` with confirms on `ch`; all must be confirmed.
pub(super) async fn publish_confirmed(
    ch: &Channel,
    queue: &str,
    bodies: impl IntoIterator<Item = String>,
) {
    let mut window = VecDeque::new();
    for b in bodies {
        let c = publish_persistent(ch, queue, b.as_bytes()).await;
        window.push_back((b, c));
        if window.len() >= 100 {
            let (b, c) = window.pop_front().unwrap();
            assert!(c.await.unwrap().is_ack(), "{b} confirmed");
        }
    }
    for (b, c) in window {
        assert!(c.await.unwrap().is_ack(), "{b} confirmed");
    }
}

/// Waits until `node`'s view of `queue` has `ready` ready and `unacked` unacked
/// messages (what its member applied: acks committed).
pub(super) async fn counts(node: &Node, queue: &str, ready: u64, unacked: u64) {
    let what = format!("expected {ready} ready, {unacked} unacked");
    super::queue_until(node, queue, &what, |q| {
        q["messages_ready"] == ready && q["messages_unacknowledged"] == unacked
    })
    .await;
}

pub(super) fn text(d: &[u8]) -> String {
    std::str::from_utf8(d).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_a_follower_gets_every_message_in_order_and_its_acks_survive_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "fwd", "").await;
    let led = queue_leader(&all, "fwd").await;
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    let pconn = connect(follower).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "fwd", (0..300).map(|n| n.to_string())).await;

    // Consumed on the follower, in order, first deliveries; every ack committed.
    let (_conn, ch, mut consumer) = try_consume(follower, "fwd", 20)
        .await
        .expect("a follower serves a consumer");
    for n in 0..300 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(text(&d.data), n.to_string(), "in order");
        assert!(!d.redelivered, "{n} first delivery");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();
    counts(leader_node, "fwd", 0, 0).await;
    let q = leader_node.api().get("/api/queues/%2F/fwd").await.json();
    assert_eq!(
        q["consumers"], 1,
        "the follower's consumer, at the leader: {q}"
    );

    // basic.get on the follower: an unacked one is held until acked, an auto-acked
    // one is gone at once.
    let gch = connect(follower).await.create_channel().await.unwrap();
    publish_confirmed(&pch, "fwd", ["got-1".to_string()]).await;
    // The consumer may take it first: its channel is closed for the gets, which gives
    // back whatever it took (a delivery racing a basic.cancel is dropped by the
    // connection and held by the channel until it closes: waiting a while for it, as
    // this test did, failed once under load).
    ch.close(200, "bye".into()).await.unwrap();
    drop(consumer);
    let end = Instant::now() + DEADLINE;
    let got = loop {
        if let Some(m) = gch
            .basic_get("fwd".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            break m;
        }
        assert!(Instant::now() < end, "the get finds the message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(text(&got.delivery.data), "got-1");
    counts(leader_node, "fwd", 0, 1).await;
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    counts(leader_node, "fwd", 0, 0).await;

    // A consumer on the follower acks "acked"; the ack is committed; kill -9 of the
    // leader: the same consumer goes on, and "acked" never comes back.
    let (_conn2, _ch2, mut consumer) = try_consume(follower, "fwd", 20).await.unwrap();
    publish_confirmed(&pch, "fwd", ["acked".to_string()]).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.data), "acked");
    d.ack(BasicAckOptions::default()).await.unwrap();
    counts(leader_node, "fwd", 0, 0).await;
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    nodes[at].kill9();
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    publish_confirmed(&pch, "fwd", ["after".to_string()]).await;
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("a delivery after the kill")
        .expect("not cancelled")
        .unwrap();
    assert_eq!(text(&d.data), "after", "the acked message never comes back");
    // Not asserted: `d.redelivered`. Under load the session may move twice around the
    // kill, and a delivery it had taken comes again marked redelivered (at least once;
    // seen once in a full run).
    d.ack(BasicAckOptions::default()).await.unwrap();
    counts(follower, "fwd", 0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_consumer_follows_a_new_leader_after_kill_9_without_reconnecting() {
    const PREFETCH: u16 = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "follow", "").await;
    let led = queue_leader(&all, "follow").await;
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();

    // A publisher on the follower, confirming, until told to stop.
    let pconn = connect(follower).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publishing = {
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            let mut window = VecDeque::new();
            for n in 0u64.. {
                if *stopped.borrow() {
                    break;
                }
                let c = publish_persistent(&pch, "follow", n.to_string().as_bytes()).await;
                window.push_back((n, c));
                while window.len() >= 100 {
                    let (n, c) = window.pop_front().unwrap();
                    if c.await.is_ok_and(|c| c.is_ack()) {
                        confirmed.lock().unwrap().insert(n);
                    }
                }
            }
            for (n, c) in window {
                if c.await.is_ok_and(|c| c.is_ack()) {
                    confirmed.lock().unwrap().insert(n);
                }
            }
        })
    };

    // Ack 300, then hold a prefetch's worth until the leader shows the acks committed.
    let (_conn, _ch, mut consumer) = try_consume(follower, "follow", PREFETCH).await.unwrap();
    let mut acked = BTreeSet::new();
    let mut held = Vec::new();
    let mut before: BTreeMap<u64, u32> = BTreeMap::new();
    let end = Instant::now() + DEADLINE * 2;
    loop {
        assert!(Instant::now() < end, "the first phase did not finish");
        if held.len() == PREFETCH as usize {
            let q = leader_node.api().get("/api/queues/%2F/follow").await.json();
            if q["messages_unacknowledged"] == PREFETCH as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let d = next_delivery(&mut consumer).await;
        let n: u64 = text(&d.data).parse().unwrap();
        assert!(!d.redelivered, "{n}: nothing redelivered before the kill");
        *before.entry(n).or_default() += 1;
        if acked.len() < 300 {
            d.ack(BasicAckOptions::default()).await.unwrap();
            acked.insert(n);
        } else {
            held.push(d);
        }
    }
    let acked_before = acked.clone();

    // kill -9 of the leader; the same consumer goes on.
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    nodes[at].kill9();
    let killed = Instant::now();
    // An ack of a delivery the dead leader made settles nothing: the message comes
    // again, marked.
    for d in held.drain(..) {
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let mut after = Vec::new();
    let mut first_after = None;
    let end = Instant::now() + DEADLINE * 3;
    loop {
        let now_confirmed = confirmed.lock().unwrap().len();
        if now_confirmed > acked_before.len() + PREFETCH as usize + 1500 {
            let _ = stop.send(true);
        }
        let missing = {
            let c = confirmed.lock().unwrap();
            c.difference(&acked).count()
        };
        if publishing.is_finished() && missing == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "confirmed messages not delivered after the kill: {missing} missing"
        );
        let Ok(next) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await else {
            continue;
        };
        let d = next.expect("the consumer is not cancelled").unwrap();
        first_after.get_or_insert_with(|| killed.elapsed());
        let n: u64 = text(&d.data).parse().unwrap();
        after.push((n, d.redelivered, delivery_count(&d)));
        d.ack(BasicAckOptions::default()).await.unwrap();
        acked.insert(n);
    }
    publishing.await.unwrap();
    let confirmed = confirmed.lock().unwrap().clone();
    eprintln!(
        "quorum forward: {} confirmed, {} acked before the kill, {} deliveries after it, the first {:?} after the kill",
        confirmed.len(),
        acked_before.len(),
        after.len(),
        first_after
    );
    assert!(confirmed.is_subset(&acked), "no confirmed message lost");
    for (n, redelivered, count) in &after {
        assert!(!acked_before.contains(n), "{n} was acked before the kill");
        if before.contains_key(n) {
            assert!(*redelivered, "{n} redelivered unmarked");
            assert!(
                count.is_some_and(|c| c >= 1),
                "{n}: x-delivery-count {count:?}"
            );
        }
    }
    // Every message held at the kill came again.
    let again: BTreeSet<u64> = after.iter().map(|a| a.0).collect();
    for n in before.keys().filter(|n| !acked_before.contains(n)) {
        assert!(again.contains(n), "held {n} redelivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_consumer_that_disconnects_returns_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "back", "").await;
    let led = queue_leader(&all, "back").await;
    let followers: Vec<&Node> = nodes.iter().filter(|n| n.id != led).collect();
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();
    let pconn = connect(followers[0]).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&pch, "back", (0..10).map(|n| n.to_string())).await;

    // Taken on a follower, not acked, then the client goes.
    let (conn, _ch, mut consumer) = try_consume(followers[0], "back", 10).await.unwrap();
    for n in 0..10 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(text(&d.data), n.to_string());
    }
    counts(leader_node, "back", 0, 10).await;
    // A get on the other follower, not acked, and its client goes too.
    publish_confirmed(&pch, "back", ["got".to_string()]).await;
    let gconn = connect(followers[1]).await;
    let gch = gconn.create_channel().await.unwrap();
    let got = gch
        .basic_get("back".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(text(&got.delivery.data), "got");
    counts(leader_node, "back", 0, 11).await;
    conn.close(200, "bye".into()).await.unwrap();
    gconn.close(200, "bye".into()).await.unwrap();
    counts(leader_node, "back", 11, 0).await;

    // Given back in their places, marked.
    let (aconn, _ch, mut again) = try_consume(followers[1], "back", 20).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..11 {
        let d = tokio::time::timeout(DEADLINE, again.next())
            .await
            .expect("a redelivery")
            .unwrap()
            .unwrap();
        assert!(d.redelivered, "marked");
        assert_eq!(delivery_count(&d), Some(1));
        seen.push(text(&d.data));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let expected: Vec<String> = (0..10)
        .map(|n| n.to_string())
        .chain(["got".to_string()])
        .collect();
    assert_eq!(seen, expected);
    counts(leader_node, "back", 0, 0).await;

    // The native protocol's get and consume on a follower, the same way.
    aconn.close(200, "bye".into()).await.unwrap();
    // The close reaches the leader's member after close-ok: until it has, a publish
    // could still be delivered to the closing consumer and come back redelivered.
    super::queue_until(leader_node, "back", "no consumer left", |q| {
        q["consumers"] == 0
    })
    .await;
    publish_confirmed(&pch, "back", ["n0", "n1", "n2"].map(String::from)).await;
    let native = actormq::client::Client::connect(actormq::client::ConnectOptions::new(
        followers[0].native.clone(),
    ))
    .await
    .unwrap();
    let got = native.get("back", false).await.unwrap().expect("a message");
    assert_eq!(got.delivery.body, b"n0".as_slice());
    assert!(!got.delivery.redelivered);
    got.delivery.ack().unwrap();
    let mut c = native
        .consume("back", &actormq::client::ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    for want in ["n1", "n2"] {
        let d = tokio::time::timeout(DEADLINE, c.next())
            .await
            .expect("a native delivery")
            .unwrap()
            .unwrap();
        assert_eq!(d.body, want.as_bytes());
        assert_eq!(d.delivery_count, 1);
        d.ack().unwrap();
    }
    counts(leader_node, "back", 0, 0).await;

    // An exclusive consume on a follower while the native consumer is attached: the
    // follower answered consume-ok, the leader refuses it, the client is told by a
    // basic.cancel.
    let xconn = connect(followers[1]).await;
    let xch = xconn.create_channel().await.unwrap();
    let mut exclusive = xch
        .basic_consume(
            "back".into(),
            "x".into(),
            lapin::options::BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume-ok on the follower");
    let ended = tokio::time::timeout(DEADLINE, exclusive.next())
        .await
        .expect("the leader's refusal arrives");
    assert!(ended.is_none(), "cancelled by the broker: {ended:?}");
}
