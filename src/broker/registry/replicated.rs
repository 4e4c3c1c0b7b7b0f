//! The registry's side of a cluster: the public handlers of the definitions changes.
//!
//! On a single node (no cluster hook) each handler applies its change at once, as it
//! always did (the `*_now` methods). In a cluster a change that other nodes must know
//! (anything but an exclusive queue, its bindings, a passive declare, or a no-op
//! redeclare) is checked here, then proposed to the cluster's log; the answer comes
//! from applying the committed entry on this node ([`Local`], sent by the cluster's
//! state machine on every node), so the client hears back only once its own node has
//! the change. A proposal is awaited outside the registry's atomic section: the
//! registry keeps serving while the log commits, and the committed entry reaches it as
//! an ordinary [`Local`] message.
//!
//! A queue declare answered from this node's own definitions (it exists, or passive)
//! and a delete of a queue unknown here first wait for the cluster's barrier
//! (`AfterBarrier`): a node that lags must not answer "exists" for what the cluster
//! has deleted (`barrier` has the barrier and the same reads of exchanges and
//! bindings).

use super::barrier::after_barrier;
use super::*;
use crate::broker::queue_args::{check_queue_type, QueueConfig as Config};
use crate::cluster::{Op, Outcome, Proposal};
use crate::definitions::predeclared;
use crate::storage::{
    StoredBinding, StoredBindingTarget, StoredExchange, StoredPolicy, StoredQueue,
};
use actix::dev::{MessageResponse, OneshotSender};

/// A definitions change applied here at once, bypassing the cluster: what the
/// cluster's state machine sends each registry for a committed entry.
#[derive(Debug, Clone)]
pub struct Local<M>(pub M);

impl<M: Message> Message for Local<M> {
    type Result = M::Result;
}

/// The answer of a change that is atomic on a single node and proposed in a cluster.
pub enum Gated<R: 'static> {
    /// Applied here, atomically.
    Now(AtomicResponse<Registry, R>),
    /// Proposed to the cluster; answered once applied here.
    Committed(ResponseFuture<R>),
}

impl<M> MessageResponse<Registry, M> for Gated<M::Result>
where
    M: Message,
    M::Result: Send,
{
    fn handle(self, ctx: &mut Context<Registry>, tx: Option<OneshotSender<M::Result>>) {
        match self {
            Gated::Now(r) => MessageResponse::<Registry, M>::handle(r, ctx, tx),
            Gated::Committed(f) => MessageResponse::<Registry, M>::handle(f, ctx, tx),
        }
    }
}

/// Awaits a proposal and reads its outcome as `read` says.
fn committed<R: Send + 'static>(
    proposal: Proposal,
    read: fn(Outcome) -> Result<R, BrokerError>,
) -> ResponseFuture<Result<R, BrokerError>> {
    Box::pin(async move { read(proposal.await?) })
}

/// How long a quorum queue's declare waits for its group's first leader.
const FIRST_ELECTION: std::time::Duration = std::time::Duration::from_secs(10);

fn refused<R: Send + 'static>(e: BrokerError) -> ResponseFuture<Result<R, BrokerError>> {
    Box::pin(async move { Err(e) })
}

fn stored_exchange(spec: &ExchangeSpec) -> StoredExchange {
    StoredExchange {
        name: spec.name.clone(),
        kind: spec.kind.clone(),
        durable: spec.durable,
        auto_delete: spec.auto_delete,
        internal: spec.internal,
        arguments: spec.arguments.clone(),
    }
}

fn stored_binding(b: &BindingRecord) -> StoredBinding {
    StoredBinding {
        source: b.exchange.clone(),
        destination: match &b.target {
            BindTarget::Queue(q) => StoredBindingTarget::Queue(q.clone()),
            BindTarget::Exchange(x) => StoredBindingTarget::Exchange(x.clone()),
        },
        routing_key: b.routing_key.clone(),
        arguments: b.arguments.clone(),
    }
}

impl Registry {
    /// The cluster, when this broker is in one.
    pub(super) fn cluster(&self) -> Option<Arc<dyn crate::cluster::ClusterHook>> {
        self.ctx.cluster.clone()
    }

