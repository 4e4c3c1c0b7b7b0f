use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct M(String);

impl Weighed for M {
    fn body_len(&self) -> usize {
        self.0.len()
    }

    /// A body `name/ttl` has its own TTL.
    fn ttl_ms(&self) -> Option<u64> {
        self.0.split_once('/')?.1.parse().ok()
    }
}

fn m(s: &str) -> M {
    M(s.to_string())
}

fn batch(bodies: &[&str]) -> Command<M> {
    Command::Enqueue(bodies.iter().map(|b| m(b)).collect())
}

const C1: ConsumerKey = ConsumerKey {
    node: 1,
    consumer: 7,
};
const C2: ConsumerKey = ConsumerKey {
    node: 2,
    consumer: 1,
};

/// The ready queue as (body, earlier deliveries), in order.
fn ready(q: &QueueMachine<M>) -> Vec<(String, u32)> {
    q.peek(usize::MAX)
        .map(|r| (r.message.0.clone(), r.deliveries))
        .collect()
}

fn deliver(ids: &[u64], to: ConsumerKey) -> Command<M> {
    Command::Deliver {
        to,
        ids: ids.to_vec(),
    }
}

fn settle(ids: &[u64], how: Settle) -> Command<M> {
    Command::Settle {
        ids: ids.to_vec(),
        how,
    }
}

#[test]
fn a_batch_is_enqueued_in_order_and_a_requeue_goes_back_to_its_place() {
    let mut q = QueueMachine::new(Limits::default());
    let a = q.apply(batch(&["a", "b", "c"]));
    assert_eq!(a.enqueued, [Some(1), Some(2), Some(3)]);
    q.apply(deliver(&[1, 2], C1));
    assert_eq!(ready(&q), [("c".into(), 0)]);
    q.apply(settle(&[1], Settle::Ack));
    q.apply(settle(&[2], Settle::Requeue));
    assert_eq!(ready(&q), [("b".into(), 1), ("c".into(), 0)]);
    assert_eq!(q.checked_out_len(), 0);
    // A settlement of what is not checked out changes nothing.
    let before = q.clone();
    q.apply(settle(&[1, 2, 99], Settle::Ack));
    assert_eq!(q, before);
}

#[test]
fn a_new_leader_returns_the_old_leader_s_checkouts_marked_and_never_acked_ones() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(batch(&["a", "b", "c", "d"]));
    q.apply(deliver(&[1, 2, 3], C1));
    q.apply(settle(&[1], Settle::Ack));
    // Node 2 becomes leader: what node 1 handed out and nobody acked comes back.
    q.apply(Command::Return {
        keep_node: Some(2),
        consumer: None,
    });
    assert_eq!(
        ready(&q),
        [("b".into(), 1), ("c".into(), 1), ("d".into(), 0)],
        "a (acked) never again; b, c redelivered in order"
    );
    // A stale delivery proposal of the old leader naming an acked message: skipped.
    q.apply(deliver(&[1, 2], C2));
    assert_eq!(q.checked_out_len(), 1);
    // One consumer's checkouts only.
    q.apply(deliver(&[3], C1));
    q.apply(Command::Return {
        keep_node: None,
        consumer: Some(C2),
    });
    assert_eq!(q.checked_out_len(), 1, "C1's checkout stays");
    assert_eq!(ready(&q), [("b".into(), 2), ("d".into(), 0)]);
}

#[test]
fn past_the_delivery_limit_a_returned_message_is_dead() {
    let mut q = QueueMachine::new(Limits {
        delivery_limit: Some(1),
        ..Default::default()
    });
    q.apply(batch(&["poison"]));
    q.apply(deliver(&[1], C1));
    assert!(q.apply(settle(&[1], Settle::Requeue)).dead.is_empty());
    q.apply(deliver(&[1], C1));
    let a = q.apply(settle(&[1], Settle::Requeue));
    assert_eq!(a.dead, [(m("poison"), DeadReason::DeliveryLimit)]);
    assert_eq!(q.ready_len(), 0);
    q.apply(batch(&["bad"]));
    q.apply(deliver(&[2], C1));
    let a = q.apply(settle(&[2], Settle::Reject));
    assert_eq!(a.dead, [(m("bad"), DeadReason::Rejected)]);
}

