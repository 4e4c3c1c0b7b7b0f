//! A record damaged on disk in a sealed segment while the broker was down: recovery
//! trusts the segment's index file and does not read it, so nothing is cut at start;
//! the first read of the damaged frame refuses it, and its consumer is cancelled with
//! the reason after every record before it (never handed the records after it as if
//! that one had not existed), the broker logs it, and a consumer can start past it,
//! even when the damage is in the record's length field (the next frame is then found
//! through the segment's index file).

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

/// A broker's data directory holding stream `s` with 300 confirmed records
/// (`m0000`..`m0299`, sealed segments of 4 KiB), the broker stopped; and a runtime.
fn stopped_with_300_records() -> (tempfile::TempDir, tokio::runtime::Runtime) {
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
    (root, rt)
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
    let (root, rt) = stopped_with_300_records();
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

/// The file position of record `offset`'s frame in the segment of `dir` that starts
/// at `segment` (frames `[len u32][crc u32][payload]`, the payload opening with the
/// record's offset, u64 little-endian).
fn frame_of(dir: &Path, segment: u64, offset: u64) -> usize {
    let data = std::fs::read(dir.join(format!("{segment:020}.seg"))).unwrap();
    let mut pos = 0;
    while pos + 16 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if u64::from_le_bytes(data[pos + 8..pos + 16].try_into().unwrap()) == offset {
            return pos;
        }
        pos += 8 + len;
    }
    panic!("no record {offset} in segment {segment}");
}

#[test]
fn a_record_whose_length_field_is_damaged_is_passed_over_by_a_consumer_that_starts_after_it() {
    let (root, rt) = stopped_with_300_records();
    let dir = root.path().join("data/streams/%2F/s");
    // Record 150's length field says 3 bytes: following it finds no record 151.
    let (damaged, segments) = damage(&dir, b"m0150", b"m0150");
    assert!(damaged < *segments.last().unwrap(), "a sealed segment");
    let at = frame_of(&dir, damaged, 150);
    let path = dir.join(format!("{damaged:020}.seg"));
    let mut data = std::fs::read(&path).unwrap();
    data[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&path, &data).unwrap();

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
        // A consumer from after it reads every later record.
        let opts = ConsumeOptions::prefetch(50).arg("x-stream-offset", 151i64);
        let mut rest = c.consume("s", &opts).await.unwrap();
        for want in 151..300 {
            let d = match within("a delivery", rest.next()).await {
                Some(Ok(d)) => d,
                other => panic!("record {want}: {other:?}"),
            };
            assert_eq!(offset_of(&d), want);
            assert_eq!(&d.body[..], format!("m{want:04}").as_bytes());
            d.ack().unwrap();
        }
        // One that reaches it is told where reading goes on: right after it.
        let opts = ConsumeOptions::prefetch(40).arg("x-stream-offset", "first");
        let mut all = c.consume("s", &opts).await.unwrap();
        for want in 0..150 {
            let d = within("a delivery", all.next()).await.unwrap().unwrap();
            assert_eq!(offset_of(&d), want);
            d.ack().unwrap();
        }
        match within("the cancel", all.next()).await {
            Some(Err(ClientError::ConsumerCancelled { reason, .. })) => {
                assert!(
                    reason.contains("record 150 of stream 's' is damaged on disk")
                        && reason.contains("x-stream-offset = 151 reads on"),
                    "{reason}"
                );
            }
            other => panic!("after record 149, a cancel naming record 150: {other:?}"),
        }
    });
    assert!(
        broker
            .log()
            .contains("damaged stream record passed over by a reader that starts after it"),
        "{}",
        broker.log()
    );
    broker.stop();
}
