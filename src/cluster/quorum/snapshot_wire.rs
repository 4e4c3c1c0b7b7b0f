//! A quorum queue's snapshot on the cluster port, in chunks. A member behind its
//! group leader's purged log is sent the whole queue; in one frame that was the queue
//! encoded on a runtime thread (the threads that answer every group's heartbeats),
//! and a frame the size of the queue, which failed outright past the port's
//! `MAX_FRAME` (256 MiB) and, on a slow link, past the request's time to live. Now
//! the sender first probes the peer with an empty first chunk (a member that is down
//! costs no encoding: openraft tries about once a second), encodes the queue on a
//! blocking thread, and sends it in chunks of openraft's `snapshot_max_chunk_size`
//! (3 MiB by default), each with the request's own time to live; the receiver
//! ([`Receiving`]) appends them in order and, at the last, decodes the queue on a
//! blocking thread and installs it through openraft (`install_full_snapshot`), which
//! keeps it on disk before it replaces the queue.
//!
//! The bytes are the encoding of [`GroupSnapshot`] a whole-snapshot frame carried; a
//! chunk out of order (a lost frame, a new transfer from another leader) ends the
//! transfer with an error and openraft starts it again from the first chunk.

use super::group::GroupSnapshot;
use super::wire::{GroupId, GroupReply};
use crate::cluster::NodeId;
use bytes::Bytes;
use openraft::error::{NetworkError, Unreachable};
use openraft::raft::SnapshotResponse;
use openraft::{BasicNode, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The chunk size when openraft names none (its own default).
pub const DEFAULT_CHUNK: usize = 3 << 20;

/// How many times the request's time to live the last chunk may take: its answer
/// comes once the receiver has decoded the queue and kept it on disk (fsync), which
/// for hundreds of megabytes takes seconds.
const LAST_CHUNK_TTLS: u32 = 6;

/// One chunk of a group's snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The leader's vote.
    pub vote: Vote<NodeId>,
    /// What the snapshot is of (the same in every chunk of it).
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    /// Where `data` starts in the encoded snapshot; 0 starts a transfer.
    pub offset: u64,
    /// The bytes from `offset` (none in the probe that opens a transfer).
    pub data: Bytes,
    /// The last chunk: the receiver installs the snapshot.
    pub done: bool,
}

/// What a chunk received makes of a transfer.
pub enum Received {
    /// More to come.
    More,
    /// The last chunk: the whole snapshot, encoded.
    Whole {
        /// The leader's vote.
        vote: Vote<NodeId>,
        /// What it is of.
        meta: SnapshotMeta<NodeId, BasicNode>,
        /// The encoded [`GroupSnapshot`].
        bytes: Vec<u8>,
    },
}

/// A transfer in progress.
struct Partial {
    snapshot_id: String,
    vote: Vote<NodeId>,
    bytes: Vec<u8>,
}

/// The snapshots this node is being sent, by group: one transfer per group at a
/// time (a new first chunk replaces an unfinished one).
#[derive(Default)]
pub struct Receiving(Mutex<HashMap<GroupId, Partial>>, AtomicU64);

impl Receiving {
    /// Adds `chunk` of `group`'s transfer; an error (a chunk out of order) ends it.
    pub fn add(&self, group: GroupId, chunk: SnapshotChunk) -> Result<Received, String> {
        self.1.fetch_add(1, Ordering::Relaxed);
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if chunk.offset == 0 {
            all.insert(
                group,
                Partial {
                    snapshot_id: chunk.meta.snapshot_id.clone(),
                    vote: chunk.vote,
                    bytes: Vec::new(),
                },
            );
        }
        let p = match all.get_mut(&group) {
            Some(p) if p.snapshot_id == chunk.meta.snapshot_id && p.vote == chunk.vote => p,
            other => {
                let had = other.map(|p| p.snapshot_id.clone());
                all.remove(&group);
                return Err(format!(
                    "snapshot {} of group {group}: chunk at offset {} but no transfer of it \
                     is open here (open: {had:?})",
                    chunk.meta.snapshot_id, chunk.offset
                ));
            }
        };
        if p.bytes.len() as u64 != chunk.offset {
            let have = p.bytes.len();
            all.remove(&group);
            return Err(format!(
                "snapshot {} of group {group}: chunk at offset {}, expected {have}",
                chunk.meta.snapshot_id, chunk.offset
            ));
        }
        p.bytes.extend_from_slice(&chunk.data);
        if !chunk.done {
            return Ok(Received::More);
        }
        let p = all.remove(&group).expect("found above");
        Ok(Received::Whole {
            vote: p.vote,
            meta: chunk.meta,
            bytes: p.bytes,
        })
    }

