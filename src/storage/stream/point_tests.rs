//! The active segment's recovery point: written as the segment grows and at close, a
//! restart scans only what follows it and builds what a whole scan builds; a damaged,
//! stale or misplaced point costs the whole scan, never records; a torn tail after it
//! is cut as before; rolling and retention remove it.

use super::index_file::{self, SealedIndex};
use super::tests::{msgs, read_all};
use super::*;

/// One segment for everything (points are the active segment's).
const BIG: u64 = 1 << 20;

/// What recovery builds of each segment, comparable.
type Shape = Vec<(u64, Vec<IndexEntry>, u64, Option<i64>, u64)>;

fn shape(log: &StreamLog) -> (Shape, u64, u64, i64) {
    let segs = log
        .segments
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
        .collect();
    (segs, log.next, log.last_chunk(), log.last_timestamp)
}

/// Stops the writer as a crash would leave the files: everything sent is written (a
/// confirm waited for it), but no closing recovery point.
fn crash(mut log: StreamLog) {
    log.close_without_point();
}

/// A log in `dir` of 200 records `b{batch}-{i}` (40 appends of 5), a recovery point
/// every 1 KiB, the last append after the last point, ended by a crash.
fn fill(dir: &Path) -> Vec<(u64, String)> {
    let mut log = StreamLog::open(dir, BIG).unwrap();
    log.set_point_spacing(1024);
    for b in 0..39 {
        log.append(msgs(5, &format!("b{b}"))).wait().unwrap();
    }
    log.set_point_spacing(u64::MAX);
    log.append(msgs(5, "b39")).wait().unwrap();
    crash(log);
    (0..200u64)
        .map(|o| (o, format!("b{}-{}", o / 5, o % 5)))
        .collect()
}

fn point_of(dir: &Path) -> SealedIndex {
    SealedIndex::decode_point(&std::fs::read(index_file::point_path(dir, 0)).unwrap()).unwrap()
}

fn seg_len(dir: &Path) -> u64 {
    std::fs::metadata(writer::segment_path(dir, 0))
        .unwrap()
        .len()
}

/// The log as a scan of every frame builds it (the point set aside, then put back).
fn whole_scan(dir: &Path) -> (Shape, u64, u64, i64) {
    let p = index_file::point_path(dir, 0);
    let kept = std::fs::read(&p).ok();
    let _ = std::fs::remove_file(&p);
    let mut log = StreamLog::open(dir, BIG).unwrap();
    assert_eq!(log.recovered().from_point, 0);
    let s = shape(&log);
    log.stop_writer();
    let _ = std::fs::remove_file(&p);
    if let Some(b) = kept {
        std::fs::write(&p, b).unwrap();
    }
    s
}

#[test]
fn a_restart_after_a_crash_scans_only_what_follows_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    let p = point_of(dir.path());
    let len = seg_len(dir.path());
    assert!(p.bytes >= 1024 && p.bytes < len, "{} of {len}", p.bytes);
    let full = whole_scan(dir.path());
    let log = StreamLog::open(dir.path(), BIG).unwrap();
    let r = log.recovered();
    assert_eq!((r.scanned, r.from_point), (1, 1));
    assert_eq!(
        r.scanned_bytes,
        len - p.bytes,
        "only the bytes after the point"
    );
    assert_eq!(shape(&log), full, "what a whole scan builds");
    // The prefix was not read, so not verified; the rest was.
    assert_eq!(log.verified.through(0, 0), 0);
    assert_eq!(log.verified.through(0, p.bytes as usize), len as usize);
    assert_eq!(read_all(&log, 0, 17), want);
    assert!(log.verified.through(0, 0) > 0, "verified by the read");
    crash(log);
    assert!(
        index_file::point_path(dir.path(), 0).exists(),
        "kept: still valid"
    );
}

#[test]
fn a_clean_close_leaves_a_point_that_covers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    let mut log = StreamLog::open(dir.path(), BIG).unwrap();
    log.append(msgs(3, "c")).wait().unwrap();
    log.close();
    drop(log);
    let len = seg_len(dir.path());
    assert_eq!(
        (point_of(dir.path()).bytes, point_of(dir.path()).next),
        (len, 203)
    );
    let mut log = StreamLog::open(dir.path(), BIG).unwrap();
    assert_eq!(log.recovered().scanned_bytes, 0);
    assert_eq!(read_all(&log, 0, 50)[..200], want[..]);
    // New appends go on at the right offset.
    log.append(msgs(1, "d")).wait().unwrap();
    assert_eq!(log.next_offset(), 204);
    drop(log);
    let log = StreamLog::open(dir.path(), BIG).unwrap();
    assert_eq!(read_all(&log, 203, 1), vec![(203, "d-0".to_string())]);
}

