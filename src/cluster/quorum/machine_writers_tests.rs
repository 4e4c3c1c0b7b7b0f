//! Entries numbered by their writer ([`Command::EnqueueFrom`]): one applied twice is
//! enqueued once and answered alike; newer entries, other writers, old entries and
//! snapshots (kept, and read from before the numbers) as `machine/writers.rs` says.

use super::*;
use crate::cluster::quorum::machine::writers::{IDLE_MS, KEEP_ANSWERS, MAX_WRITERS};

fn from(writer: u64, seq: u64, bodies: &[&str]) -> Command<M> {
    Command::EnqueueFrom {
        writer,
        seq,
        messages: bodies.iter().map(|b| m(b)).collect(),
    }
}

fn bodies(q: &QueueMachine<M>) -> Vec<String> {
    ready(q).into_iter().map(|(b, _)| b).collect()
}

#[test]
fn an_entry_applied_twice_is_enqueued_once_and_both_are_answered_alike() {
    let mut q = QueueMachine::new(Limits::default());
    let first = q.apply(from(7, 1, &["a", "b"]));
    assert_eq!(first.enqueued, [Some(1), Some(2)]);
    let again = q.apply(from(7, 1, &["a", "b"]));
    assert_eq!(
        again.enqueued, first.enqueued,
        "the retry is confirmed as the first"
    );
    assert_eq!(bodies(&q), ["a", "b"], "and enqueued once");
    // The next entry of the writer goes on from there.
    assert_eq!(q.apply(from(7, 2, &["c"])).enqueued, [Some(3)]);
    assert_eq!(bodies(&q), ["a", "b", "c"]);
    assert_eq!(q.writer_last(7), Some(2));
}

#[test]
fn a_retry_answers_the_refusals_of_the_first_application() {
    let mut q = QueueMachine::new(Limits {
        max_length: Some(1),
        reject_publish: true,
        ..Limits::default()
    });
    let first = q.apply(from(7, 1, &["a", "b"]));
    assert_eq!(first.enqueued, [Some(1), None]);
    // Room again: the retry must not turn the refusal into a confirm.
    q.apply(Command::Deliver {
        to: C1,
        ids: vec![1],
    });
    q.apply(settle(&[1], Settle::Ack));
    assert_eq!(q.apply(from(7, 1, &["a", "b"])).enqueued, [Some(1), None]);
    assert!(bodies(&q).is_empty(), "nothing enqueued by the retry");
}

#[test]
fn older_entries_of_a_writer_are_skipped_and_a_gap_does_not_hold_up_newer_ones() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(from(7, 1, &["a"]));
    q.apply(from(7, 2, &["b"]));
    // Two in flight came back refused although both committed: written again in
    // order, each answered as it was.
    assert_eq!(q.apply(from(7, 1, &["a"])).enqueued, [Some(1)]);
    assert_eq!(q.apply(from(7, 2, &["b"])).enqueued, [Some(2)]);
    // An entry nacked to its writer (never applied) and a later one committed: the
    // later applies at once...
    assert_eq!(q.apply(from(7, 4, &["d"])).enqueued, [Some(3)]);
    // ...and a late try of the nacked one stays out (as its nack said), answered
    // as refused; so does a try older than the answers kept.
    assert_eq!(q.apply(from(7, 3, &["c"])).enqueued, [None]);
    for s in 5..5 + KEEP_ANSWERS as u64 {
        q.apply(from(7, s, &["e"]));
    }
    assert_eq!(q.apply(from(7, 4, &["d"])).enqueued, [None]);
    assert_eq!(bodies(&q), ["a", "b", "d", "e", "e"]);
}

#[test]
fn a_new_writer_numbering_from_one_again_is_enqueued() {
    // A node restarted (or a queue's publisher started again) draws a new writer id.
    let mut q = QueueMachine::new(Limits::default());
    for s in 1..=5 {
        q.apply(from(7, s, &["old"]));
    }
    assert_eq!(q.apply(from(8, 1, &["new"])).enqueued, [Some(6)]);
    assert_eq!(q.apply(from(8, 1, &["new"])).enqueued, [Some(6)]);
    assert_eq!(bodies(&q).iter().filter(|b| *b == "new").count(), 1);
    assert_eq!((q.writer_last(7), q.writer_last(8)), (Some(5), Some(1)));
}

