//! Quorum queues replicated across a 3-node cluster (real processes): a publish is
//! confirmed once a majority has it, consumers are served from the group's leader, and
//! kill -9 of the leader mid-stream loses no confirmed message, delivers nothing acked
//! before it again, keeps the first deliveries in publish order and marks the
//! redeliveries. reject-publish nacks, the API shows the group, and a delete leaves no
//! group directory behind ([`super::quorum_freeze`]: a frozen leader;
//! [`super::quorum_forward`]: consumers on followers).

use super::{leader, three_nodes, wait_for, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

pub(super) async fn connect(node: &Node) -> Connection {
    Connection::connect(
        &format!("amqp://guest:guest@{}/%2f", node.amqp),
        ConnectionProperties::default(),
    )
    .await
    .expect("lapin connects")
}

pub(super) async fn declare_quorum(node: &Node, name: &str, extra: &str) {
    let body = format!(r#"{{"durable":true,"arguments":{{"x-queue-type":"quorum"{extra}}}}}"#);
    let r = node
        .api()
        .put(&format!("/api/queues/%2F/{name}"), &body)
        .await;
    assert!((200..300).contains(&r.status), "declare: {}", r.text());
}

/// A consume on `node` (any node serves it: a follower forwards it to the leader).
pub(super) async fn try_consume(
    node: &Node,
    queue: &str,
    prefetch: u16,
) -> Result<(Connection, Channel, lapin::Consumer), String> {
    let conn = connect(node).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    match ch
        .basic_consume(
            queue.into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(c) => Ok((conn, ch, c)),
        Err(e) => Err(e.to_string()),
    }
}

/// The leader of `queue`'s group, among `nodes`, as their management API names it.
pub(super) async fn queue_leader(nodes: &[&Node], queue: &str) -> u64 {
    let end = Instant::now() + DEADLINE * 2;
    loop {
        for n in nodes {
            let q = n
                .api()
                .get(&format!("/api/queues/%2F/{queue}"))
                .await
                .json();
            let named = super::member_id(&q["leader"]);
            if let Some(id) = named.filter(|id| nodes.iter().any(|m| m.id == *id)) {
                return id;
            }
        }
        assert!(
            Instant::now() < end,
            "no leader of '{queue}' among the nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `body` (persistent) to `queue` through the default exchange: its confirm.
pub(super) async fn publish_persistent(
    ch: &Channel,
    queue: &str,
    body: &[u8],
) -> lapin::PublisherConfirm {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .expect("a publish is sent")
}

/// Publishes the numbers `numbers` (persistent) to `queue` through `node` with
/// confirms, and waits until each is confirmed (ack).
pub(super) async fn publish_numbered(node: &Node, queue: &str, numbers: std::ops::Range<u64>) {
    let conn = connect(node).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for n in numbers {
        let c = publish_persistent(&ch, queue, n.to_string().as_bytes()).await;
        confirms.push((n, c));
    }
    for (n, c) in confirms {
        assert!(c.await.unwrap().is_ack(), "{queue}: publish {n} confirmed");
    }
}

/// A consumer on the group's leader among `nodes`.
pub(super) async fn consume_on_leader(
    nodes: &[&Node],
    queue: &str,
    prefetch: u16,
) -> (u64, Connection, lapin::Consumer) {
    let led = queue_leader(nodes, queue).await;
    let node = nodes.iter().find(|n| n.id == led).unwrap();
    let (conn, _ch, c) = try_consume(node, queue, prefetch)
        .await
        .expect("the leader serves a consumer");
    (led, conn, c)
}

/// The next delivery of `consumer`, within the deadline.
pub(super) async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(consumer))
        .await
        .expect("a delivery")
        .expect("the consumer goes on")
        .expect("a delivery, not an error")
}

pub(super) fn delivery_count(d: &lapin::message::Delivery) -> Option<i64> {
    d.properties.headers().as_ref().and_then(|h| {
        h.inner()
            .iter()
            .find(|(k, _)| k.as_str() == "x-delivery-count")
            .and_then(|(_, v)| match v {
                AMQPValue::LongLongInt(n) => Some(*n),
                AMQPValue::LongInt(n) => Some(i64::from(*n)),
                AMQPValue::ShortInt(n) => Some(i64::from(*n)),
                _ => None,
            })
    })
}

/// What the consumer side saw.
#[derive(Default)]
struct Seen {
    /// (number, redelivered, x-delivery-count, after the kill).
    deliveries: Vec<(u64, bool, Option<i64>, bool)>,
    acked: BTreeSet<u64>,
}

const WINDOW: usize = 300;
const AHEAD: u64 = 2000;
const PREFETCH: u16 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_loses_no_confirmed_message_when_its_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_nodes(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    declare_quorum(&nodes[0], "qq", "").await;
    let (old, conn, mut consumer) = {
        let all: Vec<_> = nodes.iter().collect();
        consume_on_leader(&all, "qq", PREFETCH).await
    };
    // The publisher lives on a node that survives: its publishes are forwarded to
    // the group's leader, and go on through the next one.
    let publisher_node = nodes.iter().find(|n| n.id != old).unwrap();
    let pconn = connect(publisher_node).await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let nacked = Arc::new(Mutex::new(0u64));
    // Publishes up to AHEAD messages past what the consumer has seen, until told to
    // stop (a while after the failover): `(bound, stop)`.
    let (gate, mut gate_rx) = tokio::sync::watch::channel((AHEAD, false));
    let publishing = {
        let (confirmed, nacked) = (confirmed.clone(), nacked.clone());
        tokio::spawn(async move {
            let mut window = VecDeque::new();
            for n in 0.. {
                let (_, stop) = *gate_rx
                    .wait_for(|(bound, stop)| *stop || n < *bound)
                    .await
                    .unwrap();
                if stop {
                    break;
                }
                let c = publish_persistent(&pch, "qq", n.to_string().as_bytes()).await;
                window.push_back((n, c));
                while window.len() >= WINDOW {
                    let (n, c) = window.pop_front().unwrap();
                    match c.await {
                        Ok(c) if c.is_ack() => {
                            confirmed.lock().unwrap().insert(n);
                        }
                        _ => *nacked.lock().unwrap() += 1,
                    }
                }
            }
            for (n, c) in window {
                match c.await {
                    Ok(c) if c.is_ack() => {
                        confirmed.lock().unwrap().insert(n);
                    }
                    _ => *nacked.lock().unwrap() += 1,
                }
            }
        })
    };

    // Consume and ack until 500 are acked, then hold the next deliveries unacked
    // until the leader's applied queue shows every ack committed (what it has
    // checked out is exactly the prefetch the client holds).
    let started = Instant::now();
    let mut seen = Seen::default();
    let mut held = Vec::new();
    let end = Instant::now() + DEADLINE * 3;
    let leader_node = nodes.iter().find(|n| n.id == old).unwrap();
    loop {
        assert!(Instant::now() < end, "the first phase did not finish");
        if seen.acked.len() >= 500 && held.len() == PREFETCH as usize {
            let q = leader_node.api().get("/api/queues/%2F/qq").await.json();
            if q["messages_unacknowledged"] == PREFETCH as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .expect("a delivery")
            .expect("the consumer goes on")
            .expect("a delivery");
        let n: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
        seen.deliveries
            .push((n, d.redelivered, delivery_count(&d), false));
        gate.send_replace((seen.deliveries.len() as u64 + AHEAD, false));
        if seen.acked.len() < 500 {
            d.ack(BasicAckOptions::default()).await.unwrap();
            seen.acked.insert(n);
        } else {
            held.push(n);
        }
    }
    eprintln!("quorum failover: first phase {:?}", started.elapsed());
    let acked_before = seen.acked.clone();
    let delivered_before: BTreeSet<u64> = seen.deliveries.iter().map(|d| d.0).collect();

    // kill -9 the group's leader mid-stream (the publisher is still publishing).
    assert!(!publishing.is_finished(), "still publishing");
    let at = nodes.iter().position(|n| n.id == old).unwrap();
    let at_kill = confirmed.lock().unwrap().len();
    nodes[at].kill9();
    let killed = Instant::now();
    drop(conn);
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != old).collect();
    let (new, _conn2, mut consumer) = consume_on_leader(&survivors, "qq", PREFETCH).await;
    eprintln!(
        "quorum failover: a consumer on the new leader {:?} after the kill",
        killed.elapsed()
    );
    assert_ne!(new, old, "a new leader serves the queue");

    // Consume the rest until every confirmed message is acked.
    let end = Instant::now() + DEADLINE * 3;
    let mut failover = None;
    loop {
        let now_confirmed = confirmed.lock().unwrap().len();
        if failover.is_none() && now_confirmed > at_kill + WINDOW {
            // A publish made after the kill was confirmed (the window was full).
            failover = Some(killed.elapsed());
        }
        if now_confirmed > at_kill + 2000 {
            gate.send_replace((0, true));
        }
        let done = publishing.is_finished();
        let missing = {
            let c = confirmed.lock().unwrap();
            c.difference(&seen.acked).count()
        };
        if done && missing == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "confirmed messages not delivered after the failover: {missing} missing"
        );
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await
        else {
            continue;
        };
        let n: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
        seen.deliveries
            .push((n, d.redelivered, delivery_count(&d), true));
        if !gate.borrow().1 {
            gate.send_replace((n + AHEAD, false));
        }
        d.ack(BasicAckOptions::default()).await.unwrap();
        seen.acked.insert(n);
    }
    publishing.await.unwrap();

    let confirmed = confirmed.lock().unwrap().clone();
    eprintln!(
        "quorum failover: {} confirmed ({at_kill} before the kill), {} nacked, {} deliveries, {} acked before the kill; kill -9 of the leader to a confirm of a later publish: {failover:?}",
        confirmed.len(),
        nacked.lock().unwrap(),
        seen.deliveries.len(),
        acked_before.len()
    );
    assert!(failover.is_some(), "publishes confirmed after the failover");
    // No confirmed message lost.
    assert!(confirmed.is_subset(&seen.acked));
    for (n, redelivered, count, after) in &seen.deliveries {
        // Nothing acked before the kill is delivered after it.
        if *after {
            assert!(!acked_before.contains(n), "{n} was acked before the kill");
        }
        // A message delivered before the kill and again after it is marked.
        if *after && delivered_before.contains(n) {
            assert!(*redelivered, "{n} redelivered unmarked");
            assert!(
                count.is_some_and(|c| c >= 1),
                "{n}: x-delivery-count {count:?}"
            );
        }
    }
    // First deliveries in publish order (a publish retried across the failover may
    // come twice: at-least-once; its first copy is the one in order).
    let mut first_seen = BTreeSet::new();
    let mut last = None;
    for (n, redelivered, _, _) in &seen.deliveries {
        if *redelivered || !first_seen.insert(*n) {
            continue;
        }
        assert!(
            last < Some(*n),
            "first deliveries out of order: {n} after {last:?}"
        );
        last = Some(*n);
    }

    // The killed node restarts its member from its log and catches up with the group.
    block_in_place(|| nodes[at].restart());
    block_in_place(|| {
        wait_for("the restarted member caught up", DEADLINE, || {
            let s = nodes[at].status()?;
            let group_of = |id: u64| -> Option<serde_json::Value> {
                let n = s["nodes"].as_array()?.iter().find(|n| n[0]["id"] == id)?;
                Some(n[0]["groups"][0].clone())
            };
            let (mine, leader) = (group_of(old)?, group_of(new)?);
            (mine["leader"] == new
                && mine["applied_index"].as_u64().is_some()
                && mine["applied_index"] == leader["last_log_index"])
                .then_some(())
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_nacks_when_full_shows_its_group_and_a_delete_leaves_no_group() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_nodes(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    block_in_place(|| leader(&all));
    declare_quorum(
        &nodes[1],
        "capped",
        r#","x-max-length":2,"x-overflow":"reject-publish""#,
    )
    .await;
    // Each node runs a member: one directory per group under data_dir/raft/queues.
    let groups = |n: &Node| -> Vec<String> {
        std::fs::read_dir(n.data_dir().join("raft").join("queues"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = block_in_place(|| {
        wait_for("a group member on every node", DEADLINE, || {
            let g = groups(&nodes[0]);
            (g.len() == 1 && nodes.iter().all(|n| groups(n) == g)).then(|| g[0].clone())
        })
    });
    let led = queue_leader(&all, "capped").await;
    // reject-publish: the third publish is nacked (on a follower: forwarded).
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    let conn = connect(follower).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut answers = Vec::new();
    for i in 0..3 {
        let c = ch
            .basic_publish(
                "".into(),
                "capped".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        answers.push(c.is_ack());
    }
    assert_eq!(
        answers,
        [true, true, false],
        "reject-publish nacks the third"
    );
    // The native protocol's confirm says the same, naming why.
    let native = actormq::client::Client::connect(actormq::client::ConnectOptions::new(
        follower.native.clone(),
    ))
    .await
    .unwrap();
    let refused = native
        .publish("", "capped", "3")
        .await
        .unwrap()
        .await
        .expect_err("the full queue refuses it")
        .to_string();
    assert!(refused.contains("is full"), "{refused}");
    // Every member's API shows the group: its leader, members, and the count of its
    // applied queue.
    for n in &nodes {
        let end = Instant::now() + DEADLINE;
        loop {
            let q = n.api().get("/api/queues/%2F/capped").await.json();
            let leader_ok = q["leader"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("node{led}@")));
            if leader_ok && q["messages"] == 2 {
                assert_eq!(q["members"].as_array().map(Vec::len), Some(3), "{q}");
                assert_eq!(q["group"], group.parse::<u64>().unwrap(), "{q}");
                break;
            }
            assert!(Instant::now() < end, "node {}: {q}", n.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // `actormq cluster status` lists each node's member of the group.
    let status = block_in_place(|| nodes[0].status()).expect("status");
    let listed: Vec<u64> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n[0]["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g["id"] == group.parse::<u64>().unwrap()))
        })
        .map(|n| n[0]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [1, 2, 3], "{status}");

    // A delete on any node stops every member and removes its directory.
    let r = nodes[2].api().delete("/api/queues/%2F/capped").await;
    assert!((200..300).contains(&r.status), "delete: {}", r.text());
    // The member logs once its Raft has shut down and its directory is gone.
    block_in_place(|| {
        wait_for(
            "every member stopped, no group directory left",
            DEADLINE,
            || {
                nodes
                    .iter()
                    .all(|n| {
                        groups(n).is_empty()
                            && n.logs()
                                .contains("quorum queue group member stopped and removed")
                    })
                    .then_some(())
            },
        )
    });
}