    /// True when queue `name` is exclusive to a connection (local, never replicated).
    pub(super) fn is_exclusive(&self, name: &str) -> bool {
        self.queues.get(name).is_some_and(|q| q.owner.is_some())
    }

    /// A queue of this node deleted itself (auto-delete, expiry): the other nodes are
    /// told through the log. Not awaited: the delete has happened here.
    pub(super) fn replicate_gone(&self, name: &str) {
        let Some(c) = self.cluster() else { return };
        if self.is_exclusive(name) || c.remote_home(&self.vhost, name).is_some() {
            return;
        }
        let op = Op::DeleteQueue {
            vhost: self.vhost.to_string(),
            name: name.to_string(),
        };
        let proposal = c.propose(op);
        let name = name.to_string();
        actix::spawn(async move {
            if let Err(e) = proposal.await {
                tracing::warn!(queue = %name, error = %e, "cluster: the delete of a queue that deleted itself was not replicated");
            }
        });
    }

    /// The proposal of a new queue, checked here first: `None` when it is applied here
    /// at once (no cluster, passive, exclusive, or already declared).
    pub(super) fn gate_declare_queue(
        &mut self,
        msg: &DeclareQueue,
    ) -> Option<ResponseFuture<Result<QueueDeclared, BrokerError>>> {
        let c = self.cluster()?;
        let spec = &msg.spec;
        let live = self
            .queues
            .get(&spec.name)
            .is_some_and(|q| q.handle.is_alive());
        if msg.passive || spec.exclusive || live {
            return None;
        }
        let mut spec = spec.clone();
        let checked = (|| -> Result<Op, BrokerError> {
            check_queue_type(&self.vhost, &spec)?;
            if crate::broker::queue::quorum::is_quorum(&spec) {
                crate::broker::queue::quorum::validate(&self.vhost, &spec)?;
            }
            Config::from_spec(&spec)?;
            let server_named = spec.name.is_empty();
            if server_named {
                spec.name = format!("amq.gen-{}", self.ctx.unique_suffix());
            }
            self.defs.check(&Command::DeclareQueue {
                spec: spec.clone(),
                server_named,
            })?;
            // The vhost's `max-queues` is the cluster's: checked here, where the queue
            // is proposed, against this node's count (not again as the entry applies:
            // each node counts its own exclusive queues too).
            self.ctx
                .admit_queue(&self.vhost, self.defs.queues().count(), &spec.name)?;
            if spec.durable {
                self.ctx.admit_durable("queue", &spec.name)?;
            }
            let queue = StoredQueue {
                name: spec.name.clone(),
                durable: spec.durable,
                auto_delete: spec.auto_delete,
                arguments: spec.arguments.clone(),
            };
            Ok(Op::DeclareQueue {
                vhost: self.vhost.to_string(),
                limits: crate::cluster::quorum_limits(&self.defs, &queue),
                queue,
                server_named,
                home: c.node_id(),
            })
        })();
        Some(match checked {
            Ok(op) if crate::broker::queue::quorum::is_quorum(&spec) => {
                if let Some(why) =
                    crate::broker::queue::quorum::dead_letter_fallback(&spec.arguments, true)
                {
                    tracing::warn!(vhost = %self.vhost, queue = %spec.name, "quorum queue declared: {why}");
                }
                let declared = committed(c.propose(op), Outcome::declared);
                let (vhost, name) = (self.vhost.to_string(), spec.name.clone());
                Box::pin(async move {
                    let d = declared.await?;
                    // As RabbitMQ answers once the queue's Raft cluster has a leader:
                    // a consume right after the declare finds one (not a refusal
                    // during the group's first election).
                    if let Some(g) = c.quorum_group(&vhost, &name) {
                        if !g.leader_known(FIRST_ELECTION).await {
                            tracing::warn!(queue = %name, vhost = %vhost, "cluster: the new quorum queue's group has no leader yet; declared anyway");
                        }
                    }
                    Ok(d)
                })
            }
            Ok(op) => committed(c.propose(op), Outcome::declared),
            Err(e) => refused(e),
        })
    }

