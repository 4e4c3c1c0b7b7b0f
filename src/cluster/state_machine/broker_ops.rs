//! Applying a committed definitions change to this node's broker: the same messages a
//! single node's registry takes ([`Local`]), so every node starts and stops its own
//! actors for it.

use super::LOG_OWNER;
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::{
    Bind, BindTarget, DeclareExchange, DeclareQueue, DeleteExchange, DeleteQueue, Unbind,
};
use crate::broker::queue::QueueSpec;
use crate::broker::registry::{ClearPolicy, Local, PutPolicy, Registry};
use crate::broker::BrokerHandle;
use crate::cluster::op::{Op, Outcome};
use crate::definitions::PolicyKind;
use crate::error::BrokerError;
use crate::storage::{StoredBinding, StoredBindingTarget};

/// Hands a committed change to the vhost's registry, to apply here.
async fn local<M, T>(registry: &actix::Addr<Registry>, msg: M) -> Result<T, BrokerError>
where
    M: actix::Message<Result = Result<T, BrokerError>> + Send + 'static,
    T: Send + 'static,
    Registry: actix::Handler<Local<M>>,
{
    registry.send(Local(msg)).await.map_err(BrokerError::from)?
}

/// Applies one change to this node's broker; answers what it answered.
pub(in crate::cluster) async fn apply_op(broker: &BrokerHandle, op: Op) -> Outcome {
    if let Some(cmd) = op.broker_command() {
        return Outcome::Done(broker.apply_broker_command(cmd).await);
    }
    let vhost = match &op {
        Op::DeclareExchange { vhost, .. }
        | Op::DeleteExchange { vhost, .. }
        | Op::DeclareQueue { vhost, .. }
        | Op::DeleteQueue { vhost, .. }
        | Op::Bind { vhost, .. }
        | Op::Unbind { vhost, .. }
        | Op::SetPolicy { vhost, .. }
        | Op::ClearPolicy { vhost, .. } => vhost.clone(),
        // Only the groups' records change: the state machine applies it, not the broker.
        Op::ChangeGroups(_) => return Outcome::Done(Ok(())),
        _ => unreachable!("broker-wide commands are applied above"),
    };
    let registry = match broker.registry(&vhost) {
        Ok(r) => r,
        Err(e) => return Outcome::Done(Err(e)),
    };
    match op {
        Op::DeclareExchange { exchange: x, .. } => {
            let spec = ExchangeSpec {
                name: x.name,
                kind: x.kind,
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments,
            };
            let msg = DeclareExchange {
                spec,
                passive: false,
            };
            Outcome::Done(local(&registry, msg).await)
        }
        Op::DeleteExchange {
            name, if_unused, ..
        } => {
            let msg = DeleteExchange { name, if_unused };
            Outcome::Done(local(&registry, msg).await)
        }
        Op::DeclareQueue { queue: q, .. } => {
            let msg = DeclareQueue {
                spec: QueueSpec {
                    name: q.name,
                    durable: q.durable,
                    exclusive: false,
                    auto_delete: q.auto_delete,
                    arguments: q.arguments,
                },
                passive: false,
                owner: LOG_OWNER,
                placement: None,
            };
            Outcome::Declared(local(&registry, msg).await)
        }
        Op::DeleteQueue { name, .. } => {
            let msg = DeleteQueue {
                name,
                if_unused: false,
                if_empty: false,
                ready_only: false,
                owner: LOG_OWNER,
            };
            Outcome::Deleted(local(&registry, msg).await)
        }
        Op::Bind { binding, .. } => {
            let msg = bind_of(binding);
            Outcome::Done(local(&registry, msg).await)
        }
        Op::Unbind { binding, .. } => {
            let msg = Unbind {
                binding: bind_of(binding),
            };
            Outcome::Done(local(&registry, msg).await)
        }
        Op::SetPolicy { policy: p, .. } => {
            let policy = match crate::cluster::op::policy_of(&p) {
                Ok(p) => p,
                Err(e) => return Outcome::Policy(Err(e)),
            };
            let msg = PutPolicy(policy);
            Outcome::Policy(local(&registry, msg).await)
        }
        Op::ClearPolicy { operator, name, .. } => {
            let kind = if operator {
                PolicyKind::Operator
            } else {
                PolicyKind::Policy
            };
            let msg = ClearPolicy { kind, name };
            Outcome::Done(local(&registry, msg).await)
        }
        _ => unreachable!("broker-wide commands are applied above"),
    }
}

fn bind_of(b: StoredBinding) -> Bind {
    Bind {
        exchange: b.source,
        target: match b.destination {
            StoredBindingTarget::Queue(q) => BindTarget::Queue(q),
            StoredBindingTarget::Exchange(x) => BindTarget::Exchange(x),
        },
        routing_key: b.routing_key,
        arguments: b.arguments,
        owner: LOG_OWNER,
    }
}
