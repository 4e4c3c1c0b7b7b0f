//! Opening a stream from its sealed segments' index files: a valid one is trusted and
//! its segment not read; a damaged, stale or missing one costs a scan (and is written
//! again); a damaged frame in a trusted segment is refused by its first read, and one
//! whose length field is damaged is passed over through the index file; retention
//! removes an index file with its segment.

use super::index_file::{self, SealedIndex};
use super::tests::{msgs, read_all};
use super::*;
use crate::storage::disk::frame;

/// Small segments: 40 appends of 5 records make a dozen or so.
const SEG: u64 = 1024;

/// A log in `dir` of 200 records `b{batch}-{i}` (40 appends of 5), closed.
fn fill(dir: &Path) -> Vec<(u64, String)> {
    let mut log = StreamLog::open(dir, SEG).unwrap();
    for b in 0..40 {
        log.append(msgs(5, &format!("b{b}"))).wait().unwrap();
    }
    assert!(log.segments.len() > 4, "{} segments", log.segments.len());
    log.close();
    (0..200u64)
        .map(|o| (o, format!("b{}-{}", o / 5, o % 5)))
        .collect()
}

/// What recovery builds of each segment, comparable.
type Shape = Vec<(u64, Vec<IndexEntry>, u64, Option<i64>, u64)>;

fn shape(log: &StreamLog) -> Shape {
    log.segments
        .iter()
        .map(|s| {
            (
                s.first,
                s.index.clone(),
                s.bytes,
                s.last_timestamp,
                s.run_start,
            )
        })
        .collect()
}

fn firsts(log: &StreamLog) -> Vec<u64> {
    log.segments.iter().map(|s| s.first).collect()
}

fn idx_exists(dir: &Path, first: u64) -> bool {
    index_file::path(dir, first).exists()
}

/// What an open trusted, scanned and indexed (the active segment is scanned from its
/// recovery point or whole: see `point_tests`).
fn opened(trusted: usize, scanned: usize, indexed: usize) -> (usize, usize, usize) {
    (trusted, scanned, indexed)
}

fn counts(r: Recovered) -> (usize, usize, usize) {
    (r.trusted, r.scanned, r.indexed)
}

#[test]
fn a_sealed_segment_with_a_valid_index_file_is_trusted_unread() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    let log = StreamLog::open(dir.path(), SEG).unwrap();
    let n = log.segments.len();
    let segs = firsts(&log);
    // The writer wrote an index file for every segment it rolled, none for the last.
    for s in &segs[..n - 1] {
        assert!(idx_exists(dir.path(), *s), "segment {s} has an index file");
    }
    assert!(!idx_exists(dir.path(), segs[n - 1]));
    assert_eq!(counts(log.recovered()), opened(n - 1, 1, 0));
    assert_eq!((log.first_offset(), log.next_offset()), (0, 200));
    // Not read, so not verified: the first read of each frame checks its checksum.
    for s in &segs[..n - 1] {
        assert_eq!(log.verified.through(*s, 0), 0, "segment {s}");
    }
    // Closed cleanly, the last one was taken from its recovery point: unread too.
    assert_eq!(log.recovered().from_point, 1);
    assert_eq!(
        log.verified.through(segs[n - 1], 0),
        0,
        "the active segment"
    );
    let trusted = (shape(&log), log.last_chunk(), log.last_timestamp);
    assert_eq!(read_all(&log, 0, 33), want);
    assert!(log.verified.through(segs[0], 0) > 0, "verified by the read");
    drop(log);
    // The same log as a scan of every frame builds it.
    for s in &segs {
        std::fs::remove_file(index_file::path(dir.path(), *s)).ok();
    }
    let log = StreamLog::open(dir.path(), SEG).unwrap();
    assert_eq!(counts(log.recovered()), opened(0, n, n - 1));
    assert_eq!((shape(&log), log.last_chunk(), log.last_timestamp), trusted);
    drop(log);
    // An old directory (no index files) gained them: the next open trusts them.
    let log = StreamLog::open(dir.path(), SEG).unwrap();
    assert_eq!(counts(log.recovered()), opened(n - 1, 1, 0));
    assert_eq!(read_all(&log, 0, 50), want);
}

