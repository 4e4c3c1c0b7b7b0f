//! The [`MessageStore`] contract: one body per behaviour, run against every store (the
//! memory store, the disk store, and the disk store with tiny segments so that rolls
//! and reclamation happen inside every case).
//!
//! Each case checks what `recover` answers both on the running store and after a
//! restart (a no-op for the memory store; close and reopen for the disk store).

use super::harness::{body_of, publish, q, Harness};
use crate::message::{FieldValue, Message, Properties};
use crate::storage::{MessageStore, QueueId, Record, Recovered};
use bytes::Bytes;
use std::sync::Arc;

/// (id, body, redelivered) of a queue's recovered messages.
fn summary(r: &Recovered, queue: &QueueId) -> Vec<(u64, String, bool)> {
    r.get(queue)
        .map(|rq| {
            rq.messages
                .iter()
                .map(|m| (m.id, body_of(&m.message), m.redelivered))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks `queue` before and after a restart.
fn check<H: Harness>(h: &mut H, queue: &QueueId, want: &[(u64, &str, bool)]) {
    let want: Vec<(u64, String, bool)> = want
        .iter()
        .map(|(id, b, r)| (*id, b.to_string(), *r))
        .collect();
    let live = h.store().recover().unwrap();
    assert_eq!(summary(&live, queue), want, "running store, {queue}");
    h.restart();
    let after = h.store().recover().unwrap();
    assert_eq!(summary(&after, queue), want, "after restart, {queue}");
}

fn append<H: Harness>(h: &H, batch: Vec<Record>, sync: bool) {
    h.store().append(batch, sync).wait().expect("append stored");
}

pub fn published_messages_recover_in_id_order<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    append(
        h,
        vec![publish(&queue, 1, "a"), publish(&queue, 2, "b")],
        true,
    );
    append(h, vec![publish(&queue, 3, "c")], false);
    append(
        h,
        vec![publish(&queue, 4, "d"), publish(&queue, 5, "e")],
        true,
    );
    check(
        h,
        &queue,
        &[
            (1, "a", false),
            (2, "b", false),
            (3, "c", false),
            (4, "d", false),
            (5, "e", false),
        ],
    );
    assert_eq!(h.store().recover().unwrap()[&queue].next_id, 6);
    assert!(h.store().error().is_none());
}

pub fn acked_messages_do_not_come_back<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    let batch = (1..=5)
        .map(|i| publish(&queue, i, &format!("m{i}")))
        .collect();
    append(h, batch, true);
    let ack = |ids: Vec<u64>| Record::Ack {
        queue: queue.clone(),
        ids,
    };
    append(h, vec![ack(vec![2, 4])], false);
    append(h, vec![ack(vec![99, 2])], true);
    check(
        h,
        &queue,
        &[(1, "m1", false), (3, "m3", false), (5, "m5", false)],
    );
    append(h, vec![ack(vec![1, 3, 5])], true);
    check(h, &queue, &[]);
}

pub fn the_delivered_watermark_marks_messages_redelivered<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    let batch = (1..=5)
        .map(|i| publish(&queue, i, &format!("m{i}")))
        .collect();
    append(h, batch, true);
    let delivered = |up_to| Record::Delivered {
        queue: queue.clone(),
        up_to,
    };
    append(h, vec![delivered(3)], false);
    append(h, vec![delivered(2)], false);
    check(
        h,
        &queue,
        &[
            (1, "m1", true),
            (2, "m2", true),
            (3, "m3", true),
            (4, "m4", false),
            (5, "m5", false),
        ],
    );
}

pub fn a_purge_keeps_only_the_unacked_deliveries<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    let batch = (1..=5)
        .map(|i| publish(&queue, i, &format!("m{i}")))
        .collect();
    append(h, batch, true);
    append(
        h,
        vec![
            Record::Delivered {
                queue: queue.clone(),
                up_to: 2,
            },
            Record::Purge {
                queue: queue.clone(),
                below: 6,
                except: vec![2],
            },
        ],
        true,
    );
    append(h, vec![publish(&queue, 6, "m6")], true);
    check(h, &queue, &[(2, "m2", true), (6, "m6", false)]);
    assert_eq!(h.store().recover().unwrap()[&queue].next_id, 7);
}

