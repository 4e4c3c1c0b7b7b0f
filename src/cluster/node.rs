//! One node of the cluster: its Raft instance, the proposals waiting for their entry
//! to apply here, forwarding to the leader, membership changes and status.

use super::network::Link;
use super::op::{ClusterHook, Op, Outcome, Proposal};
use super::rpc::{ClusterStatus, NodeView, Reply, Rpc, WriteError};
use super::settings::ClusterSettings;
use super::state_machine::Applied;
use super::transport::Transport;
use super::types::{DefinitionsSnapshot, NodeId, Request, TypeConfig};
use crate::broker::BrokerHandle;
use crate::error::{BrokerError, ErrorCode};
use crate::storage::StoredUser;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

mod hook;
pub use hook::Hook;

/// How long a membership change may take (a new node is caught up first).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one node's answer to a status question may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared state of this node.
pub struct Core {
    /// This node's id.
    pub(super) id: NodeId,
    /// Where the others reach it.
    pub(super) addr: String,
    /// `data_dir/raft`.
    pub(super) dir: PathBuf,
    pub(super) settings: ClusterSettings,
    broker: OnceLock<BrokerHandle>,
    raft: OnceLock<Raft<TypeConfig>>,
    applied: Mutex<Applied>,
    /// Proposals of this node waiting for their entry to apply here, by request id.
    waiters: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    next_id: AtomicU64,
    /// The cluster's own runtime: every network use happens on it.
    pub(super) rt: tokio::runtime::Handle,
    /// Connections for forwarded writes and questions, by address.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// The quorum queue groups this node is a member of.
    pub(super) groups: Arc<super::quorum::wire::Groups>,
    /// This node's members of those groups (started and stopped by the definitions
    /// log's declares and deletes of quorum queues).
    pub(super) quorum: Arc<super::quorum::runtime::Members>,
    /// How connections to peers are opened and accepted.
    pub(super) transport: Arc<Transport>,
    /// Set while this node, a voter that came back with an empty log (its data
    /// directory lost), has not caught up: it grants no vote then, so that neither
    /// its forgotten vote nor its missing entries can elect a leader without them.
    pub(super) catching_up: std::sync::atomic::AtomicBool,
    /// What this node heard of the other nodes' resource alarms.
    pub(super) alarms: super::alarms::ClusterAlarms,
    /// Connections management listings ask queues' homes their counts on.
    pub(super) stats_links: super::home_stats::StatsLinks,
}

fn no_leader(what: &str) -> BrokerError {
    BrokerError::new(
        ErrorCode::ResourceError,
        format!("cluster: {what}: no leader is reachable (a majority of the nodes must be up); the change was not made"),
    )
}

/// A change this node, the leader, appended but could not commit in time: a majority
/// did not answer. Unlike [`no_leader`], it may still commit, if they answer before
/// another leader is elected.
fn not_committed(timeout: Duration) -> BrokerError {
    BrokerError::new(
        ErrorCode::ResourceError,
        format!("cluster: definitions change: not committed within {timeout:?}: this node leads but a majority of the nodes does not answer it; the change is made only if they answer before another leader is elected"),
    )
}

/// Most entries a group's leader sends a follower in one go (openraft's
/// `max_payload_entries`): see [`group_config`].
pub(in crate::cluster) const GROUP_PAYLOAD_ENTRIES: u64 = 16;

/// The Raft timing of a quorum queue group: the cluster's own. Its queue is
/// snapshotted (kept on disk in the group's directory, and the log purged behind it,
/// keeping the last 100 entries for followers a little behind) when the group's state
/// machine says a snapshot is due, not by openraft's entry count: every
/// `group::SNAPSHOT_EVERY` entries at least, and less often the larger the queue
/// (`src/cluster/quorum/group/cadence.rs`), so neither memory nor the log file grows
/// with the queue's history, and a large queue is not rewritten every few hundred
/// entries.
///
/// A new leader does not know how much of its log a follower holds: openraft probes
/// from the middle of the unpurged log, sending `max_payload_entries` entries from
/// there, and on a match jumps to the middle of what is left. With openraft's 300
/// that first probe was the whole tail, 100-360 entries of a megabyte each at full
/// rate that the survivor already had, sent one append each before the new leader's
/// first commit (0.1-0.27 s of every failover). With [`GROUP_PAYLOAD_ENTRIES`] the
/// search takes a few probes of that many entries. Replication in step is unchanged
/// (one or two entries in flight); a follower far behind is sent the same entries in
/// more rounds, each already cut to `MAX_APPEND_BYTES` appends.
pub(in crate::cluster) fn group_config(s: &ClusterSettings) -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "actormq-queue".into(),
        election_timeout_min: s.election_timeout_min_ms,
        election_timeout_max: s.election_timeout_max_ms,
        heartbeat_interval: s.heartbeat_ms,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 100,
        max_payload_entries: GROUP_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    // The same values passed the cluster's own validation at start.
    Arc::new(config.validate().unwrap_or_default())
}

