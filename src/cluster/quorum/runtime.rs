//! The runtime of quorum queue groups on one cluster node: where a new group's members
//! go ([`place`]), this node's running members ([`Members`]: started when the
//! committed declare applies here or at start-up, stopped and removed with the queue),
//! and [`QueueGroup`], the group as the broker's queue actor uses it (publish through
//! the leader, write the leader's own commands, read the applied queue, watch the
//! leadership).
//!
//! Everything that decides (the group id, the members, the limits) is computed from
//! the replicated definitions at the declare's log index, so every node computes the
//! same group without talking; the group's first membership is written by its lowest
//! member only, so no two nodes initialize different ones.

use super::group::{GroupResponse, GroupStateMachine, QueueTypes, StoredMessage};
use super::machine::{Command, ConsumerKey, Limits, QueueMachine};
use super::publisher::{MemberAddrs, Publisher};
use super::wire::{GroupId, GroupNetwork, GroupWriteError, Groups};
use crate::cluster::log_store::{DirGuard, Encoded, LogStore};
use crate::cluster::NodeId;
use crate::error::{BrokerError, ErrorCode};
use openraft::{BasicNode, Raft, RaftMetrics};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

mod placement;
pub use placement::{limits_of, limits_with_policy, place, GroupInfo, QueueGroups};

/// This node's members of quorum queue groups.
pub struct Members {
    id: NodeId,
    /// `data_dir/raft/queues`: one directory per group.
    dir: PathBuf,
    config: Arc<openraft::Config>,
    groups: Arc<Groups>,
    machines: Mutex<HashMap<GroupId, GroupStateMachine>>,
    /// The cluster's runtime: every group's Raft and network runs there.
    rt: tokio::runtime::Handle,
}

