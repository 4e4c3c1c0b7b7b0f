//! The Raft log and vote on disk, under `data_dir/raft/`.
//!
//! The log: one record per entry, `[len u32 LE][crc32 u32 LE][MessagePack entry]`,
//! appended and fsynced before openraft is told they are flushed, in segment files
//! ([`segments`]: a purge deletes whole old segments, a truncation rewrites one).
//! Opening reads every record and ends the log at the first short or corrupt one (a
//! torn tail: the append that was cut never reported flushed, so no one counted on
//! it). `purged`: the last purged log id (entries at or before it are ignored when
//! read back). `vote`: the last vote (temporary file, fsync, rename). Entries are also
//! kept in memory: reads (replication to followers) must be fast.
//! A quorum queue's log shares its records' bodies with the cluster's append frames
//! ([`encoded`]): each entry is encoded once per member, not once more per follower.
//!
//! A read for replication returns at most [`MAX_APPEND_BYTES`] of records (at least
//! one entry): a new leader probes a follower's log by sending half of its own, and a
//! quorum queue's entries carry up to a thousand messages each, so an unbounded read
//! made an append of tens of megabytes that no follower could take within the
//! heartbeat's time to live; openraft sent it again and again, and the group never
//! committed under its new leader.
//!
//! Generic over the Raft type configuration: the definitions log and each quorum
//! queue group's log (one directory per group) use the same records.

use super::stall::blocking;
use super::types::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, RaftTypeConfig, StorageError,
    Vote,
};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: std::io::Error) -> StorageError<NodeId> {
    StorageError::from_io_error(subject, verb, e)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Writes `bytes` to `path` through a temporary file: fsynced, renamed, and the
/// directory fsynced, so a crash leaves the old or the new content, never a mix.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes, through a buffer: a quorum queue's
/// snapshot (the whole queue, hundreds of megabytes with a backlog) is encoded straight
/// into the file instead of into a vector of its size first, which cost as much CPU
/// in reallocations, copies and page faults as the encoding itself.
pub(super) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::io::BufWriter::with_capacity(256 << 10, File::create(&tmp)?);
    write(&mut f)?;
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The writes into one directory serialized with its removal. A quorum queue's
/// group is deleted while its member may still be writing: openraft builds a snapshot
/// in a task of its own that outlives the member's shutdown, and a snapshot written
/// while the directory was being removed failed with ENOENT (or, created between the
/// removal's listing and its `rmdir`, left a stray directory). Once
/// [`remove`](DirGuard::remove) has run, writes are skipped: the group is gone, and
/// nothing of it is to be kept.
///
/// Writes share the guard (a read lock): they go to different files, and only the
/// removal must exclude them. Under a mutex, the member's snapshot (the whole queue,
/// seconds to encode and write with hundreds of megabytes queued) held back every
/// append of its log until it was written, and with two members left after a failover
/// the group committed nothing meanwhile.
#[derive(Debug, Default)]
pub struct DirGuard {
    removed: RwLock<bool>,
}

impl DirGuard {
    /// Runs `write` unless the directory was removed: `None` then (nothing written).
    /// Writes run side by side; a removal waits for those in progress.
    pub fn write<T>(
        &self,
        write: impl FnOnce() -> std::io::Result<T>,
    ) -> std::io::Result<Option<T>> {
        let removed = self.removed.read().unwrap_or_else(|p| p.into_inner());
        if *removed {
            return Ok(None);
        }
        write().map(Some)
    }

    /// Removes `dir` and everything in it, after any write in progress; later writes
    /// are skipped. A directory already gone is no error.
    pub fn remove(&self, dir: &Path) -> std::io::Result<()> {
        let mut removed = self.removed.write().unwrap_or_else(|p| p.into_inner());
        *removed = true;
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

/// What a log of entries of `C` needs: entries it can write, read back and hand out.
pub trait Logged: RaftTypeConfig<NodeId = NodeId, Entry = Entry<Self>> + Sized {}

impl<C> Logged for C
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
    Entry<C>: Serialize + DeserializeOwned + Clone,
{
}

/// One record's bytes.
#[cfg(test)]
fn record<C: Logged>(entry: &Entry<C>) -> std::io::Result<Vec<u8>>
where
    Entry<C>: Serialize,
{
    let mut out = Vec::new();
    put_record(&mut out, entry)?;
    Ok(out)
}

/// Appends `value`'s record (`[len][crc32][MessagePack]`) to `out`; answers its size.
/// Encoded in place behind a header filled in afterwards: a quorum queue's entry
/// carries up to a thousand message bodies, and encoding it into a vector of its own,
/// then copying that into a record and the record into the append's buffer, copied
/// every body three times on every member (a fifth of a follower's CPU went to these
/// copies, the growing vectors' reallocations and their page faults).
pub(super) fn put_record<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> std::io::Result<usize> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    if let Err(e) = rmp_serde::encode::write(out, value) {
        out.truncate(start);
        return Err(invalid(e));
    }
    let len = out.len() - start - 8;
    let Ok(len32) = u32::try_from(len) else {
        out.truncate(start);
        return Err(invalid(format!("a log record of {len} bytes")));
    };
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len + 8)
}

/// Most bytes of records one replication read hands out (unless its first entry alone
/// is larger): an append must reach a follower, and be written there, within a
/// heartbeat interval (openraft's time to live for an append), with room to spare on
/// a debug build and a loaded machine.
pub const MAX_APPEND_BYTES: usize = 1 << 20;

/// Most bytes of an append's buffer kept for the next append on the same thread.
const SCRATCH_KEPT: usize = 4 << 20;

thread_local! {
    /// The buffer an append encodes its records into, reused by the next append on
    /// this thread: a busy quorum queue appends about a megabyte at a time (a thousand
    /// 1 KiB messages per entry), and a fresh buffer grown to that size each time
    /// cost its reallocations' copies and a page fault per page touched.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads the records of `bytes`: each entry with its record's size, and the length of
/// the valid prefix.
fn parse<C: Logged>(bytes: &[u8]) -> (Vec<(Entry<C>, usize)>, usize)
where
    Entry<C>: DeserializeOwned,
{
    let mut entries = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        match rmp_serde::from_slice(body) {
            Ok(e) => entries.push((e, 8 + len)),
            Err(_) => break,
        }
        at += 8 + len;
    }
    (entries, at)
}

/// What the log holds, shared by the store and its readers.
struct Inner<C: Logged> {
    entries: BTreeMap<u64, Entry<C>>,
    /// Each entry's record size in bytes, by index (to bound a replication read).
    sizes: BTreeMap<u64, usize>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

pub mod encoded;
mod segments;
pub use encoded::Encoded;

/// The on-disk log (cheap to clone: readers share it).
pub struct LogStore<C: Logged = TypeConfig> {
    dir: PathBuf,
    inner: Arc<Mutex<Inner<C>>>,
    /// The segment files (locked after `inner` when both are).
    files: Arc<Mutex<segments::Files>>,
    /// When set, writes skip a directory that was removed (a deleted queue's group).
    guard: Option<Arc<DirGuard>>,
    /// When set, entries' encodings shared with the cluster's frames (a quorum
    /// queue's group): see [`encoded`].
    encoded: Option<Arc<Encoded>>,
    /// The size of the last append that kept its encodings, for the next one's buffer.
    last_append: Arc<std::sync::atomic::AtomicUsize>,
}

impl<C: Logged> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            dir: self.dir.clone(),
            inner: self.inner.clone(),
            files: self.files.clone(),
            guard: self.guard.clone(),
            encoded: self.encoded.clone(),
            last_append: self.last_append.clone(),
        }
    }
}

