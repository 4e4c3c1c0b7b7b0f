//! The replicated state machine: the broker's definitions. Applying a committed entry
//! hands its change to this node's registry (or the broker, for virtual hosts and
//! users) as a [`Local`] message, exactly the path a single node takes, so every node
//! starts and stops its own actors for it. The proposing node's client is answered
//! with what applying the entry answered here.
//!
//! What is kept beside the definitions (`data_dir/raft/state`, written whole after
//! each applied batch): the last applied log id, the membership, and each queue's home
//! node. The definitions themselves are the metadata store's, saved by the registries
//! before they answer; so after a crash at most the entries of the last batch are
//! applied again, and each change applies idempotently (a redeclare, a repeated delete
//! or bind changes nothing).

use super::log_store::write_atomic;
use super::node::Core;
use super::op::{Op, Outcome};
use super::quorum::grow::{change, ChangeCount, GroupChange};
use super::quorum::regroup::{reconcile, regroup, retire, Regrouped};
use super::quorum::runtime::{limits_of, place, GroupInfo};
use super::quorum::wire::GroupId;
use super::types::{DefinitionsSnapshot, Homes, NodeId, Response, TypeConfig};
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::{
    Bind, BindTarget, DeclareExchange, DeclareQueue, DeleteExchange, DeleteQueue, Unbind,
};
use crate::broker::queue::QueueSpec;
use crate::broker::registry::{ClearPolicy, Local, PutPolicy, Registry};
use crate::broker::BrokerHandle;
use crate::definitions::{ApplyTo, Policy, PolicyKind};
use crate::error::BrokerError;
use crate::storage::{StoredBinding, StoredBindingTarget};
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

/// Hands a committed change to the vhost's registry, to apply here.
async fn local<M, T>(registry: &actix::Addr<Registry>, msg: M) -> Result<T, BrokerError>
where
    M: actix::Message<Result = Result<T, BrokerError>> + Send + 'static,
    T: Send + 'static,
    Registry: actix::Handler<Local<M>>,
{
    registry.send(Local(msg)).await.map_err(BrokerError::from)?
}

/// Applies one change to this node's broker; answers what it answered.
pub(super) async fn apply_op(broker: &BrokerHandle, op: Op) -> Outcome {
    if let Some(cmd) = op.broker_command() {
        return Outcome::Done(broker.apply_broker_command(cmd).await);
    }
    let vhost = match &op {
        Op::DeclareExchange { vhost, .. }
        | Op::DeleteExchange { vhost, .. }
        | Op::DeclareQueue { vhost, .. }
        | Op::DeleteQueue { vhost, .. }
        | Op::Bind { vhost, .. }
        | Op::Unbind { vhost, .. }
        | Op::SetPolicy { vhost, .. }
        | Op::ClearPolicy { vhost, .. } => vhost.clone(),
        // Only the groups' records change: the state machine applies it, not the broker.
        Op::ChangeGroups(_) => return Outcome::Done(Ok(())),
        _ => unreachable!("broker-wide commands are applied above"),
    };
    let registry = match broker.registry(&vhost) {
        Ok(r) => r,
        Err(e) => return Outcome::Done(Err(e)),
    };
    match op {
        Op::DeclareExchange { exchange: x, .. } => {
            let spec = ExchangeSpec {
                name: x.name,
                kind: x.kind,
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments,
            };
            let msg = DeclareExchange {
                spec,
                passive: false,
            };
            Outcome::Done(local(&registry, msg).await)
        }
        Op::DeleteExchange {
            name, if_unused, ..
        } => {
            let msg = DeleteExchange { name, if_unused };
            Outcome::Done(local(&registry, msg).await)
        }
        Op::DeclareQueue { queue: q, .. } => {
            let msg = DeclareQueue {
                spec: QueueSpec {
                    name: q.name,
                    durable: q.durable,
                    exclusive: false,
                    auto_delete: q.auto_delete,
                    arguments: q.arguments,
                },
                passive: false,
                owner: LOG_OWNER,
                placement: None,
            };
            Outcome::Declared(local(&registry, msg).await)
        }
        Op::DeleteQueue { name, .. } => {
            let msg = DeleteQueue {
                name,
                if_unused: false,
                if_empty: false,
                ready_only: false,
                owner: LOG_OWNER,
            };
            Outcome::Deleted(local(&registry, msg).await)
        }
        Op::Bind { binding, .. } => {
            let msg = bind_of(binding);
            Outcome::Done(local(&registry, msg).await)
        }
        Op::Unbind { binding, .. } => {
            let msg = Unbind {
                binding: bind_of(binding),
            };
            Outcome::Done(local(&registry, msg).await)
        }
        Op::SetPolicy { policy: p, .. } => {
            let kind = if p.operator {
                PolicyKind::Operator
            } else {
                PolicyKind::Policy
            };
            let made = ApplyTo::parse(&p.apply_to)
                .map_err(BrokerError::precondition)
                .and_then(|to| {
                    Policy::new(kind, &p.name, &p.pattern, to, p.priority, p.definition)
                });
            let policy = match made {
                Ok(p) => p,
                Err(e) => return Outcome::Policy(Err(e)),
            };
            let msg = PutPolicy(policy);
            Outcome::Policy(local(&registry, msg).await)
        }
        Op::ClearPolicy { operator, name, .. } => {
            let kind = if operator {
                PolicyKind::Operator
            } else {
                PolicyKind::Policy
            };
            let msg = ClearPolicy { kind, name };
            Outcome::Done(local(&registry, msg).await)
        }
        _ => unreachable!("broker-wide commands are applied above"),
    }
}

