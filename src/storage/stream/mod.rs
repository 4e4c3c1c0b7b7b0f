//! Stream logs: an append-only log per stream queue with contiguous offsets (0, 1, 2,
//! ...), kept in `data_dir/streams/<vhost>/<name>/` as segment files named by their
//! first offset, each record a frame of the message log's checksummed codec
//! ([`codec`]). Appends are written and fsynced by the stream's writer thread
//! ([`writer`]) in groups; a rolled segment gets an index file ([`index_file`]), and
//! the active one a recovery point every [`RECOVERY_POINT_SPACING`] bytes and at close.
//! [`StreamLog::open`] recovers the directory ([`recover`]): sealed segments from their
//! index files, the active one from its recovery point on, the rest by reading their
//! frames, cutting a torn tail at the last good frame. Retention removes whole
//! segments (and their index files) from the front.
//!
//! Memory holds only a sparse index per segment (an entry every [`INDEX_SPACING`] bytes:
//! offset, timestamp, file position) and a bounded tail cache of the newest records,
//! for consumers at the head. A consumer behind the tail reads the files through
//! [`reader`], off the queue actor. A broker without storage keeps the whole log in the
//! tail cache (memory only).

mod append;
pub mod cache;
pub mod codec;
mod gather;
pub mod index_file;
pub mod meta;
pub mod reader;
mod record;
mod recover;
pub mod resync;
pub mod span;
pub mod verified;
pub mod writer;

use crate::storage::error::StorageError;
use reader::{Cursor, ReadRequest};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use writer::Written;

pub use record::{RecordMessage, StreamRecord};
pub use recover::Recovered;

/// A sparse index entry is added once a segment has grown this many bytes past the
/// previous one: a 100-million-record stream of small messages needs ~10 GB of frames,
/// so ~80 000 entries of 24 bytes (about 2 MiB).
pub const INDEX_SPACING: u64 = 128 * 1024;

/// The active segment gets a recovery point ([`index_file::point_path`]) each time it
/// has grown this many bytes past its last one (and at close): a restart after a crash
/// then scans at most about this much of it instead of all of it (500 MB by default,
/// ~0.2 s of CPU warm for 16 B records, seconds cold), for one small file written and
/// fsynced per 64 MiB appended.
pub const RECOVERY_POINT_SPACING: u64 = 64 * 1024 * 1024;

/// Default bytes of the newest records a stream keeps in memory ([`StreamLog::set_tail_budget`]).
pub const DEFAULT_TAIL_BYTES: u64 = 4 * 1024 * 1024;

/// Where a record starts in its segment file: an entry of the sparse index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEntry {
    offset: u64,
    timestamp: i64,
    pos: u64,
}

/// A segment: its first offset, its sparse index, the bytes of its frames (the file
/// position of the next append) and the timestamp of its newest record.
#[derive(Debug)]
struct Segment {
    first: u64,
    index: Vec<IndexEntry>,
    bytes: u64,
    last_timestamp: Option<i64>,
    /// The first offset of the trailing records stamped `last_timestamp`: kept in the
    /// sealed segment's index file, so recovery finds the last chunk without its frames.
    run_start: u64,
}

impl Segment {
    fn new(first: u64) -> Self {
        Segment {
            first,
            index: Vec::new(),
            bytes: 0,
            last_timestamp: None,
            run_start: first,
        }
    }

    /// Notes a record of `len` bytes at the segment's end, indexing it if far enough
    /// from the previous entry.
    fn push(&mut self, offset: u64, timestamp: i64, len: u64) {
        if self
            .index
            .last()
            .is_none_or(|e| self.bytes >= e.pos + INDEX_SPACING)
        {
            self.index.push(IndexEntry {
                offset,
                timestamp,
                pos: self.bytes,
            });
        }
        if self.last_timestamp != Some(timestamp) {
            self.run_start = offset;
        }
        self.bytes += len;
        self.last_timestamp = Some(timestamp);
    }
}

/// The disk side of a log: its directory and writer thread.
struct Disk {
    dir: Arc<Path>,
    tx: Option<mpsc::Sender<writer::Command>>,
    thread: Option<JoinHandle<()>>,
    written: Written,
    /// Set when the stream is deleted: the writer refuses the appends still queued.
    deleted: Arc<AtomicBool>,
    /// Blocks of records shared by the readers.
    cache: Arc<cache::BlockCache>,
}

