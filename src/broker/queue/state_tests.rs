//! Unit tests of [`QueueState`]: every transition, with time as plain numbers.

use super::*;
use crate::message::FieldValue;

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

// ------------------------------------------------------------------------------ TTL

#[test]
fn an_expired_message_is_removed_from_the_middle_of_the_queue() {
    let mut q = QueueState::<()>::new(dlx());
    q.push(msg("keep-1"), 0);
    q.push(
        with("short", |m| {
            Arc::make_mut(&mut m.properties).expiration = Some("10".into())
        }),
        0,
    );
    q.push(msg("keep-2"), 0);
    assert_eq!(
        q.next_deadline(),
        Some(11),
        "expires once 10 ms have passed"
    );
    assert_eq!(
        q.expire_due(10, 100),
        0,
        "not before its deadline has passed"
    );
    assert_eq!(q.expire_due(11, 100), 1);
    assert_eq!(dead_bodies(&mut q), [("short".into(), Reason::Expired)]);
    assert_eq!(q.bytes(), 12);
    assert_eq!(q.next_deadline(), None, "nothing else is due");
    assert_eq!(drain(&mut q, 11), ["keep-1", "keep-2"]);
}

#[test]
fn the_queue_ttl_and_the_message_ttl_take_the_smaller() {
    let mut q = QueueState::<()>::new(config(|c| c.message_ttl = Some(100)));
    q.push(msg("queue-ttl"), 0);
    q.push(
        with("short", |m| {
            Arc::make_mut(&mut m.properties).expiration = Some("5".into())
        }),
        0,
    );
    q.push(
        with("long", |m| {
            Arc::make_mut(&mut m.properties).expiration = Some("500".into())
        }),
        0,
    );
    assert_eq!(q.expire_due(6, 100), 1);
    assert_eq!(q.expire_due(101, 100), 2);
    assert_eq!(q.ready_len(), 0);
}

#[test]
fn an_expired_message_is_never_delivered() {
    let mut q = QueueState::<()>::new(config(|c| c.message_ttl = Some(10)));
    q.push(msg("old"), 0);
    q.push(msg("new"), 20);
    q.add_consumer(consumer("c", A, 0, false));
    // The timer has not fired yet; dispatch checks anyway.
    assert_eq!(bodies(&q.dispatch(100, 25)[0].1), ["new"]);
}

#[test]
fn a_zero_ttl_message_goes_to_a_waiting_consumer_or_nowhere() {
    let mut q = QueueState::<()>::new(config(|c| c.message_ttl = Some(0)));
    q.add_consumer(consumer("c", A, 1, false));
    q.push(msg("taken"), 7);
    q.push(msg("lost"), 7);
    assert_eq!(bodies(&q.dispatch(100, 7)[0].1), ["taken"]);
    assert_eq!(q.expire_due(8, 100), 1);
    assert_eq!(q.ready_len(), 0);
}

#[test]
fn a_requeued_message_past_its_ttl_expires_instead() {
    let mut q = QueueState::<()>::new(config(|c| {
        c.message_ttl = Some(10);
        c.dead_letter_exchange = Some("dlx".into());
    }));
    q.push(msg("m"), 0);
    let (d, _) = q.get(A, false, 5).unwrap();
    assert!(q.settle(A, &[d.id], Settlement::Requeue, 50).is_empty());
    assert_eq!(dead_bodies(&mut q), [("m".into(), Reason::Expired)]);
    assert_eq!((q.ready_len(), q.bytes()), (0, 0));
}

#[test]
fn stale_expiry_entries_do_not_wake_the_queue_and_stay_bounded() {
    let mut q = QueueState::<()>::new(config(|c| c.message_ttl = Some(60_000)));
    for i in 0..10_000 {
        q.push(msg("m"), i);
        q.get(A, true, i);
    }
    assert_eq!(q.next_deadline(), None, "every message is gone");
    assert!(q.expiry.len() < 2000, "{} entries kept", q.expiry.len());
}

// ---------------------------------------------------------------------- length limits

