//! Delayed delivery (`x-delay` header on any exchange, `x-delivery-delay` queue
//! argument) and the deduplication window (`x-dedup-window`).

use super::*;

/// A delay long enough never to pass during a test (the message is purged at the end).
const FOREVER: i64 = 600_000;

fn delayed(m: Message, ms: i64) -> Message {
    m.with_header("x-delay", ms)
}

#[tokio::test]
async fn an_x_delay_header_holds_a_message_back_on_any_exchange() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("events", "topic", &ExchangeOptions::new())
        .await
        .unwrap();
    declare(&s, "q", &[]).await;
    s.bind_queue("q", "events", "order.#", FieldTable::new())
        .await
        .unwrap();
    let c = send(
        &s,
        delayed(Message::new("events", "order.new", "later"), FOREVER),
    )
    .await
    .unwrap();
    assert_eq!(c.queues, 1, "confirmed once in the queue");
    let st = stats(&s, "q").await;
    assert_eq!((st.ready, st.delayed), (0, 1));
    assert!(s.get("q", true).await.unwrap().is_none(), "not visible yet");
    let mut consumer = s.consume("q", &ConsumeOptions::default()).await.unwrap();
    send(&s, delayed(Message::new("events", "order.new", "soon"), 50))
        .await
        .unwrap();
    send(&s, Message::new("events", "order.new", "now"))
        .await
        .unwrap();
    let first = recv(&mut consumer).await;
    let second = recv(&mut consumer).await;
    assert_eq!(body(&first), "now");
    assert_eq!(body(&second), "soon");
    assert_eq!(
        s.purge("q").await.unwrap(),
        1,
        "the far one is still waiting"
    );
    assert_eq!(stats(&s, "q").await.delayed, 0);
}

#[tokio::test]
async fn a_queue_delivery_delay_applies_to_every_message_and_x_delay_overrides_it() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[("x-delivery-delay", FieldValue::Int(FOREVER))]).await;
    send(&s, msg("q", "held")).await.unwrap();
    send(&s, delayed(msg("q", "quick"), 30)).await.unwrap();
    eventually("the message with its own short delay visible", || async {
        stats(&s, "q").await.ready == 1
    })
    .await;
    assert_eq!(drain(&s, "q").await, ["quick"]);
    assert_eq!(stats(&s, "q").await.delayed, 1);
    s.delete_queue("q", false, false).await.unwrap();
    memory_settles_at_zero(&broker).await;
}

#[tokio::test]
async fn delayed_messages_due_together_keep_their_publish_order() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[("x-delivery-delay", FieldValue::Int(40))]).await;
    let batch: Vec<Message> = (0..100).map(|i| msg("q", &format!("m{i}"))).collect();
    for c in s.publish_batch(batch, false).await.unwrap() {
        within("confirm", c).await.unwrap();
    }
    let mut consumer = s.consume("q", &ConsumeOptions::default()).await.unwrap();
    let got = recv_n(&mut consumer, 100).await;
    let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&got), want);
}

#[tokio::test]
async fn an_ill_typed_delay_or_expiration_is_refused_with_a_nack() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[]).await;
    let e = expect_code(
        send(&s, msg("q", "m").with_header("x-delay", "soon")).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'x-delay'"), "{e}");
    let e = expect_code(
        send(
            &s,
            msg("q", "m").with_properties(actormq::Properties {
                expiration: Some("tomorrow".into()),
                ..Default::default()
            }),
        )
        .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("expiration"), "{e}");
    assert_eq!(stats(&s, "q").await.ready, 0);
}

#[tokio::test]
async fn a_message_id_seen_within_the_dedup_window_is_confirmed_but_not_enqueued() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[("x-dedup-window", FieldValue::Int(60_000))]).await;
    let with_id = |body: &str, id: &str| {
        let mut m = msg("q", body);
        Arc::make_mut(&mut m.properties).message_id = Some(id.to_string());
        m
    };
    assert_eq!(send(&s, with_id("first", "a")).await.unwrap().queues, 1);
    let again = send(&s, with_id("retry", "a")).await.unwrap();
    assert_eq!(again.queues, 1, "a duplicate is confirmed as taken");
    send(&s, with_id("other", "b")).await.unwrap();
    send(&s, msg("q", "no id")).await.unwrap();
    send(&s, msg("q", "no id")).await.unwrap();
    assert_eq!(drain(&s, "q").await, ["first", "other", "no id", "no id"]);
}
