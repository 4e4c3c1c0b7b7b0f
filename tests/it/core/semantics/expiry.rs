//! Message TTL (`x-message-ttl`, `expiration`) and queue expiry (`x-expires`).

use super::*;

#[tokio::test]
async fn an_expired_message_leaves_promptly_even_behind_the_head() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[]).await;
    send(&s, msg("q", "head")).await.unwrap();
    send(&s, expiring(msg("q", "short"), 50)).await.unwrap();
    send(&s, msg("q", "tail")).await.unwrap();
    // Nobody consumes, so "short" never reaches the head: it must go anyway.
    eventually("the expired message gone from the middle", || async {
        stats(&s, "q").await.ready == 2
    })
    .await;
    assert_eq!(stats(&s, "q").await.bytes, 8, "its bytes are released too");
    assert_eq!(drain(&s, "q").await, ["head", "tail"]);
    memory_settles_at_zero(&broker).await;
}

#[tokio::test]
async fn a_queue_ttl_dead_letters_expired_messages_with_an_x_death_header() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "dlq", &[]).await;
    declare(
        &s,
        "work",
        &[
            ("x-message-ttl", FieldValue::Int(100)),
            ("x-dead-letter-exchange", "".into()),
            ("x-dead-letter-routing-key", "dlq".into()),
        ],
    )
    .await;
    let mut dead = s.consume("dlq", &ConsumeOptions::default()).await.unwrap();
    send(&s, msg("work", "job")).await.unwrap();
    let r = recv(&mut dead).await;
    assert_eq!(body(&r), "job");
    assert_eq!(r.message.routing_key, "dlq");
    let d = deaths(&r);
    assert_eq!(d.len(), 1);
    assert_eq!(field(&d[0], "queue"), &FieldValue::from("work"));
    assert_eq!(field(&d[0], "reason"), &FieldValue::from("expired"));
    assert_eq!(field(&d[0], "count"), &FieldValue::Int(1));
    assert_eq!(field(&d[0], "exchange"), &FieldValue::from(""));
    assert_eq!(
        field(&d[0], "routing-keys"),
        &FieldValue::Array(vec!["work".into()])
    );
    assert!(matches!(
        field(&d[0], "time"),
        FieldValue::Typed(actormq::TypedValue::Timestamp(t)) if *t > 0
    ));
    assert_eq!(
        r.message.header("x-first-death-reason"),
        Some(&FieldValue::from("expired"))
    );
    r.ack();
    assert_eq!(stats(&s, "work").await.ready, 0);
    memory_settles_at_zero(&broker).await;
}

#[tokio::test]
async fn a_per_message_ttl_is_not_carried_into_the_dead_letter_queue() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "dlq", &[]).await;
    declare(
        &s,
        "work",
        &[
            ("x-dead-letter-exchange", "".into()),
            ("x-dead-letter-routing-key", "dlq".into()),
        ],
    )
    .await;
    send(&s, expiring(msg("work", "m"), 30)).await.unwrap();
    eventually("dead-lettered", || async {
        stats(&s, "dlq").await.ready == 1
    })
    .await;
    let r = s.get("dlq", true).await.unwrap().expect("the dead letter");
    assert_eq!(r.message.properties.expiration, None);
    assert_eq!(
        field(&deaths(&r)[0], "original-expiration"),
        &FieldValue::from("30")
    );
}

#[tokio::test]
async fn a_zero_ttl_message_reaches_a_waiting_consumer() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[("x-message-ttl", FieldValue::Int(0))]).await;
    let mut c = s.consume("q", &prefetch(1)).await.unwrap();
    send(&s, msg("q", "now")).await.unwrap();
    let r = recv(&mut c).await;
    assert_eq!(body(&r), "now");
    // The consumer is full: the next one has nowhere to go and expires.
    send(&s, msg("q", "lost")).await.unwrap();
    eventually("the undeliverable message expired", || async {
        stats(&s, "q").await.ready == 0
    })
    .await;
    r.ack();
}

#[tokio::test]
async fn x_expires_deletes_a_queue_once_it_is_unused_for_the_period() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "idle", &[("x-expires", FieldValue::Int(150))]).await;
    declare(&s, "busy", &[("x-expires", FieldValue::Int(150))]).await;
    let consumer = s.consume("busy", &ConsumeOptions::default()).await.unwrap();
    let passive = |name: &'static str| {
        let s = &s;
        async move { s.declare_queue(name, &QueueOptions::new().passive()).await }
    };
    eventually("the idle queue deleted", || async {
        passive("idle").await.is_err()
    })
    .await;
    expect_code(passive("idle").await, ErrorCode::NotFound);
    passive("busy")
        .await
        .expect("a queue with a consumer is in use");
    drop(consumer);
    eventually("the queue deleted once its consumer left", || async {
        passive("busy").await.is_err()
    })
    .await;
}