    /// The proposal of a queue delete: its conditions are checked on its home node
    /// (where its consumers and messages are), then every node deletes it.
    pub(super) fn gate_delete_queue(
        &mut self,
        msg: &DeleteQueue,
    ) -> Option<ResponseFuture<Result<u64, BrokerError>>> {
        let c = self.cluster()?;
        let q = self.queues.get(&msg.name)?;
        if q.owner.is_some() {
            return None;
        }
        let conditional = msg.if_unused || msg.if_empty;
        if conditional {
            if let Some(home) = c.remote_home(&self.vhost, &msg.name) {
                return Some(refused(BrokerError::precondition(format!(
                    "queue '{}' in vhost '{}': {home}; delete it with if-unused or if-empty there",
                    msg.name, self.vhost
                ))));
            }
        }
        let handle = q.handle.clone();
        let op = Op::DeleteQueue {
            vhost: self.vhost.to_string(),
            name: msg.name.clone(),
        };
        let (name, vhost) = (msg.name.clone(), self.vhost.clone());
        let (if_unused, if_empty, ready_only) = (msg.if_unused, msg.if_empty, msg.ready_only);
        Some(Box::pin(async move {
            if conditional {
                let s = handle
                    .addr()
                    .send(GetStats)
                    .await
                    .map_err(|_| BrokerError::not_found("queue", &name, &vhost))?;
                if if_unused && s.consumers > 0 {
                    return Err(BrokerError::precondition(format!(
                        "queue '{name}' in vhost '{vhost}' in use: it has {} consumer(s)",
                        s.consumers
                    )));
                }
                let held = if ready_only {
                    s.ready
                } else {
                    s.ready + s.unacked + s.delayed
                };
                if if_empty && held > 0 {
                    return Err(BrokerError::precondition(format!(
                        "queue '{name}' in vhost '{vhost}' not empty: it holds {held} message(s)"
                    )));
                }
            }
            c.propose(op).await?.deleted()
        }))
    }

    /// The proposal of a binding change: `None` when applied here at once (no cluster,
    /// an exclusive queue's binding, or nothing to change).
    fn gate_binding(&self, b: &BindingRecord, bind: bool) -> Option<Result<Op, BrokerError>> {
        self.cluster()?;
        if let BindTarget::Queue(q) = &b.target {
            if self.is_exclusive(q) {
                return None;
            }
        }
        if self.defs.bindings().contains(b) == bind {
            return None;
        }
        let cmd = if bind {
            Command::Bind(b.clone())
        } else {
            Command::Unbind(b.clone())
        };
        Some(self.defs.check(&cmd).map(|()| {
            let (vhost, binding) = (self.vhost.to_string(), stored_binding(b));
            if bind {
                Op::Bind { vhost, binding }
            } else {
                Op::Unbind { vhost, binding }
            }
        }))
    }
}

impl Handler<DeclareExchange> for Registry {
    type Result = ResponseFuture<Result<(), BrokerError>>;

    fn handle(&mut self, msg: DeclareExchange, ctx: &mut Self::Context) -> Self::Result {
        match self.declare_exchange_reads(&msg) {
            Some(c) => after_barrier(c, ctx.address(), msg),
            None => self.declare_exchange_gated(msg, ctx),
        }
    }
}

impl Registry {
    /// A `DeclareExchange` past its barrier (if it needed one): a new exchange is
    /// proposed, anything else is answered here.
    pub(super) fn declare_exchange_gated(
        &mut self,
        msg: DeclareExchange,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<(), BrokerError>> {
        if let Some(c) = self.cluster() {
            let new = self.defs.exchange(&msg.spec.name).is_none();
            // An unknown type is refused here at once, as on a single node.
            if !msg.passive && new && self.ctx.knows_exchange_type(&msg.spec.kind) {
                let cmd = Command::DeclareExchange(msg.spec.clone());
                if let Err(e) = self.defs.check(&cmd) {
                    return refused(e);
                }
                let op = Op::DeclareExchange {
                    vhost: self.vhost.to_string(),
                    exchange: stored_exchange(&msg.spec),
                };
                return committed(c.propose(op), Outcome::done);
            }
        }
        self.declare_exchange_now(msg, ctx)
    }
}

impl Handler<DeleteExchange> for Registry {
    type Result = Gated<Result<(), BrokerError>>;