#[test]
fn drop_head_drops_the_oldest_over_the_limit_and_dead_letters_them() {
    let mut q = QueueState::<()>::new(config(|c| {
        c.max_length = Some(2);
        c.dead_letter_exchange = Some("dlx".into());
    }));
    for b in ["a", "b", "c", "d"] {
        assert_eq!(q.push(msg(b), 0), Pushed::Ready);
    }
    assert_eq!(q.enforce_limits(), 2);
    let dead = dead_bodies(&mut q);
    assert_eq!(
        dead,
        [("a".into(), Reason::MaxLen), ("b".into(), Reason::MaxLen)]
    );
    assert_eq!(q.bytes(), 2);
    assert_eq!(drain(&mut q, 0), ["c", "d"]);
}

#[test]
fn max_length_bytes_counts_body_bytes() {
    let mut q = QueueState::<()>::new(config(|c| c.max_length_bytes = Some(5)));
    for b in ["aaa", "bb", "c"] {
        q.push(msg(b), 0);
    }
    assert_eq!(q.enforce_limits(), 1);
    assert_eq!(drain(&mut q, 0), ["bb", "c"]);
}

#[test]
fn reject_publish_refuses_when_full_and_reject_publish_dlx_dead_letters_too() {
    let mut q = QueueState::<()>::new(config(|c| {
        c.max_length = Some(1);
        c.overflow = Overflow::RejectPublish;
        c.dead_letter_exchange = Some("dlx".into());
    }));
    assert_eq!(q.push(msg("in"), 0), Pushed::Ready);
    assert_eq!(q.push(msg("out"), 0), Pushed::Refused);
    assert!(
        q.take_dead().is_empty(),
        "reject-publish does not dead-letter"
    );
    assert_eq!(q.enforce_limits(), 0);

    let mut q = QueueState::<()>::new(config(|c| {
        c.max_length = Some(1);
        c.overflow = Overflow::RejectPublishDlx;
        c.dead_letter_exchange = Some("dlx".into());
    }));
    q.push(
        with("later", |m| *m = m.clone().with_header("x-delay", 10i64)),
        0,
    );
    assert_eq!(q.push(msg("out"), 0), Pushed::Refused, "delayed ones count");
    assert_eq!(dead_bodies(&mut q), [("out".into(), Reason::MaxLen)]);
    let later = with("later", |m| *m = m.clone().with_header("x-delay", 10i64));
    assert_eq!(q.bytes(), later.accounted_size());
}

// ---------------------------------------------------------------------- dead-lettering

#[test]
fn rejected_messages_are_dead_lettered_only_with_a_dead_letter_exchange() {
    let mut q = filled_with(dlx(), 2);
    let (a, _) = q.get(A, false, 0).unwrap();
    let (b, _) = q.get(A, false, 0).unwrap();
    assert!(q.settle(A, &[a.id], Settlement::Discard, 0).is_empty());
    assert!(q.settle(A, &[b.id], Settlement::Ack, 0).is_empty());
    assert_eq!(dead_bodies(&mut q), [("m0".into(), Reason::Rejected)]);

    let mut q = filled(1);
    let (a, _) = q.get(A, false, 0).unwrap();
    assert!(q.settle(A, &[a.id], Settlement::Discard, 0).is_empty());
    assert!(q.take_dead().is_empty());
    assert_eq!(q.bytes(), 0);
}

#[test]
fn a_message_delivered_more_than_the_limit_is_dead_lettered_not_requeued() {
    let mut c = dlx();
    c.delivery_limit = Some(2);
    let mut q = filled_with(c, 1);
    for round in 1..=3 {
        let (d, _) = q.get(A, false, 0).unwrap();
        assert_eq!(d.delivery_count, round);
        assert!(q.settle(A, &[d.id], Settlement::Requeue, 0).is_empty());
    }
    assert_eq!(q.ready_len(), 0);
    assert_eq!(dead_bodies(&mut q), [("m0".into(), Reason::DeliveryLimit)]);
    assert_eq!(q.bytes(), 0);
}

// ---------------------------------------------------------------------------- priority

