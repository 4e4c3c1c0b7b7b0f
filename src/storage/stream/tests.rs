//! The stream log on disk: appends survive a reopen with their offsets, a torn tail is
//! cut at the last good frame, retention removes whole segments from the front.

use super::*;
use crate::message::Message;

pub(super) fn msgs(n: usize, tag: &str) -> Vec<Arc<Message>> {
    (0..n)
        .map(|i| Arc::new(Message::new("", "s", format!("{tag}-{i}"))))
        .collect()
}

/// Reads the record at `o` from the files (or the tail cache when it holds it).
pub(super) fn record(log: &StreamLog, o: u64) -> StreamRecord {
    if let Some(r) = log.get(o) {
        return r.clone();
    }
    let mut req = log.read_from(o, None).expect("retained");
    req.max_records = 1;
    let b = reader::read(req).unwrap();
    assert_eq!(b.first, o);
    let r = b.records().next().expect("one record").clone();
    r
}

pub(super) fn body(log: &StreamLog, o: u64) -> String {
    String::from_utf8(record(log, o).message.body().to_vec()).unwrap()
}

/// The decoded message of a record (a read decodes unless told not to; a record of
/// the tail cache is decoded here, as a consumer's first read decodes it).
fn message(r: &StreamRecord) -> Arc<Message> {
    match &r.message {
        RecordMessage::Decoded(m) => m.clone(),
        RecordMessage::Stored(s) => s.message(&mut None).expect("decodes").clone(),
    }
}

/// Every record from `from` on, read from the files in reads of `step` records.
pub(super) fn read_all(log: &StreamLog, from: u64, step: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = from;
    let mut cursor = None;
    while let Some(mut req) = log.read_from(next, cursor.take()) {
        req.max_records = step;
        let b = reader::read(req).unwrap();
        assert_eq!(b.first, next);
        assert!(!b.is_empty(), "a read below the end finds records");
        for (i, r) in b.records().enumerate() {
            out.push((
                b.first + i as u64,
                String::from_utf8(r.message.body().to_vec()).unwrap(),
            ));
        }
        next = b.first + b.len() as u64;
        cursor = Some(b.cursor);
    }
    out
}

#[test]
fn appends_come_back_after_a_reopen_with_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = StreamLog::open(dir.path(), 200).unwrap();
        log.append(msgs(5, "a")).wait().unwrap();
        log.append(msgs(5, "b")).wait().unwrap();
        assert_eq!((log.first_offset(), log.next_offset()), (0, 10));
        assert_eq!(log.last_chunk(), 5);
        let mut offsets = BTreeMap::new();
        offsets.insert("c1".to_string(), 7u64);
        log.store_offsets(&offsets);
    }
    let log = StreamLog::open(dir.path(), 200).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (0, 10));
    assert_eq!(body(&log, 7), "b-2");
    let h = message(&record(&log, 7)).header("x-stream-offset").cloned();
    assert_eq!(h, Some(crate::message::FieldValue::Int(7)));
    assert!(log.segments.len() > 1, "small segments roll");
    assert_eq!(log.recovered_offsets().get("c1"), Some(&7));
}

#[test]
fn a_torn_tail_is_cut_at_the_last_good_frame() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = StreamLog::open(dir.path(), 1 << 20).unwrap();
        log.append(msgs(3, "a")).wait().unwrap();
    }
    let seg = writer::segment_path(dir.path(), 0);
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let mut log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.next_offset(), 2);
    log.append(msgs(1, "b")).wait().unwrap();
    drop(log);
    let log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.next_offset(), 3);
    assert_eq!(body(&log, 2), "b-0");
}

#[test]
fn retention_removes_whole_segments_and_moves_the_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 100).unwrap();
    for _ in 0..10 {
        log.append(msgs(2, "x")).wait().unwrap();
    }
    let segments = log.segments.len();
    assert!(segments > 3);
    let removed = log.trim(Some(150), None, now_millis());
    assert!(removed > 0 && removed < segments, "{removed} of {segments}");
    assert!(log.first_offset() > 0);
    assert!(log.get(0).is_none() && log.read_from(0, None).is_none());
    let first = log.first_offset();
    log.close();
    let log = StreamLog::open(dir.path(), 100).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (first, 20));
    // By age: everything but the active segment is older than "now + 1 day".
    let mut log = log;
    log.trim(None, Some(0), now_millis() + 86_400_000);
    assert_eq!(log.segments.len(), 1);
    assert_eq!(log.offset_at(0), (log.first_offset(), false));
}

