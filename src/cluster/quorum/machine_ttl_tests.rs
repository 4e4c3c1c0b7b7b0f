//! The machine's TTLs: time only from committed `Clock` entries, expiry at the head
//! only, and the serialized form of a queue from before TTLs still read.

use super::*;

fn clock(now_ms: u64) -> Command<M> {
    Command::Clock { now_ms }
}

fn ttl(ms: u64) -> Limits {
    Limits {
        message_ttl: Some(ms),
        ..Limits::default()
    }
}

fn expired(bodies: &[&str]) -> Vec<(M, DeadReason)> {
    bodies.iter().map(|b| (m(b), DeadReason::Expired)).collect()
}

#[test]
fn only_the_head_expires_and_only_when_a_committed_clock_passes_its_deadline() {
    let mut q = QueueMachine::new(ttl(100));
    q.apply(clock(1_000));
    q.apply(batch(&["a", "b"]));
    q.apply(clock(1_050));
    q.apply(batch(&["c"]));
    assert_eq!(q.head_deadline(), Some(1_100));
    // Alive through its deadline's millisecond.
    assert!(q.apply(clock(1_100)).dead.is_empty());
    assert_eq!(q.apply(clock(1_101)).dead, expired(&["a", "b"]));
    assert_eq!(ready(&q), [("c".into(), 0)]);
    assert_eq!(q.head_deadline(), Some(1_150));
    // The clock never goes back (a new leader's clock behind the old one's).
    assert!(q.apply(clock(900)).dead.is_empty());
    assert_eq!(q.apply(clock(1_151)).dead, expired(&["c"]));
    assert_eq!(q.held_bytes(), 0);
    assert_eq!(q.head_deadline(), None);
}

#[test]
fn a_message_s_own_ttl_counts_but_it_waits_behind_a_longer_lived_head() {
    let mut q = QueueMachine::new(ttl(500));
    q.apply(clock(0));
    // Deadlines: min(500, 1000) = 500, 10, 500.
    q.apply(batch(&["long/1000", "short/10", "plain"]));
    assert_eq!(q.head_deadline(), Some(500));
    assert!(
        q.apply(clock(100)).dead.is_empty(),
        "short waits behind the head"
    );
    assert_eq!(
        q.apply(clock(501)).dead,
        expired(&["long/1000", "short/10", "plain"])
    );
    // Without a queue TTL, only messages with their own expire.
    let mut q = QueueMachine::new(Limits::default());
    q.apply(clock(0));
    q.apply(batch(&["own/5", "forever"]));
    assert_eq!(q.apply(clock(1_000_000)).dead, expired(&["own/5"]));
    assert_eq!(q.head_deadline(), None);
}

#[test]
fn a_ttl_of_zero_reaches_a_consumer_with_credit_and_what_comes_back_past_it_is_dead() {
    let mut q = QueueMachine::new(ttl(0));
    q.apply(consume(C1, 1));
    q.apply(clock(10));
    let a = q.apply(batch(&["a", "b"]));
    assert_eq!(a.checkouts, [(C1, 1)], "delivered at its publish");
    assert!(a.dead.is_empty());
    // b, ready, is past its deadline once the clock moves on.
    assert_eq!(q.apply(clock(11)).dead, expired(&["b"]));
    // a, requeued past its deadline, is dead at its checkout instead of delivered.
    let a = q.apply(settle(&[1], Settle::Requeue));
    assert_eq!(a.dead, expired(&["a"]));
    assert!(a.checkouts.is_empty());
    // A get naming a message past its deadline (one that waited behind a
    // longer-lived head) is not handed it: the message is dead.
    let mut q = QueueMachine::new(Limits::default());
    q.apply(clock(0));
    q.apply(batch(&["long/1000", "short/10"]));
    assert!(q.apply(clock(100)).dead.is_empty());
    let a = q.apply(deliver(&[2], C2));
    assert_eq!(a.dead, expired(&["short/10"]));
    assert_eq!(q.holder(2), None);
    assert_eq!(ready(&q), [("long/1000".into(), 0)]);
}

/// The machine's serialized form before TTLs: `Held` without its deadline, the
/// machine without its clock (a snapshot an older node kept).
#[derive(Serialize)]
struct OldHeld {
    message: M,
    deliveries: u32,
}

#[derive(Serialize)]
struct OldMachine {
    limits: (Option<u64>, Option<u64>, bool, Option<u64>),
    next_id: u64,
    ready: BTreeMap<u64, OldHeld>,
    ready_bytes: u64,
    checked_out: BTreeMap<u64, (ConsumerKey, OldHeld)>,
    consumers: BTreeMap<ConsumerKey, (u32, u32)>,
    service: VecDeque<ConsumerKey>,
    held_bytes: u64,
}

#[test]
fn limits_and_a_snapshot_written_before_ttls_still_decode() {
    let old = OldMachine {
        limits: (Some(10), None, false, Some(3)),
        next_id: 3,
        ready: BTreeMap::from([(
            2,
            OldHeld {
                message: m("b"),
                deliveries: 0,
            },
        )]),
        ready_bytes: 1,
        checked_out: BTreeMap::from([(
            1,
            (
                C1,
                OldHeld {
                    message: m("a"),
                    deliveries: 1,
                },
            ),
        )]),
        consumers: BTreeMap::from([(C1, (1, 1))]),
        service: VecDeque::new(),
        held_bytes: 2,
    };
    let bytes = rmp_serde::to_vec(&old).unwrap();
    let mut q: QueueMachine<M> = rmp_serde::from_slice(&bytes).unwrap();
    let limits: Limits = rmp_serde::from_slice(&rmp_serde::to_vec(&old.limits).unwrap()).unwrap();
    assert_eq!(limits.max_length, Some(10));
    assert_eq!(limits.message_ttl, None);
    assert_eq!(ready(&q), [("b".into(), 0)]);
    assert_eq!(q.head_deadline(), None, "no deadline for an old message");
    assert!(q.apply(clock(u64::MAX)).dead.is_empty());
    // It goes on as any queue: the ack frees C1's credit for b.
    assert_eq!(q.apply(settle(&[1], Settle::Ack)).checkouts, [(C1, 2)]);
}

#[test]
fn a_get_written_after_the_leader_s_clock_hands_out_the_live_message_behind_a_dead_head() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(clock(0));
    q.apply(batch(&["a/10", "b"]));
    // What the leader picks by: a's deadline (passed on its clock at 50), b's none.
    let deadlines: Vec<Option<u64>> = q.peek(2).map(|r| r.deadline).collect();
    assert_eq!(deadlines, [Some(10), None]);
    // The leader picks b and writes the get after its clock: a expires, b goes.
    let a = q.apply(Command::Batch(vec![clock(50), deliver(&[2], C2)]));
    assert_eq!(a.dead, expired(&["a/10"]));
    assert_eq!(q.holder(2), Some(C2));
    assert_eq!(q.ready_len(), 0);
}

#[test]
fn redeclares_are_counted_and_the_count_is_kept_in_a_snapshot() {
    let limits = Limits {
        expires: Some(1_000),
        ..Limits::default()
    };
    let mut q: QueueMachine<M> = QueueMachine::new(limits);
    assert_eq!(q.touches(), 0);
    q.apply(Command::Touch);
    q.apply(Command::Batch(vec![Command::Touch, clock(5)]));
    assert_eq!(q.touches(), 2);
    let back: QueueMachine<M> = rmp_serde::from_slice(&rmp_serde::to_vec(&q).unwrap()).unwrap();
    assert_eq!(back, q);
}
