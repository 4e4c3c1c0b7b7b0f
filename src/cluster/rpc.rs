//! The node-to-node protocol on the cluster port: the project's own framing, as the
//! native protocol's (a `u32` big-endian length, then MessagePack through rmp-serde).
//! Each frame carries a request id; the answer carries the same id. One connection per
//! peer and purpose, one request at a time on it; a broken connection is dropped and
//! opened again on the next request.

use super::types::{DefinitionsSnapshot, NodeId, Request, TypeConfig};
use crate::error::BrokerError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{SnapshotMeta, Vote};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest frame accepted (a snapshot of many definitions fits).
pub const MAX_FRAME: usize = 256 << 20;

/// The largest message a cluster node accepts (`amqp.max_message_size`'s default and
/// cap, and `server.max_frame_size`'s cap, with `[cluster]`): a quorum queue's message
/// reaches each follower in one append, and openraft 0.9 cancels every append not
/// answered within the heartbeat interval (its `ReplicationCore` wraps the call in
/// its own timeout, whatever the network does). Measured on this 2-core machine at
/// load 7-9: 16 MiB was confirmed after about 1 s (a retry), 64 MiB after 8 s, 120 MiB
/// never (nacked after 10 s, elections). Larger messages wait for appends that carry
/// a big entry apart from the heartbeats (docs/CLUSTERING.md, "Commit rounds").
pub const MAX_REPLICATED_MESSAGE: u64 = 16 << 20;

/// A request from one node (or the CLI) to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// Raft: append entries (and heartbeats).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft: a vote request.
    Vote(VoteRequest<NodeId>),
    /// Raft: a whole snapshot.
    Snapshot {
        /// The leader's vote.
        vote: Vote<NodeId>,
        /// What the snapshot is of.
        meta: SnapshotMeta<NodeId, openraft::BasicNode>,
        /// The definitions.
        data: DefinitionsSnapshot,
    },
    /// A definitions change proposed on a follower, forwarded to the leader.
    Write(Request),
    /// This node's own view: id, role, leader, log and applied indexes.
    Local,
    /// The cluster's status, as `actormq cluster status` prints it.
    Status,
    /// Adds a node (learner, caught up, then voter).
    AddNode {
        /// Its id.
        id: NodeId,
        /// Its cluster address.
        addr: String,
    },
    /// Removes a voter.
    RemoveNode {
        /// Its id.
        id: NodeId,
    },
    /// Adds a node to quorum queue groups or takes it out of them (committed through
    /// the definitions log).
    ChangeGroups(super::quorum::grow::GroupChange),
    /// A quorum queue group's Raft traffic (see [`super::quorum::wire`]).
    Group {
        /// The group.
        group: super::quorum::wire::GroupId,
        /// The request.
        rpc: super::quorum::wire::GroupRpc,
    },
    /// Publishes (or another command) for a quorum queue group, forwarded to the node
    /// whose member leads it.
    GroupWrite {
        /// The group.
        group: super::quorum::wire::GroupId,
        /// The command to commit.
        command: super::quorum::machine::Command<super::quorum::group::StoredMessage>,
    },
    /// The leader's read index: the last log index committed when asked, confirmed by
    /// a quorum that it still leads.
    ReadIndex,
    /// Opens a consume session for a quorum queue this node leads: the connection
    /// then carries that session's frames only (see [`super::quorum::consume_wire`]).
    ConsumeSession(super::quorum::consume_wire::Open),
    /// Publishes to a classic queue of the node asked, forwarded by a node where the
    /// queue is a stand-in (see [`super::forward`]).
    Forward(super::forward::Forwarded),
    /// What a declare of a classic queue of the node asked reports (its ready
    /// messages and consumers), asked by a node where the queue is a stand-in.
    DeclareCounts {
        /// The virtual host.
        vhost: String,
        /// The queue.
        queue: String,
        /// The node that asks (logs).
        from: NodeId,
    },
    /// The sender's resource alarms (see [`super::alarms`]); answered with the
    /// receiver's.
    Alarms(super::alarms::Report),
    /// The counts of queues homed on the node asked, for a management listing on the
    /// node that asks (see [`super::home_stats`]).
    QueueStats {
        /// The node that asks (logs).
        from: NodeId,
        /// The queues, by virtual host and name.
        queues: Vec<super::home_stats::QueueKey>,
    },
}

/// One node's own view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Its id.
    pub id: NodeId,
    /// Its cluster address.
    pub addr: String,
    /// `leader`, `follower`, `candidate`, `learner` or `unreachable`.
    pub role: String,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// Its current term.
    pub term: u64,
    /// The index of the last entry in its log.
    pub last_log_index: Option<u64>,
    /// The index of the last entry it applied.
    pub applied_index: Option<u64>,
    /// The voters, by id and address.
    pub voters: Vec<(NodeId, String)>,
    /// The learners (being caught up), by id and address.
    pub learners: Vec<(NodeId, String)>,
    /// Its members of quorum queue groups.
    #[serde(default)]
    pub groups: Vec<GroupView>,
    /// The last entry its latest snapshot of the definitions covers.
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    /// The last entry purged from its log (behind a snapshot).
    #[serde(default)]
    pub purged_index: Option<u64>,
    /// The cluster protocol it speaks (`version::CLUSTER_PROTOCOL`); for a node
    /// refused for speaking another, the one it announced (0: a build from before the
    /// version gate); `None` when it could not be asked.
    #[serde(default)]
    pub protocol: Option<u32>,
    /// Its resource alarms raised (`memory`, `disk`), as it reports them.
    #[serde(default)]
    pub alarms: Vec<String>,
}

