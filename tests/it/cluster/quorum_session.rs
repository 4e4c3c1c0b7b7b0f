//! Consume sessions' faults (real processes): a forwarded consumer the leader refuses
//! is forgotten by its follower; an exclusive consumer stays exclusive when the node
//! that lost the group's leadership moves it to the new leader; auto-ack deliveries
//! in flight when a follower's consumer is cancelled are not lost; `basic.qos` after
//! a consume on a follower reaches the leader; a follower's consumer goes on after a
//! frozen leader is replaced, without reconnecting.

use super::quorum::{connect, declare_quorum, next_delivery, queue_leader, try_consume};
use super::quorum_forward::{counts, publish_confirmed, text};
use super::{assert_no_panic, leader, three_nodes, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// A consume of `queue` on `ch` with tag `tag`.
async fn consume_on(
    ch: &Channel,
    queue: &str,
    tag: &str,
    exclusive: bool,
    no_ack: bool,
) -> Result<lapin::Consumer, String> {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions {
            exclusive,
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| e.to_string())
}

/// A confirming publisher on `node`.
async fn publisher(node: &Node) -> (Connection, Channel) {
    let conn = connect(node).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// `node`'s count of `queue`'s consumers reaches `n`.
async fn consumers(node: &Node, queue: &str, n: u64) {
    let what = format!("expected {n} consumers of {queue}");
    super::queue_until(node, queue, &what, |q| q["consumers"] == n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_consumer_the_leader_refuses_is_forgotten_by_its_follower() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "refused", "").await;
    let led = queue_leader(&all, "refused").await;
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();
    let follower = nodes.iter().find(|n| n.id != led).unwrap();

    // A consumer on the leader; an exclusive one on the follower is answered
    // consume-ok there, then refused by the leader (a basic.cancel).
    let (_lconn, lch, _lconsumer) = try_consume(leader_node, "refused", 10).await.unwrap();
    let xconn = connect(follower).await;
    let xch = xconn.create_channel().await.unwrap();
    let mut x = consume_on(&xch, "refused", "x", true, false)
        .await
        .expect("consume-ok on the follower");
    let ended = tokio::time::timeout(DEADLINE, x.next())
        .await
        .expect("the leader's refusal arrives");
    assert!(ended.is_none(), "cancelled by the broker: {ended:?}");
    // The follower counts no consumer of its own for it.
    consumers(follower, "refused", 0).await;

    // Once the leader's consumer is gone, the same exclusive consume (same channel,
    // same tag) is accepted, and served.
    lch.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    consumers(leader_node, "refused", 0).await;
    let mut x = consume_on(&xch, "refused", "x", true, false)
        .await
        .expect("the exclusive consume is accepted again");
    let (_pconn, pch) = publisher(follower).await;
    publish_confirmed(&pch, "refused", ["one".to_string()]).await;
    let d = tokio::time::timeout(DEADLINE, x.next())
        .await
        .expect("a delivery")
        .expect("not cancelled")
        .unwrap();
    assert_eq!(text(&d.data), "one");
    d.ack(BasicAckOptions::default()).await.unwrap();
    counts(leader_node, "refused", 0, 0).await;
    // And it is exclusive: a consume on the other follower is refused (at once there,
    // or by the leader with a basic.cancel).
    let other = nodes.iter().find(|n| n.id != led && n.id != follower.id);
    let oconn = connect(other.unwrap()).await;
    let och = oconn.create_channel().await.unwrap();
    if let Ok(mut c) = consume_on(&och, "refused", "o", false, false).await {
        let ended = tokio::time::timeout(DEADLINE, c.next())
            .await
            .expect("the leader's refusal arrives");
        assert!(ended.is_none(), "refused by the leader: {ended:?}");
    }
    assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_consumer_stays_exclusive_when_its_node_loses_the_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "xmove", "").await;
    let old = queue_leader(&all, "xmove").await;
    let old_node = nodes.iter().find(|n| n.id == old).unwrap();
    let xconn = connect(old_node).await;
    let xch = xconn.create_channel().await.unwrap();
    let mut x = consume_on(&xch, "xmove", "x", true, false)
        .await
        .expect("an exclusive consumer on the leader");
    // Exclusive on the leader already: another consume is refused.
    assert!(
        try_consume(old_node, "xmove", 10).await.is_err(),
        "a consume beside an exclusive consumer is refused"
    );

    // Frozen past the election timeout, then thawed: the old leader moves its
    // consumer to the new leader.
    old_node.signal(libc::SIGSTOP);
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != old).collect();
    let new = queue_leader(&survivors, "xmove").await;
    old_node.signal(libc::SIGCONT);
    let new_node = nodes.iter().find(|n| n.id == new).unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        let q = old_node.api().get("/api/queues/%2F/xmove").await.json();
        let moved = super::member_id(&q["leader"]) == Some(new);
        let at_new = new_node.api().get("/api/queues/%2F/xmove").await.json();
        if moved && at_new["consumers"] == 1 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the thawed node moves its consumer to node {new}: {q} / {at_new}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Still exclusive at the new leader: a consume there is refused.
    let refused = try_consume(new_node, "xmove", 10).await;
    assert!(
        refused.is_err(),
        "a consume beside the moved exclusive consumer is refused"
    );
    // And the moved consumer is served.
    let (_pconn, pch) = publisher(new_node).await;
    publish_confirmed(&pch, "xmove", ["after".to_string()]).await;
    let d = tokio::time::timeout(DEADLINE, x.next())
        .await
        .expect("the moved consumer receives")
        .expect("not cancelled")
        .unwrap();
    assert_eq!(text(&d.data), "after");
    d.ack(BasicAckOptions::default()).await.unwrap();
    counts(new_node, "xmove", 0, 0).await;
    assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ack_deliveries_in_flight_when_a_follower_consumer_is_cancelled_are_not_lost() {
    const N: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "noack", "").await;
    let led = queue_leader(&all, "noack").await;
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    let (_pconn, pch) = publisher(follower).await;
    publish_confirmed(&pch, "noack", (0..N).map(|n| n.to_string())).await;

    // An auto-ack consumer on the follower, cancelled after a few deliveries while
    // many more are on their way (the transport window is 1000).
    let conn = connect(follower).await;
    let ch = conn.create_channel().await.unwrap();
    let mut c = consume_on(&ch, "noack", "auto", false, true).await.unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let d = next_delivery(&mut c).await;
        seen.insert(text(&d.data).parse::<usize>().unwrap());
    }
    ch.basic_cancel("auto".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    while let Ok(Some(d)) = tokio::time::timeout(DEADLINE, c.next()).await {
        seen.insert(text(&d.unwrap().data).parse::<usize>().unwrap());
    }
    let received = seen.len();
    rest_is_in_the_queue(follower, leader_node, "noack", N, seen, received).await;
    assert_no_panic(&nodes);
}

