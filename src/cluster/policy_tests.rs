//! A policy change's replicated form: the limits it carries for the quorum queues it
//! matches (computed where it is proposed), and its entries and the groups' records
//! as builds before wrote them, still read.

use super::op::Op;
use crate::storage::StoredQueue;

fn queue(name: &str) -> StoredQueue {
    StoredQueue {
        name: name.into(),
        durable: true,
        auto_delete: false,
        arguments: Default::default(),
    }
}

#[test]
fn a_policy_change_carries_the_limits_of_the_quorum_queues_it_matches() {
    use crate::definitions::{ApplyTo, Command, Policy, PolicyKind, VhostDefinitions};
    use crate::message::{FieldTable, FieldValue};
    let mut defs = VhostDefinitions::new("/");
    let quorum = |name: &str| {
        let mut q = queue(name);
        q.arguments.insert("x-queue-type".into(), "quorum".into());
        q.arguments
            .insert("x-max-length".into(), FieldValue::Int(5));
        crate::broker::queue::QueueSpec {
            name: q.name,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: q.arguments,
        }
    };
    for spec in [quorum("jobs.a"), quorum("other")] {
        defs.apply(Command::DeclareQueue {
            spec,
            server_named: false,
        })
        .unwrap();
    }
    defs.apply(Command::DeclareQueue {
        spec: crate::broker::queue::QueueSpec::new("jobs.classic"),
        server_named: false,
    })
    .unwrap();
    let mut definition = FieldTable::new();
    definition.insert("max-length".into(), FieldValue::Int(2));
    let cap = |kind, pattern: &str| {
        Policy::new(kind, "cap", pattern, ApplyTo::Queues, 0, definition.clone()).unwrap()
    };
    let set = Command::SetPolicy(cap(PolicyKind::Operator, "^jobs"));
    let carried = super::op::quorum_limits_after(&defs, &set);
    assert_eq!(
        carried.keys().collect::<Vec<_>>(),
        ["jobs.a"],
        "the quorum queues it matches only"
    );
    assert_eq!(carried["jobs.a"].max_length, Some(2), "the lower");
    defs.apply(set).unwrap();
    // Changed to match another queue: both the one it left and the new one.
    let moved = Command::SetPolicy(cap(PolicyKind::Operator, "^other$"));
    let carried = super::op::quorum_limits_after(&defs, &moved);
    assert_eq!(
        carried["jobs.a"].max_length,
        Some(5),
        "back to its argument's"
    );
    assert_eq!(carried["other"].max_length, Some(2));
    defs.apply(moved).unwrap();
    // Cleared: the arguments' limits again.
    let clear = Command::ClearPolicy {
        kind: PolicyKind::Operator,
        name: "cap".into(),
    };
    let carried = super::op::quorum_limits_after(&defs, &clear);
    assert_eq!(carried.keys().collect::<Vec<_>>(), ["other"]);
    assert_eq!(carried["other"].max_length, Some(5));
    // A change that would not apply carries nothing.
    let missing = Command::ClearPolicy {
        kind: PolicyKind::Policy,
        name: "none".into(),
    };
    assert!(super::op::quorum_limits_after(&defs, &missing).is_empty());
}

#[test]
fn policy_entries_and_group_records_written_before_they_carried_limits_still_decode() {
    use crate::cluster::quorum::machine::Limits;
    use crate::cluster::quorum::runtime::GroupInfo;
    use crate::storage::{StoredBinding, StoredExchange, StoredPolicy};
    // The first variants of `Op` as the builds before wrote them.
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum Before {
        DeclareExchange {
            vhost: String,
            exchange: StoredExchange,
        },
        DeleteExchange {
            vhost: String,
            name: String,
            if_unused: bool,
        },
        DeclareQueue {
            vhost: String,
            queue: StoredQueue,
        },
        DeleteQueue {
            vhost: String,
            name: String,
        },
        Bind {
            vhost: String,
            binding: StoredBinding,
        },
        Unbind {
            vhost: String,
            binding: StoredBinding,
        },
        SetPolicy {
            vhost: String,
            policy: StoredPolicy,
        },
        ClearPolicy {
            vhost: String,
            operator: bool,
            name: String,
        },
    }
    let policy = StoredPolicy {
        name: "cap".into(),
        operator: false,
        pattern: "^q".into(),
        apply_to: "queues".into(),
        priority: 0,
        definition: Default::default(),
    };
    let old = Before::SetPolicy {
        vhost: "/".into(),
        policy: policy.clone(),
    };
    let op: Op = rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
    assert_eq!(
        op,
        Op::SetPolicy {
            vhost: "/".into(),
            policy,
            quorum_limits: Default::default(),
        }
    );
    let old = Before::ClearPolicy {
        vhost: "/".into(),
        operator: true,
        name: "cap".into(),
    };
    let op: Op = rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
    assert!(matches!(op, Op::ClearPolicy { quorum_limits, .. } if quorum_limits.is_empty()));
    // A group's record as kept before: the declare's limits, never changed.
    #[derive(serde::Serialize)]
    struct OldGroup {
        id: u64,
        members: std::collections::BTreeMap<u64, String>,
        limits: Limits,
        changed: bool,
    }
    let old = OldGroup {
        id: 7,
        members: [(1, "a".to_string())].into(),
        limits: Limits {
            max_length: Some(5),
            ..Limits::default()
        },
        changed: false,
    };
    let mut g: GroupInfo = rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
    assert_eq!(g.current_limits(), (0, &old.limits));
    // A change to the same limits is none; another is recorded with its entry.
    assert!(!g.change_limits(9, old.limits.clone()));
    assert!(g.change_limits(12, Limits::default()));
    assert_eq!(g.current_limits(), (12, &Limits::default()));
    assert_eq!(g.limits, old.limits, "members start from the declare's");
}
