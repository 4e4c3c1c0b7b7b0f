//! kill -9 of the real binary while a stream is being published to: every confirmed
//! message comes back at its offset, offsets stay contiguous, and a named consumer's
//! stored offset is never ahead of what it was delivered.

use crate::durability::{runtime, within, BrokerProcess};
use actormq::client::{Client, ConnectOptions, ConsumeOptions, QueueOptions};
use actormq::FieldValue;
use futures_util::StreamExt;

async fn connect(b: &BrokerProcess) -> Client {
    within("connect", Client::connect(ConnectOptions::new(&b.addr)))
        .await
        .unwrap()
}

/// The restarted broker's stream `s` (declared again with `options`), which must hold
/// at least the `confirmed` messages; answers the client and the count it holds.
async fn restarted(b: &BrokerProcess, options: &QueueOptions, confirmed: u64) -> (Client, u64) {
    let c = connect(b).await;
    let info = c.declare_queue("s", options).await.unwrap();
    assert!(
        info.messages >= confirmed,
        "{} < {confirmed}",
        info.messages
    );
    (c, info.messages)
}

fn stream() -> QueueOptions {
    QueueOptions::durable()
        .arg("x-queue-type", "stream")
        .arg("x-stream-max-segment-size-bytes", 4096i64)
}

#[test]
fn confirmed_stream_messages_survive_kill_9_with_contiguous_offsets() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    let (confirmed, acked) = rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("s", &stream()).await.unwrap();
        let mut confirmed = 0u64;
        for i in 0..300 {
            let p = c.publish("", "s", format!("m{i:04}")).await.unwrap();
            within("a confirm", p).await.unwrap();
            confirmed += 1;
        }
        let opts = ConsumeOptions::prefetch(50)
            .arg("x-stream-offset", "first")
            .arg("x-stream-consumer-name", "app");
        let mut app = c.consume("s", &opts).await.unwrap();
        for _ in 0..120 {
            let d = within("a delivery", app.next()).await.unwrap().unwrap();
            d.ack().unwrap();
        }
        app.cancel().await.unwrap();
        // The cancel handed the offsets to the stream's writer; two confirmed appends
        // later it has written them (its turns run in order: the second append's turn
        // starts after the one that also wrote the offsets).
        for i in 300..302 {
            let p = c.publish("", "s", format!("m{i:04}")).await.unwrap();
            within("a confirm", p).await.unwrap();
            confirmed += 1;
        }
        // More publishes in flight, not awaited, when the broker dies.
        for i in 302..400 {
            let _ = c.publish("", "s", format!("m{i:04}")).await;
        }
        (confirmed, 120u64)
    });
    broker.kill9();

    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let (c, held) = restarted(&broker, &stream(), confirmed).await;
        let mut all = c
            .consume(
                "s",
                &ConsumeOptions::prefetch(100).arg("x-stream-offset", "first"),
            )
            .await
            .unwrap();
        for want in 0..held {
            let d = within("a delivery", all.next()).await.unwrap().unwrap();
            assert_eq!(offset_of(&d), want as i64);
            assert_eq!(&d.body[..], format!("m{want:04}").as_bytes());
            d.ack().unwrap();
        }
        // The named consumer resumes at or before where it stopped acking (stored
        // offsets are coalesced: at least once), never past it.
        let opts = ConsumeOptions::prefetch(10).arg("x-stream-consumer-name", "app");
        let mut app = c.consume("s", &opts).await.unwrap();
        let d = within("a delivery", app.next()).await.unwrap().unwrap();
        let o = offset_of(&d);
        assert!(o <= acked as i64, "resumed at {o}, past the {acked} acked");
    });
    broker.stop();
}

#[test]
fn kill_9_with_many_confirms_outstanding_keeps_every_confirmed_offset() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    let confirmed = rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("s", &stream()).await.unwrap();
        // A publisher that keeps its window full (the writer answers whole groups of
        // them after each fsync) and goes on publishing through the kill.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let publisher = c.clone();
        tokio::spawn(async move {
            for i in 0..1_000_000u64 {
                let Ok(p) = publisher.publish("", "s", format!("m{i:07}")).await else {
                    break;
                };
                if tx.send(p).is_err() {
                    break;
                }
            }
        });
        // Confirms are awaited in publish order: `confirmed` is a prefix.
        let mut confirmed = 0u64;
        while confirmed < 3_000 {
            let p = within("a publish", rx.recv()).await.unwrap();
            within("a confirm", p).await.unwrap();
            confirmed += 1;
        }
        confirmed
    });
    broker.kill9();

    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let (c, _) = restarted(&broker, &stream(), confirmed).await;
        let opts = ConsumeOptions::prefetch(500).arg("x-stream-offset", "first");
        let mut all = c.consume("s", &opts).await.unwrap();
        for want in 0..confirmed as i64 {
            let d = within("a delivery", all.next()).await.unwrap().unwrap();
            assert_eq!(offset_of(&d), want);
            assert_eq!(&d.body[..], format!("m{want:07}").as_bytes());
            d.ack().unwrap();
        }
    });
    broker.stop();
}

