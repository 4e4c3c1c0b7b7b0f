//! The republisher's bookkeeping: each dead letter in flight once, settled once
//! confirmed, retried after a doubling pause, a new round ignoring old answers.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn dead_letters_go_once_until_answered_and_the_confirmed_are_settled_once() {
    let now = Instant::now();
    let mut p = Republisher::default();
    assert!(p.should_scan(2), "a new death");
    assert!(!p.should_scan(2), "nothing new");
    let round = p.sent(&[1, 2]);
    assert!(!p.is_free(1, now) && !p.is_free(2, now), "in flight");
    assert_eq!(p.room(), MAX_IN_FLIGHT - 2);
    let settle = p.answered(round, [(1, Outcome::Confirmed), (2, Outcome::Dropped)], now);
    assert_eq!(settle, [1, 2]);
    assert!(!p.is_free(1, now), "its settle is on its way");
    assert!(p.should_scan(2), "room was freed");
    // The settle committed: the machine no longer keeps them.
    p.settle_done(&[1, 2], true);
    p.forget_gone(|_| false);
    assert!(p.settling.is_empty());
}

#[test]
fn a_failed_dead_letter_waits_a_doubling_pause_and_goes_again() {
    let now = Instant::now();
    let mut p = Republisher::default();
    let mut round = p.sent(&[5]);
    let mut pauses = Vec::new();
    let mut at = now;
    for _ in 0..8 {
        assert!(p.answered(round, [(5, Outcome::Failed)], at).is_empty());
        assert!(!p.is_free(5, at), "not before its pause");
        let next = p.next_retry(at).expect("a retry to come");
        pauses.push(next - at);
        at = next;
        assert!(p.is_free(5, at));
        round = p.sent(&[5]);
        assert_eq!(p.next_retry(at), None, "in flight");
    }
    assert_eq!(
        pauses,
        [
            ms(250),
            ms(500),
            ms(1000),
            ms(2000),
            ms(4000),
            ms(8000),
            ms(15_000),
            ms(15_000)
        ]
    );
    assert_eq!(p.answered(round, [(5, Outcome::Confirmed)], at), [5]);
    assert_eq!(p.next_retry(at), None);
}

#[test]
fn a_new_round_ignores_the_old_answers_and_frees_everything() {
    let now = Instant::now();
    let mut p = Republisher::default();
    let old = p.sent(&[1, 2]);
    p.answered(old, [(1, Outcome::Failed)], now);
    assert!(p.reset().is_none());
    assert!(p.is_free(1, now) && p.is_free(2, now));
    assert!(p.answered(old, [(2, Outcome::Confirmed)], now).is_empty());
    assert!(p.is_free(2, now), "an old confirm settles nothing");
    assert!(p.should_scan(0), "a new round scans everything");
}

#[test]
fn a_settle_that_did_not_commit_frees_its_dead_letters() {
    let now = Instant::now();
    let mut p = Republisher::default();
    let round = p.sent(&[3]);
    assert_eq!(p.answered(round, [(3, Outcome::Confirmed)], now), [3]);
    p.should_scan(0);
    p.settle_done(&[3], false);
    assert!(p.is_free(3, now));
    assert!(p.should_scan(0));
    // Still kept by the machine: remembered while failing, forgotten once gone.
    let round = p.sent(&[3]);
    p.answered(round, [(3, Outcome::Failed)], now);
    p.forget_gone(|id| id == 3);
    assert!(p.next_retry(now).is_some());
    p.forget_gone(|_| false);
    assert_eq!(p.next_retry(now), None);
}

#[test]
fn the_exchange_s_answer_decides_each_outcome() {
    let refused = Routed::refused(BrokerError::internal("full"));
    let cycle = Routed {
        cycle: true,
        ..Routed::default()
    };
    assert_eq!(outcome(&Routed::to(2)), Outcome::Confirmed);
    assert_eq!(outcome(&Routed::to(0)), Outcome::Failed, "routed nowhere");
    assert_eq!(outcome(&refused), Outcome::Failed);
    assert_eq!(outcome(&cycle), Outcome::Dropped);
    let mut partly = Routed::to(1);
    partly.merge(refused);
    assert_eq!(outcome(&partly), Outcome::Failed, "a queue refused it");
    assert!(failure(&partly).contains("full"));
}
