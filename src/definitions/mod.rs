//! Definitions: what a virtual host *is* (its exchanges, queues and bindings), and what
//! the broker is (its virtual hosts and users, [`BrokerDefinitions`]), as pure values
//! changed only by commands ([`Command`], [`BrokerCommand`]).
//!
//! [`VhostDefinitions::apply`] is the one function that validates a command and changes
//! the value; it answers what changed ([`Applied`]), and the registry actor then starts or
//! stops actors from that answer. The durable part is what the metadata store snapshots
//! ([`VhostDefinitions::durable`]): nothing is rebuilt from live actors. This is also the
//! seam of replication: the same commands, in the same order, give every node the same
//! definitions.
//!
//! What is *not* here: actor handles, owners of exclusive queues (a connection is not a
//! definition), and checks that need the running broker (whether an exchange type is
//! registered, whether a queue's arguments parse): the registry makes those before it
//! applies a command.

mod broker;
mod command;
pub mod format;
pub mod limits;
pub mod permissions;
pub mod policy;
#[cfg(test)]
mod tests;
pub mod transfer;

pub use broker::{BrokerCommand, BrokerDefinitions, Generation, UserDefinition};
pub use limits::VhostLimits;
pub use permissions::{
    expand_topic_variables, Pattern, Perm, Permission, TopicPermission, TopicVariables,
};
pub use policy::{ApplyTo, Effective, Policy, PolicyKind, Target};

/// The broker's definitions, shared between the broker handle (which changes them by
/// command) and the front ends (whose logins read them).
pub type SharedDefinitions = std::sync::Arc<std::sync::RwLock<BrokerDefinitions>>;
pub use command::{Applied, Command};

use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::BindTarget;
use crate::broker::queue::QueueSpec;
use crate::broker::registry::BindingRecord;
use crate::error::BrokerError;
use crate::message::FieldTable;
use crate::storage::{
    StoredBinding, StoredBindingTarget, StoredExchange, StoredPolicy, StoredQueue, StoredVhost,
};
use std::collections::BTreeMap;

/// The exchanges every virtual host has from the start, with their types: the default
/// exchange `""` and RabbitMQ's `amq.*` ones. Durable, never stored, never deleted.
pub const PREDECLARED: [(&str, &str); 6] = [
    ("", "direct"),
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
];

/// True for the predeclared exchanges (never stored, never deleted or redeclared).
pub fn predeclared(name: &str) -> bool {
    name.is_empty() || name.starts_with("amq.")
}

/// The definitions of one virtual host.
#[derive(Debug, Clone, PartialEq)]
pub struct VhostDefinitions {
    /// The virtual host's name (in every error).
    vhost: String,
    /// Exchanges by name, the predeclared ones included.
    exchanges: BTreeMap<String, ExchangeSpec>,
    /// Queues by name (exclusive ones included: they are definitions while they live).
    queues: BTreeMap<String, QueueSpec>,
    /// Explicit bindings, in the order they were made (the default exchange's implicit
    /// binding of every queue is not listed, as in RabbitMQ).
    bindings: Vec<BindingRecord>,
    /// Policies and operator policies, by kind and name.
    policies: BTreeMap<(PolicyKind, String), Policy>,
}

impl VhostDefinitions {
    /// A virtual host with only the predeclared exchanges.
    pub fn new(vhost: &str) -> Self {
        let exchanges = PREDECLARED
            .iter()
            .map(|(name, kind)| {
                let mut spec = ExchangeSpec::new(name, kind);
                spec.durable = true;
                (name.to_string(), spec)
            })
            .collect();
        VhostDefinitions {
            vhost: vhost.to_string(),
            exchanges,
            queues: BTreeMap::new(),
            bindings: Vec::new(),
            policies: BTreeMap::new(),
        }
    }

    /// The policy or operator policy `name`, if set.
    pub fn policy(&self, kind: PolicyKind, name: &str) -> Option<&Policy> {
        self.policies.get(&(kind, name.to_string()))
    }

    /// Every policy and operator policy (policies first, each kind by name).
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// What the policies give the queue `spec` (its name and its type).
    pub fn queue_policy(&self, spec: &QueueSpec) -> Effective {
        self.queue_policy_of(&spec.name, &spec.arguments)
    }

    /// What the policies give the queue `name` declared with `arguments` (its type,
    /// `x-queue-type`, decides which `apply-to` values match it).
    pub fn queue_policy_of(&self, name: &str, arguments: &crate::message::FieldTable) -> Effective {
        policy::effective(
            self.policies.values(),
            name,
            policy::Target::queue(arguments),
        )
    }

    /// What the policies give the exchange `name`.
    pub fn exchange_policy(&self, name: &str) -> Effective {
        policy::effective(self.policies.values(), name, policy::Target::Exchange)
    }

    /// The arguments queue `spec` acts on: its own, with its policies merged in
    /// (see [`policy::queue_arguments`]).
    pub fn queue_effective_arguments(&self, spec: &QueueSpec) -> FieldTable {
        policy::queue_arguments(&spec.arguments, &self.queue_policy(spec))
    }

    /// The virtual host's name.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The exchange `name`, if defined.
    pub fn exchange(&self, name: &str) -> Option<&ExchangeSpec> {
        self.exchanges.get(name)
    }

    /// The queue `name`, if defined.
    pub fn queue(&self, name: &str) -> Option<&QueueSpec> {
        self.queues.get(name)
    }

    /// Every exchange, by name.
    pub fn exchanges(&self) -> impl Iterator<Item = &ExchangeSpec> {
        self.exchanges.values()
    }

