//! What the cluster replicates: one definitions change ([`Op`]) per log entry, in the
//! metadata store's own serde forms (the `Stored*` types), so the log and the snapshot
//! speak the format the data directory already keeps; and the broker's side of the
//! seam ([`ClusterHook`]): how the registry and the broker handle hand a change to the
//! cluster instead of applying it at once.

use crate::broker::messages::QueueDeclared;
use crate::definitions::{BrokerCommand, Permission, TopicPermission, UserDefinition};
use crate::error::BrokerError;
use crate::storage::{StoredBinding, StoredExchange, StoredPolicy, StoredQueue, StoredUser};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// Quorum queues' limits after a policy change, by queue name (of the change's
/// virtual host).
pub type QuorumLimits = BTreeMap<String, crate::cluster::quorum::machine::Limits>;

/// One replicated definitions change. A virtual host's changes name it; broker-wide
/// ones (virtual hosts, users, permissions) do not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Declares an exchange (durable or not: every node runs it).
    DeclareExchange {
        vhost: String,
        exchange: StoredExchange,
    },
    /// Deletes an exchange (checked against `if_unused` again on every node).
    DeleteExchange {
        vhost: String,
        name: String,
        if_unused: bool,
    },
    /// Declares a queue whose messages live on node `home` (the declaring node).
    DeclareQueue {
        vhost: String,
        queue: StoredQueue,
        server_named: bool,
        home: u64,
        /// A quorum queue's limits, its arguments merged with the policies in force
        /// where it was proposed ([`quorum_limits`]): carried in the entry because a
        /// node's own policies at apply time may differ (a crash replays the last
        /// batch with later policies stored; a joining node's pre-cluster policies
        /// are not yet the cluster's), and every member of a group must enforce the
        /// same limits. `None` in entries written before (and for other queues):
        /// the arguments' limits alone, as those builds applied them.
        #[serde(default)]
        limits: Option<crate::cluster::quorum::machine::Limits>,
    },
    /// Deletes a queue (its conditions were checked on its home node before).
    DeleteQueue { vhost: String, name: String },
    /// Adds a binding.
    Bind {
        vhost: String,
        binding: StoredBinding,
    },
    /// Removes a binding.
    Unbind {
        vhost: String,
        binding: StoredBinding,
    },
    /// Sets a policy or operator policy.
    SetPolicy {
        vhost: String,
        policy: StoredPolicy,
        /// The limits of the quorum queues it may change, as the proposer computed
        /// them ([`quorum_limits_after`]): the group's leader writes them into the
        /// group's log. Empty in entries written before policies reached groups.
        #[serde(default)]
        quorum_limits: QuorumLimits,
    },
    /// Clears a policy or operator policy.
    ClearPolicy {
        vhost: String,
        operator: bool,
        name: String,
        /// As [`Op::SetPolicy`]'s: the quorum queues' limits without it.
        #[serde(default)]
        quorum_limits: QuorumLimits,
    },
    /// Creates a virtual host.
    AddVhost(String),
    /// Deletes a virtual host with everything in it.
    DeleteVhost(String),
    /// Creates or replaces a user.
    PutUser(StoredUser),
    /// Deletes a user.
    DeleteUser(String),
    /// Sets a user's permission in a virtual host: configure, write and read patterns
    /// (an entry without them, written before patterns existed, is `.*` x3).
    SetPermissions {
        user: String,
        vhost: String,
        #[serde(default)]
        patterns: Option<(String, String, String)>,
    },
    /// Takes a virtual host away from a user.
    ClearPermissions { user: String, vhost: String },
    /// Replaces a virtual host's limits.
    SetVhostLimits {
        vhost: String,
        limits: crate::definitions::VhostLimits,
    },
    /// Sets a user's topic permission on an exchange.
    SetTopicPermissions {
        user: String,
        vhost: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// Clears a user's topic permissions in a virtual host (one exchange's, or all).
    ClearTopicPermissions {
        user: String,
        vhost: String,
        exchange: Option<String>,
    },
    /// Adds a node to quorum queue groups or takes it out of them (`actormq cluster
    /// grow` / `shrink`): no broker change, only the groups' recorded members, which
    /// their leaders then make real.
    ChangeGroups(crate::cluster::quorum::grow::GroupChange),
    /// Names the cluster.
    SetClusterName(String),
}