/// An append-only log of one stream: the records are in the segment files; memory
/// holds the sparse index of each segment and a bounded tail cache of the newest
/// records (all records for a log without storage).
pub struct StreamLog {
    segments: VecDeque<Segment>,
    /// The newest records, offsets `next - tail.len()` ..`next`.
    tail: VecDeque<StreamRecord>,
    /// Accounted bytes of `tail`.
    tail_bytes: u64,
    /// `tail` is trimmed (of records already written) down to this.
    tail_budget: u64,
    /// The offset the next append gets.
    next: u64,
    /// The first offset of the last appended batch (`x-stream-offset` = `last`).
    last_chunk: u64,
    /// Bytes of frames across the retained segments.
    bytes: u64,
    /// A segment is rolled once it holds this many bytes.
    max_segment_bytes: u64,
    /// The consumer offsets found at open.
    recovered_offsets: BTreeMap<String, u64>,
    disk: Option<Disk>,
    last_timestamp: i64,
    /// How far each segment's checksums were verified (by recovery or a first read).
    verified: Arc<verified::Verified>,
    /// What the last open trusted, scanned and indexed (logged, and for tests).
    recovered: Recovered,
    /// Bytes of the active segment covered by its last recovery point (sent to the
    /// writer, or found at open); 0 for a segment without one.
    pointed: u64,
    /// A recovery point is sent once the active segment has grown this much past
    /// `pointed` ([`RECOVERY_POINT_SPACING`]; tests make it small).
    point_spacing: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl StreamLog {
    /// An empty log held in memory only (a broker without storage).
    pub fn memory(max_segment_bytes: u64) -> Self {
        StreamLog {
            segments: VecDeque::from([Segment::new(0)]),
            tail: VecDeque::new(),
            tail_bytes: 0,
            tail_budget: DEFAULT_TAIL_BYTES,
            next: 0,
            last_chunk: 0,
            bytes: 0,
            max_segment_bytes: max_segment_bytes.max(1),
            recovered_offsets: BTreeMap::new(),
            disk: None,
            last_timestamp: 0,
            verified: Arc::default(),
            recovered: Recovered::default(),
            pointed: 0,
            point_spacing: RECOVERY_POINT_SPACING,
        }
    }

    /// Opens (creating it if missing) the log in `dir`, recovering what it holds: a
    /// sealed segment with a valid index file is taken from it, unread, and the active
    /// one's prefix from its recovery point; every other frame is checked and indexed
    /// (bodies are not kept), a torn or corrupt tail is cut at the last good frame (and
    /// any later segment file removed). Blocks while it reads.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<Self, StorageError> {
        let mut log = Self::memory(max_segment_bytes);
        log.recovered = recover::recover(&mut log, dir)?;
        log.recovered_offsets = writer::read_offsets(dir)?;
        let (tx, rx) = mpsc::channel();
        let d = dir.to_path_buf();
        let written = Written::new(log.next);
        let w = written.clone();
        let deleted = Arc::new(AtomicBool::new(false));
        let del = deleted.clone();
        let thread = std::thread::Builder::new()
            .name("stream-writer".into())
            .spawn(move || writer::run(d, rx, w, del))
            .map_err(|e| StorageError::io("starting the stream writer", dir, e))?;
        log.disk = Some(Disk {
            dir: Arc::from(dir),
            tx: Some(tx),
            thread: Some(thread),
            written,
            deleted,
            cache: Arc::new(cache::BlockCache::new(cache::CACHE_BYTES)),
        });
        log.point_after_scan(dir);
        Ok(log)
    }

    /// Gives the active segment a recovery point covering what recovery just scanned
    /// (a directory from before recovery points, or whose point did not check), so
    /// that a crash before the next point scans only what follows it, not all of it
    /// again. The scanned bytes may be a crashed writer's last group, written and not
    /// yet fsynced: they are fsynced first (a point never covers bytes not on disk).
    fn point_after_scan(&mut self, dir: &Path) {
        let Some(seg) = self.segments.back() else {
            return;
        };
        if seg.bytes <= self.pointed {
            return;
        }
        let path = writer::segment_path(dir, seg.first);
        match std::fs::File::open(&path).and_then(|f| f.sync_data()) {
            Ok(()) => self.send_point(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot sync the active segment after recovery: its recovery point waits for the next append")
            }
        }
    }

