//! The replicated state machine: the broker's definitions. Applying a committed entry
//! hands its change to this node's registry (or the broker, for virtual hosts and
//! users) as a [`Local`](crate::broker::registry::Local) message, exactly the path a single node takes, so every node
//! starts and stops its own actors for it. The proposing node's client is answered
//! with what applying the entry answered here.
//!
//! What is kept beside the definitions (`data_dir/raft/state`, written whole after
//! each applied batch): the last applied log id, the membership, each queue's home
//! node, each quorum queue's group and the transient definitions. The definitions
//! themselves are the metadata store's, saved by the registries before they answer; so
//! after a crash at most the entries of the last batch are applied again, and each
//! change applies idempotently (a redeclare, a repeated delete or bind changes
//! nothing).
//!
//! A snapshot is this state as of the last applied entry ([`Taken`]): nothing more is
//! written for it, since all of it is on disk already; openraft purges the log behind
//! it, and sends it to a node that needs entries purged (it joins, or was down).
//! Installing one applies the changes that reach it (`snapshot`) and starts or stops
//! this node's quorum group members as the entries would have (`groups`).

mod broker_ops;
mod groups;

pub(in crate::cluster) use broker_ops::apply_op;
#[cfg(test)]
pub(in crate::cluster) use groups::group_plan;
pub(in crate::cluster) use groups::reconcile_group;
use groups::voters_of;

use super::log_store::write_atomic;
use super::node::Core;
use super::op::{Op, Outcome};
use super::snapshot::Before;
use super::types::{DefinitionsSnapshot, Homes, NodeId, Response, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The owner the cluster's log applies changes as (no connection has it: owners are
/// numbered from 1). It names no exclusive queue, and a server-named queue it declares
/// arrives already named.
pub const LOG_OWNER: crate::broker::messages::OwnerId = crate::broker::messages::OwnerId(0);

/// What the state machine keeps beside the definitions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The last applied entry.
    pub last_applied: Option<LogId<NodeId>>,
    /// The membership as of the last applied membership entry.
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    /// Each replicated queue's home node.
    pub homes: Homes,
    /// The transient definitions applied (the metadata store forgets them on a
    /// restart; see `drift`).
    #[serde(default)]
    pub transient: super::drift::Transient,
    /// Each quorum queue's Raft group (its id, members and limits).
    #[serde(default)]
    pub groups: super::quorum::runtime::QueueGroups,
    /// The users the log deleted and has not put since (see `snapshot`: a snapshot
    /// carries them so that installing it deletes what replaying the log would).
    #[serde(default)]
    pub deleted_users: std::collections::BTreeSet<String>,
    /// The cluster's name as the log (or a snapshot) gave it: a node's own name from
    /// before it joined is proposed only when the cluster has none (`drift`).
    #[serde(default)]
    pub cluster_name: Option<String>,
}

