//! The extra credit's hysteresis on a driven clock: one consumer on the leader, the
//! real machine, commits a fixed round trip after their entry is written, the
//! leader's rules as the queue actor applies them (`settle`, `replica_flush`,
//! `extra::give_back`), and a client acking at a given pace. Counts the log entries
//! written per ack under the former rule (the extra taken at every settlement, given
//! back the moment the client is idle) and the present one.

use super::*;
use crate::cluster::quorum::machine::{
    Command, ConsumerKey, Limits, QueueMachine, Settle, Weighed,
};
use std::collections::VecDeque;
use std::time::Instant;

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
/// A commit round trip.
const RTT: Duration = Duration::from_millis(2);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Rule {
    /// The extra with every settlement, back as soon as the client is idle.
    Before,
    /// The extra only for a client that may run dry; back after `GIVE_BACK_AFTER`.
    After,
    /// No extra at all: the credit is the prefetch (RabbitMQ's quorum queues).
    Plain,
}

/// One consumer served by the leader, and its group.
struct Sim {
    rule: Rule,
    q: QueueMachine<Body>,
    prefetch: u32,
    boosted: bool,
    /// Sent to the client, not acked by it.
    unacked: VecDeque<u64>,
    /// Checked out, not sent.
    waiting: VecDeque<u64>,
    settling: usize,
    settled_at: Instant,
    /// Commands for the next entry, and how many of them are the client's settlements.
    pending: (Vec<Command<Body>>, usize),
    /// Entries written: when they commit, their commands, their settlements.
    inflight: VecDeque<(Instant, Vec<Command<Body>>, usize)>,
    entries: usize,
    acks: usize,
    sent: usize,
}

impl Sim {
    fn new(rule: Rule, prefetch: u32, messages: usize, now: Instant) -> Sim {
        let mut q = QueueMachine::new(Limits::default());
        q.apply(Command::Enqueue(vec![Body; messages]));
        let a = q.apply(Command::Consume {
            consumer: TO,
            credit: registered(prefetch, false),
            origin: None,
        });
        Sim {
            rule,
            q,
            prefetch,
            boosted: false,
            unacked: VecDeque::new(),
            waiting: a.checkouts.iter().map(|(_, id)| *id).collect(),
            settling: 0,
            settled_at: now,
            pending: (Vec::new(), 0),
            inflight: VecDeque::new(),
            entries: 0,
            acks: 0,
            sent: 0,
        }
    }

    fn consume(&mut self, credit: u32) {
        self.pending.0.push(Command::Consume {
            consumer: TO,
            credit,
            origin: None,
        });
    }

    /// The client acks its oldest delivery (the queue actor's `settle`).
    fn ack(&mut self, now: Instant) {
        let Some(id) = self.unacked.pop_front() else {
            return;
        };
        self.acks += 1;
        self.settling += 1;
        self.settled_at = now;
        let boost = match self.rule {
            Rule::Before => !self.boosted,
            Rule::After => {
                !self.boosted
                    && starved(self.prefetch, false, self.unacked.len(), self.waiting.len())
            }
            Rule::Plain => false,
        };
        if boost {
            self.boosted = true;
            self.consume(registered(self.prefetch, true));
        }
        self.pending.0.push(Command::Settle {
            ids: vec![id],
            how: Settle::Ack,
        });
        self.pending.1 += 1;
    }

