//! Unit tests of a definitions snapshot: its encoding (old ones still decode), the
//! changes installing it computes, and what it does to this node's quorum groups.

use super::{moved, undoes, user_deletes, vhost_ops, wanted, Before};
use crate::cluster::drift::TransientVhost;
use crate::cluster::op::Op;
use crate::cluster::quorum::runtime::{GroupInfo, QueueGroups};
use crate::cluster::state_machine::group_plan;
use crate::cluster::types::{DefinitionsSnapshot, Homes};
use crate::storage::{
    StoredBinding, StoredBindingTarget, StoredExchange, StoredQueue, StoredUser, StoredVhost,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

fn queue(name: &str, durable: bool) -> StoredQueue {
    StoredQueue {
        name: name.into(),
        durable,
        auto_delete: false,
        arguments: Default::default(),
    }
}

fn exchange(name: &str, durable: bool) -> StoredExchange {
    StoredExchange {
        name: name.into(),
        kind: "fanout".into(),
        durable,
        auto_delete: false,
        internal: false,
        arguments: Default::default(),
    }
}

fn binding(source: &str, q: &str) -> StoredBinding {
    StoredBinding {
        source: source.into(),
        destination: StoredBindingTarget::Queue(q.into()),
        routing_key: String::new(),
        arguments: Default::default(),
    }
}

fn homes(entries: &[(&str, u64)]) -> Homes {
    BTreeMap::from([(
        "/".to_string(),
        entries.iter().map(|(q, h)| (q.to_string(), *h)).collect(),
    )])
}

fn group(id: u64, members: &[u64]) -> GroupInfo {
    GroupInfo {
        id,
        members: members
            .iter()
            .map(|m| (*m, format!("127.0.0.1:{}", 25671 + m)))
            .collect(),
        limits: Default::default(),
        changed: false,
        changed_limits: None,
    }
}

fn groups(entries: &[(&str, GroupInfo)]) -> QueueGroups {
    BTreeMap::from([(
        "/".to_string(),
        entries
            .iter()
            .map(|(q, g)| (q.to_string(), g.clone()))
            .collect(),
    )])
}

/// A snapshot with a durable queue, a quorum queue's group, and a transient exchange,
/// queue and binding between them.
fn full_snapshot() -> DefinitionsSnapshot {
    let transient = TransientVhost {
        exchanges: BTreeMap::from([("tx".to_string(), exchange("tx", false))]),
        queues: BTreeMap::from([(
            "tq".to_string(),
            Op::DeclareQueue {
                vhost: "/".into(),
                queue: queue("tq", false),
                server_named: false,
                home: 2,
                limits: None,
            },
        )]),
        bindings: vec![binding("tx", "tq")],
    };
    DefinitionsSnapshot {
        vhosts: BTreeMap::from([(
            "/".to_string(),
            StoredVhost {
                queues: vec![queue("dq", true), queue("qq", true)],
                ..Default::default()
            },
        )]),
        users: vec![StoredUser {
            name: "app".into(),
            password_hash: "$pbkdf2-sha256$...".into(),
            vhosts: vec!["/".into()],
            loopback_only: false,
            tags: Vec::new(),
            permissions: Vec::new(),
            topic_permissions: Vec::new(),
        }],
        homes: homes(&[("dq", 1), ("qq", 1), ("tq", 2)]),
        groups: groups(&[("qq", group(7, &[1, 2, 3]))]),
        transient: BTreeMap::from([("/".to_string(), transient)]),
        deleted_users: BTreeSet::from(["gone".to_string()]),
        cluster_name: Some("eu-prod".into()),
        vhost_limits: BTreeMap::from([(
            "/".to_string(),
            crate::definitions::VhostLimits {
                max_queues: Some(10),
                ..Default::default()
            },
        )]),
    }
}

#[test]
fn a_snapshot_round_trips_with_its_groups_and_transient_definitions() {
    let snap = full_snapshot();
    for bytes in [
        rmp_serde::to_vec(&snap).unwrap(),
        rmp_serde::to_vec_named(&snap).unwrap(),
    ] {
        let back: DefinitionsSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, snap);
    }
}

