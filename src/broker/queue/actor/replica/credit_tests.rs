//! The credit accounting alone, and against the real machine: a leader that sends
//! within [`sendable`] and registers [`machine_credit`] lets a client with prefetch P
//! take its whole machine credit (9P) per commit round trip, never holding more than P unacked.

use super::*;
use crate::cluster::quorum::machine::{
    Command, ConsumerKey, Limits, QueueMachine, Settle, Weighed,
};
use std::collections::VecDeque;

#[derive(Clone, Debug, PartialEq)]
struct Body;

impl Weighed for Body {
    fn body_len(&self) -> usize {
        1
    }
}

const TO: ConsumerKey = ConsumerKey {
    node: 1,
    consumer: 1,
};

#[test]
fn the_machine_credit_is_the_prefetch_and_eight_times_as_much_within_a_cap() {
    assert_eq!(machine_credit(0), UNLIMITED_CREDIT, "no prefetch limit");
    assert_eq!(machine_credit(1), 9);
    assert_eq!(machine_credit(100), 900);
    assert_eq!(machine_credit(250), 250 + MAX_EXTRA, "the cap reached");
    assert_eq!(
        machine_credit(5000),
        5000 + MAX_EXTRA,
        "the extra is capped"
    );
    assert_eq!(machine_credit(u32::MAX), u32::MAX, "saturates");
}

#[test]
fn the_extra_is_registered_only_while_the_client_settles() {
    assert_eq!(registered(10, false), 10, "a client that settles nothing");
    assert_eq!(registered(10, true), 90);
    assert_eq!(registered(0, false), UNLIMITED_CREDIT);
    assert_eq!(registered(0, true), UNLIMITED_CREDIT);
    // Idle: holding its whole prefetch, no settlement on its way to commit.
    assert!(idle(10, false, 10, 0));
    assert!(
        !idle(10, false, 10, 1),
        "a settlement in flight frees a slot soon"
    );
    assert!(!idle(10, false, 9, 0), "a free slot takes the next");
    assert!(!idle(10, true, 10, 0), "auto-ack: no prefetch");
    assert!(!idle(0, false, 5000, 0), "no prefetch limit");
}

#[test]
fn a_client_is_never_sent_beyond_its_prefetch_and_an_ack_frees_a_slot_at_once() {
    // Prefetch 10, 20 checked out here: 10 go, then none until the client acks.
    assert_eq!(sendable(10, false, 0, 1000, 20), 10);
    assert_eq!(sendable(10, false, 10, 1000, 10), 0);
    // One ack (unacked back to 9): one more, with no commit in between.
    assert_eq!(sendable(10, false, 9, 1000, 10), 1);
    // A prefetch lowered below what the client holds sends nothing.
    assert_eq!(sendable(5, false, 10, 1000, 10), 0);
    // The transport window bounds every consumer.
    assert_eq!(sendable(10, false, 0, 3, 20), 3);
    assert_eq!(
        sendable(0, false, 500, 1000, 2000),
        1000,
        "no prefetch limit"
    );
    // Auto-ack: the prefetch does not apply (its deliveries are settled once sent).
    assert_eq!(sendable(10, true, 0, 1000, 20), 20);
}

/// The leader's side of one consumer whose client acks everything at once: what
/// waits to be sent, what its client holds, and its acks not committed yet.
struct Leader {
    prefetch: u32,
    waiting: VecDeque<u64>,
    unacked: usize,
    acked: Vec<u64>,
    delivered: Vec<u64>,
}

impl Leader {
    /// Sends what the prefetch allows; the client acks each delivery (its slot
    /// frees at once), until nothing more can go without a commit. Answers how
    /// many were sent.
    fn serve(&mut self) -> usize {
        let mut sent = 0;
        loop {
            let n = sendable(
                self.prefetch,
                false,
                self.unacked,
                u32::MAX,
                self.waiting.len(),
            );
            if n == 0 {
                return sent;
            }
            for _ in 0..n {
                let id = self.waiting.pop_front().expect("waiting");
                self.unacked += 1;
                assert!(self.unacked <= self.prefetch as usize, "over the prefetch");
                self.delivered.push(id);
                sent += 1;
            }
            // The client acks them: slots free now, the Settle commits later.
            self.acked
                .extend(self.delivered[self.delivered.len() - n..].iter());
            self.unacked -= n;
        }
    }
}

/// Runs `rounds` commit round trips of a consumer with `prefetch` registered with
/// `credit` over a queue of `messages`; answers the deliveries in each round.
fn rounds(prefetch: u32, credit: u32, messages: usize, rounds: usize) -> (Vec<usize>, Vec<u64>) {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(Command::Enqueue(vec![Body; messages]));
    let a = q.apply(Command::Consume {
        consumer: TO,
        credit,
        origin: None,
    });
    let mut l = Leader {
        prefetch,
        waiting: a.checkouts.iter().map(|(_, id)| *id).collect(),
        unacked: 0,
        acked: Vec::new(),
        delivered: Vec::new(),
    };
    let mut per_round = Vec::new();
    for _ in 0..rounds {
        per_round.push(l.serve());
        assert!(q.checked_out_len() <= credit as usize, "the group's bound");
        // The round's acks commit in one entry; what it frees is checked out.
        let ids = std::mem::take(&mut l.acked);
        let a = q.apply(Command::Settle {
            ids,
            how: Settle::Ack,
        });
        l.waiting.extend(a.checkouts.iter().map(|(_, id)| *id));
    }
    (per_round, l.delivered)
}

#[test]
fn a_consumer_takes_its_whole_credit_per_commit_round_trip_in_order() {
    let (per_round, delivered) = rounds(10, machine_credit(10), 1000, 5);
    assert_eq!(per_round, [90; 5], "prefetch + extra per round");
    assert_eq!(
        delivered,
        (1..=450).collect::<Vec<u64>>(),
        "queue order, once each"
    );
    // The former rule (the machine's credit = the prefetch): the prefetch per round.
    let (per_round, _) = rounds(10, 10, 1000, 5);
    assert_eq!(per_round, [10; 5]);
}

#[test]
fn a_slow_client_holds_its_prefetch_and_the_extra_waits_checked_out() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(Command::Enqueue(vec![Body; 100]));
    let a = q.apply(Command::Consume {
        consumer: TO,
        credit: machine_credit(10),
        origin: None,
    });
    let waiting = a.checkouts.len();
    assert_eq!(waiting, 90, "checked out: prefetch and extra");
    assert_eq!(
        sendable(10, false, 0, 1000, waiting),
        10,
        "the client gets 10"
    );
    assert_eq!(
        sendable(10, false, 10, 1000, waiting - 10),
        0,
        "holding 10: none"
    );
    assert_eq!(
        q.ready_len(),
        10,
        "the rest stays ready for other consumers"
    );
}
