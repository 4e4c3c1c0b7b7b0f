//! Moving quorum queue group members by hand, as RabbitMQ's `rabbitmq-queues grow` and
//! `shrink` do: `actormq cluster grow <node>` adds node `node` as a member of every
//! quorum queue group (of one virtual host, or one queue) it is not a member of yet,
//! so that a node added to the cluster takes its share of the copies;
//! `actormq cluster shrink <node>` takes it out of every group it is a member of, so
//! that a node can be drained before it is stopped or removed.
//!
//! The decision is a pure function of replicated state ([`change`]), applied at the
//! same definitions log entry on every node ([`Op::ChangeGroups`]), exactly as the
//! declare's placement and [`regroup`](super::regroup) are: every node records the same
//! members. The group's own leader then makes the change in the group's Raft
//! ([`reconcile`](super::regroup::reconcile)): a new member added as a learner and
//! caught up before it votes; a removed member taken out in one joint change.
//!
//! [`Op::ChangeGroups`]: crate::cluster::op::Op::ChangeGroups

use super::regroup::Regrouped;
use super::runtime::QueueGroups;
use crate::cluster::NodeId;
use crate::error::{BrokerError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A change of the members of many groups at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChange {
    /// Grow (add `node`) or shrink (remove it).
    pub kind: ChangeKind,
    /// The node added or removed.
    pub node: NodeId,
    /// Only the groups of this virtual host (all when `None`).
    pub vhost: Option<String>,
    /// Only this queue's group (all when `None`).
    pub queue: Option<String>,
}

/// What a [`GroupChange`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// Adds the node to every selected group it is not a member of; with
    /// `even_only`, only to groups with an even number of members (RabbitMQ's
    /// `grow <node> even`: an odd group already survives as many failures as one
    /// member more would make it survive).
    Grow {
        /// Only groups with an even number of members.
        even_only: bool,
    },
    /// Removes the node from every selected group it is a member of, but never a
    /// group's last member (that would lose the queue).
    Shrink,
}

/// What a [`GroupChange`] did: how many groups changed, and how many it left as they
/// were although selected (a shrink that would have removed a group's last member, a
/// grow of a group with an odd number of members under `even_only`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCount {
    /// Groups whose members changed.
    pub changed: u64,
    /// Groups selected but left as they were.
    pub kept: u64,
}