impl Members {
    /// No members yet; groups' logs under `dir`, their Raft timing `config`.
    pub fn new(
        id: NodeId,
        dir: PathBuf,
        config: Arc<openraft::Config>,
        groups: Arc<Groups>,
        rt: tokio::runtime::Handle,
    ) -> Members {
        Members {
            id,
            dir,
            config,
            groups,
            machines: Mutex::default(),
            rt,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The groups' Rafts on this node.
    pub fn groups(&self) -> Arc<Groups> {
        self.groups.clone()
    }

    /// The cluster's runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    fn machines(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, GroupStateMachine>> {
        self.machines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory of `group`'s log.
    pub fn dir_of(&self, group: GroupId) -> PathBuf {
        self.dir.join(group.to_string())
    }

    /// Starts this node's member of `info` (on the cluster's runtime) if this node is
    /// one and it is not running; the lowest member writes the first membership.
    /// Idempotent: a restart reopens the log and goes on from it.
    pub async fn start(&self, info: &GroupInfo) -> Result<(), BrokerError> {
        if !info.members.contains_key(&self.id) || self.groups.get(info.id).is_some() {
            return Ok(());
        }
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            BrokerError::internal(format!("quorum queue group {}: {what}: {e}", info.id))
        };
        // The log and the snapshot write through one guard, which the delete removes
        // the directory with (`stop`).
        let guard = Arc::new(DirGuard::default());
        // Each entry encoded once on this node: the log's records, the appends to the
        // followers and a follower's records share the bytes (log_store/encoded.rs).
        let encoded = Arc::new(Encoded::new());
        let log: LogStore<QueueTypes> = LogStore::open(&self.dir_of(info.id))
            .map_err(|e| failed("cannot open its log", &e))?
            .guarded(guard.clone())
            .with_encoded(encoded.clone());
        let sm = GroupStateMachine::open(info.limits.clone(), &self.dir_of(info.id))
            .map_err(|e| failed("cannot read its snapshot", &e))?
            .guarded(guard);
        sm.keep_checkouts_of(self.id);
        // Subscribed before openraft applies anything (it may apply committed entries
        // as it starts).
        let due = sm.snapshots_due();
        let network = GroupNetwork {
            group: info.id,
            transport: self.groups.transport(),
            encoded: Some(encoded.clone()),
        };
        let raft = Raft::new(self.id, self.config.clone(), network, log, sm.clone())
            .await
            .map_err(|e| failed("cannot start raft", &e))?;
        let fresh = !raft.is_initialized().await.unwrap_or(true);
        self.machines().insert(info.id, sm);
        self.groups.insert_encoded(info.id, raft.clone(), encoded);
        // The snapshot trigger holds no Raft handle between snapshots: it looks the
        // member up each time (so it starts once the member is listed), and ends with
        // the state machine or the member.
        let (groups, group) = (self.groups.clone(), info.id);
        self.rt.spawn(super::group::run_snapshots(due, move || {
            let raft = groups.get(group);
            async move {
                match raft {
                    Some(r) => r.trigger().snapshot().await.map_err(|_| ()),
                    None => Err(()),
                }
            }
        }));
        if fresh && !info.changed && info.members.keys().next() == Some(&self.id) {
            let nodes: BTreeMap<NodeId, BasicNode> = info
                .members
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if let Err(e) = raft.initialize(nodes).await {
                tracing::info!(group = info.id, error = %e, "quorum queue group: not initialized here");
            }
        }
        tracing::info!(group = info.id, members = ?info.members.keys().collect::<Vec<_>>(), "quorum queue group member started");
        Ok(())
    }

    /// Stops this node's member of `group` (if any) and removes its log directory:
    /// the queue was deleted. The removal goes through the member's directory guard,
    /// so a snapshot or purge still running (openraft's snapshot task outlives the
    /// shutdown) either ends before it or writes nothing after it.
    pub fn stop(&self, group: GroupId) {
        self.stop_keeping(group, false)
    }

    /// [`stop`](Self::stop), keeping the log directory when `keep_dir` (a member that
    /// may hold the only other copy of entries: `remove_strays` removes it at the
    /// node's next start if the group's record still excludes this node).
    pub fn stop_keeping(&self, group: GroupId, keep_dir: bool) {
        let guard = self
            .machines()
            .remove(&group)
            .and_then(|sm| sm.dir_guard())
            .unwrap_or_default();
        let raft = self.groups.remove(group);
        let dir = self.dir_of(group);
        self.rt.spawn(async move {
            if let Some(raft) = raft {
                if let Err(e) = raft.shutdown().await {
                    tracing::warn!(group, error = %e, "quorum queue group: its member did not shut down cleanly");
                }
            }
            if keep_dir {
                tracing::info!(group, "quorum queue group member stopped, its directory kept");
                return;
            }
            let existed = dir.exists();
            match guard.remove(&dir) {
                Ok(()) if existed => {
                    tracing::info!(group, "quorum queue group member stopped and removed")
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(group, dir = %dir.display(), error = %e, "quorum queue group: cannot remove its directory")
                }
            }
        });
    }

    /// Removes the directories of groups this node is no longer a member of (a crash
    /// between a delete and the removal).
    pub fn remove_strays(&self, keep: &BTreeSet<GroupId>) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in dir.flatten() {
            let stray = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<GroupId>().ok())
                .is_some_and(|g| !keep.contains(&g));
            if stray {
                tracing::info!(dir = %e.path().display(), "quorum queue group: removing the directory of a deleted queue");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Shuts every member down (the node stops).
    pub async fn shutdown(&self) {
        let ids: Vec<GroupId> = self.machines().keys().copied().collect();
        for id in ids {
            if let Some(raft) = self.groups.remove(id) {
                let _ = raft.shutdown().await;
            }
        }
    }

    /// The ids of the groups this node runs a member of.
    pub fn running(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.machines().keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

/// Reads a group's record as the applied definitions hold it now (its members and
/// the limits policies give it change): `None` once the group is gone.
pub type CurrentRecord = Arc<dyn Fn() -> Option<GroupInfo> + Send + Sync>;

/// One quorum queue's group as its queue actor uses it (on any node, a member or not).
pub struct QueueGroup {
    info: GroupInfo,
    /// The group as the applied state records it now (its members change: `grow`,
    /// `shrink`, a regroup; its limits: a policy change), when the node follows it;
    /// else `info`.
    current: Option<CurrentRecord>,
    members: Arc<Members>,
    publisher: OnceLock<Publisher>,
}

impl QueueGroup {
    /// The group `info` seen through this node's `members`.
    pub fn new(info: GroupInfo, members: Arc<Members>) -> QueueGroup {
        QueueGroup {
            info,
            current: None,
            members,
            publisher: OnceLock::new(),
        }
    }

    /// Follows the group's record as `current` reads it, instead of `info` (the
    /// group as it was when the queue started here).
    pub fn following(mut self, current: CurrentRecord) -> QueueGroup {
        self.current = Some(current);
        self
    }

    /// The group as recorded now.
    fn record_now(&self) -> Option<GroupInfo> {
        self.current.as_ref().and_then(|c| c())
    }

    /// The members (node id → cluster address) as recorded now.
    fn members_now(&self) -> BTreeMap<NodeId, String> {
        self.record_now()
            .map_or_else(|| self.info.members.clone(), |g| g.members)
    }

    /// The group's id.
    pub fn id(&self) -> GroupId {
        self.info.id
    }

    /// This node's id (consumers served here are checked out to it).
    pub fn node_id(&self) -> NodeId {
        self.members.id
    }

    /// The queue's limits in force: as this node's member applied them, else (no
    /// member here, or not started yet) as the definitions give them now.
    pub fn limits(&self) -> Limits {
        self.applied_limits()
            .map_or_else(|| self.recorded_limits().1, |(_, l)| l)
    }

    /// The limits this node's member enforces, with the definitions entry that set
    /// them (0: the declare): `None` on a node that is no member.
    pub fn applied_limits(&self) -> Option<(u64, Limits)> {
        self.read(|q| (q.limits_at(), q.limits().clone()))
    }

    /// The limits the definitions give the queue now, with the index of the entry
    /// that gave them (0: the declare): what the leader writes when its machine lags.
    pub fn recorded_limits(&self) -> (u64, Limits) {
        let record = self.record_now();
        let (at, limits) = record.as_ref().unwrap_or(&self.info).current_limits();
        (at, limits.clone())
    }

    /// The members' ids.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.members_now().keys().copied().collect()
    }

    fn raft(&self) -> Option<Raft<QueueTypes>> {
        self.members.groups.get(self.info.id)
    }

    /// Publishes `messages` in order; each answer comes once its entry is committed
    /// (a majority has it on disk): its id, or `None` when reject-publish refused it.
    pub fn publish(
        &self,
        messages: Vec<StoredMessage>,
    ) -> impl std::future::Future<Output = Vec<Result<Option<u64>, BrokerError>>> + Send {
        let publisher = self.publisher.get_or_init(|| {
            let _rt = self.members.rt.enter();
            let addrs: MemberAddrs = match &self.current {
                Some(c) => {
                    let c = c.clone();
                    let fallback: Vec<String> = self.info.members.values().cloned().collect();
                    Arc::new(move || {
                        c().map_or_else(|| fallback.clone(), |g| g.members.into_values().collect())
                    })
                }
                None => {
                    let fixed: Vec<String> = self.info.members.values().cloned().collect();
                    Arc::new(move || fixed.clone())
                }
            };
            Publisher::start_for(self.info.id, self.members.groups.clone(), addrs)
        });
        let answers: Vec<_> = messages.into_iter().map(|m| publisher.publish(m)).collect();
        futures_util::future::join_all(answers)
    }

    /// Writes `command` through the group's leader wherever it is: this node's member
    /// when it leads, else forwarded to the leader's node, following leader changes
    /// (as a publish is). For what a client may ask of the queue on any node (a
    /// purge); never for the leader's own commands ([`write`](Self::write)), which
    /// concern consumers served here and must keep their order.
    pub fn write_anywhere(
        &self,
        command: Command<StoredMessage>,
    ) -> impl std::future::Future<Output = Result<GroupResponse, BrokerError>> + Send {
        let groups = self.members.groups.clone();
        let group = self.info.id;
        let members: Vec<String> = self.members_now().into_values().collect();
        // On the cluster's runtime: its connections live there.
        let task = self.members.rt.spawn(async move {
            let mut links = HashMap::new();
            super::publisher::write(group, &groups, &members, &mut links, command).await
        });
        async move {
            task.await.map_err(|e| {
                BrokerError::internal(format!(
                    "quorum queue group {group}: write task failed: {e}"
                ))
            })?
        }
    }

    /// Writes one of the leader's commands (consumers, settlements, returns, gets,
    /// purge) through this node's member: refused unless it leads (they concern
    /// consumers served here, and must never be committed through another leader).
    /// Commands are proposed in the order this is called, each without waiting for the
    /// one before to commit, so a caller may keep several in flight and still have
    /// them in the log in its order; those that wait for a commit round share the
    /// next entry with each other and with the publishes (`rounds.rs`).
    pub fn write(
        &self,
        command: Command<StoredMessage>,
    ) -> impl std::future::Future<Output = Result<GroupResponse, BrokerError>> + Send {
        let group = self.info.id;
        let written = self.members.groups.rounds(group).map(|r| r.write(command));
        async move {
            let not_leader = || {
                BrokerError::new(
                    ErrorCode::NotAllowed,
                    format!("quorum queue group {group}: this node no longer leads it"),
                )
            };
            match written {
                None => Err(not_leader()),
                Some(w) => w.await.map_err(|e| match e {
                    GroupWriteError::NotLeader(_) => not_leader(),
                    GroupWriteError::Failed(e) => {
                        BrokerError::internal(format!("quorum queue group {group}: {e}"))
                    }
                }),
            }
        }
    }

    /// The leader this node's member knows (`None` on a node that is no member, or
    /// during an election).
    pub fn leader(&self) -> Option<NodeId> {
        self.raft()?.metrics().borrow().current_leader
    }

    /// Waits until this node's member knows a leader (the member may still be
    /// starting): false after `timeout`, or at once on a node that is no member.
    pub async fn leader_known(&self, timeout: std::time::Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        if !self.members_now().contains_key(&self.members.id) {
            return false;
        }
        let mut rx = loop {
            if let Some(rx) = self.metrics() {
                break rx;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        tokio::time::timeout_at(end, rx.wait_for(|m| m.current_leader.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The current term as this node's member knows it (0 on a node that is no
    /// member).
    pub fn term(&self) -> u64 {
        self.raft().map_or(0, |r| r.metrics().borrow().current_term)
    }

    /// The member's metrics, to watch leadership and applied entries (`None` while
    /// this node runs no member).
    pub fn metrics(&self) -> Option<tokio::sync::watch::Receiver<RaftMetrics<NodeId, BasicNode>>> {
        Some(self.raft()?.metrics())
    }

    /// The checkouts to this node's consumers applied since the last call, with the
    /// queue as applied (`None` on a node that is no member).
    pub fn take_checkouts<T>(
        &self,
        f: impl FnOnce(Vec<(ConsumerKey, u64)>, &QueueMachine<StoredMessage>) -> T,
    ) -> Option<T> {
        let sm = self.members.machines().get(&self.info.id).cloned()?;
        Some(sm.take_checkouts(f))
    }

    /// The messages that died applying entries since the last call, each with the
    /// term of the entry it died in (`None` on a node that is no member).
    pub fn take_dead(&self) -> Option<Vec<(u64, StoredMessage, super::machine::DeadReason)>> {
        let sm = self.members.machines().get(&self.info.id).cloned()?;
        Some(sm.take_dead())
    }

    /// Reads the queue as applied by this node's member.
    pub fn read<T>(&self, f: impl FnOnce(&QueueMachine<StoredMessage>) -> T) -> Option<T> {
        let sm = self.members.machines().get(&self.info.id).cloned()?;
        Some(sm.read(f))
    }

    /// The cluster's runtime, where connections to peers live (a consume session's).
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.members.rt.clone()
    }

    /// How connections to peers are opened (the cluster port's TLS and secret).
    pub(in crate::cluster) fn transport(&self) -> Arc<crate::cluster::transport::Transport> {
        self.members.groups.transport()
    }

    /// A member's cluster address: from the group's membership as this node's member
    /// knows it (members change: [`super::regroup`]), else from the declare's group.
    pub fn addr_of(&self, node: NodeId) -> Option<String> {
        let known = self.raft().and_then(|r| {
            let m = r.metrics().borrow().membership_config.clone();
            m.membership().get_node(&node).map(|n| n.addr.clone())
        });
        known.or_else(|| self.members_now().get(&node).cloned())
    }

    /// A member as the management API names nodes: `node2@127.0.0.1:25673`.
    pub fn node_name(&self, node: NodeId) -> String {
        match self.members_now().get(&node) {
            Some(addr) => format!("node{node}@{addr}"),
            None => format!("node{node}"),
        }
    }

    /// A member as errors name it: `node 2 (127.0.0.1:25673)`.
    pub fn describe(&self, node: NodeId) -> String {
        match self.members_now().get(&node) {
            Some(addr) => format!("node {node} ({addr})"),
            None => format!("node {node}"),
        }
    }
}
