//! Queues: get, purge, delete conditions, exclusive and auto-delete queues.

use super::*;

#[tokio::test]
async fn get_with_auto_ack_takes_the_message_for_good() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["q"]).await;
    publish(&s, "", "q", "first").await;
    publish(&s, "", "q", "second").await;

    let got = s.get("q", true).await.unwrap().expect("a message");
    assert_eq!(body(&got), "first");
    assert!(!got.redelivered);
    let stats = s.queue_stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.unacked), (1, 0));
    // Settling an auto-acked message changes nothing.
    got.nack(true);
    assert_eq!(drain(&s, "q").await, ["second"]);
    assert!(s.get("q", true).await.unwrap().is_none());
}

#[tokio::test]
async fn get_without_auto_ack_holds_the_message_until_settled() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["q"]).await;
    for b in ["a", "b", "c"] {
        publish(&s, "", "q", b).await;
    }

    let a = s.get("q", false).await.unwrap().expect("a");
    let b = s.get("q", false).await.unwrap().expect("b");
    assert_eq!((body(&a), body(&b)), ("a".into(), "b".into()));
    let stats = s.queue_stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.unacked), (1, 2));

    a.ack();
    b.nack(true);
    eventually("a acked, b back in the queue", || async {
        let st = s.queue_stats("q").await.unwrap();
        (st.ready, st.unacked) == (2, 0)
    })
    .await;
    let again = s.get("q", false).await.unwrap().expect("b again");
    assert_eq!(body(&again), "b");
    assert!(again.redelivered);
    assert_eq!(again.delivery_count, 2);
}

#[tokio::test]
async fn purge_removes_ready_messages_and_keeps_unacked_ones() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["q"]).await;
    for i in 0..5 {
        publish(&s, "", "q", &i.to_string()).await;
    }
    let held = s.get("q", false).await.unwrap().expect("0");

    assert_eq!(s.purge("q").await.unwrap(), 4);
    let stats = s.queue_stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.unacked), (0, 1));
    assert_eq!(stats.bytes, 1, "only the unacked body is still held");

    held.nack(true);
    eventually("the unacked message back", || async {
        s.queue_stats("q").await.unwrap().ready == 1
    })
    .await;
    assert_eq!(drain(&s, "q").await, ["0"]);
    expect_code(s.purge("missing").await, ErrorCode::NotFound);
}

#[tokio::test]
async fn delete_if_unused_and_if_empty_refuse_while_the_condition_fails() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["busy"]).await;
    publish(&s, "", "busy", "m").await;
    let consumer = s.consume("busy", &ConsumeOptions::default()).await.unwrap();

    let e = expect_code(
        s.delete_queue("busy", true, false).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(
        e.message().contains("'busy'") && e.message().contains("consumer"),
        "{e}"
    );

    drop(consumer);
    // The consumer is gone, but the message it was sent is not: the queue is not empty.
    // Its unacked delivery goes back to the queue when the dropped consumer's buffer is
    // released, which may come after the detach: wait for both.
    eventually(
        "the consumer detached and its delivery requeued",
        || async {
            let stats = s.queue_stats("busy").await.unwrap();
            stats.consumers == 0 && stats.ready == 1
        },
    )
    .await;
    let e = expect_code(
        s.delete_queue("busy", true, true).await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("not empty"), "{e}");

    // Both refusals left the queue in place; an unconditional delete answers its count.
    assert_eq!(s.delete_queue("busy", false, false).await.unwrap(), 1);
    expect_code(
        s.declare_queue("busy", &QueueOptions::new().passive())
            .await,
        ErrorCode::NotFound,
    );
    // Deleting a queue that does not exist succeeds, as in RabbitMQ.
    assert_eq!(s.delete_queue("busy", false, false).await.unwrap(), 0);
}

