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
        let c = connect(&broker).await;
        let info = c.declare_queue("s", &stream()).await.unwrap();
        assert!(
            info.messages >= confirmed,
            "{} < {confirmed}",
            info.messages
        );
        let mut all = c
            .consume(
                "s",
                &ConsumeOptions::prefetch(100).arg("x-stream-offset", "first"),
            )
            .await
            .unwrap();
        for want in 0..info.messages {
            let d = within("a delivery", all.next()).await.unwrap().unwrap();
            let o = d
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get("x-stream-offset"))
                .cloned();
            assert_eq!(o, Some(FieldValue::Int(want as i64)));
            assert_eq!(&d.body[..], format!("m{want:04}").as_bytes());
            d.ack().unwrap();
        }
        // The named consumer resumes at or before where it stopped acking (stored
        // offsets are coalesced: at least once), never past it.
        let opts = ConsumeOptions::prefetch(10).arg("x-stream-consumer-name", "app");
        let mut app = c.consume("s", &opts).await.unwrap();
        let d = within("a delivery", app.next()).await.unwrap().unwrap();
        let o = d
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-stream-offset"))
            .and_then(FieldValue::as_int)
            .unwrap();
        assert!(o <= acked as i64, "resumed at {o}, past the {acked} acked");
    });
    broker.stop();
}
