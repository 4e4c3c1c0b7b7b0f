//! Page-in reads: a queue that let go of the bodies of its long backlog reads them back
//! by id. Runs on the writer thread, after the group in which it arrived was written:
//! the writer owns the index (which knows where each live message is, even after
//! compaction moved it) and is the only one that deletes segments, so a location it
//! looks up cannot vanish under the read.
//!
//! A frame is read with two positioned reads (header, then payload) and its checksum
//! checked again: a page-in trusts the disk no more than recovery does. A message whose
//! frame is damaged is left out of the answer and logged; the queue then reports it lost.

use super::codec::{self, Entry};
use super::frame::{self, FRAME_HEADER, MAX_PAYLOAD};
use super::index::{Index, Loc};
use super::segment;
use crate::storage::completion::Pages;
use crate::storage::error::StorageError;
use crate::storage::record::{
    PagedMessage, QueueId, Record, Recovered, RecoveredMessage, RecoveredQueue,
};
use crate::storage::replay::resume_id;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Reads the live messages `ids` of `queue`, in that order; ids not live are skipped.
pub fn read(
    dir: &Path,
    index: &Index,
    queue: &QueueId,
    ids: &[u64],
) -> Result<Pages, StorageError> {
    let mut open: Option<(u64, PathBuf, File)> = None;
    let mut pages = Vec::with_capacity(ids.len());
    for &id in ids {
        let Some(loc) = index.location(queue, id) else {
            continue;
        };
        if open.as_ref().is_none_or(|(seg, _, _)| *seg != loc.seg) {
            let path = dir.join(segment::file_name(loc.seg));
            let file =
                File::open(&path).map_err(|e| StorageError::io("opening segment", &path, e))?;
            open = Some((loc.seg, path, file));
        }
        let Some((_, path, file)) = &open else {
            continue;
        };
        match read_frame(file, path, loc)? {
            Ok(Entry::Record(Record::Publish {
                id: stored,
                message,
                ..
            })) if stored == id => pages.push((id, message)),
            Ok(_) => {
                tracing::error!(file = %path.display(), offset = loc.off, %queue, id, "page-in found another record where the message should be: it is lost");
            }
            Err(reason) => {
                tracing::error!(file = %path.display(), offset = loc.off, %queue, id, %reason, "page-in found a damaged record: the message is lost");
            }
        }
    }
    Ok(pages)
}

/// What a restart recovers from `index` (replayed without bodies): per queue, the
/// first `head` live messages with their bodies read back, the others as ids only
/// ([`PagedMessage`]), so a log holding millions of messages is recovered without
/// millions of bodies in memory.
pub fn recover(dir: &Path, index: &Index, head: usize) -> Result<Recovered, StorageError> {
    let mut out = Recovered::new();
    for (queue, live, delivered, next_id) in index.queues() {
        let split = head.min(live.len());
        let ids: Vec<u64> = live[..split].iter().map(|(id, _)| *id).collect();
        let messages = read(dir, index, queue, &ids)?
            .into_iter()
            .map(|(id, message)| RecoveredMessage {
                id,
                redelivered: id <= delivered,
                deliveries: index.deliveries(queue, id),
                message,
            })
            .collect();
        let paged = live[split..]
            .iter()
            .map(|(id, loc)| PagedMessage {
                id: *id,
                redelivered: *id <= delivered,
                deliveries: index.deliveries(queue, *id),
                size: loc.size,
            })
            .collect();
        let next_id = resume_id(next_id, delivered);
        out.insert(
            queue.clone(),
            RecoveredQueue {
                messages,
                paged,
                next_id,
            },
        );
    }
    Ok(out)
}

/// The entry at `loc`; the inner error names what is wrong with a damaged frame.
fn read_frame(file: &File, path: &Path, loc: Loc) -> Result<Result<Entry, String>, StorageError> {
    let io = |e| StorageError::io("reading segment", path, e);
    let mut header = [0u8; FRAME_HEADER];
    file.read_exact_at(&mut header, loc.off).map_err(io)?;
    let len_bytes: [u8; 4] = header[..4].try_into().expect("4 bytes");
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Ok(Err(format!("implausible record length {len}")));
    }
    let mut payload = vec![0u8; len];
    file.read_exact_at(&mut payload, loc.off + FRAME_HEADER as u64)
        .map_err(io)?;
    if frame::checksum(len_bytes, &payload) != crc {
        return Ok(Err("checksum mismatch".into()));
    }
    Ok(codec::decode(&payload))
}
