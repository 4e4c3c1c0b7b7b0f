//! A record damaged on disk in a sealed segment while the broker was down: recovery
//! trusts the segment's index file and does not read it, so nothing is cut at start;
//! the first read of the damaged frame refuses it, and its consumer is cancelled with
//! the reason after every record before it (never handed the records after it as if
//! that one had not existed), the broker logs it, and a consumer can start past it.

use crate::durability::{runtime, within, BrokerProcess};
use actormq::client::{Client, ClientError, ConnectOptions, ConsumeOptions, QueueOptions};
use actormq::FieldValue;
use futures_util::StreamExt;
use std::path::Path;

fn stream() -> QueueOptions {
    QueueOptions::durable()
        .arg("x-queue-type", "stream")
        .arg("x-stream-max-segment-size-bytes", 4096i64)
}

fn offset_of(d: &actormq::client::Delivery) -> i64 {
    d.properties
        .headers
        .as_ref()
        .and_then(|h| h.get("x-stream-offset"))
        .and_then(FieldValue::as_int)
        .expect("an x-stream-offset header")
}

/// Flips `from` to `to` (same length) in the segment of `dir` that holds it; answers
/// that segment's first offset and the stream's segments' first offsets.
fn damage(dir: &Path, from: &[u8], to: &[u8]) -> (u64, Vec<u64>) {
    let mut segments: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    segments.sort_unstable();
    for &s in &segments {
        let path = dir.join(format!("{s:020}.seg"));
        let mut data = std::fs::read(&path).unwrap();
        if let Some(at) = data.windows(from.len()).position(|w| w == from) {
            data[at..at + to.len()].copy_from_slice(to);
            std::fs::write(&path, &data).unwrap();
            return (s, segments);
        }
    }
    panic!("no segment holds {from:?}");
}

#[test]
fn a_record_damaged_in_a_sealed_segment_cancels_its_reader_with_the_reason_and_cuts_nothing() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = within(
            "connect",
            Client::connect(ConnectOptions::new(&broker.addr)),
        )
        .await
        .unwrap();
        c.declare_queue("s", &stream()).await.unwrap();
        let mut pending = Vec::new();
        for i in 0..300 {
            pending.push(c.publish("", "s", format!("m{i:04}")).await.unwrap());
        }
        for p in pending {
            within("a confirm", p).await.unwrap();
        }
    });
    broker.stop();
    let dir = root.path().join("data/streams/%2F/s");
    let (damaged, segments) = damage(&dir, b"m0150", b"m0X50");
    assert!(
        damaged < *segments.last().unwrap(),
        "segment {damaged} of {segments:?} is sealed"
    );

    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = within(
            "connect",
            Client::connect(ConnectOptions::new(&broker.addr)),
        )
        .await
        .unwrap();
        let info = c.declare_queue("s", &stream()).await.unwrap();
        assert_eq!(info.messages, 300, "nothing cut at start");
        // A prefetch that does not divide 150: a read runs into the damaged record
        // after records it must still deliver.
        let opts = ConsumeOptions::prefetch(40).arg("x-stream-offset", "first");
        let mut all = c.consume("s", &opts).await.unwrap();
        for want in 0..150 {
            let d = within("a delivery", all.next()).await.unwrap().unwrap();
            assert_eq!(offset_of(&d), want);
            assert_eq!(&d.body[..], format!("m{want:04}").as_bytes());
            d.ack().unwrap();
        }
        match within("the cancel", all.next()).await {
            Some(Err(ClientError::ConsumerCancelled { reason, .. })) => {
                assert!(
                    reason.contains("INTERNAL_ERROR")
                        && reason.contains("record 150 of stream 's' is damaged on disk")
                        && reason.contains("x-stream-offset = 151"),
                    "{reason}"
                );
            }
            other => panic!("after record 149, a cancel naming record 150: {other:?}"),
        }
        // A consumer can start past it and read the rest.
        let opts = ConsumeOptions::prefetch(50).arg("x-stream-offset", 151i64);
        let mut rest = c.consume("s", &opts).await.unwrap();
        for want in 151..300 {
            let d = within("a delivery", rest.next()).await.unwrap().unwrap();
            assert_eq!(offset_of(&d), want);
            assert_eq!(&d.body[..], format!("m{want:04}").as_bytes());
            d.ack().unwrap();
        }
    });
    let log = broker.log();
    assert!(
        log.contains("stream record damaged on disk: consumer cancelled")
            && log.contains("record 150 at byte"),
        "the broker log says what and where:\n{log}"
    );
    broker.stop();
}
