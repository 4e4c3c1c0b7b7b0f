//! A cluster of actormq nodes with replicated definitions, on openraft.
//!
//! Every definitions change (virtual hosts, users, permissions, policies, exchanges,
//! queues, bindings) made on any node is an [`Op`] in one Raft log shared by all nodes.
//! A node that is not the leader forwards its change to the leader; once committed,
//! every node applies it to its own registries through the same path a single node
//! takes, and starts or stops its own actors for it. The client is answered once its
//! own node has applied the change. Exclusive queues (and their bindings) stay local
//! to their connection's node and are never replicated. A queue's messages live on its
//! home node (the one that declared it, as RabbitMQ's classic queues): elsewhere the
//! queue is a stand-in that forwards publishes to the home (`forward`, confirmed once
//! the home's queue took them) and serves consumers and gets from there through
//! consume sessions ([`quorum::session_follower`], as a quorum queue's follower does);
//! with the home down, publishes are nacked and consumers cancelled naming it. A
//! quorum queue is replicated in a Raft group of its own ([`quorum`]).
//! docs/CLUSTERING.md has the whole design and its faults.
//!
//! Without `[cluster]` none of this runs: the broker has no cluster hook and applies
//! each change at once, as it always did.
//!
//! - `settings`: `[cluster]`.
//! - `op`: the replicated change and the broker's hook.
//! - `types`: openraft's type configuration, the entry and the snapshot.
//! - `log_store`: the log and vote on disk. `state_machine`: applying entries.
//! - `transport`: TLS and the cluster secret's proof on every connection.
//! - `version`: the cluster protocol version every connection announces.
//! - `rpc`, `network`, `server`: the node-to-node protocol, its client and listener.
//! - `forward`: publishes to a classic queue of another node, batched to its home.
//! - `home_stats`: a queue's counts for the management API, asked of its home.
//! - `alarms`: each node's memory and disk alarms, told to the others, which block
//!   their publishers too.
//! - `node`: proposals, forwarding, membership, status. `snapshot`: what installing a
//!   snapshot of the definitions log changes here.
//! - [`quorum`]: quorum queues, each its own Raft group (the queue's state machine).
//! - `drift`: transient definitions over restarts, definitions from before joining,
//!   a removed node's restart.
//! - `stall`: a probe of the cluster runtime's stalls, for the stage logs.

mod alarms;
mod drift;
mod forward;
mod home_stats;
mod log_store;
mod network;
mod node;
mod op;
#[cfg(test)]
mod policy_tests;
pub mod quorum;
pub(crate) mod rpc;
mod server;
mod settings;
mod snapshot;
mod stall;
mod state_machine;
#[cfg(test)]
mod tests;
mod transport;
mod types;
mod version;

pub use forward::Home;
pub use home_stats::{HomeStats, QueueKey, STATS_WAIT};
pub use op::{
    quorum_limits, quorum_limits_after, ClusterHook, Op, Outcome, Proposal, QuorumLimits,
};
pub use rpc::{ClusterStatus, NodeView};
pub use settings::{ClusterSettings, Secret, SeedNode};
pub use state_machine::LOG_OWNER;
pub use transport::Transport;
pub use types::NodeId;
pub use version::CLUSTER_PROTOCOL;

use crate::broker::BrokerHandle;
use crate::error::BrokerError;
use network::{Link, Network};
use node::{Core, Hook};
use rpc::{Reply, Rpc};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn failed(what: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("cluster: {what}: {e}"))
}

/// This node of a cluster: its runtime, its cluster port, its Raft instance.
///
/// Made in two steps because the broker and the Raft instance need each other: the
/// broker is started with [`hook`](Self::hook), then [`start`](Self::start) attaches
/// it and starts Raft (which may apply committed entries to it at once).
pub struct ClusterNode {
    core: Arc<Core>,
    runtime: Option<tokio::runtime::Runtime>,
    listener: Option<std::net::TcpListener>,
    local_addr: SocketAddr,
}

