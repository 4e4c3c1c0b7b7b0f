//! Quorum queue groups follow the cluster's membership. When a node is removed
//! (`actormq cluster remove-node`), every group it was a member of gets a replacement:
//! the voter outside the group that is a member of the fewest groups (ties by id), so
//! that the group keeps its size and with it the failures it survives. With no voter
//! left outside the group, the group shrinks. As RabbitMQ's `forget_cluster_node`
//! shrinks quorum queues (and `rabbitmq-queues grow` adds members back), but done
//! here at once, so a removed node never leaves a group a failure short.
//!
//! Two halves, like the declare: [`regroup`] decides, a pure function of replicated
//! state applied at the same log entry on every node, so every node records the same
//! members; then the group's own leader makes the change in the group's Raft
//! ([`reconcile`]): the new member is added as a learner and caught up, then the
//! voters are replaced in one joint change. A group that has lost its majority cannot
//! change (nobody leads it): its record says who should be members, and the change is
//! made when it has a leader again.

use super::runtime::{GroupInfo, QueueGroups};
use super::wire::Groups;
use crate::cluster::NodeId;
use openraft::BasicNode;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// A group whose members [`regroup`] changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Regrouped {
    /// The queue's virtual host.
    pub vhost: String,
    /// The queue.
    pub queue: String,
    /// Its group before.
    pub before: GroupInfo,
    /// Its group now.
    pub after: GroupInfo,
}

/// Replaces, in every group of `groups`, the members that are not among `voters`
/// (see the module documentation), and answers the groups it changed. A group none
/// of whose members is left is not changed: it has nobody to hand its log over.
pub fn regroup(voters: &BTreeMap<NodeId, String>, groups: &mut QueueGroups) -> Vec<Regrouped> {
    let mut load: BTreeMap<NodeId, usize> = voters.keys().map(|id| (*id, 0)).collect();
    for g in groups.values().flat_map(|qs| qs.values()) {
        for id in g.members.keys() {
            if let Some(n) = load.get_mut(id) {
                *n += 1;
            }
        }
    }
    let mut changed = Vec::new();
    for (vhost, queues) in groups.iter_mut() {
        for (queue, info) in queues.iter_mut() {
            let gone: Vec<NodeId> = info
                .members
                .keys()
                .filter(|id| !voters.contains_key(id))
                .copied()
                .collect();
            if gone.is_empty() || gone.len() == info.members.len() {
                continue;
            }
            let before = info.clone();
            for id in gone {
                info.members.remove(&id);
                let replacement = load
                    .iter()
                    .filter(|(v, _)| !info.members.contains_key(v))
                    .min_by_key(|(v, n)| (**n, **v))
                    .map(|(v, _)| *v);
                if let Some(r) = replacement {
                    info.members.insert(r, voters[&r].clone());
                    *load.get_mut(&r).expect("a voter") += 1;
                }
            }
            info.changed = true;
            changed.push(Regrouped {
                vhost: vhost.clone(),
                queue: queue.clone(),
                before,
                after: info.clone(),
            });
        }
    }
    changed
}

/// How often [`reconcile`] looks again while the group has no leader here or a step
/// failed.
const RETRY: Duration = Duration::from_millis(500);

