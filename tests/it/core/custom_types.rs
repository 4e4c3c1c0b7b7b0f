//! User exchange types: the consistent-hash type of `examples/custom_exchange.rs`
//! (through the `ExchangeType` trait), and a whole actor standing in as an exchange.

use super::*;
use actormq::broker::exchange::{Binding, DestinationId, ExchangeType};
use actormq::{FieldTable, FieldValue};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// The example's exchange type itself (its `main` is not used here).
#[allow(dead_code)]
#[path = "../../../examples/custom_exchange.rs"]
mod consistent_hash;

use consistent_hash::{ConsistentHash, CountingExchange, COUNTING_TYPE, TYPE_NAME};

fn hash_broker() -> TestBroker {
    TestBroker::from_builder(
        Broker::builder()
            .workers(2)
            .exchange_type(TYPE_NAME, || Box::new(ConsistentHash::default())),
    )
}

/// Declares `orders` with a queue per (name, weight).
async fn hash_exchange(s: &Session, shards: &[(&str, u32)]) {
    s.declare_exchange("orders", TYPE_NAME, &ExchangeOptions::new())
        .await
        .unwrap();
    for (q, w) in shards {
        declare_queues(s, &[q]).await;
        s.bind_queue(q, "orders", &w.to_string(), FieldTable::new())
            .await
            .unwrap();
    }
}

/// Publishes one message per key (body = key), confirmed; each must reach one queue.
async fn publish_keys(s: &Session, keys: &[String]) {
    let mut confirms = Vec::new();
    for chunk in keys.chunks(100) {
        let batch = chunk
            .iter()
            .map(|k| Message::new("orders", k, k.clone()))
            .collect();
        confirms.extend(s.publish_batch(batch, false).await.unwrap());
    }
    for c in confirms {
        assert_eq!(within("a confirm", c).await.unwrap().queues, 1);
    }
}

#[tokio::test]
async fn consistent_hash_shares_follow_the_binding_weights() {
    const N: usize = 10_000;
    let broker = hash_broker();
    let s = broker.session();
    let shards = [("light-1", 1), ("heavy", 2), ("light-2", 1)];
    hash_exchange(&s, &shards).await;

    let keys: Vec<String> = (0..N).map(|i| format!("order-{i}")).collect();
    publish_keys(&s, &keys).await;

    let mut total = 0;
    for (q, weight) in shards {
        let held = s.queue_stats(q).await.unwrap().ready as f64;
        total += held as usize;
        let expected = N as f64 * f64::from(weight) / 4.0;
        // Generous: within 25% of the weight's share (the hash is fixed, so this is
        // deterministic; it fails if weights are ignored or the ring is lopsided).
        assert!(
            (held - expected).abs() < 0.25 * expected,
            "{q} (weight {weight}) got {held} of {N}, expected about {expected}"
        );
    }
    assert_eq!(total, N, "every message routed exactly once");
}

#[tokio::test]
async fn consistent_hash_sends_a_routing_key_to_the_same_queue_every_time() {
    let broker = hash_broker();
    let s = broker.session();
    let shards = [("a", 1), ("b", 1), ("c", 1)];
    hash_exchange(&s, &shards).await;

    let keys: Vec<String> = (0..300).map(|i| format!("customer-{i}")).collect();
    for _round in 0..3 {
        publish_keys(&s, &keys).await;
    }
    let mut home: HashMap<String, (&str, usize)> = HashMap::new();
    for (q, _) in shards {
        let got = drain(&s, q).await;
        assert!(!got.is_empty(), "queue {q} got nothing");
        for key in got {
            let entry = home.entry(key.clone()).or_insert((q, 0));
            assert_eq!(entry.0, q, "{key} went to two queues");
            entry.1 += 1;
        }
    }
    assert_eq!(home.len(), keys.len());
    assert!(home.values().all(|(_, n)| *n == 3));
}

#[tokio::test]
async fn consistent_hash_refuses_a_binding_key_that_is_not_a_weight() {
    let broker = hash_broker();
    let s = broker.session();
    hash_exchange(&s, &[("a", 1)]).await;
    for bad in ["heavy", "", "0", "-1", "1.5", "100000"] {
        let e = expect_code(
            s.bind_queue("a", "orders", bad, FieldTable::new()).await,
            ErrorCode::PreconditionFailed,
        );
        assert!(e.message().contains("weight"), "{bad:?}: {e}");
    }
    // The refused bindings changed nothing: every key still reaches the one queue.
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    publish_keys(&s, &keys).await;
    assert_eq!(s.queue_stats("a").await.unwrap().ready, 50);
}