impl ClusterNode {
    /// Opens `data_dir/raft` and binds the cluster port; `tls` is used when
    /// `settings.tls` is set.
    pub fn prepare(
        settings: &ClusterSettings,
        tls: &crate::settings::TlsSettings,
        data_dir: &Path,
    ) -> Result<ClusterNode, BrokerError> {
        let transport = Arc::new(Transport::new(settings, tls).map_err(|e| failed("tls", e))?);
        let dir = data_dir.join("raft");
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed(&format!("cannot create {}", dir.display()), e))?;
        let applied = state_machine::Applied::load(&dir.join("state"))
            .map_err(|e| failed("cannot read data_dir/raft/state", e))?;
        let listener = std::net::TcpListener::bind(&settings.bind)
            .map_err(|e| failed(&format!("cannot listen on {}", settings.bind), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failed("cluster port", e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| failed("cluster port", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("actormq-cluster")
            .enable_all()
            .build()
            .map_err(|e| failed("cannot start the cluster runtime", e))?;
        let core = Arc::new(Core::new(
            settings.clone(),
            dir,
            applied,
            runtime.handle().clone(),
            transport,
        ));
        Ok(ClusterNode {
            core,
            runtime: Some(runtime),
            listener: Some(listener),
            local_addr,
        })
    }

    /// What the broker is started with ([`crate::BrokerBuilder::cluster`]).
    pub fn hook(&self) -> Arc<dyn ClusterHook> {
        Arc::new(Hook(self.core.clone()))
    }

    /// The address the cluster port listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Attaches `broker`, starts Raft and the cluster port, and (in the background)
    /// forms or joins the cluster.
    pub fn start(&mut self, broker: BrokerHandle) -> Result<(), BrokerError> {
        self.core.attach(broker);
        let s = &self.core.settings;
        let config = definitions_config(s)
            .validate()
            .map_err(|e| failed("settings", e))?;
        let log = log_store::LogStore::open(&self.core.dir)
            .map_err(|e| failed("cannot open data_dir/raft/log", e))?;
        let sm = state_machine::StateMachine {
            core: self.core.clone(),
        };
        let runtime = self.runtime.as_ref().expect("running");
        let id = self.core.id;
        if let Some(why) = runtime.block_on(drift::removed(&self.core)) {
            return Err(failed("refusing to start", why));
        }
        // Before Raft applies anything new: the state the log left here, transient
        // entities included.
        runtime.block_on(drift::restore_transient(&self.core));
        let pre_path = self.core.dir.join(drift::PRE_CLUSTER);
        let pre_cluster = match std::fs::read(&pre_path) {
            Ok(b) => {
                rmp_serde::from_slice(&b).map_err(|e| failed("data_dir/raft/pre-cluster", e))?
            }
            Err(_) if self.core.applied().last_applied.is_none() => {
                let ops = runtime.block_on(drift::pre_cluster_ops(&self.core));
                if !ops.is_empty() {
                    let bytes = rmp_serde::to_vec(&ops).map_err(|e| failed("pre-cluster", e))?;
                    log_store::write_atomic(&pre_path, &bytes)
                        .map_err(|e| failed("cannot write data_dir/raft/pre-cluster", e))?;
                }
                ops
            }
            Err(_) => Vec::new(),
        };
        // Before the definitions log applies anything new (which may start or stop
        // members too).
        runtime.block_on(start_groups(self.core.clone()));
        let raft = runtime
            .block_on(openraft::Raft::new(
                id,
                Arc::new(config),
                Network(self.core.transport.clone()),
                log,
                sm,
            ))
            .map_err(|e| failed("cannot start raft", e))?;
        let fresh = !runtime
            .block_on(raft.is_initialized())
            .map_err(|e| failed("cannot start raft", e))?;
        self.core.set_raft(raft);
        // An empty log with seeds: maybe a voter that lost its data directory. It
        // grants no vote until `bootstrap` has asked the seeds (and, if so, until it
        // has caught up).
        if fresh && !s.seeds.is_empty() {
            self.core.catching_up.store(true, Ordering::Release);
        }
        let listener = self.listener.take().expect("started once");
        let core = self.core.clone();
        runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => server::serve(l, core).await,
                Err(e) => tracing::error!(error = %e, "cluster port: cannot listen"),
            }
        });
        runtime.spawn(bootstrap(self.core.clone()));
        runtime.spawn(transport::watch_sighup(self.core.transport.clone()));
        runtime.spawn(alarms::gossip(self.core.clone()));
        runtime.spawn(drift::drop_own_transient_queues(self.core.clone()));
        runtime.spawn(async { stall::spawn_probe() });
        if !pre_cluster.is_empty() {
            runtime.spawn(drift::propose_pre_cluster(
                self.core.clone(),
                pre_path,
                pre_cluster,
            ));
        }
        tracing::info!(node = id, addr = %self.local_addr, "cluster node started");
        Ok(())
    }

