//! Opening a stream's directory. A sealed segment (every segment but the last) whose
//! index file ([`super::index_file`]) is whole and describes the file as it is (same
//! first offset, same length, and the record the index's last entry points at has
//! that entry's offset) is trusted: its sparse index is read from that file and its
//! frames are not read. Their checksums are left to the first read of each frame
//! ([`super::verified`]), which refuses a damaged one (the consumer is told; the log is
//! not cut). Any other segment, the last (active) one always, is scanned as before:
//! mapped and its frames checked in order (length, checksum, contiguous offsets; noted
//! in [`super::verified`] so reads do not check the checksums again), its sparse index
//! built from the record headers alone: no body is decoded or kept. A sealed segment
//! scanned whole gets its index file, so an old directory (written before index files)
//! is scanned once.
//!
//! A torn or corrupt frame found by a scan cuts the log there (the file is truncated
//! and every later segment removed): such a record was never confirmed, since a
//! confirm waits for the fsync of everything before it. An index file that is missing,
//! damaged or stale is never an error: the segment is scanned, and the reason logged.

use super::index_file::{self, SealedIndex};
use super::{reader, writer, Segment, StreamLog};
use crate::storage::disk::frame::{self, FrameAt};
use crate::storage::error::StorageError;
use crate::storage::fsutil::sync_dir;
use std::collections::BTreeSet;
use std::path::Path;

/// How the last open went: segments trusted by their index file, segments scanned,
/// index files written for sealed segments that had none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Sealed segments opened from their index file, frames unread.
    pub trusted: usize,
    /// Segments whose frames were read and checked (from their recovery point on, for
    /// those counted in `from_point`).
    pub scanned: usize,
    /// Index files written for scanned sealed segments.
    pub indexed: usize,
    /// Scanned segments whose recovery point was used: only the bytes after it read.
    pub from_point: usize,
    /// Bytes of frames the scans read.
    pub scanned_bytes: u64,
}

/// The files of a stream's directory recovery cares about.
struct Listing {
    /// First offsets of the `.seg` files.
    segments: Vec<u64>,
    /// First offsets of the `.idx` files.
    indexes: BTreeSet<u64>,
    /// First offsets of the `.idx.partial` files (recovery points).
    points: BTreeSet<u64>,
}

fn list(dir: &Path) -> Result<Listing, StorageError> {
    let mut l = Listing {
        segments: Vec::new(),
        indexes: BTreeSet::new(),
        points: BTreeSet::new(),
    };
    for e in std::fs::read_dir(dir)
        .map_err(|e| StorageError::io("listing stream", dir, e))?
        .filter_map(|e| e.ok())
    {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if let Some(first) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
            l.segments.push(first);
        } else if let Some(first) = name.strip_suffix(".idx").and_then(|n| n.parse().ok()) {
            l.indexes.insert(first);
        } else if let Some(first) = name
            .strip_suffix(".idx.partial")
            .and_then(|n| n.parse().ok())
        {
            l.points.insert(first);
        } else if name.ends_with(".idx.tmp") || name.ends_with(".idx.partial.tmp") {
            // A file the writer did not finish: never renamed, never trusted.
            let _ = std::fs::remove_file(e.path());
        }
    }
    l.segments.sort_unstable();
    Ok(l)
}

/// The sealed segment `first` of `len` bytes as its index file says, or why not.
fn trusted(dir: &Path, first: u64, len: u64) -> Result<SealedIndex, String> {
    let path = index_file::path(dir, first);
    let data = std::fs::read(&path).map_err(|e| format!("unreadable: {e}"))?;
    let idx = SealedIndex::decode(&data)?;
    if idx.first != first {
        return Err(format!("describes segment {}", idx.first));
    }
    if idx.bytes != len {
        return Err(format!(
            "stale: describes {} bytes, the segment has {len}",
            idx.bytes
        ));
    }
    // One record read (not checked): the index belongs to these frames.
    let &(offset, _, pos) = idx.entries.last().expect("decode: one entry at least");
    record_at(dir, first, pos, offset)?;
    Ok(idx)
}