    fn handle(&mut self, msg: DeleteExchange, ctx: &mut Self::Context) -> Self::Result {
        match self.delete_exchange_reads(&msg) {
            Some(c) => Gated::Committed(after_barrier(c, ctx.address(), msg)),
            None => self.delete_exchange_gated(msg, ctx),
        }
    }
}

impl Registry {
    /// A `DeleteExchange` past its barrier (if it needed one): an exchange known here
    /// is deleted through the log, an unknown one is answered here.
    pub(super) fn delete_exchange_gated(
        &mut self,
        msg: DeleteExchange,
        ctx: &mut Context<Self>,
    ) -> Gated<Result<(), BrokerError>> {
        if let Some(c) = self.cluster() {
            if self.defs.exchange(&msg.name).is_some() && !predeclared(&msg.name) {
                let cmd = Command::DeleteExchange {
                    name: msg.name.clone(),
                    if_unused: msg.if_unused,
                };
                if let Err(e) = self.defs.check(&cmd) {
                    return Gated::Committed(refused(e));
                }
                let op = Op::DeleteExchange {
                    vhost: self.vhost.to_string(),
                    name: msg.name,
                    if_unused: msg.if_unused,
                };
                return Gated::Committed(committed(c.propose(op), Outcome::done));
            }
        }
        Gated::Now(self.delete_exchange_now(msg, ctx))
    }
}

impl Handler<DeclareQueue> for Registry {
    type Result = Gated<Result<QueueDeclared, BrokerError>>;

    fn handle(&mut self, msg: DeclareQueue, ctx: &mut Self::Context) -> Self::Result {
        match (self.gate_declare_queue(&msg), self.cluster()) {
            (Some(f), _) => Gated::Committed(f),
            // A passive declare is a read: it waits too.
            (None, Some(c)) if !msg.spec.exclusive => {
                Gated::Committed(after_barrier(c, ctx.address(), msg))
            }
            (None, _) => Gated::Now(self.declare_queue_now(msg, ctx)),
        }
    }
}

impl Handler<DeleteQueue> for Registry {
    type Result = Gated<Result<u64, BrokerError>>;

    fn handle(&mut self, msg: DeleteQueue, ctx: &mut Self::Context) -> Self::Result {
        match (self.gate_delete_queue(&msg), self.cluster()) {
            (Some(f), _) => Gated::Committed(f),
            (None, Some(c)) if !self.queues.contains_key(&msg.name) => {
                Gated::Committed(after_barrier(c, ctx.address(), msg))
            }
            (None, _) => Gated::Now(self.delete_queue_now(msg, ctx)),
        }
    }
}

impl Handler<Bind> for Registry {
    type Result = Gated<Result<(), BrokerError>>;

    fn handle(&mut self, msg: Bind, ctx: &mut Self::Context) -> Self::Result {
        match self.binding_reads(&msg, true) {
            Some(c) => Gated::Committed(after_barrier(c, ctx.address(), msg)),
            None => self.bind_gated(msg, ctx),
        }
    }
}

impl Handler<Unbind> for Registry {
    type Result = Gated<Result<(), BrokerError>>;

    fn handle(&mut self, msg: Unbind, ctx: &mut Self::Context) -> Self::Result {
        match self.binding_reads(&msg.binding, false) {
            Some(c) => Gated::Committed(after_barrier(c, ctx.address(), msg)),
            None => self.unbind_gated(msg, ctx),
        }
    }
}

impl Registry {
    /// A `Bind` past its barrier (if it needed one): proposed when it changes
    /// something, refused or answered here otherwise.
    pub(super) fn bind_gated(
        &mut self,
        msg: Bind,
        ctx: &mut Context<Self>,
    ) -> Gated<Result<(), BrokerError>> {
        let gate = self.gate_binding(&BindingRecord::from_bind(&msg), true);
        match (gate, self.cluster()) {
            (Some(Ok(op)), Some(c)) => Gated::Committed(committed(c.propose(op), Outcome::done)),
            (Some(Err(e)), _) => Gated::Committed(refused(e)),
            _ => Gated::Now(self.bind_now(msg, ctx)),
        }
    }

