//! The machine's at-least-once dead-lettering: dead messages kept in death order with
//! their reason and time, counted against the length limits, settled by death
//! number; at most once unchanged; kept in a snapshot, and an older snapshot read.

use super::*;

fn at_least_once() -> Limits {
    Limits {
        reject_publish: true,
        at_least_once: true,
        ..Limits::default()
    }
}

fn clock(now_ms: u64) -> Command<M> {
    Command::Clock { now_ms }
}

fn dead_settled(ids: &[u64]) -> Command<M> {
    Command::DeadSettled { ids: ids.to_vec() }
}

/// The kept dead as (death number, body, reason, time of death).
fn kept(q: &QueueMachine<M>) -> Vec<(u64, String, DeadReason, Option<u64>)> {
    q.dead_letters()
        .map(|d| (d.id, d.message.0.clone(), d.reason, d.died_at_ms))
        .collect()
}

#[test]
fn at_least_once_keeps_the_dead_in_death_order_until_their_settle_commits() {
    let mut q = QueueMachine::new(at_least_once());
    q.apply(clock(1_000));
    q.apply(batch(&["a", "bb", "c"]));
    q.apply(deliver(&[1, 2, 3], C1));
    let a = q.apply(settle(&[2], Settle::Reject));
    assert!(a.dead.is_empty(), "nothing for an at-most-once republish");
    q.apply(clock(2_000));
    q.apply(settle(&[1], Settle::Reject));
    assert_eq!(
        kept(&q),
        [
            (1, "bb".into(), DeadReason::Rejected, Some(1_000)),
            (2, "a".into(), DeadReason::Rejected, Some(2_000)),
        ]
    );
    assert_eq!((q.ready_len(), q.checked_out_len()), (0, 1));
    assert_eq!((q.dead_len(), q.dead_bytes()), (2, 3));
    assert_eq!(q.held_bytes(), 4, "the dead are still held");
    assert!(q.peek(10).next().is_none(), "never deliverable");

    q.apply(dead_settled(&[2]));
    assert_eq!(
        kept(&q),
        [(1, "bb".into(), DeadReason::Rejected, Some(1_000))]
    );
    // A second leader's settle of the same number, and an unknown one: no-ops.
    q.apply(dead_settled(&[2, 9]));
    assert_eq!(q.dead_len(), 1);
    q.apply(Command::Batch(vec![dead_settled(&[1])]));
    assert_eq!((q.dead_len(), q.dead_bytes(), q.held_bytes()), (0, 0, 1));
    assert!(!q.is_kept_dead(1));
    // Death numbers go on from where they were.
    q.apply(settle(&[3], Settle::Reject));
    assert_eq!(kept(&q)[0].0, 3);
    assert_eq!(q.last_dead(), 3);
}

#[test]
fn every_way_to_die_is_kept_with_its_reason() {
    let mut q = QueueMachine::new(Limits {
        delivery_limit: Some(0),
        message_ttl: Some(10),
        ..at_least_once()
    });
    q.apply(clock(100));
    q.apply(batch(&["limit", "old", "got"]));
    q.apply(deliver(&[1], C1));
    // Past its delivery limit when it comes back.
    assert!(q.apply(settle(&[1], Settle::Requeue)).dead.is_empty());
    // The head expires on a later clock, and the one behind it with it.
    q.apply(clock(111));
    q.apply(batch(&["fresh"]));
    assert_eq!(
        kept(&q),
        [
            (1, "limit".into(), DeadReason::DeliveryLimit, Some(100)),
            (2, "old".into(), DeadReason::Expired, Some(111)),
            (3, "got".into(), DeadReason::Expired, Some(111)),
        ]
    );
    assert_eq!(ready(&q), [("fresh".into(), 0)]);
}

#[test]
fn kept_dead_count_against_the_length_limits_until_settled() {
    let mut q = QueueMachine::new(Limits {
        max_length: Some(2),
        ..at_least_once()
    });
    assert_eq!(q.apply(batch(&["a", "b"])).enqueued, [Some(1), Some(2)]);
    q.apply(deliver(&[1], C1));
    q.apply(settle(&[1], Settle::Reject));
    // One ready and one dead: full, the publish is refused.
    assert_eq!(q.apply(batch(&["c"])).enqueued, [None]);
    q.apply(dead_settled(&[1]));
    assert_eq!(q.apply(batch(&["c"])).enqueued, [Some(3)]);

    let mut q = QueueMachine::new(Limits {
        max_length_bytes: Some(4),
        ..at_least_once()
    });
    q.apply(batch(&["abcd"]));
    q.apply(deliver(&[1], C1));
    q.apply(settle(&[1], Settle::Reject));
    assert_eq!(
        q.apply(batch(&["d"])).enqueued,
        [None],
        "4 dead bytes: full"
    );
    q.apply(dead_settled(&[1]));
    assert_eq!(q.apply(batch(&["d"])).enqueued, [Some(2)]);
}

