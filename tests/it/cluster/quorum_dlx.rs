//! Dead-lettering of quorum queues replicated across a 3-node cluster (real
//! processes): a poison message past `x-delivery-limit`, a reject without requeue and
//! a drop-head `maxlen` land in the dead-letter queue with `x-death` as RabbitMQ writes
//! it, once each (the leader of the entry republishes, no follower), and a new leader
//! dead-letters what dies under it after the old one is killed; `x-message-ttl` and a
//! message's own `expiration` expire to the dead-letter queue, through a new leader
//! too.

use super::quorum::{connect, declare_quorum, publish_persistent, queue_leader, try_consume};
use super::{three_led, Node};
use crate::support::DEADLINE;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use tokio::task::block_in_place;

/// The dead-letter queue's and each worked queue's arguments: dead letters go to
/// `dlq` through the default exchange.
pub(super) const TO_DLQ: &str = r#","x-dead-letter-exchange":"","x-dead-letter-routing-key":"dlq""#;

/// Publishes `body` to `queue` through `node` and waits for its confirm.
pub(super) async fn publish_confirmed(node: &Node, queue: &str, body: &str) {
    let conn = connect(node).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let c = publish_persistent(&ch, queue, body.as_bytes()).await;
    assert!(c.await.unwrap().is_ack(), "{queue}: '{body}' confirmed");
}

/// The next delivery of `consumer`, within the suite's deadline.
pub(super) async fn next(consumer: &mut lapin::Consumer, what: &str) -> Delivery {
    tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery within {DEADLINE:?}: {what}"))
        .expect("the consumer goes on")
        .expect("a delivery")
}

/// A string of an AMQP table, however it was encoded.
fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The first (latest) `x-death` entry of `d`: (queue, reason, count).
pub(super) fn latest_death(d: &Delivery) -> (String, String, i64) {
    let headers = d.properties.headers().as_ref().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death array: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() else {
        panic!("no x-death entry: {deaths:?}");
    };
    let t = first.inner();
    let count = match t.get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        other => panic!("x-death count: {other:?}"),
    };
    (
        text(t.get("queue")).expect("x-death queue"),
        text(t.get("reason")).expect("x-death reason"),
        count,
    )
}