    /// Sets how many bytes of the newest records stay in memory (at least the records
    /// not yet written stay). No effect on a log without storage, which holds all.
    pub fn set_tail_budget(&mut self, bytes: u64) {
        self.tail_budget = bytes;
        self.evict();
    }

    /// Sets how many bytes of blocks the readers share (drops those held).
    pub fn set_block_budget(&mut self, bytes: u64) {
        if let Some(d) = &mut self.disk {
            d.cache = Arc::new(cache::BlockCache::new(bytes));
        }
    }

    /// Drops the oldest cached records above the budget, if the files hold them.
    pub fn evict(&mut self) {
        let Some(d) = &self.disk else {
            return;
        };
        let written = d.written.get();
        while self.tail_bytes > self.tail_budget && self.tail_first() < written {
            let r = self.tail.pop_front().expect("over budget: not empty");
            self.tail_bytes -= r.size;
        }
    }

    /// The first offset held in the tail cache (`next_offset` when it is empty).
    pub fn tail_first(&self) -> u64 {
        self.next - self.tail.len() as u64
    }

    /// Bytes the log holds in memory: the tail cache, the sparse index and the
    /// blocks shared by readers.
    pub fn ram_bytes(&self) -> u64 {
        let blocks = self.disk.as_ref().map_or(0, |d| d.cache.bytes());
        let index: usize = self
            .segments
            .iter()
            .map(|s| s.index.capacity() * std::mem::size_of::<IndexEntry>())
            .sum();
        self.tail_bytes + index as u64 + blocks
    }

    /// What the open trusted from index files and what it scanned.
    pub fn recovered(&self) -> Recovered {
        self.recovered
    }

    /// Entries of the sparse index, across segments.
    pub fn index_len(&self) -> usize {
        self.segments.iter().map(|s| s.index.len()).sum()
    }

