//! Quorum queue groups on the cluster port: each group's Raft traffic travels in the
//! cluster protocol's frames as `Rpc::Group { group, rpc }`, so every group of a node
//! shares its one cluster port (and whatever transport security the port has). A node
//! answers through its [`Groups`]: the groups it is a member of, by id; a group it
//! does not run (not started yet, or deleted) answers [`GroupReply::NoGroup`], which the
//! sender takes as the member being unreachable, so openraft backs off and retries.
//!
//! [`GroupNetwork`] is openraft's network for one group, on the cluster's `Link`
//! request API (one link per peer and group).

use super::group::{GroupSnapshot, QueueTypes};
use super::install_hold::{self, NoElection};
use super::rounds::Rounds;
use super::snapshot_wire::{self, Received, Receiving, SendError, SnapshotChunk};
use crate::cluster::log_store::Encoded;
use crate::cluster::network::{failure, Link};
use crate::cluster::rpc::{Reply, Rpc};
use crate::cluster::transport::Transport;
use crate::cluster::NodeId;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, Raft, Snapshot, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// How long the leader's member waits for a write to commit before it fails it (a
/// forwarded publish, or the leader's own command): the forwarding publisher's own
/// bound, so a cut-off leader holds no write longer than its sender waits.
pub const LEADER_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A quorum queue group's id: the same on every node (the index of the committed
/// declare that made the queue, for instance).
pub type GroupId = u64;

/// One Raft request of a group.
#[derive(Debug, Serialize, Deserialize)]
pub enum GroupRpc {
    /// Append entries (and heartbeats).
    Append(AppendEntriesRequest<QueueTypes>),
    /// A vote request.
    Vote(VoteRequest<NodeId>),
    /// A whole snapshot (in one frame: what nodes before chunked snapshots sent; still
    /// answered).
    Snapshot {
        /// The leader's vote.
        vote: Vote<NodeId>,
        /// What it is of.
        meta: SnapshotMeta<NodeId, BasicNode>,
        /// The queue.
        data: GroupSnapshot,
    },
    /// One chunk of a snapshot (see `quorum/snapshot_wire.rs`).
    SnapshotChunk(SnapshotChunk),
}

/// The answer to a [`GroupRpc`]; a Raft error travels as text.
#[derive(Debug, Serialize, Deserialize)]
pub enum GroupReply {
    /// To [`GroupRpc::Append`].
    Append(Result<AppendEntriesResponse<NodeId>, String>),
    /// To [`GroupRpc::Vote`].
    Vote(Result<VoteResponse<NodeId>, String>),
    /// To [`GroupRpc::Snapshot`].
    Snapshot(Result<SnapshotResponse<NodeId>, String>),
    /// To [`GroupRpc::SnapshotChunk`]: taken (`None`), or, to the last, the
    /// installed snapshot's answer.
    SnapshotChunk(Result<Option<SnapshotResponse<NodeId>>, String>),
    /// This node runs no member of the group.
    NoGroup(GroupId),
}

/// Why a write sent to a node was not committed there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GroupWriteError {
    /// The node's member does not lead (or the node runs none): the leader's cluster
    /// address when known. Nothing was appended.
    NotLeader(Option<String>),
    /// Anything else (the entry may or may not have been committed).
    Failed(String),
}

/// The groups this node is a member of, and the transport their traffic to peers
/// goes through (the cluster port's TLS and secret).
pub struct Groups {
    rafts: Mutex<HashMap<GroupId, Member>>,
    transport: Arc<Transport>,
    /// The snapshots being sent to this node's members, in chunks.
    receiving: Receiving,
    /// A test's: how many answers to this node's forwarded publish writes to drop as
    /// if the link failed after the leader committed them ([`Groups::lose_write_answers`]).
    lost_answers: AtomicU32,
}

/// This node's member of a group: its Raft, and the encoded entries its log shares
/// with the cluster's frames (see `log_store/encoded.rs`).
#[derive(Clone)]
struct Member {
    raft: Raft<QueueTypes>,
    encoded: Option<Arc<Encoded>>,
    /// Every write through this member, made into commit rounds (`rounds.rs`).
    rounds: Rounds,
}

impl Groups {
    /// No groups yet; links to peers through `transport`.
    pub fn new(transport: Arc<Transport>) -> Groups {
        Groups {
            rafts: Default::default(),
            transport,
            receiving: Receiving::default(),
            lost_answers: AtomicU32::new(0),
        }
    }