#[test]
fn a_log_much_larger_than_its_tail_cache_reads_back_in_order_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 64 * 1024).unwrap();
    log.set_tail_budget(4 * 1024);
    for b in 0..50 {
        log.append(msgs(200, &format!("b{b}"))).wait().unwrap();
    }
    log.evict();
    assert_eq!(log.next_offset(), 10_000);
    assert!(
        log.tail_first() > 9_000,
        "the tail holds only the newest records"
    );
    assert!(
        log.ram_bytes() < 64 * 1024,
        "{} bytes in RAM",
        log.ram_bytes()
    );
    let want: Vec<(u64, String)> = (0..10_000u64)
        .map(|o| (o, format!("b{}-{}", o / 200, o % 200)))
        .collect();
    assert_eq!(read_all(&log, 0, 333), want);
    assert_eq!(read_all(&log, 4_321, 1000), want[4_321..].to_vec());
    // Reopened: only the sparse index is rebuilt, and the same records come back.
    log.close();
    drop(log);
    let log = StreamLog::open(dir.path(), 64 * 1024).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (0, 10_000));
    assert!(
        log.index_len() > 1 && log.index_len() < 100,
        "{}",
        log.index_len()
    );
    assert_eq!(read_all(&log, 0, 777), want);
    assert_eq!(body(&log, 9_999), "b49-199");
    let h = message(&record(&log, 5_000))
        .header("x-stream-offset")
        .cloned();
    assert_eq!(h, Some(crate::message::FieldValue::Int(5_000)));
}

#[test]
fn a_timestamp_start_lands_on_its_chunk_through_the_sparse_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 1 << 30).unwrap();
    log.set_tail_budget(0);
    // Three chunks of ~200 KiB each (several index entries each), a millisecond apart.
    let mut starts = Vec::new();
    for c in 0..3 {
        let before = now_millis();
        while now_millis() == before {
            std::hint::spin_loop();
        }
        starts.push((log.next_offset(), now_millis()));
        let big: Vec<Arc<Message>> = (0..200)
            .map(|i| {
                Arc::new(Message::new(
                    "",
                    "s",
                    format!("c{c}-{i}-{}", "x".repeat(1000)),
                ))
            })
            .collect();
        log.append(big).wait().unwrap();
    }
    log.evict();
    assert_eq!(log.tail_first(), log.next_offset(), "nothing cached");
    for (o, ts) in &starts {
        let (at, skip) = log.offset_at(*ts);
        assert!(at <= *o, "{at} > {o}");
        let mut req = log.read_from(at, None).unwrap();
        req.max_records = 1;
        if skip {
            req.min_timestamp = Some(*ts);
        }
        let b = reader::read(req).unwrap();
        assert_eq!(b.first, *o, "the first record at or after the chunk's time");
        assert!(b.records().next().unwrap().timestamp >= *ts);
    }
    assert_eq!(log.offset_at(0), (0, false));
    let (at, skip) = log.offset_at(i64::MAX);
    assert!(skip || at == log.next_offset());
}