#[tokio::test]
async fn exclusive_queue_is_refused_to_other_sessions() {
    let broker = TestBroker::start();
    let owner = broker.session();
    let other = broker.session();
    let spec = QueueOptions::new().exclusive();
    owner.declare_queue("mine", &spec).await.unwrap();
    publish(&owner, "", "mine", "m").await;

    for (what, res) in [
        (
            "declare",
            other.declare_queue("mine", &spec).await.map(|_| ()),
        ),
        (
            "passive declare",
            other
                .declare_queue("mine", &QueueOptions::new().passive())
                .await
                .map(|_| ()),
        ),
        (
            "consume",
            other
                .consume("mine", &ConsumeOptions::default())
                .await
                .map(|_| ()),
        ),
        ("get", other.get("mine", true).await.map(|_| ())),
        ("purge", other.purge("mine").await.map(|_| ())),
        (
            "bind",
            other
                .bind_queue("mine", "amq.direct", "k", FieldTable::new())
                .await,
        ),
        (
            "delete",
            other.delete_queue("mine", false, false).await.map(|_| ()),
        ),
    ] {
        let e = res.expect_err(what);
        assert_eq!(e.code(), ErrorCode::ResourceLocked, "{what}: {e}");
    }
    // Publishing to it is allowed (as in RabbitMQ), and the owner sees everything.
    assert_eq!(publish(&other, "", "mine", "from-other").await, 1);
    assert_eq!(drain(&owner, "mine").await, ["m", "from-other"]);
}

#[tokio::test]
async fn exclusive_queue_is_deleted_when_its_session_drops() {
    let broker = TestBroker::start();
    let owner = broker.session();
    let other = broker.session();
    let spec = QueueOptions::new().exclusive();
    owner.declare_queue("temp", &spec).await.unwrap();
    owner
        .bind_queue("temp", "amq.fanout", "", FieldTable::new())
        .await
        .unwrap();

    drop(owner);
    eventually("the exclusive queue deleted", || async {
        other
            .declare_queue("temp", &QueueOptions::new().passive())
            .await
            .is_err_and(|e| e.code() == ErrorCode::NotFound)
    })
    .await;
    // Its bindings went with it, and the name is free again.
    assert_eq!(publish(&other, "amq.fanout", "", "x").await, 0);
    other
        .declare_queue("temp", &QueueOptions::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn auto_delete_queue_is_deleted_when_its_last_consumer_cancels() {
    let broker = TestBroker::start();
    let s = broker.session();
    let spec = QueueOptions::new().auto_delete();
    s.declare_queue("ephemeral", &spec).await.unwrap();

    let first = s
        .consume("ephemeral", &ConsumeOptions::default())
        .await
        .unwrap();
    let second = s
        .consume("ephemeral", &ConsumeOptions::default())
        .await
        .unwrap();
    drop(first);
    eventually("one consumer left", || async {
        s.queue_stats("ephemeral").await.unwrap().consumers == 1
    })
    .await;
    // Still there with one consumer.
    assert_eq!(publish(&s, "", "ephemeral", "x").await, 1);

    drop(second);
    eventually("the auto-delete queue deleted", || async {
        s.declare_queue("ephemeral", &QueueOptions::new().passive())
            .await
            .is_err_and(|e| e.code() == ErrorCode::NotFound)
    })
    .await;
    assert_eq!(publish(&s, "", "ephemeral", "y").await, 0);
}

#[tokio::test]
async fn auto_delete_queue_without_any_consumer_yet_stays() {
    let broker = TestBroker::start();
    let s = broker.session();
    let spec = QueueOptions::new().auto_delete();
    s.declare_queue("waiting", &spec).await.unwrap();
    assert_eq!(publish(&s, "", "waiting", "kept").await, 1);
    // A get is not a consumer: the queue stays.
    assert_eq!(drain(&s, "waiting").await, ["kept"]);
    assert_eq!(publish(&s, "", "waiting", "still").await, 1);
}

/// Regression: between an auto-delete queue stopping and the registry handling its
/// notice, requests naming it failed with CONNECTION_FORCED ("target actor has
/// stopped") instead of NOT_FOUND, and a declare answered the dead queue.
#[tokio::test]
async fn requests_racing_an_auto_delete_see_not_found_never_a_dead_queue() {
    let broker = TestBroker::start();
    let s = broker.session();
    for i in 0..100 {
        let name = format!("brief-{i}");
        let spec = QueueOptions::new().auto_delete();
        s.declare_queue(&name, &spec).await.unwrap();
        drop(s.consume(&name, &ConsumeOptions::default()).await.unwrap());

        if let Err(e) = s.declare_queue(&name, &QueueOptions::new().passive()).await {
            assert_eq!(e.code(), ErrorCode::NotFound, "passive declare: {e}");
        }
        if let Err(e) = s.get(&name, true).await {
            assert_eq!(e.code(), ErrorCode::NotFound, "get: {e}");
        }
        s.declare_queue(&name, &spec).await.unwrap();
    }
}