/// One node's member of a quorum queue's group, for `actormq cluster status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group's id (the log index of the queue's declare).
    pub id: u64,
    /// This member's role (`leader`, `follower`, ...).
    pub role: String,
    /// The group's leader as this member knows it.
    pub leader: Option<NodeId>,
    /// The index of the last entry in this member's log.
    pub last_log_index: Option<u64>,
    /// The index of the last entry it applied.
    pub applied_index: Option<u64>,
}

/// The cluster's status: each member's view and its lag behind the leader's log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The leader, if one is known.
    pub leader: Option<NodeId>,
    /// Every member (voters and learners), with its lag in entries behind the
    /// leader's last log index (`None` when it or the leader could not be asked).
    pub nodes: Vec<(NodeView, Option<u64>)>,
}

/// An answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Rpc::Append`]; an error is the remote Raft's, as text.
    Append(Result<AppendEntriesResponse<NodeId>, String>),
    /// To [`Rpc::Vote`].
    Vote(Result<VoteResponse<NodeId>, String>),
    /// To [`Rpc::Snapshot`].
    Snapshot(Result<SnapshotResponse<NodeId>, String>),
    /// To [`Rpc::Write`]: committed (and applied on the leader), or why not.
    Write(Result<(), WriteError>),
    /// To [`Rpc::Local`].
    Local(NodeView),
    /// To [`Rpc::Status`].
    Status(ClusterStatus),
    /// To a membership change.
    Membership(Result<(), BrokerError>),
    /// To [`Rpc::Group`].
    Group(super::quorum::wire::GroupReply),
    /// To [`Rpc::GroupWrite`]: committed and applied on the leader, or why not.
    GroupWrite(Result<super::quorum::group::GroupResponse, super::quorum::wire::GroupWriteError>),
    /// To [`Rpc::ReadIndex`]: the index, or why the node asked cannot give one (it
    /// names the leader it knows).
    ReadIndex(Result<Option<u64>, Option<NodeId>>),
    /// To [`Rpc::ConsumeSession`]: opened, or why not.
    ConsumeSession(Result<(), super::quorum::consume_wire::Refused>),
    /// To [`Rpc::ChangeGroups`]: what changed, or why nothing did.
    Groups(Result<super::quorum::grow::ChangeCount, BrokerError>),
    /// To [`Rpc::Forward`]: what the queue took.
    Forward(super::forward::Taken),
    /// To [`Rpc::DeclareCounts`]: the home queue's counts, or why not.
    DeclareCounts(Result<crate::broker::queue::actor::DeclareCounts, BrokerError>),
    /// To [`Rpc::Alarms`]: the node's own alarms.
    Alarms(super::alarms::Report),
    /// To [`Rpc::QueueStats`]: each queue's counts, in the order asked (`None`: it
    /// does not live on the node asked, or is not running there).
    QueueStats(Vec<Option<crate::broker::messages::QueueStats>>),
}

/// Why a forwarded write was not committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriteError {
    /// The node asked is not the leader (it names the one it knows): try there. The
    /// entry was not appended.
    NotLeader(Option<NodeId>),
    /// Anything else (the entry may or may not have been committed).
    Failed(BrokerError),
}

/// Writes one frame: `(id, value)`.
pub async fn write_frame<W, T>(w: &mut W, id: u64, value: &T) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
    T: Serialize,
{
    write_encoded(w, &encode_frame(id, value)?).await
}

/// One frame, `(id, value)`, as [`write_frame`] writes it (its length first).
pub fn encode_frame<T: Serialize + ?Sized>(id: u64, value: &T) -> std::io::Result<Vec<u8>> {
    frame_with(0, |out| {
        rmp_serde::encode::write(out, &(id, value))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    })
}

/// A frame whose body `encode` writes (MessagePack, the frame's `(id, value)`), with
/// room for `capacity` bytes of it to start with.
pub fn frame_with(
    capacity: usize,
    encode: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    // Encoded in place behind its length, filled in afterwards: a quorum queue's
    // append carries up to a megabyte of message bodies, which encoding into a vector
    // of its own and then copying into the frame copied twice more.
    let mut frame = Vec::with_capacity(4 + capacity);
    frame.extend_from_slice(&[0u8; 4]);
    encode(&mut frame)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cluster frame of {len} bytes is larger than {MAX_FRAME}"),
        ));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Writes a frame made by [`encode_frame`] or [`frame_with`].
pub async fn write_encoded<W>(w: &mut W, frame: &[u8]) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    w.write_all(frame).await?;
    w.flush().await
}

/// Reads one frame: `(id, value)`; `None` at a clean end of the stream.
pub async fn read_frame<R, T>(r: &mut R) -> std::io::Result<Option<(u64, T)>>
where
    R: tokio::io::AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match read_frame_body(r).await? {
        Some(body) => decode_frame(&body).map(Some),
        None => Ok(None),
    }
}

/// Reads one frame's body (after its length), not decoded: a quorum queue's follower
/// keeps the bytes of the entries it receives for its log (see
/// `quorum::append_frame`). `None` at a clean end of the stream.
pub async fn read_frame_body<R>(r: &mut R) -> std::io::Result<Option<Vec<u8>>>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cluster frame of {len} bytes is larger than {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Decodes a frame's body read by [`read_frame_body`]: `(id, value)`.
pub fn decode_frame<T: DeserializeOwned>(body: &[u8]) -> std::io::Result<(u64, T)> {
    rmp_serde::from_slice(body).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad cluster frame: {e}"),
        )
    })
}
