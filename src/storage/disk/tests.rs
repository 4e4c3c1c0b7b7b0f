//! Tests of the disk store's own machinery: recovery from damage, reclamation, group
//! commit, I/O errors. The behaviour every store shares is in `storage/tests`.

use super::frame::{self, FrameAt};
use super::segment::{self, HEADER_LEN};
use crate::storage::tests::harness::{body_of, publish, q, DiskHarness, Harness};
use crate::storage::{
    DiskStore, FsyncPolicy, MessageStore, QueueId, Record, StorageError, StorageOptions,
};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

/// Ids of the recovered messages of `queue`.
fn ids(h: &DiskHarness, queue: &QueueId) -> Vec<u64> {
    let r = h.store().recover().unwrap();
    r.get(queue)
        .map(|rq| rq.messages.iter().map(|m| m.id).collect())
        .unwrap_or_default()
}

/// The segment files holding records, oldest first, with their frame offsets.
fn frames(h: &DiskHarness) -> Vec<(PathBuf, Vec<(usize, usize)>)> {
    let dir = h.options.messages_dir();
    let mut out = Vec::new();
    for (_, path) in segment::list(&dir).unwrap() {
        let data = fs::read(&path).unwrap();
        let mut off = HEADER_LEN as usize;
        let mut spans = Vec::new();
        while let FrameAt::Good { next, .. } = frame::read_at(&data, off) {
            spans.push((off, next));
            off = next;
        }
        if !spans.is_empty() {
            out.push((path, spans));
        }
    }
    out
}

/// A closed store with `n` messages of queue `jobs`, one record each.
fn closed_store_with(n: u64, segment_size: u64) -> DiskHarness {
    let mut h = DiskHarness::new(segment_size);
    let queue = q("jobs");
    for i in 1..=n {
        h.store()
            .append(vec![publish(&queue, i, &format!("message {i}"))], true)
            .wait()
            .unwrap();
    }
    h.close();
    h
}

#[test]
fn a_torn_last_record_is_truncated_at_every_cut_point() {
    let mut h = closed_store_with(5, 64 * 1024);
    let (path, spans) = frames(&h).pop().unwrap();
    let original = fs::read(&path).unwrap();
    let (start, end) = *spans.last().unwrap();
    for garbage in [0u8, 0xA5] {
        for cut in start..end {
            let mut data = original.clone();
            data[cut..end].fill(garbage);
            fs::write(&path, &data).unwrap();
            h.open();
            let report = h.store().recovery_report().clone();
            assert_eq!(ids(&h, &q("jobs")), vec![1, 2, 3, 4], "cut at {cut}");
            let torn = cut > start || garbage != 0;
            assert_eq!(report.truncated.len(), usize::from(torn), "cut at {cut}");
            assert!(report.skipped.is_empty(), "cut at {cut}: {report:?}");
            if torn {
                assert_eq!(report.truncated[0].offset, start as u64);
                assert_eq!(report.truncated[0].file, path);
            }
            // The log goes on cleanly after the repair.
            h.store()
                .append(vec![publish(&q("jobs"), 6, "after")], true)
                .wait()
                .unwrap();
            h.restart();
            assert!(h.store().recovery_report().truncated.is_empty());
            assert_eq!(ids(&h, &q("jobs")), vec![1, 2, 3, 4, 6], "cut at {cut}");
            h.close();
            // Start every cut point from the same files.
            for (_, p) in segment::list(&h.options.messages_dir()).unwrap() {
                if p != path {
                    fs::remove_file(p).unwrap();
                }
            }
            fs::write(&path, &original).unwrap();
        }
    }
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_and_reported() {
    let mut h = closed_store_with(10, 1 << 20);
    let (path, spans) = frames(&h).pop().unwrap();
    let (start, end) = spans[4];
    let mut data = fs::read(&path).unwrap();
    data[end - 2] ^= 0xFF; // inside message 5's body
    fs::write(&path, &data).unwrap();
    h.open();
    assert_eq!(ids(&h, &q("jobs")), vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
    let report = h.store().recovery_report();
    assert!(report.truncated.is_empty());
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].file, path);
    assert_eq!(report.skipped[0].offset, start as u64);
    assert_eq!(report.skipped[0].len, (end - start) as u64);
}