    /// For tests: the next `n` answers to writes this node forwards to a group's
    /// leader are lost after the leader committed them, as when the link fails at
    /// that moment, so the writer tries again (what a retried entry does to the
    /// queue).
    #[doc(hidden)]
    pub fn lose_write_answers(&self, n: u32) {
        self.lost_answers.store(n, Ordering::Relaxed);
    }

    /// Whether to lose this answer ([`Groups::lose_write_answers`]): one fewer to lose.
    pub(super) fn lose_write_answer(&self) -> bool {
        self.lost_answers.load(Ordering::Relaxed) > 0
            && self
                .lost_answers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }

    /// The transport links to peers are opened with.
    pub fn transport(&self) -> Arc<Transport> {
        self.transport.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, Member>> {
        self.rafts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `raft` as this node's member of `group` (on the current tokio runtime:
    /// its writes' task starts there).
    pub fn insert(&self, group: GroupId, raft: Raft<QueueTypes>) {
        let rounds = Rounds::start(group, raft.clone());
        self.lock().insert(
            group,
            Member {
                raft,
                encoded: None,
                rounds,
            },
        );
    }

    /// Runs `raft` as this node's member of `group`, its log writing the entries it
    /// receives from the bytes they came in (kept in `encoded` while it appends them).
    pub fn insert_encoded(&self, group: GroupId, raft: Raft<QueueTypes>, encoded: Arc<Encoded>) {
        let encoded = Some(encoded);
        let rounds = Rounds::start(group, raft.clone());
        self.lock().insert(
            group,
            Member {
                raft,
                encoded,
                rounds,
            },
        );
    }

    /// Snapshot chunks received so far, for all groups (a test reads it).
    pub fn snapshot_chunks(&self) -> u64 {
        self.receiving.chunks()
    }

    /// Stops answering for `group`; answers its Raft (to shut down).
    pub fn remove(&self, group: GroupId) -> Option<Raft<QueueTypes>> {
        self.receiving.forget(group);
        self.lock().remove(&group).map(|m| m.raft)
    }

    /// The groups this node runs a member of, by id.
    pub fn ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// This node's member of `group`.
    pub fn get(&self, group: GroupId) -> Option<Raft<QueueTypes>> {
        self.lock().get(&group).map(|m| m.raft.clone())
    }

    /// Writes `command` to `group` if this node's member leads it (a publish forwarded
    /// from another node): answered once committed and applied here, or failed after
    /// [`LEADER_WRITE_TIMEOUT`].
    pub async fn write(
        &self,
        group: GroupId,
        command: super::machine::Command<super::group::StoredMessage>,
    ) -> Result<super::group::GroupResponse, GroupWriteError> {
        self.write_within(group, command, LEADER_WRITE_TIMEOUT)
            .await
    }

    /// [`write`](Self::write), failed after `timeout`: a leader cut off from its
    /// majority keeps leading (openraft does not step it down) and commits nothing, so
    /// without a bound every write forwarded to it waited, and was held in its memory,
    /// until the network healed. The entry may still commit later (the publisher's
    /// nack then makes a republish a duplicate: at-least-once).
    pub async fn write_within(
        &self,
        group: GroupId,
        command: super::machine::Command<super::group::StoredMessage>,
        timeout: std::time::Duration,
    ) -> Result<super::group::GroupResponse, GroupWriteError> {
        let Some(rounds) = self.rounds(group) else {
            return Err(GroupWriteError::NotLeader(None));
        };
        let written = rounds.write(super::group::stamped(command));
        let Ok(written) = tokio::time::timeout(timeout, written).await else {
            return Err(GroupWriteError::Failed(format!(
                "not committed within {timeout:?}: this node leads but a majority of the group does not answer it"
            )));
        };
        written
    }

    /// The commit rounds of this node's member of `group`: every write through the
    /// member goes there, so that what waits shares one entry (`rounds.rs`).
    pub fn rounds(&self, group: GroupId) -> Option<Rounds> {
        self.lock().get(&group).map(|m| m.rounds.clone())
    }

    /// Answers one request for `group`.
    pub async fn answer(&self, group: GroupId, rpc: GroupRpc) -> GroupReply {
        self.answer_frame(group, rpc, None).await
    }

    /// Answers one request for `group` decoded from `frame` (the frame's body): the
    /// cluster port's listener calls this. An append's entries are written to the log
    /// from the bytes they were decoded from.
    pub async fn answer_frame(
        &self,
        group: GroupId,
        rpc: GroupRpc,
        frame: Option<&bytes::Bytes>,
    ) -> GroupReply {
        let Some(Member { raft, encoded, .. }) = self.lock().get(&group).cloned() else {
            return GroupReply::NoGroup(group);
        };
        let text = |e: &dyn std::fmt::Display| e.to_string();
        match rpc {
            GroupRpc::Append(r) => {
                let kept = match (&encoded, frame) {
                    (Some(encoded), Some(frame)) if !r.entries.is_empty() => {
                        received(encoded, &r, frame)
                    }
                    _ => Vec::new(),
                };
                let (started, entries) = (std::time::Instant::now(), r.entries.len());
                let answer = raft.append_entries(r).await.map_err(|e| text(&e));
                tracing::debug!(
                    target: "actormq::cluster::stages",
                    group,
                    entries,
                    us = started.elapsed().as_micros() as u64,
                    "append taken by this follower's member"
                );
                if let Some(encoded) = encoded.filter(|_| !kept.is_empty()) {
                    encoded.forget(&kept);
                }
                GroupReply::Append(answer)
            }
            GroupRpc::Vote(r) => GroupReply::Vote(raft.vote(r).await.map_err(|e| text(&e))),
            GroupRpc::Snapshot { vote, meta, data } => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: Box::new(data),
                };
                GroupReply::Snapshot(
                    raft.install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| text(&e)),
                )
            }
            GroupRpc::SnapshotChunk(chunk) => {
                GroupReply::SnapshotChunk(self.chunk(group, &raft, chunk).await)
            }
        }
    }

    /// Takes one chunk of a snapshot sent to this node's member of `group`; at the
    /// last, installs the snapshot (decoded on a blocking thread).
    async fn chunk(
        &self,
        group: GroupId,
        raft: &Raft<QueueTypes>,
        chunk: SnapshotChunk,
    ) -> Result<Option<SnapshotResponse<NodeId>>, String> {
        let refused = |e: String| {
            tracing::warn!(group, error = %e, "quorum queue group: snapshot chunk refused");
            e
        };
        let (vote, meta, bytes) = match self.receiving.add(group, chunk).map_err(refused)? {
            Received::More => return Ok(None),
            Received::Whole { vote, meta, bytes } => (vote, meta, bytes),
        };
        // No election while the snapshot is decoded and installed (see `install_hold`);
        // they come back when this returns (or is cancelled).
        let _no_election = NoElection::new(raft);
        install_hold::test_pause().await;
        let len = bytes.len();
        let data = snapshot_wire::decode(bytes).await.map_err(|e| {
            refused(format!(
                "snapshot {} of group {group} ({len} bytes) undecodable: {e}",
                meta.snapshot_id
            ))
        })?;
        tracing::info!(group, snapshot = %meta.snapshot_id, bytes = len, "quorum queue group: installing the snapshot received");
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(data),
        };
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// Keeps the bytes of the entries of the append `r`, decoded from `frame`, in
/// `encoded` (for the log to write them as they came); answers their log ids, to
/// forget them once appended. Nothing is kept when the frame is not in the form
/// expected (the log encodes the entries again then).
fn received(
    encoded: &Encoded,
    r: &AppendEntriesRequest<QueueTypes>,
    frame: &bytes::Bytes,
) -> Vec<openraft::LogId<NodeId>> {
    match super::append_frame::entries(frame) {
        Some(at) if at.len() == r.entries.len() => {
            for (e, range) in r.entries.iter().zip(at) {
                encoded.keep(e.log_id, frame.slice(range));
            }
            r.entries.iter().map(|e| e.log_id).collect()
        }
        _ => {
            tracing::debug!("quorum group append: its entries' bytes not found in the frame");
            Vec::new()
        }
    }
}