fn role_name(state: ServerState) -> String {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
    .to_string()
}

fn raft_error(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("cluster: {e}"))
}

impl Core {
    pub(super) fn new(
        settings: ClusterSettings,
        dir: PathBuf,
        applied: Applied,
        rt: tokio::runtime::Handle,
        transport: Arc<Transport>,
    ) -> Core {
        // Request ids start from the clock: an entry proposed before a restart and
        // applied again after it never answers a new proposal.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let groups = Arc::new(super::quorum::wire::Groups::new(transport.clone()));
        let quorum = Arc::new(super::quorum::runtime::Members::new(
            settings.node_id,
            dir.join("queues"),
            group_config(&settings),
            groups.clone(),
            rt.clone(),
        ));
        Core {
            id: settings.node_id,
            addr: settings.advertised().to_string(),
            dir,
            settings,
            broker: OnceLock::new(),
            raft: OnceLock::new(),
            applied: Mutex::new(applied),
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(seed),
            rt,
            links: Mutex::new(HashMap::new()),
            groups,
            quorum,
            transport,
            catching_up: Default::default(),
            alarms: Default::default(),
            stats_links: Default::default(),
        }
    }

    pub(super) fn attach(&self, broker: BrokerHandle) {
        let _ = self.broker.set(broker);
    }

    pub(super) fn set_raft(&self, raft: Raft<TypeConfig>) {
        let _ = self.raft.set(raft);
    }

    pub(super) fn raft(&self) -> &Raft<TypeConfig> {
        self.raft.get().expect("raft started")
    }

    /// What the state machine keeps beside the definitions.
    pub(super) fn applied(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn state_path(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub(super) fn broker(&self) -> BrokerHandle {
        self.broker
            .get()
            .expect("broker attached before raft")
            .clone()
    }

    /// Answers this node's proposal `id` (if it is still waited for).
    pub(super) fn answer(&self, id: u64, outcome: Outcome) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }

    fn forget(&self, id: u64) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    pub(super) fn link(&self, addr: &str) -> Arc<Link> {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(Link::new(addr, self.transport.clone())))
            .clone()
    }

