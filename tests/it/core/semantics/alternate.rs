//! Alternate exchanges: where messages no binding routes go.

use super::*;

fn with_alternate(alternate: &str) -> ExchangeOptions {
    ExchangeOptions::new().arg("alternate-exchange", alternate)
}

#[tokio::test]
async fn unroutable_messages_go_to_the_alternate_exchange_and_count_as_routed() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("orders", "direct", &with_alternate("orders.ae"))
        .await
        .unwrap();
    s.declare_exchange("orders.ae", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["routed", "unrouted"]).await;
    s.bind_queue("routed", "orders", "known", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("unrouted", "orders.ae", "", FieldTable::new())
        .await
        .unwrap();

    let c = s
        .publish_mandatory(Message::new("orders", "unknown", "stray"))
        .await
        .unwrap();
    let c = within("confirm", c).await.unwrap();
    assert_eq!(c.queues, 1, "routed through the alternate exchange");
    assert!(
        c.returned.is_none(),
        "so a mandatory message is not returned"
    );
    assert_eq!(publish(&s, "orders", "known", "normal").await, 1);
    assert_eq!(drain(&s, "unrouted").await, ["stray"]);
    assert_eq!(drain(&s, "routed").await, ["normal"]);
}

#[tokio::test]
async fn a_missing_or_looping_alternate_exchange_leaves_the_message_unroutable() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("lonely", "direct", &with_alternate("nowhere"))
        .await
        .unwrap();
    s.declare_exchange("ping", "direct", &with_alternate("pong"))
        .await
        .unwrap();
    s.declare_exchange("pong", "direct", &with_alternate("ping"))
        .await
        .unwrap();
    for x in ["lonely", "ping"] {
        let c = s
            .publish_mandatory(Message::new(x, "k", "m"))
            .await
            .unwrap();
        let c = within("confirm", c).await.unwrap();
        assert_eq!(c.queues, 0);
        assert!(c.returned.is_some(), "returned from {x}");
    }
}

#[tokio::test]
async fn an_alternate_exchange_declared_later_is_found() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("main", "direct", &with_alternate("late"))
        .await
        .unwrap();
    assert_eq!(publish(&s, "main", "k", "before").await, 0);
    s.declare_exchange("late", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["catch"]).await;
    s.bind_queue("catch", "late", "", FieldTable::new())
        .await
        .unwrap();
    assert_eq!(publish(&s, "main", "k", "after").await, 1);
    assert_eq!(drain(&s, "catch").await, ["after"]);
}
