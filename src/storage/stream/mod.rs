//! Stream logs: an append-only log per stream queue with contiguous offsets (0, 1, 2,
//! ...), kept in `data_dir/streams/<vhost>/<name>/` as segment files named by their
//! first offset, each record a frame of the message log's checksummed codec
//! ([`codec`]). Appends are written and fsynced by the stream's writer thread
//! ([`writer`]) in groups; [`StreamLog::open`] recovers the directory, cutting a torn
//! tail at the last good frame. Retention removes whole segments from the front.
//!
//! The retained records are also held in memory (the bodies shared with the deliveries
//! that carry them), so reads never touch the disk; retention bounds what is held. A
//! broker without storage keeps the same log in memory only.

pub mod codec;
pub mod writer;

use crate::message::Message;
use crate::storage::completion::Completion;
use crate::storage::disk::frame::{self, FrameAt};
use crate::storage::error::StorageError;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// One retained record.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// When the broker appended it, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The message, with its `x-stream-offset` header.
    pub message: Arc<Message>,
}

/// A segment: records from `first` on, and the bytes of its frames.
#[derive(Debug)]
struct Segment {
    first: u64,
    records: Vec<StreamRecord>,
    bytes: u64,
}

/// The disk side of a log: its directory and writer thread.
struct Disk {
    dir: PathBuf,
    tx: Option<mpsc::Sender<writer::Command>>,
    thread: Option<JoinHandle<()>>,
}

/// An append-only log of one stream.
pub struct StreamLog {
    segments: VecDeque<Segment>,
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
    /// Scratch buffer for encoding.
    last_timestamp: i64,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn corrupt(path: &Path, reason: String) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

impl StreamLog {
    /// An empty log held in memory only (a broker without storage).
    pub fn memory(max_segment_bytes: u64) -> Self {
        StreamLog {
            segments: VecDeque::from([Segment {
                first: 0,
                records: Vec::new(),
                bytes: 0,
            }]),
            next: 0,
            last_chunk: 0,
            bytes: 0,
            max_segment_bytes: max_segment_bytes.max(1),
            recovered_offsets: BTreeMap::new(),
            disk: None,
            last_timestamp: 0,
        }
    }

