//! StreamState without actix: reading does not remove, credit bounds deliveries, acks
//! of named consumers advance their stored offset, retention moves consumers on.

use super::*;
use crate::broker::messages::Delivery;
use crate::message::{FieldValue, Message};

fn state(segment: u64, max_bytes: Option<u64>) -> StreamState<()> {
    StreamState::new(StreamInit {
        log: StreamLog::memory(segment),
        config: StreamConfig {
            max_bytes,
            max_age_ms: None,
            max_segment_bytes: segment,
        },
        partition: None,
    })
}

pub(super) fn publish(s: &mut StreamState<()>, n: usize) {
    let ms = (0..n)
        .map(|i| Arc::new(Message::new("", "s", format!("m{i}"))))
        .collect();
    s.append(ms).wait().unwrap();
}

fn consumer(owner: u64, start: Option<StartAt>, name: Option<&str>) -> NewStreamConsumer<()> {
    NewStreamConsumer {
        tag: Arc::from(format!("c{owner}").as_str()),
        owner: OwnerId(owner),
        handle: (),
        prefetch: 3,
        window: 100,
        start,
        name: name.map(str::to_string),
        accepts_stored: false,
        run_bytes: 0,
    }
}

/// The message of a delivery: decoded from its stored form when it carries one.
fn message_of(d: &Delivery) -> Arc<Message> {
    match &d.stored {
        Some(s) => {
            assert!(d.message.body.is_empty(), "the stored form is the message");
            s.message(&mut None).unwrap().clone()
        }
        None => d.message.clone(),
    }
}

pub(super) fn offsets(d: &[Delivery]) -> Vec<i64> {
    d.iter()
        .map(|d| match message_of(d).header("x-stream-offset") {
            Some(FieldValue::Int(o)) => *o,
            other => panic!("no offset header: {other:?}"),
        })
        .collect()
}

#[test]
fn every_consumer_reads_everything_within_its_prefetch() {
    let mut s = state(1 << 20, None);
    publish(&mut s, 5);
    s.add_consumer(consumer(1, Some(StartAt::First), None))
        .unwrap();
    s.add_consumer(consumer(2, Some(StartAt::Offset(3)), None))
        .unwrap();
    s.add_consumer(consumer(3, None, None)).unwrap();
    let out = s.dispatch(100);
    assert_eq!(out.len(), 2, "the `next` consumer has nothing yet");
    assert_eq!(offsets(&out[0].1), vec![0, 1, 2]);
    assert_eq!(offsets(&out[1].1), vec![3, 4]);
    // Prefetch 3 reached: nothing more until an ack.
    assert!(s.dispatch(100).iter().all(|(i, _)| *i != 0));
    let ids: Vec<u64> = out[0].1.iter().map(|d| d.id).collect();
    assert!(s.settle(OwnerId(1), &ids[..1], Settlement::Ack).is_empty());
    s.return_credit(1, 3);
    let more = s.dispatch(100);
    assert_eq!(offsets(&more[0].1), vec![3]);
    assert_eq!(s.log().len(), 5, "reading removed nothing");
    publish(&mut s, 1);
    let fresh = s.dispatch(100);
    assert!(fresh.iter().any(|(i, d)| *i == 2 && offsets(d) == vec![5]));
}

#[test]
fn a_named_consumer_resumes_after_its_highest_ack() {
    let mut s = state(1 << 20, None);
    publish(&mut s, 10);
    s.add_consumer(consumer(1, Some(StartAt::First), Some("app")))
        .unwrap();
    let out = s.dispatch(100);
    let ids: Vec<u64> = out[0].1.iter().map(|d| d.id).collect();
    s.settle(OwnerId(1), &ids[1..2], Settlement::Ack);
    s.settle(OwnerId(1), &ids[2..3], Settlement::Requeue);
    assert_eq!(s.stored_offset("app"), Some(2));
    s.release(OwnerId(1));
    let (_, start) = s.add_consumer(consumer(2, None, Some("app"))).unwrap();
    assert_eq!(start, 2);
    let (_, start) = s
        .add_consumer(consumer(3, Some(StartAt::First), Some("app")))
        .unwrap();
    assert_eq!(start, 0, "an explicit offset wins");
}

