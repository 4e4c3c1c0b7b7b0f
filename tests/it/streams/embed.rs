//! The embedding API (`Session`) on a broker without storage that accepts durable
//! declares in memory (`transient_durables`): a stream declared there lives in memory,
//! read without removing as over TCP.

use actormq::{Broker, ConsumeOptions, FieldValue, Message, QueueOptions};

#[tokio::test]
async fn an_embedded_session_declares_publishes_and_replays_a_stream() {
    let broker = Broker::builder()
        .workers(2)
        .transient_durables()
        .start()
        .unwrap();
    let s = broker.session();
    let opts = QueueOptions::durable().arg("x-queue-type", "stream");
    s.declare_queue("log", &opts).await.unwrap();
    for i in 0..3 {
        s.publish(Message::new("", "log", format!("e{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let mut c = s
            .consume(
                "log",
                &ConsumeOptions::prefetch(5).arg("x-stream-offset", "first"),
            )
            .await
            .unwrap();
        for want in 0..3i64 {
            let r = super::within("a delivery", c.next()).await.expect("open");
            let offset = r.message.header("x-stream-offset").cloned();
            assert_eq!(offset, Some(FieldValue::Int(want)));
            r.ack();
        }
    }
    assert_eq!(s.queue_stats("log").await.unwrap().ready, 3);
    broker.shutdown();
}
