//! The registry's side of policies: a policy or operator policy set or cleared is a
//! [`Command`] like a declare; then every running queue is sent the settings its
//! arguments and the policies now give it ([`Reconfigure`]), and every built-in
//! exchange its alternate exchange. The change is answered once the queues have taken
//! it and it is saved, so a `PUT /api/policies/...` that answered has taken effect.

use super::*;
use crate::broker::queue::actor::Reconfigure;
use crate::definitions::policy::alternate_exchange;
use crate::definitions::{Policy, PolicyKind};
use futures_util::future::join_all;

/// Sets a policy or operator policy (replacing the one of that kind and name); answers
/// true when it is new.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, BrokerError>")]
pub struct PutPolicy(pub Policy);

/// Clears a policy or operator policy (NOT_FOUND when there is none of that name).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct ClearPolicy {
    /// Policy or operator policy.
    pub kind: PolicyKind,
    /// Its name.
    pub name: String,
}

/// A copy of the virtual host's definitions: exchanges, queues, bindings, policies
/// (for export, and to check an import against before applying any of it).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "VhostDefinitions")]
pub struct SnapshotDefinitions;

/// The virtual host's policies and operator policies (cheaper than a whole
/// [`SnapshotDefinitions`] for listings that only need what applies to each queue).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<Policy>")]
pub struct ListPolicies;

impl Registry {
    /// The settings queue `spec` runs with: its arguments merged with its policies.
    pub(super) fn queue_config(&self, spec: &QueueSpec) -> QueueConfig {
        QueueConfig::from_arguments(&self.defs.queue_effective_arguments(spec))
    }

    /// Tells exchange `spec`'s actor its alternate exchange when a policy gives it one
    /// (its own argument wins, and the actor started with that).
    pub(super) fn apply_exchange_policy(&self, spec: &ExchangeSpec, handle: &ExchangeHandle) {
        let effective = self.defs.exchange_policy(&spec.name);
        if effective.definition.contains_key("alternate-exchange")
            || spec.arguments.contains_key("alternate-exchange")
        {
            handle.set_alternate(alternate_exchange(&spec.arguments, &effective));
        }
    }

    /// Sends every running queue and exchange what the policies give it now; resolves
    /// once every queue has taken its settings.
    fn reapply_policies(&self) -> impl std::future::Future<Output = ()> + 'static {
        let sends: Vec<_> = self
            .defs
            .queues()
            .filter_map(|spec| {
                let q = self.queues.get(&spec.name)?;
                Some(q.handle.addr().send(Reconfigure(self.queue_config(spec))))
            })
            .collect();
        for spec in self.defs.exchanges() {
            if let Some(x) = self.exchanges.get(&spec.name) {
                let effective = self.defs.exchange_policy(&spec.name);
                x.set_alternate(alternate_exchange(&spec.arguments, &effective));
            }
        }
        async move {
            // A queue that stopped meanwhile has nothing to take.
            let _ = join_all(sends).await;
        }
    }

    /// Applies a policy command, then its effects; answers whether the policy is new.
    fn change_policy(&mut self, cmd: Command) -> ResponseFuture<Result<bool, BrokerError>> {
        let applied = match self.defs.apply(cmd) {
            Ok(a) => a,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if !applied.policies_changed {
            return Box::pin(async { Ok(false) });
        }
        tracing::info!(vhost = %self.vhost, "policies changed: applying them to the queues and exchanges");
        let reapplied = self.reapply_policies();
        let saved = self.persist();
        Box::pin(async move {
            reapplied.await;
            saved.await?;
            Ok(applied.created)
        })
    }
}

impl Registry {
    /// Applies a `PutPolicy` here at once: on a single node, or once the cluster has
    /// committed it (the public handler is in `replicated.rs`).
    pub(super) fn put_policy_now(
        &mut self,
        msg: PutPolicy,
        _ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<bool, BrokerError>> {
        self.change_policy(Command::SetPolicy(msg.0))
    }
}

impl Registry {
    /// Applies a `ClearPolicy` here at once: on a single node, or once the cluster has
    /// committed it (the public handler is in `replicated.rs`).
    pub(super) fn clear_policy_now(
        &mut self,
        msg: ClearPolicy,
        _ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<(), BrokerError>> {
        let changed = self.change_policy(Command::ClearPolicy {
            kind: msg.kind,
            name: msg.name,
        });
        Box::pin(async move { changed.await.map(|_| ()) })
    }
}

impl Handler<SnapshotDefinitions> for Registry {
    type Result = MessageResult<SnapshotDefinitions>;

    fn handle(&mut self, _msg: SnapshotDefinitions, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.defs.clone())
    }
}

impl Handler<ListPolicies> for Registry {
    type Result = MessageResult<ListPolicies>;

    fn handle(&mut self, _msg: ListPolicies, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.defs.policies().cloned().collect())
    }
}
