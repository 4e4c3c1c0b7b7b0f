//! Exchanges: one actor per exchange, routing batches of publishes to queues.
//!
//! ```text
//!  Publish(batch) ──► ExchangeActor ──route──► Router (ExchangeType + bindings)
//!                          │                      └─ exchange-to-exchange: reads the bound
//!                          │                         exchange's Router, with a loop guard
//!                          ├──Enqueue(batch per queue), awaited ──► QueueActor ...
//!                          └──Publish(batch) to custom exchange actors, awaited
//!  reply: per message, how many queues it reached and whether one refused it
//!         (after every queue answered)
//! ```
//!
//! A message no binding routes goes to the exchange's `alternate-exchange`, if it has
//! one and it exists: the batch of such messages is forwarded there (looked up in the
//! vhost's [`ExchangeDirectory`], never by asking the registry), and the queues it
//! reaches count as routed. A batch published by a queue that dead-letters is checked
//! for dead-letter cycles: a message is not delivered to a queue it would cycle through.
//!
//! The router sits behind an `Arc<RwLock>` owned by the exchange actor, so that an
//! exchange bound to another can resolve the whole destination set in one pass and
//! deliver a message once to a queue reached by two paths, as RabbitMQ does. A custom
//! actor standing in as an exchange (see [`ExchangeHandle::from_actor`]) is reached by
//! forwarding the batch to it instead.
//!
//! Everything after the choice of destinations (following bound exchanges, grouping per
//! queue, dead-letter cycles, the alternate exchange, merging the queues' answers and
//! refusals) is [`Dispatch`], public so that custom exchange actors deliver exactly as
//! the built-in one does.

mod answer;
pub mod direct;
mod dispatch;
pub mod fanout;
pub mod headers;
pub mod kind;
mod router;
pub mod topic;

pub use answer::BatchAnswer;
pub use dispatch::Dispatch;
pub use kind::{Binding, DestinationId, ExchangeType, ExchangeTypeFactory, ExchangeTypes};
pub use router::{RouteScratch, Router};

use crate::broker::messages::{AddBinding, BindTarget, Publish, RemoveBinding, StopExchange};
use crate::broker::queue::QueueHandle;
use crate::broker::registry::ExchangeDirectory;
use crate::error::BrokerError;
use crate::message::FieldTable;
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The name and settings of an exchange, as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSpec {
    /// The exchange's name.
    pub name: String,
    /// The type name (`direct`, `fanout`, `topic`, `headers`, or a registered one).
    pub kind: String,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding (as a source) is removed.
    pub auto_delete: bool,
    /// Only reachable through exchange-to-exchange bindings, not by publishers.
    pub internal: bool,
    /// Declare arguments (`alternate-exchange` and type-specific ones).
    pub arguments: FieldTable,
}

impl ExchangeSpec {
    /// A durable-less, non-auto-delete exchange of `kind`.
    pub fn new(name: &str, kind: &str) -> Self {
        ExchangeSpec {
            name: name.to_string(),
            kind: kind.to_string(),
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        }
    }

    /// Names the first setting in which `self` differs from `other`, for
    /// PRECONDITION_FAILED on redeclare.
    pub fn difference(&self, other: &ExchangeSpec) -> Option<String> {
        if self.kind != other.kind {
            return Some(format!(
                "inequivalent arg 'type' for exchange '{}': received '{}' but current is '{}'",
                self.name, other.kind, self.kind
            ));
        }
        let flag = |what: &str, cur: bool, new: bool| {
            (cur != new).then(|| {
                format!(
                    "inequivalent arg '{what}' for exchange '{}': received '{new}' but current is '{cur}'",
                    self.name
                )
            })
        };
        flag("durable", self.durable, other.durable)
            .or_else(|| flag("auto_delete", self.auto_delete, other.auto_delete))
            .or_else(|| flag("internal", self.internal, other.internal))
            .or_else(|| {
                crate::broker::args::table_difference(&self.arguments, &other.arguments).map(|k| {
                    format!(
                        "inequivalent arg '{k}' for exchange '{}': the arguments differ",
                        self.name
                    )
                })
            })
    }
}

/// Where a binding leads.
#[derive(Clone)]
pub enum Destination {
    /// A queue.
    Queue(QueueHandle),
    /// Another exchange.
    Exchange(ExchangeHandle),
}

impl Destination {
    /// The target's kind and name.
    pub fn target(&self) -> BindTarget {
        match self {
            Destination::Queue(q) => BindTarget::Queue(q.name().to_string()),
            Destination::Exchange(x) => BindTarget::Exchange(x.name().to_string()),
        }
    }
}

