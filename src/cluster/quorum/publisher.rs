//! A node's publishes to one quorum queue group: batched into `Enqueue` entries and
//! written through the group's leader, wherever the publish was made (as RabbitMQ
//! forwards a publish to the queue's leader).
//!
//! Group commit: the publishes that arrive while an entry commits make the next entry
//! (up to [`MAX_BATCH`]), so a busy queue gets many publishes per entry and per fsync,
//! and an idle one answers a lone publish at once. On the leader's node up to
//! [`IN_FLIGHT`] entries are in flight at once (the next one proposed while the one
//! before it replicates: openraft 0.9 appends and fsyncs an entry on the leader before
//! it sends it to the followers, so one entry at a time made the leader's fsync and the
//! followers' round trip strictly serial); through another node, one write at a time.
//! A publish is answered once its entry is committed (a majority has it on disk) and
//! applied on the leader: its id, or `None` when the queue refused it (reject-publish).
//! Publishes are written, and answered, in the order [`Publisher::publish`] was called;
//! entries in flight that come back not committed are written again in order, or
//! nacked when an entry after them committed (`flight.rs`).
//!
//! Each entry is numbered ([`Command::EnqueueFrom`]: this publisher's random writer
//! id and the entry's number, kept by every try of it), so an entry written again
//! whose first try committed after all (its answer lost on the link, or a member
//! that lost the lead had its entry committed by the next leader) is enqueued once:
//! the group's machine skips a number it has applied (`machine/writers.rs`).

use super::group::{stamped, GroupResponse, StoredMessage};
use super::machine::{Command, Weighed};
use super::rounds::MAX_BYTES;
use super::wire::{GroupId, GroupWriteError, Groups};
use crate::cluster::network::Link;
use crate::cluster::rpc::{Reply, Rpc};
use crate::error::BrokerError;
use flight::Then;
use rand_core::RngCore;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod flight;

/// Most publishes in one entry (and at most [`MAX_BYTES`] of them beyond the first:
/// an entry must fit one cluster frame to reach the followers).
pub const MAX_BATCH: usize = 1000;

/// Most publish entries of one node in flight at once in its member when it leads:
/// the next proposed while the one before it replicates hides the leader's fsync of
/// it (a third of a publish round at load 14: docs/BENCHMARKS.md, "what caps the
/// rate"). More would only wait: the member's commit rounds keep at most
/// `rounds::MAX_ROUNDS` (2) entries proposed.
pub const IN_FLIGHT: usize = 2;

/// Fewest publishes waiting for an entry to be proposed behind one in flight (with
/// none in flight, whatever waits goes at once). Each entry costs the leader an append
/// and an fsync in turn, and publishes come one by one: without a floor the second
/// entry went with the first publish or two that came, and the next large batch
/// waited for a slot behind it.
pub const MIN_BEHIND: usize = 100;

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

/// A publish waiting for its entry.
type Queued = (StoredMessage, Waiter);

/// An entry proposed to this node's leading member, not yet answered.
struct Pending {
    /// The entry as written ([`Command::EnqueueFrom`], not stamped): a try again is
    /// the same entry, its number kept.
    command: Command<StoredMessage>,
    waiters: Vec<Waiter>,
    answer: Pin<Box<dyn Future<Output = Result<GroupResponse, GroupWriteError>> + Send>>,
}

/// Whether this node's member of `group` leads it now (as far as it knows): only then
/// are entries pipelined, so that an entry forwarded to another node never overtakes
/// one still in flight here.
fn leads(group: GroupId, groups: &Groups) -> bool {
    groups.get(group).is_some_and(|raft| {
        let m = raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(m.id) && m.state == openraft::ServerState::Leader
    })
}

/// The next entry's publishes from the front of `queued`: at least one, at most
/// [`MAX_BATCH`] and [`MAX_BYTES`] beyond the first.
fn next_batch(queued: &mut VecDeque<Queued>) -> (Vec<StoredMessage>, Vec<Waiter>) {
    let mut bytes = 0;
    let mut n = 0;
    for (m, _) in queued.iter() {
        let b = m.accounted_len();
        if n == MAX_BATCH || (n > 0 && bytes + b > MAX_BYTES) {
            break;
        }
        bytes += b;
        n += 1;
    }
    queued.drain(..n).unzip()
}