    /// The address of member `id`, as the membership records it.
    pub(super) fn node_addr(&self, id: NodeId) -> Option<String> {
        let m = self.raft().metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// The definitions as a snapshot: every virtual host's durable part, the users,
    /// and what the state machine keeps beside them (the queues' homes, the quorum
    /// groups, the transient definitions). Consistent only between two applies (the
    /// state machine takes it there).
    pub(super) async fn definitions_snapshot(&self) -> DefinitionsSnapshot {
        let broker = self.broker();
        let mut vhosts = BTreeMap::new();
        for v in broker.vhosts() {
            if let Ok(defs) = broker.vhost_definitions(&v).await {
                vhosts.insert(v, defs.durable());
            }
        }
        let a = self.applied();
        DefinitionsSnapshot {
            vhosts,
            // Not the users this node seeded from its own settings: those are its own.
            users: {
                let seeded = broker.seeded_users();
                broker
                    .users()
                    .iter()
                    .filter(|u| !seeded.contains(&u.name))
                    .map(StoredUser::from)
                    .collect()
            },
            homes: a.homes.clone(),
            groups: a.groups.clone(),
            transient: a.transient.clone(),
            deleted_users: a.deleted_users.clone(),
            // The cluster's (as the log gave it), not a name this node had as a
            // single broker and has not yet proposed.
            cluster_name: a.cluster_name.clone(),
            vhost_limits: broker.all_vhost_limits().into_iter().collect(),
        }
    }

    /// Commits `req`: on the leader directly, elsewhere forwarded to it; retried
    /// while no leader is known or the one asked is no longer it, until the commit
    /// timeout.
    async fn write(&self, req: Request) -> Result<(), BrokerError> {
        let timeout = Duration::from_millis(self.settings.commit_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leader = self.raft().current_leader().await;
            match leader {
                // Bounded: a leader cut off from the majority still leads (openraft
                // does not step down on silence), and its write would wait for the
                // network to heal.
                Some(l) if l == self.id => {
                    match tokio::time::timeout_at(deadline, self.raft().client_write(req.clone()))
                        .await
                    {
                        Ok(Ok(_)) => return Ok(()),
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
                        Ok(Err(e)) => return Err(raft_error(e)),
                        Err(_) => return Err(not_committed(timeout)),
                    }
                }
                Some(l) => {
                    if let Some(addr) = self.node_addr(l) {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        match self.link(&addr).call(&Rpc::Write(req.clone()), left).await {
                            Ok(Reply::Write(Ok(()))) => return Ok(()),
                            Ok(Reply::Write(Err(WriteError::Failed(e)))) => return Err(e),
                            Ok(Reply::Write(Err(WriteError::NotLeader(_)))) => {}
                            Ok(other) => {
                                return Err(raft_error(format!("unexpected reply {other:?}")))
                            }
                            // Retried: a change applies idempotently, and only the
                            // first application answers this proposal.
                            Err(e) => {
                                tracing::debug!(leader = l, error = %e, "cluster: forwarding a change failed; retrying")
                            }
                        }
                    }
                }
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(no_leader("definitions change"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A forwarded write, on the node asked: committed here if this node leads.
    pub(super) async fn write_here(&self, req: Request) -> Result<(), WriteError> {
        match self.raft().client_write(req).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(WriteError::NotLeader(f.leader_id))
            }
            Err(e) => Err(WriteError::Failed(raft_error(e))),
        }
    }

    /// On the leader: the index every change committed so far is at or before,
    /// once a quorum confirmed it still leads. Elsewhere: the leader it knows.
    pub(super) async fn read_index(&self) -> Result<Option<u64>, Option<NodeId>> {
        match self.raft().get_read_log_id().await {
            Ok((read, _)) => Ok(read.map(|l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(f.leader_id)
            }
            Err(_) => Err(None),
        }
    }

    /// Waits until this node has applied what the leader had committed when asked.
    pub(super) async fn barrier(&self) -> Result<(), BrokerError> {
        let timeout = Duration::from_millis(self.settings.commit_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let index = loop {
            let asked = match self.raft().current_leader().await {
                Some(l) if l == self.id => self.read_index().await.ok(),
                Some(l) => match self.node_addr(l) {
                    Some(addr) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        match self.link(&addr).call(&Rpc::ReadIndex, left).await {
                            Ok(Reply::ReadIndex(Ok(i))) => Some(i),
                            _ => None,
                        }
                    }
                    None => None,
                },
                None => None,
            };
            if let Some(i) = asked {
                break i;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(no_leader("reading the definitions"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft()
            .wait(Some(left))
            .applied_index_at_least(index, "barrier")
            .await
            .map(|_| ())
            .map_err(|_| no_leader("catching up with the leader"))
    }

    /// This node's own view.
    pub(super) fn local_view(&self) -> NodeView {
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let addr_of = |id: NodeId| {
            membership
                .get_node(&id)
                .map_or_else(String::new, |n| n.addr.clone())
        };
        NodeView {
            id: self.id,
            addr: self.addr.clone(),
            role: role_name(m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            protocol: Some(super::version::CLUSTER_PROTOCOL),
            alarms: {
                let a = self.broker().memory().local_alarms();
                [(a.memory, "memory"), (a.disk, "disk")]
                    .into_iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, name)| name.to_string())
                    .collect()
            },
            voters: membership.voter_ids().map(|id| (id, addr_of(id))).collect(),
            learners: membership
                .learner_ids()
                .map(|id| (id, addr_of(id)))
                .collect(),
            groups: self
                .groups
                .ids()
                .into_iter()
                .filter_map(|g| {
                    let m = self.groups.get(g)?.metrics().borrow().clone();
                    Some(super::rpc::GroupView {
                        id: g,
                        role: role_name(m.state),
                        leader: m.current_leader,
                        last_log_index: m.last_log_index,
                        applied_index: m.last_applied.map(|l| l.index),
                    })
                })
                .collect(),
        }
    }

    /// The cluster's status: every member asked for its own view.
    pub(super) async fn status(&self) -> ClusterStatus {
        let me = self.local_view();
        let mut members: BTreeMap<NodeId, String> = me.voters.iter().cloned().collect();
        members.extend(me.learners.iter().cloned());
        let mut views = Vec::new();
        for (id, addr) in members {
            let view = if id == self.id {
                me.clone()
            } else {
                match self.link(&addr).call(&Rpc::Local, STATUS_TIMEOUT).await {
                    Ok(Reply::Local(v)) => v,
                    Err(e) if super::version::Mismatch::of(&e).is_some() => NodeView {
                        id,
                        addr,
                        role: "other-version".into(),
                        protocol: super::version::Mismatch::of(&e).map(|m| m.theirs),
                        ..NodeView::default()
                    },
                    _ => NodeView {
                        id,
                        addr,
                        role: "unreachable".into(),
                        ..NodeView::default()
                    },
                }
            };
            views.push(view);
        }
        let leader = me.leader;
        let leader_last = views
            .iter()
            .find(|v| Some(v.id) == leader)
            .and_then(|v| v.last_log_index);
        let nodes = views
            .into_iter()
            .map(|v| {
                let lag = match (leader_last, v.last_log_index) {
                    (Some(l), Some(n)) => Some(l.saturating_sub(n)),
                    _ => None,
                };
                (v, lag)
            })
            .collect();
        ClusterStatus { leader, nodes }
    }

    /// Adds node `id` at `addr`: as a learner until caught up, then as a voter. On a
    /// follower, forwarded to the leader.
    pub(super) async fn add_node(&self, id: NodeId, addr: String) -> Result<(), BrokerError> {
        if let Some(reply) = self
            .forward_membership(Rpc::AddNode {
                id,
                addr: addr.clone(),
            })
            .await?
        {
            return reply;
        }
        let raft = self.raft();
        raft.add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(raft_error)?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(raft_error)?;
        tracing::info!(node = id, "cluster: node added");
        Ok(())
    }

    /// Removes voter `id` (it stops receiving the log). On a follower, forwarded.
    pub(super) async fn remove_node(&self, id: NodeId) -> Result<(), BrokerError> {
        if let Some(reply) = self.forward_membership(Rpc::RemoveNode { id }).await? {
            return reply;
        }
        let m = self.local_view();
        if !m.voters.iter().any(|(v, _)| *v == id) && !m.learners.iter().any(|(v, _)| *v == id) {
            return Err(BrokerError::not_found("cluster node", &id.to_string(), "-"));
        }
        let raft = self.raft();
        if m.learners.iter().any(|(v, _)| *v == id) {
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(raft_error)?;
        } else {
            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(raft_error)?;
        }
        tracing::info!(node = id, "cluster: node removed");
        Ok(())
    }

    /// Adds a node to quorum queue groups or takes it out of them: committed through
    /// the definitions log (so forwarded to its leader), answered once applied here.
    pub(super) async fn change_groups(
        self: &Arc<Self>,
        c: super::quorum::grow::GroupChange,
    ) -> Result<super::quorum::grow::ChangeCount, BrokerError> {
        Hook(self.clone())
            .propose(Op::ChangeGroups(c))
            .await?
            .groups()
    }

    /// Sends a membership change to the leader when this node is not it: the
    /// leader's answer, or `None` to make the change here.
    async fn forward_membership(
        &self,
        rpc: Rpc,
    ) -> Result<Option<Result<(), BrokerError>>, BrokerError> {
        let leader = self.raft().current_leader().await;
        match leader {
            Some(l) if l == self.id => Ok(None),
            Some(l) => {
                let addr = self
                    .node_addr(l)
                    .ok_or_else(|| no_leader("membership change"))?;
                match self.link(&addr).call(&rpc, MEMBERSHIP_TIMEOUT).await {
                    Ok(Reply::Membership(r)) => Ok(Some(r)),
                    Ok(other) => Err(raft_error(format!("unexpected reply {other:?}"))),
                    Err(e) => Err(raft_error(format!(
                        "the leader (node {l}) did not answer: {e}"
                    ))),
                }
            }
            None => Err(no_leader("membership change")),
        }
    }
}