/// Applies `c` to `groups`, with `voters` the cluster's voters (node id → cluster
/// address): answers the groups it changed and the count, or why it changed nothing
/// (the node is not a voter of the cluster: a grow would name a member nobody can
/// reach; a shrink of a node that is no voter is `remove-node`'s job, which moves its
/// groups off at once).
pub fn change(
    voters: &BTreeMap<NodeId, String>,
    groups: &mut QueueGroups,
    c: &GroupChange,
) -> Result<(Vec<Regrouped>, ChangeCount), BrokerError> {
    let Some(addr) = voters.get(&c.node) else {
        return Err(BrokerError::new(
            ErrorCode::NotFound,
            format!("node {} is not a voter of the cluster", c.node),
        ));
    };
    let mut changed = Vec::new();
    let mut count = ChangeCount::default();
    let selected = groups
        .iter_mut()
        .filter(|(vhost, _)| c.vhost.as_ref().is_none_or(|v| v == *vhost))
        .flat_map(|(vhost, qs)| qs.iter_mut().map(move |(q, info)| (vhost, q, info)))
        .filter(|(_, q, _)| c.queue.as_ref().is_none_or(|want| want == *q));
    for (vhost, queue, info) in selected {
        let member = info.members.contains_key(&c.node);
        let before = info.clone();
        match c.kind {
            ChangeKind::Grow { .. } if member => continue,
            ChangeKind::Grow { even_only: true } if info.members.len() % 2 == 1 => {
                count.kept += 1;
                continue;
            }
            ChangeKind::Grow { .. } => {
                info.members.insert(c.node, addr.clone());
            }
            ChangeKind::Shrink if !member => continue,
            ChangeKind::Shrink if info.members.len() == 1 => {
                count.kept += 1;
                continue;
            }
            ChangeKind::Shrink => {
                info.members.remove(&c.node);
            }
        }
        info.changed = true;
        count.changed += 1;
        changed.push(Regrouped {
            vhost: vhost.clone(),
            queue: queue.clone(),
            before,
            after: info.clone(),
        });
    }
    Ok((changed, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::machine::Limits;
    use crate::cluster::quorum::runtime::GroupInfo;

    fn voters(ids: &[NodeId]) -> BTreeMap<NodeId, String> {
        ids.iter().map(|i| (*i, format!("n{i}:25672"))).collect()
    }

    /// Groups `q0`, `q1`, ... of vhost `/` with these members, plus `other/q` on 1.
    fn groups(members: &[&[NodeId]]) -> QueueGroups {
        let mut g = QueueGroups::new();
        for (k, m) in members.iter().enumerate() {
            g.entry("/".into()).or_default().insert(
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
        g.entry("other".into()).or_default().insert(
            "q".into(),
            GroupInfo {
                id: 100,
                members: voters(&[1]),
                limits: Limits::default(),
                changed: false,
                changed_limits: None,
            },
        );
        g
    }

    fn members(g: &QueueGroups, vhost: &str, q: &str) -> Vec<NodeId> {
        g[vhost][q].members.keys().copied().collect()
    }

    fn grow(node: NodeId, even_only: bool) -> GroupChange {
        GroupChange {
            kind: ChangeKind::Grow { even_only },
            node,
            vhost: None,
            queue: None,
        }
    }

    fn shrink(node: NodeId) -> GroupChange {
        GroupChange {
            kind: ChangeKind::Shrink,
            node,
            vhost: None,
            queue: None,
        }
    }

    #[test]
    fn grow_adds_the_node_to_every_group_it_is_not_in_and_marks_them_changed() {
        let mut g = groups(&[&[1, 2, 3], &[1, 2], &[1, 2, 4]]);
        let (changed, count) = change(&voters(&[1, 2, 3, 4]), &mut g, &grow(4, false)).unwrap();
        assert_eq!(
            count,
            ChangeCount {
                changed: 3,
                kept: 0
            }
        );
        assert_eq!(members(&g, "/", "q0"), [1, 2, 3, 4]);
        assert_eq!(members(&g, "/", "q1"), [1, 2, 4]);
        assert_eq!(members(&g, "/", "q2"), [1, 2, 4], "already a member");
        assert_eq!(members(&g, "other", "q"), [1, 4]);
        assert!(g["/"]["q0"].changed && !g["/"]["q2"].changed);
        assert_eq!(changed[0].before.members.len(), 3);
        assert_eq!(changed[0].after, g["/"]["q0"]);
        assert_eq!(g["/"]["q0"].members[&4], "n4:25672", "its cluster address");
    }

    #[test]
    fn grow_even_only_leaves_groups_with_an_odd_number_of_members() {
        let mut g = groups(&[&[1, 2, 3], &[1, 2]]);
        let (_, count) = change(&voters(&[1, 2, 3, 4]), &mut g, &grow(4, true)).unwrap();
        assert_eq!(members(&g, "/", "q0"), [1, 2, 3]);
        assert_eq!(members(&g, "/", "q1"), [1, 2, 4]);
        // `other/q` has one member: odd, kept as q0 is.
        assert_eq!(
            count,
            ChangeCount {
                changed: 1,
                kept: 2
            }
        );
    }

    #[test]
    fn shrink_removes_the_node_but_never_a_group_s_last_member() {
        let mut g = groups(&[&[1, 2, 3], &[2, 3]]);
        let (changed, count) = change(&voters(&[1, 2, 3]), &mut g, &shrink(1)).unwrap();
        assert_eq!(members(&g, "/", "q0"), [2, 3]);
        assert_eq!(members(&g, "/", "q1"), [2, 3], "not a member");
        assert_eq!(members(&g, "other", "q"), [1], "its last member stays");
        assert_eq!(
            count,
            ChangeCount {
                changed: 1,
                kept: 1
            }
        );
        assert_eq!(changed.len(), 1);
        assert!(changed[0].before.members.contains_key(&1));
    }

    #[test]
    fn a_vhost_or_a_queue_narrows_the_change() {
        let mut g = groups(&[&[1, 2], &[1, 2]]);
        let mut c = grow(3, false);
        c.vhost = Some("/".into());
        c.queue = Some("q1".into());
        let (_, count) = change(&voters(&[1, 2, 3]), &mut g, &c).unwrap();
        assert_eq!(count.changed, 1);
        assert_eq!(members(&g, "/", "q0"), [1, 2]);
        assert_eq!(members(&g, "/", "q1"), [1, 2, 3]);
        assert_eq!(members(&g, "other", "q"), [1]);
    }

    #[test]
    fn a_node_that_is_no_voter_is_refused_and_nothing_changes() {
        let mut g = groups(&[&[1, 2, 3]]);
        let before = g.clone();
        let e = change(&voters(&[1, 2, 3]), &mut g, &grow(9, false)).unwrap_err();
        assert!(e.to_string().contains('9'), "{e}");
        assert_eq!(g, before);
    }
}