#[test]
fn length_limits_drop_the_head_or_refuse_the_publish() {
    let mut q = QueueMachine::new(Limits {
        max_length: Some(2),
        ..Default::default()
    });
    let a = q.apply(batch(&["a", "b", "c"]));
    assert_eq!(a.enqueued, [Some(1), Some(2), Some(3)]);
    assert_eq!(a.dead, [(m("a"), DeadReason::MaxLen)]);
    assert_eq!(ready(&q), [("b".into(), 0), ("c".into(), 0)]);

    let mut q = QueueMachine::new(Limits {
        max_length_bytes: Some(4),
        reject_publish: true,
        ..Default::default()
    });
    let a = q.apply(batch(&["ab", "cd", "e"]));
    assert_eq!(a.enqueued, [Some(1), Some(2), None]);
    assert!(a.dead.is_empty());
    q.apply(deliver(&[1], C1));
    assert_eq!(q.apply(batch(&["f"])).enqueued, [Some(3)]);
}

#[test]
fn a_purge_takes_the_ready_messages_and_leaves_the_checked_out_ones() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(batch(&["a", "b", "c"]));
    q.apply(deliver(&[1], C1));
    assert_eq!(q.apply(Command::Purge).purged, 2);
    assert_eq!(q.ready_len(), 0);
    q.apply(settle(&[1], Settle::Requeue));
    assert_eq!(ready(&q), [("a".into(), 1)]);
}

/// A small seeded generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// A random but valid-looking log: what a leader (or a stale one) might propose.
fn random_log(seed: u64, len: usize) -> Vec<Command<M>> {
    let mut rng = Rng(seed);
    let mut next = 1u64;
    let mut now = 0u64;
    (0..len)
        .map(|_| match rng.below(9) {
            0 | 1 => {
                let n = 1 + rng.below(4) as usize;
                let bodies: Vec<M> = (0..n)
                    .map(|_| {
                        next += 1;
                        match rng.below(4) {
                            0 => M(format!("m{next}/{}", rng.below(30))),
                            _ => M(format!("m{next}")),
                        }
                    })
                    .collect();
                Command::Enqueue(bodies)
            }
            // The leader's clock, now and then behind an earlier leader's.
            8 => {
                now += rng.below(40);
                Command::Clock {
                    now_ms: now.saturating_sub(rng.below(20)),
                }
            }
            2 => deliver(&[1 + rng.below(next), 1 + rng.below(next)], C1),
            3 => settle(
                &[1 + rng.below(next)],
                [Settle::Ack, Settle::Requeue, Settle::Reject][rng.below(3) as usize],
            ),
            4 => Command::Return {
                keep_node: Some(rng.below(3)),
                consumer: None,
            },
            5 => Command::Consume {
                consumer: [C1, C2][rng.below(2) as usize],
                credit: rng.below(4) as u32,
                origin: None,
            },
            6 => match rng.below(3) {
                0 => Command::Cancel {
                    consumer: [C1, C2][rng.below(2) as usize],
                },
                1 => settle(&[1 + rng.below(next)], Settle::Unsent),
                _ => Command::Return {
                    keep_node: None,
                    consumer: Some([C1, C2][rng.below(2) as usize]),
                },
            },
            _ => {
                if rng.below(10) == 0 {
                    Command::Purge
                } else {
                    deliver(&[1 + rng.below(next)], C2)
                }
            }
        })
        .collect()
}