impl Op {
    /// The replicated form of a broker-wide command.
    pub fn of_broker(cmd: BrokerCommand) -> Op {
        match cmd {
            BrokerCommand::AddVhost(v) => Op::AddVhost(v),
            BrokerCommand::DeleteVhost(v) => Op::DeleteVhost(v),
            BrokerCommand::PutUser(u) => Op::PutUser(StoredUser::from(&u)),
            BrokerCommand::DeleteUser(u) => Op::DeleteUser(u),
            BrokerCommand::SetPermissions {
                user,
                vhost,
                permission: p,
            } => Op::SetPermissions {
                user,
                vhost,
                patterns: Some((
                    p.configure.as_str().to_string(),
                    p.write.as_str().to_string(),
                    p.read.as_str().to_string(),
                )),
            },
            BrokerCommand::ClearPermissions { user, vhost } => Op::ClearPermissions { user, vhost },
            BrokerCommand::SetVhostLimits { vhost, limits } => Op::SetVhostLimits { vhost, limits },
            BrokerCommand::SetTopicPermissions {
                user,
                vhost,
                exchange,
                permission,
            } => Op::SetTopicPermissions {
                user,
                vhost,
                exchange,
                write: permission.write,
                read: permission.read,
            },
            BrokerCommand::ClearTopicPermissions {
                user,
                vhost,
                exchange,
            } => Op::ClearTopicPermissions {
                user,
                vhost,
                exchange,
            },
            BrokerCommand::SetClusterName(name) => Op::SetClusterName(name),
        }
    }

    /// The broker-wide command this is, if it is one.
    pub fn broker_command(&self) -> Option<BrokerCommand> {
        Some(match self.clone() {
            Op::AddVhost(v) => BrokerCommand::AddVhost(v),
            Op::DeleteVhost(v) => BrokerCommand::DeleteVhost(v),
            Op::PutUser(u) => BrokerCommand::PutUser(UserDefinition::from(u)),
            Op::DeleteUser(u) => BrokerCommand::DeleteUser(u),
            Op::SetPermissions {
                user,
                vhost,
                patterns,
            } => BrokerCommand::SetPermissions {
                user,
                vhost,
                // Validated before it was proposed; a pattern that no longer compiles
                // grants nothing rather than everything.
                permission: match patterns {
                    None => Permission::all(),
                    Some((c, w, r)) => Permission::new(&c, &w, &r)
                        .unwrap_or_else(|_| Permission::new("", "", "").expect("compiles")),
                },
            },
            Op::ClearPermissions { user, vhost } => BrokerCommand::ClearPermissions { user, vhost },
            Op::SetVhostLimits { vhost, limits } => BrokerCommand::SetVhostLimits { vhost, limits },
            Op::SetTopicPermissions {
                user,
                vhost,
                exchange,
                write,
                read,
            } => BrokerCommand::SetTopicPermissions {
                user,
                vhost,
                exchange,
                permission: TopicPermission { write, read },
            },
            Op::ClearTopicPermissions {
                user,
                vhost,
                exchange,
            } => BrokerCommand::ClearTopicPermissions {
                user,
                vhost,
                exchange,
            },
            Op::SetClusterName(name) => BrokerCommand::SetClusterName(name),
            _ => return None,
        })
    }
}

