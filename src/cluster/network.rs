//! The client side of the cluster port: [`Link`], one connection to a peer used one
//! request at a time (with request ids, reopened after any failure), and openraft's
//! network on top of it. Connections are opened by the [`Transport`] (TLS and the
//! secret's proof), so nothing here sends a frame to an unproven peer.

use super::rpc::{encode_frame, read_frame, write_encoded, Reply, Rpc};
use super::transport::{Conn, Transport};
use super::types::{NodeId, TypeConfig};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, Snapshot, Vote};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One connection to a peer's cluster port.
pub struct Link {
    addr: String,
    transport: Arc<Transport>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    next_id: AtomicU64,
}

impl Link {
    /// A link to `addr` through `transport` (connected on first use).
    pub fn new(addr: &str, transport: Arc<Transport>) -> Link {
        Link {
            addr: addr.to_string(),
            transport,
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends `rpc` and waits for its answer, at most `timeout` (opening the
    /// connection included: a peer that accepts no handshake, being frozen or still
    /// starting, must not hold a heartbeat longer than its time to live). Any failure
    /// drops the connection: the next call opens a new one.
    pub async fn call(&self, rpc: &Rpc, timeout: Duration) -> std::io::Result<Reply> {
        self.call_frame(|id| encode_frame(id, rpc), timeout).await
    }

    /// [`Self::call`] with the request's frame made by `frame` from its request id (a
    /// quorum queue's append, from entries already encoded: `quorum::append_frame`).
    pub async fn call_frame(
        &self,
        frame: impl FnOnce(u64) -> std::io::Result<Vec<u8>>,
        timeout: Duration,
    ) -> std::io::Result<Reply> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let stream = tokio::time::timeout_at(deadline, self.transport.connect(&self.addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no handshake with {} within {timeout:?}", self.addr),
                    )
                })?
                .inspect_err(|e| {
                    if super::version::Mismatch::of(e).is_some() {
                        if super::version::report(&format!("{} {e}", self.addr)) {
                            tracing::error!(peer = %self.addr, "cluster: peer refused: {e}");
                        } else {
                            tracing::debug!(peer = %self.addr, "cluster: peer refused: {e}");
                        }
                    } else if e.kind() == std::io::ErrorKind::PermissionDenied {
                        tracing::warn!(peer = %self.addr, error = %e, "cluster: peer refused");
                    }
                })?;
            *conn = Some(stream);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Encoded before anything is sent: a request that cannot be encoded leaves
        // the connection as it was.
        let frame = frame(id)?;
        let stream = conn.as_mut().expect("connected above");
        let exchange = async {
            write_encoded(stream, &frame).await?;
            loop {
                match read_frame::<_, Reply>(stream).await? {
                    Some((got, reply)) if got == id => return Ok(reply),
                    // The late answer of a request that timed out: skipped.
                    Some(_) => continue,
                    None => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the peer closed the connection",
                        ))
                    }
                }
            }
        };
        let result = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                NoAnswer {
                    addr: self.addr.clone(),
                    timeout,
                },
            )),
        };
        if result.is_err() {
            *conn = None;
        }
        result
    }
}

/// A request the peer took (the connection was open) but did not answer within its
/// time to live: the peer is there but slow (a long fsync, a loaded machine), which
/// is not the same as gone. Told apart so that openraft retries such an append at
/// once ([`failure`]) instead of backing off as from an unreachable peer.
#[derive(Debug)]
pub struct NoAnswer {
    /// The peer's cluster address.
    pub addr: String,
    /// The time to live the request had.
    pub timeout: Duration,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer from {} within {:?}", self.addr, self.timeout)
    }
}

impl std::error::Error for NoAnswer {}

impl NoAnswer {
    /// The [`NoAnswer`] that `e` is, if it is one.
    pub fn of(e: &std::io::Error) -> Option<&NoAnswer> {
        e.get_ref()?.downcast_ref::<NoAnswer>()
    }
}

/// openraft's error for a request (`action`, from `from` to `target`) that failed
/// with `e`. openraft backs off from an `Unreachable` peer (500 ms in which its
/// replication to that peer sends nothing, not even heartbeats) and retries a
/// `Timeout` at once. A peer that took the request and did not answer in time is
/// slow, not gone, so that is a `Timeout`: as `Unreachable`, an append that took a
/// moment more than the heartbeat interval stopped that follower's replication for
/// half a second, and a quorum queue left with two members after a failover
/// stopped committing with it (docs/CLUSTERING.md, "Where a failover's time goes").
/// A refused or unfinished connection stays `Unreachable`.
pub fn failure<E: std::error::Error>(
    e: std::io::Error,
    action: RPCTypes,
    from: NodeId,
    target: NodeId,
) -> RPCError<NodeId, BasicNode, E> {
    match NoAnswer::of(&e) {
        Some(slow) => RPCError::Timeout(Timeout {
            action,
            id: from,
            target,
            timeout: slow.timeout,
        }),
        None => RPCError::Unreachable(Unreachable::new(&e)),
    }
}

/// Makes openraft's clients: one [`Link`] each, through this node's transport.
pub struct Network(pub Arc<Transport>);

/// openraft's client for one peer.
pub struct Peer {
    link: Link,
    /// The peer's node id, for the errors openraft is told ([`failure`]).
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            link: Link::new(&node.addr, self.0.clone()),
            target,
        }
    }
}

type RpcResult<T> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

fn unreachable<E: std::error::Error>(e: std::io::Error) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&e))
}

fn remote<E: std::error::Error>(message: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(message)))
}

fn unexpected(reply: Reply) -> String {
    format!("unexpected cluster reply {reply:?}")
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let leader = rpc.vote.leader_id().voted_for().unwrap_or_default();
        match self.link.call(&Rpc::Append(rpc), option.hard_ttl()).await {
            Ok(Reply::Append(Ok(r))) => Ok(r),
            Ok(Reply::Append(Err(e))) => Err(remote(e)),
            Ok(other) => Err(remote(unexpected(other))),
            Err(e) => Err(failure(e, RPCTypes::AppendEntries, leader, self.target)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.link.call(&Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(Ok(r))) => Ok(r),
            Ok(Reply::Vote(Err(e))) => Err(remote(e)),
            Ok(other) => Err(remote(unexpected(other))),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let rpc = Rpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data: *snapshot.snapshot,
        };
        match self.link.call(&rpc, option.hard_ttl()).await {
            Ok(Reply::Snapshot(Ok(r))) => Ok(r),
            Ok(Reply::Snapshot(Err(e))) => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other(e),
            ))),
            Ok(other) => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other(unexpected(other)),
            ))),
            Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
        }
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
