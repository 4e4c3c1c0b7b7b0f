//! The stream log on disk: appends survive a reopen with their offsets, a torn tail is
//! cut at the last good frame, retention removes whole segments from the front.

use super::*;

fn msgs(n: usize, tag: &str) -> Vec<Arc<Message>> {
    (0..n)
        .map(|i| Arc::new(Message::new("", "s", format!("{tag}-{i}"))))
        .collect()
}

fn body(log: &StreamLog, o: u64) -> String {
    String::from_utf8(log.get(o).expect("retained").message.body.to_vec()).unwrap()
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
    let h = log
        .get(7)
        .unwrap()
        .message
        .header("x-stream-offset")
        .cloned();
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
    assert!(log.get(0).is_none());
    let first = log.first_offset();
    log.close();
    let log = StreamLog::open(dir.path(), 100).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (first, 20));
    // By age: everything but the active segment is older than "now + 1 day".
    let mut log = log;
    log.trim(None, Some(0), now_millis() + 86_400_000);
    assert_eq!(log.segments.len(), 1);
    assert_eq!(log.offset_at(0), log.first_offset());
}

#[test]
fn directory_names_are_escaped() {
    assert_eq!(dir_name("/"), "%2F");
    assert_eq!(dir_name("orders.v1"), "orders.v1");
    assert_eq!(dir_name(".."), "%2E.");
}
