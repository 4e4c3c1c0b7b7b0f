//! Declaring streams, publishing through exchanges, reading from every kind of start,
//! retention, and what a stream refuses.

use super::*;
use actormq::client::ExchangeOptions;
use actormq::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_read_by_every_consumer_without_removing() {
    let server = TestServer::start();
    let c = connect(&server).await;
    c.declare_queue("events", &stream()).await.unwrap();
    c.declare_exchange("x", "direct", &ExchangeOptions::default())
        .await
        .unwrap();
    c.bind_queue("events", "x", "k", Default::default())
        .await
        .unwrap();
    publish_n(&c, "events", "m", 5).await;
    within(
        "confirm",
        c.publish("x", "k", "via-exchange").await.unwrap(),
    )
    .await
    .unwrap();

    let mut a = c.consume("events", &from("first")).await.unwrap();
    let mut b = c.consume("events", &from("first")).await.unwrap();
    let got_a = take(&mut a, 6).await;
    let got_b = take(&mut b, 6).await;
    assert_eq!(offsets(&got_a), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(bodies(&got_a), bodies(&got_b));
    assert_eq!(bodies(&got_a)[5], "via-exchange");

    // From an offset, and `next` (the default) sees only what comes after.
    let mut at3 = c.consume("events", &from(3i64)).await.unwrap();
    assert_eq!(offsets(&take(&mut at3, 3).await), vec![3, 4, 5]);
    let mut next = c
        .consume("events", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    publish_n(&c, "events", "late", 1).await;
    let late = take(&mut next, 1).await;
    assert_eq!(
        (offsets(&late), bodies(&late)),
        (vec![6], vec!["late0".to_string()])
    );

    // Acks removed nothing: the declare-ok counts the whole log.
    let info = c.declare_queue("events", &stream()).await.unwrap();
    assert_eq!(info.messages, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_and_timestamps_and_intervals_pick_their_start() {
    let server = TestServer::start();
    let c = connect(&server).await;
    c.declare_queue("s", &stream()).await.unwrap();
    publish_n(&c, "s", "a", 2).await;
    // Published after the others were confirmed: a chunk of its own, the last one.
    publish_n(&c, "s", "a", 1).await;
    let mut last = c.consume("s", &from("last")).await.unwrap();
    assert_eq!(offsets(&take(&mut last, 1).await), vec![2]);

    let mut hour = c.consume("s", &from("1h")).await.unwrap();
    assert_eq!(offsets(&take(&mut hour, 3).await), vec![0, 1, 2]);

    let future_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    let ts = actormq::FieldTable::from([("timestamp".to_string(), FieldValue::Int(future_secs))]);
    let mut later = c.consume("s", &from(FieldValue::Table(ts))).await.unwrap();
    publish_n(&c, "s", "b", 1).await;
    // Nothing was appended at or after that time: the consumer attached at the end of
    // the log, so the first thing it gets is what came next (as RabbitMQ does).
    assert_eq!(offsets(&take(&mut later, 1).await), vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_segments_and_late_consumers_start_at_the_first_offset() {
    let server = TestServer::start();
    let c = connect(&server).await;
    let opts = stream()
        .arg("x-max-length-bytes", 2000i64)
        .arg("x-stream-max-segment-size-bytes", 500i64);
    c.declare_queue("r", &opts).await.unwrap();
    publish_n(&c, "r", &"x".repeat(100), 60).await;
    let info = c.declare_queue("r", &opts).await.unwrap();
    assert!(
        info.messages < 60,
        "retention removed segments: {}",
        info.messages
    );
    assert!(info.messages > 0);
    let mut first = c.consume("r", &from("first")).await.unwrap();
    let got = take(&mut first, info.messages as usize).await;
    let o = offsets(&got);
    assert_eq!(o.last(), Some(&59));
    assert_eq!(
        o[0],
        60 - info.messages as i64,
        "contiguous up to the last offset"
    );
    let mut zero = c.consume("r", &from(0i64)).await.unwrap();
    assert_eq!(offsets(&take(&mut zero, 1).await), vec![o[0]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refuses_what_rabbitmq_refuses() {
    let server = TestServer::start();
    let c = connect(&server).await;
    for (what, opts) in [
        (
            "non-durable",
            QueueOptions::default().arg("x-queue-type", "stream"),
        ),
        ("exclusive-owner", stream().exclusive()),
        ("auto-delete", stream().auto_delete()),
        ("x-max-age", stream().arg("x-max-age", "7 days")),
    ] {
        let e = c.declare_queue("bad", &opts).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::PreconditionFailed), "{what}: {e}");
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
    c.declare_queue("s", &stream().arg("x-max-age", "7D"))
        .await
        .unwrap();
    publish_n(&c, "s", "m", 1).await;
    let refusals = [
        ConsumeOptions::prefetch(0).arg("x-stream-offset", "first"),
        ConsumeOptions::prefetch(5).no_ack(),
        ConsumeOptions::prefetch(5).arg("x-stream-offset", "yesterday"),
    ];
    for opts in refusals {
        let c = connect(&server).await;
        let e = c.consume("s", &opts).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::PreconditionFailed), "{e}");
    }
    let c = connect(&server).await;
    let e = c.get("s", false).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownOperation), "{e}");
    // Still there, still whole.
    let c = connect(&server).await;
    let mut all = c.consume("s", &from("first")).await.unwrap();
    assert_eq!(bodies(&take(&mut all, 1).await), ["m0"]);
}
