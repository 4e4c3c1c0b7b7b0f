//! Declarations: what is refused, with which code, and what the message names.

use super::*;

#[tokio::test]
async fn unknown_exchange_type_is_refused_at_declare() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.declare_exchange("x", "x-no-such-type", &ExchangeOptions::new())
            .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'x-no-such-type'"), "{e}");
    // Nothing was created.
    expect_code(
        s.declare_exchange("x", "direct", &ExchangeOptions::new().passive())
            .await,
        ErrorCode::NotFound,
    );
}

#[tokio::test]
async fn redeclaring_an_exchange_with_other_settings_names_the_setting() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("events", "topic", &ExchangeOptions::new())
        .await
        .unwrap();
    // Same settings: fine, and idempotent.
    s.declare_exchange("events", "topic", &ExchangeOptions::new())
        .await
        .unwrap();

    let e = expect_code(
        s.declare_exchange("events", "fanout", &ExchangeOptions::new())
            .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'type'"), "{e}");

    let e = expect_code(
        s.declare_exchange("events", "topic", &ExchangeOptions::durable())
            .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'durable'"), "{e}");

    let auto_delete = ExchangeOptions::new().auto_delete();
    let e = expect_code(
        s.declare_exchange("events", "topic", &auto_delete).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'auto_delete'"), "{e}");
}

#[tokio::test]
async fn redeclaring_a_queue_with_other_settings_names_the_setting() {
    let broker = TestBroker::start();
    let s = broker.session();
    let ttl = QueueOptions::new().arg("x-message-ttl", 60_000i64);
    s.declare_queue("jobs", &ttl).await.unwrap();
    s.declare_queue("jobs", &ttl).await.unwrap();

    let durable = QueueOptions {
        durable: true,
        ..ttl.clone()
    };
    let e = expect_code(
        s.declare_queue("jobs", &durable).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'durable'"), "{e}");

    let other_ttl = QueueOptions::new().arg("x-message-ttl", 1_000i64);
    let e = expect_code(
        s.declare_queue("jobs", &other_ttl).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'x-message-ttl'"), "{e}");

    let e = expect_code(
        s.declare_queue("jobs", &QueueOptions::new()).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'x-message-ttl'"), "{e}");

    // A passive declare does not compare settings.
    let ok = s
        .declare_queue("jobs", &QueueOptions::new().passive())
        .await
        .unwrap();
    assert_eq!(ok.name, "jobs");
}

#[tokio::test]
async fn passive_declare_of_a_missing_entity_is_not_found() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.declare_queue("missing", &QueueOptions::new().passive())
            .await,
        ErrorCode::NotFound,
    );
    assert!(e.message().contains("'missing'"), "{e}");
    expect_code(
        s.declare_exchange("missing-x", "direct", &ExchangeOptions::new().passive())
            .await,
        ErrorCode::NotFound,
    );

    // Once declared, a passive declare answers the counts.
    declare_queues(&s, &["present"]).await;
    publish(&s, "", "present", "1").await;
    publish(&s, "", "present", "2").await;
    let got = s
        .declare_queue("present", &QueueOptions::new().passive())
        .await
        .unwrap();
    assert_eq!((got.messages, got.consumers), (2, 0));
}

#[tokio::test]
async fn amq_prefixed_names_are_reserved() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.declare_exchange("amq.custom", "direct", &ExchangeOptions::new())
            .await,
        ErrorCode::AccessRefused,
    );
    assert!(e.message().contains("amq.custom"), "{e}");
    let e = expect_code(
        s.declare_queue("amq.queue", &QueueOptions::new()).await,
        ErrorCode::AccessRefused,
    );
    assert!(e.message().contains("amq.queue"), "{e}");
    expect_code(
        s.delete_exchange("amq.direct", false).await,
        ErrorCode::AccessRefused,
    );

    // The predeclared ones exist and can be used.
    declare_queues(&s, &["q"]).await;
    s.bind_queue("q", "amq.topic", "a.#", FieldTable::new())
        .await
        .unwrap();
    assert_eq!(publish(&s, "amq.topic", "a.b", "x").await, 1);
}

#[tokio::test]
async fn an_empty_queue_name_gets_a_generated_one() {
    let broker = TestBroker::start();
    let s = broker.session();
    let a = s.declare_queue("", &QueueOptions::new()).await.unwrap();
    let b = s.declare_queue("", &QueueOptions::new()).await.unwrap();
    assert!(a.name.starts_with("amq.gen-"), "{}", a.name);
    assert_ne!(a.name, b.name);
    assert_eq!(publish(&s, "", &a.name, "x").await, 1);
}

#[tokio::test]
async fn durable_declares_are_refused_on_a_broker_without_storage() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.declare_queue("jobs", &QueueOptions::durable()).await,
        ErrorCode::PreconditionFailed,
    );
    let text = e.message();
    assert!(text.contains("queue 'jobs'"), "{e}");
    assert!(text.contains("no storage"), "{e}");
    assert!(text.contains("BrokerBuilder::storage"), "{e}");
    assert!(text.contains("transient_durables"), "{e}");
    let e = expect_code(
        s.declare_exchange("events", "topic", &ExchangeOptions::durable())
            .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("exchange 'events'"), "{e}");

    // Nothing was created: a passive declare does not find them.
    let passive = QueueOptions::new().passive();
    expect_code(s.declare_queue("jobs", &passive).await, ErrorCode::NotFound);
    // Transient declares, and persistent messages in transient queues, still work.
    s.declare_queue("jobs", &QueueOptions::new()).await.unwrap();
    let confirm = s
        .publish(Message::new("", "jobs", "p").persistent())
        .await
        .unwrap();
    assert_eq!(within("a confirm", confirm).await.unwrap().queues, 1);
    // The built-in durable exchanges may be redeclared as they are.
    s.declare_exchange("amq.topic", "topic", &ExchangeOptions::durable())
        .await
        .unwrap();
}

