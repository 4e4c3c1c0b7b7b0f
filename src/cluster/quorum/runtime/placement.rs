//! What the replicated definitions decide about a quorum queue's group, so that every
//! node computes the same answer without talking: the group as the applied state
//! records it ([`GroupInfo`]), where a new group's members go ([`place`]), and the
//! limits its machine enforces ([`limits_of`], and [`limits_with_policy`] for the
//! policies in force at its declare or changed since: [`GroupInfo::change_limits`]).

use super::super::machine::Limits;
use super::super::wire::GroupId;
use crate::cluster::NodeId;
use crate::definitions::Effective;
use crate::message::{FieldTable, FieldValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A quorum queue's group, as the definitions log's applied state records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group's id: the log index of the committed declare (unique, and the same
    /// on every node).
    pub id: GroupId,
    /// The members: node id → cluster address.
    pub members: BTreeMap<NodeId, String>,
    /// The queue's limits at its declare (its arguments merged with the policies in
    /// force where it was proposed): every member's machine starts with them, and
    /// replays its log from them, whatever a policy changed later.
    pub limits: Limits,
    /// The members changed since the declare ([`super::regroup`]): the group was
    /// initialized by its first members, and a new member waits to be added by the
    /// group's leader instead of writing a first membership of its own.
    #[serde(default)]
    pub changed: bool,
    /// The limits a policy change gave the queue after its declare, newest only
    /// (`None`: the declare's). The group's leader writes them into the group's log
    /// ([`Command::SetLimits`](super::super::machine::Command::SetLimits)). Absent
    /// from records written before policies reached groups: none.
    #[serde(default)]
    pub changed_limits: Option<ChangedLimits>,
}

/// Limits a policy change gave a quorum queue after its declare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangedLimits {
    /// The index of the definitions entry that changed them (set, changed or cleared
    /// a policy): it orders changes in the group's log.
    pub at: u64,
    /// The queue's arguments merged with the vhost's policies as of that entry.
    pub limits: Limits,
}

impl GroupInfo {
    /// The limits the definitions give the queue now, and the index of the entry that
    /// gave them (0: its declare).
    pub fn current_limits(&self) -> (u64, &Limits) {
        match &self.changed_limits {
            Some(c) => (c.at, &c.limits),
            None => (0, &self.limits),
        }
    }

    /// A policy change at definitions entry `at` gives the queue `limits`: recorded
    /// when they differ from those in force. True when recorded.
    pub fn change_limits(&mut self, at: u64, limits: Limits) -> bool {
        if *self.current_limits().1 == limits {
            return false;
        }
        self.changed_limits = Some(ChangedLimits { at, limits });
        true
    }
}

/// Every quorum queue's group: virtual host → queue → group.
pub type QueueGroups = BTreeMap<String, BTreeMap<String, GroupInfo>>;

/// The members of a new group of `size` (`x-quorum-initial-group-size`, capped by the
/// cluster's size): the voters that are members of the fewest groups first, ties by
/// id. A pure function of replicated state, so every node places it the same.
pub fn place(
    voters: &BTreeMap<NodeId, String>,
    groups: &QueueGroups,
    size: u64,
) -> BTreeMap<NodeId, String> {
    let mut load: BTreeMap<NodeId, usize> = voters.keys().map(|id| (*id, 0)).collect();
    for g in groups.values().flat_map(|qs| qs.values()) {
        for id in g.members.keys() {
            if let Some(n) = load.get_mut(id) {
                *n += 1;
            }
        }
    }
    let mut order: Vec<(usize, NodeId)> = load.into_iter().map(|(id, n)| (n, id)).collect();
    order.sort();
    order
        .into_iter()
        .take(size as usize)
        .map(|(_, id)| (id, voters[&id].clone()))
        .collect()
}

/// The limits the machine enforces (and the `x-expires` its leader does), from the
/// queue's declare arguments.
pub fn limits_of(args: &FieldTable) -> Limits {
    let int = |k: &str| {
        args.get(k)
            .and_then(FieldValue::as_int)
            .and_then(|n| u64::try_from(n).ok())
    };
    Limits {
        max_length: int("x-max-length"),
        max_length_bytes: int("x-max-length-bytes"),
        reject_publish: args.get("x-overflow").and_then(FieldValue::as_str)
            == Some("reject-publish"),
        delivery_limit: int("x-delivery-limit"),
        message_ttl: int("x-message-ttl"),
        single_active: args
            .get("x-single-active-consumer")
            .and_then(FieldValue::as_bool)
            .unwrap_or(false),
        expires: int("x-expires"),
        at_least_once: crate::broker::queue::quorum::at_least_once(args),
    }
}