/// What applying an [`Op`] answered on the node that proposed it: the answer its
/// client gets.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A change with no value (exchanges, bindings, broker-wide changes).
    Done(Result<(), BrokerError>),
    /// A queue declared.
    Declared(Result<QueueDeclared, BrokerError>),
    /// A queue deleted, with the messages it held here.
    Deleted(Result<u64, BrokerError>),
    /// A policy set: whether it is new.
    Policy(Result<bool, BrokerError>),
    /// Quorum queue groups changed ([`Op::ChangeGroups`]).
    Groups(Result<crate::cluster::quorum::grow::ChangeCount, BrokerError>),
}

fn mismatch(o: Outcome) -> BrokerError {
    BrokerError::internal(format!("cluster: unexpected outcome {o:?}"))
}

impl Outcome {
    /// As the answer of a change with no value.
    pub fn done(self) -> Result<(), BrokerError> {
        match self {
            Outcome::Done(r) => r,
            Outcome::Policy(r) => r.map(|_| ()),
            Outcome::Deleted(r) => r.map(|_| ()),
            o => Err(mismatch(o)),
        }
    }

    /// As the answer of a queue declare.
    pub fn declared(self) -> Result<QueueDeclared, BrokerError> {
        match self {
            Outcome::Declared(r) => r,
            o => Err(mismatch(o)),
        }
    }

    /// As the answer of a queue delete.
    pub fn deleted(self) -> Result<u64, BrokerError> {
        match self {
            Outcome::Deleted(r) => r,
            o => Err(mismatch(o)),
        }
    }

    /// As the answer of a change of quorum queue groups.
    pub fn groups(self) -> Result<crate::cluster::quorum::grow::ChangeCount, BrokerError> {
        match self {
            Outcome::Groups(r) => r,
            o => Err(mismatch(o)),
        }
    }

    /// As the answer of a policy set.
    pub fn policy(self) -> Result<bool, BrokerError> {
        match self {
            Outcome::Policy(r) => r,
            o => Err(mismatch(o)),
        }
    }
}

/// A proposal's answer, to await.
pub type Proposal = Pin<Box<dyn Future<Output = Result<Outcome, BrokerError>> + Send>>;

/// The cluster as the broker sees it. Set on a broker started in a cluster
/// ([`BrokerBuilder::cluster`](crate::BrokerBuilder::cluster)); absent, every change is
/// applied at once, as on a single node.
pub trait ClusterHook: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> u64;
    /// Commits `op` through the cluster's log; resolves once this node has applied it,
    /// with what applying it here answered.
    fn propose(&self, op: Op) -> Proposal;
    /// Where the messages of queue `queue` of `vhost` live when that is another node
    /// (a sentence naming it, for errors); `None` when they live here.
    fn remote_home(&self, vhost: &str, queue: &str) -> Option<String>;
    /// Where the publishes of a stand-in for queue `queue` of `vhost` go when the
    /// queue lives on another node (see [`crate::cluster::Home`]); `None` when it lives
    /// here, or when the cluster does not forward. Each call starts a forwarder of its
    /// own, for the stand-in that holds it.
    fn classic_home(&self, _vhost: &str, _queue: &str) -> Option<std::sync::Arc<super::Home>> {
        None
    }
    /// The cluster's nodes for `/api/nodes`: one JSON object each.
    fn nodes_json(&self) -> Vec<serde_json::Value>;
    /// For each of `queues` (virtual host, name), for the management API: the counts
    /// of its home when it is a classic queue or a stream homed on another node
    /// (asked of each home once for all its queues, within
    /// [`STATS_WAIT`](super::STATS_WAIT)), `None` when it lives here or is a quorum
    /// queue. Nothing is asked by default.
    fn home_stats(
        &self,
        queues: Vec<super::QueueKey>,
    ) -> Pin<Box<dyn Future<Output = Vec<Option<super::HomeStats>>> + Send>> {
        let none = vec![None; queues.len()];
        Box::pin(async move { none })
    }
    /// The Raft group of queue `queue` of `vhost` when it is a quorum queue: its
    /// queue actor publishes through it and serves consumers from it. None by default.
    fn quorum_group(
        &self,
        _vhost: &str,
        _queue: &str,
    ) -> Option<std::sync::Arc<super::quorum::runtime::QueueGroup>> {
        None
    }
    /// Resolves once this node has applied every change committed before the call (a
    /// read index from the leader): what an answer made from this node's own
    /// definitions, without a proposal, waits for, so that a lagging node does not
    /// answer "exists" for what the cluster has deleted. Immediate by default.
    fn barrier(&self) -> Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send>> {
        Box::pin(async { Ok(()) })
    }
}