#[test]
fn every_member_and_a_member_restored_from_a_snapshot_reach_the_same_queue() {
    let limits = Limits {
        max_length: Some(20),
        delivery_limit: Some(3),
        message_ttl: Some(60),
        ..Default::default()
    };
    for seed in 0..50 {
        let limits = Limits {
            single_active: seed % 2 == 0,
            ..limits.clone()
        };
        let log = random_log(seed, 300);
        let mut a = QueueMachine::new(limits.clone());
        let mut b = QueueMachine::new(limits.clone());
        let cut = 150;
        let mut answers_a = Vec::new();
        for c in &log[..cut] {
            answers_a.push(a.apply(c.clone()));
            b.apply(c.clone());
        }
        // A member that joins late installs a snapshot, then applies the rest.
        let snapshot = rmp_serde::to_vec(&b).unwrap();
        let mut c: QueueMachine<M> = rmp_serde::from_slice(&snapshot).unwrap();
        assert_eq!(c, a, "seed {seed}: the snapshot is the state");
        for cmd in &log[cut..] {
            let x = a.apply(cmd.clone());
            let y = c.apply(cmd.clone());
            assert_eq!(x, y, "seed {seed}: the same answers");
            answers_a.push(x);
            if matches!(cmd, Command::Enqueue(_)) {
                // drop-head holds the limit once publishes are in (returns may go over).
                assert!(a.ready_len() <= 20, "seed {seed}: the length limit holds");
            }
        }
        assert_eq!(a, c, "seed {seed}");
        // Ids are never reused: what is ready or checked out is unique and ordered.
        let ids: Vec<u64> = a.peek(usize::MAX).map(|r| r.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "seed {seed}");
    }
}

#[test]
fn a_batch_of_commands_is_the_commands_one_after_the_other() {
    let limits = Limits {
        max_length: Some(20),
        delivery_limit: Some(2),
        message_ttl: Some(60),
        ..Limits::default()
    };
    for seed in 0..20 {
        let limits = Limits {
            single_active: seed % 2 == 0,
            ..limits.clone()
        };
        let log = random_log(seed, 200);
        let mut one_by_one = QueueMachine::new(limits.clone());
        let mut answers = Applied {
            enqueued: Vec::new(),
            dead: Vec::new(),
            purged: 0,
            checkouts: Vec::new(),
        };
        for c in &log {
            let a = one_by_one.apply(c.clone());
            answers.enqueued.extend(a.enqueued);
            answers.dead.extend(a.dead);
            answers.purged += a.purged;
            answers.checkouts.extend(a.checkouts);
        }
        let mut batched = QueueMachine::new(limits.clone());
        let a = batched.apply(Command::Batch(log));
        assert_eq!(batched, one_by_one, "seed {seed}");
        assert_eq!(a, answers, "seed {seed}: the answers, merged");
    }
}

fn consume(consumer: ConsumerKey, credit: u32) -> Command<M> {
    Command::Consume {
        consumer,
        credit,
        origin: None,
    }
}

#[test]
fn a_registered_consumer_is_given_messages_as_publishes_and_acks_apply() {
    let mut q = QueueMachine::new(Limits::default());
    assert!(q.apply(consume(C1, 2)).checkouts.is_empty());
    let a = q.apply(batch(&["a", "b", "c"]));
    assert_eq!(
        a.checkouts,
        [(C1, 1), (C1, 2)],
        "its credit, in queue order"
    );
    assert_eq!(ready(&q), [("c".into(), 0)]);
    assert_eq!(q.checked_out_to(1, C1).map(|r| r.deliveries), Some(0));
    assert!(q.checked_out_to(1, C2).is_none(), "not C2's");
    // The ack frees one credit: the next message goes out as it applies.
    assert_eq!(q.apply(settle(&[1], Settle::Ack)).checkouts, [(C1, 3)]);
    // A requeue goes back to its place and, the credit freed, out again at once,
    // counted.
    let a = q.apply(settle(&[2], Settle::Requeue));
    assert_eq!(a.checkouts, [(C1, 2)]);
    assert_eq!(q.checked_out_to(2, C1).map(|r| r.deliveries), Some(1));
    // Credit raised (basic.qos): more at once.
    q.apply(batch(&["d", "e"]));
    assert_eq!(q.apply(consume(C1, 4)).checkouts, [(C1, 4), (C1, 5)]);
}

#[test]
fn consumers_with_credit_take_messages_in_turn() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(consume(C1, 10));
    q.apply(consume(C2, 1));
    let a = q.apply(batch(&["a", "b", "c", "d"]));
    assert_eq!(a.checkouts, [(C1, 1), (C2, 2), (C1, 3), (C1, 4)]);
    // C2's ack gives it the next turn.
    q.apply(settle(&[2], Settle::Ack));
    assert_eq!(q.apply(batch(&["e"])).checkouts, [(C1, 5)]);
    assert_eq!(q.apply(batch(&["f"])).checkouts, [(C2, 6)]);
}

