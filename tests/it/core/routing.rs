//! Routing: the four built-in exchange types, the default exchange, exchange-to-exchange
//! bindings, confirms and mandatory returns.

use super::*;
use actormq::{FieldTable, FieldValue};

#[tokio::test]
async fn direct_routes_by_exact_routing_key() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("colours", "direct", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["red-1", "red-2", "green"]).await;
    s.bind_queue("red-1", "colours", "red", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("red-2", "colours", "red", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("green", "colours", "green", FieldTable::new())
        .await
        .unwrap();

    assert_eq!(publish(&s, "colours", "red", "r").await, 2);
    assert_eq!(publish(&s, "colours", "green", "g").await, 1);
    assert_eq!(publish(&s, "colours", "blue", "b").await, 0);
    assert_eq!(publish(&s, "colours", "RED", "R").await, 0);

    assert_eq!(drain(&s, "red-1").await, ["r"]);
    assert_eq!(drain(&s, "red-2").await, ["r"]);
    assert_eq!(drain(&s, "green").await, ["g"]);
}

#[tokio::test]
async fn fanout_delivers_to_every_bound_queue() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("news", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["a", "b", "c", "unbound"]).await;
    for q in ["a", "b", "c"] {
        s.bind_queue(q, "news", "", FieldTable::new())
            .await
            .unwrap();
    }

    assert_eq!(publish(&s, "news", "any.key", "one").await, 3);
    assert_eq!(publish(&s, "news", "", "two").await, 3);

    for q in ["a", "b", "c"] {
        assert_eq!(drain(&s, q).await, ["one", "two"], "queue {q}");
    }
    assert!(drain(&s, "unbound").await.is_empty());
}

#[tokio::test]
async fn topic_matches_words_and_wildcards() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("animals", "topic", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["q1", "q2"]).await;
    // RabbitMQ's tutorial 5.
    s.bind_queue("q1", "animals", "*.orange.*", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("q2", "animals", "*.*.rabbit", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("q2", "animals", "lazy.#", FieldTable::new())
        .await
        .unwrap();

    let cases: &[(&str, u32)] = &[
        ("quick.orange.rabbit", 2),
        ("lazy.orange.elephant", 2),
        ("quick.orange.fox", 1),
        ("lazy.brown.fox", 1),
        ("lazy.pink.rabbit", 1), // two bindings of q2 match: delivered once
        ("quick.brown.fox", 0),
        ("orange", 0),
        ("quick.orange.new.rabbit", 0),
        ("lazy.orange.new.rabbit", 1),
        ("lazy", 1),
    ];
    for (key, reached) in cases {
        assert_eq!(
            publish(&s, "animals", key, key).await,
            *reached,
            "key {key}"
        );
    }

    assert_eq!(
        drain(&s, "q1").await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    assert_eq!(
        drain(&s, "q2").await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.new.rabbit",
            "lazy"
        ]
    );
}

#[tokio::test]
async fn headers_match_all_or_any_of_the_binding_arguments() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("hdr", "headers", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["all", "any"]).await;
    let args = |pairs: &[(&str, FieldValue)]| -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    s.bind_queue(
        "all",
        "hdr",
        "",
        args(&[
            ("x-match", "all".into()),
            ("format", "pdf".into()),
            ("type", "report".into()),
        ]),
    )
    .await
    .unwrap();
    s.bind_queue(
        "any",
        "hdr",
        "",
        args(&[
            ("x-match", "any".into()),
            ("format", "pdf".into()),
            ("size", FieldValue::Int(3)),
        ]),
    )
    .await
    .unwrap();

    let send = |body: &'static str, headers: &[(&str, FieldValue)]| {
        let mut m = Message::new("hdr", "ignored", body);
        for (k, v) in headers {
            m = m.with_header(k, v.clone());
        }
        m
    };
    let cases = [
        (
            send(
                "pdf-report",
                &[("format", "pdf".into()), ("type", "report".into())],
            ),
            2,
        ),
        (send("pdf", &[("format", "pdf".into())]), 1),
        (send("size-3", &[("size", FieldValue::Int(3))]), 1),
        // Type matters: the string "3" is not the integer 3.
        (send("size-str", &[("size", "3".into())]), 0),
        (send("report-only", &[("type", "report".into())]), 0),
        (send("none", &[]), 0),
    ];
    for (m, reached) in cases {
        let body = String::from_utf8(m.body.to_vec()).unwrap();
        let c = s.publish(m).await.unwrap().await.unwrap();
        assert_eq!(c.queues, reached, "message {body}");
    }
    assert_eq!(drain(&s, "all").await, ["pdf-report"]);
    assert_eq!(drain(&s, "any").await, ["pdf-report", "pdf", "size-3"]);

    // A typo in x-match is refused at bind time rather than matching nothing.
    let e = expect_code(
        s.bind_queue("all", "hdr", "", args(&[("x-match", "al".into())]))
            .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("x-match"), "{e}");
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["inbox", "outbox"]).await;

    assert_eq!(publish(&s, "", "inbox", "to-inbox").await, 1);
    assert_eq!(publish(&s, "", "outbox", "to-outbox").await, 1);
    assert_eq!(publish(&s, "", "nowhere", "lost").await, 0);
    assert_eq!(drain(&s, "inbox").await, ["to-inbox"]);
    assert_eq!(drain(&s, "outbox").await, ["to-outbox"]);

    // Its bindings are implicit: binding to it is refused.
    expect_code(
        s.bind_queue("inbox", "", "other", FieldTable::new()).await,
        ErrorCode::AccessRefused,
    );
    // A deleted queue is no longer reachable through it.
    s.delete_queue("inbox", false, false).await.unwrap();
    assert_eq!(publish(&s, "", "inbox", "late").await, 0);
}