#[test]
fn a_damaged_stale_or_misplaced_point_falls_back_to_a_whole_scan() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    let d = dir.path();
    let good = point_of(d);
    let full = whole_scan(d);
    let path = index_file::point_path(d, 0);
    let mut flipped = good.encode_point();
    flipped[60] ^= 0x04;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped bit", flipped),
        ("a sealed index's magic", good.encode()),
        (
            "another segment's",
            SealedIndex {
                first: 7,
                ..good.clone()
            }
            .encode_point(),
        ),
        (
            "past the file",
            SealedIndex {
                bytes: seg_len(d) + 1,
                ..good.clone()
            }
            .encode_point(),
        ),
        (
            "its end inside a frame",
            SealedIndex {
                bytes: good.bytes - 1,
                ..good.clone()
            }
            .encode_point(),
        ),
        (
            "its next offset wrong",
            SealedIndex {
                next: good.next + 1,
                ..good.clone()
            }
            .encode_point(),
        ),
        (
            "its last entry elsewhere",
            SealedIndex {
                entries: vec![(0, 0, 0), (5, 0, 17)],
                ..good.clone()
            }
            .encode_point(),
        ),
    ];
    for (what, bytes) in bad {
        std::fs::write(&path, &bytes).unwrap();
        let log = StreamLog::open(d, BIG).unwrap();
        let r = log.recovered();
        assert_eq!((r.from_point, r.scanned_bytes), (0, seg_len(d)), "{what}");
        assert_eq!(shape(&log), full, "{what}");
        assert_eq!(read_all(&log, 0, 64), want, "{what}");
        crash(log);
        // Replaced by a point of what the scan checked, written at open.
        let fresh = point_of(d);
        assert_eq!((fresh.bytes, fresh.next), (seg_len(d), 200), "{what}");
    }
}

#[test]
fn a_torn_tail_after_the_point_is_cut_and_appends_go_on_at_the_right_offset() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    let d = dir.path();
    let p = point_of(d);
    // The last record torn (its last 3 bytes never written).
    let seg = writer::segment_path(d, 0);
    let len = seg_len(d);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let mut log = StreamLog::open(d, BIG).unwrap();
    assert_eq!(
        log.recovered().from_point,
        1,
        "the point is before the tear"
    );
    assert_eq!(log.next_offset(), 199);
    assert!(
        seg_len(d) < len - 3 && seg_len(d) > p.bytes,
        "cut at the frame"
    );
    assert_eq!(read_all(&log, 0, 64), want[..199].to_vec());
    log.append(msgs(1, "n")).wait().unwrap();
    crash(log);
    let log = StreamLog::open(d, BIG).unwrap();
    assert_eq!(log.next_offset(), 200);
    assert_eq!(read_all(&log, 195, 3)[4], (199, "n-0".to_string()));
}

#[test]
fn rolling_and_retention_remove_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let points = || -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().into_string().ok()?;
                n.strip_suffix(".idx.partial")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    };
    let mut log = StreamLog::open(d, 2048).unwrap();
    log.set_point_spacing(256);
    for b in 0..40 {
        log.append(msgs(5, &format!("b{b}"))).wait().unwrap();
    }
    let segs: Vec<u64> = log.segments.iter().map(|s| s.first).collect();
    assert!(segs.len() > 3);
    let removed = log.trim(Some(4096), None, now_millis());
    assert!(removed > 0);
    log.close();
    // Only the active segment keeps one (every sealed one has its index file).
    assert_eq!(points(), vec![*segs.last().unwrap()]);
    drop(log);
    // A crash between an index file and the removal of the point: the point of a
    // sealed segment is not used, and removed.
    let sealed = segs[segs.len() - 2];
    let idx = SealedIndex::decode(&std::fs::read(index_file::path(d, sealed)).unwrap()).unwrap();
    index_file::write_point(d, sealed, &idx.encode_point()).unwrap();
    let log = StreamLog::open(d, 2048).unwrap();
    assert_eq!(log.recovered().from_point, 1, "the active one's");
    assert_eq!(points(), vec![*segs.last().unwrap()]);
    assert_eq!(log.first_offset(), segs[removed]);
}

#[test]
fn a_directory_without_a_point_gets_one_at_open_not_at_its_first_append() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path());
    // As a directory written before recovery points existed leaves it.
    std::fs::remove_file(index_file::point_path(dir.path(), 0)).unwrap();
    let log = StreamLog::open(dir.path(), BIG).unwrap();
    assert_eq!(log.recovered().from_point, 0, "scanned whole");
    // No append: a crash now must not cost the whole scan again.
    crash(log);
    let len = seg_len(dir.path());
    assert_eq!(
        (point_of(dir.path()).bytes, point_of(dir.path()).next),
        (len, 200)
    );
    let log = StreamLog::open(dir.path(), BIG).unwrap();
    assert_eq!(
        (log.recovered().from_point, log.recovered().scanned_bytes),
        (1, 0)
    );
    assert_eq!(read_all(&log, 0, 50), want);
}