    /// Every queue, by name.
    pub fn queues(&self) -> impl Iterator<Item = &QueueSpec> {
        self.queues.values()
    }

    /// Every explicit binding, in the order made.
    pub fn bindings(&self) -> &[BindingRecord] {
        &self.bindings
    }

    /// True when `name` is the source of at least one binding.
    pub fn has_bindings_from(&self, name: &str) -> bool {
        self.bindings.iter().any(|b| b.exchange == name)
    }

    /// True when the queue is kept across restarts: durable and not exclusive.
    fn queue_is_durable(spec: &QueueSpec) -> bool {
        spec.durable && !spec.exclusive
    }

    /// True when the binding is kept across restarts: both ends are.
    pub fn binding_is_durable(&self, b: &BindingRecord) -> bool {
        self.exchanges.get(&b.exchange).is_some_and(|x| x.durable)
            && match &b.target {
                BindTarget::Queue(q) => self.queues.get(q).is_some_and(Self::queue_is_durable),
                BindTarget::Exchange(x) => self.exchanges.get(x).is_some_and(|x| x.durable),
            }
    }

    /// Checks `cmd` against the definitions without changing them: the error it would
    /// fail with, if any. [`apply`](Self::apply) runs the same checks.
    pub fn check(&self, cmd: &Command) -> Result<(), BrokerError> {
        command::check(self, cmd)
    }

    /// Validates `cmd` and applies it; answers what changed. On an error nothing changed.
    pub fn apply(&mut self, cmd: Command) -> Result<Applied, BrokerError> {
        command::check(self, &cmd)?;
        Ok(command::apply(self, cmd))
    }

    /// The durable part, as the metadata store keeps it (a stable order).
    pub fn durable(&self) -> StoredVhost {
        self.stored(false)
    }

    /// The part a cluster replicates, in the metadata store's forms: the durable part
    /// and the transient exchanges, queues and bindings, but no exclusive queue (it
    /// belongs to one connection of one node) nor a binding to one. What installing a
    /// snapshot of the definitions log compares with the snapshot's.
    pub fn replicated(&self) -> StoredVhost {
        self.stored(true)
    }

    /// The durable part, with the transient entities too when `transient`.
    fn stored(&self, transient: bool) -> StoredVhost {
        let queue_kept = |q: &QueueSpec| {
            if transient {
                !q.exclusive
            } else {
                Self::queue_is_durable(q)
            }
        };
        let exchanges = self
            .exchanges
            .values()
            .filter(|s| (s.durable || transient) && !predeclared(&s.name))
            .map(|s| StoredExchange {
                name: s.name.clone(),
                kind: s.kind.clone(),
                durable: s.durable,
                auto_delete: s.auto_delete,
                internal: s.internal,
                arguments: s.arguments.clone(),
            })
            .collect();
        let queues = self
            .queues
            .values()
            .filter(|q| queue_kept(q))
            .map(|q| StoredQueue {
                name: q.name.clone(),
                durable: q.durable,
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            })
            .collect();
        let bindings = self
            .bindings
            .iter()
            .filter(|b| {
                if !transient {
                    return self.binding_is_durable(b);
                }
                match &b.target {
                    BindTarget::Queue(q) => self.queues.get(q).is_some_and(queue_kept),
                    BindTarget::Exchange(_) => true,
                }
            })
            .map(|b| StoredBinding {
                source: b.exchange.clone(),
                destination: match &b.target {
                    BindTarget::Queue(q) => StoredBindingTarget::Queue(q.clone()),
                    BindTarget::Exchange(x) => StoredBindingTarget::Exchange(x.clone()),
                },
                routing_key: b.routing_key.clone(),
                arguments: b.arguments.clone(),
            })
            .collect();
        let policies = self
            .policies
            .values()
            .map(|p| StoredPolicy {
                name: p.name.clone(),
                operator: p.kind == PolicyKind::Operator,
                pattern: p.pattern.clone(),
                apply_to: p.apply_to.as_str().to_string(),
                priority: p.priority,
                definition: p.definition.clone(),
            })
            .collect();
        StoredVhost {
            exchanges,
            queues,
            bindings,
            policies,
        }
    }

    /// The commands that rebuild what a stored snapshot describes, in order: policies
    /// (so that queues start with what applies to them), exchanges, queues, then
    /// bindings. A stored policy that no longer validates is logged and left out.
    pub fn restore_commands(stored: StoredVhost) -> Vec<Command> {
        let mut commands = Vec::new();
        for p in stored.policies {
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
            match made {
                Ok(policy) => commands.push(Command::SetPolicy(policy)),
                Err(e) => {
                    tracing::error!(policy = %p.name, error = %e, "a stored policy does not apply: left out")
                }
            }
        }
        for x in stored.exchanges {
            commands.push(Command::DeclareExchange(ExchangeSpec {
                name: x.name,
                kind: x.kind,
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments,
            }));
        }
        for q in stored.queues {
            commands.push(Command::DeclareQueue {
                server_named: q.name.starts_with("amq.gen-"),
                spec: QueueSpec {
                    name: q.name,
                    durable: true,
                    exclusive: false,
                    auto_delete: q.auto_delete,
                    arguments: q.arguments,
                },
            });
        }
        for b in stored.bindings {
            commands.push(Command::Bind(BindingRecord {
                exchange: b.source,
                target: match b.destination {
                    StoredBindingTarget::Queue(q) => BindTarget::Queue(q),
                    StoredBindingTarget::Exchange(x) => BindTarget::Exchange(x),
                },
                routing_key: b.routing_key,
                arguments: b.arguments,
            }));
        }
        commands
    }
}