/// A body of 4 KiB that names its publish index: 3 000 of them are far more than the
/// stream's tail cache (4 MiB), so readers behind it read the segment files.
fn big(i: u64) -> String {
    format!("m{i:06}-{}", "x".repeat(4096))
}

/// Segments of 256 KiB: about 60 records of [`big`] each.
fn big_stream() -> QueueOptions {
    QueueOptions::durable()
        .arg("x-queue-type", "stream")
        .arg("x-stream-max-segment-size-bytes", 256 * 1024i64)
}

fn offset_of(d: &actormq::client::Delivery) -> i64 {
    d.properties
        .headers
        .as_ref()
        .and_then(|h| h.get("x-stream-offset"))
        .and_then(FieldValue::as_int)
        .expect("an x-stream-offset header")
}

#[test]
fn kill_9_while_a_named_consumer_reads_a_stream_from_its_files_loses_nothing_confirmed() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    let big_stream = big_stream();
    let (confirmed, delivered) = rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("s", &big_stream).await.unwrap();
        let opts = ConsumeOptions::prefetch(50)
            .arg("x-stream-offset", "first")
            .arg("x-stream-consumer-name", "app");
        let mut app = c.consume("s", &opts).await.unwrap();
        let mut confirmed = 0u64;
        let mut delivered = 0i64;
        // The publisher runs ahead (100 confirmed per round, 50 read): the reader
        // falls megabytes behind the head and reads from the segment files.
        for _ in 0..40 {
            let mut pending = Vec::new();
            for _ in 0..100 {
                pending.push(
                    c.publish("", "s", big(confirmed + pending.len() as u64))
                        .await
                        .unwrap(),
                );
            }
            for p in pending {
                within("a confirm", p).await.unwrap();
                confirmed += 1;
            }
            for _ in 0..50 {
                let d = within("a delivery", app.next()).await.unwrap().unwrap();
                let o = offset_of(&d);
                assert_eq!(o, delivered, "offsets in order, none skipped");
                assert!(d.body.starts_with(format!("m{o:06}-").as_bytes()));
                d.ack().unwrap();
                delivered += 1;
            }
        }
        // More publishes in flight, not awaited, when the broker dies mid-read.
        for i in 0..50 {
            let _ = c.publish("", "s", big(confirmed + i)).await;
        }
        (confirmed, delivered)
    });
    broker.kill9();

    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let (c, held) = restarted(&broker, &big_stream, confirmed).await;
        // The named consumer resumes at or before its last delivery + 1, never past.
        let opts = ConsumeOptions::prefetch(10).arg("x-stream-consumer-name", "app");
        let mut app = c.consume("s", &opts).await.unwrap();
        let d = within("a delivery", app.next()).await.unwrap().unwrap();
        let resumed = offset_of(&d);
        assert!(
            resumed <= delivered,
            "resumed at {resumed}, past the {delivered} delivered"
        );
        assert!(d.body.starts_with(format!("m{resumed:06}-").as_bytes()));
        // Everything confirmed is there, in order, read from the files after recovery.
        let mut all = c
            .consume(
                "s",
                &ConsumeOptions::prefetch(200).arg("x-stream-offset", "first"),
            )
            .await
            .unwrap();
        for want in 0..held as i64 {
            let d = within("a delivery", all.next()).await.unwrap().unwrap();
            assert_eq!(offset_of(&d), want);
            assert!(d.body.starts_with(format!("m{want:06}-").as_bytes()));
            d.ack().unwrap();
        }
    });
    broker.stop();
}

#[test]
fn a_stream_larger_than_its_tail_cache_replays_from_first_in_order_across_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    const N: i64 = 3_000;
    let read_all = |c: Client, from: i64, consumers: usize| async move {
        let mut subs = Vec::new();
        for _ in 0..consumers {
            let opts = ConsumeOptions::prefetch(100).arg("x-stream-offset", from);
            subs.push(c.consume("s", &opts).await.unwrap());
        }
        for mut sub in subs {
            for want in from..N {
                let d = within("a delivery", sub.next()).await.unwrap().unwrap();
                assert_eq!(offset_of(&d), want);
                assert!(d.body.starts_with(format!("m{want:06}-").as_bytes()));
                d.ack().unwrap();
            }
        }
    };
    rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("s", &big_stream()).await.unwrap();
        let mut pending = Vec::new();
        for i in 0..N as u64 {
            pending.push(c.publish("", "s", big(i)).await.unwrap());
        }
        for p in pending {
            within("a confirm", p).await.unwrap();
        }
        // Two readers from first and one from the middle, all behind the cache.
        read_all(c.clone(), 0, 2).await;
        read_all(c, 1_234, 1).await;
    });
    broker.stop();
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        let info = c.declare_queue("s", &big_stream()).await.unwrap();
        assert_eq!(info.messages, N as u64);
        read_all(c, 0, 1).await;
    });
    broker.stop();
}