fn bind_of(b: StoredBinding) -> Bind {
    Bind {
        exchange: b.source,
        target: match b.destination {
            StoredBindingTarget::Queue(q) => BindTarget::Queue(q),
            StoredBindingTarget::Exchange(x) => BindTarget::Exchange(x),
        },
        routing_key: b.routing_key,
        arguments: b.arguments,
        owner: LOG_OWNER,
    }
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

impl StateMachine {
    /// Before a quorum queue's declare applies: its group, made from the applied
    /// state at `index` (so the same on every node) and noted for the queue actor to
    /// find. Answers the group when this entry made it.
    fn note_group(&self, index: u64, op: &Op) -> Option<GroupInfo> {
        let Op::DeclareQueue { vhost, queue, .. } = op else {
            return None;
        };
        if !crate::broker::queue::quorum::is_quorum_args(&queue.arguments) {
            return None;
        }
        let mut a = self.core.applied();
        if a.groups
            .get(vhost)
            .is_some_and(|q| q.contains_key(&queue.name))
        {
            return None;
        }
        let voters = voters_of(a.membership.membership());
        let size = crate::broker::queue::quorum::initial_group_size(&queue.arguments);
        let info = GroupInfo {
            id: index,
            members: place(&voters, &a.groups, size),
            limits: limits_of(&queue.arguments),
            changed: false,
        };
        a.groups
            .entry(vhost.clone())
            .or_default()
            .insert(queue.name.clone(), info.clone());
        Some(info)
    }

    /// After an entry applied: starts this node's member of a group it made (or
    /// forgets the group if the declare was refused here), stops and removes the
    /// members of deleted quorum queues.
    async fn run_groups(&self, op: &Op, new_group: Option<GroupInfo>, applied: bool) {
        if let (Some(info), Op::DeclareQueue { vhost, queue, .. }) = (new_group, op) {
            if !applied {
                if let Some(qs) = self.core.applied().groups.get_mut(vhost) {
                    qs.remove(&queue.name);
                }
                return;
            }
            if let Err(e) = self.core.quorum.start(&info).await {
                tracing::error!(group = info.id, queue = %queue.name, error = %e, "quorum queue: cannot start this node's group member");
            }
            return;
        }
        let gone: Vec<GroupInfo> = {
            let mut a = self.core.applied();
            match op {
                Op::DeleteQueue { vhost, name } => a
                    .groups
                    .get_mut(vhost)
                    .and_then(|qs| qs.remove(name))
                    .into_iter()
                    .collect(),
                Op::DeleteVhost(vhost) => a
                    .groups
                    .remove(vhost)
                    .map(|qs| qs.into_values().collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            }
        };
        for g in gone {
            self.core.quorum.stop(g.id);
        }
    }
}

impl StateMachine {
    /// After a membership change applied: replaces the members of quorum groups that
    /// are no longer voters ([`regroup`](super::quorum::regroup)), then acts on this
    /// node's part: starts a member it now has (empty, to be added by the group's
    /// leader), stops and removes one it no longer has, and has each group it is still
    /// a member of changed by whichever member leads it.
    async fn regroup(&self, voters: &BTreeMap<NodeId, String>) {
        let changed = regroup(voters, &mut self.core.applied().groups);
        for r in &changed {
            tracing::info!(vhost = %r.vhost, queue = %r.queue, group = r.after.id, before = ?r.before.members.keys().collect::<Vec<_>>(), after = ?r.after.members.keys().collect::<Vec<_>>(), "quorum queue group: members follow the cluster's membership");
        }
        // A node that left the cluster gets no more of its groups' log: it stops at once.
        self.run_changed(changed, false).await;
    }

    /// `actormq cluster grow` / `shrink` applied ([`grow`](super::quorum::grow)):
    /// the groups' records change here as on every node, then this node acts on its
    /// part of them.
    async fn change_groups(&self, c: &GroupChange) -> Result<ChangeCount, BrokerError> {
        let voters = voters_of(self.core.applied().membership.membership());
        let (changed, count) = change(&voters, &mut self.core.applied().groups, c)?;
        tracing::info!(node = c.node, kind = ?c.kind, vhost = ?c.vhost, queue = ?c.queue, changed = count.changed, kept = count.kept, "quorum queue groups: members changed by hand");
        // A node shrunk out of a group still runs, and may be needed for the majority
        // that commits its own removal: its member stops once the group has left it.
        self.run_changed(changed, true).await;
        Ok(count)
    }

    /// Acts on this node's part of groups whose recorded members changed: starts a
    /// member it now has (empty, to be added by the group's leader), stops and removes
    /// one it no longer has (at once, or with `retire` once the group's own membership
    /// has left it), and has each group it is still a member of changed by whichever
    /// member leads it.
    async fn run_changed(&self, changed: Vec<Regrouped>, retire: bool) {
        let me = self.core.id;
        for r in changed {
            if !r.after.members.contains_key(&me) {
                if r.before.members.contains_key(&me) {
                    if retire {
                        retire_group(&self.core, r.after.id);
                        reconcile_group(&self.core, r.vhost, r.queue, r.after.id);
                    } else {
                        self.core.quorum.stop(r.after.id);
                    }
                }
                continue;
            }
            if let Err(e) = self.core.quorum.start(&r.after).await {
                tracing::error!(group = r.after.id, queue = %r.queue, error = %e, "quorum queue: cannot start this node's group member");
                continue;
            }
            reconcile_group(&self.core, r.vhost, r.queue, r.after.id);
        }
    }
}

/// The voters of `m`: node id → cluster address.
fn voters_of(m: &openraft::Membership<NodeId, openraft::BasicNode>) -> BTreeMap<NodeId, String> {
    m.voter_ids()
        .filter_map(|id| Some((id, m.get_node(&id)?.addr.clone())))
        .collect()
}

/// Stops this node's member of group `id` once the group's membership no longer has
/// it ([`retire`]).
fn retire_group(core: &Arc<Core>, id: GroupId) {
    let quorum = &core.quorum;
    let stopper = quorum.clone();
    retire(
        quorum.runtime(),
        quorum.node_id(),
        quorum.groups(),
        id,
        move || stopper.stop(id),
    );
}

/// Spawns [`reconcile`] of group `id` of queue `queue` toward its record in the
/// applied state (after a change applied, and at start-up for a change the node went
/// down in the middle of).
pub(super) fn reconcile_group(core: &Arc<Core>, vhost: String, queue: String, id: GroupId) {
    let c = core.clone();
    let quorum = &core.quorum;
    reconcile(
        quorum.runtime(),
        quorum.node_id(),
        quorum.groups(),
        id,
        move || {
            c.applied()
                .groups
                .get(&vhost)?
                .get(&queue)
                .filter(|g| g.id == id)
                .cloned()
        },
    );
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
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
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

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
                    let new_group = self.note_group(log_id.index, &req.op);
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
        StateMachine {
            core: self.core.clone(),
        }
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
        {
            let mut a = self.core.applied();
            a.homes = snapshot.homes.clone();
        }
        for op in super::snapshot::ops_to_reach(&broker, &snapshot).await {
            if let Some(e) = apply_op(&broker, op).await.error() {
                tracing::warn!(error = %e, "cluster: a snapshot change did not apply here");
            }
        }
        {
            let mut a = self.core.applied();
            a.last_applied = meta.last_log_id;
            a.membership = meta.last_membership.clone();
        }
        self.save()
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let mut builder = self.get_snapshot_builder().await;
        builder.build_snapshot().await.map(Some)
    }
}