/// Whatever the auto-ack consumer of `queue` did not receive (`seen`, `received`
/// of them before its cancel) is still in the queue: consumed with acks on
/// `follower` until all `n` are seen, and the queue is then empty at its leader.
pub(super) async fn rest_is_in_the_queue(
    follower: &Node,
    leader_node: &Node,
    queue: &str,
    n: usize,
    mut seen: BTreeSet<usize>,
    received: usize,
) {
    let (_conn2, _ch2, mut rest) = try_consume(follower, queue, 500).await.unwrap();
    let end = Instant::now() + DEADLINE * 2;
    // Until every message was seen and the queue is empty at its leader: a delivery
    // written out whose ack had not reached the leader when its consumer was
    // cancelled comes again (at least once), and is acked here too.
    loop {
        let now = Instant::now();
        let Ok(next) = tokio::time::timeout(Duration::from_secs(1), rest.next()).await else {
            let q = leader_node
                .api()
                .get(&format!("/api/queues/%2F/{queue}"))
                .await
                .json();
            let settled = q["messages_ready"] == 0 && q["messages_unacknowledged"] == 0;
            if settled && seen.len() == n {
                break;
            }
            assert!(
                now < end && !settled,
                "{} of {n} messages missing ({received} received by the auto-ack consumer): {q}",
                n - seen.len()
            );
            continue;
        };
        let d = next.expect("not cancelled").unwrap();
        seen.insert(text(&d.data).parse::<usize>().unwrap());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    eprintln!("auto-ack consumer cancelled: {received} received, the rest consumed after");
}

/// Issue 17: the client's connection drops the deliveries that reach it for a
/// consumer it has cancelled, and gives their transport credit back; before the
/// fix the cancel itself went to the queue only once the connection's mailbox was
/// empty. A raw client sends the `basic.cancel` at the end of one write of
/// publishes (to no queue, on another channel), so deliveries come into the
/// connection's mailbox while it handles the publishes read with the cancel: their
/// credit reached the follower's session before the cancel, and the session acked
/// them at the leader as written (lost). One round hits that or not: twelve rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ack_deliveries_dropped_behind_a_cancel_on_a_busy_connection_are_not_lost() {
    use crate::security::amqp_raw::{
        cancel, consume_no_ack, frame, handshake, method, unroutable_publishes,
    };
    use tokio::io::{AsyncWriteExt, BufReader};
    const N: usize = 10_000;
    const FLOOD: usize = 1000;
    const ROUNDS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "busy", "").await;
    let led = queue_leader(&all, "busy").await;
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    let (_pconn, pch) = publisher(follower).await;
    publish_confirmed(&pch, "busy", (0..N).map(|n| n.to_string())).await;

    let s = tokio::net::TcpStream::connect(follower.amqp.to_string())
        .await
        .unwrap();
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd);
    handshake(&mut tokio::io::join(&mut rd, &mut wr), 2047).await;
    wr.write_all(&method(1, 20, 10, &[0])).await.unwrap();
    wr.write_all(&method(2, 20, 10, &[0])).await.unwrap();
    // The publishes on channel 2 to be read with the cancel, in one write.
    let flood = unroutable_publishes(2, FLOOD);

    // Rounds on channel 1: a no-ack consume, ten deliveries, the burst ending in its
    // cancel, the deliveries up to cancel-ok (each round hits the race or not).
    let mut seen = BTreeSet::new();
    for round in 0..ROUNDS {
        let q = leader_node.api().get("/api/queues/%2F/busy").await.json();
        if q["messages_ready"].as_u64().unwrap_or(0) < 500 {
            break;
        }
        let tag = format!("auto{round}");
        wr.write_all(&consume_no_ack(1, "busy", &tag))
            .await
            .unwrap();
        let mut burst = flood.clone();
        burst.extend(cancel(1, &tag));
        let (mut n, mut sent, mut body_next) = (0, false, false);
        loop {
            let (kind, ch, p) = frame(&mut rd).await;
            match (kind, ch) {
                (1, 1) if p[..4] == [0, 60, 0, 60] => body_next = true,
                (1, 1) if p[..4] == [0, 60, 0, 31] => break,
                (3, 1) if body_next => {
                    body_next = false;
                    seen.insert(text(&p).parse::<usize>().unwrap());
                    n += 1;
                    if n == 10 && !sent {
                        sent = true;
                        wr.write_all(&burst).await.unwrap();
                    }
                }
                _ => {}
            }
        }
        eprintln!("round {round}: {n} received");
    }
    let received = seen.len();
    rest_is_in_the_queue(follower, leader_node, "busy", N, seen, received).await;
    assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_qos_after_a_consume_on_a_follower_reaches_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "qos", "").await;
    let led = queue_leader(&all, "qos").await;
    let leader_node = nodes.iter().find(|n| n.id == led).unwrap();
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    let (_pconn, pch) = publisher(follower).await;
    publish_confirmed(&pch, "qos", (0..10).map(|n| n.to_string())).await;

    let (_conn, ch, mut c) = try_consume(follower, "qos", 1).await.unwrap();
    let first = next_delivery(&mut c).await;
    assert_eq!(text(&first.data), "0");
    counts(leader_node, "qos", 9, 1).await;
    // A larger prefetch on the same channel: four more come, unacked.
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    for n in 1..5 {
        let d = tokio::time::timeout(DEADLINE, c.next())
            .await
            .expect("a delivery within the new prefetch")
            .unwrap()
            .unwrap();
        assert_eq!(text(&d.data), n.to_string());
    }
    counts(leader_node, "qos", 5, 5).await;
    assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_consumer_goes_on_after_a_frozen_leader_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(&nodes[0], "ice", "").await;
    let old = queue_leader(&all, "ice").await;
    let old_node = nodes.iter().find(|n| n.id == old).unwrap();
    let follower = nodes.iter().find(|n| n.id != old).unwrap();
    let (_pconn, pch) = publisher(follower).await;
    let (_conn, _ch, mut c) = try_consume(follower, "ice", 10).await.unwrap();
    publish_confirmed(&pch, "ice", ["before".to_string()]).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(text(&d.data), "before");
    d.ack(BasicAckOptions::default()).await.unwrap();
    counts(old_node, "ice", 0, 0).await;

    // Frozen: its session is open and silent. The others elect a leader; the
    // follower's session opens there, and the same consumer goes on.
    old_node.signal(libc::SIGSTOP);
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != old).collect();
    let new = queue_leader(&survivors, "ice").await;
    publish_confirmed(&pch, "ice", ["during".to_string()]).await;
    let d = tokio::time::timeout(DEADLINE, c.next())
        .await
        .expect("a delivery while the old leader is frozen")
        .expect("not cancelled")
        .unwrap();
    assert_eq!(text(&d.data), "during");
    d.ack(BasicAckOptions::default()).await.unwrap();
    let new_node = nodes.iter().find(|n| n.id == new).unwrap();
    counts(new_node, "ice", 0, 0).await;
    old_node.signal(libc::SIGCONT);
    assert_no_panic(&nodes);
}
