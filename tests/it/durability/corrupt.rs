//! Damaged segment files of a stopped broker: a torn tail is truncated and never
//! trusted, a corrupt record in the middle is reported with its file and offset and
//! skipped; either way the broker starts and serves the rest.

use super::{publish_frames, runtime, segments, within, BrokerProcess};
use actormq::client::{Client, ConnectOptions, ConsumeOptions, PublishOptions, QueueOptions};
use futures_util::StreamExt;
use std::path::Path;

const QUEUE: &str = "precious";

fn body(i: u64) -> String {
    format!("message {i:04}")
}

/// Publishes `range` persistent, with confirms, to the durable queue.
async fn publish(addr: &str, range: std::ops::RangeInclusive<u64>) {
    let client = within("connect", Client::connect(ConnectOptions::new(addr)))
        .await
        .expect("connects");
    client
        .declare_queue(QUEUE, &QueueOptions::durable())
        .await
        .expect("declares");
    let mut confirms = Vec::new();
    for i in range {
        confirms.push(
            client
                .publish_with("", QUEUE, body(i), &PublishOptions::default().persistent())
                .await
                .expect("queued"),
        );
    }
    for c in confirms {
        within("a confirm", c).await.expect("confirmed");
    }
    client.close().await.expect("closes");
}

/// The bodies the queue holds, in order (consumed and acked: the queue ends empty).
async fn drain(addr: &str) -> Vec<String> {
    let client = within("connect", Client::connect(ConnectOptions::new(addr)))
        .await
        .expect("connects");
    let info = client
        .declare_queue(QUEUE, &QueueOptions::durable())
        .await
        .expect("the durable queue is back");
    let mut consumer = client
        .consume(QUEUE, &ConsumeOptions::prefetch(0))
        .await
        .expect("consumes");
    let mut out = Vec::new();
    while (out.len() as u64) < info.messages {
        let d = within("a delivery", consumer.next())
            .await
            .expect("a delivery")
            .expect("no error");
        out.push(String::from_utf8(d.body.to_vec()).expect("utf-8"));
        d.ack().expect("acked");
    }
    drop(consumer);
    client.close().await.expect("closes");
    out
}

/// The segment holding the publish records, and its bytes.
fn data_segment(data: &Path) -> (std::path::PathBuf, Vec<u8>) {
    segments(data)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a segment");
            (p, bytes)
        })
        .find(|(_, b)| !publish_frames(b).is_empty())
        .expect("a segment with publish records")
}

fn expected(range: impl Iterator<Item = u64>) -> Vec<String> {
    range.map(body).collect()
}

#[test]
fn a_torn_tail_is_truncated_and_the_rest_served() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    rt.block_on(publish(&broker.addr, 1..=40));
    broker.stop();

    // A write cut short after the last record: a frame header promising more bytes
    // than were written, then garbage.
    let (path, mut bytes) = data_segment(&root.path().join("data"));
    let frames = super::frames(&bytes);
    let end = frames.last().expect("frames").payload.1;
    bytes[end..end + 4].copy_from_slice(&500u32.to_le_bytes());
    bytes[end + 4..end + 8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    bytes[end + 8..end + 40].fill(0xab);
    std::fs::write(&path, &bytes).unwrap();

    let broker = BrokerProcess::start(root.path());
    assert_eq!(rt.block_on(drain(&broker.addr)), expected(1..=40));
    let log = broker.log();
    assert!(
        log.contains("torn tail"),
        "the truncation is logged:\n{log}"
    );
    // It goes on serving, and what it stores now survives too.
    rt.block_on(publish(&broker.addr, 41..=45));
    broker.kill9();
    let broker = BrokerProcess::start(root.path());
    assert_eq!(rt.block_on(drain(&broker.addr)), expected(41..=45));
    broker.stop();
}

#[test]
fn a_torn_last_record_is_dropped_never_trusted() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    rt.block_on(publish(&broker.addr, 1..=40));
    broker.kill9();

    // The last publish record half written: its tail zeroed.
    let (path, mut bytes) = data_segment(&root.path().join("data"));
    let last = *publish_frames(&bytes).last().expect("publish frames");
    let (from, to) = last.payload;
    bytes[from + (to - from) / 2..to].fill(0);
    // Nothing valid may follow a torn record (it was the last write).
    let end = super::frames(&bytes).last().unwrap().payload.1;
    bytes[to..end.max(to)].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let broker = BrokerProcess::start(root.path());
    assert_eq!(rt.block_on(drain(&broker.addr)), expected(1..=39));
    let log = broker.log();
    assert!(
        log.contains("torn tail"),
        "the truncation is logged:\n{log}"
    );
    broker.stop();
}

#[test]
fn corrupt_records_in_the_middle_are_reported_skipped_and_the_rest_served() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    rt.block_on(publish(&broker.addr, 1..=60));
    broker.stop();

    let (path, mut bytes) = data_segment(&root.path().join("data"));
    let publishes = publish_frames(&bytes);
    assert!(publishes.len() >= 60, "one record per message");
    // Message 20: a flipped bit in its body (the checksum no longer holds).
    let f20 = publishes[19];
    bytes[f20.payload.1 - 3] ^= 0x10;
    // Message 30: a damaged length (the scan must find the next good record).
    let f30 = publishes[29];
    bytes[f30.start + 1] ^= 0x7f;
    std::fs::write(&path, &bytes).unwrap();

    let broker = BrokerProcess::start(root.path());
    let got = rt.block_on(drain(&broker.addr));
    let want: Vec<String> = expected((1..=60).filter(|i| *i != 20 && *i != 30));
    assert_eq!(
        got, want,
        "everything but the two damaged records, in order"
    );
    let log = broker.log();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        log.contains("corrupt region") && log.contains(&name) && log.contains("offset"),
        "the damage is reported with its file and offset:\n{log}"
    );
    assert!(
        log.contains(&format!("offset={}", f20.start)),
        "the first damaged record's offset ({}) is named:\n{log}",
        f20.start
    );
    // Still serving: new messages are stored and survive a crash.
    rt.block_on(publish(&broker.addr, 61..=65));
    broker.kill9();
    let broker = BrokerProcess::start(root.path());
    assert_eq!(rt.block_on(drain(&broker.addr)), expected(61..=65));
    broker.stop();
}
