//! Single active consumer.

use super::*;

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