#[test]
fn a_cancelled_consumer_keeps_what_it_holds_and_takes_nothing_more() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(consume(C1, 1));
    q.apply(batch(&["a"]));
    q.apply(Command::Cancel { consumer: C1 });
    assert!(q.apply(batch(&["b"])).checkouts.is_empty());
    assert_eq!(q.checked_out_len(), 1, "a stays checked out until settled");
    q.apply(settle(&[1], Settle::Ack));
    assert_eq!(ready(&q), [("b".into(), 0)]);
    assert_eq!(q.consumer_count(), 0);
}

#[test]
fn an_unsent_checkout_goes_back_with_its_delivery_count_as_before() {
    let mut q = QueueMachine::new(Limits {
        delivery_limit: Some(0),
        ..Default::default()
    });
    q.apply(consume(C1, 1));
    q.apply(batch(&["a"]));
    q.apply(Command::Cancel { consumer: C1 });
    // Never sent: not a delivery, so neither marked nor past the limit of 0.
    let a = q.apply(settle(&[1], Settle::Unsent));
    assert!(a.dead.is_empty());
    assert_eq!(ready(&q), [("a".into(), 0)]);
}

#[test]
fn a_new_leader_returns_checkouts_made_at_apply_and_drops_the_old_consumers() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(consume(C1, 2));
    q.apply(batch(&["a", "b", "c"]));
    q.apply(settle(&[1], Settle::Ack));
    // Node 2 takes over: b and c come back marked, a (acked) never again; node 1's
    // consumer is gone, so nothing is checked out to it any more.
    let a = q.apply(Command::Return {
        keep_node: Some(2),
        consumer: None,
    });
    assert!(a.checkouts.is_empty());
    assert_eq!(q.consumer_count(), 0);
    assert_eq!(ready(&q), [("b".into(), 1), ("c".into(), 1)]);
    // The new leader's consumer gets them, marked, in order.
    assert_eq!(q.apply(consume(C2, 5)).checkouts, [(C2, 2), (C2, 3)]);
    assert_eq!(q.checked_out_to(2, C2).map(|r| r.deliveries), Some(1));
}

#[test]
fn past_the_delivery_limit_a_message_requeued_at_apply_is_dead() {
    let mut q = QueueMachine::new(Limits {
        delivery_limit: Some(1),
        ..Default::default()
    });
    q.apply(consume(C1, 1));
    q.apply(batch(&["poison", "next"]));
    // Requeued and checked out again at once: its second delivery.
    assert_eq!(q.apply(settle(&[1], Settle::Requeue)).checkouts, [(C1, 1)]);
    let a = q.apply(settle(&[1], Settle::Requeue));
    assert_eq!(a.dead, [(m("poison"), DeadReason::DeliveryLimit)]);
    assert_eq!(a.checkouts, [(C1, 2)], "the next one takes its credit");
}

#[test]
fn the_bytes_held_follow_every_way_a_message_leaves() {
    let mut q = QueueMachine::new(Limits {
        max_length: Some(3),
        ..Default::default()
    });
    q.apply(consume(C1, 1));
    q.apply(batch(&["aa", "bbb", "c", "dddd"]));
    // a (checked out) and the three ready ones: max-length counts ready only.
    assert_eq!(q.held_bytes(), 10);
    q.apply(batch(&["ee"]));
    assert_eq!(q.held_bytes(), 9, "bbb dropped from the head");
    q.apply(settle(&[1], Settle::Reject));
    assert_eq!(q.held_bytes(), 7);
    q.apply(Command::Purge);
    assert_eq!(q.held_bytes(), 1, "the one checked out since");
    q.apply(Command::Return {
        keep_node: None,
        consumer: None,
    });
    q.apply(Command::Purge);
    assert_eq!(q.held_bytes(), 0);
}

/// TTLs: the leader's clock, deadlines, expiry at the head.
#[path = "machine_ttl_tests.rs"]
mod ttl;

