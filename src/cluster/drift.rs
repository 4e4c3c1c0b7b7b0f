//! What keeps a node's definitions from drifting away from the cluster's where the
//! log alone does not (docs/CLUSTERING.md, "Drift"):
//!
//! - **transient entities**: the metadata store keeps only durable definitions, so the
//!   state machine also records the transient exchanges, queues and bindings it has
//!   applied ([`Transient`], in `data_dir/raft/state`); a node that restarts declares
//!   them again before it applies anything new ([`restore_transient`]). A transient
//!   queue whose home is the restarted node is then deleted through the log, as
//!   RabbitMQ deletes the non-durable queues of a node that went down
//!   ([`drop_own_transient_queues`]);
//! - **definitions from before the cluster**: a node whose data directory held
//!   definitions before it first joined proposes them to the cluster once it is a
//!   member ([`pre_cluster_ops`], [`propose_pre_cluster`]): its queues (and their
//!   messages) stay, homed on it, and every node knows them;
//! - **a removed node**: it refuses to start while the cluster's leader does not list
//!   it ([`removed`]), as RabbitMQ refuses to boot a node the cluster forgot.

use super::node::{Core, Hook};
use super::op::{ClusterHook, Op};
use super::rpc::{Reply, Rpc};
use super::snapshot::vhost_ops;
use super::state_machine::apply_op;
use super::types::NodeId;
use crate::storage::{StoredBinding, StoredBindingTarget, StoredExchange, StoredVhost};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The transient definitions of one virtual host, as applied here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransientVhost {
    /// Transient exchanges, by name.
    pub exchanges: BTreeMap<String, StoredExchange>,
    /// Transient queues' declares ([`Op::DeclareQueue`]), by name.
    pub queues: BTreeMap<String, Op>,
    /// Bindings with a transient end.
    pub bindings: Vec<StoredBinding>,
}

/// Transient definitions by virtual host.
pub type Transient = BTreeMap<String, TransientVhost>;

/// Records what a change that applied here did to the transient definitions.
pub(super) fn note_transient(t: &mut Transient, op: &Op) {
    match op {
        Op::DeclareExchange { vhost, exchange } if !exchange.durable => {
            t.entry(vhost.clone())
                .or_default()
                .exchanges
                .insert(exchange.name.clone(), exchange.clone());
        }
        Op::DeclareQueue { vhost, queue, .. } if !queue.durable => {
            t.entry(vhost.clone())
                .or_default()
                .queues
                .insert(queue.name.clone(), op.clone());
        }
        Op::DeleteExchange { vhost, name, .. } => {
            if let Some(v) = t.get_mut(vhost) {
                v.exchanges.remove(name);
                v.bindings.retain(|b| {
                    b.source != *name
                        && b.destination != StoredBindingTarget::Exchange(name.clone())
                });
            }
        }
        Op::DeleteQueue { vhost, name } => {
            if let Some(v) = t.get_mut(vhost) {
                v.queues.remove(name);
                v.bindings
                    .retain(|b| b.destination != StoredBindingTarget::Queue(name.clone()));
            }
        }
        Op::Bind { vhost, binding } => {
            if let Some(v) = t.get_mut(vhost) {
                let transient_end = v.exchanges.contains_key(&binding.source)
                    || match &binding.destination {
                        StoredBindingTarget::Queue(q) => v.queues.contains_key(q),
                        StoredBindingTarget::Exchange(x) => v.exchanges.contains_key(x),
                    };
                if transient_end && !v.bindings.contains(binding) {
                    v.bindings.push(binding.clone());
                }
            }
        }
        Op::Unbind { vhost, binding } => {
            if let Some(v) = t.get_mut(vhost) {
                v.bindings.retain(|b| b != binding);
            }
        }
        Op::DeleteVhost(vhost) => {
            t.remove(vhost);
        }
        _ => {}
    }
    t.retain(|_, v| !(v.exchanges.is_empty() && v.queues.is_empty() && v.bindings.is_empty()));
}

