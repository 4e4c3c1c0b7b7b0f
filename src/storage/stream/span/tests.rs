//! Reads as ranges of the shared blocks: spans stop at segment boundaries, a record
//! larger than a read's byte bound is read alone, and cutting a span gives back what it
//! was accounted for.

use super::super::tests::msgs;
use super::super::{reader, StreamLog};
use crate::message::Message;
use std::sync::Arc;

/// A log on disk whose records are all in its files, none in the tail cache.
fn log_of(dir: &std::path::Path, segment: u64, chunks: &[Vec<Arc<Message>>]) -> StreamLog {
    let mut log = StreamLog::open(dir, segment).unwrap();
    log.set_tail_budget(0);
    for c in chunks {
        log.append(c.clone()).wait().unwrap();
    }
    log.evict();
    log
}

fn read(log: &StreamLog, from: u64, max_records: usize, max_bytes: usize) -> reader::ReadBatch {
    let mut req = log.read_from(from, None).unwrap();
    req.max_records = max_records;
    req.max_bytes = max_bytes;
    req.decode = false;
    reader::read(req).unwrap()
}

#[test]
fn a_read_across_two_segments_gives_a_span_in_each_whose_frames_are_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 4 * 1024, &[msgs(300, "a")]);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segments > 2, "{segments} segments");
    let b = read(&log, 0, 300, usize::MAX);
    assert_eq!((b.first, b.len()), (0, 300));
    assert!(b.spans.len() >= segments, "a span never crosses a segment");
    let mut next = 0;
    for s in &b.spans {
        assert_eq!(s.first(), next, "spans follow one another");
        let (map, start) = s.frames_at();
        let frames = s.frames(s.len());
        assert_eq!(frames.start, start);
        // The span's frames are its records' frames, one after another, in one mapping.
        let mut at = frames.start;
        for r in s.records() {
            let crate::storage::stream::RecordMessage::Stored(m) = &r.message else {
                panic!("read back as stored");
            };
            let (whole, frame) = m.frame_in().expect("framed");
            assert_eq!(whole.as_ptr(), map.as_ptr());
            assert_eq!(frame.start, at);
            at = frame.end;
        }
        assert_eq!(at, frames.end);
        let mut got = Vec::new();
        crate::protocol::split_run(&map[frames], s.len() as u32, |rec| got.push(rec.offset))
            .expect("the frames of a span are a well-formed run");
        assert_eq!(got, (next..next + s.len() as u64).collect::<Vec<_>>());
        next += s.len() as u64;
    }
    let sizes: u64 = b.records().map(|r| r.size).sum();
    assert_eq!(b.bytes(), sizes, "accounted as its records are");
}

#[test]
fn a_record_larger_than_a_read_s_byte_bound_is_read_alone() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![Arc::new(Message::new("", "s", vec![7u8; 64 * 1024]))];
    let log = log_of(dir.path(), 1 << 20, &[msgs(3, "a"), big, msgs(3, "b")]);
    // 1 KiB per read: the small records fit several to a read, the big one comes alone.
    let mut next = 0;
    let mut reads = Vec::new();
    let mut cursor = None;
    while let Some(mut req) = log.read_from(next, cursor.take()) {
        req.max_bytes = 1024;
        req.decode = false;
        let b = reader::read(req).unwrap();
        assert_eq!(b.first, next);
        reads.push(
            b.records()
                .map(|r| r.message.body().len())
                .collect::<Vec<_>>(),
        );
        next += b.len() as u64;
        cursor = Some(b.cursor);
    }
    assert_eq!(next, 7);
    assert_eq!(
        reads,
        vec![vec![3, 3, 3, 64 * 1024], vec![3, 3, 3]],
        "a read takes records until their bytes reach its bound"
    );
    // From the big record: it alone, though larger than the bound.
    let b = read(&log, 3, 100, 1024);
    assert_eq!((b.first, b.len()), (3, 1));
    assert_eq!(b.records().next().unwrap().message.body().len(), 64 * 1024);
    assert_eq!(read(&log, 3, 100, 1).len(), 1);
}

#[test]
fn cutting_a_span_gives_back_what_it_was_accounted_for_and_fits_runs_by_frames() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 1 << 20, &[msgs(100, "a")]);
    let b = read(&log, 0, 100, usize::MAX);
    assert_eq!(b.spans.len(), 1);
    let mut s = b.spans[0].clone();
    let whole = s.bytes();
    let one = s.frames(1).len();
    assert_eq!(
        s.fitting(100, one - 1),
        0,
        "the first frame alone is larger"
    );
    assert_eq!(s.fitting(100, one), 1);
    assert_eq!(s.fitting(5, usize::MAX), 5, "at most n");
    assert_eq!(s.fitting(100, s.frames(10).len()), 10);
    let mut back = 0;
    for n in [1, 10, 39] {
        back += s.advance(n);
    }
    assert_eq!(s.first(), 50);
    assert_eq!(s.len(), 50);
    back += s.advance(1_000);
    assert!(s.is_empty());
    assert_eq!(back, whole, "every byte accounted once");
    // A decoding reader's span carries its messages' bytes too, given back the same way.
    let mut req = log.read_from(0, None).unwrap();
    req.max_records = 100;
    let mut d = reader::read(req).unwrap().spans.remove(0);
    let decoded = d.bytes();
    assert!(decoded > whole, "its messages are accounted for");
    let back = d.advance(33) + d.advance(33) + d.advance(34);
    assert_eq!(back, decoded);
}
