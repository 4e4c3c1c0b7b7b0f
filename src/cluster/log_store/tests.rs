//! The log's records, segments and recovery, and the bound on replication reads.

use super::*;
use crate::cluster::quorum::group::{QueueTypes, StoredMessage};
use crate::cluster::quorum::machine::Command;
use openraft::{CommittedLeaderId, EntryPayload};
use std::fs::OpenOptions;

/// The segment starting at `first` in `dir`.
fn segment(dir: &Path, first: u64) -> PathBuf {
    dir.join(segments::name(first))
}

fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// An entry of a quorum queue's log publishing one message of `kib` KiB.
fn publish(index: u64, kib: usize) -> Entry<QueueTypes> {
    Entry::<QueueTypes> {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::Enqueue(vec![StoredMessage::from(
            &crate::message::Message::new("", "q", vec![7u8; kib << 10]),
        )])),
    }
}

fn indexes<C: Logged>(store: &LogStore<C>) -> Vec<u64>
where
    Entry<C>: Serialize + DeserializeOwned + Clone,
{
    store.lock().entries.keys().copied().collect()
}

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Blank,
    }
}

#[test]
fn a_torn_tail_is_truncated_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    store.append_file(&[entry(1), entry(2)]).unwrap();
    // Half a record: an append cut by a crash.
    let mut f = OpenOptions::new()
        .append(true)
        .open(segment(dir.path(), 1))
        .unwrap();
    let third = record(&entry(3)).unwrap();
    f.write_all(&third[..third.len() / 2]).unwrap();
    drop(f);
    let reopened: LogStore = LogStore::open(dir.path()).unwrap();
    let indexes: Vec<u64> = reopened.lock().entries.keys().copied().collect();
    assert_eq!(indexes, vec![1, 2]);
    let len = std::fs::metadata(segment(dir.path(), 1)).unwrap().len();
    assert_eq!(len as usize, record(&entry(1)).unwrap().len() * 2);
}

#[test]
fn a_corrupt_record_ends_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    store.append_file(&[entry(1), entry(2)]).unwrap();
    let path = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let reopened: LogStore = LogStore::open(dir.path()).unwrap();
    assert_eq!(reopened.lock().entries.len(), 1);
}

#[tokio::test]
async fn a_replication_read_is_bounded_in_bytes_but_never_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    let entries = [
        publish(1, 400),
        publish(2, 400),
        publish(3, 400),
        publish(4, 400),
        publish(5, 2048),
    ];
    store.append_file(&entries).unwrap();
    // The sizes come back from the file when it is opened again.
    let mut reopened: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    let indexes =
        |v: Vec<Entry<QueueTypes>>| -> Vec<u64> { v.iter().map(|e| e.log_id.index).collect() };
    let read = reopened.limited_get_log_entries(1, 6).await.unwrap();
    assert_eq!(
        indexes(read),
        [1, 2],
        "two of 400 KiB fit in {MAX_APPEND_BYTES}"
    );
    let read = reopened.limited_get_log_entries(4, 6).await.unwrap();
    assert_eq!(indexes(read), [4]);
    // An entry larger than the bound still goes, alone.
    let read = reopened.limited_get_log_entries(5, 6).await.unwrap();
    assert_eq!(indexes(read), [5]);
    // Other reads are whole.
    let read = reopened.try_get_log_entries(1..6).await.unwrap();
    assert_eq!(indexes(read), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_purge_deletes_whole_old_segments_and_rewrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    // 40 appends of 16 KiB: segments of 64 KiB in unit tests, so about 10 of them.
    for i in 1..=40 {
        store.append_file(&[publish(i, 16)]).unwrap();
    }
    let mut store: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    let before = store.files().firsts();
    assert!(before.len() >= 8, "segments: {before:?}");
    let len = |f: &u64| std::fs::metadata(segment(dir.path(), *f)).unwrap().len();
    let lens_before: BTreeMap<u64, u64> = before.iter().map(|f| (*f, len(f))).collect();
    store.purge(log_id(25)).await.unwrap();
    let after = store.files().firsts();
    // Gone: every segment whose entries are all at or before 25; kept as they were
    // (not rewritten): the one holding 26 and the later ones.
    let kept: Vec<u64> = before
        .iter()
        .enumerate()
        .filter(|(i, _)| before.get(i + 1).is_none_or(|next| *next > 26))
        .map(|(_, f)| *f)
        .collect();
    assert_eq!(after, kept);
    assert!(after.len() < before.len());
    for f in &after {
        assert_eq!(len(f), lens_before[f], "segment {f} rewritten");
    }
    assert_eq!(indexes(&store), (26..=40).collect::<Vec<_>>());
    // A restart reads what is kept, and skips the purged entries of a kept segment.
    let reopened: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&reopened), (26..=40).collect::<Vec<_>>());
    assert_eq!(reopened.lock().last_purged, Some(log_id(25)));
}