/// The recovery point of segment `first` (the last) of `len` bytes, or why not: what
/// [`trusted`] checks of an index file, but for a prefix of the file, and the record
/// that starts where the prefix ends must be the one after it (unless the file ends
/// there). A scan from a wrong point would cut the log at its first "record out of
/// sequence"; one from a checked point builds what a scan of the whole file builds.
fn point(dir: &Path, first: u64, len: u64) -> Result<SealedIndex, String> {
    let path = index_file::point_path(dir, first);
    let data = std::fs::read(&path).map_err(|e| format!("unreadable: {e}"))?;
    let idx = SealedIndex::decode_point(&data)?;
    if idx.first != first {
        return Err(format!("describes segment {}", idx.first));
    }
    if idx.bytes > len {
        return Err(format!(
            "stale: covers {} bytes, the segment has {len}",
            idx.bytes
        ));
    }
    let &(offset, _, pos) = idx.entries.last().expect("decode: one entry at least");
    record_at(dir, first, pos, offset)?;
    if idx.bytes < len {
        record_at(dir, first, idx.bytes, idx.next)?;
    }
    Ok(idx)
}

/// Checks (without its checksum) that the record at byte `pos` of segment `first` has
/// offset `offset`: one read of 28 bytes.
fn record_at(dir: &Path, first: u64, pos: u64, offset: u64) -> Result<(), String> {
    let seg = writer::segment_path(dir, first);
    let mut head = [0u8; frame::FRAME_HEADER + 20];
    let n = read_at(&seg, pos, &mut head).map_err(|e| format!("segment unreadable: {e}"))?;
    let found = (n == head.len())
        .then(|| super::codec::header(&head[frame::FRAME_HEADER..]).ok())
        .flatten()
        .map(|(o, _)| o);
    if found != Some(offset) {
        return Err(format!(
            "its entry for offset {offset} at byte {pos} finds {found:?} in the segment"
        ));
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes of `path` at `pos`; answers how many.
fn read_at(path: &Path, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], pos + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Fills `log` (empty) from `dir`, creating the directory when missing.
pub(super) fn recover(log: &mut StreamLog, dir: &Path) -> Result<Recovered, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating stream", dir, e))?;
    log.segments.clear();
    let listing = list(dir)?;
    let mut stats = Recovered::default();
    let mut cut = false;
    // Sealed segments scanned whole, to index once the last segment is known.
    let mut scanned_whole = Vec::new();
    // The last segment was scanned from its recovery point (which stays valid).
    let mut used_point = false;
    // The last chunk's start: records of one append share its timestamp, so the
    // last change of timestamp (appends within one millisecond merge).
    let mut chunk = (0u64, None);
    let last = listing.segments.last().copied();
    for &first in &listing.segments {
        let path = writer::segment_path(dir, first);
        if cut || (!log.segments.is_empty() && first != log.next) {
            tracing::error!(path = %path.display(), "stream segment after a cut or a gap: removed");
            std::fs::remove_file(&path)
                .map_err(|e| StorageError::io("removing segment", &path, e))?;
            index_file::remove(dir, first);
            cut = true;
            continue;
        }
        let len = std::fs::metadata(&path)
            .map_err(|e| StorageError::io("reading segment size", &path, e))?
            .len();
        if Some(first) != last {
            match listing
                .indexes
                .contains(&first)
                .then(|| trusted(dir, first, len))
            {
                Some(Ok(idx)) => {
                    chunk_through(&mut chunk, &idx);
                    log.next = idx.next;
                    log.last_timestamp = idx.last_timestamp;
                    let seg = idx.segment();
                    log.bytes += seg.bytes;
                    log.segments.push_back(seg);
                    stats.trusted += 1;
                    continue;
                }
                Some(Err(why)) => {
                    tracing::warn!(path = %index_file::path(dir, first).display(), reason = %why, "stream segment index not used: the segment is scanned")
                }
                None => {
                    tracing::debug!(path = %path.display(), "sealed stream segment without an index file: scanned")
                }
            }
        }
        // A segment without a usable index file (the last one always) is scanned from
        // its recovery point if it has one that checks.
        let from = match listing
            .points
            .contains(&first)
            .then(|| point(dir, first, len))
        {
            Some(Ok(p)) => {
                stats.from_point += 1;
                Some(p)
            }
            Some(Err(why)) => {
                tracing::warn!(path = %index_file::point_path(dir, first).display(), reason = %why, "stream segment recovery point not used: the whole segment is scanned");
                None
            }
            None => None,
        };
        let start = from.as_ref().map_or(0, |p| p.bytes);
        let (seg, whole) = scan(log, &path, first, &mut chunk, from)?;
        if Some(first) == last {
            used_point = start > 0;
            log.pointed = start;
        }
        stats.scanned += 1;
        stats.scanned_bytes += seg.bytes - start;
        cut = !whole;
        if whole && Some(first) != last {
            scanned_whole.push(first);
        }
        log.bytes += seg.bytes;
        log.segments.push_back(seg);
    }
    // Index files whose segment is gone (a crash between the two removals), and the
    // last segment's (the active one, appended to from now on: its index is written
    // when it is sealed again; a cut or a gap may have made a sealed one the last).
    let end = log.segments.back().map(|s| s.first);
    for first in &listing.indexes {
        if Some(*first) == end || !log.segments.iter().any(|s| s.first == *first) {
            index_file::remove(dir, *first);
        }
    }
    // The sealed segments scanned whole, but the last one left.
    for (i, seg) in log.segments.iter().enumerate() {
        if !scanned_whole.contains(&seg.first) || Some(seg.first) == end {
            continue;
        }
        let next = log.segments.get(i + 1).map_or(log.next, |s| s.first);
        let Some(idx) = SealedIndex::of(seg, next) else {
            continue;
        };
        // Its frames durable before the index that vouches for them (already so,
        // unless the file was never fsynced: a copied directory, say).
        let path = writer::segment_path(dir, seg.first);
        let written = std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| StorageError::io("syncing segment", &path, e))
            .and_then(|_| index_file::write(dir, seg.first, &idx.encode()));
        match written {
            Ok(()) => stats.indexed += 1,
            Err(e) => tracing::warn!(error = %e, "cannot write a sealed segment's index"),
        }
    }
    if stats.indexed > 0 {
        sync_dir(dir)?;
    }
    // Recovery points but the one the active segment was scanned from: a sealed
    // segment's (its index file says more, or it was just written), a removed one's,
    // and one that did not check (stale, damaged: the segment may grow past it again).
    for first in &listing.points {
        if !(used_point && Some(*first) == end) {
            index_file::remove_point(dir, *first);
        }
    }
    if log.segments.is_empty() {
        log.segments.push_back(Segment::new(0));
    }
    log.last_chunk = chunk.0;
    if stats.scanned > 1 || stats.indexed > 0 {
        tracing::info!(dir = %dir.display(), trusted = stats.trusted, scanned = stats.scanned, indexed = stats.indexed, from_point = stats.from_point, scanned_bytes = stats.scanned_bytes, next = log.next, "stream recovered, sealed segments scanned");
    } else {
        tracing::debug!(dir = %dir.display(), trusted = stats.trusted, from_point = stats.from_point, scanned_bytes = stats.scanned_bytes, next = log.next, "stream recovered");
    }
    Ok(stats)
}

