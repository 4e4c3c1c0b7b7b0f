//! Consumer groups without actix: one active member per group, chosen by partition
//! index; a handover resumes from the outgoing member's first unacked offset.

use super::super::args::{StartAt, StreamConfig};
use super::super::*;
use crate::message::{FieldTable, FieldValue, Message};

fn partition(p: Option<u32>) -> StreamState<()> {
    StreamState::new(StreamInit {
        log: StreamLog::memory(1 << 20),
        config: StreamConfig {
            max_bytes: None,
            max_age_ms: None,
            max_segment_bytes: 1 << 20,
        },
        partition: p,
    })
}

fn publish(s: &mut StreamState<()>, n: usize) {
    let ms = (0..n)
        .map(|i| Arc::new(Message::new("", "s", format!("m{i}"))))
        .collect();
    s.append(ms).wait().unwrap();
}

/// Member of group `g` owned by `owner`, prefetch 3, from `first` when nothing stored.
fn join(s: &mut StreamState<()>, owner: u64) -> u64 {
    let (id, _) = s
        .add_consumer(NewStreamConsumer {
            tag: Arc::from(format!("c{owner}").as_str()),
            owner: OwnerId(owner),
            handle: (),
            prefetch: 3,
            window: 100,
            start: Some(StartAt::First),
            name: Some("g".into()),
            accepts_stored: false,
            run_bytes: 0,
        })
        .unwrap();
    s.join_group(id);
    id
}

fn active(s: &StreamState<()>) -> Vec<u64> {
    s.consumers()
        .iter()
        .filter(|c| c.is_active())
        .map(|c| c.owner.0)
        .collect()
}

/// (owner, offset, redelivered) of each delivery.
fn deliver(s: &mut StreamState<()>) -> Vec<(u64, i64, bool, u64)> {
    let out = s.dispatch(100);
    let mut v = Vec::new();
    for (i, ds) in out {
        let owner = s.consumer_at(i).owner.0;
        for d in ds {
            let Some(FieldValue::Int(o)) = d.message.header("x-stream-offset") else {
                panic!("no offset");
            };
            v.push((owner, *o, d.redelivered, d.id));
        }
    }
    v
}

#[test]
fn the_member_at_partition_modulo_members_is_the_only_active_one() {
    for (p, want) in [(0, 1), (1, 2), (2, 3), (4, 2)] {
        let mut s = partition(Some(p));
        // Arrival order does not matter: members are ordered by owner.
        join(&mut s, 3);
        join(&mut s, 1);
        join(&mut s, 2);
        assert_eq!(active(&s), vec![want], "partition {p}");
        publish(&mut s, 2);
        let d = deliver(&mut s);
        assert!(d.iter().all(|(o, ..)| *o == want), "{d:?}");
    }
    // Not a partition: the first member.
    let mut s = partition(None);
    join(&mut s, 2);
    join(&mut s, 1);
    assert_eq!(active(&s), vec![1]);
}

#[test]
fn a_joining_member_takes_over_from_the_first_unacked_offset_redelivered() {
    // Partition 1: alone, owner 1 holds it; with owner 2, index 1 % 2 = owner 2.
    let mut s = partition(Some(1));
    join(&mut s, 1);
    publish(&mut s, 6);
    let d = deliver(&mut s);
    assert_eq!(d.iter().map(|x| x.1).collect::<Vec<_>>(), vec![0, 1, 2]);
    // Acks 0 and 2, not 1: the group's offset is 1 (the first unacked).
    s.settle(OwnerId(1), &[d[0].3, d[2].3], Settlement::Ack);
    assert_eq!(s.stored_offset("g"), Some(1));
    join(&mut s, 2);
    assert_eq!(active(&s), vec![2]);
    let d2 = deliver(&mut s);
    assert_eq!(
        d2.iter().map(|x| (x.0, x.1, x.2)).collect::<Vec<_>>(),
        vec![(2, 1, true), (2, 2, true), (2, 3, false)]
    );
    // The outgoing member's late ack is accepted and does not move the group's offset.
    assert!(s.settle(OwnerId(1), &[d[1].3], Settlement::Ack).is_empty());
    assert_eq!(s.stored_offset("g"), Some(1));
    s.settle(OwnerId(2), &[d2[0].3, d2[1].3, d2[2].3], Settlement::Ack);
    assert_eq!(s.stored_offset("g"), Some(4));
}

#[test]
fn a_leaving_holder_hands_over_and_the_last_one_leaves_the_offset_stored() {
    let mut s = partition(Some(0));
    join(&mut s, 1);
    join(&mut s, 2);
    assert_eq!(active(&s), vec![1]);
    publish(&mut s, 4);
    let d = deliver(&mut s);
    s.settle(OwnerId(1), &[d[0].3], Settlement::Ack);
    // Owner 1's connection goes with 1 and 2 unacked: owner 2 resumes at 1.
    assert_eq!(s.release(OwnerId(1)), 1);
    assert_eq!(active(&s), vec![2]);
    let d2 = deliver(&mut s);
    assert_eq!(d2.iter().map(|x| x.1).collect::<Vec<_>>(), vec![1, 2, 3]);
    s.settle(OwnerId(2), &[d2[0].3], Settlement::Ack);
    assert!(s.cancel(OwnerId(2), "c2"));
    assert!(active(&s).is_empty());
    assert_eq!(s.stored_offset("g"), Some(2));
    // A later member resumes from the stored offset, not from its own start.
    join(&mut s, 3);
    assert_eq!(deliver(&mut s)[0].1, 2);
}

#[test]
fn group_arguments_are_checked() {
    let mut args = FieldTable::new();
    assert!(!group::single_active(&args, None, "q").unwrap());
    args.insert(group::SINGLE_ACTIVE.into(), true.into());
    let e = group::single_active(&args, None, "q").unwrap_err();
    assert!(e.to_string().contains("needs a consumer name"), "{e}");
    assert!(group::single_active(&args, Some("g"), "q").unwrap());
    args.insert(group::SINGLE_ACTIVE.into(), "yes".into());
    assert!(group::single_active(&args, Some("g"), "q").is_err());
    args.insert(group::SINGLE_ACTIVE.into(), true.into());
    args.insert(group::SUPER_STREAM.into(), 3.into());
    assert!(group::single_active(&args, Some("g"), "q").is_err());
}
