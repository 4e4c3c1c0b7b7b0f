//! Dead-lettering on reject, the delivery limit, and dead-letter cycles.

use super::*;

fn dead_lettering_to(dlq: &str) -> [(&'static str, FieldValue); 2] {
    [
        ("x-dead-letter-exchange", "".into()),
        ("x-dead-letter-routing-key", dlq.into()),
    ]
}

#[tokio::test]
async fn a_rejected_message_goes_to_the_dead_letter_exchange_with_its_key_replaced() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("dlx", "direct", &ExchangeOptions::new())
        .await
        .unwrap();
    declare(&s, "dlq", &[]).await;
    s.bind_queue("dlq", "dlx", "dead", FieldTable::new())
        .await
        .unwrap();
    declare(
        &s,
        "work",
        &[
            ("x-dead-letter-exchange", "dlx".into()),
            ("x-dead-letter-routing-key", "dead".into()),
        ],
    )
    .await;
    send(&s, msg("work", "kept")).await.unwrap();
    send(&s, msg("work", "poison")).await.unwrap();
    let mut c = s.consume("work", &prefetch(10)).await.unwrap();
    let kept = recv(&mut c).await;
    let poison = recv(&mut c).await;
    kept.nack(true);
    poison.reject(false);
    let mut dead = s.consume("dlq", &ConsumeOptions::default()).await.unwrap();
    let r = recv(&mut dead).await;
    assert_eq!(body(&r), "poison");
    assert_eq!(&*r.message.exchange, "dlx");
    assert_eq!(r.message.routing_key, "dead");
    let d = deaths(&r);
    assert_eq!(field(&d[0], "reason"), &FieldValue::from("rejected"));
    assert_eq!(field(&d[0], "queue"), &FieldValue::from("work"));
    // The one nacked with requeue is back in its queue, not dead-lettered.
    let again = recv(&mut c).await;
    assert_eq!((body(&again), again.redelivered), ("kept".into(), true));
}

#[tokio::test]
async fn a_message_delivered_more_than_the_limit_is_dead_lettered_not_requeued() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "dlq", &[]).await;
    let [a, b] = dead_lettering_to("dlq");
    declare(
        &s,
        "work",
        &[a, b, ("x-delivery-limit", FieldValue::Int(2))],
    )
    .await;
    send(&s, msg("work", "poison")).await.unwrap();
    let mut c = s.consume("work", &prefetch(1)).await.unwrap();
    for count in 1..=3 {
        let r = recv(&mut c).await;
        assert_eq!(r.delivery_count, count, "each delivery carries its count");
        assert_eq!(r.redelivered, count > 1);
        r.nack(true);
    }
    let r = within("the dead letter", async {
        loop {
            if let Some(r) = s.get("dlq", true).await.unwrap() {
                return r;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(body(&r), "poison");
    assert_eq!(
        field(&deaths(&r)[0], "reason"),
        &FieldValue::from("delivery_limit")
    );
    let st = stats(&s, "work").await;
    assert_eq!((st.ready, st.unacked), (0, 0));
}

#[tokio::test]
async fn without_a_dead_letter_exchange_the_delivery_limit_drops_the_message() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "work", &[("x-delivery-limit", FieldValue::Int(0))]).await;
    send(&s, msg("work", "poison")).await.unwrap();
    let r = s.get("work", false).await.unwrap().unwrap();
    r.nack(true);
    eventually("dropped instead of requeued", || async {
        let st = stats(&s, "work").await;
        (st.ready, st.unacked) == (0, 0)
    })
    .await;
    memory_settles_at_zero(&broker).await;
}

#[tokio::test]
async fn an_automatic_dead_letter_cycle_is_broken() {
    let broker = TestBroker::start();
    let s = broker.session();
    // a expires into b, b expires into a: nothing but the broker would ever stop it.
    let [x, _] = dead_lettering_to("");
    for (q, next) in [("a", "b"), ("b", "a")] {
        declare(
            &s,
            q,
            &[
                x.clone(),
                ("x-dead-letter-routing-key", next.into()),
                ("x-message-ttl", FieldValue::Int(20)),
            ],
        )
        .await;
    }
    send(&s, msg("a", "looping")).await.unwrap();
    // The gauge counts the message wherever it is, in flight between queues included:
    // zero means it was dropped for good.
    memory_settles_at_zero(&broker).await;
    assert_eq!(stats(&s, "a").await.ready + stats(&s, "b").await.ready, 0);
}

#[tokio::test]
async fn a_retry_loop_through_a_rejection_is_not_a_cycle() {
    let broker = TestBroker::start();
    let s = broker.session();
    let [a, b] = dead_lettering_to("retry");
    declare(&s, "work", &[a, b]).await;
    let [a, b] = dead_lettering_to("work");
    declare(&s, "retry", &[a, b, ("x-message-ttl", FieldValue::Int(20))]).await;
    send(&s, msg("work", "job")).await.unwrap();
    let mut c = s.consume("work", &prefetch(1)).await.unwrap();
    recv(&mut c).await.reject(false);
    recv(&mut c).await.reject(false);
    let third = recv(&mut c).await;
    let d = deaths(&third);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(field(&d[0], "queue"), &FieldValue::from("retry"));
    assert_eq!(field(&d[0], "reason"), &FieldValue::from("expired"));
    assert_eq!(field(&d[0], "count"), &FieldValue::Int(2));
    assert_eq!(field(&d[1], "queue"), &FieldValue::from("work"));
    assert_eq!(field(&d[1], "reason"), &FieldValue::from("rejected"));
    assert_eq!(field(&d[1], "count"), &FieldValue::Int(2));
    third.ack();
    memory_settles_at_zero(&broker).await;
}

#[tokio::test]
async fn a_missing_dead_letter_exchange_drops_the_message() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "work", &[("x-dead-letter-exchange", "nowhere".into())]).await;
    send(&s, msg("work", "m")).await.unwrap();
    s.get("work", false).await.unwrap().unwrap().reject(false);
    memory_settles_at_zero(&broker).await;
}