#[test]
fn a_damaged_stale_or_missing_index_file_falls_back_to_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    let log = StreamLog::open(dir.path(), SEG).unwrap();
    let (n, segs, good) = (log.segments.len(), firsts(&log), shape(&log));
    drop(log);
    let d = dir.path();
    // Damaged: a flipped bit. Stale: another segment's index under this name. Missing.
    let mut bytes = std::fs::read(index_file::path(d, segs[0])).unwrap();
    bytes[60] ^= 0x10;
    std::fs::write(index_file::path(d, segs[0]), &bytes).unwrap();
    std::fs::copy(index_file::path(d, segs[2]), index_file::path(d, segs[1])).unwrap();
    std::fs::remove_file(index_file::path(d, segs[3])).unwrap();
    // Leftovers of a crash: an unfinished index file, an index without its segment.
    std::fs::write(d.join(format!("{:020}.idx.tmp", segs[4])), b"half").unwrap();
    std::fs::write(index_file::path(d, 1_000_000), b"orphan").unwrap();
    let log = StreamLog::open(d, SEG).unwrap();
    assert_eq!(counts(log.recovered()), opened(n - 4, 4, 3));
    assert_eq!(shape(&log), good);
    assert_eq!(read_all(&log, 0, 64), want);
    for s in &segs[..4] {
        let idx = SealedIndex::decode(&std::fs::read(index_file::path(d, *s)).unwrap());
        assert_eq!(idx.map(|i| i.first), Ok(*s), "written again");
    }
    assert!(!d.join(format!("{:020}.idx.tmp", segs[4])).exists());
    assert!(!idx_exists(d, 1_000_000));
    drop(log);
    // Stale by length: a sealed segment lost its last bytes. Its index no longer
    // describes it, so it is scanned: the torn record is cut, with every later segment
    // and their index files.
    let seg2 = writer::segment_path(d, segs[2]);
    let len = std::fs::metadata(&seg2).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg2).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let log = StreamLog::open(d, SEG).unwrap();
    assert_eq!(counts(log.recovered()), opened(2, 1, 0));
    assert_eq!(log.next_offset(), segs[3] - 1);
    assert_eq!(firsts(&log), segs[..3].to_vec());
    for s in &segs[2..] {
        assert!(
            !idx_exists(d, *s),
            "segment {s}: no index (active or removed)"
        );
    }
    assert_eq!(read_all(&log, 0, 64), want[..segs[3] as usize - 1].to_vec());
}

/// Overwrites the first `from` found in any segment of `dir` with `to` (same length);
/// answers the segment.
fn patch(dir: &Path, from: &[u8], to: &[u8]) -> u64 {
    use std::io::{Seek, SeekFrom, Write};
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let Some(first) = path
            .file_name()
            .and_then(|n| n.to_str()?.strip_suffix(".seg")?.parse().ok())
        else {
            continue;
        };
        let data = std::fs::read(&path).unwrap();
        if let Some(at) = data.windows(from.len()).position(|w| w == from) {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.seek(SeekFrom::Start(at as u64)).unwrap();
            f.write_all(to).unwrap();
            return first;
        }
    }
    panic!("no segment holds {from:?}");
}

#[test]
fn a_damaged_frame_in_a_trusted_segment_is_refused_at_its_first_read() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    let damaged = patch(dir.path(), b"b20-3", b"b20-X");
    let log = StreamLog::open(dir.path(), SEG).unwrap();
    assert!(damaged < log.segments.back().unwrap().first, "a sealed one");
    // Trusted: recovery did not read it, so nothing was cut.
    assert_eq!(log.recovered().scanned, 1);
    assert_eq!(log.next_offset(), 200);
    // A reader from the start gets every record before the damaged one, then an error
    // naming it; it never gets the damaged record or skips it.
    let mut got = Vec::new();
    let mut cursor = None;
    let err = loop {
        let mut req = log.read_from(got.len() as u64, cursor.take()).unwrap();
        req.max_records = 7;
        match reader::read(req) {
            Ok(b) => {
                assert_eq!(b.first, got.len() as u64);
                for r in b.records() {
                    got.push(String::from_utf8(r.message.body().to_vec()).unwrap());
                }
                cursor = Some(b.cursor);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(got.len(), 103, "every record before offset 103");
    let want_bodies: Vec<String> = want.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(got, want_bodies[..103].to_vec());
    match err {
        reader::ReadError::Damaged {
            offset: 103,
            resume: Some(104),
            error: StorageError::Corrupt { reason, .. },
        } => {
            assert!(
                reason.contains("record 103 at byte") && reason.contains("fails its checksum"),
                "{reason}"
            )
        }
        other => panic!("a damaged frame: {other}"),
    }
    // Read again (as a new consumer would): the same error, not the record.
    let mut req = log.read_from(103, None).unwrap();
    req.max_records = 1;
    assert!(reader::read(req).is_err());
    // What follows it reads on.
    assert_eq!(read_all(&log, 104, 20), want[104..].to_vec());
}

#[test]
fn retention_removes_the_index_file_with_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let mut log = StreamLog::open(dir.path(), SEG).unwrap();
    let segs = firsts(&log);
    let removed = log.trim(Some(SEG * 2), None, now_millis());
    assert!(removed > 1);
    log.close();
    for s in &segs[..removed] {
        assert!(!writer::segment_path(dir.path(), *s).exists());
        assert!(!idx_exists(dir.path(), *s), "index of removed segment {s}");
    }
    for s in &segs[removed..segs.len() - 1] {
        assert!(idx_exists(dir.path(), *s), "index of kept segment {s}");
    }
    drop(log);
    let log = StreamLog::open(dir.path(), SEG).unwrap();
    assert_eq!(log.first_offset(), segs[removed]);
    assert_eq!(
        counts(log.recovered()),
        opened(segs.len() - removed - 1, 1, 0)
    );
}

#[test]
fn the_last_chunk_is_found_through_index_files_when_it_spans_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = StreamLog::open(dir.path(), 100).unwrap();
        log.append(msgs(3, "a")).wait().unwrap();
        let before = now_millis();
        while now_millis() == before {
            std::hint::spin_loop();
        }
        // One append over several segments (two records fill one).
        log.append(msgs(12, "b")).wait().unwrap();
        assert_eq!(log.last_chunk(), 3);
        assert!(log.segments.len() > 4);
    }
    let log = StreamLog::open(dir.path(), 100).unwrap();
    assert!(log.recovered().trusted > 3);
    assert_eq!(log.last_chunk(), 3);
}