/// openraft's network for one group: a `Link` to each peer's cluster port.
pub struct GroupNetwork {
    /// The group.
    pub group: GroupId,
    /// How links to peers are opened (the node's cluster transport).
    pub transport: Arc<Transport>,
    /// The entries the member's log keeps encoded, copied into appends instead of
    /// encoded once per follower (`None`: each append encoded whole).
    pub encoded: Option<Arc<Encoded>>,
}

/// openraft's client for one peer of one group.
pub struct GroupPeer {
    group: GroupId,
    link: Link,
    target: NodeId,
    encoded: Option<Arc<Encoded>>,
}

impl RaftNetworkFactory<QueueTypes> for GroupNetwork {
    type Network = GroupPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupPeer {
        if let Some(e) = &self.encoded {
            e.peer_added(target);
        }
        GroupPeer {
            group: self.group,
            link: Link::new(&node.addr, self.transport.clone()),
            target,
            encoded: self.encoded.clone(),
        }
    }
}

impl Drop for GroupPeer {
    fn drop(&mut self) {
        if let Some(e) = &self.encoded {
            e.peer_dropped(self.target);
        }
    }
}

type RpcResult<T> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

fn unreachable(e: impl std::fmt::Display) -> Unreachable {
    Unreachable::new(&std::io::Error::other(e.to_string()))
}