#[tokio::test]
async fn consistent_hash_unbinding_a_queue_moves_only_its_keys() {
    let broker = hash_broker();
    let s = broker.session();
    hash_exchange(&s, &[("a", 1), ("b", 1), ("c", 1)]).await;
    let keys: Vec<String> = (0..600).map(|i| format!("user-{i}")).collect();
    publish_keys(&s, &keys).await;
    let mut before: HashMap<String, &str> = HashMap::new();
    for q in ["a", "b", "c"] {
        for key in drain(&s, q).await {
            before.insert(key, q);
        }
    }

    s.unbind_queue("c", "orders", "1", FieldTable::new())
        .await
        .unwrap();
    publish_keys(&s, &keys).await;
    assert!(drain(&s, "c").await.is_empty());
    let mut moved_to = HashMap::new();
    for q in ["a", "b"] {
        for key in drain(&s, q).await {
            match before[&key] {
                "c" => *moved_to.entry(q).or_insert(0) += 1,
                was => assert_eq!(was, q, "{key} moved although its queue stayed"),
            }
        }
    }
    // c's keys were spread over both remaining queues, not dumped on one.
    assert_eq!(moved_to.len(), 2, "{moved_to:?}");
}

/// A broker with the example's counting exchange actor registered, counting into `seen`.
fn counting_broker(seen: Arc<AtomicU64>) -> TestBroker {
    TestBroker::from_builder(
        Broker::builder()
            .workers(2)
            .exchange_actor(COUNTING_TYPE, move |spec, arbiter| {
                Ok(CountingExchange::start(spec, arbiter, seen.clone()))
            }),
    )
}