#[test]
fn at_most_once_hands_the_dead_to_the_leader_and_keeps_none() {
    let mut q = QueueMachine::new(Limits {
        // The strategy without reject-publish falls back at declare (`limits_of`);
        // here the flag alone decides.
        reject_publish: true,
        ..Limits::default()
    });
    q.apply(batch(&["a"]));
    q.apply(deliver(&[1], C1));
    let a = q.apply(settle(&[1], Settle::Reject));
    assert_eq!(a.dead, [(m("a"), DeadReason::Rejected)]);
    assert_eq!((q.dead_len(), q.held_bytes()), (0, 0));
}

#[test]
fn every_member_applying_the_same_log_keeps_the_same_dead() {
    for seed in 1..20 {
        let log = random_log(seed, 300);
        let mut a = QueueMachine::new(Limits {
            delivery_limit: Some(1),
            ..at_least_once()
        });
        let mut b = a.clone();
        for (i, c) in log.into_iter().enumerate() {
            a.apply(c.clone());
            b.apply(c);
            if i % 7 == 0 {
                let ids: Vec<u64> = a.dead_letters().take(2).map(|d| d.id).collect();
                a.apply(dead_settled(&ids));
                b.apply(dead_settled(&ids));
            }
        }
        assert_eq!(a, b);
        let restored: QueueMachine<M> =
            rmp_serde::from_slice(&rmp_serde::to_vec(&a).unwrap()).unwrap();
        assert_eq!(restored, a, "a snapshot carries the kept dead");
    }
}

/// `Limits` as serialized before `at_least_once`.
#[derive(Serialize)]
struct OldLimits {
    max_length: Option<u64>,
    max_length_bytes: Option<u64>,
    reject_publish: bool,
    delivery_limit: Option<u64>,
    message_ttl: Option<u64>,
    single_active: bool,
    expires: Option<u64>,
}

/// The machine as serialized before at-least-once dead-lettering (a snapshot an
/// older node kept): its limits without the flag, no kept dead.
#[derive(Serialize)]
struct BeforeDead {
    limits: OldLimits,
    next_id: u64,
    ready: BTreeMap<u64, Held<M>>,
    ready_bytes: u64,
    checked_out: BTreeMap<u64, (ConsumerKey, Held<M>)>,
    consumers: BTreeMap<ConsumerKey, Attached>,
    service: VecDeque<ConsumerKey>,
    held_bytes: u64,
    clock_ms: u64,
    next_seq: u64,
    touches: u64,
}

#[test]
fn a_snapshot_written_before_at_least_once_decodes_with_nothing_kept() {
    let old = BeforeDead {
        limits: OldLimits {
            max_length: Some(5),
            max_length_bytes: None,
            reject_publish: true,
            delivery_limit: Some(2),
            message_ttl: None,
            single_active: false,
            expires: None,
        },
        next_id: 2,
        ready: BTreeMap::from([(
            1,
            Held {
                message: m("a"),
                deliveries: 0,
                expires_at: None,
            },
        )]),
        ready_bytes: 1,
        checked_out: BTreeMap::new(),
        consumers: BTreeMap::new(),
        service: VecDeque::new(),
        held_bytes: 1,
        clock_ms: 7,
        next_seq: 0,
        touches: 3,
    };
    let mut q: QueueMachine<M> = rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
    assert_eq!((q.dead_len(), q.last_dead()), (0, 0));
    assert_eq!(
        q.limits_at(),
        0,
        "the declare's limits, never changed by a policy"
    );
    assert_eq!(ready(&q), [("a".into(), 0)]);
    // At most once, as it was declared.
    q.apply(deliver(&[1], C1));
    assert_eq!(q.apply(settle(&[1], Settle::Reject)).dead.len(), 1);
    assert_eq!(q.dead_len(), 0);
}
