//! The channel core against a running broker: what its queues see.

use super::super::*;
use crate::broker::messages::{Credit, Get, GetStats, LookupQueue, QueueStats};
use crate::broker::{Broker, BrokerHandle};
use crate::channel::Outbound;
use crate::message::Message;
use crate::options::QueueOptions;
use crate::server::io::Flow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A broker with queue `q` holding `n` messages, and its handle.
async fn broker_with(n: usize) -> (BrokerHandle, QueueHandle) {
    let broker = Broker::builder().workers(1).start().expect("broker");
    let session = broker.session();
    session
        .declare_queue("q", &QueueOptions::new())
        .await
        .expect("declare");
    for i in 0..n {
        let confirm = session
            .publish(Message::new("", "q", format!("m{i}")))
            .await
            .expect("publish");
        confirm.await.expect("confirmed");
    }
    let q = broker
        .registry("/")
        .expect("vhost")
        .send(LookupQueue {
            name: "q".into(),
            owner: session.owner(),
        })
        .await
        .expect("mailbox")
        .expect("queue");
    (broker, q)
}

/// One delivery of `q` to `ch`, unacked, with the channel's tag for it.
async fn get(ch: &mut Channel, q: &QueueHandle) -> (u64, crate::broker::messages::Delivery) {
    let (d, _) = q
        .addr()
        .send(Get {
            owner: ch.owner(),
            auto_ack: false,
        })
        .await
        .expect("mailbox")
        .expect("get")
        .expect("a message");
    ch.touch(q);
    (ch.track(q, d.id, false), d)
}

async fn stats(q: &QueueHandle) -> QueueStats {
    q.addr().send(GetStats).await.expect("mailbox")
}

#[tokio::test]
async fn a_settlement_takes_effect_before_a_later_publish() {
    let (broker, q) = broker_with(1).await;
    let mut ch = Channel::new(broker.new_owner());
    let (tag, _) = get(&mut ch, &q).await;
    ch.settle(tag, false, Settlement::Ack).expect("known tag");
    assert_eq!(stats(&q).await.unacked, 1, "held until the next flush");
    let registry = broker.registry("/").expect("vhost");
    let x = lookup_exchange(&registry, "", "/").await.expect("default");
    let flow = Arc::new(Flow::new(4, usize::MAX));
    let items = [Outbound {
        seq: 0,
        mandatory: false,
        message: Arc::new(Message::new("", "q", "later")),
    }];
    let answer = ch.send_batch(&x, &items, broker.memory(), &flow);
    assert_eq!(flow.inflight.load(Ordering::Acquire), 1, "one window slot");
    let routed = answer.await.expect("routed");
    assert_eq!(routed[0].queues, 1);
    assert_eq!(flow.inflight.load(Ordering::Acquire), 0, "slot given back");
    let s = stats(&q).await;
    assert_eq!(
        (s.ready, s.unacked),
        (1, 0),
        "the ack went before the publish"
    );
    broker.shutdown();
}

#[tokio::test]
async fn release_requeues_exactly_this_channels_unacked_deliveries() {
    let (broker, q) = broker_with(3).await;
    let mut a = Channel::new(broker.new_owner());
    let mut b = Channel::new(broker.new_owner());
    let (acked, _) = get(&mut a, &q).await;
    get(&mut a, &q).await;
    get(&mut b, &q).await;
    // Read before the close: it counts.
    a.settle(acked, false, Settlement::Ack).expect("known tag");
    a.release();
    assert_eq!(a.unacked(), 0);
    let s = stats(&q).await;
    assert_eq!((s.ready, s.unacked), (1, 1), "a's other one back, b's kept");
    b.release();
    let s = stats(&q).await;
    assert_eq!((s.ready, s.unacked), (2, 0));
    broker.shutdown();
}