#[tokio::test]
async fn a_custom_exchange_actor_routes_what_is_published_to_it() {
    let seen = Arc::new(AtomicU64::new(0));
    let broker = counting_broker(seen.clone());
    let s = broker.session();
    s.declare_exchange("counter", COUNTING_TYPE, &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["counted"]).await;

    // Unbound, it routes nowhere (but still sees the message).
    assert_eq!(publish(&s, "counter", "k", "unrouted").await, 0);
    s.bind_queue("counted", "counter", "whatever", FieldTable::new())
        .await
        .unwrap();
    for (i, key) in ["a", "b.c", ""].iter().enumerate() {
        assert_eq!(publish(&s, "counter", key, &format!("direct-{i}")).await, 1);
    }
    // Reached through an exchange-to-exchange binding from a built-in exchange.
    s.declare_exchange("front", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    s.bind_exchange("counter", "front", "", FieldTable::new())
        .await
        .unwrap();
    assert_eq!(publish(&s, "front", "x", "via-front").await, 1);

    assert_eq!(seen.load(SeqCst), 5);
    assert_eq!(
        drain(&s, "counted").await,
        ["direct-0", "direct-1", "direct-2", "via-front"]
    );
    // It follows exchange bindings through the same helper, loop guard included: a
    // binding back to it from the exchange it reaches is skipped.
    s.declare_exchange("elsewhere", "direct", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["behind"]).await;
    s.bind_queue("behind", "elsewhere", "k", FieldTable::new())
        .await
        .unwrap();
    for (from, to, key) in [("counter", "elsewhere", ""), ("elsewhere", "counter", "k")] {
        s.bind_exchange(to, from, key, FieldTable::new())
            .await
            .unwrap();
    }
    assert_eq!(publish(&s, "counter", "k", "around").await, 2);
    assert_eq!(seen.load(SeqCst), 6, "seen once despite the loop");
    assert_eq!(drain(&s, "counted").await, ["around"]);
    assert_eq!(drain(&s, "behind").await, ["around"]);
}

/// The outcome of one publish: the number of queues reached, or the nack's error.
async fn outcome(s: &Session, exchange: &str, key: &str, body: &str) -> Result<u32, BrokerError> {
    let confirm = s
        .publish(Message::new(exchange, key, body.to_string()))
        .await?;
    Ok(within("a confirm or nack", confirm).await?.queues)
}

#[tokio::test]
async fn a_queue_refusal_through_a_custom_exchange_actor_is_a_nack() {
    let broker = counting_broker(Arc::new(AtomicU64::new(0)));
    let s = broker.session();
    s.declare_exchange("counter", COUNTING_TYPE, &ExchangeOptions::new())
        .await
        .unwrap();
    let small = QueueOptions::new()
        .arg("x-max-length", FieldValue::Int(1))
        .arg("x-overflow", "reject-publish");
    s.declare_queue("small", &small).await.unwrap();
    declare_queues(&s, &["roomy"]).await;
    for q in ["small", "roomy"] {
        s.bind_queue(q, "counter", "", FieldTable::new())
            .await
            .unwrap();
    }
    assert_eq!(outcome(&s, "counter", "", "first").await.unwrap(), 2);
    // "small" is full: the publish is nacked, not confirmed, though "roomy" took it.
    let e = expect_code(
        outcome(&s, "counter", "", "second").await,
        ErrorCode::ResourceError,
    );
    assert!(e.message().contains("'small'"), "{e}");
    assert_eq!(drain(&s, "small").await, ["first"]);
    assert_eq!(drain(&s, "roomy").await, ["first", "second"]);
}

/// Panics in `route` for the routing key `"boom"` and in `bind` for the binding key
/// `"boom"`; otherwise routes like a direct exchange.
struct Fragile;

impl ExchangeType for Fragile {
    fn bind(&mut self, binding: &Binding) {
        assert_ne!(binding.routing_key, "boom", "bind exploded");
    }

    fn route(&self, message: &Message, bindings: &[Binding], out: &mut Vec<DestinationId>) {
        assert_ne!(message.routing_key, "boom", "route exploded");
        out.extend(
            bindings
                .iter()
                .filter(|b| b.routing_key == message.routing_key)
                .map(|b| b.destination),
        );
    }
}

#[tokio::test]
async fn a_panicking_exchange_type_fails_its_own_exchange_only() {
    let broker = TestBroker::from_builder(
        Broker::builder()
            .workers(2)
            .exchange_type("x-fragile", || Box::new(Fragile)),
    );
    let s = broker.session();
    s.declare_exchange("fragile", "x-fragile", &ExchangeOptions::new())
        .await
        .unwrap();
    s.declare_exchange("sturdy", "direct", &ExchangeOptions::new())
        .await
        .unwrap();
    s.declare_exchange("front", "fanout", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["fq", "sq"]).await;
    s.bind_queue("fq", "fragile", "k", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("sq", "sturdy", "k", FieldTable::new())
        .await
        .unwrap();
    for x in ["fragile", "sturdy"] {
        s.bind_exchange(x, "front", "", FieldTable::new())
            .await
            .unwrap();
    }

    // A panic in route fails that message, named, directly or through another exchange;
    // the message goes nowhere (not even to "sq" through "front").
    for x in ["fragile", "front"] {
        let e = expect_code(outcome(&s, x, "boom", "b").await, ErrorCode::InternalError);
        for part in [
            "'fragile'",
            "'x-fragile'",
            "route panicked",
            "route exploded",
        ] {
            assert!(e.message().contains(part), "{part} not in: {e}");
        }
    }
    // The exchange and the others carry on.
    assert_eq!(outcome(&s, "fragile", "k", "1").await.unwrap(), 1);
    assert_eq!(outcome(&s, "sturdy", "k", "2").await.unwrap(), 1);
    assert_eq!(outcome(&s, "front", "k", "3").await.unwrap(), 2);
    assert_eq!(drain(&s, "fq").await, ["1", "3"]);
    assert_eq!(drain(&s, "sq").await, ["2", "3"]);

    // A panic in bind: the type's state cannot be trusted, the exchange is out of
    // order (binds and publishes refused, naming it) until it is declared anew.
    let e = expect_code(
        s.bind_queue("fq", "fragile", "boom", FieldTable::new())
            .await,
        ErrorCode::InternalError,
    );
    assert!(e.message().contains("bind panicked"), "{e}");
    for x in ["fragile", "front"] {
        let e = expect_code(outcome(&s, x, "k", "x").await, ErrorCode::InternalError);
        assert!(
            e.message()
                .contains("'fragile' of type 'x-fragile' is out of order"),
            "{e}"
        );
    }
    expect_code(
        s.bind_queue("fq", "fragile", "k2", FieldTable::new()).await,
        ErrorCode::InternalError,
    );
    // Every other exchange still routes.
    assert_eq!(outcome(&s, "sturdy", "k", "4").await.unwrap(), 1);
    s.declare_exchange("other", "direct", &ExchangeOptions::new())
        .await
        .unwrap();
    s.bind_queue("sq", "other", "k", FieldTable::new())
        .await
        .unwrap();
    assert_eq!(outcome(&s, "other", "k", "5").await.unwrap(), 1);
    assert_eq!(drain(&s, "sq").await, ["4", "5"]);
    assert!(drain(&s, "fq").await.is_empty());

    // Deleted and declared again, it has a fresh instance of its type.
    s.delete_exchange("fragile", false).await.unwrap();
    s.declare_exchange("fragile", "x-fragile", &ExchangeOptions::new())
        .await
        .unwrap();
    s.bind_queue("fq", "fragile", "k", FieldTable::new())
        .await
        .unwrap();
    assert_eq!(outcome(&s, "fragile", "k", "6").await.unwrap(), 1);
    assert_eq!(drain(&s, "fq").await, ["6"]);
}
