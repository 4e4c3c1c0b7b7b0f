//! A consumer's read-ahead as ranges of the shared blocks: no handle per record, runs
//! cut out of a range and ended at a segment's end, a record larger than a run goes
//! alone, and retention removing the segment a read-ahead lies in.

use super::tests::{disk_state, next_batch, offsets, publish, run_consumer, run_offsets};
use super::*;
use crate::broker::messages::Delivery;
use crate::message::Message;
use crate::storage::stream::RecordMessage;

/// The first offsets of the stream's segment files, in order.
fn segment_starts(dir: &std::path::Path) -> Vec<u64> {
    let mut starts: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "seg").then(|| p.file_stem()?.to_str()?.parse().ok())?
        })
        .collect();
    starts.sort();
    starts
}

#[test]
fn a_read_ahead_holds_ranges_of_the_shared_blocks_not_a_handle_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_state(dir.path(), 1 << 20, None);
    for _ in 0..5 {
        publish(&mut s, 100);
    }
    s.log.evict();
    for owner in [1, 2] {
        s.add_consumer(NewStreamConsumer {
            window: 1000,
            ..run_consumer(owner, 400, None)
        })
        .unwrap();
    }
    assert!(s.dispatch(1000).is_empty(), "offset 0 is only on disk");
    assert_eq!(s.run_reads(), 2);
    for c in &s.consumers {
        let records: usize = c.ahead.iter().map(Span::len).sum();
        assert_eq!(records, 400, "read ahead up to its prefetch");
        assert_eq!(c.ahead.len(), 1, "one range of one block, not 400 records");
        assert_eq!(c.ahead_bytes, c.ahead[0].bytes());
    }
    // Both readers' ranges are of the one block: each record is held once, by it.
    let (a, b) = (&s.consumers[0].ahead[0], &s.consumers[1].ahead[0]);
    for i in [0, 199, 399] {
        let (RecordMessage::Stored(x), RecordMessage::Stored(y)) =
            (&a.record(i).message, &b.record(i).message)
        else {
            panic!("read back as stored");
        };
        assert!(Arc::ptr_eq(x, y));
        assert_eq!(Arc::strong_count(x), 1, "no handle per record per reader");
    }
    // Cut by credit: the run takes what the prefetch allows, the range keeps the rest.
    let out = s.dispatch(1000);
    assert_eq!(out.len(), 2);
    for (_, d) in &out {
        assert_eq!(d.len(), 1, "one run");
        assert_eq!(run_offsets(&d[0]), (0..400).collect::<Vec<i64>>());
    }
    assert!(s
        .consumers
        .iter()
        .all(|c| c.ahead.is_empty() && c.ahead_bytes == 0));
}

#[test]
fn runs_from_the_read_ahead_end_at_each_segment_s_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_state(dir.path(), 4 * 1024, None);
    for _ in 0..10 {
        publish(&mut s, 50);
    }
    s.log.evict();
    let starts = segment_starts(dir.path());
    assert!(starts.len() > 3, "{starts:?}");
    s.add_consumer(run_consumer(1, 500, None)).unwrap();
    let (mut got, mut runs) = (Vec::new(), 0);
    while got.len() < 500 {
        let batch = next_batch(&mut s);
        for d in &batch {
            let offs = run_offsets(d);
            let seg = |o: i64| starts.partition_point(|&st| st <= o as u64);
            assert_eq!(
                seg(offs[0]),
                seg(*offs.last().unwrap()),
                "a run within one segment: {}..={}",
                offs[0],
                offs.last().unwrap()
            );
            got.extend(offs);
            runs += 1;
        }
        let records: u32 = batch.iter().map(Delivery::records).sum();
        let ids: Vec<(u64, u32)> = batch.iter().map(|d| (d.id, d.records())).collect();
        assert_eq!(s.settle_runs(OwnerId(1), &ids, Settlement::Ack), 0);
        s.return_credit(1, records);
    }
    assert!(got == (0..500).collect::<Vec<i64>>(), "out of order");
    assert!(
        runs <= 2 * starts.len(),
        "{runs} runs over {} segments",
        starts.len()
    );
}

#[test]
fn a_record_larger_than_a_run_goes_alone_between_runs_of_the_same_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_state(dir.path(), 1 << 20, None);
    let body = |i: usize| {
        if i == 3 {
            vec![b'x'; 2048]
        } else {
            format!("m{i}").into_bytes()
        }
    };
    let ms = (0..7)
        .map(|i| Arc::new(Message::new("", "s", body(i))))
        .collect();
    s.append(ms).wait().unwrap();
    s.log.evict();
    s.add_consumer(NewStreamConsumer {
        run_bytes: 1024,
        ..run_consumer(1, 100, None)
    })
    .unwrap();
    let batch = next_batch(&mut s);
    let shape: Vec<(u32, bool)> = batch
        .iter()
        .map(|d| (d.records(), d.run.is_some()))
        .collect();
    assert_eq!(
        shape,
        vec![(3, true), (1, false), (3, true)],
        "run, the big record alone (as stored), run"
    );
    assert_eq!(batch[1].stored.as_ref().unwrap().body().len(), 2048);
    assert_eq!(offsets(&batch[1..2]), vec![3]);
    assert_eq!(run_offsets(&batch[2]), vec![4, 5, 6]);
    assert_eq!(s.unacked_len(), 7);
}

#[test]
fn retention_removing_the_segment_a_read_ahead_lies_in_drops_it_and_runs_handed_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = disk_state(dir.path(), 4 * 1024, None);
    for _ in 0..20 {
        publish(&mut s, 50);
    }
    s.log.evict();
    s.add_consumer(run_consumer(1, 30, None)).unwrap();
    let handed = next_batch(&mut s);
    assert_eq!(handed.iter().map(Delivery::records).sum::<u32>(), 30);
    // The next read ran: the read-ahead holds ranges of the first segments.
    assert_eq!(s.run_reads(), 1);
    assert!(!s.consumers[0].ahead.is_empty());
    let ahead_first = s.consumers[0].ahead[0].first();
    assert_eq!(ahead_first, 30);
    // Retention removes the segments of both the runs handed and the read-ahead.
    s.config.max_bytes = Some(8 * 1024);
    s.enforce_retention(now_millis());
    let first = s.log().first_offset();
    assert!(first > 60, "{first}");
    // The writer thread removes the files.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while segment_starts(dir.path())[0] < first {
        assert!(std::time::Instant::now() < deadline, "segments not removed");
        std::thread::yield_now();
    }
    // The runs already handed keep their bytes (the mapping outlives the file).
    let got: Vec<i64> = handed.iter().flat_map(run_offsets).collect();
    assert_eq!(got, (0..30).collect::<Vec<i64>>());
    // The read-ahead is dropped, not delivered: the consumer goes on from the first
    // offset retention left.
    let ids: Vec<(u64, u32)> = handed.iter().map(|d| (d.id, d.records())).collect();
    s.settle_runs(OwnerId(1), &ids, Settlement::Ack);
    s.return_credit(1, 30);
    let next = next_batch(&mut s);
    assert_eq!(run_offsets(&next[0])[0], first as i64);
    assert_eq!(
        s.consumers[0].ahead_bytes,
        s.consumers[0].ahead.iter().map(Span::bytes).sum::<u64>()
    );
}