    /// Opens (creating it if missing) the log in `dir`, recovering what it holds: a
    /// torn or corrupt tail is cut at the last good frame (and any later segment
    /// file removed). Blocks while it reads.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating stream", dir, e))?;
        let mut log = Self::memory(max_segment_bytes);
        log.segments.clear();
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| StorageError::io("listing stream", dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut cut = false;
        for first in firsts {
            let path = writer::segment_path(dir, first);
            if cut || (!log.segments.is_empty() && first != log.next) {
                tracing::error!(path = %path.display(), "stream segment after a cut or a gap: removed");
                std::fs::remove_file(&path)
                    .map_err(|e| StorageError::io("removing segment", &path, e))?;
                cut = true;
                continue;
            }
            let data =
                std::fs::read(&path).map_err(|e| StorageError::io("reading segment", &path, e))?;
            let mut seg = Segment {
                first,
                records: Vec::new(),
                bytes: 0,
            };
            log.next = first;
            let mut off = 0;
            loop {
                match frame::read_at(&data, off) {
                    FrameAt::Good { payload, next } => match codec::decode(payload) {
                        Ok((o, ts, m)) if o == log.next => {
                            seg.records.push(StreamRecord {
                                timestamp: ts,
                                message: m,
                            });
                            seg.bytes += (next - off) as u64;
                            log.next += 1;
                            log.last_timestamp = ts;
                            off = next;
                        }
                        Ok((o, ..)) => {
                            tracing::error!(path = %path.display(), offset = o, expected = log.next, "stream record out of sequence: log cut here");
                            break;
                        }
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "undecodable stream record: log cut here");
                            break;
                        }
                    },
                    FrameAt::End if off >= data.len() => break,
                    other => {
                        tracing::warn!(path = %path.display(), at = off, ?other, "torn stream tail cut at the last good frame");
                        break;
                    }
                }
            }
            if off < data.len() {
                cut = true;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StorageError::io("opening segment", &path, e))?;
                f.set_len(off as u64)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| StorageError::io("cutting segment", &path, e))?;
            }
            log.bytes += seg.bytes;
            log.segments.push_back(seg);
        }
        if log.segments.is_empty() {
            log.segments.push_back(Segment {
                first: 0,
                records: Vec::new(),
                bytes: 0,
            });
        }
        log.last_chunk = log.segments.back().map_or(0, |s| s.first);
        log.recovered_offsets = read_offsets(dir)?;
        let (tx, rx) = mpsc::channel();
        let d = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("stream-writer".into())
            .spawn(move || writer::run(d, rx))
            .map_err(|e| StorageError::io("starting the stream writer", dir, e))?;
        log.disk = Some(Disk {
            dir: dir.to_path_buf(),
            tx: Some(tx),
            thread: Some(thread),
        });
        Ok(log)
    }

    /// Appends `messages` as one chunk, each with its offset in the `x-stream-offset`
    /// header; answers a completion resolved once they are on disk (at once in memory).
    pub fn append(&mut self, messages: Vec<Arc<Message>>) -> Completion {
        if messages.is_empty() {
            return Completion::ready(Ok(()));
        }
        // Timestamps never go back, so a search by time can bisect.
        let now = now_millis().max(self.last_timestamp);
        self.last_timestamp = now;
        self.last_chunk = self.next;
        let mut buf = Vec::new();
        let mut segment = self.segments.back().expect("one segment at least").first;
        let mut pending = Vec::new();
        for m in messages {
            if self.segments.back().expect("a segment").bytes >= self.max_segment_bytes {
                if !buf.is_empty() {
                    pending.push((segment, std::mem::take(&mut buf)));
                }
                segment = self.next;
                self.segments.push_back(Segment {
                    first: self.next,
                    records: Vec::new(),
                    bytes: 0,
                });
            }
            let mut m = Arc::unwrap_or_clone(m);
            m = m.with_header("x-stream-offset", self.next as i64);
            let n = match codec::encode(&mut buf, self.next, now, &m) {
                Ok(n) => n as u64,
                Err(e) => return Completion::ready(Err(e)),
            };
            let seg = self.segments.back_mut().expect("a segment");
            seg.bytes += n;
            self.bytes += n;
            seg.records.push(StreamRecord {
                timestamp: now,
                message: Arc::new(m),
            });
            self.next += 1;
        }
        pending.push((segment, buf));
        let Some(tx) = self.disk.as_ref().and_then(|d| d.tx.as_ref()) else {
            return Completion::ready(Ok(()));
        };
        let mut last = Completion::ready(Ok(()));
        for (segment, bytes) in pending {
            let (done, c) = Completion::pending();
            // The writer handles its commands in order: the last completion resolves
            // after every earlier one.
            let _ = tx.send(writer::Command::Append {
                segment,
                bytes,
                done,
            });
            last = c;
        }
        last
    }

    /// The first retained offset.
    pub fn first_offset(&self) -> u64 {
        self.segments.front().map_or(self.next, |s| s.first)
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The first offset of the last chunk (the last batch appended, or after a
    /// restart the start of the last segment).
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

    /// The record at `offset`, if retained.
    pub fn get(&self, offset: u64) -> Option<&StreamRecord> {
        let i = self.segments.partition_point(|s| s.first <= offset);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        seg.records.get((offset - seg.first) as usize)
    }

    /// The first offset appended at or after `timestamp` (ms since the epoch); the
    /// next offset when none is.
    pub fn offset_at(&self, timestamp: i64) -> u64 {
        for seg in &self.segments {
            let i = seg.records.partition_point(|r| r.timestamp < timestamp);
            if i < seg.records.len() {
                return seg.first + i as u64;
            }
        }
        self.next
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
                    .records
                    .last()
                    .is_none_or(|r| r.timestamp < now.saturating_sub(age as i64))
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

    /// Stops the writer once it has written everything queued (shutdown).
    pub fn close(&mut self) {
        if let Some(d) = &mut self.disk {
            d.tx.take();
            if let Some(t) = d.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Stops the writer and removes the log's directory (the stream was deleted).
    pub fn delete(&mut self) {
        self.close();
        if let Some(d) = self.disk.take() {
            if let Err(e) = std::fs::remove_dir_all(&d.dir) {
                tracing::warn!(dir = %d.dir.display(), error = %e, "cannot remove a deleted stream's directory");
            }
        }
        self.segments.clear();
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_offsets(dir: &Path) -> Result<BTreeMap<String, u64>, StorageError> {
    let path = writer::offsets_path(dir);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(StorageError::io("reading offsets", &path, e)),
    };
    match frame::read_at(&data, 0) {
        FrameAt::Good { payload, .. } => rmp_serde::from_slice(payload)
            .map_err(|e| corrupt(&path, format!("bad consumer offsets: {e}"))),
        other => {
            // Written to a temporary file and renamed: a damaged file is not a torn write.
            tracing::error!(path = %path.display(), ?other, "consumer offsets unreadable: named consumers start from their default");
            Ok(BTreeMap::new())
        }
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
mod tests;