/// The last chunk's start once the records `idx` describes follow those before: their
/// trailing run, unless it began at their first record and goes on from before.
fn chunk_through(chunk: &mut (u64, Option<i64>), idx: &SealedIndex) {
    if idx.run_start > idx.first || chunk.1 != Some(idx.last_timestamp) {
        *chunk = (idx.run_start, Some(idx.last_timestamp));
    }
}

/// Reads segment `first` at `path` frame by frame, checking each, from its start or
/// from where its recovery point `from` ends (the prefix taken from the point, unread);
/// cuts the file at the first bad frame. Answers the segment and whether it was whole.
fn scan(
    log: &mut StreamLog,
    path: &Path,
    first: u64,
    chunk: &mut (u64, Option<i64>),
    from: Option<SealedIndex>,
) -> Result<(Segment, bool), StorageError> {
    let file =
        std::fs::File::open(path).map_err(|e| StorageError::io("opening segment", path, e))?;
    let data = reader::map_file(&file, path)?;
    drop(file);
    let (mut seg, start) = match from {
        Some(p) => {
            chunk_through(chunk, &p);
            log.next = p.next;
            log.last_timestamp = p.last_timestamp;
            (p.segment(), p.bytes as usize)
        }
        None => {
            log.next = first;
            (Segment::new(first), 0)
        }
    };
    let mut off = start;
    loop {
        match frame::read_at(&data, off) {
            FrameAt::Good { payload, next } => match super::codec::header(payload) {
                Ok((o, ts)) if o == log.next => {
                    if chunk.1 != Some(ts) {
                        *chunk = (o, Some(ts));
                    }
                    seg.push(o, ts, (next - off) as u64);
                    log.next += 1;
                    log.last_timestamp = ts;
                    off = next;
                }
                Ok((o, _)) => {
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
    let len = data.len();
    drop(data);
    // Every frame scanned and kept was checked: reads of them need not check again
    // (those of the point's prefix are checked by their first read).
    log.verified.verified(first, start, off);
    if off < len {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io("opening segment", path, e))?;
        f.set_len(off as u64)
            .and_then(|_| f.sync_all())
            .map_err(|e| StorageError::io("cutting segment", path, e))?;
    }
    Ok((seg, off >= len))
}