/// At-least-once dead-lettering: the dead kept until settled.
#[path = "machine_dead_tests.rs"]
mod dead;

/// Limits changed by a policy after the declare.
#[path = "machine_limits_tests.rs"]
mod limits;

#[test]
fn a_single_active_consumer_takes_everything_and_the_next_registered_takes_over() {
    let mut q = QueueMachine::new(Limits {
        single_active: true,
        ..Limits::default()
    });
    let c3 = ConsumerKey {
        node: 1,
        consumer: 9,
    };
    // Registered C2, then C1, then c3: C2 is active (registration order, not keys).
    q.apply(consume(C2, 2));
    q.apply(consume(C1, 10));
    q.apply(consume(c3, 10));
    assert_eq!(q.active_consumer(), Some(C2));
    let a = q.apply(batch(&["a", "b", "c"]));
    assert_eq!(a.checkouts, [(C2, 1), (C2, 2)], "C2's credit, nobody else");
    // A credit change keeps its place (and gives it more).
    assert_eq!(q.apply(consume(C2, 3)).checkouts, [(C2, 3)]);
    assert_eq!(q.active_consumer(), Some(C2));
    // Cancelled: C1 takes over (C2 keeps what it holds until settled).
    q.apply(Command::Cancel { consumer: C2 });
    assert_eq!(q.active_consumer(), Some(C1));
    assert_eq!(q.apply(batch(&["d"])).checkouts, [(C1, 4)]);
    // C2 gone with what it held (a return): back to C1, marked.
    let a = q.apply(Command::Return {
        keep_node: None,
        consumer: Some(C2),
    });
    assert_eq!(a.checkouts, [(C1, 1), (C1, 2), (C1, 3)]);
    assert_eq!(q.checked_out_to(1, C1).map(|r| r.deliveries), Some(1));
    // A leader change drops C1 (node 1 is not kept): c3 is on node 1 too, so both go
    // and nobody is served; a consumer registered after takes everything back.
    q.apply(Command::Return {
        keep_node: Some(3),
        consumer: None,
    });
    assert_eq!(q.active_consumer(), None);
    let c4 = ConsumerKey {
        node: 3,
        consumer: 1,
    };
    let a = q.apply(consume(c4, 10));
    assert_eq!(a.checkouts, [(c4, 1), (c4, 2), (c4, 3), (c4, 4)]);
    // Without the argument, consumers share (no active one).
    let mut shared = QueueMachine::new(Limits::default());
    shared.apply(consume(C1, 1));
    assert_eq!(shared.active_consumer(), None);
}

/// The log's `Consume` as written before it carried an origin (the commands before
/// it as they were, so that it is encoded as it was).
#[derive(Serialize)]
#[allow(dead_code)]
enum OldCommand {
    Enqueue(Vec<M>),
    Deliver {
        to: ConsumerKey,
        ids: Vec<u64>,
    },
    Settle {
        ids: Vec<u64>,
        how: Settle,
    },
    Return {
        keep_node: Option<u64>,
        consumer: Option<ConsumerKey>,
    },
    Purge,
    Consume {
        consumer: ConsumerKey,
        credit: u32,
    },
}

#[test]
fn a_consume_written_before_origins_still_decodes_without_one() {
    let old = OldCommand::Consume {
        consumer: C1,
        credit: 3,
    };
    let bytes = rmp_serde::to_vec(&old).unwrap();
    let cmd: Command<M> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(cmd, consume(C1, 3));
    let mut q = QueueMachine::new(Limits {
        single_active: true,
        ..Limits::default()
    });
    q.apply(cmd);
    let origin = ConsumerKey {
        node: 2,
        consumer: 9,
    };
    assert!(!q.origin_is_active(origin), "the active one has no origin");
    q.apply(Command::Cancel { consumer: C1 });
    q.apply(Command::Consume {
        consumer: C2,
        credit: 1,
        origin: Some(origin),
    });
    // A later registration without an origin (basic.qos) keeps it.
    q.apply(consume(C2, 5));
    assert!(q.origin_is_active(origin));
}

/// Publish entries numbered by their writer: a retried entry enqueued once.
#[path = "machine_writers_tests.rs"]
mod writers;