/// The limits of a quorum queue declared with `args` while the policies give it
/// `effective`, merged as RabbitMQ's quorum queues merge them: the lower of argument
/// and policy for `max-length(-bytes)`, `delivery-limit`, `message-ttl` and `expires`;
/// the argument for `dead-letter-strategy`; but **the policy** for `overflow` (a
/// quorum queue's policy takes precedence there, where a classic queue's argument
/// does).
pub fn limits_with_policy(args: &FieldTable, effective: &Effective) -> Limits {
    let mut merged = crate::definitions::policy::queue_arguments(args, effective);
    if let Some(overflow) = effective.definition.get("overflow") {
        merged.insert("x-overflow".into(), overflow.clone());
    }
    limits_of(&merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(n: u64) -> BTreeMap<NodeId, String> {
        (1..=n).map(|id| (id, format!("n{id}"))).collect()
    }

    fn group(id: GroupId, members: &[NodeId]) -> GroupInfo {
        GroupInfo {
            id,
            members: members.iter().map(|m| (*m, format!("n{m}"))).collect(),
            limits: Limits::default(),
            changed: false,
            changed_limits: None,
        }
    }

    #[test]
    fn placement_is_least_loaded_first_and_capped_by_the_cluster() {
        let mut groups = QueueGroups::new();
        assert_eq!(
            place(&voters(3), &groups, 5)
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let vhost = groups.entry("/".into()).or_default();
        vhost.insert("a".into(), group(10, &[1, 2]));
        vhost.insert("b".into(), group(11, &[1, 3]));
        // Loads: 1 → 2, 2 → 1, 3 → 1, 4 → 0.
        let placed = place(&voters(4), &groups, 2);
        assert_eq!(placed.keys().copied().collect::<Vec<_>>(), [2, 4]);
    }

    #[test]
    fn limits_come_from_the_declare_arguments() {
        let mut args = FieldTable::new();
        args.insert("x-max-length".into(), FieldValue::Int(10));
        args.insert("x-overflow".into(), "reject-publish".into());
        args.insert("x-delivery-limit".into(), FieldValue::Int(3));
        args.insert("x-message-ttl".into(), FieldValue::Int(1500));
        args.insert("x-expires".into(), FieldValue::Int(60_000));
        let l = limits_of(&args);
        assert_eq!(l.message_ttl, Some(1500));
        assert_eq!(l.expires, Some(60_000));
        assert!(!l.single_active);
        assert_eq!(l.max_length, Some(10));
        assert!(l.reject_publish);
        assert_eq!(l.delivery_limit, Some(3));
        assert_eq!(l.max_length_bytes, None);
        assert!(!l.at_least_once, "at most once by default");
        args.insert("x-dead-letter-strategy".into(), "at-least-once".into());
        assert!(limits_of(&args).at_least_once);
    }

    #[test]
    fn a_policy_gives_the_lower_limit_its_overflow_and_a_strategy_the_argument_lacks() {
        let mut args = FieldTable::new();
        args.insert("x-max-length".into(), FieldValue::Int(5));
        args.insert("x-overflow".into(), "drop-head".into());
        args.insert("x-delivery-limit".into(), FieldValue::Int(2));
        let mut definition = FieldTable::new();
        definition.insert("max-length".into(), FieldValue::Int(3));
        definition.insert("delivery-limit".into(), FieldValue::Int(7));
        definition.insert("max-length-bytes".into(), FieldValue::Int(1000));
        definition.insert("overflow".into(), "reject-publish".into());
        definition.insert("dead-letter-strategy".into(), "at-least-once".into());
        let effective = Effective {
            policy: Some("p".into()),
            operator_policy: None,
            definition,
        };
        let l = limits_with_policy(&args, &effective);
        assert_eq!(l.max_length, Some(3), "the lower");
        assert_eq!(l.delivery_limit, Some(2), "the lower");
        assert_eq!(l.max_length_bytes, Some(1000), "the policy's alone");
        assert!(l.reject_publish, "the policy's overflow wins");
        assert!(
            l.at_least_once,
            "the policy's strategy, with reject-publish"
        );
        // The argument's strategy wins over the policy's.
        args.insert("x-dead-letter-strategy".into(), "at-most-once".into());
        assert!(!limits_with_policy(&args, &effective).at_least_once);
        // No policy: the arguments alone.
        assert_eq!(
            limits_with_policy(&args, &Effective::default()),
            limits_of(&args)
        );
    }
}