#[tokio::test]
async fn deliveries_for_cancelled_or_starting_consumers() {
    let (broker, q) = broker_with(3).await;
    let mut ch = Channel::new(broker.new_owner());
    let deliver = |tag: &str, d| Deliver {
        consumer_tag: Arc::from(tag),
        queue: q.clone(),
        deliveries: vec![d],
        credit: Credit::none(),
    };
    // Starting: held until the queue answers the consume, then handed out.
    ch.consumer_starting("c", false);
    let (_, d) = get(&mut Channel::new(ch.owner()), &q).await;
    let (action, _) = ch.accept_delivery(deliver("c", d));
    assert_eq!(action, DeliveryAction::Held);
    let early = ch.consumer_started("c", q.clone());
    assert_eq!(early.len(), 1);
    // Cancelled with acks: what is still on its way goes back to the queue.
    ch.remove_consumer("c").expect("a consumer");
    let (_, d) = get(&mut Channel::new(ch.owner()), &q).await;
    let (action, back) = ch.accept_delivery(deliver("c", d));
    assert_eq!(action, DeliveryAction::Requeued);
    assert!(back.is_none());
    let s = stats(&q).await;
    assert_eq!(
        (s.ready, s.unacked),
        (2, 1),
        "requeued; the early one is unacked"
    );
    // Never written to the client: back as unsent, not marked, no attempt counted.
    let (_, again) = get(&mut Channel::new(ch.owner()), &q).await;
    assert!(!again.redelivered, "never written: not marked redelivered");
    assert_eq!(again.delivery_count, 1, "its first delivery again");
    // Cancelled without acks: already the client's, written.
    ch.consumer_starting("auto", true);
    ch.consumer_started("auto", q.clone());
    ch.remove_consumer("auto");
    let (_, d) = get(&mut Channel::new(ch.owner()), &q).await;
    let (action, _) = ch.accept_delivery(deliver("auto", d));
    assert_eq!(action, DeliveryAction::Write { no_ack: true });
    broker.shutdown();
}

/// Between the client's cancel and its answer a manual consumer's deliveries are
/// written and tracked (ackable); after the answer they go back to the queue.
#[tokio::test]
async fn deliveries_while_a_cancel_is_unanswered_are_written() {
    let (broker, q) = broker_with(2).await;
    let mut ch = Channel::new(broker.new_owner());
    let deliver = |d| Deliver {
        consumer_tag: Arc::from("m"),
        queue: q.clone(),
        deliveries: vec![d],
        credit: Credit::none(),
    };
    ch.consumer_starting("m", false);
    ch.consumer_started("m", q.clone());
    assert!(ch.begin_cancel("m").is_some());
    assert!(!ch.has_consumer("m") && ch.is_cancelling("m"));
    let (_, d) = get(&mut Channel::new(ch.owner()), &q).await;
    let (action, msg) = ch.accept_delivery(deliver(d));
    assert_eq!(action, DeliveryAction::Write { no_ack: false });
    assert!(msg.is_some());
    ch.end_cancel("m");
    assert!(!ch.is_cancelling("m") && ch.was_cancelled("m"));
    let (_, d) = get(&mut Channel::new(ch.owner()), &q).await;
    let (action, _) = ch.accept_delivery(deliver(d));
    assert_eq!(action, DeliveryAction::Requeued);
    broker.shutdown();
}

#[tokio::test]
async fn a_failed_batch_forgets_its_exchange_and_an_internal_one_is_refused() {
    let (broker, _q) = broker_with(0).await;
    let registry = broker.registry("/").expect("vhost");
    let session = broker.session();
    session
        .declare_exchange(
            "hidden",
            "fanout",
            &crate::options::ExchangeOptions::new().internal(),
        )
        .await
        .expect("declare");
    let e = lookup_exchange(&registry, "hidden", "/")
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), crate::error::ErrorCode::AccessRefused);
    let mut ch = Channel::new(broker.new_owner());
    let x = lookup_exchange(&registry, "amq.direct", "/")
        .await
        .expect("x");
    ch.cache_exchange(x.clone());
    assert!(ch.cached_exchange("amq.direct").is_some());
    let items = [Outbound {
        seq: 0,
        mandatory: false,
        message: Arc::new(Message::new("amq.direct", "k", "b")),
    }];
    ch.on_published(&items, Err(BrokerError::internal("failed")));
    assert!(
        ch.cached_exchange("amq.direct").is_none(),
        "looked up again"
    );
    broker.shutdown();
}

#[tokio::test]
async fn a_batch_nobody_waits_for_gives_its_reservation_back() {
    let (broker, _q) = broker_with(0).await;
    let registry = broker.registry("/").expect("vhost");
    let x = lookup_exchange(&registry, "", "/").await.expect("default");
    let mut ch = Channel::new(broker.new_owner());
    let flow = Arc::new(Flow::new(4, usize::MAX));
    let before = broker.memory().used();
    let items = [Outbound {
        seq: 0,
        mandatory: false,
        message: Arc::new(Message::new("", "nowhere", "body")),
    }];
    let answer = ch.send_batch(&x, &items, broker.memory(), &flow);
    assert!(broker.memory().used() > before, "reserved while in flight");
    // The connection that sent it stopped: its wait is dropped unanswered.
    drop(answer);
    assert_eq!(broker.memory().used(), before);
    assert_eq!(flow.inflight.load(Ordering::Acquire), 0);
    broker.shutdown();
}
