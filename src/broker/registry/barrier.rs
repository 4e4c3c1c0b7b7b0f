//! Reads after the cluster's barrier: the wait itself, and which exchange and binding
//! changes are reads.
//!
//! In a cluster a change that would alter nothing here is answered from this node's
//! own definitions, without a proposal: a redeclare or passive declare of an exchange
//! it knows, a delete of an exchange it does not know (a success, as in RabbitMQ), a
//! bind that exists or an unbind that does not, and a binding whose exchange or queue
//! it does not know (NOT_FOUND). A node that lags (thawed from SIGSTOP, restarted,
//! cut off) would answer those from stale definitions: "exists" for an exchange the
//! cluster deleted, "deleted" for one it declared meanwhile, NOT_FOUND for a queue it
//! has. So they first wait for the barrier (this node has applied everything the
//! leader had committed) and are then handled again, with no second barrier. The
//! queues' reads (a queue declare answered "exists", or passive; a delete of a queue
//! unknown here) wait the same way, decided in `replicated`.
//!
//! The predeclared exchanges (`""`, `amq.*`) exist on every node from the start and
//! are never deleted: reading them needs no barrier.

use super::replicated::Gated;
use super::*;
use crate::cluster::ClusterHook;
use crate::definitions::predeclared;

/// A change sent again to the registry once the cluster's barrier has passed:
/// handled as its message, with no second barrier.
pub struct AfterBarrier<M>(pub M);

impl<M: Message> Message for AfterBarrier<M> {
    type Result = M::Result;
}

/// Waits for the cluster's barrier (this node has applied everything committed
/// before), then hands `msg` back to the registry: a read that would be answered from
/// this node's own definitions (see the module's doc) is then answered from
/// up-to-date ones.
pub(super) fn after_barrier<M, R>(
    c: std::sync::Arc<dyn crate::cluster::ClusterHook>,
    addr: Addr<Registry>,
    msg: M,
) -> ResponseFuture<Result<R, BrokerError>>
where
    M: Message<Result = Result<R, BrokerError>> + Send + 'static,
    R: Send + 'static,
    Registry: Handler<AfterBarrier<M>>,
{
    Box::pin(async move {
        c.barrier().await?;
        addr.send(AfterBarrier(msg))
            .await
            .map_err(|_| BrokerError::internal("the virtual host's registry stopped"))?
    })
}

impl Registry {
    /// True when exchange `name` may differ between this node and the cluster.
    fn exchange_unknown(&self, name: &str) -> bool {
        !predeclared(name) && self.defs.exchange(name).is_none()
    }

    /// The cluster when `msg` is answered from this node's definitions (passive, or
    /// the exchange exists here), so it must wait for the barrier.
    pub(super) fn declare_exchange_reads(
        &self,
        msg: &DeclareExchange,
    ) -> Option<Arc<dyn ClusterHook>> {
        let c = self.cluster()?;
        let known = self.defs.exchange(&msg.spec.name).is_some();
        (!predeclared(&msg.spec.name) && (msg.passive || known)).then_some(c)
    }

    /// The cluster when `msg` names an exchange unknown here (answered as a success
    /// without a proposal), so it must wait for the barrier.
    pub(super) fn delete_exchange_reads(
        &self,
        msg: &DeleteExchange,
    ) -> Option<Arc<dyn ClusterHook>> {
        let c = self.cluster()?;
        self.exchange_unknown(&msg.name).then_some(c)
    }

    /// The cluster when binding `b` (`bind`, or unbind) is answered from this node's
    /// definitions: it changes nothing here, or its exchange or queue is unknown here.
    /// A binding to an exclusive queue is local to its connection: never.
    pub(super) fn binding_reads(&self, b: &Bind, bind: bool) -> Option<Arc<dyn ClusterHook>> {
        let c = self.cluster()?;
        let target_unknown = match &b.target {
            BindTarget::Queue(q) if self.is_exclusive(q) => return None,
            BindTarget::Queue(q) => self.defs.queue(q).is_none(),
            BindTarget::Exchange(x) => self.exchange_unknown(x),
        };
        let unchanged = self.defs.bindings().contains(&BindingRecord::from_bind(b)) == bind;
        (unchanged || target_unknown || self.exchange_unknown(&b.exchange)).then_some(c)
    }
}

impl Handler<AfterBarrier<DeclareExchange>> for Registry {
    type Result = ResponseFuture<Result<(), BrokerError>>;

    fn handle(
        &mut self,
        msg: AfterBarrier<DeclareExchange>,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        self.declare_exchange_gated(msg.0, ctx)
    }
}

impl Handler<AfterBarrier<DeleteExchange>> for Registry {
    type Result = Gated<Result<(), BrokerError>>;

    fn handle(
        &mut self,
        msg: AfterBarrier<DeleteExchange>,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        self.delete_exchange_gated(msg.0, ctx)
    }
}

impl Handler<AfterBarrier<Bind>> for Registry {
    type Result = Gated<Result<(), BrokerError>>;

    fn handle(&mut self, msg: AfterBarrier<Bind>, ctx: &mut Self::Context) -> Self::Result {
        self.bind_gated(msg.0, ctx)
    }
}

impl Handler<AfterBarrier<Unbind>> for Registry {
    type Result = Gated<Result<(), BrokerError>>;

    fn handle(&mut self, msg: AfterBarrier<Unbind>, ctx: &mut Self::Context) -> Self::Result {
        self.unbind_gated(msg.0, ctx)
    }
}

impl Handler<AfterBarrier<DeclareQueue>> for Registry {
    type Result = Gated<Result<QueueDeclared, BrokerError>>;

    fn handle(&mut self, msg: AfterBarrier<DeclareQueue>, ctx: &mut Self::Context) -> Self::Result {
        match self.gate_declare_queue(&msg.0) {
            Some(f) => Gated::Committed(f),
            None => Gated::Now(self.declare_queue_now(msg.0, ctx)),
        }
    }
}

impl Handler<AfterBarrier<DeleteQueue>> for Registry {
    type Result = Gated<Result<u64, BrokerError>>;

    fn handle(&mut self, msg: AfterBarrier<DeleteQueue>, ctx: &mut Self::Context) -> Self::Result {
        match self.gate_delete_queue(&msg.0) {
            Some(f) => Gated::Committed(f),
            None => Gated::Now(self.delete_queue_now(msg.0, ctx)),
        }
    }
}
