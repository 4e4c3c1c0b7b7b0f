//! Unit tests of [`QueueState`]: every transition, with time as plain numbers.

use super::*;
use crate::message::FieldValue;

mod limits;
mod scheduling;
mod single_active;

const A: OwnerId = OwnerId(1);
const B: OwnerId = OwnerId(2);

fn msg(body: &str) -> Arc<Message> {
    Arc::new(Message::new("", "q", body.to_string()))
}

fn with(body: &str, f: impl FnOnce(&mut Message)) -> Arc<Message> {
    let mut m = Message::new("", "q", body.to_string());
    f(&mut m);
    Arc::new(m)
}

fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8(d.message.body.to_vec()).unwrap())
        .collect()
}

fn dead_bodies(q: &mut QueueState<()>) -> Vec<(String, Reason)> {
    q.take_dead()
        .into_iter()
        .map(|d| {
            (
                String::from_utf8(d.message.body.to_vec()).unwrap(),
                d.reason,
            )
        })
        .collect()
}

fn consumer(tag: &str, owner: OwnerId, prefetch: u32, auto_ack: bool) -> NewConsumer<()> {
    NewConsumer {
        tag: tag.into(),
        owner,
        handle: (),
        prefetch,
        auto_ack,
        window: 100,
        priority: 0,
    }
}

fn config(f: impl FnOnce(&mut QueueConfig)) -> QueueConfig {
    let mut c = QueueConfig::default();
    f(&mut c);
    c
}

fn dlx() -> QueueConfig {
    config(|c| c.dead_letter_exchange = Some("dlx".into()))
}

fn filled(n: usize) -> QueueState<()> {
    filled_with(QueueConfig::default(), n)
}

fn filled_with(c: QueueConfig, n: usize) -> QueueState<()> {
    let mut q = QueueState::new(c);
    for i in 0..n {
        assert_eq!(q.push(msg(&format!("m{i}")), 0), Pushed::Ready);
    }
    q
}

/// Every ready message, taken with auto-ack gets at `now`.
fn drain(q: &mut QueueState<()>, now: Millis) -> Vec<String> {
    std::iter::from_fn(|| q.get(A, true, now))
        .map(|(d, _)| bodies(&[d]).remove(0))
        .collect()
}