/// Declares again, on this node only, the transient definitions it had applied
/// before it stopped: exchanges, then queues, then bindings.
pub(super) async fn restore_transient(core: &Core) {
    let transient = core.applied().transient.clone();
    let broker = core.broker();
    let mut n = 0;
    for (vhost, v) in transient {
        let mut ops: Vec<Op> = v
            .exchanges
            .into_values()
            .map(|exchange| Op::DeclareExchange {
                vhost: vhost.clone(),
                exchange,
            })
            .collect();
        ops.extend(v.queues.into_values());
        ops.extend(v.bindings.into_iter().map(|binding| Op::Bind {
            vhost: vhost.clone(),
            binding,
        }));
        for op in ops {
            n += 1;
            if let Some(e) = apply_op(&broker, op).await.error() {
                tracing::warn!(error = %e, "cluster: a transient definition was not restored");
            }
        }
    }
    if n > 0 {
        tracing::info!(
            count = n,
            "cluster: transient definitions restored from data_dir/raft/state"
        );
    }
}

/// Deletes, through the log, the transient queues whose home is this node (their
/// messages died with the process), once a leader is known.
pub(super) async fn drop_own_transient_queues(core: Arc<Core>) {
    let me = core.id;
    let own: Vec<(String, String)> = core
        .applied()
        .transient
        .iter()
        .flat_map(|(vhost, v)| {
            v.queues.iter().filter_map(move |(name, op)| match op {
                Op::DeclareQueue { home, .. } if *home == me => Some((vhost.clone(), name.clone())),
                _ => None,
            })
        })
        .collect();
    for (vhost, name) in own {
        let op = Op::DeleteQueue {
            vhost: vhost.clone(),
            name: name.clone(),
        };
        propose_until_done(&core, op).await;
        tracing::info!(%vhost, queue = %name, "cluster: a transient queue of this node deleted after its restart");
    }
}