#[tokio::test]
async fn a_truncation_rewrites_one_segment_and_removes_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    for i in 1..=40 {
        store.append_file(&[publish(i, 16)]).unwrap();
    }
    let mut store: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    store.truncate(log_id(22)).await.unwrap();
    assert_eq!(indexes(&store), (1..=21).collect::<Vec<_>>());
    assert!(store.files().firsts().iter().all(|f| *f < 22));
    // The next append (a new leader's entry 22) follows on, and a restart reads all.
    store.append_file(&[publish(22, 1)]).unwrap();
    let reopened: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&reopened), (1..=22).collect::<Vec<_>>());
    assert_eq!(
        reopened.lock().entries[&22],
        publish(22, 1),
        "the new entry, not the old one"
    );
}

#[test]
fn a_log_from_before_segments_becomes_the_first_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for i in 3..=5 {
        bytes.extend(record(&entry(i)).unwrap());
    }
    std::fs::write(dir.path().join("log"), &bytes).unwrap();
    let store: LogStore = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&store), [3, 4, 5]);
    assert!(!dir.path().join("log").exists());
    assert_eq!(std::fs::read(segment(dir.path(), 3)).unwrap(), bytes);
    store.append_file(&[entry(6)]).unwrap();
    let reopened: LogStore = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&reopened), [3, 4, 5, 6]);
}

#[test]
fn a_torn_record_in_a_segment_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let store: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    for i in 1..=12 {
        store.append_file(&[publish(i, 16)]).unwrap();
    }
    let firsts = store.files().firsts();
    assert!(firsts.len() >= 3, "{firsts:?}");
    // Damage the last record of the second segment: the log ends before it, and the
    // later segments go (nothing after a gap is kept).
    let second = segment(dir.path(), firsts[1]);
    let mut b = std::fs::read(&second).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    std::fs::write(&second, &b).unwrap();
    let reopened: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&reopened), (1..firsts[2] - 1).collect::<Vec<_>>());
    assert_eq!(reopened.files().firsts(), firsts[..2]);
    assert!(!segment(dir.path(), firsts[2]).exists());
}

/// The record format as it was written before records were encoded in place: the
/// entry encoded alone, then its length and CRC put before it.
fn record_before(entry: &Entry<QueueTypes>) -> Vec<u8> {
    let body = rmp_serde::to_vec(entry).unwrap();
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn records_encoded_in_place_are_the_bytes_logs_already_hold() {
    let entries = [publish(1, 1), publish(2, 0), publish(3, 3)];
    let mut out = b"before".to_vec();
    let mut expected = out.clone();
    for e in &entries {
        let n = put_record(&mut out, e).unwrap();
        let old = record_before(e);
        assert_eq!(n, old.len());
        expected.extend(old);
    }
    assert_eq!(out, expected);
    // And an append (through the reused buffer, twice on this thread) reads back.
    let dir = tempfile::tempdir().unwrap();
    let store: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    let sizes = store.append_file(&entries[..2]).unwrap();
    assert_eq!(
        sizes,
        [
            record_before(&entries[0]).len(),
            record_before(&entries[1]).len()
        ]
    );
    store.append_file(&entries[2..]).unwrap();
    let on_disk = std::fs::read(segment(dir.path(), 1)).unwrap();
    assert_eq!(on_disk, expected[b"before".len()..]);
    let reopened: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&reopened), [1, 2, 3]);
}