    /// Stops Raft and the cluster runtime (the broker is stopped by its owner).
    pub fn shutdown(mut self) {
        if let Some(rt) = self.runtime.take() {
            let core = self.core.clone();
            rt.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), core.quorum.shutdown()).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), core.raft().shutdown()).await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// openraft's configuration of the definitions log. A snapshot is the state machine
/// itself (`snapshot`: the definitions, the homes, the quorum groups, the transient
/// definitions), taken every `snapshot_entries` applied entries; the log behind it is
/// purged but for the last `snapshot_keep_entries`, so that it does not grow with every
/// declare and delete ever made, and a node that joins is sent the snapshot rather
/// than the whole history.
fn definitions_config(s: &ClusterSettings) -> openraft::Config {
    openraft::Config {
        cluster_name: "actormq".into(),
        election_timeout_min: s.election_timeout_min_ms,
        election_timeout_max: s.election_timeout_max_ms,
        heartbeat_interval: s.heartbeat_ms,
        install_snapshot_timeout: 10_000,
        snapshot_policy: match s.snapshot_entries {
            0 => openraft::SnapshotPolicy::Never,
            n => openraft::SnapshotPolicy::LogsSinceLast(n),
        },
        max_in_snapshot_log_to_keep: s.snapshot_keep_entries,
        ..Default::default()
    }
}