    /// Sends what the prefetch allows, or gives the extra back (`replica_flush`).
    fn flush(&mut self, now: Instant) {
        let (p, waiting) = (self.prefetch, self.waiting.len());
        let n = sendable(p, false, self.unacked.len(), u32::MAX, waiting);
        for _ in 0..n {
            let id = self.waiting.pop_front().expect("waiting");
            self.unacked.push_back(id);
            self.sent += 1;
        }
        assert!(self.unacked.len() <= p as usize, "over the prefetch");
        if n > 0 || waiting == 0 || !idle(p, false, self.unacked.len(), self.settling) {
            return;
        }
        let keep = match self.rule {
            Rule::Before => 0,
            Rule::After | Rule::Plain => {
                let keep = kept(p, self.unacked.len(), waiting);
                let idle_for = now.saturating_duration_since(self.settled_at);
                if self.boosted && !give_back(true, idle_for, false) {
                    return;
                }
                if !self.boosted && keep == waiting {
                    return;
                }
                keep
            }
        };
        if self.boosted {
            self.boosted = false;
            self.consume(registered(p, false));
        }
        let ids = self.waiting.drain(keep..).collect();
        self.pending.0.push(Command::Settle {
            ids,
            how: Settle::Unsent,
        });
    }

    /// Writes what waits as one entry (up to 8 in flight).
    fn pump(&mut self, now: Instant) {
        if self.pending.0.is_empty() || self.inflight.len() >= 8 {
            return;
        }
        let (cmds, settles) = std::mem::take(&mut self.pending);
        self.entries += 1;
        self.inflight.push_back((now + RTT, cmds, settles));
    }

    /// Applies the entries committed by `now`.
    fn commit(&mut self, now: Instant) {
        while self.inflight.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, cmds, settles) = self.inflight.pop_front().expect("front");
            let a = self.q.apply(Command::Batch(cmds));
            self.waiting.extend(a.checkouts.iter().map(|(_, id)| *id));
            self.settling -= settles;
        }
    }

    /// One millisecond: commits, the client's acks (`acks` of them), sends, writes.
    fn step(&mut self, now: Instant, acks: usize) {
        self.commit(now);
        for _ in 0..acks {
            self.ack(now);
        }
        self.flush(now);
        self.pump(now);
    }
}

/// A client with `prefetch` acking one delivery every `every` ms for `acks` acks:
/// answers the entries written per ack, ×100 (the consumer's own registration aside).
fn entries_per_100_acks(rule: Rule, prefetch: u32, every: u64, acks: usize) -> usize {
    let t0 = Instant::now();
    let mut s = Sim::new(rule, prefetch, 10_000, t0);
    let mut t = 0;
    while s.acks < acks {
        t += 1;
        let ack = usize::from(t % every == 0 && !s.unacked.is_empty());
        s.step(t0 + Duration::from_millis(t), ack);
    }
    // Then quiet for a while, what the last ack leads to written too.
    for _ in 0..every.min(100) {
        t += 1;
        s.step(t0 + Duration::from_millis(t), 0);
    }
    s.entries * 100 / s.acks
}

#[test]
fn a_slow_consumer_writes_one_entry_per_ack_whatever_its_pace() {
    // Acks every 10 ms (5 round trips) to every 3 s, prefetch 10: one `Settle` each.
    for every in [10, 50, 400, 3000] {
        let before = entries_per_100_acks(Rule::Before, 10, every, 30);
        let after = entries_per_100_acks(Rule::After, 10, every, 30);
        assert!(
            before >= 190,
            "every {every} ms, before: {before} per 100 acks"
        );
        assert!(
            after <= 104,
            "every {every} ms, after: {after} per 100 acks"
        );
    }
    // Prefetch 1: every ack leaves the client nothing, so it takes the extra and
    // keeps it while it acks within `GIVE_BACK_AFTER`; slower, it goes back each
    // time (never more entries than before).
    let after = entries_per_100_acks(Rule::After, 1, 50, 30);
    assert!(
        after <= 104,
        "prefetch 1, every 50 ms: {after} per 100 acks"
    );
    let before = entries_per_100_acks(Rule::Before, 1, 3000, 30);
    let after = entries_per_100_acks(Rule::After, 1, 3000, 30);
    assert!(after <= before, "prefetch 1, every 3 s: {after} > {before}");
}

