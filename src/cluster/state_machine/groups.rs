//! The state machine's side of quorum queue groups: a group made at its queue's
//! declare, members started and stopped as groups are declared, deleted and changed
//! (a node removed from the cluster, `actormq cluster grow` / `shrink`, a snapshot
//! installed), and each change handed to the group's leader to make ([`reconcile`]);
//! the limits a policy change gives a group, recorded for its leader to write.

use super::StateMachine;
use crate::cluster::node::Core;
use crate::cluster::op::Op;
use crate::cluster::quorum::grow::{change, ChangeCount, GroupChange};
use crate::cluster::quorum::regroup::{reconcile, regroup, retire, Regrouped, Retired};
use crate::cluster::quorum::runtime::{limits_of, place, GroupInfo, QueueGroups};
use crate::cluster::quorum::wire::GroupId;
use crate::cluster::types::NodeId;
use crate::error::BrokerError;
use std::collections::BTreeMap;
use std::sync::Arc;

impl StateMachine {
    /// Before a quorum queue's declare applies: its group, made from the applied
    /// state at `index` (so the same on every node) and noted for the queue actor to
    /// find. Answers the group when this entry made it. Its limits are the ones the
    /// entry carries (merged with the policies where it was proposed), never this
    /// node's policies now, which need not be the other members'.
    pub(super) fn note_group(&self, index: u64, op: &Op) -> Option<GroupInfo> {
        let Op::DeclareQueue {
            vhost,
            queue,
            limits,
            ..
        } = op
        else {
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
            limits: limits
                .clone()
                .unwrap_or_else(|| limits_of(&queue.arguments)),
            changed: false,
            changed_limits: None,
        };
        a.groups
            .entry(vhost.clone())
            .or_default()
            .insert(queue.name.clone(), info.clone());
        Some(info)
    }

    /// Before a policy change applies: the quorum queues it changes get the limits the
    /// entry carries (computed where it was proposed, never from this node's policies
    /// now), recorded with the entry's `index`. The registry then tells each queue
    /// of the policy change, and the group's leader writes the new limits into the
    /// group's log (`Command::SetLimits`). A queue no longer there is skipped.
    pub(super) fn note_limits(&self, index: u64, op: &Op) {
        let (Op::SetPolicy {
            vhost,
            quorum_limits,
            ..
        }
        | Op::ClearPolicy {
            vhost,
            quorum_limits,
            ..
        }) = op
        else {
            return;
        };
        let mut a = self.core.applied();
        let Some(groups) = a.groups.get_mut(vhost) else {
            return;
        };
        for (queue, limits) in quorum_limits {
            if let Some(g) = groups.get_mut(queue) {
                if g.change_limits(index, limits.clone()) {
                    tracing::info!(%vhost, %queue, group = g.id, at = index, ?limits, "quorum queue: a policy change gives the group new limits");
                }
            }
        }
    }