    /// An `Unbind` past its barrier (if it needed one), as [`Self::bind_gated`].
    pub(super) fn unbind_gated(
        &mut self,
        msg: Unbind,
        ctx: &mut Context<Self>,
    ) -> Gated<Result<(), BrokerError>> {
        let gate = self.gate_binding(&BindingRecord::from_bind(&msg.binding), false);
        match (gate, self.cluster()) {
            (Some(Ok(op)), Some(c)) => Gated::Committed(committed(c.propose(op), Outcome::done)),
            (Some(Err(e)), _) => Gated::Committed(refused(e)),
            _ => Gated::Now(self.unbind_now(msg, ctx)),
        }
    }
}

impl Handler<PutPolicy> for Registry {
    type Result = ResponseFuture<Result<bool, BrokerError>>;

    fn handle(&mut self, msg: PutPolicy, ctx: &mut Self::Context) -> Self::Result {
        let Some(c) = self.cluster() else {
            return self.put_policy_now(msg, ctx);
        };
        let p = msg.0;
        // The quorum queues' groups get their new limits through the entry.
        let quorum_limits =
            crate::cluster::quorum_limits_after(&self.defs, &Command::SetPolicy(p.clone()));
        let op = Op::SetPolicy {
            vhost: self.vhost.to_string(),
            quorum_limits,
            policy: StoredPolicy {
                name: p.name.clone(),
                operator: p.kind == crate::definitions::PolicyKind::Operator,
                pattern: p.pattern.clone(),
                apply_to: p.apply_to.as_str().to_string(),
                priority: p.priority,
                definition: p.definition.clone(),
            },
        };
        committed(c.propose(op), Outcome::policy)
    }
}

impl Handler<ClearPolicy> for Registry {
    type Result = ResponseFuture<Result<(), BrokerError>>;

    fn handle(&mut self, msg: ClearPolicy, ctx: &mut Self::Context) -> Self::Result {
        match self.cluster() {
            Some(c) if self.defs.policy(msg.kind, &msg.name).is_some() => {
                let clear = Command::ClearPolicy {
                    kind: msg.kind,
                    name: msg.name.clone(),
                };
                let op = Op::ClearPolicy {
                    vhost: self.vhost.to_string(),
                    operator: msg.kind == crate::definitions::PolicyKind::Operator,
                    name: msg.name,
                    quorum_limits: crate::cluster::quorum_limits_after(&self.defs, &clear),
                };
                committed(c.propose(op), Outcome::done)
            }
            // NOT_FOUND (or a single node): answered here.
            _ => self.clear_policy_now(msg, ctx),
        }
    }
}

macro_rules! local_handler {
    ($msg:ty, $now:ident, $result:ty) => {
        impl Handler<Local<$msg>> for Registry {
            type Result = $result;

            fn handle(&mut self, msg: Local<$msg>, ctx: &mut Self::Context) -> Self::Result {
                self.$now(msg.0, ctx)
            }
        }
    };
}

local_handler!(
    DeclareExchange,
    declare_exchange_now,
    ResponseFuture<Result<(), BrokerError>>
);
local_handler!(DeleteExchange, delete_exchange_now, AtomicResponse<Self, Result<(), BrokerError>>);
local_handler!(DeclareQueue, declare_queue_now, AtomicResponse<Self, Result<QueueDeclared, BrokerError>>);
local_handler!(DeleteQueue, delete_queue_now, AtomicResponse<Self, Result<u64, BrokerError>>);
local_handler!(Bind, bind_now, AtomicResponse<Self, Result<(), BrokerError>>);
local_handler!(Unbind, unbind_now, AtomicResponse<Self, Result<(), BrokerError>>);
local_handler!(
    PutPolicy,
    put_policy_now,
    ResponseFuture<Result<bool, BrokerError>>
);
local_handler!(
    ClearPolicy,
    clear_policy_now,
    ResponseFuture<Result<(), BrokerError>>
);