#[test]
fn a_new_name_stores_its_start_before_any_ack() {
    let mut s = state(1 << 20, None);
    publish(&mut s, 10);
    s.add_consumer(consumer(1, Some(StartAt::Offset(4)), Some("fresh")))
        .unwrap();
    assert_eq!(
        s.stored_offset("fresh"),
        Some(4),
        "a crash now resumes at 4"
    );
    s.release(OwnerId(1));
    let (_, start) = s.add_consumer(consumer(2, None, Some("fresh"))).unwrap();
    assert_eq!(start, 4, "not next (10): nothing unread is skipped");
}

#[test]
fn retention_moves_a_consumer_behind_the_first_offset_on() {
    let mut s = state(64, Some(200));
    s.add_consumer(consumer(1, Some(StartAt::First), None))
        .unwrap();
    for _ in 0..20 {
        publish(&mut s, 1);
    }
    let first = s.log().first_offset();
    assert!(first > 0);
    let out = s.dispatch(100);
    assert_eq!(offsets(&out[0].1)[0], first as i64);
}

/// A stream on disk with a tiny tail cache: consumers behind it are fed from the files.
pub(super) fn disk_state(
    dir: &std::path::Path,
    segment: u64,
    max_bytes: Option<u64>,
) -> StreamState<()> {
    let mut log = StreamLog::open(dir, segment).unwrap();
    log.set_tail_budget(1024);
    log.set_block_budget(64 * 1024);
    StreamState::new(StreamInit {
        log,
        partition: None,
        config: StreamConfig {
            max_bytes,
            max_age_ms: None,
            max_segment_bytes: segment,
        },
    })
}

/// Reads everything a consumer of `owner` is handed, acking as it goes, until `n`.
fn drain(s: &mut StreamState<()>, owner: u64, n: usize) -> Vec<i64> {
    drain_counting(s, owner, n).0
}

/// As [`drain`], with how many deliveries came as stored records.
fn drain_counting(s: &mut StreamState<()>, owner: u64, n: usize) -> (Vec<i64>, usize) {
    let mut stored = 0;
    let mut got = Vec::new();
    let mut idle = 0;
    while got.len() < n {
        let out = s.dispatch(1000);
        let reads = s.run_reads();
        let mine = out
            .iter()
            .any(|(i, _)| s.consumer_at(*i).owner == OwnerId(owner));
        if !mine && reads == 0 {
            idle += 1;
            assert!(idle < 3, "stuck at {} of {n}", got.len());
            continue;
        }
        idle = 0;
        for (i, d) in out {
            let id = s.consumer_at(i).id;
            if s.consumer_at(i).owner != OwnerId(owner) {
                continue;
            }
            got.extend(offsets(&d));
            stored += d.iter().filter(|d| d.stored.is_some()).count();
            let ids: Vec<u64> = d.iter().map(|d| d.id).collect();
            s.settle(OwnerId(owner), &ids, Settlement::Ack);
            s.return_credit(id, ids.len() as u32);
        }
    }
    (got, stored)
}

#[test]
fn a_stream_much_larger_than_its_tail_cache_replays_from_first_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_state(dir.path(), 16 * 1024, None);
    for _ in 0..40 {
        publish(&mut s, 100);
    }
    s.log.evict();
    let cached = s.ram_bytes();
    assert!(
        cached > 0 && cached < 8 * 1024,
        "the tail is counted, bounded: {cached}"
    );
    assert!(
        s.log().tail_first() > 3_000,
        "most records are only on disk"
    );
    // A consumer that takes stored records (a native connection) and one that does not.
    s.add_consumer(NewStreamConsumer {
        accepts_stored: true,
        ..consumer(1, Some(StartAt::First), Some("app"))
    })
    .unwrap();
    let (all, stored) = drain_counting(&mut s, 1, 4_000);
    assert!(all == (0..4_000).collect::<Vec<i64>>(), "out of order");
    assert!(stored > 3_000, "read from the files as stored: {stored}");
    s.add_consumer(consumer(2, Some(StartAt::Offset(1234)), None))
        .unwrap();
    assert!(s.ram_bytes() < 256 * 1024, "{} bytes in RAM", s.ram_bytes());
    let (second, stored) = drain_counting(&mut s, 2, 4_000 - 1234);
    assert!(
        second == (1234..4_000).collect::<Vec<i64>>(),
        "out of order"
    );
    assert_eq!(stored, 0, "decoded for a consumer that cannot take them");
    assert_eq!(s.stored_offset("app"), Some(4_000));
    // After a restart, from the files alone.
    s.flush_offsets();
    s.log_mut().close();
    drop(s);
    let mut s = disk_state(dir.path(), 16 * 1024, None);
    assert_eq!(s.stored_offset("app"), Some(4_000));
    s.add_consumer(consumer(3, Some(StartAt::First), None))
        .unwrap();
    let again = drain(&mut s, 3, 4_000);
    assert!(again == (0..4_000).collect::<Vec<i64>>(), "out of order");
}