pub fn a_deleted_queue_is_gone_and_its_name_can_start_over<H: Harness>(h: &mut H) {
    let (jobs, other) = (q("jobs"), q("other"));
    append(
        h,
        vec![
            publish(&jobs, 1, "old1"),
            publish(&other, 1, "x"),
            publish(&jobs, 2, "old2"),
        ],
        true,
    );
    append(
        h,
        vec![Record::DeleteQueue {
            queue: jobs.clone(),
        }],
        true,
    );
    check(h, &jobs, &[]);
    check(h, &other, &[(1, "x", false)]);
    append(h, vec![publish(&jobs, 1, "new1")], true);
    check(h, &jobs, &[(1, "new1", false)]);
}

pub fn queues_with_the_same_name_in_two_vhosts_are_apart<H: Harness>(h: &mut H) {
    let a = QueueId::new("/", "jobs");
    let b = QueueId::new("tenant", "jobs");
    append(h, vec![publish(&a, 1, "a1"), publish(&b, 1, "b1")], true);
    append(
        h,
        vec![Record::Ack {
            queue: a.clone(),
            ids: vec![1],
        }],
        true,
    );
    check(h, &a, &[]);
    check(h, &b, &[(1, "b1", false)]);
}

pub fn an_empty_store_recovers_nothing<H: Harness>(h: &mut H) {
    assert!(h.store().recover().unwrap().is_empty());
    h.store().flush().wait().unwrap();
    h.restart();
    assert!(h.store().recover().unwrap().is_empty());
}

pub fn message_content_round_trips_exactly<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    let body: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mut props = Properties {
        content_type: Some("application/octet-stream".into()),
        delivery_mode: Some(2),
        priority: Some(3),
        correlation_id: Some("c-1".into()),
        timestamp: Some(1_700_000_000),
        ..Default::default()
    };
    props.kind = Some("blob".into());
    let m = Message::new("uploads", "blob.new", Bytes::from(body))
        .with_properties(props)
        .with_header("size", FieldValue::Int(3000))
        .with_header("raw", FieldValue::Bytes(Bytes::from_static(b"\x00\xff")));
    let empty = Message::new("", "jobs", Bytes::new());
    append(
        h,
        vec![
            Record::Publish {
                queue: queue.clone(),
                id: 1,
                message: Arc::new(m.clone()),
            },
            Record::Publish {
                queue: queue.clone(),
                id: 2,
                message: Arc::new(empty.clone()),
            },
        ],
        true,
    );
    for _ in 0..2 {
        let r = h.store().recover().unwrap();
        let got = &r[&queue].messages;
        assert_eq!(*got[0].message, m);
        assert_eq!(*got[1].message, empty);
        h.restart();
    }
}

pub fn ids_are_never_reused_after_everything_is_acked<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    let batch = (1..=3).map(|i| publish(&queue, i, "m")).collect();
    append(h, batch, true);
    append(
        h,
        vec![Record::Ack {
            queue: queue.clone(),
            ids: vec![1, 2, 3],
        }],
        true,
    );
    h.restart();
    let r = h.store().recover().unwrap();
    assert!(r.get(&queue).is_none_or(|rq| rq.messages.is_empty()));
    assert!(r.get(&queue).is_none_or(|rq| rq.next_id >= 4));
}

pub fn many_appends_all_complete_and_keep_their_order<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    let completions: Vec<_> = (1..=300)
        .map(|i| {
            h.store()
                .append(vec![publish(&queue, i, &format!("m{i}"))], i % 3 == 0)
        })
        .collect();
    for c in completions {
        c.wait().unwrap();
    }
    let acks: Vec<u64> = (1..=300).filter(|i| i % 2 == 0).collect();
    append(
        h,
        vec![Record::Ack {
            queue: queue.clone(),
            ids: acks,
        }],
        true,
    );
    h.store().flush().wait().unwrap();
    h.restart();
    let r = h.store().recover().unwrap();
    let ids: Vec<u64> = r[&queue].messages.iter().map(|m| m.id).collect();
    let want: Vec<u64> = (1..=300).filter(|i| i % 2 == 1).collect();
    assert_eq!(ids, want);
    assert!(r[&queue]
        .messages
        .iter()
        .all(|m| body_of(&m.message) == format!("m{}", m.id)));
}