#[tokio::test]
async fn transient_durables_accepts_durable_declares_in_memory_only() {
    let broker = TestBroker::from_builder(Broker::builder().workers(2).transient_durables());
    let s = broker.session();
    s.declare_queue("jobs", &QueueOptions::durable())
        .await
        .unwrap();
    s.declare_exchange("events", "fanout", &ExchangeOptions::durable())
        .await
        .unwrap();
    s.bind_queue("jobs", "events", "", FieldTable::new())
        .await
        .unwrap();
    let confirm = s
        .publish(Message::new("events", "", "p").persistent())
        .await
        .unwrap();
    assert_eq!(within("a confirm", confirm).await.unwrap().queues, 1);
    assert_eq!(drain(&s, "jobs").await, ["p"]);
}

#[tokio::test]
async fn the_empty_name_is_the_default_exchange_and_never_a_queue() {
    let broker = TestBroker::start();
    let s = broker.session();
    // The default exchange exists: a passive declare succeeds, any other is refused,
    // even with its own settings, and it is ACCESS_REFUSED, not PRECONDITION_FAILED.
    s.declare_exchange("", "direct", &ExchangeOptions::new().passive())
        .await
        .unwrap();
    for kind in ["direct", "fanout"] {
        let e = expect_code(
            s.declare_exchange("", kind, &ExchangeOptions::new()).await,
            ErrorCode::AccessRefused,
        );
        assert!(e.message().contains("default exchange"), "{e}");
    }
    // No queue is named "": a passive declare finds none.
    let e = expect_code(
        s.declare_queue("", &QueueOptions::new().passive()).await,
        ErrorCode::NotFound,
    );
    assert!(e.message().contains("''"), "{e}");
}

#[tokio::test]
async fn a_queue_type_that_is_not_built_is_refused_naming_the_known_types() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.declare_queue("q", &QueueOptions::new().arg("x-queue-type", "lazy"))
            .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'lazy'"), "{e}");
    assert!(
        e.message().contains("known types: classic, quorum, stream"),
        "{e}"
    );
    // A stream is built, and always durable (tests/it/streams); so is a quorum queue
    // (tests/it/quorum).
    let e = expect_code(
        s.declare_queue("q", &QueueOptions::new().arg("x-queue-type", "stream"))
            .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'non-durable'"), "{e}");
    // Nothing was created; the type that is built is accepted.
    expect_code(
        s.declare_queue("q", &QueueOptions::new().passive()).await,
        ErrorCode::NotFound,
    );
    s.declare_queue("q", &QueueOptions::new().arg("x-queue-type", "classic"))
        .await
        .unwrap();
}