impl Outcome {
    /// The refusal, if the change did not apply.
    pub fn error(&self) -> Option<BrokerError> {
        match self {
            Outcome::Done(Err(e))
            | Outcome::Declared(Err(e))
            | Outcome::Deleted(Err(e))
            | Outcome::Policy(Err(e))
            | Outcome::Groups(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }
}

/// The limits a quorum queue declared in `vhost` with `queue`'s arguments gets from
/// them and the policies `defs` (the proposer's): what [`Op::DeclareQueue`] carries.
/// `None` for any other queue.
pub fn quorum_limits(
    defs: &crate::definitions::VhostDefinitions,
    queue: &StoredQueue,
) -> Option<crate::cluster::quorum::machine::Limits> {
    crate::broker::queue::quorum::is_quorum_args(&queue.arguments).then(|| {
        crate::cluster::quorum::runtime::limits_with_policy(
            &queue.arguments,
            &defs.queue_policy_of(&queue.name, &queue.arguments),
        )
    })
}

/// The limits of the quorum queues of `defs` (the proposer's definitions of the
/// virtual host) that the policy change `change` may affect (those the policy
/// matches, before or after it), computed as they will be once it applies: what
/// [`Op::SetPolicy`] and [`Op::ClearPolicy`] carry. Computed where the change is
/// proposed, as a declare's limits are ([`quorum_limits`]), so that every node records
/// the same limits at the same entry whatever its own policies at apply time.
pub fn quorum_limits_after(
    defs: &crate::definitions::VhostDefinitions,
    change: &crate::definitions::Command,
) -> QuorumLimits {
    use crate::definitions::{Command, Target};
    let (old, new) = match change {
        Command::SetPolicy(p) => (defs.policy(p.kind, &p.name), Some(p)),
        Command::ClearPolicy { kind, name } => (defs.policy(*kind, name), None),
        _ => return QuorumLimits::new(),
    };
    let old = old.cloned();
    let mut after = defs.clone();
    if after.apply(change.clone()).is_err() {
        return QuorumLimits::new();
    }
    after
        .queues()
        .filter(|q| crate::broker::queue::quorum::is_quorum_args(&q.arguments))
        .filter(|q| {
            let target = Target::queue(&q.arguments);
            [old.as_ref(), new]
                .into_iter()
                .flatten()
                .any(|p| p.matches(&q.name, target))
        })
        .map(|q| {
            let effective = after.queue_policy_of(&q.name, &q.arguments);
            let limits =
                crate::cluster::quorum::runtime::limits_with_policy(&q.arguments, &effective);
            (q.name.clone(), limits)
        })
        .collect()
}

/// The policy an entry's stored form names (validated when it was proposed; an entry
/// from a build whose rules differ may still be refused here).
pub(crate) fn policy_of(p: &StoredPolicy) -> Result<crate::definitions::Policy, BrokerError> {
    use crate::definitions::{ApplyTo, Policy, PolicyKind};
    let kind = if p.operator {
        PolicyKind::Operator
    } else {
        PolicyKind::Policy
    };
    let to = ApplyTo::parse(&p.apply_to).map_err(BrokerError::precondition)?;
    Policy::new(
        kind,
        &p.name,
        &p.pattern,
        to,
        p.priority,
        p.definition.clone(),
    )
}