#[test]
fn readers_of_the_same_records_share_one_decoded_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    log.set_tail_budget(0);
    log.append(msgs(500, "a")).wait().unwrap();
    log.evict();
    let read = |from: u64, n: usize, decode: bool| {
        let mut req = log.read_from(from, None).unwrap();
        req.max_records = n;
        req.decode = decode;
        reader::read(req).unwrap()
    };
    let a = read(100, 100, false);
    assert!(
        a.records().all(|r| r.message.decoded().is_none()),
        "kept as stored"
    );
    let held_stored = log.ram_bytes();
    let b = read(0, 300, true);
    assert_eq!((a.first, b.first), (100, 0));
    // Same bytes of the same mapping: read once, not once per reader.
    let (ra, rb) = (a.records().nth(50).unwrap(), b.records().nth(150).unwrap());
    let (x, y) = (ra.message.body(), rb.message.body());
    assert_eq!(x, y);
    assert_eq!(x.as_ptr(), y.as_ptr());
    // The second reader decoded the records it took, once for both.
    let (RecordMessage::Stored(x), RecordMessage::Stored(y)) = (&ra.message, &rb.message) else {
        panic!("records read from the files are stored ones");
    };
    assert!(Arc::ptr_eq(x, y));
    let m = x.decoded().expect("decoded by the second read");
    assert_eq!(&m.body[..], b"a-150");
    assert_eq!(
        m.header("x-stream-offset").and_then(|v| v.as_int()),
        Some(150)
    );
    assert!(
        b.bytes() / 300 > a.bytes() / 100,
        "a decoded record is accounted for its message too"
    );
    assert!(log.ram_bytes() > 0, "the shared blocks are counted");
    // The block keeps the messages the second reader decoded: they count against the
    // blocks' budget, once (a third reader decodes nothing more).
    let stored = read(0, 300, false).bytes();
    let with_messages = b.bytes();
    assert!(with_messages > stored);
    assert_eq!(log.ram_bytes() - held_stored, with_messages - stored);
    read(0, 300, true);
    assert_eq!(
        log.ram_bytes() - held_stored,
        with_messages - stored,
        "counted once"
    );
}

#[test]
fn last_after_a_reopen_is_the_last_chunk_not_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = StreamLog::open(dir.path(), 1 << 20).unwrap();
        log.append(msgs(5, "a")).wait().unwrap();
        let before = now_millis();
        while now_millis() == before {
            std::hint::spin_loop();
        }
        log.append(msgs(3, "b")).wait().unwrap();
    }
    let log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.segments.len(), 1);
    assert_eq!(log.last_chunk(), 5);
}

#[test]
fn directory_names_are_escaped() {
    assert_eq!(dir_name("/"), "%2F");
    assert_eq!(dir_name("orders.v1"), "orders.v1");
    assert_eq!(dir_name(".."), "%2E.");
}

/// Overwrites the first `from` in the stream's only segment file with `to` (same length).
fn patch_segment(dir: &std::path::Path, from: &[u8], to: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let path = writer::segment_path(dir, 0);
    let data = std::fs::read(&path).unwrap();
    let at = data
        .windows(from.len())
        .position(|w| w == from)
        .expect("the bytes are in the file");
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(to).unwrap();
}

#[test]
fn a_frame_is_checked_on_its_first_read_and_by_recovery_not_on_rereads() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    log.set_tail_budget(0);
    log.append(msgs(300, "a")).wait().unwrap();
    log.evict();
    let read = |log: &StreamLog, from: u64| {
        let mut req = log.read_from(from, None).unwrap();
        req.max_records = 300;
        reader::read(req)
    };
    // Appended in this run, never read: the first read checks every frame's CRC.
    patch_segment(dir.path(), b"a-100", b"a-1X0");
    let before = read(&log, 0).expect("the records before the damaged one");
    assert_eq!((before.first, before.len()), (0, 100));
    match read(&log, 100) {
        Err(reader::ReadError::Damaged {
            offset: 100,
            resume: Some(101),
            error: StorageError::Corrupt { reason, .. },
        }) => assert!(reason.contains("fails its checksum"), "{reason}"),
        other => panic!("a damaged frame read first: {other:?}"),
    }
    patch_segment(dir.path(), b"a-1X0", b"a-100");
    assert_eq!(read_all(&log, 0, 300).len(), 300, "read once: verified");
    // Damaged after its first read: a re-read (its block no longer shared) trusts it.
    patch_segment(dir.path(), b"a-100", b"a-1X0");
    log.set_block_budget(1 << 20);
    let b = read(&log, 100).unwrap();
    assert_eq!(
        b.records().next().unwrap().message.body(),
        b"a-1X0",
        "not checked again"
    );
    // Closed, the active segment got a recovery point: the next start trusts what it
    // covers unread, so the damaged record is not cut but refused by its first read.
    log.close();
    drop(log);
    let log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    assert_eq!((log.recovered().from_point, log.next_offset()), (1, 300));
    assert!(
        matches!(
            read(&log, 100),
            Err(reader::ReadError::Damaged { offset: 100, .. })
        ),
        "found by its first read"
    );
    drop(log);
    // Without it, recovery checks every frame again: the log is cut before the damaged one.
    std::fs::remove_file(index_file::point_path(dir.path(), 0)).unwrap();
    let log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.next_offset(), 100);
}