/// Proposes `op` until it is committed (retrying while no leader is reachable);
/// an answer that the change did not apply is logged.
async fn propose_until_done(core: &Arc<Core>, op: Op) {
    loop {
        match Hook(core.clone()).propose(op.clone()).await {
            Ok(outcome) => {
                if let Some(e) = outcome.error() {
                    tracing::warn!(error = %e, ?op, "cluster: a change did not apply");
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster: retrying a change");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The changes that declare this node's definitions in the cluster, read before it
/// first joins (empty when it has none beyond the predeclared ones).
pub(super) async fn pre_cluster_ops(core: &Core) -> Vec<Op> {
    let broker = core.broker();
    let mut ops = Vec::new();
    for v in broker.vhosts() {
        let Ok(defs) = broker.vhost_definitions(&v).await else {
            continue;
        };
        let want = defs.durable();
        if want.exchanges.is_empty()
            && want.queues.is_empty()
            && want.bindings.is_empty()
            && want.policies.is_empty()
        {
            continue;
        }
        let homes = want
            .queues
            .iter()
            .map(|q| (q.name.clone(), core.id))
            .collect();
        let homes = BTreeMap::from([(v.clone(), homes)]);
        ops.push(Op::AddVhost(v.clone()));
        let none = BTreeSet::new();
        let first = ops.len();
        vhost_ops(&v, &StoredVhost::default(), &want, &none, &homes, &mut ops);
        // Its quorum queues' limits as its own policies give them, fixed now in the
        // entries (the cluster's members apply those, not their own policies).
        for op in &mut ops[first..] {
            if let Op::DeclareQueue { queue, limits, .. } = op {
                *limits = super::op::quorum_limits(&defs, queue);
            }
        }
    }
    // The name it had as a single broker: the cluster's, unless the cluster has one
    // (see `propose_pre_cluster`).
    ops.extend(broker.cluster_name().map(Op::SetClusterName));
    ops
}

/// Where the definitions this node held before it joined wait to be proposed.
pub(super) const PRE_CLUSTER: &str = "pre-cluster";

/// The definitions this node held before it joined and has not yet declared to the
/// cluster (`data_dir/raft/pre-cluster`; none when the file is gone or unreadable):
/// installing a snapshot keeps them.
pub(super) fn pending_pre_cluster(dir: &std::path::Path) -> Vec<Op> {
    match std::fs::read(dir.join(PRE_CLUSTER)) {
        Ok(b) => rmp_serde::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cluster: data_dir/raft/pre-cluster is unreadable");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// Once this node is a member that has caught up with a leader, proposes the
/// definitions it held before it joined (`path`, removed when all are committed).
pub(super) async fn propose_pre_cluster(core: Arc<Core>, path: std::path::PathBuf, ops: Vec<Op>) {
    loop {
        let m = core.raft().metrics().borrow().clone();
        let member = m
            .membership_config
            .membership()
            .get_node(&core.id)
            .is_some();
        if member && m.current_leader.is_some() && m.last_applied.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!(
        changes = ops.len(),
        "cluster: declaring the definitions this node held before it joined"
    );
    for op in ops {
        if let Op::SetClusterName(mine) = &op {
            // Only when the cluster has no name, as of every change committed so far
            // (applied here by then, the cluster's name over this node's own).
            if let Err(e) = core.barrier().await {
                tracing::warn!(error = %e, "cluster: cannot learn whether the cluster has a name; proposing this node's");
            }
            let theirs = core.applied().cluster_name.clone();
            if let Some(theirs) = theirs {
                tracing::info!(mine = %mine, cluster = %theirs, "cluster: the name this node had as a single broker gives way to the cluster's");
                continue;
            }
        }
        if let Op::DeclareQueue { vhost, queue, .. } = &op {
            let home = core
                .applied()
                .homes
                .get(vhost)
                .and_then(|h| h.get(&queue.name))
                .copied();
            if let Some(h) = home.filter(|h| *h != core.id) {
                tracing::warn!(%vhost, queue = %queue.name, home = h, "cluster: a queue of this node from before it joined has the name of a queue of the cluster, homed on another node: the cluster's wins here, and this node's messages of it stay on its disk unserved");
            }
        }
        let op = with_quorum_limits(&core, op).await;
        propose_until_done(&core, op).await;
    }
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(error = %e, "cluster: cannot remove {}", path.display());
    }
}

/// A policy this node held before it joined reaches the cluster's quorum queues as
/// any policy change does: the limits it gives them are computed now, from this
/// node's definitions (the cluster's queues applied here by then, beside its own
/// policies), and carried in the entry.
async fn with_quorum_limits(core: &Core, mut op: Op) -> Op {
    if let Op::SetPolicy {
        vhost,
        policy,
        quorum_limits,
    } = &mut op
    {
        let defs = core.broker().vhost_definitions(vhost).await;
        if let (Ok(defs), Ok(p)) = (defs, super::op::policy_of(policy)) {
            let change = crate::definitions::Command::SetPolicy(p);
            *quorum_limits = super::op::quorum_limits_after(&defs, &change);
        }
    }
    op
}

/// Why this node must not start: the cluster's leader does not list it any more.
/// `None` when it was never a member, or no leader answers (a cluster restarting).
pub(super) async fn removed(core: &Core) -> Option<String> {
    let membership = {
        let a = core.applied();
        a.last_applied?;
        a.membership.clone()
    };
    let mut addrs: BTreeSet<String> = core.settings.members().into_values().collect();
    addrs.extend(
        membership
            .membership()
            .nodes()
            .map(|(_, n): (&NodeId, _)| n.addr.clone()),
    );
    addrs.remove(&core.addr);
    for addr in addrs {
        let Ok(Reply::Local(v)) = core
            .link(&addr)
            .call(&Rpc::Local, Duration::from_secs(1))
            .await
        else {
            continue;
        };
        let listed = v
            .voters
            .iter()
            .chain(&v.learners)
            .any(|(id, _)| *id == core.id);
        if v.role == "leader" && !listed {
            let ids: Vec<NodeId> = v.voters.iter().map(|(id, _)| *id).collect();
            return Some(format!(
                "this node (id {}) was removed from the cluster: its leader, node {} at {addr}, lists the voters {ids:?}. A removed node does not rejoin by itself: to bring it back, delete data_dir/raft (its queues and messages stay, and are declared to the cluster when it joins) and start it again with its seeds",
                core.id, v.id
            ));
        }
    }
    None
}