fn answer(group: GroupId, waiters: Vec<Waiter>, written: Result<GroupResponse, BrokerError>) {
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

async fn batcher(
    group: GroupId,
    groups: Arc<Groups>,
    members: MemberAddrs,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let mut links: HashMap<String, Arc<Link>> = HashMap::new();
    let mut queued: VecDeque<Queued> = VecDeque::new();
    let mut flight: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    // This run's writer id: drawn at random, so that a node restarted (or this
    // queue's publisher started again) is a new writer to the group's machine.
    let writer = rand_core::OsRng.next_u64();
    let mut seq = 0u64;
    loop {
        while let Ok(p) = rx.try_recv() {
            queued.push_back(p);
        }
        let behind = flight.len() < IN_FLIGHT && queued.len() >= MIN_BEHIND;
        // Asked once: a leadership lost between two asks would send a forwarded write
        // while an entry is still in flight here, and it could commit ahead of it.
        let leading = !queued.is_empty() && leads(group, &groups);
        if !queued.is_empty() && (flight.is_empty() || (behind && leading)) {
            let (messages, waiters) = next_batch(&mut queued);
            seq += 1;
            let command = Command::EnqueueFrom {
                writer,
                seq,
                messages,
            };
            match groups.rounds(group).filter(|_| leading) {
                Some(rounds) => {
                    let answer = Box::pin(rounds.write(stamped(command.clone())));
                    flight.push_back(Pending {
                        command,
                        waiters,
                        answer,
                    });
                }
                None => {
                    // Not leading here: one forwarded write at a time (nothing in
                    // flight here, so it overtakes nothing).
                    let written = write(group, &groups, &members(), &mut links, command).await;
                    answer(group, waiters, written);
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            a = async { (&mut flight.front_mut().expect("in flight").answer).await },
                if !flight.is_empty() =>
            {
                let head = flight.pop_front().expect("in flight");
                match a {
                    Ok(r) => answer(group, head.waiters, Ok(r)),
                    Err(GroupWriteError::Failed(e)) => {
                        answer(group, head.waiters, Err(failed(group, e)))
                    }
                    Err(refused) => {
                        let rest = std::mem::take(&mut flight);
                        let ctx = (&*groups, &members, &mut links);
                        settle_refused(group, ctx, (head, refused), rest).await;
                    }
                }
            }
            p = rx.recv(), if open => match p {
                Some(p) => queued.push_back(p),
                None => open = false,
            },
            else => return,
        }
    }
}

/// The head of the entries in flight came back `refused` (its member did not lead):
/// the answers of those behind it are awaited, then each entry is confirmed, nacked or
/// written again in order (`flight::settle`) before anything newer is written.
async fn settle_refused(
    group: GroupId,
    (groups, members, links): (&Groups, &MemberAddrs, &mut HashMap<String, Arc<Link>>),
    (head, refused): (Pending, GroupWriteError),
    rest: VecDeque<Pending>,
) {
    let mut answers = vec![Err(refused)];
    let mut entries = vec![(head.command, head.waiters)];
    for p in rest {
        answers.push(p.answer.await);
        entries.push((p.command, p.waiters));
    }
    for ((command, waiters), then) in entries.into_iter().zip(flight::settle(answers)) {
        let written = match then {
            Then::Confirm(r) => Ok(r),
            Then::Nack(e) => Err(failed(group, e)),
            Then::Retry => write(group, groups, &members(), links, command).await,
        };
        answer(group, waiters, written);
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
        let mut called = link.call(&rpc, left).await;
        if called.is_ok() && groups.lose_write_answer() {
            let lost = std::io::ErrorKind::ConnectionReset;
            called = Err(std::io::Error::new(lost, "answer lost (a test's)"));
        }
        match called {
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

#[cfg(test)]
#[path = "publisher_tests.rs"]
mod tests;