#[test]
fn a_snapshot_written_through_the_buffer_is_the_encoded_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    let value = (7u64, vec![9u8; 600 << 10], "tail");
    write_atomic_with(&path, |f| {
        rmp_serde::encode::write(f, &value).map_err(std::io::Error::other)
    })
    .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        rmp_serde::to_vec(&value).unwrap()
    );
    assert!(!path.with_extension("tmp").exists());
}

/// Appends `entries` to the files and to the log in memory, as `append` does.
fn append_all(store: &LogStore<QueueTypes>, entries: &[Entry<QueueTypes>]) {
    let sizes = store.append_file(entries).unwrap();
    let mut inner = store.lock();
    for (e, n) in entries.iter().zip(sizes) {
        inner.sizes.insert(e.log_id.index, n);
        inner.entries.insert(e.log_id.index, e.clone());
    }
}

#[tokio::test]
async fn appends_after_a_truncation_go_to_the_rewritten_segment_not_the_one_kept_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    for i in 1..=40 {
        append_all(&store, &[publish(i, 16)]);
    }
    let last = *store.files().firsts().last().unwrap();
    assert!(last < 40, "segments: {:?}", store.files().firsts());
    assert_eq!(store.files().open_segment(), Some(last), "kept open");
    // The last segment rewritten without 40; then a new leader's 40 appended.
    store.truncate(log_id(40)).await.unwrap();
    append_all(&store, &[publish(40, 1)]);
    let reopened: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&reopened), (1..=40).collect::<Vec<_>>());
    assert_eq!(reopened.lock().entries[&40], publish(40, 1));
    // The last segment removed, the one before rewritten, and appended after.
    store.truncate(log_id(last)).await.unwrap();
    append_all(&store, &[publish(last, 2)]);
    append_all(&store, &[publish(last + 1, 3)]);
    let reopened: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&reopened), (1..=last + 1).collect::<Vec<_>>());
    assert_eq!(reopened.lock().entries[&last], publish(last, 2));
    assert_eq!(reopened.lock().entries[&(last + 1)], publish(last + 1, 3));
}

#[tokio::test]
async fn a_log_sharing_its_encodings_writes_the_same_records() {
    let entries = [publish(1, 1), publish(2, 0), publish(3, 3)];
    let expected: Vec<u8> = entries.iter().flat_map(record_before).collect();
    // A leader's log (a peer to replicate to): it keeps what it encodes.
    let dir = tempfile::tempdir().unwrap();
    let kept = Arc::new(Encoded::new());
    kept.peer_added(2);
    let leader = LogStore::<QueueTypes>::open(dir.path())
        .unwrap()
        .with_encoded(kept.clone());
    let sizes = leader.append_file(&entries[..2]).unwrap();
    assert_eq!(
        sizes,
        [
            record_before(&entries[0]).len(),
            record_before(&entries[1]).len()
        ]
    );
    leader.append_file(&entries[2..]).unwrap();
    assert_eq!(std::fs::read(segment(dir.path(), 1)).unwrap(), expected);
    for e in &entries {
        assert_eq!(kept.get(&e.log_id).unwrap(), rmp_serde::to_vec(e).unwrap());
    }
    // A follower's log: it writes the entries from the bytes they came in, and keeps
    // nothing of its own.
    let dir = tempfile::tempdir().unwrap();
    let received = Arc::new(Encoded::new());
    for e in &entries {
        received.keep(e.log_id, rmp_serde::to_vec(e).unwrap().into());
    }
    let follower = LogStore::<QueueTypes>::open(dir.path())
        .unwrap()
        .with_encoded(received.clone());
    follower.append_file(&entries).unwrap();
    assert_eq!(std::fs::read(segment(dir.path(), 1)).unwrap(), expected);
    assert_eq!(received.counts().received, 3);
    received.forget(&entries.iter().map(|e| e.log_id).collect::<Vec<_>>());
    follower.append_file(&[publish(4, 1)]).unwrap();
    assert_eq!(received.kept(), Vec::<u64>::new(), "no peer: nothing kept");
    let reopened: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&reopened), [1, 2, 3, 4]);
}