    /// After an entry applied: starts this node's member of a group it made (or
    /// forgets the group if the declare was refused here), stops and removes the
    /// members of deleted quorum queues.
    pub(super) async fn run_groups(&self, op: &Op, new_group: Option<GroupInfo>, applied: bool) {
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
    /// are no longer voters ([`regroup`](crate::cluster::quorum::regroup)), then acts on this
    /// node's part: starts a member it now has (empty, to be added by the group's
    /// leader), stops and removes one it no longer has, and has each group it is still
    /// a member of changed by whichever member leads it.
    pub(super) async fn regroup(&self, voters: &BTreeMap<NodeId, String>) {
        let changed = regroup(voters, &mut self.core.applied().groups);
        for r in &changed {
            tracing::info!(vhost = %r.vhost, queue = %r.queue, group = r.after.id, before = ?r.before.members.keys().collect::<Vec<_>>(), after = ?r.after.members.keys().collect::<Vec<_>>(), "quorum queue group: members follow the cluster's membership");
        }
        // A node that left the cluster gets no more of its groups' log: it stops at once.
        self.run_changed(changed, false).await;
    }

    /// `actormq cluster grow` / `shrink` applied ([`grow`](crate::cluster::quorum::grow)):
    /// the groups' records change here as on every node, then this node acts on its
    /// part of them.
    pub(super) async fn change_groups(&self, c: &GroupChange) -> Result<ChangeCount, BrokerError> {
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

impl StateMachine {
    /// After a snapshot installed (its groups now recorded): this node's members
    /// follow them as the entries the snapshot stands for would have had them
    /// ([`group_plan`]).
    pub(super) async fn install_groups(&self, before: &QueueGroups) {
        let plan = group_plan(self.core.id, before, &self.core.applied().groups);
        for id in plan.stop {
            self.core.quorum.stop(id);
        }
        for (vhost, queue, info) in plan.start {
            if let Err(e) = self.core.quorum.start(&info).await {
                tracing::error!(group = info.id, queue = %queue, error = %e, "quorum queue: cannot start this node's group member");
                continue;
            }
            if info.changed {
                reconcile_group(&self.core, vhost, queue, info.id);
            }
        }
        self.run_changed(plan.changed, true).await;
    }
}

/// What installing a snapshot does to this node's (`me`) members of quorum groups,
/// from the groups recorded here before (`before`) and the snapshot's (`after`).
#[derive(Debug, Default, PartialEq)]
pub(in crate::cluster) struct GroupPlan {
    /// Groups gone (their queue deleted) this node was a member of: stopped, their
    /// directories removed, as a delete of their queue applied.
    pub stop: Vec<GroupId>,
    /// Groups new here of which this node is a member: started, as their declare
    /// applied (and reconciled by whichever member leads, when their members changed
    /// since the declare: this node then waits to be added).
    pub start: Vec<(String, String, GroupInfo)>,
    /// Groups whose members changed (a node removed, `grow`, `shrink`): as such a
    /// change applied (`run_changed`).
    pub changed: Vec<Regrouped>,
}

/// See [`GroupPlan`]. Groups are matched by id: a queue deleted and declared again
/// has a new group (the new declare's index).
pub(in crate::cluster) fn group_plan(
    me: NodeId,
    before: &QueueGroups,
    after: &QueueGroups,
) -> GroupPlan {
    let by_id = |groups: &QueueGroups| -> BTreeMap<GroupId, (String, String, GroupInfo)> {
        groups
            .iter()
            .flat_map(|(v, qs)| qs.iter().map(move |(q, g)| (v, q, g)))
            .map(|(v, q, g)| (g.id, (v.clone(), q.clone(), g.clone())))
            .collect()
    };
    let (before, after) = (by_id(before), by_id(after));
    let mut plan = GroupPlan::default();
    for (id, (_, _, g)) in &before {
        if !after.contains_key(id) && g.members.contains_key(&me) {
            plan.stop.push(*id);
        }
    }
    for (id, (vhost, queue, g)) in after {
        match before.get(&id) {
            Some((_, _, old)) if old.members != g.members => plan.changed.push(Regrouped {
                vhost,
                queue,
                before: old.clone(),
                after: g,
            }),
            Some(_) => {}
            None if g.members.contains_key(&me) => plan.start.push((vhost, queue, g)),
            None => {}
        }
    }
    plan
}

/// The voters of `m`: node id → cluster address.
pub(super) fn voters_of(
    m: &openraft::Membership<NodeId, openraft::BasicNode>,
) -> BTreeMap<NodeId, String> {
    m.voter_ids()
        .filter_map(|id| Some((id, m.get_node(&id)?.addr.clone())))
        .collect()
}

/// Stops this node's member of group `id` once the group's membership no longer has
/// it ([`retire`]).
fn retire_group(core: &Arc<Core>, id: GroupId) {
    let quorum = &core.quorum;
    let stopper = quorum.clone();
    let c = core.clone();
    let me = core.id;
    // Out while no group of the applied state with this id lists this node.
    let still_out = move || {
        !c.applied()
            .groups
            .values()
            .flat_map(|qs| qs.values())
            .any(|g| g.id == id && g.members.contains_key(&me))
    };
    retire(
        quorum.runtime(),
        quorum.node_id(),
        quorum.groups(),
        id,
        still_out,
        move |how| stopper.stop_keeping(id, how == Retired::TimedOut),
    );
}

/// Spawns [`reconcile`] of group `id` of queue `queue` toward its record in the
/// applied state (after a change applied, and at start-up for a change the node went
/// down in the middle of).
pub(in crate::cluster) fn reconcile_group(
    core: &Arc<Core>,
    vhost: String,
    queue: String,
    id: GroupId,
) {
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