#[test]
fn entries_without_a_number_are_not_deduplicated() {
    // What logs written before the numbers hold: applied as they were.
    let mut q = QueueMachine::new(Limits::default());
    q.apply(batch(&["a"]));
    q.apply(batch(&["a"]));
    assert_eq!(bodies(&q), ["a", "a"]);
}

#[test]
fn a_numbered_entry_in_a_batch_answers_in_its_place() {
    // As the leader's commit round writes it: a clock, then publishes of two writers,
    // one a retry.
    let mut q = QueueMachine::new(Limits::default());
    q.apply(from(1, 1, &["a"]));
    let a = q.apply(Command::Batch(vec![
        Command::Clock { now_ms: 10 },
        from(2, 1, &["x", "y"]),
        from(1, 1, &["a"]),
        batch(&["z"]),
    ]));
    assert_eq!(a.enqueued, [Some(2), Some(3), Some(1), Some(4)]);
    assert_eq!(bodies(&q), ["a", "x", "y", "z"]);
}

#[test]
fn a_snapshot_keeps_the_writers_and_one_from_before_them_decodes_with_none() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(from(7, 1, &["a"]));
    let bytes = rmp_serde::to_vec(&q).unwrap();
    let mut restored: QueueMachine<M> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(restored, q);
    assert_eq!(restored.apply(from(7, 1, &["a"])).enqueued, [Some(1)]);
    assert_eq!(
        bodies(&restored),
        ["a"],
        "the retry skipped after an install"
    );

    // The machine as written before the numbers: its array without the last field
    // (an empty map, one byte).
    let empty = rmp_serde::to_vec(&QueueMachine::<M>::new(Limits::default())).unwrap();
    let (&[0xdc, hi, lo], rest) = empty.split_first_chunk::<3>().unwrap() else {
        panic!("a machine is an array16: {empty:?}");
    };
    assert_eq!(rest.last(), Some(&0x80), "the writers last, an empty map");
    let fields = u16::from_be_bytes([hi, lo]) - 1;
    let mut old = vec![0xdc];
    old.extend_from_slice(&fields.to_be_bytes());
    old.extend_from_slice(&rest[..rest.len() - 1]);
    let mut q: QueueMachine<M> = rmp_serde::from_slice(&old).unwrap();
    assert_eq!(q.writer_last(7), None);
    q.apply(from(7, 1, &["a"]));
    q.apply(from(7, 1, &["a"]));
    assert_eq!(bodies(&q), ["a"]);
}

#[test]
fn idle_writers_are_forgotten_when_a_new_one_comes_and_their_count_is_bounded() {
    let mut q = QueueMachine::new(Limits::default());
    q.apply(Command::Clock { now_ms: 1_000 });
    q.apply(from(1, 1, &["a"]));
    q.apply(Command::Clock {
        now_ms: 1_000 + IDLE_MS,
    });
    q.apply(from(2, 1, &["b"]));
    assert_eq!(q.writer_last(1), Some(1), "idle up to the limit: kept");
    q.apply(Command::Clock {
        now_ms: 2_000 + IDLE_MS,
    });
    q.apply(from(3, 1, &["c"]));
    assert_eq!(q.writer_last(1), None, "idle past the limit: forgotten");
    assert_eq!(q.writer_last(2), Some(1));
    // Past the most writers, the longest idle goes first.
    for w in 10..10 + MAX_WRITERS as u64 {
        q.apply(Command::Clock {
            now_ms: 3_000 + IDLE_MS + w,
        });
        q.apply(from(w, 1, &["d"]));
    }
    assert_eq!((q.writer_last(2), q.writer_last(3)), (None, None));
    assert_eq!(q.writer_last(10 + MAX_WRITERS as u64 - 1), Some(1));
    assert_eq!(q.writers_len(), MAX_WRITERS);
}