/// Reads `dlq` through `node`: `expected` dead letters, then everything until
/// `sentinel` (published once they are in) arrives, in order of arrival, as (body,
/// queue, reason, count). A dead letter republished by more than one member shows up
/// more than `expected` here.
pub(super) async fn drain_dlq(
    node: &Node,
    expected: usize,
    sentinel: &str,
) -> Vec<(String, String, String, i64)> {
    let (_conn, _ch, mut consumer) = try_consume(node, "dlq", 10).await.expect("a dlq consumer");
    let mut seen = Vec::new();
    let mut sent = false;
    loop {
        if seen.len() >= expected && !sent {
            publish_confirmed(node, "dlq", sentinel).await;
            sent = true;
        }
        let d = next(&mut consumer, &format!("dead letters after {seen:?}")).await;
        let body = String::from_utf8_lossy(&d.data).into_owned();
        d.ack(BasicAckOptions::default()).await.unwrap();
        if body == sentinel {
            return seen;
        }
        let (queue, reason, count) = latest_death(&d);
        seen.push((body, queue, reason, count));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_in_a_cluster_dead_letters_once_by_delivery_limit_reject_and_maxlen() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let all: Vec<_> = nodes.iter().collect();
    declare_quorum(&nodes[0], "dlq", "").await;
    declare_quorum(
        &nodes[1],
        "work",
        &format!(r#","x-delivery-limit":2{TO_DLQ}"#),
    )
    .await;
    declare_quorum(
        &nodes[2],
        "capped",
        &format!(r#","x-max-length":1{TO_DLQ}"#),
    )
    .await;

    // A poison message, nacked with requeue on a follower's consumer (forwarded to the
    // leader) until it is past the limit: delivered 3 times, dead on the third nack.
    let led = queue_leader(&all, "work").await;
    let follower = nodes.iter().find(|n| n.id != led).unwrap();
    publish_confirmed(follower, "work", "poison").await;
    let (_conn, _ch, mut consumer) = try_consume(follower, "work", 1).await.unwrap();
    for n in 1..=3 {
        let d = next(&mut consumer, "the poison message").await;
        assert_eq!(&d.data, b"poison", "delivery {n}");
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // A message rejected without requeue is dead at once.
    publish_confirmed(&nodes[0], "work", "bad").await;
    let d = next(&mut consumer, "the bad message").await;
    assert_eq!(&d.data, b"bad");
    d.reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    // Drop-head: the second publish pushes the first out.
    publish_confirmed(&nodes[0], "capped", "first").await;
    publish_confirmed(&nodes[1], "capped", "second").await;

    let seen = drain_dlq(&nodes[2], 3, "sentinel").await;
    let mut got: Vec<_> = seen.clone();
    got.sort();
    let expected = vec![
        (
            "bad".to_string(),
            "work".to_string(),
            "rejected".to_string(),
            1,
        ),
        ("first".into(), "capped".into(), "maxlen".into(), 1),
        ("poison".into(), "work".into(), "delivery_limit".into(), 1),
    ];
    assert_eq!(got, expected, "each dead letter once, as it died: {seen:?}");
    // The poison message left the queue for good.
    let q = nodes[0].api().get("/api/queues/%2F/work").await.json();
    assert_eq!(q["messages"], 0, "{q}");
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_quorum_leader_dead_letters_what_dies_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "dlq", "").await;
    declare_quorum(
        &nodes[0],
        "work",
        &format!(r#","x-delivery-limit":1{TO_DLQ}"#),
    )
    .await;
    let old = {
        let all: Vec<_> = nodes.iter().collect();
        queue_leader(&all, "work").await
    };
    let at = nodes.iter().position(|n| n.id == old).unwrap();
    let survivor = nodes.iter().position(|n| n.id != old).unwrap();
    publish_confirmed(&nodes[survivor], "work", "held").await;
    // Delivered twice by the old leader (one requeue) and held: its next return,
    // the new leader's takeover, puts it past the limit.
    {
        let (_conn, _ch, mut consumer) = try_consume(&nodes[at], "work", 1).await.unwrap();
        let d = next(&mut consumer, "the first delivery").await;
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
        let d = next(&mut consumer, "the second delivery").await;
        assert!(d.redelivered);
        nodes[at].kill9();
    }
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != old).collect();
    let new = queue_leader(&survivors, "work").await;
    assert_ne!(new, old);
    // Under the new leader: a message rejected without requeue.
    publish_confirmed(survivors[0], "work", "late").await;
    let (_conn, _ch, mut consumer) = try_consume(survivors[1], "work", 1).await.unwrap();
    let d = next(&mut consumer, "the late message").await;
    assert_eq!(&d.data, b"late");
    d.reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();

    let seen = drain_dlq(survivors[0], 2, "sentinel").await;
    let mut got: Vec<_> = seen.clone();
    got.sort();
    let expected = vec![
        (
            "held".to_string(),
            "work".to_string(),
            "delivery_limit".to_string(),
            1,
        ),
        ("late".into(), "work".into(), "rejected".into(), 1),
    ];
    assert_eq!(got, expected, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_ttls_expire_to_the_dead_letter_queue_also_through_a_new_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    declare_quorum(&nodes[0], "dlq", "").await;
    declare_quorum(
        &nodes[1],
        "ttl",
        &format!(r#","x-message-ttl":1500{TO_DLQ}"#),
    )
    .await;
    declare_quorum(&nodes[2], "own", TO_DLQ).await;
    let old = {
        let all: Vec<_> = nodes.iter().collect();
        queue_leader(&all, "ttl").await
    };
    let at = nodes.iter().position(|n| n.id == old).unwrap();
    let survivor = nodes.iter().position(|n| n.id != old).unwrap();
    // A message's own TTL, on a queue without one.
    {
        let conn = connect(&nodes[survivor]).await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let c = ch
            .basic_publish(
                "".into(),
                "own".into(),
                BasicPublishOptions::default(),
                b"per-message",
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_expiration("50".into()),
            )
            .await
            .unwrap();
        assert!(c.await.unwrap().is_ack());
    }
    // The queue's TTL counts from the old leader's write; the old leader is killed
    // before it passes, so the new leader expires it.
    publish_confirmed(&nodes[survivor], "ttl", "before").await;
    nodes[at].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != old).collect();
    let seen = drain_dlq(survivors[0], 2, "sentinel").await;
    let mut got: Vec<_> = seen.clone();
    got.sort();
    let expected = vec![
        (
            "before".to_string(),
            "ttl".to_string(),
            "expired".to_string(),
            1,
        ),
        ("per-message".into(), "own".into(), "expired".into(), 1),
    ];
    assert_eq!(got, expected, "{seen:?}");
    for q in ["ttl", "own"] {
        let q = survivors[0]
            .api()
            .get(&format!("/api/queues/%2F/{q}"))
            .await
            .json();
        assert_eq!(q["messages"], 0, "{q}");
    }
}
