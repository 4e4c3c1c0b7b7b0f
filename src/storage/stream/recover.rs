//! Opening a stream's directory: each segment is mapped and its frames checked in
//! order (length, checksum, contiguous offsets; noted in [`super::verified`] so reads
//! do not check the checksums again), building the segment's sparse index
//! from the record headers alone: no body is decoded or kept. A torn or corrupt frame
//! cuts the log there (the file is truncated and every later segment removed): such a
//! record was never confirmed, since a confirm waits for the fsync of everything
//! before it.

use super::{reader, writer, Segment, StreamLog};
use crate::storage::disk::frame::{self, FrameAt};
use crate::storage::error::StorageError;
use std::path::Path;

/// Fills `log` (empty) from `dir`, creating the directory when missing.
pub(super) fn recover(log: &mut StreamLog, dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating stream", dir, e))?;
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
    // The last chunk's start: records of one append share its timestamp, so the
    // last change of timestamp (appends within one millisecond merge).
    let mut chunk = (0u64, None);
    for first in firsts {
        let path = writer::segment_path(dir, first);
        if cut || (!log.segments.is_empty() && first != log.next) {
            tracing::error!(path = %path.display(), "stream segment after a cut or a gap: removed");
            std::fs::remove_file(&path)
                .map_err(|e| StorageError::io("removing segment", &path, e))?;
            cut = true;
            continue;
        }
        let file = std::fs::File::open(&path)
            .map_err(|e| StorageError::io("opening segment", &path, e))?;
        let data = reader::map_file(&file, &path)?;
        drop(file);
        let mut seg = Segment::new(first);
        log.next = first;
        let mut off = 0;
        loop {
            match frame::read_at(&data, off) {
                FrameAt::Good { payload, next } => match super::codec::header(payload) {
                    Ok((o, ts)) if o == log.next => {
                        if chunk.1 != Some(ts) {
                            chunk = (o, Some(ts));
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
        // Every frame kept was checked: reads of them need not check again.
        log.verified.verified(first, 0, off);
        if off < len {
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
        log.segments.push_back(Segment::new(0));
    }
    log.last_chunk = chunk.0;
    Ok(())
}
