//! User exchange types: the consistent-hash type of `examples/custom_exchange.rs`
//! (through the `ExchangeType` trait), and a whole actor standing in as an exchange.

use super::*;
use actix::{Actor, ActorContext, Context, Handler};
use actormq::broker::exchange::{Destination, ExchangeHandle};
use actormq::broker::messages::{AddBinding, BindTarget, Publish, RemoveBinding, StopExchange};
use actormq::broker::queue::QueueHandle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// The example's exchange type itself (its `main` is not used here).
#[allow(dead_code)]
#[path = "../../../examples/custom_exchange.rs"]
mod consistent_hash;

use consistent_hash::{ConsistentHash, TYPE_NAME};

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

/// A whole actor standing in as an exchange: it counts what passes through it and sends
/// every message, whatever its key, to each queue bound to it.
struct CountingExchange {
    /// Messages seen, shared with the test.
    seen: Arc<AtomicU64>,
    /// The bound queues, by name.
    queues: Vec<QueueHandle>,
}

impl Actor for CountingExchange {
    type Context = Context<Self>;
}

impl Handler<Publish> for CountingExchange {
    type Result = ();

    fn handle(&mut self, msg: Publish, _ctx: &mut Self::Context) {
        let n = msg.messages.len();
        self.seen.fetch_add(n as u64, SeqCst);
        // Sent now, in handle(), so that batches reach each queue in publish order.
        let enqueues: Vec<_> = self
            .queues
            .iter()
            .map(|q| q.enqueue(msg.messages.clone()))
            .collect();
        let reply = msg.reply;
        actix_rt::spawn(async move {
            let mut reached = 0;
            for e in enqueues {
                if let Ok(Ok(_)) = e.await {
                    reached += 1;
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(Ok(vec![reached.into(); n]));
            }
        });
    }
}

impl Handler<AddBinding> for CountingExchange {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: AddBinding, _ctx: &mut Self::Context) -> Self::Result {
        match msg.destination {
            Destination::Queue(q) => {
                if !self.queues.iter().any(|x| x.same(&q)) {
                    self.queues.push(q);
                }
                Ok(())
            }
            Destination::Exchange(_) => Err(BrokerError::precondition(
                "a counting exchange binds queues only",
            )),
        }
    }
}

impl Handler<RemoveBinding> for CountingExchange {
    type Result = bool;

    fn handle(&mut self, msg: RemoveBinding, _ctx: &mut Self::Context) -> bool {
        let before = self.queues.len();
        self.queues
            .retain(|q| !matches!(&msg.target, BindTarget::Queue(n) if n == q.name()));
        self.queues.len() != before
    }
}

impl Handler<StopExchange> for CountingExchange {
    type Result = ();

    fn handle(&mut self, _msg: StopExchange, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[tokio::test]
async fn a_custom_exchange_actor_routes_what_is_published_to_it() {
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let broker = TestBroker::from_builder(Broker::builder().workers(2).exchange_actor(
        "x-counting",
        move |spec, arbiter| {
            let seen = counter.clone();
            let addr = CountingExchange::start_in_arbiter(arbiter, move |_| CountingExchange {
                seen,
                queues: Vec::new(),
            });
            Ok(ExchangeHandle::from_actor(spec, addr))
        },
    ));
    let s = broker.session();
    s.declare_exchange("counter", "x-counting", &ExchangeOptions::new())
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
    // A binding it refuses is refused to the client, with its reason.
    s.declare_exchange("elsewhere", "direct", &ExchangeOptions::new())
        .await
        .unwrap();
    let e = expect_code(
        s.bind_exchange("elsewhere", "counter", "", FieldTable::new())
            .await,
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("queues only"), "{e}");
}