#[test]
fn a_snapshot_encoded_before_groups_and_transient_definitions_still_decodes() {
    // The snapshot's form before it carried them.
    #[derive(Serialize)]
    struct Old {
        vhosts: BTreeMap<String, StoredVhost>,
        users: Vec<StoredUser>,
        homes: Homes,
    }
    let new = full_snapshot();
    let old = Old {
        vhosts: new.vhosts.clone(),
        users: new.users.clone(),
        homes: new.homes.clone(),
    };
    for bytes in [
        rmp_serde::to_vec(&old).unwrap(),
        rmp_serde::to_vec_named(&old).unwrap(),
    ] {
        let back: DefinitionsSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.vhosts, new.vhosts);
        assert_eq!(back.homes, new.homes);
        assert!(back.groups.is_empty() && back.transient.is_empty());
    }
}

#[test]
fn installing_declares_the_transient_definitions_with_the_durable_ones() {
    let snap = full_snapshot();
    let want = wanted(&snap, "/");
    // A node that has nothing yet (it joins).
    let mut ops = Vec::new();
    let none = BTreeSet::new();
    vhost_ops(
        "/",
        &StoredVhost::default(),
        &want,
        &none,
        &snap.homes,
        &mut ops,
    );
    assert_eq!(
        ops,
        vec![
            Op::DeclareExchange {
                vhost: "/".into(),
                exchange: exchange("tx", false)
            },
            Op::DeclareQueue {
                vhost: "/".into(),
                queue: queue("dq", true),
                server_named: false,
                home: 1,
                limits: None,
            },
            Op::DeclareQueue {
                vhost: "/".into(),
                queue: queue("qq", true),
                server_named: false,
                home: 1,
                limits: None,
            },
            Op::DeclareQueue {
                vhost: "/".into(),
                queue: queue("tq", false),
                server_named: false,
                home: 2,
                limits: None,
            },
            Op::Bind {
                vhost: "/".into(),
                binding: binding("tx", "tq")
            },
        ]
    );
    // A node that has all of it changes nothing but redeclares.
    let mut again = Vec::new();
    vhost_ops("/", &want, &want, &none, &snap.homes, &mut again);
    assert_eq!(again, ops, "only declares, every one of them a no-op here");
}

#[test]
fn installing_deletes_what_the_snapshot_lacks_or_defines_otherwise_first() {
    let snap = full_snapshot();
    let want = wanted(&snap, "/");
    // Here: a transient queue the cluster deleted (with its binding), `tx` declared
    // durable where the cluster has it transient, and the rest as the snapshot has it.
    let mut have = want.clone();
    have.queues.push(queue("gone", false));
    have.bindings.push(binding("tx", "gone"));
    have.bindings.push(binding("amq.fanout", "dq"));
    have.exchanges[0] = exchange("tx", true);
    let mut ops = Vec::new();
    vhost_ops("/", &have, &want, &BTreeSet::new(), &snap.homes, &mut ops);
    assert_eq!(
        ops[..3],
        [
            Op::Unbind {
                vhost: "/".into(),
                binding: binding("amq.fanout", "dq")
            },
            Op::DeleteQueue {
                vhost: "/".into(),
                name: "gone".into()
            },
            Op::DeleteExchange {
                vhost: "/".into(),
                name: "tx".into(),
                if_unused: false
            },
        ],
        "{ops:#?}"
    );
    assert!(ops[3..].iter().all(|op| matches!(
        op,
        Op::DeclareExchange { .. } | Op::DeclareQueue { .. } | Op::Bind { .. }
    )));
    assert!(ops.contains(&Op::DeclareExchange {
        vhost: "/".into(),
        exchange: exchange("tx", false)
    }));
}

