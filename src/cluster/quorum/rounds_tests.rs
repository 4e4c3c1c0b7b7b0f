use super::*;
use crate::cluster::quorum::group::StoredMessage;
use crate::cluster::quorum::machine::{ConsumerKey, Settle};
use crate::message::Message;

fn msg(i: u64) -> StoredMessage {
    StoredMessage::from(std::sync::Arc::new(Message::new(
        "",
        "q",
        format!("m{i}").into_bytes(),
    )))
}

fn settle(ids: &[u64], how: Settle) -> Command<StoredMessage> {
    Command::Settle {
        ids: ids.to_vec(),
        how,
    }
}

const TO: ConsumerKey = ConsumerKey {
    node: 1,
    consumer: 7,
};

#[test]
fn a_lone_write_is_written_as_it_is() {
    let c = Command::Enqueue(vec![msg(1)]);
    assert_eq!(combine(vec![c.clone()]), c);
    let s = settle(&[3], Settle::Ack);
    assert_eq!(combine(vec![s.clone()]), s);
}

#[test]
fn settlements_next_to_each_other_with_one_outcome_become_one_settle_in_their_order() {
    // Three writes of the leader (each its own batch, as the queue actor writes
    // them while earlier ones commit): acks out of order, a requeue between.
    let parts = vec![
        Command::Batch(vec![
            settle(&[5, 2], Settle::Ack),
            settle(&[9], Settle::Ack),
        ]),
        settle(&[1], Settle::Ack),
        Command::Batch(vec![
            settle(&[4], Settle::Requeue),
            settle(&[6], Settle::Requeue),
        ]),
        settle(&[3], Settle::Ack),
        Command::Cancel { consumer: TO },
        settle(&[8], Settle::Ack),
    ];
    assert_eq!(
        combine(parts),
        Command::Batch(vec![
            settle(&[5, 2, 9, 1], Settle::Ack),
            settle(&[4, 6], Settle::Requeue),
            settle(&[3], Settle::Ack),
            // Never across another command: the cancel must stay between.
            Command::Cancel { consumer: TO },
            settle(&[8], Settle::Ack),
        ])
    );
}

#[test]
fn every_id_of_every_write_is_in_the_round_once() {
    // Writes of random settlements: the combined entry names each id exactly as
    // often as the writes did, with its outcome, in the writes' order.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200 {
        let mut parts = Vec::new();
        let mut expected = Vec::new();
        let mut id = 0;
        for _ in 0..(next() % 12 + 1) {
            let mut batch = Vec::new();
            for _ in 0..(next() % 4 + 1) {
                let how = [Settle::Ack, Settle::Requeue, Settle::Reject, Settle::Unsent]
                    [(next() % 4) as usize];
                let ids: Vec<u64> = (0..next() % 5 + 1)
                    .map(|_| {
                        id += 1;
                        id
                    })
                    .collect();
                expected.extend(ids.iter().map(|i| (*i, how)));
                batch.push(settle(&ids, how));
            }
            parts.push(match next() % 2 {
                0 => Command::Batch(batch),
                _ => combine(batch),
            });
        }
        let mut got = Vec::new();
        let commands = match combine(parts) {
            Command::Batch(cs) => cs,
            one => vec![one],
        };
        for (i, c) in commands.iter().enumerate() {
            let Command::Settle { ids, how } = c else {
                panic!("only settlements: {c:?}")
            };
            if let Some(Command::Settle { how: before, .. }) =
                i.checked_sub(1).map(|b| &commands[b])
            {
                assert_ne!(
                    before, how,
                    "two settles of one outcome left next to each other"
                );
            }
            got.extend(ids.iter().map(|i| (*i, *how)));
        }
        assert_eq!(got, expected);
    }
}

#[test]
fn a_rounds_answer_is_split_back_by_each_writes_publishes_and_purge() {
    let parts = [
        crate::cluster::quorum::group::stamped(Command::Enqueue(vec![msg(1), msg(2)])),
        settle(&[1], Settle::Ack),
        Command::Purge,
        Command::Enqueue(vec![msg(3)]),
    ];
    let shapes: Vec<Shape> = parts.iter().map(Shape::of).collect();
    assert_eq!(
        shapes,
        [
            Shape {
                enqueued: 2,
                purges: false
            },
            Shape::default(),
            Shape {
                enqueued: 0,
                purges: true
            },
            Shape {
                enqueued: 1,
                purges: false
            },
        ]
    );
    let answer = GroupResponse {
        enqueued: vec![Some(10), None, Some(12)],
        dead: Vec::new(),
        purged: 4,
    };
    let split = split(answer, &shapes);
    assert_eq!(split[0].enqueued, [Some(10), None]);
    assert!(split[1].enqueued.is_empty() && split[1].purged == 0);
    assert_eq!((split[2].purged, split[2].enqueued.len()), (4, 0));
    assert_eq!(
        (split[3].enqueued.as_slice(), split[3].purged),
        ([Some(12)].as_slice(), 0)
    );
}