#[test]
fn a_damaged_length_in_the_middle_is_skipped_by_resynchronising() {
    let mut h = closed_store_with(10, 1 << 20);
    let (path, spans) = frames(&h).pop().unwrap();
    let (start, _) = spans[2];
    let mut data = fs::read(&path).unwrap();
    data[start + 1] = 0x7F; // message 3's length now runs far past the data
    fs::write(&path, &data).unwrap();
    h.open();
    assert_eq!(ids(&h, &q("jobs")), vec![1, 2, 4, 5, 6, 7, 8, 9, 10]);
    let report = h.store().recovery_report();
    assert!(report.truncated.is_empty(), "{report:?}");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].offset, start as u64);
}

#[test]
fn damage_in_an_older_segment_is_skipped_and_the_store_opens() {
    let mut h = closed_store_with(300, 4096);
    let all = frames(&h);
    assert!(all.len() >= 3, "several segments");
    let (path, spans) = &all[0];
    let (start, end) = *spans.last().unwrap();
    let mut data = fs::read(path).unwrap();
    data[start..end].fill(0xEE); // the last record of a full, older segment
    fs::write(path, &data).unwrap();
    h.open();
    let got = ids(&h, &q("jobs"));
    assert_eq!(got.len(), 299, "{got:?}");
    let report = h.store().recovery_report();
    assert!(report.truncated.is_empty(), "{report:?}");
    assert_eq!(report.skipped[0].file, *path);
    assert_eq!(report.skipped[0].offset, start as u64);
}

#[test]
fn fully_acked_segments_are_deleted() {
    let h = DiskHarness::new(4096);
    let queue = q("jobs");
    let body = "x".repeat(200);
    let batch: Vec<Record> = (1..=200).map(|i| publish(&queue, i, &body)).collect();
    h.store().append(batch, true).wait().unwrap();
    let before = h.store().segment_files().unwrap().len();
    assert!(before >= 10, "{before} segments");
    let ack = Record::Ack {
        queue: queue.clone(),
        ids: (1..=200).collect(),
    };
    h.store().append(vec![ack], true).wait().unwrap();
    h.store().flush().wait().unwrap();
    let after = h.store().segment_files().unwrap().len();
    assert!(after <= 3, "{after} segments left of {before}");
    assert!(h.store().reclaimed_segments() as usize >= before - 3);
    assert!(ids(&h, &queue).is_empty());
}

#[test]
fn disk_use_follows_queue_depth_not_history() {
    let mut h = DiskHarness::new(4096);
    let (slow, busy) = (q("slow"), q("busy"));
    h.store()
        .append(vec![publish(&slow, 1, "kept")], true)
        .wait()
        .unwrap();
    h.store()
        .append(
            vec![Record::Delivered {
                queue: slow.clone(),
                up_to: 1,
            }],
            false,
        )
        .wait()
        .unwrap();
    let body = "y".repeat(300);
    for i in 1..=300u64 {
        let mut batch = vec![publish(&busy, i, &body)];
        if i > 1 {
            batch.push(Record::Ack {
                queue: busy.clone(),
                ids: vec![i - 1],
            });
        }
        h.store().append(batch, true).wait().unwrap();
    }
    h.store().flush().wait().unwrap();
    let files = h.store().segment_files().unwrap().len();
    assert!(files <= 6, "{files} segment files for 2 live messages");
    assert!(h.store().reclaimed_segments() > 20);
    h.restart();
    let r = h.store().recover().unwrap();
    let slow_msgs = &r[&slow].messages;
    assert_eq!(slow_msgs.len(), 1);
    assert!(
        slow_msgs[0].redelivered,
        "the watermark outlives its segment"
    );
    let busy_ids: Vec<u64> = r[&busy].messages.iter().map(|m| m.id).collect();
    assert_eq!(busy_ids, vec![300], "no acked message comes back");
}