#[test]
fn retention_on_disk_removes_whole_segments_and_readers_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_state(dir.path(), 4 * 1024, Some(16 * 1024));
    s.add_consumer(consumer(1, Some(StartAt::First), None))
        .unwrap();
    for _ in 0..30 {
        publish(&mut s, 50);
    }
    let first = s.log().first_offset();
    assert!(first > 0, "segments were removed");
    // The removal of segment 0 was queued before the last publish, whose confirm
    // comes after the writer's turn that removed it.
    publish(&mut s, 1);
    let path = crate::storage::stream::writer::segment_path(dir.path(), 0);
    assert!(!path.exists(), "the first segment's file is gone");
    let first = s.log().first_offset();
    let got = drain(&mut s, 1, (1_501 - first) as usize);
    assert!(
        got == (first as i64..1_501).collect::<Vec<i64>>(),
        "out of order"
    );
}

#[test]
fn a_read_that_retention_overtook_is_dropped_and_the_consumer_goes_on_from_the_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_state(dir.path(), 4 * 1024, None);
    for _ in 0..20 {
        publish(&mut s, 50);
    }
    s.log.evict();
    s.add_consumer(consumer(1, Some(StartAt::First), None))
        .unwrap();
    assert!(s.dispatch(100).is_empty(), "offset 0 is only on disk");
    let reads = s.take_reads();
    assert_eq!(reads.len(), 1);
    // Retention removes segments while the read is in flight.
    s.config.max_bytes = Some(8 * 1024);
    s.enforce_retention(now_millis());
    let first = s.log().first_offset();
    assert!(first > 0);
    for (id, req) in reads {
        let r = crate::storage::stream::reader::read(req);
        s.read_done(id, r);
    }
    let got = drain(&mut s, 1, 3);
    assert_eq!(got[0], first as i64, "the stale read was dropped");
}

/// A consumer of runs (a native connection that asked for them), prefetch `prefetch`.
pub(super) fn run_consumer(owner: u64, prefetch: u32, name: Option<&str>) -> NewStreamConsumer<()> {
    NewStreamConsumer {
        accepts_stored: true,
        run_bytes: 1024 * 1024,
        prefetch,
        ..consumer(owner, Some(StartAt::First), name)
    }
}

/// The offsets a delivery carries, a run's by its records.
pub(super) fn run_offsets(d: &Delivery) -> Vec<i64> {
    match &d.run {
        Some(r) => {
            let mut got = Vec::new();
            crate::protocol::split_run(&r.records, r.count, |rec| got.push(rec.offset as i64))
                .expect("a well-formed run");
            assert_eq!(got.len(), r.count as usize);
            got
        }
        None => offsets(std::slice::from_ref(d)),
    }
}

/// A stream on disk of `n` records in chunks of 100, none left in the tail cache.
fn disk_stream(dir: &std::path::Path, n: usize) -> StreamState<()> {
    let mut s = disk_state(dir, 16 * 1024, None);
    for _ in 0..n / 100 {
        publish(&mut s, 100);
    }
    s.log.evict();
    s
}

/// One dispatch for consumer 1 after its reads ran: its deliveries.
pub(super) fn next_batch(s: &mut StreamState<()>) -> Vec<Delivery> {
    for _ in 0..3 {
        let out = s.dispatch(1000);
        if let Some((_, d)) = out.into_iter().next() {
            return d;
        }
        s.run_reads();
    }
    panic!("nothing delivered");
}

