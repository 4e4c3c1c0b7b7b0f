//! A quorum queue's group leader cut off by the network (network namespaces, as in
//! [`super::partition`]; root only, else skipped with a word on standard error): a
//! publish on the cut-off side is never confirmed while it is cut off (a nack at most),
//! is answered one way or the other once healed, and the majority side goes on
//! confirming publishes through a new group leader. After the heal every confirmed
//! message is there, in order.

use super::partition::{agreed_leader, in_ns, ip, net_or_skip, placed, start_nodes, At};
use super::{assert_no_panic, member_id};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions, ConsumeOptions, PublishOptions};
use futures_util::StreamExt;
use std::time::Instant;
use tokio::task::block_in_place;

const EACH: u64 = 100;

async fn client(addr: String) -> Client {
    Client::connect(
        ConnectOptions::new(addr)
            .credentials("guest", "guest")
            .confirms(true),
    )
    .await
    .expect("the native client connects")
}

/// Publishes `{prefix}{n}` for n in 0..EACH through `at` and waits for every confirm:
/// the bodies the broker confirmed.
async fn publish(at: &At<'_>, prefix: &'static str) -> Vec<String> {
    let addr = at.node.native.clone();
    in_ns(at.ns.clone(), move || async move {
        let c = client(addr).await;
        let options = PublishOptions::default().persistent();
        let mut confirms = Vec::new();
        for n in 0..EACH {
            let body = format!("{prefix}{n}");
            let confirm = c.publish_with("", "pq", &body, &options).await.unwrap();
            confirms.push((body, confirm));
        }
        let mut confirmed = Vec::new();
        for (body, confirm) in confirms {
            if confirm.await.is_ok() {
                confirmed.push(body);
            }
        }
        confirmed
    })
    .await
}

/// The group's leader as `at` sees it, once it names one in `among`.
async fn group_leader(at: &At<'_>, among: &[u64]) -> u64 {
    let end = Instant::now() + DEADLINE * 2;
    loop {
        let row = at.json("/api/queues/%2F/pq").await;
        if let Some(l) = member_id(&row["leader"]).filter(|l| among.contains(l)) {
            return l;
        }
        assert!(
            Instant::now() < end,
            "no group leader among {among:?}: {row}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_group_leader_confirms_nothing_and_the_majority_goes_on() {
    let Some(net) = net_or_skip("cluster::partition_quorum") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| start_nodes(&net, dir.path()));
    let at = placed(&net, &nodes);
    block_in_place(|| agreed_leader(&at));
    let declared = at[0]
        .status(
            "PUT",
            "/api/queues/%2F/pq",
            Some(r#"{"durable":true,"arguments":{"x-queue-type":"quorum"}}"#),
        )
        .await;
    assert!((200..300).contains(&declared), "declare: HTTP {declared}");
    let all: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    let old = group_leader(&at[0], &all).await;
    let old_at = at.iter().find(|a| a.node.id == old).unwrap();
    let others: Vec<&At> = at.iter().filter(|a| a.node.id != old).collect();
    let mut confirmed = publish(old_at, "a").await;
    assert_eq!(confirmed.len() as u64, EACH, "all confirmed before the cut");

    // Cut off: the group's leader keeps running, alone, and is sent one more publish.
    ip(&["link", "set", &net.link(old as usize), "down"]).unwrap();
    let cut = {
        let (ns, addr) = (old_at.ns.clone(), old_at.node.native.clone());
        tokio::spawn(in_ns(ns, move || async move {
            let c = client(addr).await;
            let options = PublishOptions::default().persistent();
            let confirm = c.publish_with("", "pq", "cut", &options).await.unwrap();
            let outcome = tokio::time::timeout(DEADLINE * 4, confirm).await;
            (outcome.map(|r| r.is_ok()), Instant::now())
        }))
    };

    // The majority side elects a new group leader and confirms publishes through it.
    let majority: Vec<u64> = others.iter().map(|a| a.node.id).collect();
    let new = group_leader(others[0], &majority).await;
    confirmed.extend(publish(others[1], "b").await);
    assert_eq!(
        confirmed.len() as u64,
        2 * EACH,
        "the majority side confirms every publish"
    );

    // Healed: the cut-off publish is answered, one way or the other.
    let healed_at = {
        ip(&["link", "set", &net.link(old as usize), "up"]).unwrap();
        Instant::now()
    };
    let (outcome, answered_at) = cut.await.unwrap();
    let acked = outcome.expect("the cut-off publish is answered once healed");
    eprintln!(
        "partition_quorum: the cut-off publish was {} {:?} after the heal",
        if acked { "confirmed" } else { "nacked" },
        answered_at.checked_duration_since(healed_at)
    );
    assert!(
        !acked || answered_at >= healed_at,
        "the cut-off leader confirmed a publish no majority had"
    );
    if acked {
        confirmed.push("cut".into());
    }

    // Every confirmed message is there, the first copies in publish order.
    let leader_at = at
        .iter()
        .find(|a| a.node.id == new)
        .expect("the new leader");
    let current = group_leader(leader_at, &all).await;
    let serving = at.iter().find(|a| a.node.id == current).unwrap();
    let want = confirmed.clone();
    let (ns, addr) = (serving.ns.clone(), serving.node.native.clone());
    let got: Vec<String> = in_ns(ns, move || async move {
        let c = client(addr).await;
        let mut consumer = c
            .consume(
                "pq",
                &ConsumeOptions {
                    prefetch: 500,
                    ..ConsumeOptions::default()
                },
            )
            .await
            .expect("a consume on the group's leader");
        let mut got = Vec::new();
        while !want.iter().all(|w| got.contains(w)) {
            let d = tokio::time::timeout(DEADLINE, consumer.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {} confirmed", got.len(), want.len()))
                .expect("the consumer goes on")
                .expect("a delivery");
            d.ack().unwrap();
            got.push(String::from_utf8(d.body.to_vec()).unwrap());
        }
        got
    })
    .await;
    let mut first = Vec::new();
    for g in &got {
        if !first.contains(g) {
            first.push(g.clone());
        }
    }
    let order: Vec<&String> = first.iter().filter(|g| confirmed.contains(g)).collect();
    let expected: Vec<&String> = confirmed.iter().filter(|c| *c != "cut").collect();
    let order_without_cut: Vec<&String> = order.into_iter().filter(|g| *g != "cut").collect();
    assert_eq!(order_without_cut, expected, "in publish order");
    assert_no_panic(&nodes);
}