#[test]
fn group_commit_shares_fsyncs() {
    let h = DiskHarness::new(32 << 20);
    let store = h.store();
    let threads = 4;
    let per_thread = 500u64;
    let before = store.sync_count();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let queue = q(&format!("q{t}"));
                let completions: Vec<_> = (1..=per_thread)
                    .map(|i| store.append(vec![publish(&queue, i, "payload")], true))
                    .collect();
                for c in completions {
                    c.wait().unwrap();
                }
            });
        }
    });
    let appends = threads as u64 * per_thread;
    let syncs = store.sync_count() - before;
    assert!(syncs >= 1);
    assert!(
        syncs * 10 <= appends,
        "{syncs} fsyncs for {appends} durable appends"
    );
}

#[test]
fn a_durable_append_completes_after_an_fsync_and_a_lazy_one_without() {
    let h = DiskHarness::new(1 << 20);
    let queue = q("jobs");
    let before = h.store().sync_count();
    h.store()
        .append(vec![publish(&queue, 1, "lazy")], false)
        .wait()
        .unwrap();
    assert_eq!(h.store().sync_count(), before);
    h.store()
        .append(vec![publish(&queue, 2, "durable")], true)
        .wait()
        .unwrap();
    assert_eq!(h.store().sync_count(), before + 1);
}

#[test]
fn interval_fsync_completes_durable_appends_after_a_shared_fsync() {
    let h = DiskHarness::with(1 << 20, FsyncPolicy::IntervalMs(20));
    let queue = q("jobs");
    let completions: Vec<_> = (1..=200)
        .map(|i| h.store().append(vec![publish(&queue, i, "m")], true))
        .collect();
    for c in completions {
        c.wait().unwrap();
    }
    let syncs = h.store().sync_count();
    assert!((1..=20).contains(&syncs), "{syncs} fsyncs");
}

#[test]
fn an_io_error_fails_the_append_and_then_every_append() {
    let mut h = DiskHarness::new(1 << 20);
    let queue = q("jobs");
    h.store()
        .append(vec![publish(&queue, 1, "stored")], true)
        .wait()
        .unwrap();
    h.store().inject_io_failure(true);
    let e = h
        .store()
        .append(vec![publish(&queue, 2, "lost")], true)
        .wait()
        .unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert!(h.store().error().is_some_and(|e| e.is_disk_full()));
    h.store().inject_io_failure(false);
    let e = h
        .store()
        .append(vec![publish(&queue, 3, "refused")], false)
        .wait()
        .unwrap_err();
    assert!(matches!(e, StorageError::Failed(_)), "{e}");
    assert!(h.store().flush().wait().is_err());
    h.restart();
    assert!(h.store().error().is_none());
    assert_eq!(ids(&h, &queue), vec![1]);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let h = DiskHarness::new(1 << 20);
    let e = DiskStore::open(&h.options).unwrap_err();
    assert!(matches!(e, StorageError::Locked(_)), "{e}");
    assert!(e.to_string().contains("storage.data_dir"), "{e}");
}

#[test]
fn a_data_dir_that_is_a_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let e = DiskStore::open(&StorageOptions::in_dir(&file)).unwrap_err();
    assert!(e.to_string().contains("not-a-dir"), "{e}");
}

#[test]
fn a_record_larger_than_a_segment_is_stored() {
    let mut h = DiskHarness::new(4096);
    let queue = q("jobs");
    let big = "z".repeat(10_000);
    h.store()
        .append(
            vec![publish(&queue, 1, "small"), publish(&queue, 2, &big)],
            true,
        )
        .wait()
        .unwrap();
    h.store()
        .append(vec![publish(&queue, 3, "after")], true)
        .wait()
        .unwrap();
    h.restart();
    let r = h.store().recover().unwrap();
    let bodies: Vec<String> = r[&queue]
        .messages
        .iter()
        .map(|m| body_of(&m.message))
        .collect();
    assert_eq!(bodies, vec!["small".to_string(), big, "after".to_string()]);
}

#[test]
fn appends_from_many_threads_are_all_recovered() {
    let mut h = DiskHarness::new(64 * 1024);
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = h.store();
            s.spawn(move || {
                let queue = q(&format!("q{t}"));
                for i in 1..=100 {
                    store
                        .append(vec![publish(&queue, i, "m")], true)
                        .wait()
                        .unwrap();
                }
            });
        }
    });
    h.restart();
    let r = h.store().recover().unwrap();
    for t in 0..4 {
        let got: Vec<u64> = r[&q(&format!("q{t}"))]
            .messages
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(got, (1..=100).collect::<Vec<_>>());
    }
}

