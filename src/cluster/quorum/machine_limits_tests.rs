//! The machine's limits changed by a policy after the declare (`Command::SetLimits`):
//! a lower length limit drops from the head at once (drop-head) or refuses the next
//! publishes (reject-publish), a new TTL counts for later publishes, an older change
//! is skipped, and every member applying the same log reaches the same queue.

use super::*;

fn set(at: u64, limits: Limits) -> Command<M> {
    Command::SetLimits { at, limits }
}

fn max_len(n: u64) -> Limits {
    Limits {
        max_length: Some(n),
        ..Limits::default()
    }
}

#[test]
fn a_lower_max_length_drops_the_head_at_once_with_drop_head() {
    let mut q = QueueMachine::new(max_len(10));
    q.apply(batch(&["a", "b", "c", "d", "e"]));
    let a = q.apply(set(7, max_len(2)));
    assert_eq!(
        a.dead,
        [
            (m("a"), DeadReason::MaxLen),
            (m("b"), DeadReason::MaxLen),
            (m("c"), DeadReason::MaxLen)
        ],
        "dropped from the head in the change's entry"
    );
    assert_eq!(ready(&q), [("d".into(), 0), ("e".into(), 0)]);
    assert_eq!((q.limits().max_length, q.limits_at()), (Some(2), 7));
    // And from the next publish on, as any limit.
    let a = q.apply(batch(&["f"]));
    assert_eq!(a.dead, [(m("d"), DeadReason::MaxLen)]);
    assert_eq!(q.held_bytes(), 2);
}

#[test]
fn a_lower_max_length_with_reject_publish_keeps_what_is_held_and_refuses_the_next() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(batch(&["a", "b", "c"]));
    let capped = Limits {
        max_length: Some(2),
        reject_publish: true,
        ..Limits::default()
    };
    assert!(q.apply(set(3, capped)).dead.is_empty());
    assert_eq!(q.ready_len(), 3, "nothing held is dropped");
    assert_eq!(q.apply(batch(&["d"])).enqueued, [None], "refused");
    // A change back (the policy cleared: the arguments' limits) takes them again.
    q.apply(set(4, Limits::default()));
    assert_eq!(q.apply(batch(&["d"])).enqueued, [Some(4)]);
}

#[test]
fn a_change_not_newer_than_the_machine_s_is_skipped() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(set(9, max_len(3)));
    // An older change, written late by a leader whose node lagged: skipped.
    q.apply(set(5, max_len(1)));
    q.apply(set(9, max_len(1)));
    assert_eq!((q.limits().max_length, q.limits_at()), (Some(3), 9));
    q.apply(batch(&["a", "b", "c"]));
    assert_eq!(q.ready_len(), 3);
}

#[test]
fn a_new_ttl_counts_for_later_publishes_and_only_the_head_expires() {
    let mut q = QueueMachine::new(Limits {
        message_ttl: Some(1_000),
        ..Limits::default()
    });
    q.apply(Command::Clock { now_ms: 10_000 });
    q.apply(batch(&["old"]));
    let shorter = Limits {
        message_ttl: Some(10),
        ..Limits::default()
    };
    q.apply(set(2, shorter));
    q.apply(batch(&["new"]));
    assert_eq!(
        q.head_deadline(),
        Some(11_000),
        "the old one keeps its deadline"
    );
    // The new one is past its own deadline but waits behind the head.
    assert!(q.apply(Command::Clock { now_ms: 10_500 }).dead.is_empty());
    let a = q.apply(Command::Clock { now_ms: 11_001 });
    assert_eq!(
        a.dead,
        [
            (m("old"), DeadReason::Expired),
            (m("new"), DeadReason::Expired)
        ]
    );
}

#[test]
fn a_new_delivery_limit_applies_at_the_next_return_and_single_active_stays() {
    let mut q = QueueMachine::new(Limits {
        single_active: true,
        ..Limits::default()
    });
    q.apply(batch(&["poison"]));
    q.apply(Command::Deliver {
        to: C1,
        ids: vec![1],
    });
    q.apply(set(
        4,
        Limits {
            delivery_limit: Some(0),
            ..Limits::default()
        },
    ));
    assert!(q.limits().single_active, "no policy key: the declare's");
    let a = q.apply(Command::Settle {
        ids: vec![1],
        how: Settle::Requeue,
    });
    assert_eq!(a.dead, [(m("poison"), DeadReason::DeliveryLimit)]);
}

#[test]
fn from_at_least_once_to_at_most_once_the_kept_dead_go_to_the_leader_once() {
    let kept = Limits {
        reject_publish: true,
        at_least_once: true,
        ..Limits::default()
    };
    let mut q = QueueMachine::new(kept.clone());
    q.apply(batch(&["a", "b"]));
    q.apply(Command::Deliver {
        to: C1,
        ids: vec![1, 2],
    });
    let a = q.apply(Command::Settle {
        ids: vec![1, 2],
        how: Settle::Reject,
    });
    assert!(a.dead.is_empty(), "kept");
    assert_eq!(q.dead_len(), 2);
    let a = q.apply(set(
        5,
        Limits {
            at_least_once: false,
            ..kept
        },
    ));
    assert_eq!(
        a.dead,
        [
            (m("a"), DeadReason::Rejected),
            (m("b"), DeadReason::Rejected)
        ]
    );
    assert_eq!((q.dead_len(), q.dead_bytes(), q.held_bytes()), (0, 0, 0));
}

#[test]
fn members_applying_a_change_at_the_same_entry_reach_the_same_queue_and_snapshot() {
    let log: Vec<Command<M>> = vec![
        batch(&["a", "b", "c", "d"]),
        Command::Consume {
            consumer: C1,
            credit: 1,
            origin: None,
        },
        set(3, max_len(1)),
        batch(&["e", "f"]),
        Command::Settle {
            ids: vec![1],
            how: Settle::Ack,
        },
        set(8, Limits::default()),
        batch(&["g", "h"]),
    ];
    let mut a = QueueMachine::new(max_len(10));
    let mut b = QueueMachine::new(max_len(10));
    let mut answers = (Vec::new(), Vec::new());
    for (i, c) in log.iter().enumerate() {
        answers.0.push(a.apply(c.clone()));
        answers.1.push(b.apply(c.clone()));
        if i == 3 {
            // A member restored from a snapshot taken here goes on alike.
            b = rmp_serde::from_slice(&rmp_serde::to_vec(&b).unwrap()).unwrap();
        }
    }
    assert_eq!(a, b);
    assert_eq!(answers.0, answers.1);
    assert_eq!(a.limits_at(), 8);
    assert_eq!(ready(&a), [("g".into(), 0), ("h".into(), 0)]);
    assert_eq!(
        a.checked_out_len(),
        1,
        "f, to C1 once the ack freed its credit"
    );
}