#[test]
fn an_append_after_the_writer_stopped_is_not_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    log.append(msgs(3, "a")).wait().unwrap();
    log.close_without_point();
    // Nothing writes these any more: a confirm would claim they are on disk.
    let r = log.append(msgs(2, "b")).wait();
    assert!(matches!(r, Err(StorageError::Closed)), "{r:?}");
}

#[test]
fn an_append_answers_from_the_writer_thread_once_its_frames_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    let (tx, rx) = mpsc::channel();
    let done = crate::storage::Completer::calling(move |r: Result<(), StorageError>| {
        let thread = std::thread::current().name().map(String::from);
        tx.send((r.is_ok(), thread)).unwrap();
    });
    log.append_then(msgs(3, "a"), done);
    let (ok, thread) = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    // Answered by the writer itself (after its fsync), not by a thread it woke.
    assert!(ok);
    assert_eq!(thread.as_deref(), Some("stream-writer"));
    let seg = writer::segment_path(dir.path(), 0);
    assert!(std::fs::metadata(&seg).unwrap().len() > 0, "frames on file");
}

#[test]
fn appends_queued_when_the_stream_is_deleted_are_refused_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let (done, stored) = crate::storage::Completion::pending();
    tx.send(writer::Command::Append {
        segment: 0,
        bytes: bytes::Bytes::from_static(b"frames"),
        end: 1,
        done: Some(done),
    })
    .unwrap();
    drop(tx);
    // Deleted before the writer's turn reached the append.
    let deleted = Arc::new(AtomicBool::new(true));
    writer::run(dir.path().to_path_buf(), rx, Written::new(0), deleted);
    assert!(matches!(stored.wait(), Err(StorageError::Closed)));
    assert!(
        !writer::segment_path(dir.path(), 0).exists(),
        "nothing written"
    );
}

#[test]
fn an_appended_record_is_kept_as_stored_and_decodes_with_its_offset_header() {
    use crate::message::{FieldTable, FieldValue, Properties};
    let dir = tempfile::tempdir().unwrap();
    let mut log = StreamLog::open(dir.path(), 1 << 20).unwrap();
    // A publisher's own `x-stream-offset` is replaced, as a header added to the
    // message would replace it; the published message itself is left as it was.
    let mut headers = FieldTable::new();
    headers.insert("a".into(), FieldValue::Str("x".into()));
    headers.insert("x-stream-offset".into(), FieldValue::Int(99));
    let first = Arc::new(Message::new("ex", "k", "one").with_properties(Properties {
        headers: Some(headers),
        ..Default::default()
    }));
    let second = Arc::new(Message::new("ex", "k", "two"));
    log.append(vec![first.clone(), second.clone()])
        .wait()
        .unwrap();
    for (o, m) in [(0u64, &first), (1, &second)] {
        let r = log.get(o).expect("in the tail cache");
        let RecordMessage::Stored(s) = &r.message else {
            panic!("kept as stored");
        };
        assert!(s.decoded().is_none(), "decoded on a first read only");
        let d = s.message(&mut None).unwrap();
        let want = Message::clone(m).with_header("x-stream-offset", o as i64);
        assert_eq!(**d, want);
        // Accounted for as if decoded: the decoded form stays with the record.
        assert!(r.size >= record::decoded_size(d) + s.len() as u64, "{o}");
    }
    assert_eq!(
        first.header("x-stream-offset"),
        Some(&FieldValue::Int(99)),
        "the published message is not changed"
    );
    assert_eq!(body(&log, 1), "two");
}
