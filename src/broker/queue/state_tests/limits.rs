//! TTL, length limits and dead-lettering.

use super::*;

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

// ------------------------------------------------------------------ live settings

#[test]
fn a_policy_lowering_the_limit_drops_the_oldest_at_once_and_keeps_the_structure() {
    let mut q = filled_with(config(|c| c.max_priority = 5), 5);
    let mut lower = dlx();
    lower.max_length = Some(2);
    lower.max_priority = 0;
    q.reconfigure(lower);
    assert_eq!(q.ready_len(), 2);
    assert_eq!(dead_bodies(&mut q).len(), 3);
    assert_eq!(q.config().max_priority, 5, "built with priorities: kept");
    assert_eq!(q.config().max_length, Some(2));
    // Cleared: the queue grows again.
    q.reconfigure(QueueConfig::default());
    q.push(msg("more"), 0);
    q.push(msg("again"), 0);
    assert_eq!(q.ready_len(), 4);
}