    /// Chunks received so far (probes included), of every group.
    pub fn chunks(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    /// Drops `group`'s transfer, if any (its member stopped).
    pub fn forget(&self, group: GroupId) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group);
    }
}

/// Runs `f` on a blocking thread.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

/// `snapshot` encoded (as a whole-snapshot frame carried it), on a blocking thread.
pub async fn encode(snapshot: GroupSnapshot) -> Result<Bytes, String> {
    off_runtime(move || {
        rmp_serde::to_vec(&snapshot)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    })
    .await
}

/// A snapshot's bytes decoded, on a blocking thread.
pub async fn decode(bytes: Vec<u8>) -> Result<GroupSnapshot, String> {
    off_runtime(move || rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())).await
}

/// Why a chunked send failed.
pub enum SendError {
    /// The peer was not reached (or runs no member of the group).
    Unreachable(Unreachable),
    /// The peer answered otherwise than expected, or the snapshot could not be encoded.
    Network(NetworkError),
}

fn network(e: impl std::fmt::Display) -> SendError {
    SendError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
}

/// Sends `snapshot` of what `meta` says in chunks of `chunk` bytes through `call`
/// (one request each, with the time to live it is given: `ttl`, or
/// [`LAST_CHUNK_TTLS`] times it for the last); answers the receiver's answer to the
/// last.
pub async fn send<F, Fut>(
    vote: Vote<NodeId>,
    meta: SnapshotMeta<NodeId, BasicNode>,
    snapshot: GroupSnapshot,
    chunk: usize,
    ttl: Duration,
    mut call: F,
) -> Result<SnapshotResponse<NodeId>, SendError>
where
    F: FnMut(SnapshotChunk, Duration) -> Fut,
    Fut: Future<Output = Result<GroupReply, Unreachable>>,
{
    let chunk = chunk.max(1);
    let mut one = |offset: usize, data: Bytes, done: bool| {
        let c = SnapshotChunk {
            vote,
            meta: meta.clone(),
            offset: offset as u64,
            data,
            done,
        };
        let ttl = if done { ttl * LAST_CHUNK_TTLS } else { ttl };
        let sent = call(c, ttl);
        async move {
            match sent.await {
                Ok(GroupReply::SnapshotChunk(Ok(r))) => Ok(r),
                Ok(other) => Err(network(format!("{other:?}"))),
                Err(e) => Err(SendError::Unreachable(e)),
            }
        }
    };
    // The probe: a member down (or not running the group) answers before anything
    // is encoded.
    one(0, Bytes::new(), false).await?;
    let started = std::time::Instant::now();
    let bytes = encode(snapshot).await.map_err(network)?;
    tracing::debug!(
        snapshot = %meta.snapshot_id,
        bytes = bytes.len(),
        ms = started.elapsed().as_millis() as u64,
        "quorum queue group snapshot encoded to send"
    );
    let mut offset = 0;
    loop {
        let end = bytes.len().min(offset + chunk);
        let done = end == bytes.len();
        let answer = one(offset, bytes.slice(offset..end), done).await?;
        if done {
            return answer.ok_or_else(|| network("the last chunk was not answered as such"));
        }
        offset = end;
    }
}

#[cfg(test)]
#[path = "snapshot_wire_tests.rs"]
mod tests;
