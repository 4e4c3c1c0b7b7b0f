//! Over the network: TTL, queue expiry, length limits and their nacks, dead-lettering
//! with `x-death`, delivery limits, priorities, delays, deduplication.

use super::*;

fn dlx_to(dlq: &str) -> [(&'static str, FieldValue); 2] {
    [
        ("x-dead-letter-exchange", "".into()),
        ("x-dead-letter-routing-key", dlq.into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_dead_lettered_with_x_death_over_the_wire() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "dlq", &[]).await;
    let [a, b] = dlx_to("dlq");
    declare(
        &client,
        "work",
        &[a, b, ("x-message-ttl", FieldValue::Int(50))],
    )
    .await;
    let mut dead = client
        .consume("dlq", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    let none = PublishOptions::default();
    send(&client, "", "work", "queue-ttl", &none).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(
        (text(&d).as_str(), d.routing_key.as_str()),
        ("queue-ttl", "dlq")
    );
    let x = deaths(&d);
    assert_eq!(x[0].get("reason"), Some(&FieldValue::from("expired")));
    assert_eq!(x[0].get("queue"), Some(&FieldValue::from("work")));
    assert_eq!(x[0].get("count"), Some(&FieldValue::Int(1)));
    d.ack().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_message_ttl_expires_a_message_behind_the_head() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "q", &[]).await;
    let none = PublishOptions::default();
    send(&client, "", "q", "head", &none).await.unwrap();
    let short = PublishOptions::default().expiration(50);
    send(&client, "", "q", "short", &short).await.unwrap();
    send(&client, "", "q", "tail", &none).await.unwrap();
    eventually("the expired message removed", || async {
        ready(&client, "q").await == 2
    })
    .await;
    assert_eq!(drain(&client, "q").await, ["head", "tail"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_queue_with_x_expires_is_deleted() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "temp", &[("x-expires", FieldValue::Int(100))]).await;
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    eventually("the queue deleted", || async {
        client.declare_queue("temp", &passive).await.is_err()
    })
    .await;
    let e = client.declare_queue("temp", &passive).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_reject_publish_queue_nacks_with_resource_error_naming_it() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(
        &client,
        "bounded",
        &[
            ("x-max-length", FieldValue::Int(1)),
            ("x-overflow", "reject-publish".into()),
        ],
    )
    .await;
    let none = PublishOptions::default();
    send(&client, "", "bounded", "in", &none).await.unwrap();
    let e = send(&client, "", "bounded", "out", &none)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ResourceError), "{e}");
    let m = e.server_message().unwrap();
    assert!(
        m.contains("'bounded'") && m.contains("reject-publish"),
        "{m}"
    );
    // The connection goes on, and so do confirms.
    assert_eq!(drain(&client, "bounded").await, ["in"]);
    send(&client, "", "bounded", "again", &none).await.unwrap();
    assert!(client.closed_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_keeps_the_newest_over_the_wire() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "q", &[("x-max-length", FieldValue::Int(2))]).await;
    for b in ["a", "b", "c"] {
        send(&client, "", "q", b, &PublishOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(drain(&client, "q").await, ["b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_past_the_delivery_limit_is_dead_lettered() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "dlq", &[]).await;
    let [a, b] = dlx_to("dlq");
    declare(
        &client,
        "work",
        &[a, b, ("x-delivery-limit", FieldValue::Int(1))],
    )
    .await;
    send(&client, "", "work", "poison", &PublishOptions::default())
        .await
        .unwrap();
    let mut c = client
        .consume("work", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    for count in 1..=2 {
        let d = next(&mut c).await;
        assert_eq!(d.delivery_count, count);
        d.nack(true).unwrap();
    }
    let mut dead = client
        .consume("dlq", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    let d = next(&mut dead).await;
    assert_eq!(
        deaths(&d)[0].get("reason"),
        Some(&FieldValue::from("delivery_limit"))
    );
    d.ack().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_and_delays_travel_as_properties_and_headers() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "prio", &[("x-max-priority", FieldValue::Int(9))]).await;
    for (b, p) in [("low", 1), ("high", 9), ("mid", 5)] {
        let o = PublishOptions::default().priority(p);
        send(&client, "", "prio", b, &o).await.unwrap();
    }
    assert_eq!(drain(&client, "prio").await, ["high", "mid", "low"]);

    client
        .declare_exchange("events", "fanout", &ExchangeOptions::default())
        .await
        .unwrap();
    declare(&client, "later", &[]).await;
    client
        .bind_queue("later", "events", "", FieldTable::new())
        .await
        .unwrap();
    let mut c = client
        .consume("later", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    let delayed = PublishOptions::default().delay(100);
    send(&client, "events", "", "delayed", &delayed)
        .await
        .unwrap();
    send(&client, "events", "", "at once", &PublishOptions::default())
        .await
        .unwrap();
    let first = next(&mut c).await;
    let second = next(&mut c).await;
    assert_eq!(
        (text(&first), text(&second)),
        ("at once".into(), "delayed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_message_id_is_confirmed_once_enqueued_once() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "q", &[("x-dedup-window", FieldValue::Int(60_000))]).await;
    let o = PublishOptions::default().message_id("order-17");
    send(&client, "", "q", "first", &o).await.unwrap();
    send(&client, "", "q", "retry", &o).await.unwrap();
    assert_eq!(drain(&client, "q").await, ["first"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_expiration_and_ill_typed_arguments_are_refused_with_their_names() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "q", &[]).await;
    let mut bad = PublishOptions::default();
    bad.properties.expiration = Some("soon".into());
    let e = send(&client, "", "q", "m", &bad).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::PreconditionFailed), "{e}");
    let e = client
        .declare_queue(
            "typed",
            &QueueOptions::default().arg("x-max-priority", "high"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::PreconditionFailed));
    assert!(e.to_string().contains("'x-max-priority'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_limits_reject_publish_dlx_and_queue_delays_over_the_wire() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let none = PublishOptions::default();
    declare(
        &client,
        "bytes",
        &[("x-max-length-bytes", FieldValue::Int(5))],
    )
    .await;
    for b in ["aaa", "bb", "c"] {
        send(&client, "", "bytes", b, &none).await.unwrap();
    }
    assert_eq!(drain(&client, "bytes").await, ["bb", "c"]);

    declare(&client, "dlq", &[]).await;
    let [a, b] = dlx_to("dlq");
    declare(
        &client,
        "full",
        &[
            a,
            b,
            ("x-max-length", FieldValue::Int(0)),
            ("x-overflow", "reject-publish-dlx".into()),
        ],
    )
    .await;
    let e = send(&client, "", "full", "bounced", &none)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ResourceError), "{e}");
    let mut dead = client
        .consume("dlq", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    let d = next(&mut dead).await;
    assert_eq!(text(&d), "bounced");
    assert_eq!(
        deaths(&d)[0].get("reason"),
        Some(&FieldValue::from("maxlen"))
    );
    d.ack().unwrap();

    declare(
        &client,
        "slow",
        &[("x-delivery-delay", FieldValue::Int(50))],
    )
    .await;
    let mut c = client
        .consume("slow", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    for b in ["one", "two"] {
        send(&client, "", "slow", b, &none).await.unwrap();
    }
    let got = [next(&mut c).await, next(&mut c).await];
    assert_eq!((text(&got[0]), text(&got[1])), ("one".into(), "two".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_cycle_between_ttl_queues_ends_over_the_wire() {
    let server = TestServer::start();
    let client = connect(&server).await;
    for (q, next_queue) in [("a", "b"), ("b", "a")] {
        let [x, _] = dlx_to("");
        declare(
            &client,
            q,
            &[
                x,
                ("x-dead-letter-routing-key", next_queue.into()),
                ("x-message-ttl", FieldValue::Int(20)),
            ],
        )
        .await;
    }
    send(&client, "", "a", "looping", &PublishOptions::default())
        .await
        .unwrap();
    let gauge = server.handle().broker().memory().clone();
    eventually("the looping message dropped", || async {
        gauge.used() == 0
    })
    .await;
    assert_eq!(ready(&client, "a").await + ready(&client, "b").await, 0);
}
