//! Priorities, delayed messages, the consumer timeout and deduplication.

use super::*;

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