#[test]
fn a_fast_consumer_still_takes_twice_its_prefetch_per_round_trip() {
    // A client acking all it holds every millisecond, for a second.
    let run = |rule| {
        let t0 = Instant::now();
        let mut s = Sim::new(rule, 10, 100_000, t0);
        for t in 1..=1000 {
            let acks = s.unacked.len();
            s.step(t0 + Duration::from_millis(t), acks);
        }
        s.sent
    };
    let (before, after, plain) = (run(Rule::Before), run(Rule::After), run(Rule::Plain));
    // Twice what the prefetch alone as credit gives, as before.
    assert!(
        before >= plain * 19 / 10,
        "before: {before}, plain: {plain}"
    );
    assert!(after >= before - 20, "after: {after}, before: {before}");
}

#[test]
fn the_extra_of_a_consumer_that_stops_goes_back_after_a_second_unmarked() {
    let t0 = Instant::now();
    let mut s = Sim::new(Rule::After, 10, 10_000, t0);
    let mut t = 0;
    // Fast for 100 ms, then it holds its prefetch and acks nothing.
    while t < 100 {
        t += 1;
        let acks = s.unacked.len();
        s.step(t0 + Duration::from_millis(t), acks);
    }
    let stopped = t;
    let (mut entries, mut sent) = (0, 0);
    while t < stopped + 1000 {
        t += 1;
        s.step(t0 + Duration::from_millis(t), 0);
        if t == stopped + 500 {
            // Its last settlements committed and refilled its prefetch long ago.
            (entries, sent) = (s.entries, s.sent);
            assert_eq!(s.unacked.len(), 10);
        }
        if t == stopped + 999 {
            assert_eq!(
                s.q.checked_out_len(),
                machine_credit(10) as usize,
                "kept for a second: prefetch + extra"
            );
        }
    }
    for _ in 0..10 {
        t += 1;
        s.step(t0 + Duration::from_millis(t), 0);
    }
    assert_eq!(
        s.q.checked_out_len(),
        10,
        "back: the client's prefetch only"
    );
    assert_eq!(s.entries, entries + 1, "one entry gives it back");
    assert_eq!(s.sent, sent, "nothing more sent");
    // Given back unsent: no delivery counted.
    assert!(s.q.peek(usize::MAX).all(|m| m.deliveries == 0));
}

#[test]
fn what_is_kept_wanted_and_given_back() {
    // Idle with the extra: back once a second passed, or at once when wanted.
    let second = GIVE_BACK_AFTER;
    assert!(!give_back(true, second - Duration::from_millis(1), false));
    assert!(give_back(true, second, false));
    assert!(give_back(true, Duration::ZERO, true));
    assert!(!give_back(false, second * 10, true), "not idle: kept");
    // The prefetch's credit covers what the client does not hold of this leader's.
    assert_eq!(kept(10, 10, 10), 0, "holding its prefetch: all back");
    assert_eq!(kept(10, 0, 10), 10, "holding only stale ones: all kept");
    assert_eq!(kept(10, 4, 10), 6);
    assert_eq!(kept(0, 10, 10), 10, "unlimited");
    // Starved: less than half the prefetch held and waiting.
    assert!(starved(10, false, 4, 0));
    assert!(
        !starved(10, false, 9, 0),
        "one ack of ten: refilled in time"
    );
    assert!(!starved(10, false, 2, 3));
    assert!(starved(1, false, 0, 0), "prefetch 1");
    assert!(!starved(10, true, 0, 0), "auto-ack");
    assert!(!starved(0, false, 0, 0), "unlimited");
    // Wants: room, nothing waiting.
    assert!(wants(10, false, 4, 100, 0));
    assert!(!wants(10, false, 4, 100, 1), "something waits for it");
    assert!(!wants(10, false, 4, 0, 0), "its transport window is full");
    assert!(
        !wants(10, false, 5, 100, 0),
        "more than half its prefetch held"
    );
    assert!(wants(0, false, 500, 100, 0), "unlimited");
    assert!(wants(10, true, 50, 100, 0), "auto-ack");
}
