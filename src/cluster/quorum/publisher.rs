//! A node's publishes to one quorum queue group: batched into `Enqueue` entries and
//! written through the group's leader, wherever the publish was made (as RabbitMQ
//! forwards a publish to the queue's leader).
//!
//! Group commit: one write is in flight at a time; the publishes that arrive while it
//! commits make the next entry (up to [`MAX_BATCH`]), so a busy queue gets many
//! publishes per entry and per fsync, and an idle one answers a lone publish at once.
//! A publish is answered once its entry is committed (a majority has it on disk) and
//! applied on the leader: its id, or `None` when the queue refused it (reject-publish).
//! Publishes are written in the order [`Publisher::publish`] was called.

use super::group::{stamped, GroupResponse, StoredMessage};
use super::machine::{Command, Weighed};
use super::rounds::MAX_BYTES;
use super::wire::{GroupId, GroupWriteError, Groups};
use crate::cluster::network::Link;
use crate::cluster::rpc::{Reply, Rpc};
use crate::error::BrokerError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most publishes in one entry (and at most [`MAX_BYTES`] of them beyond the first:
/// an entry must fit one cluster frame to reach the followers).
pub const MAX_BATCH: usize = 1000;

/// How long a write may look for a leader before the publishes fail.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type Waiter = oneshot::Sender<Result<Option<u64>, BrokerError>>;

/// The cluster addresses of a group's members as recorded now.
pub type MemberAddrs = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// The publishing side of one group on this node.
pub struct Publisher {
    tx: mpsc::UnboundedSender<(StoredMessage, Waiter)>,
}

impl Publisher {
    /// Starts the batcher of `group` (on the current tokio runtime); this node's member
    /// (if any) is found in `groups`, other members through their cluster ports.
    pub fn start(group: GroupId, groups: Arc<Groups>) -> Publisher {
        Publisher::start_for(group, groups, Arc::new(Vec::new))
    }

    /// [`start`](Self::start) on a node that may run no member of the group: while no
    /// leader is known, the writes ask the cluster addresses `members` answers (read
    /// again for each write: members change) in turn (a member that does not lead
    /// answers with the leader's address).
    pub fn start_for(group: GroupId, groups: Arc<Groups>, members: MemberAddrs) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(group, groups, members, rx));
        Publisher { tx }
    }

    /// Queues `message`; the answer comes once it is committed. Synchronous up to the
    /// queueing, so the order of calls is the queue's order.
    pub fn publish(
        &self,
        message: StoredMessage,
    ) -> impl std::future::Future<Output = Result<Option<u64>, BrokerError>> {
        let (tx, rx) = oneshot::channel();
        let queued = self.tx.send((message, tx)).is_ok();
        async move {
            if !queued {
                return Err(BrokerError::internal("quorum queue group stopped"));
            }
            rx.await
                .unwrap_or_else(|_| Err(BrokerError::internal("quorum queue group stopped")))
        }
    }
}

async fn batcher(
    group: GroupId,
    groups: Arc<Groups>,
    members: MemberAddrs,
    mut rx: mpsc::UnboundedReceiver<(StoredMessage, Waiter)>,
) {
    let mut links: HashMap<String, Arc<Link>> = HashMap::new();
    // A publish that did not fit the batch before it (rounds::MAX_BYTES): the next
    // batch's first.
    let mut held = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.0.accounted_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            let b = next.0.accounted_len();
            if bytes + b > MAX_BYTES {
                held = Some(next);
                break;
            }
            bytes += b;
            batch.push(next);
        }
        let (messages, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let written = write(
            group,
            &groups,
            &members(),
            &mut links,
            Command::Enqueue(messages),
        )
        .await;
        match written {
            Ok(r) => {
                for (w, id) in waiters.into_iter().zip(r.enqueued) {
                    let _ = w.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::warn!(group, error = %e, "quorum queue: publishes not committed");
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
    }
}

fn failed(group: GroupId, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("quorum queue group {group}: {e}"))
}

/// Writes `command` through the group's leader: this node's member when it leads,
/// else the leader's node (retried, as leaders change, until [`WRITE_TIMEOUT`]).
pub(super) async fn write(
    group: GroupId,
    groups: &Groups,
    members: &[String],
    links: &mut HashMap<String, Arc<Link>>,
    command: Command<StoredMessage>,
) -> Result<GroupResponse, BrokerError> {
    let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
    let mut leader_addr: Option<String> = None;
    let mut asked = 0usize;
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::new(
                crate::error::ErrorCode::ResourceError,
                format!("quorum queue group {group}: no leader reachable within {WRITE_TIMEOUT:?}; not committed"),
            ));
        }
        let target = match (&leader_addr, groups.rounds(group)) {
            // In this node's member's next commit round (with the leader's own
            // commands); bounded like the rest: a leader cut off from its majority
            // commits nothing.
            (None, Some(rounds)) => {
                let written =
                    tokio::time::timeout_at(deadline, rounds.write(stamped(command.clone()))).await;
                match written {
                    Err(_) => continue, // the deadline: answered at the top of the loop
                    Ok(Ok(r)) => return Ok(r),
                    Ok(Err(GroupWriteError::NotLeader(addr))) => addr,
                    Ok(Err(GroupWriteError::Failed(e))) => return Err(failed(group, e)),
                }
            }
            (Some(addr), _) => Some(addr.clone()),
            // No member here: a member knows the leader.
            (None, None) if !members.is_empty() => {
                asked += 1;
                Some(members[asked % members.len()].clone())
            }
            (None, None) => None,
        };
        let Some(addr) = target else {
            // No leader known yet (an election): look again shortly.
            leader_addr = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let link = links
            .entry(addr.clone())
            .or_insert_with(|| Arc::new(Link::new(&addr, groups.transport())))
            .clone();
        let rpc = Rpc::GroupWrite {
            group,
            command: command.clone(),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match link.call(&rpc, left).await {
            Ok(Reply::GroupWrite(Ok(r))) => return Ok(r),
            Ok(Reply::GroupWrite(Err(GroupWriteError::NotLeader(next)))) => {
                leader_addr = next;
                if leader_addr.is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(Reply::GroupWrite(Err(GroupWriteError::Failed(e)))) => return Err(failed(group, e)),
            Ok(other) => return Err(failed(group, format!("unexpected reply {other:?}"))),
            Err(_) => {
                // The leader went: ask again.
                leader_addr = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