#[tokio::test]
async fn exchange_to_exchange_binding_forwards_matching_messages() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("front", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    s.declare_exchange("back", "topic", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["orders-eu"]).await;
    s.bind_exchange("back", "front", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("orders-eu", "back", "orders.eu.*", FieldTable::new())
        .await
        .unwrap();

    assert_eq!(publish(&s, "front", "orders.eu.created", "a").await, 1);
    assert_eq!(publish(&s, "front", "orders.us.created", "b").await, 0);
    assert_eq!(drain(&s, "orders-eu").await, ["a"]);
}

#[tokio::test]
async fn exchange_binding_loop_delivers_once_and_terminates() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("ping", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    s.declare_exchange("pong", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["seen-by-ping", "seen-by-pong"]).await;
    s.bind_exchange("pong", "ping", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_exchange("ping", "pong", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("seen-by-ping", "ping", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("seen-by-pong", "pong", "", FieldTable::new())
        .await
        .unwrap();

    // ping -> pong -> (ping: already visited) : each queue once.
    assert_eq!(publish(&s, "ping", "", "from-ping").await, 2);
    assert_eq!(publish(&s, "pong", "", "from-pong").await, 2);

    assert_eq!(drain(&s, "seen-by-ping").await, ["from-ping", "from-pong"]);
    assert_eq!(drain(&s, "seen-by-pong").await, ["from-ping", "from-pong"]);
}

#[tokio::test]
async fn a_chain_of_bound_exchanges_with_a_cycle_reaches_every_queue_once() {
    let broker = TestBroker::start();
    let s = broker.session();
    for x in ["a", "b", "c", "d"] {
        s.declare_exchange(x, "fanout", &ExchangeOptions::new())
            .await
            .unwrap();
    }
    declare_queues(&s, &["at-c", "at-d"]).await;
    // a -> b -> c -> d, and d -> b closes a cycle three levels down.
    for (from, dest) in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")] {
        s.bind_exchange(dest, from, "", FieldTable::new())
            .await
            .unwrap();
    }
    s.bind_queue("at-c", "c", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("at-d", "d", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("at-d", "b", "", FieldTable::new())
        .await
        .unwrap(); // a second path to at-d

    assert_eq!(publish(&s, "a", "", "m").await, 2);
    assert_eq!(drain(&s, "at-c").await, ["m"]);
    assert_eq!(drain(&s, "at-d").await, ["m"]);
}

#[tokio::test]
async fn queue_reached_by_two_paths_gets_the_message_once() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("src", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    s.declare_exchange("mid", "direct", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["target"]).await;
    // Path 1: src -> target. Path 2: src -> mid -> target. Path 3: mid's second binding.
    s.bind_queue("target", "src", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_exchange("mid", "src", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("target", "mid", "k", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("target", "mid", "k2", FieldTable::new())
        .await
        .unwrap();

    assert_eq!(publish(&s, "src", "k", "once").await, 1);
    assert_eq!(drain(&s, "target").await, ["once"]);
}

#[tokio::test]
async fn confirmation_counts_every_queue_reached() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("logs", "topic", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["all", "errors", "db"]).await;
    s.bind_queue("all", "logs", "#", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("errors", "logs", "*.error", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("db", "logs", "db.*", FieldTable::new())
        .await
        .unwrap();

    let messages = vec![
        Message::new("logs", "db.error", "1"),
        Message::new("logs", "web.error", "2"),
        Message::new("logs", "web.info", "3"),
    ];
    let confirms = s.publish_batch(messages, false).await.unwrap();
    let mut reached = Vec::new();
    for c in confirms {
        reached.push(within("confirm", c).await.unwrap().queues);
    }
    assert_eq!(reached, [3, 2, 1]);
}

#[tokio::test]
async fn mandatory_unroutable_message_comes_back_in_the_confirmation() {
    let broker = TestBroker::start();
    let s = broker.session();
    s.declare_exchange("tasks", "direct", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["known"]).await;
    s.bind_queue("known", "tasks", "known", FieldTable::new())
        .await
        .unwrap();

    let lost = Message::new("tasks", "unknown", "please return me");
    let c = s
        .publish_mandatory(lost)
        .await
        .unwrap()
        .await
        .expect("confirmed");
    assert_eq!(c.queues, 0);
    let returned = c
        .returned
        .expect("an unroutable mandatory message comes back");
    assert_eq!(returned.code, 312);
    assert_eq!(returned.reason, "NO_ROUTE");
    assert_eq!(&returned.message.body[..], b"please return me");
    assert_eq!(returned.message.routing_key, "unknown");

    // Routed mandatory: nothing comes back. Unroutable without mandatory: dropped.
    let c = s
        .publish_mandatory(Message::new("tasks", "known", "routed"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!((c.queues, c.returned.is_none()), (1, true));
    let c = s
        .publish(Message::new("tasks", "unknown", "dropped"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!((c.queues, c.returned.is_none()), (0, true));
}

#[tokio::test]
async fn publishing_to_a_missing_or_internal_exchange_is_refused() {
    let broker = TestBroker::start();
    let s = broker.session();
    let e = expect_code(
        s.publish(Message::new("ghost", "k", "x")).await.map(|_| ()),
        ErrorCode::NotFound,
    );
    assert!(e.message().contains("'ghost'"), "{e}");

    s.declare_exchange("inner", "fanout", &ExchangeOptions::new().internal())
        .await
        .unwrap();
    expect_code(
        s.publish(Message::new("inner", "k", "x")).await.map(|_| ()),
        ErrorCode::AccessRefused,
    );
}