#[test]
fn a_priority_queue_delivers_higher_priorities_first_and_requeues_in_place() {
    let mut q = QueueState::<()>::new(config(|c| c.max_priority = 9));
    for (b, p) in [("low-1", 1), ("high-1", 8), ("low-2", 1), ("high-2", 8)] {
        q.push(
            with(b, |m| Arc::make_mut(&mut m.properties).priority = Some(p)),
            0,
        );
    }
    let (h1, _) = q.get(A, false, 0).unwrap();
    assert_eq!(bodies(std::slice::from_ref(&h1)), ["high-1"]);
    assert!(q.settle(A, &[h1.id], Settlement::Requeue, 0).is_empty());
    assert_eq!(drain(&mut q, 0), ["high-1", "high-2", "low-1", "low-2"]);
}

#[test]
fn higher_priority_consumers_get_messages_first() {
    let mut q = filled(3);
    q.add_consumer(consumer("normal", A, 0, false));
    let mut urgent = consumer("urgent", A, 2, false);
    urgent.priority = 10;
    q.add_consumer(urgent);
    let out = q.dispatch(100, 0);
    let by_tag: HashMap<String, Vec<String>> = out
        .iter()
        .map(|(i, ds)| (q.consumer_at(*i).tag.to_string(), bodies(ds)))
        .collect();
    assert_eq!(by_tag["urgent"], ["m0", "m1"]);
    assert_eq!(by_tag["normal"], ["m2"]);
}

// ------------------------------------------------------------------------------- delay

#[test]
fn delayed_messages_become_ready_when_due() {
    let mut q = QueueState::<()>::new(config(|c| c.delivery_delay = 100));
    q.push(msg("queue-delay"), 0);
    q.push(
        with("header", |m| *m = m.clone().with_header("x-delay", 30i64)),
        0,
    );
    q.push(
        with("now", |m| *m = m.clone().with_header("x-delay", 0i64)),
        0,
    );
    assert_eq!((q.ready_len(), q.delayed_len()), (1, 2));
    // Bodies (11 + 6 + 3 bytes) and the two header tables.
    let headers = |b: &str, d: i64| {
        with(b, |m| *m = m.clone().with_header("x-delay", d)).accounted_size() - b.len()
    };
    assert_eq!(q.bytes(), 20 + headers("header", 30) + headers("now", 0));
    assert_eq!(q.next_deadline(), Some(30));
    assert_eq!(q.promote_due(29, 100), 0);
    assert_eq!(q.promote_due(30, 100), 1);
    assert_eq!(q.next_deadline(), Some(100));
    assert_eq!(q.promote_due(500, 100), 1);
    assert_eq!(drain(&mut q, 500), ["now", "header", "queue-delay"]);
    assert_eq!(q.bytes(), 0);
}

#[test]
fn a_delayed_message_ttl_counts_from_when_it_is_due() {
    let mut q = QueueState::<()>::new(config(|c| {
        c.message_ttl = Some(10);
        c.delivery_delay = 100;
    }));
    q.push(msg("m"), 0);
    q.promote_due(100, 10);
    assert_eq!(q.next_deadline(), Some(111));
    assert_eq!(drain(&mut q, 105), ["m"]);
}

// --------------------------------------------------------------------- consumer timeout

#[test]
fn an_unacked_delivery_past_the_timeout_is_requeued_and_a_late_ack_is_ignored() {
    let mut q = filled_with(config(|c| c.consumer_timeout = Some(50)), 1);
    q.add_consumer(consumer("c", A, 1, false));
    let first = q.dispatch(100, 0).remove(0).1.remove(0);
    assert_eq!(q.next_deadline(), Some(50));
    assert_eq!(q.timeout_due(49, 10), 0);
    assert_eq!(q.timeout_due(50, 10), 1);
    assert_eq!((q.ready_len(), q.unacked_len()), (1, 0));
    // The prefetch slot is free again: the same consumer gets it back, redelivered.
    let c = q.consumers()[0].id;
    q.return_credit(c, 1);
    let second = q.dispatch(100, 50).remove(0).1.remove(0);
    assert!(second.redelivered);
    assert_eq!(second.delivery_count, 2);
    assert_eq!(
        q.settle(A, &[first.id], Settlement::Ack, 60),
        [first.id],
        "the late ack names the old delivery"
    );
    assert_eq!(q.unacked_len(), 1, "the new delivery is still unacked");
    assert!(q.settle(A, &[second.id], Settlement::Ack, 60).is_empty());
    assert_eq!((q.unacked_len(), q.bytes()), (0, 0));
    assert_eq!(q.next_deadline(), None);
}

