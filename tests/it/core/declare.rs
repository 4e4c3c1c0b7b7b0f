//! Declarations: what is refused, with which code, and what the message names.

use super::*;
use actormq::broker::exchange::ExchangeSpec;
use actormq::FieldValue;

#[tokio::test]
async fn unknown_exchange_type_is_refused_at_declare() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.declare_exchange("x", "x-no-such-type").await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'x-no-such-type'"), "{e}");
    // Nothing was created.
    expect_code(
        s.declare_exchange_with(ExchangeSpec::new("x", "direct"), true)
            .await,
        ErrorCode::NotFound,
    );
}

#[tokio::test]
async fn redeclaring_an_exchange_with_other_settings_names_the_setting() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("events", "topic").await.unwrap();
    // Same settings: fine, and idempotent.
    s.declare_exchange("events", "topic").await.unwrap();

    let e = expect_code(
        s.declare_exchange("events", "fanout").await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'type'"), "{e}");

    let mut durable = ExchangeSpec::new("events", "topic");
    durable.durable = true;
    let e = expect_code(
        s.declare_exchange_with(durable, false).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'durable'"), "{e}");

    let mut auto_delete = ExchangeSpec::new("events", "topic");
    auto_delete.auto_delete = true;
    let e = expect_code(
        s.declare_exchange_with(auto_delete, false).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'auto_delete'"), "{e}");
}

#[tokio::test]
async fn redeclaring_a_queue_with_other_settings_names_the_setting() {
    let broker = TestBroker::start();
    let s = broker.session();
    let mut ttl = QueueSpec::new("jobs");
    ttl.arguments
        .insert("x-message-ttl".into(), FieldValue::Int(60_000));
    s.declare_queue(ttl.clone()).await.unwrap();
    s.declare_queue(ttl.clone()).await.unwrap();

    let mut durable = ttl.clone();
    durable.durable = true;
    let e = expect_code(
        s.declare_queue(durable).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'durable'"), "{e}");

    let mut other_ttl = ttl.clone();
    other_ttl
        .arguments
        .insert("x-message-ttl".into(), FieldValue::Int(1_000));
    let e = expect_code(
        s.declare_queue(other_ttl).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'x-message-ttl'"), "{e}");

    let e = expect_code(
        s.declare_queue(QueueSpec::new("jobs")).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'x-message-ttl'"), "{e}");

    // A passive declare does not compare settings.
    let ok = s
        .declare_queue_with(QueueSpec::new("jobs"), true)
        .await
        .unwrap();
    assert_eq!(ok.name, "jobs");
}

#[tokio::test]
async fn passive_declare_of_a_missing_entity_is_not_found() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.declare_queue_with(QueueSpec::new("missing"), true).await,
        ErrorCode::NotFound,
    );
    assert!(e.message().contains("'missing'"), "{e}");
    expect_code(
        s.declare_exchange_with(ExchangeSpec::new("missing-x", "direct"), true)
            .await,
        ErrorCode::NotFound,
    );

    // Once declared, a passive declare answers the counts.
    declare_queues(&s, &["present"]).await;
    publish(&s, "", "present", "1").await;
    publish(&s, "", "present", "2").await;
    let got = s
        .declare_queue_with(QueueSpec::new("present"), true)
        .await
        .unwrap();
    assert_eq!((got.messages, got.consumers), (2, 0));
}

#[tokio::test]
async fn amq_prefixed_names_are_reserved() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.declare_exchange("amq.custom", "direct").await,
        ErrorCode::AccessRefused,
    );
    assert!(e.message().contains("amq.custom"), "{e}");
    let e = expect_code(
        s.declare_queue(QueueSpec::new("amq.queue")).await,
        ErrorCode::AccessRefused,
    );
    assert!(e.message().contains("amq.queue"), "{e}");
    expect_code(
        s.delete_exchange("amq.direct", false).await,
        ErrorCode::AccessRefused,
    );

    // The predeclared ones exist and can be used.
    declare_queues(&s, &["q"]).await;
    s.bind("amq.topic", "q", "a.#").await.unwrap();
    assert_eq!(publish(&s, "amq.topic", "a.b", "x").await, 1);
}

#[tokio::test]
async fn an_empty_queue_name_gets_a_generated_one() {
    let broker = TestBroker::start();
    let s = broker.session();
    let a = s.declare_queue(QueueSpec::new("")).await.unwrap();
    let b = s.declare_queue(QueueSpec::new("")).await.unwrap();
    assert!(a.name.starts_with("amq.gen-"), "{}", a.name);
    assert_ne!(a.name, b.name);
    assert_eq!(publish(&s, "", &a.name, "x").await, 1);
}

#[tokio::test]
async fn the_empty_name_is_the_default_exchange_and_never_a_queue() {
    let broker = TestBroker::start();
    let s = broker.session();
    // The default exchange exists: a passive declare succeeds, any other is refused,
    // even with its own settings, and it is ACCESS_REFUSED, not PRECONDITION_FAILED.
    s.declare_exchange_with(ExchangeSpec::new("", "direct"), true)
        .await
        .unwrap();
    for kind in ["direct", "fanout"] {
        let e = expect_code(s.declare_exchange("", kind).await, ErrorCode::AccessRefused);
        assert!(e.message().contains("default exchange"), "{e}");
    }
    // No queue is named "": a passive declare finds none.
    let e = expect_code(
        s.declare_queue_with(QueueSpec::new(""), true).await,
        ErrorCode::NotFound,
    );
    assert!(e.message().contains("''"), "{e}");
}