/// What `purged` records: the last purged log id, kept beside the log.
const PURGED: &str = "purged";

impl<C> LogStore<C>
where
    C: Logged,
    Entry<C>: Serialize + DeserializeOwned + Clone,
{
    /// Opens (or creates) the log in `dir`, truncating a torn tail.
    pub fn open(dir: &Path) -> std::io::Result<LogStore<C>> {
        std::fs::create_dir_all(dir)?;
        let (mut files, mut entries) = segments::Files::open::<C>(dir)?;
        let read = |name: &str| -> std::io::Result<Option<Vec<u8>>> {
            match std::fs::read(dir.join(name)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let vote = read("vote")?
            .map(|b| rmp_serde::from_slice(&b).map_err(invalid))
            .transpose()?;
        let last_purged: Option<LogId<NodeId>> = read(PURGED)?
            .map(|b| rmp_serde::from_slice::<Option<LogId<NodeId>>>(&b).map_err(invalid))
            .transpose()?
            .flatten();
        if let Some(p) = last_purged {
            // A crash between the purge mark and the segments' removal.
            entries.retain(|(e, _)| e.log_id.index > p.index);
            files.purge(p.index)?;
        }
        let sizes = entries
            .iter()
            .map(|(e, size)| (e.log_id.index, *size))
            .collect();
        let inner = Inner {
            entries: entries
                .into_iter()
                .map(|(e, _)| (e.log_id.index, e))
                .collect(),
            sizes,
            last_purged,
            vote,
        };
        Ok(LogStore {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
            files: Arc::new(Mutex::new(files)),
            guard: None,
            encoded: None,
            last_append: Default::default(),
        })
    }

    /// This log with its writes serialized with `guard`'s removal of its directory.
    pub fn guarded(mut self, guard: Arc<DirGuard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// This log writing the encodings `encoded` holds for its entries as their records'
    /// bodies (a follower's entries as received), and keeping there those it encodes
    /// while it replicates to peers (a leader's).
    pub fn with_encoded(mut self, encoded: Arc<Encoded>) -> Self {
        self.encoded = Some(encoded);
        self
    }

    /// Runs `write` through the guard, if any (skipped once the directory is removed).
    fn write<T: Default>(&self, write: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        match &self.guard {
            Some(g) => g.write(write).map(Option::unwrap_or_default),
            None => write(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<C>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn files(&self) -> std::sync::MutexGuard<'_, segments::Files> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the entries from `index` on from the files: the later segments removed,
    /// the one holding the entries before `index` rewritten from `inner` (which no
    /// longer has them).
    fn truncate_files(&self, inner: &Inner<C>, index: u64) -> std::io::Result<()> {
        let mut files = self.files();
        if let Some(first) = files.remove_from(index)? {
            let mut bytes = Vec::new();
            for e in inner.entries.range(first..).map(|(_, e)| e) {
                put_record(&mut bytes, e)?;
            }
            files.rewrite(first, &bytes)?;
        }
        Ok(())
    }

    /// Appends `entries` to the last segment and fsyncs it; answers each one's record
    /// size.
    fn append_file(&self, entries: &[Entry<C>]) -> std::io::Result<Vec<usize>> {
        let Some(first) = entries.first() else {
            return Ok(Vec::new());
        };
        if let Some(encoded) = self.encoded.as_ref().filter(|e| e.wanted()) {
            return self.append_kept(encoded, entries, first.log_id.index);
        }
        SCRATCH.with(|scratch| {
            let mut bytes = scratch.borrow_mut();
            bytes.clear();
            let mut sizes = Vec::with_capacity(entries.len());
            let written = entries
                .iter()
                .try_for_each(|e| self.put_entry(&mut bytes, e).map(|(n, _)| sizes.push(n)))
                .and_then(|()| self.files().append(first.log_id.index, &bytes));
            bytes.clear();
            if bytes.capacity() > SCRATCH_KEPT {
                bytes.shrink_to(SCRATCH_KEPT);
            }
            written.map(|()| sizes)
        })
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: Logged,
    Entry<C>: Serialize + DeserializeOwned + Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<C>>> {
        let inner = self.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> StorageResult<Vec<Entry<C>>> {
        let inner = self.lock();
        let mut bytes = 0;
        let mut out = Vec::new();
        for (index, e) in inner.entries.range(start..end) {
            bytes += inner.sizes.get(index).copied().unwrap_or(0);
            if !out.is_empty() && bytes > MAX_APPEND_BYTES {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: Logged,
    Entry<C>: Serialize + DeserializeOwned + Clone,
{
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> StorageResult<LogState<C>> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let bytes = rmp_serde::to_vec(vote)
            .map_err(|e| io(ErrorSubject::Vote, ErrorVerb::Write, invalid(e)))?;
        let started = std::time::Instant::now();
        blocking(|| self.write(|| write_atomic(&self.dir.join("vote"), &bytes)))
            .map_err(|e| io(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        tracing::debug!(
            target: "actormq::cluster::stages",
            us = started.elapsed().as_micros() as u64,
            "vote saved"
        );
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.lock().vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<C>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let written = blocking(|| self.write(|| self.append_file(&entries)));
        if let Ok(sizes) = &written {
            let mut inner = self.lock();
            for (e, size) in entries.into_iter().zip(sizes) {
                inner.sizes.insert(e.log_id.index, *size);
                inner.entries.insert(e.log_id.index, e);
            }
        }
        let written = written.map(|_| ());
        let failed = written
            .as_ref()
            .err()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(written);
        match failed {
            Some(e) => Err(io(ErrorSubject::Logs, ErrorVerb::Write, e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        let _ = inner.entries.split_off(&log_id.index);
        let _ = inner.sizes.split_off(&log_id.index);
        if let Some(e) = &self.encoded {
            e.forget_from(log_id.index);
        }
        blocking(|| self.write(|| self.truncate_files(&inner, log_id.index)))
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        let bytes = rmp_serde::to_vec(&Some(log_id))
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, invalid(e)))?;
        // The purge mark first: a crash between the two leaves entries the mark says
        // are gone, which reads ignore.
        blocking(|| self.write(|| write_atomic(&self.dir.join(PURGED), &bytes)))
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        inner.last_purged = Some(log_id);
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.sizes = inner.sizes.split_off(&(log_id.index + 1));
        // Whole old segments go; the entries before `log_id` left in a kept segment
        // are ignored when read back.
        blocking(|| self.write(|| self.files().purge(log_id.index)))
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests;