/// Forms or joins the cluster when this node's log is empty (see docs/CLUSTERING.md):
/// - seeds name a cluster that exists (a seed answers with members): when this node
///   is not among them, it asks that seed to add it; when it is, and that cluster has
///   committed entries, this node lost its log (its data directory): it catches up
///   before it votes again ([`catch_up`]); else it waits for the leader;
/// - none does: the lowest id among the seeds and this node initializes the cluster
///   with them all as voters, once every seed answers; the others wait for it;
/// - no seeds at all: the node waits to be added (`actormq cluster add-node`).
///
/// Idempotent: a node whose log holds anything never initializes again.
async fn bootstrap(core: Arc<Core>) {
    let members = core.settings.members();
    let joiner = core.settings.seeds.is_empty();
    let mut asked_to_join = false;
    let no_vote_hold = |core: &Core| core.catching_up.store(false, Ordering::Release);
    loop {
        match core.raft().is_initialized().await {
            Ok(false) => {}
            _ if core.catching_up.load(Ordering::Acquire) => {}
            _ => return,
        }
        if joiner {
            return;
        }
        let mut all_answer = true;
        let mut existing = None;
        for (id, addr) in members.iter().filter(|(id, _)| **id != core.id) {
            match core
                .link(addr)
                .call(&Rpc::Local, Duration::from_secs(1))
                .await
            {
                Ok(Reply::Local(v)) if !v.voters.is_empty() => {
                    existing = Some((*id, addr.clone(), v))
                }
                Ok(Reply::Local(_)) => {}
                _ => all_answer = false,
            }
        }
        match existing {
            Some((seed, addr, view)) => {
                let voter = view.voters.iter().any(|(v, _)| *v == core.id);
                let member = voter || view.learners.iter().any(|(v, _)| *v == core.id);
                match view.applied_index {
                    Some(target) if voter && target >= 1 => {
                        if core.catching_up.load(Ordering::Acquire) {
                            tracing::warn!(seed, target, "cluster: this node is a voter with an empty log (its data directory was lost?): it catches up from the leader and votes only then");
                            tokio::spawn(catch_up(core.clone(), target));
                        }
                        return;
                    }
                    _ => no_vote_hold(&core),
                }
                if !member && !asked_to_join {
                    tracing::info!(seed, "cluster: joining the existing cluster");
                    let rpc = Rpc::AddNode {
                        id: core.id,
                        addr: core.addr.clone(),
                    };
                    match core.link(&addr).call(&rpc, Duration::from_secs(60)).await {
                        Ok(Reply::Membership(Ok(()))) => asked_to_join = true,
                        other => {
                            tracing::warn!(seed, answer = ?other, "cluster: joining failed; retrying")
                        }
                    }
                }
            }
            None if all_answer => {
                no_vote_hold(&core);
                if members.keys().next() == Some(&core.id) {
                    let nodes: std::collections::BTreeMap<u64, openraft::BasicNode> = members
                        .iter()
                        .map(|(id, addr)| (*id, openraft::BasicNode::new(addr)))
                        .collect();
                    match core.raft().initialize(nodes).await {
                        Ok(()) => tracing::info!(members = ?members, "cluster: formed"),
                        Err(e) => tracing::info!(error = %e, "cluster: not initialized here"),
                    }
                    return;
                }
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts this node's members of the quorum queue groups its applied state lists (a
/// restart), and removes the directories of groups it no longer has.
async fn start_groups(core: Arc<Core>) {
    let mine: Vec<quorum::runtime::GroupInfo> = core
        .applied()
        .groups
        .values()
        .flat_map(|qs| qs.values())
        .filter(|g| g.members.contains_key(&core.id))
        .cloned()
        .collect();
    core.quorum
        .remove_strays(&mine.iter().map(|g| g.id).collect());
    for g in &mine {
        if let Err(e) = core.quorum.start(g).await {
            tracing::error!(group = g.id, error = %e, "quorum queue: cannot start this node's group member");
        }
    }
    // A member change the node went down in the middle of is carried on.
    let changed: Vec<(String, String, quorum::wire::GroupId)> = core
        .applied()
        .groups
        .iter()
        .flat_map(|(v, qs)| qs.iter().map(move |(q, g)| (v, q, g)))
        .filter(|(_, _, g)| g.changed && g.members.contains_key(&core.id))
        .map(|(v, q, g)| (v.clone(), q.clone(), g.id))
        .collect();
    for (vhost, queue, id) in changed {
        state_machine::reconcile_group(&core, vhost, queue, id);
    }
}

/// Holds this node's vote until it has applied `target` (what a seed had applied when
/// this node came back with an empty log): every entry committed before is then in
/// its log, and its vote is the current leader's, so voting is safe again.
async fn catch_up(core: Arc<Core>, target: u64) {
    loop {
        let applied = core.raft().metrics().borrow().last_applied.map(|l| l.index);
        if applied.is_some_and(|a| a >= target) {
            core.catching_up.store(false, Ordering::Release);
            tracing::info!(
                applied = target,
                "cluster: caught up after an empty log; voting again"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks the node at `addr` (its cluster port) one question, through `transport`
/// (which must prove the cluster's secret): for `actormq cluster`.
pub async fn ask(
    transport: Arc<Transport>,
    addr: &str,
    rpc_kind: Question,
    timeout: Duration,
) -> Result<Answer, BrokerError> {
    let rpc = match rpc_kind {
        Question::Status => Rpc::Status,
        Question::AddNode { id, addr } => Rpc::AddNode { id, addr },
        Question::RemoveNode { id } => Rpc::RemoveNode { id },
        Question::ChangeGroups(c) => Rpc::ChangeGroups(c),
    };
    let link = Link::new(addr, transport);
    match link.call(&rpc, timeout).await {
        Ok(Reply::Status(s)) => Ok(Answer::Status(s)),
        Ok(Reply::Membership(r)) => r.map(|()| Answer::Done),
        Ok(Reply::Groups(r)) => r.map(Answer::Groups),
        Ok(other) => Err(failed("unexpected reply", format!("{other:?}"))),
        Err(e) => Err(failed(&format!("cannot ask {addr}"), e)),
    }
}

/// A question `actormq cluster` asks a node.
#[derive(Debug, Clone)]
pub enum Question {
    /// Members, leader, log indexes and lag.
    Status,
    /// Adds a node.
    AddNode {
        /// Its id.
        id: NodeId,
        /// Its cluster address.
        addr: String,
    },
    /// Removes a node.
    RemoveNode {
        /// Its id.
        id: NodeId,
    },
    /// Adds a node to quorum queue groups or takes it out of them (`grow`, `shrink`).
    ChangeGroups(quorum::grow::GroupChange),
}

/// What a node answered.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The cluster's status.
    Status(ClusterStatus),
    /// The change was made.
    Done,
    /// Quorum queue groups changed: how many.
    Groups(quorum::grow::ChangeCount),
}