#[test]
fn a_queue_with_another_home_or_group_is_deleted_and_declared_again() {
    let snap = full_snapshot();
    // Here `dq` was homed on node 3 and `qq` had group 5: the cluster deleted both and
    // declared them again (`dq` from node 1, `qq` with group 7) meanwhile.
    let before = Before {
        homes: homes(&[("dq", 3), ("qq", 1), ("tq", 2)]),
        groups: groups(&[("qq", group(5, &[1, 2, 3]))]),
    };
    let moved = moved(&before, &snap, "/");
    assert_eq!(moved, BTreeSet::from(["dq".to_string(), "qq".to_string()]));
    let want = wanted(&snap, "/");
    let mut ops = Vec::new();
    vhost_ops("/", &want, &want, &moved, &snap.homes, &mut ops);
    let deleted: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteQueue { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, ["dq", "qq"]);
    assert!(
        !ops.iter().any(|op| matches!(op, Op::Unbind { .. })),
        "their bindings go with them"
    );
    // Nothing moved when the records agree.
    let same = Before {
        homes: snap.homes.clone(),
        groups: snap.groups.clone(),
    };
    assert!(super::moved(&same, &snap, "/").is_empty());
}

#[test]
fn definitions_from_before_joining_are_not_undone() {
    let keep = vec![
        Op::AddVhost("legacy".into()),
        Op::DeclareQueue {
            vhost: "legacy".into(),
            queue: queue("orders", true),
            server_named: false,
            home: 4,
            limits: None,
        },
        Op::Bind {
            vhost: "legacy".into(),
            binding: binding("amq.fanout", "orders"),
        },
    ];
    assert!(undoes(&Op::DeleteVhost("legacy".into()), &keep));
    assert!(undoes(
        &Op::DeleteQueue {
            vhost: "legacy".into(),
            name: "orders".into()
        },
        &keep
    ));
    assert!(undoes(
        &Op::Unbind {
            vhost: "legacy".into(),
            binding: binding("amq.fanout", "orders")
        },
        &keep
    ));
    assert!(!undoes(
        &Op::DeleteQueue {
            vhost: "/".into(),
            name: "orders".into()
        },
        &keep
    ));
    assert!(!undoes(&Op::DeleteVhost("other".into()), &keep));
}

#[test]
fn installing_starts_stops_and_changes_this_nodes_group_members() {
    let me = 1;
    let mut changed = group(8, &[2, 3, 4]);
    changed.changed = true;
    let before = groups(&[
        ("kept", group(5, &[1, 2, 3])),
        ("gone", group(6, &[1, 2, 3])),
        ("gone-elsewhere", group(9, &[2, 3, 4])),
        ("moved-off", group(8, &[1, 2, 3])),
    ]);
    let mut rejoined = group(12, &[1, 3, 4]);
    rejoined.changed = true;
    let after = groups(&[
        ("kept", group(5, &[1, 2, 3])),
        ("moved-off", changed.clone()),
        ("new", group(11, &[1, 2, 3])),
        ("new-elsewhere", group(13, &[2, 3, 4])),
        ("rejoined", rejoined.clone()),
    ]);
    let plan = group_plan(me, &before, &after);
    assert_eq!(
        plan.stop,
        [6],
        "a deleted queue's member goes; not one of others"
    );
    assert_eq!(
        plan.start,
        [
            ("/".to_string(), "new".to_string(), group(11, &[1, 2, 3])),
            ("/".to_string(), "rejoined".to_string(), rejoined),
        ]
    );
    assert_eq!(plan.changed.len(), 1);
    assert_eq!(plan.changed[0].queue, "moved-off");
    assert_eq!(plan.changed[0].after, changed);
    // Nothing to do when nothing changed.
    let same = group_plan(me, &after, &after);
    assert!(same.stop.is_empty() && same.start.is_empty() && same.changed.is_empty());
}

#[test]
fn installing_keeps_the_users_this_node_seeded_unless_the_log_deleted_them() {
    let snap = full_snapshot();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // `guest` and `ops` seeded here; `gone` seeded here too but deleted by the log;
    // `old` put by the log once and since deleted (the snapshot lacks it).
    let here = names(&["app", "guest", "ops", "gone", "old"]);
    let seeded: BTreeSet<String> = names(&["guest", "ops", "gone"]).into_iter().collect();
    assert_eq!(
        user_deletes(&here, &seeded, &snap),
        vec![Op::DeleteUser("gone".into()), Op::DeleteUser("old".into())]
    );
    // Nothing seeded: every user the snapshot lacks goes (as before).
    assert_eq!(user_deletes(&here, &BTreeSet::new(), &snap).len(), 4);
}