fn io(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

impl Applied {
    /// Reads `path` (nothing applied when it does not exist).
    pub fn load(path: &std::path::Path) -> std::io::Result<Applied> {
        match std::fs::read(path) {
            Ok(b) => rmp_serde::from_slice(&b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Applied::default()),
            Err(e) => Err(e),
        }
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    pub(super) core: Arc<Core>,
}

/// Notes where a queue's messages live before its declare applies (the registry asks
/// while it starts the queue), and forgets deleted ones.
fn note_homes(homes: &mut Homes, op: &Op) {
    match op {
        Op::DeclareQueue {
            vhost, queue, home, ..
        } => {
            homes
                .entry(vhost.clone())
                .or_default()
                .entry(queue.name.clone())
                .or_insert(*home);
        }
        Op::DeleteVhost(vhost) => {
            homes.remove(vhost);
        }
        _ => {}
    }
}

/// Notes the users the log deleted (whether or not this node had them) and forgets
/// those it puts again.
fn note_users(deleted: &mut std::collections::BTreeSet<String>, op: &Op) {
    match op {
        Op::DeleteUser(name) => {
            deleted.insert(name.clone());
        }
        Op::PutUser(u) => {
            deleted.remove(&u.name);
        }
        _ => {}
    }
}

impl StateMachine {
    // openraft's own error type, as its traits require.
    #[allow(clippy::result_large_err)]
    fn save(&self) -> Result<(), StorageError<NodeId>> {
        let bytes = {
            let applied = self.core.applied();
            rmp_serde::to_vec(&*applied).map_err(|e| io(ErrorVerb::Write, e))?
        };
        write_atomic(&self.core.state_path(), &bytes).map_err(|e| io(ErrorVerb::Write, e))
    }
}

/// A snapshot taken when openraft asked for a builder: openraft builds it in a task of
/// its own while entries go on applying, so it must be taken before, between two
/// applies, where the definitions and the records are those of one log id.
pub struct Taken(Snapshot<TypeConfig>);

impl RaftSnapshotBuilder<TypeConfig> for Taken {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        Ok(Snapshot {
            meta: self.0.meta.clone(),
            snapshot: self.0.snapshot.clone(),
        })
    }
}

impl StateMachine {
    /// The state machine as a snapshot as of the last applied entry. Called by
    /// openraft's state machine task only, so no entry applies meanwhile. Nothing is
    /// written: the definitions are already on disk (the metadata store and `state`),
    /// so the snapshot is the state machine itself, taken when asked for.
    async fn current(&self) -> Snapshot<TypeConfig> {
        let data = self.core.definitions_snapshot().await;
        let (last, membership) = {
            let a = self.core.applied();
            (a.last_applied, a.membership.clone())
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: format!("{}-{}", self.core.id, last.map_or(0, |l| l.index)),
        };
        Snapshot {
            meta,
            snapshot: Box::new(data),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Taken;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        let a = self.core.applied();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let broker = self.core.broker();
        let mut answers = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let response = match entry.payload {
                EntryPayload::Blank => Response { error: None },
                EntryPayload::Membership(m) => {
                    let uniform = m.get_joint_config().len() == 1;
                    let voters = voters_of(&m);
                    self.core.applied().membership = StoredMembership::new(Some(log_id), m);
                    // Once a change is complete (not the joint step): quorum groups
                    // move off the nodes that left.
                    if uniform {
                        self.regroup(&voters).await;
                    }
                    Response { error: None }
                }
                EntryPayload::Normal(req) => {
                    note_homes(&mut self.core.applied().homes, &req.op);
                    note_users(&mut self.core.applied().deleted_users, &req.op);
                    if let Op::SetClusterName(name) = &req.op {
                        self.core.applied().cluster_name = Some(name.clone());
                    }
                    let new_group = self.note_group(log_id.index, &req.op);
                    self.note_limits(log_id.index, &req.op);
                    let deleted_queue = match &req.op {
                        Op::DeleteQueue { vhost, name } => Some((vhost.clone(), name.clone())),
                        _ => None,
                    };
                    let op = req.op.clone();
                    let outcome = match &req.op {
                        Op::ChangeGroups(c) => Outcome::Groups(self.change_groups(c).await),
                        _ => apply_op(&broker, req.op).await,
                    };
                    if outcome.error().is_none() {
                        super::drift::note_transient(&mut self.core.applied().transient, &op);
                    }
                    if let Some((vhost, name)) = deleted_queue {
                        if let Some(qs) = self.core.applied().homes.get_mut(&vhost) {
                            qs.remove(&name);
                        }
                    }
                    self.run_groups(&op, new_group, outcome.error().is_none())
                        .await;
                    let error = outcome.error();
                    if let Some(e) = &error {
                        tracing::debug!(index = log_id.index, error = %e, "cluster: a committed change did not apply here");
                    }
                    if req.origin == self.core.id {
                        self.core.answer(req.id, outcome);
                    }
                    Response { error }
                }
            };
            self.core.applied().last_applied = Some(log_id);
            answers.push(response);
        }
        self.save()?;
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Taken(self.current().await)
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<DefinitionsSnapshot>, StorageError<NodeId>> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<DefinitionsSnapshot>,
    ) -> Result<(), StorageError<NodeId>> {
        tracing::info!(snapshot = %meta, "cluster: installing a snapshot of the definitions");
        let broker = self.core.broker();
        let snapshot = *snapshot;
        // The records first, as an entry notes them before it applies: a quorum
        // queue's declare finds its group there, a queue its home.
        let before = {
            let mut a = self.core.applied();
            let before = Before {
                homes: std::mem::replace(&mut a.homes, snapshot.homes.clone()),
                groups: std::mem::replace(&mut a.groups, snapshot.groups.clone()),
            };
            a.transient = snapshot.transient.clone();
            a.deleted_users = snapshot.deleted_users.clone();
            a.cluster_name = snapshot.cluster_name.clone();
            a.membership = meta.last_membership.clone();
            before
        };
        let keep = super::drift::pending_pre_cluster(&self.core.dir);
        let ops = super::snapshot::ops_to_reach(&broker, &snapshot, &before, &keep).await;
        let count = ops.len();
        for op in ops {
            if let Some(e) = apply_op(&broker, op).await.error() {
                tracing::warn!(error = %e, "cluster: a snapshot change did not apply here");
            }
        }
        // Then this node's members of quorum groups, as the entries would have left them.
        self.install_groups(&before.groups).await;
        self.core.applied().last_applied = meta.last_log_id;
        tracing::info!(snapshot = %meta, changes = count, "cluster: snapshot of the definitions installed");
        self.save()
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(Some(self.current().await))
    }
}
