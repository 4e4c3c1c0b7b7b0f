//! Length limits: `x-max-length`, `x-max-length-bytes` and the three `x-overflow`s, and
//! the memory gauge through every way a message can leave a queue.

use super::*;

fn dead_lettering_to(dlq: &str) -> Vec<(&'static str, FieldValue)> {
    vec![
        ("x-dead-letter-exchange", "".into()),
        ("x-dead-letter-routing-key", dlq.into()),
    ]
}

#[tokio::test]
async fn drop_head_keeps_the_newest_and_dead_letters_the_oldest() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "dlq", &[]).await;
    let mut args = dead_lettering_to("dlq");
    args.push(("x-max-length", FieldValue::Int(2)));
    declare(&s, "q", &args).await;
    for b in ["a", "b", "c", "d"] {
        assert_eq!(send(&s, msg("q", b)).await.unwrap().queues, 1);
    }
    assert_eq!(drain(&s, "q").await, ["c", "d"]);
    eventually("the dropped ones dead-lettered", || async {
        stats(&s, "dlq").await.ready == 2
    })
    .await;
    for want in ["a", "b"] {
        let r = s.get("dlq", true).await.unwrap().expect("a dead letter");
        assert_eq!(body(&r), want);
        assert_eq!(field(&deaths(&r)[0], "reason"), &FieldValue::from("maxlen"));
    }
    memory_settles_at_zero(&broker).await;
}

#[tokio::test]
async fn max_length_bytes_counts_body_bytes() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[("x-max-length-bytes", FieldValue::Int(5))]).await;
    for b in ["aaa", "bb", "c"] {
        send(&s, msg("q", b)).await.unwrap();
    }
    assert_eq!(drain(&s, "q").await, ["bb", "c"]);
}

#[tokio::test]
async fn reject_publish_nacks_the_publisher_naming_the_queue_and_the_overflow() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(
        &s,
        "q",
        &[
            ("x-max-length", FieldValue::Int(1)),
            ("x-overflow", "reject-publish".into()),
        ],
    )
    .await;
    send(&s, msg("q", "in")).await.unwrap();
    let e = expect_code(send(&s, msg("q", "out")).await, ErrorCode::ResourceError);
    for part in ["'q'", "x-max-length 1", "reject-publish"] {
        assert!(e.message().contains(part), "{part} not in: {e}");
    }
    assert_eq!(drain(&s, "q").await, ["in"]);
    send(&s, msg("q", "room again")).await.unwrap();
    assert_eq!(drain(&s, "q").await, ["room again"]);
    memory_settles_at_zero(&broker).await;
}

#[tokio::test]
async fn reject_publish_dlx_dead_letters_the_refused_message_too() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "dlq", &[]).await;
    let mut args = dead_lettering_to("dlq");
    args.push(("x-max-length", FieldValue::Int(1)));
    args.push(("x-overflow", "reject-publish-dlx".into()));
    declare(&s, "q", &args).await;
    send(&s, msg("q", "in")).await.unwrap();
    expect_code(send(&s, msg("q", "out")).await, ErrorCode::ResourceError);
    eventually("the refused message dead-lettered", || async {
        stats(&s, "dlq").await.ready == 1
    })
    .await;
    let r = s.get("dlq", true).await.unwrap().unwrap();
    assert_eq!(body(&r), "out");
    assert_eq!(field(&deaths(&r)[0], "reason"), &FieldValue::from("maxlen"));
}

#[tokio::test]
async fn a_message_one_queue_refuses_is_nacked_but_kept_by_the_others() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("all", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    declare(
        &s,
        "full",
        &[
            ("x-max-length", FieldValue::Int(0)),
            ("x-overflow", "reject-publish".into()),
        ],
    )
    .await;
    declare(&s, "open", &[]).await;
    s.bind_queue("full", "all", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("open", "all", "", FieldTable::new())
        .await
        .unwrap();
    let e = expect_code(
        send(&s, Message::new("all", "", "m")).await,
        ErrorCode::ResourceError,
    );
    assert!(e.message().contains("'full'"), "{e}");
    assert_eq!(drain(&s, "open").await, ["m"]);
}

#[tokio::test]
async fn the_memory_gauge_returns_to_zero_through_every_way_out() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "dlq", &[]).await;
    let mut ttl = dead_lettering_to("dlq");
    ttl.push(("x-message-ttl", FieldValue::Int(30)));
    declare(&s, "ttl", &ttl).await;
    let mut drop_head = dead_lettering_to("dlq");
    drop_head.push(("x-max-length", FieldValue::Int(1)));
    declare(&s, "drop-head", &drop_head).await;
    declare(
        &s,
        "delayed",
        &[("x-delivery-delay", FieldValue::Int(60_000))],
    )
    .await;
    declare(
        &s,
        "reject",
        &[
            ("x-max-length", FieldValue::Int(1)),
            ("x-overflow", "reject-publish".into()),
        ],
    )
    .await;
    declare(&s, "prio", &[("x-max-priority", FieldValue::Int(5))]).await;
    for i in 0..5u8 {
        for q in ["ttl", "drop-head", "delayed", "reject", "prio"] {
            let _ = send(&s, prioritised(msg(q, &format!("{q}-{i}")), i)).await;
        }
    }
    eventually("expired and dropped messages dead-lettered", || async {
        stats(&s, "dlq").await.ready == 9
    })
    .await;
    let held = stats(&s, "delayed").await;
    assert_eq!((held.delayed, held.ready), (5, 0));
    for q in ["dlq", "drop-head", "delayed", "reject", "prio"] {
        s.purge(q).await.unwrap();
    }
    memory_settles_at_zero(&broker).await;
}