#[test]
fn a_consumer_of_runs_gets_adjacent_records_as_one_delivery_with_one_span_of_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_stream(dir.path(), 4_000);
    s.add_consumer(run_consumer(1, 500, Some("app"))).unwrap();
    let (mut got, mut deliveries, mut next_id) = (Vec::new(), 0, None);
    while got.len() < 4_000 {
        let batch = next_batch(&mut s);
        let records: u32 = batch.iter().map(Delivery::records).sum();
        assert!(records <= 500, "within the prefetch: {records}");
        assert_eq!(s.unacked_len(), records as usize, "prefetch counts records");
        for d in &batch {
            assert!(next_id.is_none_or(|n| n == d.id), "ids follow one another");
            next_id = Some(d.id + u64::from(d.records()));
            got.extend(run_offsets(d));
        }
        deliveries += batch.len();
        let runs: Vec<(u64, u32)> = batch.iter().map(|d| (d.id, d.records())).collect();
        assert_eq!(s.settle_runs(OwnerId(1), &runs, Settlement::Ack), 0);
        s.return_credit(1, records);
    }
    assert!(got == (0..4_000).collect::<Vec<i64>>(), "out of order");
    assert!(
        deliveries < 100,
        "runs, not records: {deliveries} deliveries"
    );
    assert_eq!(s.stored_offset("app"), Some(4_000), "acked by range");
    assert_eq!(s.unacked_len(), 0);
}

#[test]
fn settling_parts_of_runs_returns_the_credit_of_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_stream(dir.path(), 1_000);
    s.add_consumer(run_consumer(1, 7, Some("app"))).unwrap();
    let batch = next_batch(&mut s);
    assert_eq!(batch.len(), 1, "7 adjacent records: one run");
    let first = batch[0].id;
    assert_eq!(batch[0].records(), 7, "a prefetch of 7 gives a run of 7");
    // Every other record acked alone: 4 records of credit back; a named consumer's
    // stored offset follows its highest ack.
    assert!(s
        .settle(
            OwnerId(1),
            &[first, first + 2, first + 4, first + 6],
            Settlement::Ack
        )
        .is_empty());
    assert_eq!(s.unacked_len(), 3);
    assert_eq!(s.stored_offset("app"), Some(7));
    s.return_credit(1, 7);
    let more = next_batch(&mut s);
    let records: u32 = more.iter().map(Delivery::records).sum();
    assert_eq!(records, 4, "the credit of the 4 acked");
    assert_eq!(run_offsets(&more[0])[0], 7);
    // The whole first run again: its 4 acked records are not held any more.
    assert_eq!(
        s.settle_runs(OwnerId(1), &[(first, 7)], Settlement::Requeue),
        4,
        "each record's credit once"
    );
    assert_eq!(s.unacked_len(), 4);
    // A nack (discard) of the second run's middle, then a range over the rest.
    let second = more[0].id;
    assert_eq!(
        s.settle_runs(OwnerId(1), &[(second + 1, 2)], Settlement::Discard),
        0
    );
    assert_eq!(s.stored_offset("app"), Some(7), "a nack stores nothing");
    assert_eq!(
        s.settle_runs(OwnerId(2), &[(second, 4)], Settlement::Ack),
        4,
        "not owner 2's"
    );
    assert_eq!(
        s.settle_runs(OwnerId(1), &[(second, 4)], Settlement::Ack),
        2
    );
    assert_eq!(s.stored_offset("app"), Some(11));
    assert_eq!(s.unacked_len(), 0);
}

#[test]
fn a_cancelled_consumer_s_runs_can_still_be_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_stream(dir.path(), 1_000);
    s.add_consumer(run_consumer(1, 10, Some("app"))).unwrap();
    let batch = next_batch(&mut s);
    let first = batch[0].id;
    assert!(s.cancel(OwnerId(1), "c1"));
    assert_eq!(s.unacked_len(), 10, "kept as orphans");
    assert_eq!(
        s.settle_runs(OwnerId(1), &[(first, 10)], Settlement::Ack),
        0
    );
    assert_eq!(s.stored_offset("app"), Some(10));
    assert_eq!(s.unacked_len(), 0);
}
