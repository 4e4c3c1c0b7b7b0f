//! The commands that change a virtual host's definitions, their checks and their effects.
//! Each rule (reserved names, equivalence on redeclare, `if-unused`, the cascade of an
//! auto-delete exchange) is written here once.

use super::policy::{no_policy, Policy, PolicyKind};
use super::{predeclared, VhostDefinitions};
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::BindTarget;
use crate::broker::queue::QueueSpec;
use crate::broker::registry::BindingRecord;
use crate::error::{clip, BrokerError};

/// One change to a virtual host's definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Declares an exchange; an equivalent one already there is no change, a different
    /// one is PRECONDITION_FAILED.
    DeclareExchange(ExchangeSpec),
    /// Deletes an exchange with its bindings in both directions (a missing one is no
    /// change, as in RabbitMQ).
    DeleteExchange {
        /// Its name.
        name: String,
        /// Refuse while it is the source of a binding.
        if_unused: bool,
    },
    /// Declares a queue. A server-named queue arrives already named (`amq.gen-…`, picked
    /// by the registry, so that applying the command again gives the same name).
    DeclareQueue {
        /// The queue.
        spec: QueueSpec,
        /// The broker chose the name: the reserved `amq.` prefix is allowed.
        server_named: bool,
    },
    /// Deletes a queue and the bindings to it (a missing one is no change).
    DeleteQueue {
        /// Its name.
        name: String,
    },
    /// Adds a binding (an existing one is no change).
    Bind(BindingRecord),
    /// Removes a binding (a missing one is no change).
    Unbind(BindingRecord),
    /// Sets a policy or operator policy (validated when made: see [`Policy::new`]),
    /// replacing the one of that kind and name.
    SetPolicy(Policy),
    /// Clears a policy or operator policy (a missing one is NOT_FOUND, as in RabbitMQ).
    ClearPolicy {
        /// Policy or operator policy.
        kind: PolicyKind,
        /// Its name.
        name: String,
    },
}

/// What a command changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Something new was defined (a declare or bind that was not there before).
    pub created: bool,
    /// Bindings removed: by an unbind, or with a deleted exchange or queue.
    pub removed_bindings: Vec<BindingRecord>,
    /// Exchanges removed: the one deleted, and auto-delete exchanges left without
    /// bindings as a result.
    pub removed_exchanges: Vec<ExchangeSpec>,
    /// Queues removed.
    pub removed_queues: Vec<QueueSpec>,
    /// A durable definition changed: the snapshot must be saved.
    pub durable_changed: bool,
    /// A policy was set, changed or cleared: what applies to each queue and exchange
    /// must be worked out again.
    pub policies_changed: bool,
}

impl Applied {
    /// True when nothing changed.
    pub fn is_noop(&self) -> bool {
        !self.created
            && !self.policies_changed
            && self.removed_bindings.is_empty()
            && self.removed_exchanges.is_empty()
            && self.removed_queues.is_empty()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '+')
        })
}

fn default_exchange_refused() -> BrokerError {
    BrokerError::access_refused("operation not permitted on the default exchange")
}

/// The error `cmd` would fail with on `defs`, if any.
pub(super) fn check(defs: &VhostDefinitions, cmd: &Command) -> Result<(), BrokerError> {
    let vhost = defs.vhost();
    let no_exchange = |name: &str| BrokerError::not_found("exchange", name, vhost);
    match cmd {
        Command::DeclareExchange(spec) => {
            if let Some(existing) = defs.exchange(&spec.name) {
                if spec.name.is_empty() {
                    return Err(default_exchange_refused());
                }
                return match existing.difference(spec) {
                    Some(diff) => Err(BrokerError::precondition(diff)),
                    None => Ok(()),
                };
            }
            if spec.name.starts_with("amq.") {
                return Err(BrokerError::access_refused(format!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    clip(&spec.name)
                )));
            }
            if !valid_name(&spec.name) {
                return Err(BrokerError::precondition(format!(
                    "invalid exchange name '{}': 1-255 characters of letters, digits, '-', '_', '.', ':', '/', '@', '+'",
                    clip(&spec.name)
                )));
            }
            if let Some(alt) = spec.arguments.get("alternate-exchange") {
                if alt.as_str().is_none() {
                    return Err(BrokerError::precondition(format!(
                        "invalid arg 'alternate-exchange' for exchange '{}': expected a string, got {}",
                        spec.name,
                        alt.type_name()
                    )));
                }
            }
            Ok(())
        }
        Command::DeleteExchange { name, if_unused } => {
            if predeclared(name) {
                return Err(BrokerError::access_refused(format!(
                    "operation not permitted on exchange '{name}'"
                )));
            }
            if *if_unused && defs.has_bindings_from(name) {
                return Err(BrokerError::precondition(format!(
                    "exchange '{name}' in vhost '{vhost}' in use: it has bindings"
                )));
            }
            Ok(())
        }
        Command::DeclareQueue { spec, server_named } => {
            if let Some(existing) = defs.queue(&spec.name) {
                return match existing.difference(spec) {
                    Some(diff) => Err(BrokerError::precondition(diff)),
                    None => Ok(()),
                };
            }
            if spec.name.starts_with("amq.") && !server_named {
                return Err(BrokerError::access_refused(format!(
                    "queue name '{}' contains reserved prefix 'amq.*'",
                    clip(&spec.name)
                )));
            }
            if !valid_name(&spec.name) {
                return Err(BrokerError::precondition(format!(
                    "invalid queue name '{}': at most 255 characters of letters, digits, '-', '_', '.', ':', '/', '@', '+'",
                    clip(&spec.name)
                )));
            }
            Ok(())
        }
        Command::DeleteQueue { .. } | Command::SetPolicy(_) => Ok(()),
        Command::ClearPolicy { kind, name } => match defs.policy(*kind, name) {
            Some(_) => Ok(()),
            None => Err(no_policy(*kind, name, vhost)),
        },
        Command::Bind(b) | Command::Unbind(b) => {
            if b.exchange.is_empty() {
                return Err(default_exchange_refused());
            }
            if defs.exchange(&b.exchange).is_none() {
                return Err(no_exchange(&b.exchange));
            }
            match &b.target {
                BindTarget::Queue(q) if defs.queue(q).is_none() => {
                    Err(BrokerError::not_found("queue", q, vhost))
                }
                BindTarget::Exchange(x) if x.is_empty() => Err(default_exchange_refused()),
                BindTarget::Exchange(x) if defs.exchange(x).is_none() => Err(no_exchange(x)),
                _ => Ok(()),
            }
        }
    }
}