/// A cheap, cloneable reference to an exchange: its spec and the recipients of the
/// messages every exchange actor handles.
#[derive(Clone)]
pub struct ExchangeHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    spec: ExchangeSpec,
    name: Arc<str>,
    publish: Recipient<Publish>,
    add_binding: Recipient<AddBinding>,
    remove_binding: Recipient<RemoveBinding>,
    stop: Recipient<StopExchange>,
    /// Present for built-in exchange actors: lets a bound exchange resolve through this
    /// one synchronously.
    router: Option<Arc<RwLock<Router>>>,
    /// Present for built-in exchange actors: where a policy's alternate exchange goes.
    set_alternate: Option<Recipient<SetAlternate>>,
    /// What the exchange actor routed (built-in actors only; zero for custom ones).
    counters: Arc<ExchangeCounters>,
}

/// Totals of one exchange, bumped by its actor once per batch (relaxed atomics, one
/// writer) and read by the management API when asked, to make rates.
#[derive(Debug, Default)]
pub struct ExchangeCounters {
    /// Messages published to the exchange (RabbitMQ's `publish_in`).
    publish_in: AtomicU64,
    /// Of those, messages routed to at least one queue or exchange (`publish_out`).
    publish_out: AtomicU64,
}

impl ExchangeCounters {
    /// Messages published to the exchange so far.
    pub fn publish_in(&self) -> u64 {
        self.publish_in.load(Ordering::Relaxed)
    }

    /// Messages it routed somewhere so far.
    pub fn publish_out(&self) -> u64 {
        self.publish_out.load(Ordering::Relaxed)
    }
}

/// The alternate exchange of a built-in exchange from now on (a policy changed it; the
/// exchange's own `alternate-exchange` argument, when it has one, is what the registry
/// sends, as the argument wins over a policy).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetAlternate(pub Option<String>);

impl ExchangeHandle {
    /// A handle to a user actor standing in as an exchange: it must handle the same
    /// messages as the built-in exchange actor ([`Publish`], [`AddBinding`],
    /// [`RemoveBinding`], [`StopExchange`]).
    pub fn from_actor<A>(spec: ExchangeSpec, addr: Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<Publish>
            + Handler<AddBinding>
            + Handler<RemoveBinding>
            + Handler<StopExchange>,
    {
        ExchangeHandle {
            inner: Arc::new(HandleInner {
                name: Arc::from(spec.name.as_str()),
                spec,
                publish: addr.clone().recipient(),
                add_binding: addr.clone().recipient(),
                remove_binding: addr.clone().recipient(),
                stop: addr.recipient(),
                router: None,
                set_alternate: None,
                counters: Arc::default(),
            }),
        }
    }

    fn builtin(
        spec: ExchangeSpec,
        addr: Addr<ExchangeActor>,
        router: Arc<RwLock<Router>>,
        counters: Arc<ExchangeCounters>,
    ) -> Self {
        let set_alternate = addr.clone().recipient();
        let mut h = Self::from_actor(spec, addr);
        let inner = Arc::get_mut(&mut h.inner).expect("fresh handle");
        inner.router = Some(router);
        inner.set_alternate = Some(set_alternate);
        inner.counters = counters;
        h
    }

    /// What the exchange routed so far (always zero for a custom exchange actor).
    pub fn counters(&self) -> &ExchangeCounters {
        &self.inner.counters
    }

    /// The exchange's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The name as a shared string.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// The exchange's settings.
    pub fn spec(&self) -> &ExchangeSpec {
        &self.inner.spec
    }

    /// Where publishes go.
    pub fn publish_recipient(&self) -> &Recipient<Publish> {
        &self.inner.publish
    }

    /// True while the exchange actor is alive.
    pub fn is_alive(&self) -> bool {
        self.inner.publish.connected()
    }

    /// Adds a binding (awaits the exchange's answer).
    pub async fn add_binding(&self, b: AddBinding) -> Result<(), BrokerError> {
        self.inner.add_binding.send(b).await?
    }

    /// Removes a binding; answers whether it existed.
    pub async fn remove_binding(&self, b: RemoveBinding) -> Result<bool, BrokerError> {
        Ok(self.inner.remove_binding.send(b).await?)
    }

    /// Sets the alternate exchange of a built-in exchange (a user's exchange actor
    /// has no such setting: ignored).
    pub fn set_alternate(&self, name: Option<String>) {
        if let Some(r) = &self.inner.set_alternate {
            r.do_send(SetAlternate(name));
        }
    }

    /// Stops the exchange actor.
    pub fn stop(&self) {
        self.inner.stop.do_send(StopExchange);
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const u8 as usize
    }

    /// Starts a built-in exchange actor on `arbiter`; its alternate exchange (if any)
    /// is looked up in `directory`, the exchanges of its virtual host.
    pub fn start_builtin(
        spec: ExchangeSpec,
        kind: Box<dyn ExchangeType>,
        arbiter: &actix::ArbiterHandle,
        directory: ExchangeDirectory,
    ) -> Self {
        let router = Arc::new(RwLock::new(Router::new(kind, &spec.name, &spec.kind)));
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let alternate = spec
            .arguments
            .get("alternate-exchange")
            .and_then(|v| v.as_str())
            .map(Arc::from);
        let r2 = router.clone();
        let counters = Arc::new(ExchangeCounters::default());
        let c2 = counters.clone();
        let addr = ExchangeActor::start_in_arbiter(arbiter, move |_| ExchangeActor {
            name,
            router: r2,
            alternate,
            alternate_handle: None,
            directory,
            counters: c2,
        });
        Self::builtin(spec, addr, router, counters)
    }
}

/// The built-in exchange actor: owns a [`Router`] and fans batches out to queues.
pub struct ExchangeActor {
    /// The exchange's name (loop guard for exchange-to-exchange routing).
    name: Arc<str>,
    /// Bindings and routing strategy, shared read-only with exchanges bound to this one.
    router: Arc<RwLock<Router>>,
    /// The `alternate-exchange` argument: where unroutable messages go.
    alternate: Option<Arc<str>>,
    /// The alternate exchange as last looked up (refreshed once its actor is gone).
    alternate_handle: Option<ExchangeHandle>,
    /// The virtual host's exchanges by name, to find the alternate exchange.
    directory: ExchangeDirectory,
    /// Totals for the management API, shared with the handle.
    counters: Arc<ExchangeCounters>,
}

impl ExchangeActor {
    /// The alternate exchange, if configured and declared; None as well when it was
    /// already passed through (`hops`), which breaks alternate-exchange loops.
    fn alternate(&mut self, hops: &[Arc<str>]) -> Option<ExchangeHandle> {
        let name = self.alternate.as_ref()?;
        if hops.iter().any(|h| h == name) {
            return None;
        }
        if let Some(h) = self.alternate_handle.as_ref().filter(|h| h.is_alive()) {
            return Some(h.clone());
        }
        self.alternate_handle = self.directory.get(name);
        self.alternate_handle.clone()
    }
}

impl Actor for ExchangeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Bounded by the publishers' windows, not by the mailbox (see docs/ARCHITECTURE.md).
        ctx.set_mailbox_capacity(crate::broker::MAILBOX_CAPACITY);
    }
}

