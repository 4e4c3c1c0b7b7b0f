//! Installing a snapshot: the changes that take this node's definitions to the
//! snapshot's, as ordinary replicated changes (so every effect on actors is the one a
//! log entry has): what the snapshot lacks is deleted first, then what it has is
//! declared (an existing equivalent definition is no change).

use super::op::Op;
use super::types::DefinitionsSnapshot;
use crate::broker::BrokerHandle;
use crate::storage::StoredVhost;
use std::collections::BTreeSet;

/// The changes, in order.
pub(super) async fn ops_to_reach(broker: &BrokerHandle, snap: &DefinitionsSnapshot) -> Vec<Op> {
    let mut ops = Vec::new();
    let here: BTreeSet<String> = broker.vhosts().into_iter().collect();
    for v in here.iter().filter(|v| !snap.vhosts.contains_key(*v)) {
        ops.push(Op::DeleteVhost(v.clone()));
    }
    let users: BTreeSet<&str> = snap.users.iter().map(|u| u.name.as_str()).collect();
    for u in broker.users() {
        if !users.contains(u.name.as_str()) {
            ops.push(Op::DeleteUser(u.name.clone()));
        }
    }
    for (v, want) in &snap.vhosts {
        if !here.contains(v) {
            ops.push(Op::AddVhost(v.clone()));
        }
        let have = match broker.vhost_definitions(v).await {
            Ok(d) => d.durable(),
            Err(_) => StoredVhost::default(),
        };
        vhost_ops(v, &have, want, snap, &mut ops);
    }
    // Users last: the virtual hosts they may open exist by then.
    ops.extend(snap.users.iter().cloned().map(Op::PutUser));
    ops
}

pub(super) fn vhost_ops(
    vhost: &str,
    have: &StoredVhost,
    want: &StoredVhost,
    snap: &DefinitionsSnapshot,
    ops: &mut Vec<Op>,
) {
    let vhost = vhost.to_string();
    for b in have.bindings.iter().filter(|b| !want.bindings.contains(b)) {
        ops.push(Op::Unbind {
            vhost: vhost.clone(),
            binding: b.clone(),
        });
    }
    for q in have
        .queues
        .iter()
        .filter(|q| !want.queues.iter().any(|w| w.name == q.name))
    {
        ops.push(Op::DeleteQueue {
            vhost: vhost.clone(),
            name: q.name.clone(),
        });
    }
    for x in have
        .exchanges
        .iter()
        .filter(|x| !want.exchanges.iter().any(|w| w.name == x.name))
    {
        ops.push(Op::DeleteExchange {
            vhost: vhost.clone(),
            name: x.name.clone(),
            if_unused: false,
        });
    }
    for p in have.policies.iter().filter(|p| {
        !want
            .policies
            .iter()
            .any(|w| w.name == p.name && w.operator == p.operator)
    }) {
        ops.push(Op::ClearPolicy {
            vhost: vhost.clone(),
            operator: p.operator,
            name: p.name.clone(),
        });
    }
    for p in &want.policies {
        ops.push(Op::SetPolicy {
            vhost: vhost.clone(),
            policy: p.clone(),
        });
    }
    for x in &want.exchanges {
        ops.push(Op::DeclareExchange {
            vhost: vhost.clone(),
            exchange: x.clone(),
        });
    }
    for q in &want.queues {
        let home = snap
            .homes
            .get(&vhost)
            .and_then(|h| h.get(&q.name))
            .copied()
            .unwrap_or_default();
        ops.push(Op::DeclareQueue {
            vhost: vhost.clone(),
            queue: q.clone(),
            server_named: q.name.starts_with("amq.gen-"),
            home,
        });
    }
    for b in &want.bindings {
        ops.push(Op::Bind {
            vhost: vhost.clone(),
            binding: b.clone(),
        });
    }
}
