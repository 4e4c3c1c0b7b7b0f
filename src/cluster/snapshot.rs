//! Installing a snapshot of the definitions log: the changes that take this node's
//! definitions to the snapshot's, as ordinary replicated changes (so every effect on
//! actors is the one a log entry has): what the snapshot lacks is deleted first, then
//! what it has is declared (an existing equivalent definition is no change).
//!
//! Compared are the replicated definitions, durable and transient alike (never this
//! node's exclusive queues, which belong to its connections). A queue this node has
//! under the same definition is still deleted and declared again when the snapshot
//! gives it another home or another quorum group: the cluster deleted it and declared
//! a new one of that name while this node was not following, and the queue actor here
//! must serve the new one. The definitions this node held before it joined, not yet
//! declared to the cluster (`data_dir/raft/pre-cluster`, see `drift`), are kept: the
//! snapshot cannot know them yet, and deleting them would lose their messages.
//!
//! Users: the users a node seeded from its own `Settings.toml` are that node's, never
//! replicated, until the cluster puts or deletes a user of that name. The log never
//! deleted them (a joining node replaying it kept them), but a snapshot deleted every
//! user it lacked, theirs included. Now both paths agree: a snapshot carries only the
//! cluster's users (not the builder's seeded ones) and the names the log deleted and
//! has not put since; installing it deletes a user it lacks only if that user is not
//! one this node seeded, or if the log deleted that name (as replaying the delete
//! would have).

use super::op::Op;
use super::quorum::runtime::QueueGroups;
use super::types::{DefinitionsSnapshot, Homes};
use crate::broker::BrokerHandle;
use crate::storage::{StoredBindingTarget, StoredVhost};
use std::collections::BTreeSet;

/// What the state machine recorded here before the snapshot: the queues' homes and
/// the quorum groups.
#[derive(Debug, Clone, Default)]
pub(super) struct Before {
    /// The queues' homes.
    pub homes: Homes,
    /// The quorum queues' groups.
    pub groups: QueueGroups,
}

/// The changes, in order. `keep`: changes not to undo (the definitions from before
/// this node joined, still to be proposed).
pub(super) async fn ops_to_reach(
    broker: &BrokerHandle,
    snap: &DefinitionsSnapshot,
    before: &Before,
    keep: &[Op],
) -> Vec<Op> {
    let mut ops = Vec::new();
    let vhosts_here: BTreeSet<String> = broker.vhosts().into_iter().collect();
    for v in vhosts_here.iter().filter(|v| !snap.vhosts.contains_key(*v)) {
        ops.push(Op::DeleteVhost(v.clone()));
    }
    let users_here: Vec<String> = broker.users().into_iter().map(|u| u.name).collect();
    ops.extend(user_deletes(&users_here, &broker.seeded_users(), snap));
    for v in snap.vhosts.keys() {
        if !vhosts_here.contains(v) {
            ops.push(Op::AddVhost(v.clone()));
        }
        let have = match broker.vhost_definitions(v).await {
            Ok(d) => d.replicated(),
            Err(_) => StoredVhost::default(),
        };
        let want = wanted(snap, v);
        let moved = moved(before, snap, v);
        vhost_ops(v, &have, &want, &moved, &snap.homes, &mut ops);
        let limits = snap.vhost_limits.get(v).copied().unwrap_or_default();
        if broker.vhost_limits(v) != limits {
            ops.push(Op::SetVhostLimits {
                vhost: v.clone(),
                limits,
            });
        }
    }
    // Users last: the virtual hosts they may open exist by then.
    ops.extend(snap.users.iter().cloned().map(Op::PutUser));
    ops.extend(snap.cluster_name.clone().map(Op::SetClusterName));
    ops.retain(|op| !undoes(op, keep));
    ops
}

/// The users of `here` installing `snap` deletes: those it lacks, but for the ones
/// this node seeded from its settings (`seeded`) that the log did not delete.
pub(super) fn user_deletes(
    here: &[String],
    seeded: &BTreeSet<String>,
    snap: &DefinitionsSnapshot,
) -> Vec<Op> {
    let users: BTreeSet<&str> = snap.users.iter().map(|u| u.name.as_str()).collect();
    here.iter()
        .filter(|u| !users.contains(u.as_str()))
        .filter(|u| !seeded.contains(*u) || snap.deleted_users.contains(*u))
        .map(|u| Op::DeleteUser(u.clone()))
        .collect()
}

/// The definitions of `vhost` the snapshot has: its durable ones and its transient ones.
pub(super) fn wanted(snap: &DefinitionsSnapshot, vhost: &str) -> StoredVhost {
    let mut want = snap.vhosts.get(vhost).cloned().unwrap_or_default();
    if let Some(t) = snap.transient.get(vhost) {
        want.exchanges.extend(t.exchanges.values().cloned());
        want.queues
            .extend(t.queues.values().filter_map(|op| match op {
                Op::DeclareQueue { queue, .. } => Some(queue.clone()),
                _ => None,
            }));
        for b in &t.bindings {
            if !want.bindings.contains(b) {
                want.bindings.push(b.clone());
            }
        }
    }
    want
}