pub fn reads_answer_live_messages_by_id_even_after_compaction_and_restart<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    let body = |i: u64| format!("m{i}-{}", "x".repeat(100));
    // Not waited for: a read sees every append queued before it.
    for i in 1..=300 {
        drop(h.store().append(vec![publish(&queue, i, &body(i))], false));
    }
    let read = |h: &H, ids: Vec<u64>| -> Vec<(u64, String)> {
        h.store()
            .read(&queue, ids)
            .wait()
            .unwrap()
            .into_iter()
            .map(|(id, m)| (id, body_of(&m)))
            .collect()
    };
    assert_eq!(
        read(h, vec![7, 3, 300, 301]),
        vec![(7, body(7)), (3, body(3)), (300, body(300))],
        "in the order asked, unknown ids left out"
    );
    // Three of every four acked: with small segments the survivors are compacted
    // (moved), and the reads must follow them.
    let acks: Vec<u64> = (1..=300).filter(|i| i % 4 != 0).collect();
    append(
        h,
        vec![Record::Ack {
            queue: queue.clone(),
            ids: acks,
        }],
        true,
    );
    let live: Vec<u64> = (1..=300).filter(|i| i % 4 == 0).collect();
    let want: Vec<(u64, String)> = live.iter().map(|i| (*i, body(*i))).collect();
    assert_eq!(read(h, (1..=300).collect()), want);
    h.restart();
    assert_eq!(read(h, (1..=300).collect()), want, "after a restart");
    assert!(read(h, vec![1, 2, 3]).is_empty(), "acked ids are not live");
}

/// The delivery counts of a queue's recovered messages, by id (paged ones included).
fn deliveries(r: &Recovered, queue: &QueueId) -> Vec<(u64, u32)> {
    let Some(rq) = r.get(queue) else {
        return Vec::new();
    };
    let mut v: Vec<(u64, u32)> = rq.messages.iter().map(|m| (m.id, m.deliveries)).collect();
    v.extend(rq.paged.iter().map(|p| (p.id, p.deliveries)));
    v
}

pub fn delivery_counts_survive_restarts_rolls_and_reclamation<H: Harness>(h: &mut H) {
    let queue = q("jobs");
    let batch = (1..=4)
        .map(|i| publish(&queue, i, &format!("m{i}")))
        .collect();
    append(h, batch, true);
    let counts = |counts: Vec<(u64, u32)>| Record::DeliveryCounts {
        queue: queue.clone(),
        counts,
    };
    append(
        h,
        vec![
            Record::Delivered {
                queue: queue.clone(),
                up_to: 3,
            },
            counts(vec![(1, 3), (2, 2), (3, 2)]),
            Record::Ack {
                queue: queue.clone(),
                ids: vec![3],
            },
        ],
        true,
    );
    // 1 and 2 counted, 3 acked, 4 never delivered.
    let want = vec![(1, 3), (2, 2), (4, 0)];
    assert_eq!(deliveries(&h.store().recover().unwrap(), &queue), want);
    // Churn on another queue: with tiny segments the log rolls many times, the segment
    // holding the counts is reclaimed and the one holding 1, 2 and 4 compacted.
    let other = q("churn");
    for i in 1..=200 {
        let body = format!("c{i}-{}", "x".repeat(100));
        append(
            h,
            vec![
                publish(&other, i, &body),
                Record::Ack {
                    queue: other.clone(),
                    ids: vec![i],
                },
            ],
            i % 50 == 0,
        );
    }
    append(h, vec![counts(vec![(2, 4)])], true);
    let want = vec![(1, 3), (2, 4), (4, 0)];
    assert_eq!(deliveries(&h.store().recover().unwrap(), &queue), want);
    h.restart();
    assert_eq!(
        deliveries(&h.store().recover().unwrap(), &queue),
        want,
        "after a restart"
    );
}