impl Handler<Publish> for ExchangeActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, _ctx: &mut Self::Context) {
        let mut dispatch = Dispatch::from_arc(self.name.clone(), msg);
        {
            let router = self.router.read().expect("router lock poisoned");
            for i in 0..dispatch.len() {
                dispatch.resolve(i, |m, w| {
                    router.resolve_all(m, &mut w.hops, &mut w.queues, &mut w.actors, &mut w.scratch)
                });
            }
        }
        let alternate = if dispatch.has_unroutable() {
            self.alternate(dispatch.hops())
        } else {
            None
        };
        let c = &self.counters;
        c.publish_in
            .fetch_add(dispatch.len() as u64, Ordering::Relaxed);
        c.publish_out
            .fetch_add(dispatch.routed_len() as u64, Ordering::Relaxed);
        dispatch.send(alternate);
    }
}

impl Handler<AddBinding> for ExchangeActor {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: AddBinding, _ctx: &mut Self::Context) -> Self::Result {
        self.router.write().expect("router lock poisoned").add(
            msg.destination,
            msg.routing_key,
            msg.arguments,
        )
    }
}

impl Handler<RemoveBinding> for ExchangeActor {
    type Result = bool;

    fn handle(&mut self, msg: RemoveBinding, _ctx: &mut Self::Context) -> bool {
        self.router.write().expect("router lock poisoned").remove(
            &msg.target,
            &msg.routing_key,
            &msg.arguments,
        )
    }
}

impl Handler<SetAlternate> for ExchangeActor {
    type Result = ();

    fn handle(&mut self, msg: SetAlternate, _ctx: &mut Self::Context) {
        let name = msg.0.map(|n| Arc::from(n.as_str()));
        if name != self.alternate {
            self.alternate = name;
            self.alternate_handle = None;
        }
    }
}

impl Handler<StopExchange> for ExchangeActor {
    type Result = ();

    fn handle(&mut self, _msg: StopExchange, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