#[test]
fn the_store_can_be_shared_behind_an_arc_dyn() {
    let h = DiskHarness::new(1 << 20);
    let dir = h.options.clone();
    drop(h.store().flush().wait());
    drop(h);
    let store: Arc<dyn MessageStore> = Arc::new(DiskStore::open(&dir).unwrap());
    store
        .append(vec![publish(&q("jobs"), 1, "m")], true)
        .wait()
        .unwrap();
    assert_eq!(store.recover().unwrap()[&q("jobs")].messages.len(), 1);
}

/// Copies every file of `from` into a new temporary directory.
fn snapshot_dir(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let messages = to.path().join("messages");
    fs::create_dir_all(&messages).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), messages.join(entry.file_name())).unwrap();
    }
    to
}

#[test]
fn the_files_of_a_running_store_recover_every_completed_append() {
    // Copying the files while the store runs is what a kill -9 leaves behind: whatever
    // the writer had written, nothing it had not.
    let h = DiskHarness::new(4096);
    let queue = q("jobs");
    for i in 1..=120u64 {
        let mut batch = vec![publish(&queue, i, &format!("m{i}"))];
        if i % 3 == 0 {
            batch.push(Record::Ack {
                queue: queue.clone(),
                ids: vec![i - 1],
            });
        }
        h.store().append(batch, i % 2 == 0).wait().unwrap();
    }
    // Let the writer finish reclaiming after the last group: a file-by-file copy is
    // not atomic the way a crash is.
    h.store().flush().wait().unwrap();
    let copy = snapshot_dir(&h.options.messages_dir());
    let store = DiskStore::open(&StorageOptions::in_dir(copy.path())).unwrap();
    let r = store.recover().unwrap();
    let got: Vec<u64> = r[&queue].messages.iter().map(|m| m.id).collect();
    let want: Vec<u64> = (1..=120).filter(|i| (i + 1) % 3 != 0).collect();
    assert_eq!(got, want);
    assert!(store.recovery_report().truncated.is_empty());
    assert_eq!(got, ids(&h, &queue), "the running store agrees");
}

#[test]
fn recovery_reads_back_only_the_head_of_a_long_queue() {
    let mut h = DiskHarness::new(8192);
    h.options.queue_ram_messages = 10;
    h.restart();
    let queue = q("long");
    let records = (1..=50)
        .map(|i| publish(&queue, i, &format!("m{i}")))
        .collect();
    h.store().append(records, true).wait().unwrap();
    let delivered = Record::Delivered {
        queue: queue.clone(),
        up_to: 20,
    };
    let ack = Record::Ack {
        queue: queue.clone(),
        ids: vec![1, 2, 30],
    };
    h.store().append(vec![delivered, ack], true).wait().unwrap();
    // Twice: at open, and by a rescan of the running store (after an append).
    for round in 0..2 {
        h.restart();
        if round == 1 {
            h.store().append(vec![], true).wait().unwrap();
        }
        let r = h.store().recover().unwrap();
        let rq = &r[&queue];
        let with_bodies: Vec<(u64, String)> = rq
            .messages
            .iter()
            .map(|m| (m.id, body_of(&m.message)))
            .collect();
        let want: Vec<(u64, String)> = (3..=12).map(|i| (i, format!("m{i}"))).collect();
        assert_eq!(with_bodies, want, "round {round}");
        let paged: Vec<u64> = rq.paged.iter().map(|p| p.id).collect();
        let want: Vec<u64> = (13..=50).filter(|i| *i != 30).collect();
        assert_eq!(paged, want, "round {round}");
        assert!(rq.paged.iter().all(|p| p.redelivered == (p.id <= 20)));
        assert!(
            rq.paged
                .iter()
                .all(|p| p.size as usize == format!("m{}", p.id).len()),
            "sizes are body lengths, as length limits count them"
        );
        let read = h.store().read(&queue, paged.clone()).wait().unwrap();
        assert_eq!(read.len(), paged.len());
        assert!(read.iter().all(|(id, m)| body_of(m) == format!("m{id}")));
        assert_eq!(rq.next_id, 51);
    }
}
