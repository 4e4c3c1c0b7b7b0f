//! The append frame built from kept encodings is the frame encoded whole, byte for
//! byte, and a received frame's entries are found again where they were decoded from.

use super::*;
use crate::cluster::quorum::group::StoredMessage;
use crate::cluster::quorum::machine::Command;
use crate::cluster::quorum::wire::GroupRpc;
use crate::cluster::rpc::{encode_frame, Rpc};
use crate::cluster::NodeId;
use crate::message::{FieldValue, Message};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use std::collections::{BTreeMap, BTreeSet};

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 2), index)
}

fn publish(index: u64, n: usize, size: usize) -> Entry<QueueTypes> {
    let messages = (0..n)
        .map(|i| {
            let m = Message::new("orders", "order.created", vec![i as u8; size]);
            let m = if i % 3 == 0 {
                m.persistent().with_header("n", FieldValue::Int(i as i64))
            } else {
                m
            };
            StoredMessage::from(&m)
        })
        .collect();
    Entry {
        log_id: log_id(7, index),
        payload: EntryPayload::Normal(Command::Enqueue(messages)),
    }
}

/// A request of every kind of entry: publishes small and large, a blank one, a
/// membership; over 16 of them (a longer array header).
fn request() -> AppendEntriesRequest<QueueTypes> {
    let mut entries = vec![Entry {
        log_id: log_id(7, 100),
        payload: EntryPayload::Blank,
    }];
    let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
        .map(|i| (i, BasicNode::new(format!("127.0.0.1:{}", 7230 + i))))
        .collect();
    entries.push(Entry {
        log_id: log_id(7, 101),
        payload: EntryPayload::Membership(Membership::new(
            vec![nodes.keys().copied().collect::<BTreeSet<_>>()],
            nodes,
        )),
    });
    for i in 0..20 {
        entries.push(publish(
            102 + i,
            1 + i as usize * 7,
            [0, 16, 1024, 70_000][i as usize % 4],
        ));
    }
    AppendEntriesRequest {
        vote: Vote::new_committed(7, 2),
        prev_log_id: Some(log_id(6, 99)),
        entries,
        leader_commit: Some(log_id(7, 98)),
    }
}

/// The frame as every node encoded it before: the whole `(id, Rpc)`.
fn whole(id: u64, group: GroupId, req: &AppendEntriesRequest<QueueTypes>) -> Vec<u8> {
    let rpc = Rpc::Group {
        group,
        rpc: GroupRpc::Append(req.clone()),
    };
    encode_frame(id, &rpc).unwrap()
}

fn kept(req: &AppendEntriesRequest<QueueTypes>, which: impl Fn(usize) -> bool) -> Encoded {
    let e = Encoded::new();
    for (i, entry) in req.entries.iter().enumerate() {
        if which(i) {
            e.keep(entry.log_id, rmp_serde::to_vec(entry).unwrap().into());
        }
    }
    e
}

#[test]
fn an_append_frame_from_kept_entries_is_the_frame_encoded_whole() {
    let req = request();
    for (id, group) in [(1, 7), (300, 70_000), (u64::MAX, 5_000_000_000)] {
        let expected = whole(id, group, &req);
        // Nothing kept, everything kept, every other one.
        assert_eq!(encode(id, group, &req, None).unwrap(), expected);
        let all = kept(&req, |_| true);
        assert_eq!(encode(id, group, &req, Some(&all)).unwrap(), expected);
        let some = kept(&req, |i| i % 2 == 1);
        assert_eq!(encode(id, group, &req, Some(&some)).unwrap(), expected);
    }
    // A heartbeat (no entries, nothing before or committed).
    let heartbeat = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    assert_eq!(
        encode(3, 4, &heartbeat, None).unwrap(),
        whole(3, 4, &heartbeat)
    );
}

#[test]
fn an_entry_kept_under_another_log_id_is_not_copied_in() {
    let req = request();
    let e = Encoded::new();
    // Index 105's entry of another leader: not the one sent.
    let other = publish(105, 1, 3);
    e.keep(log_id(8, 105), rmp_serde::to_vec(&other).unwrap().into());
    assert_eq!(encode(9, 1, &req, Some(&e)).unwrap(), whole(9, 1, &req));
}

#[test]
fn a_received_appends_entries_are_found_where_they_were_decoded_from() {
    let req = request();
    let frame = whole(12, 34, &req);
    let body = &frame[4..];
    let at = entries(body).expect("an append");
    assert_eq!(at.len(), req.entries.len());
    for (range, e) in at.into_iter().zip(&req.entries) {
        assert_eq!(body[range].to_vec(), rmp_serde::to_vec(e).unwrap());
    }
    let heartbeat = AppendEntriesRequest::<QueueTypes> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    assert_eq!(entries(&whole(1, 2, &heartbeat)[4..]), Some(vec![]));
}

#[test]
fn another_frame_or_a_damaged_one_has_no_entries_to_find() {
    let vote = Rpc::Group {
        group: 3,
        rpc: GroupRpc::Vote(openraft::raft::VoteRequest::new(Vote::new(2, 1), None)),
    };
    assert_eq!(entries(&encode_frame(1, &vote).unwrap()[4..]), None);
    assert_eq!(entries(&encode_frame(1, &Rpc::Local).unwrap()[4..]), None);
    // Cut anywhere before the last entry's end: no entry found past it, no panic.
    let frame = whole(12, 34, &request());
    let body = &frame[4..];
    let end = entries(body).unwrap().last().unwrap().end;
    for cut in [0, 1, 5, 20, end / 2, end - 1] {
        assert_eq!(entries(&body[..cut]), None, "cut at {cut}");
    }
    // Nested past the depth walked: given up on, not followed.
    let mut deep = vec![0x92, 0x01, 0x81, 0xa5];
    deep.extend_from_slice(b"Group");
    deep.extend_from_slice(&[0x92, 0x01, 0x81, 0xa6]);
    deep.extend_from_slice(b"Append");
    deep.extend_from_slice(&[0x94, 0xc0, 0xc0, 0x91]);
    deep.extend(std::iter::repeat_n(0x91, 10_000));
    deep.push(0xc0);
    deep.push(0xc0);
    assert_eq!(entries(&deep), None);
    // A map of four billion pairs in a few bytes: the walk ends at the frame's end.
    let mut huge = deep[..deep.len() - 10_003].to_vec();
    huge.extend_from_slice(&[0x91, 0xdf, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(entries(&huge), None);
}