#[test]
fn applying_a_round_gives_the_queue_the_writes_would_give_one_entry_each() {
    use crate::cluster::quorum::machine::{Limits, QueueMachine};
    // A consumer with credit 3; publishes and acks as two writers make them.
    let writes = vec![
        Command::Consume {
            consumer: TO,
            credit: 3,
            origin: None,
        },
        Command::Enqueue((1..=6).map(msg).collect()),
        settle(&[2], Settle::Ack),
        settle(&[1], Settle::Requeue),
        settle(&[3], Settle::Ack),
        Command::Enqueue(vec![msg(7)]),
        settle(&[4], Settle::Ack),
        settle(&[5], Settle::Ack),
    ];
    let mut one_each = QueueMachine::new(Limits::default());
    let mut ids_each = Vec::new();
    for w in writes.clone() {
        ids_each.extend(one_each.apply(w).enqueued);
    }
    let mut round = QueueMachine::new(Limits::default());
    let shapes: Vec<Shape> = writes.iter().map(Shape::of).collect();
    let a = round.apply(combine(writes));
    let answer = GroupResponse {
        enqueued: a.enqueued,
        dead: Vec::new(),
        purged: a.purged,
    };
    let ids_round: Vec<_> = split(answer, &shapes)
        .into_iter()
        .flat_map(|r| r.enqueued)
        .collect();
    assert_eq!(ids_round, ids_each);
    let state = |q: &QueueMachine<StoredMessage>| {
        let ready: Vec<u64> = q.peek(usize::MAX).map(|m| m.id).collect();
        (ready, q.checked_out_len())
    };
    assert_eq!(state(&round), state(&one_each));
}

/// A real three-member group over cluster ports: writes made while the task has not
/// run yet (a single-threaded runtime: every write below is queued before it runs)
/// make one entry, and each is answered its own part.
#[tokio::test(flavor = "current_thread")]
async fn writes_waiting_for_a_round_share_one_entry_and_each_gets_its_own_answer() {
    use crate::cluster::quorum::group::tests::config;
    use crate::cluster::quorum::wire::tests::{applied, leader, msg, three_nodes_with};
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes_with(dir.path(), &[1], config()).await;
    let at = leader(&nodes, &[0, 1, 2], 1).await;
    let rounds = nodes[at].groups.rounds(1).unwrap();
    let to = ConsumerKey {
        node: at as u64 + 1,
        consumer: 1,
    };
    let setup = rounds
        .write(combine(vec![
            Command::Consume {
                consumer: to,
                credit: 40,
                origin: None,
            },
            Command::Enqueue((1..=40).map(|i| msg(0, i)).collect()),
        ]))
        .await
        .unwrap();
    assert_eq!(setup.enqueued.len(), 40);
    let raft = nodes[at].groups.get(1).unwrap();
    let index = || raft.metrics().borrow().last_log_index.unwrap();
    let before = index();
    // 40 settlements, each its own write as a client's frames make them (acks out of
    // order, a requeue, a reject), and publishes of three writers between them.
    let mut writes = Vec::new();
    for id in (1..=40u64).rev() {
        let how = match id {
            7 => Settle::Requeue,
            13 => Settle::Reject,
            _ => Settle::Ack,
        };
        writes.push(rounds.write(settle(&[id], how)));
        if id % 15 == 0 {
            let publish = Command::Enqueue(vec![msg(1, id), msg(1, id + 1)]);
            writes.push(rounds.write(crate::cluster::quorum::group::stamped(publish)));
        }
    }
    let answers = futures_util::future::join_all(writes).await;
    assert_eq!(
        index(),
        before + 1,
        "one entry for {} writes",
        answers.len()
    );
    let ids: Vec<Vec<Option<u64>>> = answers
        .into_iter()
        .map(|a| a.unwrap().enqueued)
        .filter(|e| !e.is_empty())
        .collect();
    // Each publish write is told its own ids, in order.
    assert_eq!(ids, [vec![Some(41), Some(42)], vec![Some(43), Some(44)],]);
    for i in 0..3 {
        applied(&nodes, i, 1, before + 1).await;
        let sm = &nodes[i].machines[&1];
        // Every member: 7 back (requeued) and checked out again at once to the
        // consumer (its credit freed), with the four new ones; the rest settled.
        let held = sm.read(|q| {
            let mut h: Vec<u64> = (1..=44).filter(|id| q.holder(*id).is_some()).collect();
            h.sort_unstable();
            (h, q.ready_len())
        });
        assert_eq!(held, (vec![7, 41, 42, 43, 44], 0), "member {i}");
    }
}