fn network(e: impl std::fmt::Display) -> NetworkError {
    NetworkError::new(&std::io::Error::other(e.to_string()))
}

impl GroupPeer {
    /// Sends `rpc`; a peer without the group is unreachable for it.
    async fn call(&self, rpc: GroupRpc, option: &RPCOption) -> Result<GroupReply, Unreachable> {
        self.call_within(rpc, option.hard_ttl()).await
    }

    /// [`Self::call`] answered within `ttl`.
    async fn call_within(
        &self,
        rpc: GroupRpc,
        ttl: std::time::Duration,
    ) -> Result<GroupReply, Unreachable> {
        let rpc = Rpc::Group {
            group: self.group,
            rpc,
        };
        Self::reply(self.link.call(&rpc, ttl).await)
    }

    /// Sends the append `rpc`, its entries copied from their encodings where kept. A
    /// peer that took it and did not answer in time is a `Timeout`, retried at once
    /// (`network::failure`).
    async fn append(
        &self,
        rpc: &AppendEntriesRequest<QueueTypes>,
        option: &RPCOption,
    ) -> Result<GroupReply, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let encoded = self.encoded.as_deref();
        let frame = |id| super::append_frame::encode(id, self.group, rpc, encoded);
        match self.link.call_frame(frame, option.hard_ttl()).await {
            Err(e) => {
                let leader = rpc.vote.leader_id().voted_for().unwrap_or_default();
                Err(failure(e, RPCTypes::AppendEntries, leader, self.target))
            }
            sent => Self::reply(sent).map_err(RPCError::Unreachable),
        }
    }

    fn reply(reply: std::io::Result<Reply>) -> Result<GroupReply, Unreachable> {
        match reply {
            Ok(Reply::Group(GroupReply::NoGroup(g))) => {
                Err(unreachable(format!("the peer runs no member of group {g}")))
            }
            Ok(Reply::Group(r)) => Ok(r),
            Ok(other) => Err(unreachable(format!("unexpected cluster reply {other:?}"))),
            Err(e) => Err(unreachable(e)),
        }
    }
}

impl RaftNetwork<QueueTypes> for GroupPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QueueTypes>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let started = std::time::Instant::now();
        let reply = self.append(&rpc, &option).await;
        tracing::debug!(
            target: "actormq::cluster::stages",
            to = self.target,
            entries = rpc.entries.len(),
            rtt_us = started.elapsed().as_micros() as u64,
            "append sent to a follower and answered"
        );
        if let Some(encoded) = &self.encoded {
            // What the peer holds now, for the encodings it no longer needs.
            let holds = match &reply {
                Ok(GroupReply::Append(Ok(AppendEntriesResponse::Success))) => rpc
                    .entries
                    .last()
                    .map(|e| e.log_id)
                    .or(rpc.prev_log_id)
                    .map(|l| l.index),
                Ok(GroupReply::Append(Ok(AppendEntriesResponse::PartialSuccess(m)))) => {
                    m.map(|l| l.index)
                }
                _ => None,
            };
            encoded.sent(
                self.target,
                holds,
                matches!(reply, Ok(GroupReply::Append(Ok(_)))),
            );
        }
        match reply {
            Ok(GroupReply::Append(Ok(r))) => Ok(r),
            Ok(other) => Err(RPCError::Network(network(format!("{other:?}")))),
            Err(e) => Err(e),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(GroupRpc::Vote(rpc), &option).await {
            Ok(GroupReply::Vote(Ok(r))) => Ok(r),
            Ok(other) => Err(RPCError::Network(network(format!("{other:?}")))),
            Err(e) => Err(RPCError::Unreachable(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<QueueTypes>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<QueueTypes, Fatal<NodeId>>> {
        // In chunks, encoded off the runtime threads (`quorum/snapshot_wire.rs`).
        let chunk = option
            .snapshot_chunk_size()
            .unwrap_or(snapshot_wire::DEFAULT_CHUNK);
        let this = &*self;
        let sent = snapshot_wire::send(
            vote,
            snapshot.meta,
            *snapshot.snapshot,
            chunk,
            option.hard_ttl(),
            |c, ttl| this.call_within(GroupRpc::SnapshotChunk(c), ttl),
        );
        tokio::select! {
            r = sent => r.map_err(|e| match e {
                SendError::Unreachable(e) => StreamingError::Unreachable(e),
                SendError::Network(e) => StreamingError::Network(e),
            }),
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
pub(super) mod tests;
