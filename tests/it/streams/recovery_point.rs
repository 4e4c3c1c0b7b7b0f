//! The active segment's recovery point (`<first>.idx.partial`) across restarts of the
//! real binary: a clean stop leaves one, the next start takes the prefix it covers
//! from it and answers with every record, appends go on at the right offset, and a
//! torn tail after the point (kill -9 mid-write) is cut at the last good frame as
//! before.

use crate::durability::{runtime, within, BrokerProcess};
use actormq::client::{Client, ConnectOptions, ConsumeOptions, QueueOptions};
use actormq::FieldValue;
use futures_util::StreamExt;
use std::path::Path;

async fn connect(b: &BrokerProcess) -> Client {
    within("connect", Client::connect(ConnectOptions::new(&b.addr)))
        .await
        .unwrap()
}

fn offset_of(d: &actormq::client::Delivery) -> i64 {
    d.properties
        .headers
        .as_ref()
        .and_then(|h| h.get("x-stream-offset"))
        .and_then(FieldValue::as_int)
        .expect("an x-stream-offset header")
}

/// First offsets of the files of `dir` named `<first>.<suffix>`, in order.
fn files(dir: &Path, suffix: &str) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().ok()?;
            n.strip_suffix(suffix)?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// Publishes `m{from}` .. `m{to - 1}` to stream `s` and waits for every confirm.
async fn publish(c: &Client, from: u64, to: u64) {
    let mut pending = Vec::new();
    for i in from..to {
        pending.push(c.publish("", "s", format!("m{i:04}")).await.unwrap());
    }
    for p in pending {
        within("a confirm", p).await.unwrap();
    }
}

/// Reads stream `s` from offset `from` and checks records `from..to` are `m{offset}`.
async fn read(c: &Client, from: u64, to: u64) {
    let opts = ConsumeOptions::prefetch(64).arg("x-stream-offset", from as i64);
    let mut s = c.consume("s", &opts).await.unwrap();
    for want in from..to {
        let d = match within("a delivery", s.next()).await {
            Some(Ok(d)) => d,
            other => panic!("record {want}: {other:?}"),
        };
        assert_eq!(offset_of(&d), want as i64);
        assert_eq!(&d.body[..], format!("m{want:04}").as_bytes());
        d.ack().unwrap();
    }
    s.cancel().await.unwrap();
}

#[test]
fn a_broker_restarted_over_a_recovery_point_answers_with_every_record_and_appends_on() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let opts = QueueOptions::durable()
        .arg("x-queue-type", "stream")
        .arg("x-stream-max-segment-size-bytes", 16384i64);
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("s", &opts).await.unwrap();
        publish(&c, 0, 400).await;
    });
    broker.stop();
    let dir = root.path().join("data/streams/%2F/s");
    let segments = files(&dir, ".seg");
    assert!(segments.len() > 1, "sealed segments and the active one");
    // The clean stop left the active segment a point; the sealed ones have index files.
    assert_eq!(files(&dir, ".idx.partial"), vec![*segments.last().unwrap()]);

    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        let info = c.declare_queue("s", &opts).await.unwrap();
        assert_eq!(info.messages, 400);
        read(&c, 0, 400).await;
        publish(&c, 400, 410).await;
        read(&c, 395, 410).await;
    });
    let log = broker.log();
    assert!(!log.contains("recovery point not used"), "{log}");
    // After kill -9 the point is still there, and what followed it is scanned.
    broker.kill9();
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        let info = c.declare_queue("s", &opts).await.unwrap();
        assert_eq!(info.messages, 410);
        read(&c, 380, 410).await;
        publish(&c, 410, 411).await;
        read(&c, 410, 411).await;
    });
    let log = broker.log();
    assert!(!log.contains("recovery point not used"), "{log}");
    broker.stop();
}

#[test]
fn a_torn_tail_after_the_recovery_point_is_cut_at_the_last_good_frame() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let opts = QueueOptions::durable().arg("x-queue-type", "stream");
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("s", &opts).await.unwrap();
        publish(&c, 0, 100).await;
    });
    broker.stop();
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("s", &opts).await.unwrap();
        publish(&c, 100, 150).await;
    });
    broker.kill9();
    let dir = root.path().join("data/streams/%2F/s");
    assert_eq!(
        files(&dir, ".idx.partial"),
        vec![0],
        "the point of the clean stop"
    );
    // A frame cut short by the crash: its header says 500 bytes, 20 follow.
    let seg = dir.join(format!("{:020}.seg", 0));
    let mut data = std::fs::read(&seg).unwrap();
    let len = data.len();
    data.extend_from_slice(&500u32.to_le_bytes());
    data.extend_from_slice(&[0x5a; 24]);
    std::fs::write(&seg, &data).unwrap();

    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        let info = c.declare_queue("s", &opts).await.unwrap();
        assert_eq!(info.messages, 150);
        read(&c, 90, 150).await;
        publish(&c, 150, 151).await;
        read(&c, 149, 151).await;
    });
    let log = broker.log();
    assert!(log.contains("torn stream tail cut"), "{log}");
    assert!(!log.contains("recovery point not used"), "{log}");
    broker.stop();
    let data = std::fs::read(&seg).unwrap();
    assert!(data.len() > len, "cut, then appended to");
    assert_ne!(
        &data[len..len + 4],
        &500u32.to_le_bytes(),
        "the torn frame is gone"
    );
}