/// Applies a checked command.
pub(super) fn apply(defs: &mut VhostDefinitions, cmd: Command) -> Applied {
    let mut applied = Applied::default();
    match cmd {
        Command::DeclareExchange(spec) => {
            if !defs.exchanges.contains_key(&spec.name) {
                applied.created = true;
                applied.durable_changed = spec.durable;
                defs.exchanges.insert(spec.name.clone(), spec);
            }
        }
        Command::DeleteExchange { name, .. } => remove_exchange(defs, &name, &mut applied),
        Command::DeclareQueue { spec, .. } => {
            if !defs.queues.contains_key(&spec.name) {
                applied.created = true;
                applied.durable_changed = VhostDefinitions::queue_is_durable(&spec);
                defs.queues.insert(spec.name.clone(), spec);
            }
        }
        Command::DeleteQueue { name } => {
            if let Some(spec) = defs.queues.get(&name) {
                applied.durable_changed |= VhostDefinitions::queue_is_durable(spec);
                let sources = unbind_where(
                    defs,
                    |b| matches!(&b.target, BindTarget::Queue(q) if *q == name),
                    &mut applied,
                );
                let spec = defs.queues.remove(&name).expect("present");
                applied.removed_queues.push(spec);
                auto_delete(defs, sources, &mut applied);
            }
        }
        Command::Bind(b) => {
            if !defs.bindings.contains(&b) {
                applied.created = true;
                applied.durable_changed = defs.binding_is_durable(&b);
                defs.bindings.push(b);
            }
        }
        Command::Unbind(b) => {
            let sources = unbind_where(defs, |r| *r == b, &mut applied);
            auto_delete(defs, sources, &mut applied);
        }
        Command::SetPolicy(p) => {
            let key = (p.kind, p.name.clone());
            if defs.policies.get(&key) != Some(&p) {
                applied.created = !defs.policies.contains_key(&key);
                applied.policies_changed = true;
                applied.durable_changed = true;
                defs.policies.insert(key, p);
            }
        }
        Command::ClearPolicy { kind, name } => {
            if defs.policies.remove(&(kind, name)).is_some() {
                applied.policies_changed = true;
                applied.durable_changed = true;
            }
        }
    }
    applied
}

/// Removes the bindings matching `pred` (noting the durable ones); answers their
/// sources.
fn unbind_where(
    defs: &mut VhostDefinitions,
    pred: impl Fn(&BindingRecord) -> bool,
    applied: &mut Applied,
) -> Vec<String> {
    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut defs.bindings)
        .into_iter()
        .partition(|b| pred(b));
    let mut sources = Vec::new();
    for b in &gone {
        applied.durable_changed |= defs.binding_is_durable(b);
        if !sources.contains(&b.exchange) {
            sources.push(b.exchange.clone());
        }
    }
    defs.bindings = kept;
    applied.removed_bindings.extend(gone);
    sources
}

/// Deletes each auto-delete exchange among `sources` that is left without bindings.
fn auto_delete(defs: &mut VhostDefinitions, sources: Vec<String>, applied: &mut Applied) {
    for s in sources {
        let lone = defs.exchanges.get(&s).is_some_and(|x| x.auto_delete)
            && !defs.has_bindings_from(&s)
            && !predeclared(&s);
        if lone {
            remove_exchange(defs, &s, applied);
        }
    }
}

/// Removes an exchange, its bindings in both directions, and the auto-delete exchanges
/// that leaves without bindings.
fn remove_exchange(defs: &mut VhostDefinitions, name: &str, applied: &mut Applied) {
    if !defs.exchanges.contains_key(name) {
        return;
    }
    let mut sources = unbind_where(
        defs,
        |b| b.exchange == name || matches!(&b.target, BindTarget::Exchange(t) if t == name),
        applied,
    );
    let spec = defs.exchanges.remove(name).expect("present");
    applied.durable_changed |= spec.durable;
    applied.removed_exchanges.push(spec);
    sources.retain(|s| s != name);
    auto_delete(defs, sources, applied);
}