// ------------------------------------------------------------------------------- dedup

#[test]
fn a_message_id_seen_within_the_window_is_not_enqueued_again() {
    let mut q = QueueState::<()>::new(config(|c| c.dedup_window = Some(100)));
    let id = |b: &str, id: &str| {
        let id = id.to_string();
        with(b, move |m| {
            Arc::make_mut(&mut m.properties).message_id = Some(id)
        })
    };
    assert_eq!(q.push(id("first", "x"), 0), Pushed::Ready);
    assert_eq!(q.push(id("again", "x"), 50), Pushed::Duplicate);
    assert_eq!(q.push(msg("no-id"), 50), Pushed::Ready);
    assert_eq!(q.push(msg("no-id"), 50), Pushed::Ready);
    assert_eq!(q.push(id("later", "x"), 100), Pushed::Ready);
    assert_eq!(drain(&mut q, 100), ["first", "no-id", "no-id", "later"]);
}

// ------------------------------------------------------------------ single active consumer

#[test]
fn only_the_single_active_consumer_receives_and_the_next_takes_over_in_order() {
    let mut q = filled_with(config(|c| c.single_active_consumer = true), 4);
    let first = q.add_consumer(consumer("first", A, 2, false));
    q.add_consumer(consumer("second", B, 0, false));
    let out = q.dispatch(100, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(q.consumer_at(out[0].0).tag.as_ref(), "first");
    assert_eq!(bodies(&out[0].1), ["m0", "m1"]);
    assert!(q.dispatch(100, 0).is_empty(), "the second waits its turn");
    // The first goes away: its deliveries come back first, to the second.
    q.drop_consumer(first, 0);
    let out = q.dispatch(100, 0);
    assert_eq!(q.consumer_at(out[0].0).tag.as_ref(), "second");
    assert_eq!(bodies(&out[0].1), ["m0", "m1", "m2", "m3"]);
}

#[test]
fn header_values_of_the_wrong_type_mean_no_delay() {
    let mut q = QueueState::<()>::new(QueueConfig::default());
    q.push(
        with("m", |m| {
            *m = m.clone().with_header("x-delay", FieldValue::from("9"))
        }),
        0,
    );
    assert_eq!(q.ready_len(), 1);
}

/// Regression: a compaction of the timeout heap while a delivery was being recorded
/// rebuilt the heap without that delivery, which then never timed out.
#[test]
fn every_delivery_times_out_across_heap_compactions() {
    let mut q = QueueState::<()>::new(config(|c| c.consumer_timeout = Some(10)));
    for i in 0..1040 {
        q.push(msg(&format!("m{i}")), 0);
    }
    let mut held = Vec::new();
    for i in 0..1040u64 {
        // 1024 deliveries settled at once leave stale heap entries behind; the next one
        // tips the heap into a compaction while it is being recorded.
        let (d, _) = q.get(A, false, i).unwrap();
        if i >= 1024 {
            held.push(d.id);
        } else {
            assert!(q.settle(A, &[d.id], Settlement::Ack, i).is_empty());
        }
    }
    assert_eq!(q.unacked_len(), held.len());
    assert_eq!(q.timeout_due(1_000_000, usize::MAX), held.len());
    assert_eq!((q.unacked_len(), q.ready_len()), (0, held.len()));
}

#[test]
fn a_backlog_behind_the_head_keeps_fifo_counts_for_limits_and_is_purged() {
    let mut q: QueueState<()> = QueueState::new(config(|c| c.max_length = Some(6)));
    q.enable_backlog(2);
    for i in 1..=6 {
        assert_eq!(q.push(msg(&format!("m{i}")), 0), Pushed::Ready);
    }
    assert_eq!((q.ready_len(), q.backlog_len()), (6, 4));
    assert_eq!(q.push(msg("m7"), 0), Pushed::Ready, "drop-head makes room");
    assert_eq!(q.enforce_limits(), 1, "the oldest, from the head");
    assert_eq!((q.ready_len(), q.backlog_len()), (6, 5));
    q.add_consumer(consumer("c", A, 0, false));
    let first = q.dispatch(10, 0).remove(0).1;
    assert_eq!(bodies(&first), ["m2"], "the head only");
    q.requeue_where(0, |_| true);
    assert!(q.refill(0).is_none(), "bodies in memory: no read needed");
    let all = q.dispatch(10, 0).remove(0).1;
    assert_eq!(
        bodies(&all),
        ["m2", "m3"],
        "requeued to its place, then the head"
    );
    assert!(q.refill(0).is_none());
    assert_eq!(bodies(&q.dispatch(10, 0).remove(0).1), ["m4", "m5"]);
    assert_eq!(q.purge(), 2, "the backlog (m6, m7) goes too");
    assert_eq!(
        (q.ready_len(), q.backlog_len(), q.bytes() > 0),
        (0, 0, true)
    );
}

#[test]
fn a_priority_queue_keeps_no_backlog() {
    let mut q: QueueState<()> = QueueState::new(config(|c| c.max_priority = 5));
    q.enable_backlog(2);
    for i in 0..5 {
        q.push(msg(&format!("m{i}")), 0);
    }
    assert_eq!((q.ready_len(), q.backlog_len()), (5, 0));
}

#[test]
fn messages_recovered_without_bodies_start_their_ttl_and_delay_at_the_head() {
    let mut q = QueueState::<()>::new(config(|c| c.message_ttl = Some(10)));
    q.enable_backlog(2);
    q.push_recovered_stored(1, 100, 0);
    q.push_recovered_stored(2, 100, 1);
    q.push_recovered_stored(3, 100, 0);
    assert_eq!((q.ready_len(), q.bytes()), (3, 0), "no body in memory");
    let read = q.refill(0).expect("the head needs them");
    assert_eq!(read.ids, [1, 2]);
    let delayed = with("later", |m| *m = m.clone().with_header("x-delay", 50i64));
    let pages = vec![(1, delayed), (2, msg("again"))];
    assert_eq!(q.paged_in(read.epoch, pages), Some(vec![]));
    let next = q
        .refill(1000)
        .expect("the head is at half again: the next read");
    assert_eq!(next.ids, [3]);
    assert_eq!(
        (q.ready_len(), q.delayed_len()),
        (2, 1),
        "1 waits its delay again"
    );
    assert_eq!(
        q.expire_due(1009, 10),
        0,
        "TTL counts from reaching the head"
    );
    assert_eq!(q.expire_due(1011, 10), 1);
    assert_eq!(q.ready_len(), 1, "message 3 still waits in the backlog");
}

#[test]
fn drop_head_reaches_into_the_backlog_when_the_head_is_empty() {
    let mut q: QueueState<()> = QueueState::new(config(|c| c.max_length = Some(2)));
    q.enable_backlog(2);
    for i in 1..=4 {
        q.push(msg(&format!("m{i}")), 0);
    }
    q.add_consumer(consumer("c", A, 0, false));
    let head = q.dispatch(10, 0).remove(0).1;
    assert_eq!(bodies(&head), ["m1", "m2"]);
    assert_eq!(
        (q.ready_len(), q.backlog_len()),
        (2, 2),
        "head empty, backlog full"
    );
    q.push(msg("m5"), 0);
    assert_eq!(q.enforce_limits(), 1, "the oldest waiting message goes");
    q.refill(0);
    assert_eq!(bodies(&q.dispatch(10, 0).remove(0).1), ["m4", "m5"]);
}