/// The queues of `vhost` whose home or quorum group differs between what this node
/// recorded and the snapshot.
pub(super) fn moved(before: &Before, snap: &DefinitionsSnapshot, vhost: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<&String> = BTreeSet::new();
    for homes in [&before.homes, &snap.homes] {
        names.extend(homes.get(vhost).into_iter().flat_map(|h| h.keys()));
    }
    for groups in [&before.groups, &snap.groups] {
        names.extend(groups.get(vhost).into_iter().flat_map(|g| g.keys()));
    }
    let home = |h: &Homes, q: &str| h.get(vhost).and_then(|h| h.get(q)).copied();
    let group = |g: &QueueGroups, q: &str| g.get(vhost).and_then(|g| g.get(q)).map(|g| g.id);
    names
        .into_iter()
        .filter(|q| {
            let homes = (home(&before.homes, q), home(&snap.homes, q));
            let homes_differ = matches!(homes, (Some(a), Some(b)) if a != b);
            homes_differ || group(&before.groups, q) != group(&snap.groups, q)
        })
        .cloned()
        .collect()
}

/// True when `op` would delete what a change of `keep` declares.
fn undoes(op: &Op, keep: &[Op]) -> bool {
    keep.iter().any(|k| match (op, k) {
        (Op::DeleteVhost(v), Op::AddVhost(w)) => v == w,
        (
            Op::DeleteQueue { vhost, name },
            Op::DeclareQueue {
                vhost: w, queue, ..
            },
        ) => vhost == w && *name == queue.name,
        (
            Op::DeleteExchange { vhost, name, .. },
            Op::DeclareExchange {
                vhost: w, exchange, ..
            },
        ) => vhost == w && *name == exchange.name,
        (
            Op::Unbind { vhost, binding },
            Op::Bind {
                vhost: w,
                binding: b,
            },
        ) => vhost == w && binding == b,
        (
            Op::ClearPolicy { vhost, name, .. },
            Op::SetPolicy {
                vhost: w, policy, ..
            },
        ) => vhost == w && *name == policy.name,
        _ => false,
    })
}

/// The changes that take `have` to `want` in `vhost`: deletes first (a queue in
/// `moved` is deleted even if its definition is unchanged; a queue or exchange whose
/// definition changed is deleted to be declared anew), then every wanted definition
/// declared (a redeclare of an equivalent one changes nothing).
pub(super) fn vhost_ops(
    vhost: &str,
    have: &StoredVhost,
    want: &StoredVhost,
    moved: &BTreeSet<String>,
    homes: &Homes,
    ops: &mut Vec<Op>,
) {
    let vhost = vhost.to_string();
    let gone_queues: BTreeSet<&str> = have
        .queues
        .iter()
        .filter(|q| moved.contains(&q.name) || !want.queues.contains(q))
        .map(|q| q.name.as_str())
        .collect();
    let gone_exchanges: BTreeSet<&str> = have
        .exchanges
        .iter()
        .filter(|x| !want.exchanges.contains(x))
        .map(|x| x.name.as_str())
        .collect();
    // A binding of a queue or exchange about to be deleted goes with it.
    for b in have.bindings.iter().filter(|b| {
        let end_gone = gone_exchanges.contains(b.source.as_str())
            || match &b.destination {
                StoredBindingTarget::Queue(q) => gone_queues.contains(q.as_str()),
                StoredBindingTarget::Exchange(x) => gone_exchanges.contains(x.as_str()),
            };
        !end_gone && !want.bindings.contains(b)
    }) {
        ops.push(Op::Unbind {
            vhost: vhost.clone(),
            binding: b.clone(),
        });
    }
    for name in &gone_queues {
        ops.push(Op::DeleteQueue {
            vhost: vhost.clone(),
            name: name.to_string(),
        });
    }
    for name in &gone_exchanges {
        ops.push(Op::DeleteExchange {
            vhost: vhost.clone(),
            name: name.to_string(),
            if_unused: false,
        });
    }
    for p in have.policies.iter().filter(|p| {
        !want
            .policies
            .iter()
            .any(|w| w.name == p.name && w.operator == p.operator)
    }) {
        // The groups' limits travel in the snapshot's records, not in these.
        ops.push(Op::ClearPolicy {
            vhost: vhost.clone(),
            operator: p.operator,
            name: p.name.clone(),
            quorum_limits: Default::default(),
        });
    }
    for p in &want.policies {
        ops.push(Op::SetPolicy {
            vhost: vhost.clone(),
            policy: p.clone(),
            quorum_limits: Default::default(),
        });
    }
    for x in &want.exchanges {
        ops.push(Op::DeclareExchange {
            vhost: vhost.clone(),
            exchange: x.clone(),
        });
    }
    for q in &want.queues {
        let home = homes
            .get(&vhost)
            .and_then(|h| h.get(&q.name))
            .copied()
            .unwrap_or_default();
        ops.push(Op::DeclareQueue {
            vhost: vhost.clone(),
            queue: q.clone(),
            server_named: q.name.starts_with("amq.gen-"),
            home,
            limits: None,
        });
    }
    for b in &want.bindings {
        ops.push(Op::Bind {
            vhost: vhost.clone(),
            binding: b.clone(),
        });
    }
}

#[cfg(test)]
mod tests;