/// Makes group `group`'s Raft membership what `target` answers (its record in the
/// applied state, read again each time, so that a later change wins), acting only
/// while this node's member leads the group; ends when they agree, or when the group
/// is gone (`target` answers `None`, or this node runs no member of it). Spawned on
/// the cluster's runtime by every member node, so whichever leads makes the change.
pub fn reconcile(
    rt: &tokio::runtime::Handle,
    me: NodeId,
    groups: Arc<Groups>,
    group: super::wire::GroupId,
    target: impl Fn() -> Option<GroupInfo> + Send + 'static,
) {
    rt.spawn(async move {
        let mut failures = 0u32;
        loop {
            let (Some(info), Some(raft)) = (target(), groups.get(group)) else {
                return;
            };
            let want: BTreeSet<NodeId> = info.members.keys().copied().collect();
            let metrics = raft.metrics().borrow().clone();
            let config = metrics.membership_config.membership();
            let voters: BTreeSet<NodeId> = config.voter_ids().collect();
            if voters == want && config.get_joint_config().len() == 1 {
                tracing::info!(group, members = ?want, "quorum queue group: members changed");
                return;
            }
            if metrics.current_leader == Some(me) {
                match change(&raft, &info, &voters, &want).await {
                    Ok(()) => continue,
                    Err(e) => {
                        // Said once, then every 20th try (10 s): a new member that is
                        // down makes this retry until it is back.
                        if failures % 20 == 0 {
                            tracing::warn!(group, members = ?want, error = %e, failures, "quorum queue group: member change failed; retrying");
                        }
                        failures += 1;
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

/// How long a member taken out of its group ([`retire`]) waits to see the group's
/// membership without it before it stops anyway: the group's leader removes it without
/// needing it (it was recorded out, and the others are a majority of the new members),
/// but a removed member is not always sent the entry that leaves it out.
const RETIRE_AFTER: Duration = Duration::from_secs(60);

/// How [`retire`] ends a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// The group's membership has left it: stopped, its directory removed.
    Left,
    /// It never saw the group leave it within `RETIRE_AFTER`: stopped, its directory
    /// kept (it may hold the only other copy of entries, if the removal never
    /// committed), to be removed at the node's next start if the record still
    /// excludes it.
    TimedOut,
}

/// Calls `stop` once this node's member of group `group` sees the group's membership
/// without it (a uniform configuration, not the joint step, and applied: a leader
/// that removes itself keeps running until the change is committed, so the others
/// need no election to finish it), or after `RETIRE_AFTER` (60 s). Returns without
/// stopping when the group is gone here, or when `still_out` answers false (the node
/// was grown back into the group meanwhile: its member goes on). For a node taken out
/// of a group while it still runs (`actormq cluster shrink`): stopping at once could
/// take the majority away that must commit its removal (one other member down, say).
pub fn retire(
    rt: &tokio::runtime::Handle,
    me: NodeId,
    groups: Arc<Groups>,
    group: super::wire::GroupId,
    still_out: impl Fn() -> bool + Send + 'static,
    stop: impl FnOnce(Retired) + Send + 'static,
) {
    rt.spawn(async move {
        let deadline = tokio::time::Instant::now() + RETIRE_AFTER;
        loop {
            let Some(raft) = groups.get(group) else {
                return;
            };
            if !still_out() {
                return;
            }
            let left = {
                let metrics = raft.metrics().borrow().clone();
                let config = metrics.membership_config.membership();
                let applied = metrics.last_applied >= *metrics.membership_config.log_id();
                applied
                    && config.get_joint_config().len() == 1
                    && !config.voter_ids().any(|v| v == me)
            };
            if left {
                stop(Retired::Left);
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(group, "quorum queue group: this node was taken out of the group but never saw it happen; stopping its member, keeping its directory until the next start");
                stop(Retired::TimedOut);
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

/// One attempt: every new member added as a learner and caught up (so the group's
/// commits never wait on an empty member), then the voters replaced at once.
async fn change(
    raft: &openraft::Raft<super::group::QueueTypes>,
    info: &GroupInfo,
    voters: &BTreeSet<NodeId>,
    want: &BTreeSet<NodeId>,
) -> Result<(), String> {
    for (id, addr) in info.members.iter().filter(|(id, _)| !voters.contains(id)) {
        raft.add_learner(*id, BasicNode::new(addr), true)
            .await
            .map_err(|e| format!("adding node {id}: {e}"))?;
    }
    raft.change_membership(want.clone(), false)
        .await
        .map_err(|e| format!("replacing the voters: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::machine::Limits;

    fn voters(ids: &[NodeId]) -> BTreeMap<NodeId, String> {
        ids.iter().map(|i| (*i, format!("n{i}:25672"))).collect()
    }

    fn groups(members: &[&[NodeId]]) -> QueueGroups {
        let mut qs = BTreeMap::new();
        for (k, m) in members.iter().enumerate() {
            qs.insert(
                format!("q{k}"),
                GroupInfo {
                    id: k as u64 + 1,
                    members: voters(m),
                    limits: Limits::default(),
                    changed: false,
                    changed_limits: None,
                },
            );
        }
        BTreeMap::from([("/".to_string(), qs)])
    }

    fn members(g: &QueueGroups, q: &str) -> Vec<NodeId> {
        g["/"][q].members.keys().copied().collect()
    }

    #[test]
    fn a_removed_member_is_replaced_by_the_least_loaded_voter_outside_the_group() {
        // Node 4 runs one group, node 5 none: 5 takes node 3's place in both.
        let mut g = groups(&[&[1, 2, 3], &[2, 3, 4], &[1, 2, 4]]);
        let changed = regroup(&voters(&[1, 2, 4, 5]), &mut g);
        assert_eq!(changed.len(), 2);
        assert_eq!(members(&g, "q0"), [1, 2, 5]);
        // 5 now runs one group and 1 runs two: 1 is busier, so 5 again.
        assert_eq!(members(&g, "q1"), [2, 4, 5]);
        assert_eq!(members(&g, "q2"), [1, 2, 4], "untouched");
        assert!(g["/"]["q0"].changed && !g["/"]["q2"].changed);
        assert_eq!(changed[0].before.members.len(), 3);
        assert_eq!(changed[0].after, g["/"]["q0"]);
    }

    #[test]
    fn a_group_shrinks_when_every_voter_is_already_a_member() {
        let mut g = groups(&[&[1, 2, 3]]);
        let changed = regroup(&voters(&[1, 2]), &mut g);
        assert_eq!(changed.len(), 1);
        assert_eq!(members(&g, "q0"), [1, 2]);
    }

    #[test]
    fn nothing_changes_while_every_member_is_a_voter_or_none_is() {
        let mut g = groups(&[&[1, 2, 3], &[7, 8, 9]]);
        let before = g.clone();
        assert!(regroup(&voters(&[1, 2, 3, 4]), &mut g).is_empty());
        assert_eq!(
            g, before,
            "no member of q1 is left: nobody to hand its log over"
        );
    }

    #[test]
    fn ties_go_to_the_lowest_id_and_every_node_decides_the_same() {
        let mut a = groups(&[&[1, 2, 3]]);
        let mut b = a.clone();
        regroup(&voters(&[1, 2, 6, 5]), &mut a);
        regroup(&voters(&[5, 6, 2, 1]), &mut b);
        assert_eq!(a, b);
        assert_eq!(members(&a, "q0"), [1, 2, 5]);
    }
}