#[test]
fn messages_are_delivered_in_fifo_order() {
    let mut q = filled(3);
    q.add_consumer(consumer("c", A, 0, false));
    let out = q.dispatch(100, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(bodies(&out[0].1), ["m0", "m1", "m2"]);
    assert_eq!(q.ready_len(), 0);
    assert_eq!(q.unacked_len(), 3);
}

#[test]
fn consumers_are_served_round_robin() {
    let mut q = filled(4);
    q.add_consumer(consumer("a", A, 0, false));
    q.add_consumer(consumer("b", A, 0, false));
    let out = q.dispatch(100, 0);
    assert_eq!(bodies(&out[0].1), ["m0", "m2"]);
    assert_eq!(bodies(&out[1].1), ["m1", "m3"]);
}

#[test]
fn prefetch_limits_unacked_deliveries_and_acks_return_credit() {
    let mut q = filled(5);
    let c = q.add_consumer(consumer("c", A, 2, false));
    let out = q.dispatch(100, 0);
    assert_eq!(bodies(&out[0].1), ["m0", "m1"]);
    assert!(q.dispatch(100, 0).is_empty());
    q.return_credit(c, 2);
    assert!(
        q.dispatch(100, 0).is_empty(),
        "transport credit alone is not prefetch"
    );
    assert!(q
        .settle(A, &[out[0].1[0].id], Settlement::Ack, 0)
        .is_empty());
    assert_eq!(bodies(&q.dispatch(100, 0)[0].1), ["m2"]);
}

#[test]
fn a_raised_prefetch_reaches_the_owners_existing_consumers() {
    let mut q = filled(5);
    let c = q.add_consumer(consumer("c", A, 1, false));
    let out = q.dispatch(100, 0);
    assert_eq!(bodies(&out[0].1), ["m0"]);
    q.return_credit(c, 1);
    assert!(q.dispatch(100, 0).is_empty(), "prefetch 1 holds the rest");
    q.set_prefetch(B, 10);
    assert!(
        q.dispatch(100, 0).is_empty(),
        "another owner's qos changes nothing"
    );
    q.set_prefetch(A, 3);
    assert_eq!(bodies(&q.dispatch(100, 0)[0].1), ["m1", "m2"]);
}

#[test]
fn transport_window_bounds_auto_ack_consumers() {
    let mut q = filled(10);
    let mut c = consumer("c", A, 0, true);
    c.window = 3;
    let c = q.add_consumer(c);
    assert_eq!(q.dispatch(100, 0)[0].1.len(), 3);
    assert!(q.dispatch(100, 0).is_empty());
    q.return_credit(c, 3);
    assert_eq!(q.dispatch(100, 0)[0].1.len(), 3);
    assert_eq!(q.unacked_len(), 0);
}

#[test]
fn requeued_message_returns_to_its_place_marked_redelivered() {
    let mut q = filled(4);
    q.add_consumer(consumer("c", A, 2, false));
    let out = q.dispatch(100, 0);
    let ids: Vec<u64> = out[0].1.iter().map(|d| d.id).collect();
    // Requeue the second, then the first: order must be m0, m1, m2, m3 again.
    assert!(q.settle(A, &[ids[1]], Settlement::Requeue, 0).is_empty());
    assert!(q.settle(A, &[ids[0]], Settlement::Requeue, 0).is_empty());
    let c = q.consumers()[0].id;
    q.return_credit(c, 2);
    let again = q.dispatch(100, 0);
    assert_eq!(bodies(&again[0].1), ["m0", "m1"]);
    assert!(again[0]
        .1
        .iter()
        .all(|d| d.redelivered && d.delivery_count == 2));
    assert!(
        again[0].1.iter().all(|d| !ids.contains(&d.id)),
        "each delivery has an id of its own"
    );
}

#[test]
fn settle_skips_unknown_ids_and_settles_the_rest() {
    let mut q = filled(2);
    q.add_consumer(consumer("c", A, 0, false));
    let out = q.dispatch(100, 0);
    let (first, second) = (out[0].1[0].id, out[0].1[1].id);
    assert_eq!(q.settle(B, &[first], Settlement::Ack, 0), [first]);
    assert_eq!(q.unacked_len(), 2, "another owner settles nothing");
    assert_eq!(q.settle(A, &[first, 999], Settlement::Ack, 0), [999]);
    assert_eq!(q.unacked_len(), 1);
    assert_eq!(q.settle(A, &[first], Settlement::Ack, 0), [first], "twice");
    assert!(q.settle(A, &[second], Settlement::Ack, 0).is_empty());
}

#[test]
fn release_requeues_everything_of_the_owner_in_order() {
    let mut q = filled(3);
    q.add_consumer(consumer("c", A, 0, false));
    q.dispatch(100, 0);
    let removed = q.release(A, 0);
    assert_eq!(removed.len(), 1);
    assert_eq!(q.ready_len(), 3);
    assert!(q.consumers().is_empty());
    q.add_consumer(consumer("d", B, 0, false));
    let out = q.dispatch(100, 0);
    assert_eq!(bodies(&out[0].1), ["m0", "m1", "m2"]);
    assert!(out[0].1.iter().all(|d| d.redelivered));
}

#[test]
fn cancelled_consumer_unacked_stay_with_the_owner() {
    let mut q = filled(2);
    let c = q.add_consumer(consumer("c", A, 0, false));
    let out = q.dispatch(100, 0);
    q.remove_consumer(c);
    assert_eq!(q.unacked_len(), 2);
    let ids = [out[0].1[0].id, out[0].1[1].id];
    assert!(q.settle(A, &ids, Settlement::Ack, 0).is_empty());
    assert_eq!(q.unacked_len(), 0);
    assert_eq!(q.bytes(), 0);
}

#[test]
fn dropped_consumer_gives_back_its_deliveries() {
    let mut q = filled(3);
    let c = q.add_consumer(consumer("c", A, 0, false));
    q.dispatch(100, 0);
    q.drop_consumer(c, 0);
    assert_eq!(q.ready_len(), 3);
}

#[test]
fn get_takes_the_head_and_counts_the_rest() {
    let mut q = filled(3);
    let (d, left) = q.get(A, false, 0).unwrap();
    assert_eq!(&d.message.body[..], b"m0");
    assert_eq!(left, 2);
    assert!(q.settle(A, &[d.id], Settlement::Requeue, 0).is_empty());
    let (d, _) = q.get(A, true, 0).unwrap();
    assert!(d.redelivered);
    assert_eq!(q.unacked_len(), 0);
}

#[test]
fn purge_drops_ready_and_delayed_messages_only() {
    let mut q = filled(3);
    q.push(
        with("later", |m| *m = m.clone().with_header("x-delay", 50i64)),
        0,
    );
    q.add_consumer(consumer("c", A, 1, false));
    q.dispatch(100, 0);
    assert_eq!(q.purge(), 3);
    assert_eq!((q.ready_len(), q.delayed_len(), q.unacked_len()), (0, 0, 1));
    assert_eq!(q.bytes(), 2);
}

#[test]
fn bytes_follow_what_is_held() {
    let mut q = filled(2);
    assert_eq!(q.bytes(), 4);
    let (d, _) = q.get(A, false, 0).unwrap();
    assert_eq!(q.bytes(), 4);
    assert!(q.settle(A, &[d.id], Settlement::Ack, 0).is_empty());
    assert_eq!(q.bytes(), 2);
}

#[test]
fn dispatch_respects_the_limit() {
    let mut q = filled(10);
    q.add_consumer(consumer("c", A, 0, true));
    assert_eq!(q.dispatch(4, 0)[0].1.len(), 4);
    assert_eq!(q.ready_len(), 6);
}
