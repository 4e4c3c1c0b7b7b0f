//! Alternate exchanges: where messages no binding routes go.

use super::*;
use actormq::broker::exchange::ExchangeSpec;

fn with_alternate(name: &str, kind: &str, alternate: &str) -> ExchangeSpec {
    let mut spec = ExchangeSpec::new(name, kind);
    spec.arguments
        .insert("alternate-exchange".into(), alternate.into());
    spec
}

#[tokio::test]
async fn unroutable_messages_go_to_the_alternate_exchange_and_count_as_routed() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange_with(with_alternate("orders", "direct", "orders.ae"), false)
        .await
        .unwrap();
    s.declare_exchange("orders.ae", "fanout").await.unwrap();
    declare_queues(&s, &["routed", "unrouted"]).await;
    s.bind("orders", "routed", "known").await.unwrap();
    s.bind("orders.ae", "unrouted", "").await.unwrap();

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
    s.declare_exchange_with(with_alternate("lonely", "direct", "nowhere"), false)
        .await
        .unwrap();
    s.declare_exchange_with(with_alternate("ping", "direct", "pong"), false)
        .await
        .unwrap();
    s.declare_exchange_with(with_alternate("pong", "direct", "ping"), false)
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
    s.declare_exchange_with(with_alternate("main", "direct", "late"), false)
        .await
        .unwrap();
    assert_eq!(publish(&s, "main", "k", "before").await, 0);
    s.declare_exchange("late", "fanout").await.unwrap();
    declare_queues(&s, &["catch"]).await;
    s.bind("late", "catch", "").await.unwrap();
    assert_eq!(publish(&s, "main", "k", "after").await, 1);
    assert_eq!(drain(&s, "catch").await, ["after"]);
}
