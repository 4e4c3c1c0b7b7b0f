//! Consumer groups on a super stream (single active consumer per partition): members
//! share the partitions floor/ceil, one active member per partition at any time, and a
//! member that leaves hands its partitions over, the new holder resuming at the group's
//! offset with nothing lost. Native client and lapin.

use super::{connect, within};
use crate::mgmt::http::{server, Http};
use crate::support::{eventually, TestServer};
use actormq::broker::superstream::SuperStreamSpec;
use actormq::client::{Client, ConsumeOptions, Consumer, Delivery};
use futures_util::stream::{select_all, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

const PARTITIONS: usize = 6;

fn member_options(tag: String) -> ConsumeOptions {
    ConsumeOptions::prefetch(10)
        .tag(tag)
        .arg("x-stream-consumer-name", "g")
        .arg("x-single-active-consumer", true)
        .arg("x-super-stream", "orders")
        .arg("x-stream-offset", "first")
}

/// Member `name` on its own connection, consuming every partition; its deliveries are
/// acked and recorded (consumer tag, body, redelivered) in `log`.
async fn member(
    server: &TestServer,
    name: &str,
    log: Arc<Mutex<Vec<(String, String, bool)>>>,
) -> Client {
    let c = connect(server).await;
    let mut consumers: Vec<Consumer> = Vec::new();
    for p in 0..PARTITIONS {
        let q = format!("orders-{p}");
        consumers.push(
            c.consume(&q, &member_options(format!("{name}-{p}")))
                .await
                .unwrap(),
        );
    }
    tokio::spawn(async move {
        let mut all = select_all(consumers);
        while let Some(Ok(d)) = all.next().await {
            record(&log, &d);
            let _ = d.ack();
        }
    });
    c
}

fn record(log: &Mutex<Vec<(String, String, bool)>>, d: &Delivery) {
    let body = String::from_utf8(d.body.to_vec()).unwrap();
    log.lock()
        .unwrap()
        .push((d.consumer_tag.to_string(), body, d.redelivered));
}

/// Partition -> tags of its active consumers, from the management API.
async fn active(http: &Http) -> BTreeMap<String, Vec<String>> {
    let list = http.get("/api/consumers/%2F").await.json();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in list.as_array().unwrap() {
        let q = c["queue"]["name"].as_str().unwrap().to_string();
        let e = out.entry(q).or_default();
        if c["active"] == true {
            e.push(c["consumer_tag"].as_str().unwrap().to_string());
        }
    }
    out
}

/// Waits until every partition has exactly one active member and the members hold
/// `counts` partitions each (member name -> count).
async fn wait_balanced(http: &Http, counts: &[(&str, usize)]) -> BTreeMap<String, Vec<String>> {
    let want: BTreeMap<String, usize> = counts.iter().map(|(m, n)| (m.to_string(), *n)).collect();
    let mut last = BTreeMap::new();
    let ok = tokio::time::timeout(crate::support::DEADLINE, async {
        loop {
            last = active(http).await;
            let one_each = last.len() == PARTITIONS && last.values().all(|v| v.len() == 1);
            let mut held: BTreeMap<String, usize> = BTreeMap::new();
            for tags in last.values() {
                for t in tags {
                    *held
                        .entry(t.split('-').next().unwrap().to_string())
                        .or_default() += 1;
                }
            }
            if one_each && held == want {
                return;
            }
            // Polled as `support::eventually` polls, keeping the last reading to show.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "not balanced as {want:?}: {last:?}");
    last
}

async fn publish_keys(c: &Client, from: usize, to: usize) {
    let mut confirms = Vec::new();
    for i in from..to {
        confirms.push(
            c.publish("orders", &format!("key-{i}"), format!("m{i}"))
                .await
                .unwrap(),
        );
    }
    for confirm in confirms {
        within("a confirm", confirm).await.unwrap();
    }
}

async fn wait_all_received(log: &Mutex<Vec<(String, String, bool)>>, n: usize) {
    eventually("every message received", || async {
        let got: HashSet<String> = log.lock().unwrap().iter().map(|e| e.1.clone()).collect();
        (0..n).all(|i| got.contains(&format!("m{i}")))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_a_leaving_member_hands_over_without_loss() {
    let server = server();
    let http = Http::guest(&server);
    let admin = connect(&server).await;
    admin
        .declare_super_stream(&SuperStreamSpec::with_partitions(
            "orders",
            PARTITIONS as u32,
        ))
        .await
        .unwrap();
    publish_keys(&admin, 0, 60).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let a = member(&server, "a", log.clone()).await;
    let b = member(&server, "b", log.clone()).await;
    // Two members, six partitions: three each, a (first owner) on the even ones.
    let held = wait_balanced(&http, &[("a", 3), ("b", 3)]).await;
    assert_eq!(held["orders-0"], ["a-0"]);
    assert_eq!(held["orders-1"], ["b-1"]);
    wait_all_received(&log, 60).await;

    let c = member(&server, "c", log.clone()).await;
    wait_balanced(&http, &[("a", 2), ("b", 2), ("c", 2)]).await;
    publish_keys(&admin, 60, 120).await;
    wait_all_received(&log, 120).await;

    // b leaves: its two partitions go to a and c, three each again.
    b.close().await.unwrap();
    wait_balanced(&http, &[("a", 3), ("c", 3)]).await;
    publish_keys(&admin, 120, 180).await;
    wait_all_received(&log, 180).await;

    // At least once, and only a handover redelivers: every message was received, and
    // none was received twice except marked redelivered.
    let entries = log.lock().unwrap().clone();
    let mut seen = BTreeSet::new();
    for (tag, body, redelivered) in &entries {
        if !seen.insert(body.clone()) {
            assert!(
                *redelivered,
                "{body} again to {tag}, not marked redelivered"
            );
        }
    }
    drop((a, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_holder_resumes_at_the_first_unacked_offset_of_the_one_that_left() {
    let server = server();
    let http = Http::guest(&server);
    let admin = connect(&server).await;
    admin
        .declare_super_stream(&SuperStreamSpec::with_partitions(
            "orders",
            PARTITIONS as u32,
        ))
        .await
        .unwrap();
    for i in 0..8 {
        let confirm = admin
            .publish("", "orders-0", format!("m{i}"))
            .await
            .unwrap();
        within("a confirm", confirm).await.unwrap();
    }
    // a holds orders-0 alone and reads 0..=4 (prefetch 5), acking only 0, 1 and 2.
    let a = connect(&server).await;
    let opts = |tag: &str| ConsumeOptions {
        prefetch: 5,
        ..member_options(tag.to_string())
    };
    let mut ra = a.consume("orders-0", &opts("a-0")).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(within("a delivery", ra.next()).await.unwrap().unwrap());
    }
    assert_eq!(super::offsets(&got), [0, 1, 2, 3, 4]);
    for d in &got[..3] {
        d.ack().unwrap();
    }
    // The acks made room: a is given 5..=7 too, and keeps them unacked.
    for _ in 0..3 {
        got.push(within("a delivery", ra.next()).await.unwrap().unwrap());
    }
    assert_eq!(super::offsets(&got[5..]), [5, 6, 7]);
    // b waits (partition 0 of a group of two is the first member's).
    let b = connect(&server).await;
    let mut rb = b.consume("orders-0", &opts("b-0")).await.unwrap();
    eventually("b waiting", || async {
        active(&http)
            .await
            .get("orders-0")
            .is_some_and(|t| t == &["a-0"])
            && http
                .get("/api/consumers/%2F")
                .await
                .json()
                .as_array()
                .unwrap()
                .len()
                == 2
    })
    .await;
    // a's connection goes: b resumes at 3, the first unacked. Everything a was given
    // comes again marked redelivered; what is published after is not.
    a.close().await.unwrap();
    let mut taken = Vec::new();
    for i in 0..7 {
        if i == 5 {
            for m in ["m8", "m9"] {
                let confirm = admin.publish("", "orders-0", m).await.unwrap();
                within("a confirm", confirm).await.unwrap();
            }
        }
        let d = within("b's delivery", rb.next()).await.unwrap().unwrap();
        d.ack().unwrap();
        taken.push(d);
    }
    assert_eq!(super::offsets(&taken), [3, 4, 5, 6, 7, 8, 9]);
    let flags: Vec<bool> = taken.iter().map(|d| d.redelivered).collect();
    assert_eq!(flags, [true, true, true, true, true, false, false]);
    drop(ra);
}

/// Member `name` over AMQP: one channel, prefetch 10, every partition consumed with
/// the group's consumer arguments; deliveries acked and recorded.
async fn amqp_member(
    server: &TestServer,
    name: &str,
    log: Arc<Mutex<Vec<(String, String, bool)>>>,
) -> lapin::Connection {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let addr = server.handle().amqp_addrs()[0];
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{addr}/%2f"),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-consumer-name".into(),
        AMQPValue::LongString("g".into()),
    );
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut consumers = Vec::new();
    for p in 0..PARTITIONS {
        let c = ch
            .basic_consume(
                format!("orders-{p}").as_str().into(),
                format!("{name}-{p}").as_str().into(),
                BasicConsumeOptions::default(),
                args.clone(),
            )
            .await
            .unwrap();
        consumers.push(c);
    }
    tokio::spawn(async move {
        let mut all = select_all(consumers);
        while let Some(Ok(d)) = all.next().await {
            let body = String::from_utf8(d.data.clone()).unwrap();
            log.lock()
                .unwrap()
                .push((String::new(), body, d.redelivered));
            let _ = d.ack(BasicAckOptions::default()).await;
        }
    });
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_consumers_form_a_group_with_consume_arguments() {
    let server = server();
    let http = Http::guest(&server);
    let admin = connect(&server).await;
    admin
        .declare_super_stream(&SuperStreamSpec::with_partitions(
            "orders",
            PARTITIONS as u32,
        ))
        .await
        .unwrap();
    publish_keys(&admin, 0, 30).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let a = amqp_member(&server, "a", log.clone()).await;
    let b = amqp_member(&server, "b", log.clone()).await;
    wait_balanced(&http, &[("a", 3), ("b", 3)]).await;
    wait_all_received(&log, 30).await;
    a.close(200, "bye".into()).await.unwrap();
    wait_balanced(&http, &[("b", 6)]).await;
    publish_keys(&admin, 30, 60).await;
    wait_all_received(&log, 60).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_member_hands_its_partitions_over_at_once() {
    let server = server();
    let http = Http::guest(&server);
    let admin = connect(&server).await;
    admin
        .declare_super_stream(&SuperStreamSpec::with_partitions(
            "orders",
            PARTITIONS as u32,
        ))
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let _a = member(&server, "a", log.clone()).await;
    let b = connect(&server).await;
    let mut bs = Vec::new();
    for p in 0..PARTITIONS {
        let q = format!("orders-{p}");
        bs.push(
            b.consume(&q, &member_options(format!("b-{p}")))
                .await
                .unwrap(),
        );
    }
    wait_balanced(&http, &[("a", 3), ("b", 3)]).await;
    for c in &mut bs {
        c.cancel().await.unwrap();
    }
    // b's connection stays open: the cancels alone hand its partitions to a.
    wait_balanced(&http, &[("a", 6)]).await;
    publish_keys(&admin, 0, 30).await;
    wait_all_received(&log, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_at_its_first_unacked_offset_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let start = || {
        let dir = dir.clone();
        TestServer::with(move |s| s.storage.data_dir = dir)
    };
    {
        let server = start();
        let c = connect(&server).await;
        c.declare_super_stream(&SuperStreamSpec::with_partitions("orders", 2))
            .await
            .unwrap();
        for i in 0..6 {
            let confirm = c.publish("", "orders-0", format!("m{i}")).await.unwrap();
            within("a confirm", confirm).await.unwrap();
        }
        let mut m = c
            .consume("orders-0", &member_options("a-0".into()))
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(within("a delivery", m.next()).await.unwrap().unwrap());
        }
        // Acked out of order, 2 never: the group's offset stays at 2.
        for i in [0, 1, 3, 4] {
            got[i].ack().unwrap();
        }
        c.close().await.unwrap();
    }
    let server = start();
    let c = connect(&server).await;
    let mut m = c
        .consume("orders-0", &member_options("b-0".into()))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = within("a delivery", m.next()).await.unwrap().unwrap();
        d.ack().unwrap();
        got.push(d);
    }
    assert_eq!(
        super::offsets(&got),
        [2, 3, 4, 5],
        "at least once: nothing skipped"
    );
    // The exchange type came back with the exchange: keys still route by hash
    // (murmur3("hello") % 2 == 1).
    within("confirm", c.publish("orders", "hello", "h").await.unwrap())
        .await
        .unwrap();
    let info = c
        .declare_queue("orders-1", &super::stream().passive())
        .await;
    assert_eq!(info.unwrap().messages, 1);
}