/// A group whose leader is not voted out while a loaded machine appends and fsyncs
/// hundreds of MiB (a debug build).
fn patient() -> std::sync::Arc<openraft::Config> {
    std::sync::Arc::new(
        openraft::Config {
            cluster_name: "q".into(),
            election_timeout_min: 3_000,
            election_timeout_max: 6_000,
            heartbeat_interval: 500,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    )
}

/// A message a little over 1 MiB: 256 of them (`MAX_PARTS` writes) are more than a
/// cluster frame takes (`rpc::MAX_FRAME`, 256 MiB).
fn large() -> std::sync::Arc<Message> {
    std::sync::Arc::new(Message::new("", "q", vec![7u8; (1 << 20) + 4096]))
}

/// Waits until `done` holds, within a deadline generous for hundreds of MiB on a
/// loaded machine; `what` says what was seen instead.
async fn within_90s(mut done: impl FnMut() -> Result<(), String>) {
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let Err(seen) = done() else { return };
        assert!(tokio::time::Instant::now() < end, "{seen}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Writes that each fit a cluster frame are not merged into an entry that does not: a
/// round of 256 writes of 1 MiB (over `rpc::MAX_FRAME`) could be sent to no follower,
/// so it never committed, and every write behind it waited in vain (whatever the
/// writes are answered: a write's 10 s bound may pass on a loaded machine first).
#[tokio::test(flavor = "current_thread")]
async fn writes_too_large_together_for_one_entry_are_written_in_several() {
    use crate::cluster::quorum::wire::tests::{leader, three_nodes_with};
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes_with(dir.path(), &[1], patient()).await;
    let at = leader(&nodes, &[0, 1, 2], 1).await;
    let rounds = nodes[at].groups.rounds(1).unwrap();
    let big = large();
    // Queued before the task runs (one thread): one round of MAX_PARTS on main.
    let writes: Vec<_> = (0..MAX_PARTS + 4)
        .map(|_| rounds.write(Command::Enqueue(vec![StoredMessage::from(big.clone())])))
        .collect();
    drop(writes);
    within_90s(|| {
        let held: Vec<usize> = nodes
            .iter()
            .map(|node| node.machines[&1].read(|q| q.ready_len()))
            .collect();
        match held.iter().all(|h| *h > 0) {
            true => Ok(()),
            false => Err(format!("ready on each member: {held:?}: nothing committed")),
        }
    })
    .await;
}

/// A publisher's batch is bounded the same way: 300 publishes of 1 MiB waiting for its
/// next batch made one write, one entry of 300 MiB that never committed (all nacked
/// after 10 s, the group wedged behind it). The leader's log tells the batches apart
/// whatever the publishes were answered.
#[tokio::test(flavor = "current_thread")]
async fn publishes_too_large_together_for_one_entry_are_batched_in_several() {
    use crate::cluster::quorum::publisher::Publisher;
    use crate::cluster::quorum::wire::tests::{leader, three_nodes_with};
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes_with(dir.path(), &[1], patient()).await;
    let at = leader(&nodes, &[0, 1, 2], 1).await;
    let raft = nodes[at].groups.get(1).unwrap();
    let index = || raft.metrics().borrow().last_log_index.unwrap_or(0);
    let before = index();
    let publisher = Publisher::start(1, nodes[at].groups.clone());
    let big = large();
    // Queued before the batcher runs (one thread): one batch on main.
    let confirms: Vec<_> = (0..300)
        .map(|_| publisher.publish(StoredMessage::from(big.clone())))
        .collect();
    drop(confirms);
    within_90s(|| match index() - before {
        n if n >= 3 => Ok(()),
        n => Err(format!("{n} entries for 300 publishes of 1 MiB")),
    })
    .await;
}