/// The segment and file position of record `offset`'s frame.
fn frame_of(dir: &Path, offset: u64) -> (u64, usize) {
    let mut segs: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().ok()?;
            n.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    segs.sort_unstable();
    let s = *segs.iter().rev().find(|s| **s <= offset).unwrap();
    let data = std::fs::read(writer::segment_path(dir, s)).unwrap();
    let mut pos = 0;
    while let frame::FrameAt::Good { payload, next } = frame::read_at(&data, pos) {
        if codec::header(payload).unwrap().0 == offset {
            return (s, pos);
        }
        pos = next;
    }
    panic!("no frame of record {offset}");
}

/// Writes `bytes` at `pos` of segment `s`.
fn poke(dir: &Path, s: u64, pos: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(writer::segment_path(dir, s))
        .unwrap();
    f.write_all_at(bytes, pos as u64).unwrap();
}

#[test]
fn a_damaged_length_field_is_passed_over_through_the_index_file() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    let d = dir.path();
    let (seg, pos) = frame_of(d, 103);
    let (seg2, pos2) = frame_of(d, 104);
    let mut next_seg = 0;
    // Its length says 3 bytes (the frame it points at is no frame), or more than the
    // file holds (no frame at all: the read looks at the file again first).
    for bad in [3u32, 1 << 29] {
        poke(d, seg, pos, &bad.to_le_bytes());
        let log = StreamLog::open(d, SEG).unwrap();
        next_seg = log.segments.iter().find(|s| s.first > seg).unwrap().first;
        assert!(
            seg2 == seg && next_seg > 106,
            "103 to 106 in one sealed segment"
        );
        // A reader from after it reads every later record.
        assert_eq!(read_all(&log, 104, 9), want[104..].to_vec(), "length {bad}");
        // One that reaches it is told that reading goes on right after it.
        let mut req = log.read_from(100, None).unwrap();
        req.max_records = 10;
        assert_eq!(reader::read(req).unwrap().len(), 3);
        let mut req = log.read_from(103, None).unwrap();
        req.max_records = 10;
        match reader::read(req) {
            Err(reader::ReadError::Damaged {
                offset: 103,
                resume: Some(104),
                ..
            }) => {}
            other => panic!("length {bad}: record 103 damaged, 104 on: {other:?}"),
        }
    }
    // The record after it damaged too: the records up to where the index file says
    // the next frame begins (here the segment's end) cannot be read.
    poke(d, seg2, pos2 + 40, b"\xff");
    let log = StreamLog::open(d, SEG).unwrap();
    for from in [103, 105] {
        let mut req = log.read_from(from, None).unwrap();
        req.max_records = 10;
        match reader::read(req) {
            Err(reader::ReadError::Damaged {
                offset,
                resume: Some(r),
                error: StorageError::Corrupt { reason, .. },
            }) => {
                assert_eq!((offset, r), (from, next_seg));
                assert!(reason.contains("its length is damaged too"), "{reason}");
            }
            other => panic!("records {from}..{next_seg} lost: {other:?}"),
        }
    }
    assert_eq!(
        read_all(&log, next_seg, 9),
        want[next_seg as usize..].to_vec()
    );
}