    /// The first retained offset.
    pub fn first_offset(&self) -> u64 {
        self.segments.front().map_or(self.next, |s| s.first)
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The first offset of the last chunk (the last batch appended; after a restart,
    /// the first record of the last millisecond that had appends).
    pub fn last_chunk(&self) -> u64 {
        self.last_chunk.max(self.first_offset())
    }

    /// Retained records.
    pub fn len(&self) -> u64 {
        self.next - self.first_offset()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the retained segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The record at `offset`, if it is in the tail cache.
    pub fn get(&self, offset: u64) -> Option<&StreamRecord> {
        if offset < self.first_offset() {
            return None;
        }
        self.tail
            .get(offset.checked_sub(self.tail_first())? as usize)
    }

    /// A read of the files from `from` on (`None` for a log without storage, or when
    /// `from` is not retained): the cursor at the index entry at or before it.
    pub fn read_from(&self, from: u64, cursor: Option<Cursor>) -> Option<ReadRequest> {
        let d = self.disk.as_ref()?;
        if from < self.first_offset() || from >= self.next {
            return None;
        }
        let cursor = match cursor {
            Some(c) if c.offset == from && c.segment >= self.first_offset() => c,
            _ => {
                let i = self.segments.partition_point(|s| s.first <= from);
                let seg = &self.segments[i.checked_sub(1)?];
                let j = seg.index.partition_point(|e| e.offset <= from);
                match j.checked_sub(1).map(|j| seg.index[j]) {
                    Some(e) => Cursor::new(seg.first, e.pos as usize, e.offset),
                    None => Cursor::new(seg.first, 0, seg.first),
                }
            }
        };
        Some(ReadRequest {
            dir: d.dir.clone(),
            cursor,
            from,
            end: d.written.get().min(self.next),
            max_records: usize::MAX,
            max_bytes: usize::MAX,
            min_timestamp: None,
            cache: d.cache.clone(),
            decode: true,
            verified: self.verified.clone(),
        })
    }

    /// Where a reader from `timestamp` (ms since the epoch) starts: the first offset
    /// appended at or after it, exactly when the tail cache (or the first index entry)
    /// tells it, with `true` when the reader must still skip older records from there
    /// (the start lies between two entries of the sparse index). The next offset when
    /// nothing is that recent.
    pub fn offset_at(&self, timestamp: i64) -> (u64, bool) {
        let first = self.first_offset();
        if let Some(front) = self.tail.front() {
            if self.tail_first() <= first || front.timestamp < timestamp {
                let i = self.tail.partition_point(|r| r.timestamp < timestamp);
                return ((self.tail_first() + i as u64).max(first), false);
            }
        }
        let mut best = None;
        for seg in &self.segments {
            let i = seg.index.partition_point(|e| e.timestamp < timestamp);
            if i > 0 {
                best = Some(seg.index[i - 1].offset);
            }
            if i < seg.index.len() {
                break;
            }
        }
        match best {
            Some(o) if self.disk.is_some() => (o.max(first), true),
            Some(_) => (self.next, false),
            None => (first, false),
        }
    }

    /// Removes whole segments from the front while the log is above `max_bytes` or
    /// their newest record is older than `max_age_ms`; the active (last) segment
    /// always stays. Answers how many were removed.
    pub fn trim(&mut self, max_bytes: Option<u64>, max_age_ms: Option<u64>, now: i64) -> usize {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let front = &self.segments[0];
            let too_big = max_bytes.is_some_and(|m| self.bytes > m);
            let too_old = max_age_ms.is_some_and(|age| {
                front
                    .last_timestamp
                    .is_none_or(|t| t < now.saturating_sub(age as i64))
            });
            if !too_big && !too_old {
                break;
            }
            let seg = self.segments.pop_front().expect("checked");
            self.bytes -= seg.bytes;
            removed += 1;
            if let Some(tx) = self.disk.as_ref().and_then(|d| d.tx.as_ref()) {
                let _ = tx.send(writer::Command::Remove(seg.first));
            }
        }
        let first = self.first_offset();
        if let Some(d) = &self.disk {
            d.cache.trim(first);
        }
        self.verified.trim(first);
        while self.tail_first() < first {
            let r = self.tail.pop_front().expect("below first: not empty");
            self.tail_bytes -= r.size;
        }
        removed
    }

    /// The consumer offsets found when the log was opened.
    pub fn recovered_offsets(&self) -> &BTreeMap<String, u64> {
        &self.recovered_offsets
    }

    /// Stores the consumer offsets (written by the writer thread after its current
    /// group; of several queued snapshots only the last is written).
    pub fn store_offsets(&self, offsets: &BTreeMap<String, u64>) {
        let Some(tx) = self.disk.as_ref().and_then(|d| d.tx.as_ref()) else {
            return;
        };
        match writer::encode_offsets(offsets) {
            Ok(b) => {
                let _ = tx.send(writer::Command::Offsets(b));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the consumer offsets"),
        }
    }

    /// Stops the writer once it has written everything queued, with a recovery point
    /// of the active segment last (shutdown: the next start reads none of it).
    pub fn close(&mut self) {
        self.send_point();
        self.stop_writer();
    }

    /// Stops the writer once it has written everything queued, without the closing
    /// recovery point: the directory as a kill -9 after the last fsync leaves it (the
    /// active segment covered only by its last periodic point), for recovery
    /// benchmarks (`examples/stream_fill.rs --crash`) and tests.
    pub fn close_without_point(&mut self) {
        self.stop_writer();
    }

    /// Stops the writer once it has written everything queued.
    fn stop_writer(&mut self) {
        if let Some(d) = &mut self.disk {
            d.tx.take();
            if let Some(t) = d.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Stops the writer and removes the log's directory (the stream was deleted).
    /// Appends the writer has not begun are refused ([`StorageError::Closed`]), not
    /// written: nothing is confirmed for a log on its way out.
    pub fn delete(&mut self) {
        if let Some(d) = &self.disk {
            d.deleted.store(true, std::sync::atomic::Ordering::Release);
        }
        self.stop_writer();
        if let Some(d) = self.disk.take() {
            if let Err(e) = std::fs::remove_dir_all(&d.dir) {
                tracing::warn!(dir = %d.dir.display(), error = %e, "cannot remove a deleted stream's directory");
            }
        }
        self.segments.clear();
        self.tail.clear();
        self.tail_bytes = 0;
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// A file-system-safe directory name for a vhost or stream name: ASCII letters,
/// digits, `-`, `_` and `.` stay (except a leading `.`), every other byte is `%XX`.
pub fn dir_name(name: &str) -> String {
    let mut out = String::new();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

#[cfg(test)]
mod point_tests;
#[cfg(test)]
mod recover_tests;
#[cfg(test)]
mod tests;
