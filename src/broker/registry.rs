//! The registry of one virtual host: names → exchange and queue actors, and the binding
//! table. Declares, deletes, binds and unbinds; spawns the entity actors on the worker
//! arbiters; deletes exclusive queues when their owner goes.
//!
//! Operations that must await another actor (a queue's delete conditions, an exchange's
//! binding validation) run as atomic responses: the registry handles them one at a time,
//! so no two of them interleave. The registry never awaits anything that could await
//! the registry.

use crate::broker::context::BrokerContext;
use crate::broker::exchange::{Destination, ExchangeHandle, ExchangeSpec};
use crate::broker::messages::*;
use crate::broker::queue::actor::{DeleteSelf, Purge, QueueInit, Touch};
use crate::broker::queue::{QueueActor, QueueHandle, QueueSpec};
use crate::broker::queue_args::QueueConfig;
use crate::error::{BrokerError, ErrorCode};
use crate::message::FieldTable;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

mod durable;

/// The exchanges of one virtual host by name, readable without a message to the
/// registry. Queues find their dead-letter exchange and exchanges their alternate
/// exchange here, synchronously: they never wait on the registry, which waits on them
/// (binding changes, queue deletes), so no wait can ever go round in a circle. Only the
/// registry writes it, in step with its own map.
#[derive(Clone, Default)]
pub struct ExchangeDirectory(Arc<RwLock<HashMap<String, ExchangeHandle>>>);

impl ExchangeDirectory {
    /// The live exchange `name`, if declared.
    pub fn get(&self, name: &str) -> Option<ExchangeHandle> {
        self.0
            .read()
            .expect("exchange directory poisoned")
            .get(name)
            .filter(|x| x.is_alive())
            .cloned()
    }

    fn insert(&self, name: &str, handle: ExchangeHandle) {
        self.0
            .write()
            .expect("exchange directory poisoned")
            .insert(name.to_string(), handle);
    }

    fn remove(&self, name: &str) {
        self.0
            .write()
            .expect("exchange directory poisoned")
            .remove(name);
    }

    fn clear(&self) {
        self.0.write().expect("exchange directory poisoned").clear();
    }
}

/// One binding as the registry records it.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRecord {
    /// The source exchange.
    pub exchange: String,
    /// The destination.
    pub target: BindTarget,
    /// The binding key.
    pub routing_key: String,
    /// The binding arguments.
    pub arguments: FieldTable,
}

impl BindingRecord {
    fn from_bind(b: &Bind) -> Self {
        BindingRecord {
            exchange: b.exchange.clone(),
            target: b.target.clone(),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        }
    }

    fn remove_message(&self) -> RemoveBinding {
        RemoveBinding {
            target: self.target.clone(),
            routing_key: self.routing_key.clone(),
            arguments: self.arguments.clone(),
        }
    }
}

/// A queue as the registry knows it.
#[derive(Clone)]
struct QueueEntry {
    handle: QueueHandle,
    spec: QueueSpec,
    /// The owning connection of an exclusive queue.
    owner: Option<OwnerId>,
    incarnation: u64,
}

/// The registry actor of one virtual host.
pub struct Registry {
    /// The virtual host's name (in every error message).
    vhost: Arc<str>,
    /// Arbiters, exchange types, memory gauge: what new actors need.
    ctx: Arc<BrokerContext>,
    /// Exchanges by name, the default exchange `""` and the `amq.*` ones included.
    exchanges: HashMap<String, ExchangeHandle>,
    /// The same exchanges, for queues and exchanges to read (dead-letter and alternate
    /// exchanges); written together with `exchanges`.
    directory: ExchangeDirectory,
    /// Queues by name.
    queues: HashMap<String, QueueEntry>,
    /// Every explicit binding (the default exchange's implicit ones are not listed).
    bindings: Vec<BindingRecord>,
}

/// Lists the queues of a virtual host: (name, spec).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<(String, QueueSpec)>")]
pub struct ListQueues;

/// Lists the exchanges of a virtual host.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<ExchangeSpec>")]
pub struct ListExchanges;

/// Lists the explicit bindings of a virtual host.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<BindingRecord>")]
pub struct ListBindings;

/// Stops every exchange and queue actor of the virtual host (broker shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopAll;

fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '+')
        })
}

impl Registry {
    /// Starts the registry of `vhost` with its predeclared exchanges.
    pub fn start(vhost: &str, ctx: Arc<BrokerContext>) -> Addr<Registry> {
        let vhost: Arc<str> = Arc::from(vhost);
        let arbiter = ctx.next_arbiter();
        Registry::start_in_arbiter(&arbiter, move |_| {
            let mut r = Registry {
                vhost,
                ctx,
                exchanges: HashMap::new(),
                directory: ExchangeDirectory::default(),
                queues: HashMap::new(),
                bindings: Vec::new(),
            };
            r.predeclare();
            r
        })
    }

    /// The default exchange and the `amq.*` exchanges RabbitMQ users expect.
    fn predeclare(&mut self) {
        for (name, kind) in [
            ("", "direct"),
            ("amq.direct", "direct"),
            ("amq.fanout", "fanout"),
            ("amq.topic", "topic"),
            ("amq.headers", "headers"),
            ("amq.match", "headers"),
        ] {
            let mut spec = ExchangeSpec::new(name, kind);
            spec.durable = true;
            let kind = self.ctx.exchange_types.create(kind).expect("built-in type");
            let h = ExchangeHandle::start_builtin(
                spec,
                kind,
                &self.ctx.next_arbiter(),
                self.directory.clone(),
            );
            self.directory.insert(name, h.clone());
            self.exchanges.insert(name.to_string(), h);
        }
    }

    fn not_found(&self, kind: &str, name: &str) -> BrokerError {
        BrokerError::not_found(kind, name, &self.vhost)
    }

    fn exchange(&self, name: &str) -> Result<&ExchangeHandle, BrokerError> {
        self.exchanges
            .get(name)
            .ok_or_else(|| self.not_found("exchange", name))
    }

    /// The queue `name`, refused with RESOURCE_LOCKED when exclusive to another owner.
    ///
    /// A queue whose actor has stopped is NOT_FOUND: it deleted itself (auto-delete) and
    /// its [`QueueGone`] notice is still on its way here. Answering its handle would make
    /// the caller's next request fail as CONNECTION_FORCED ("target actor has stopped").
    fn queue_for(&self, name: &str, owner: OwnerId) -> Result<&QueueEntry, BrokerError> {
        let q = self
            .queues
            .get(name)
            .filter(|q| q.handle.is_alive())
            .ok_or_else(|| self.not_found("queue", name))?;
        match q.owner {
            Some(o) if o != owner => Err(BrokerError::locked(format!(
                "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'",
                self.vhost
            ))),
            _ => Ok(q),
        }
    }

    fn declare_exchange(&mut self, msg: DeclareExchange) -> Result<(), BrokerError> {
        let spec = msg.spec;
        if let Some(existing) = self.exchanges.get(&spec.name) {
            if msg.passive {
                return Ok(());
            }
            if spec.name.is_empty() {
                return Err(BrokerError::access_refused(
                    "operation not permitted on the default exchange",
                ));
            }
            return match existing.spec().difference(&spec) {
                Some(diff) => Err(BrokerError::precondition(diff)),
                None => Ok(()),
            };
        }
        if msg.passive {
            return Err(self.not_found("exchange", &spec.name));
        }
        if spec.name.starts_with("amq.") {
            return Err(BrokerError::access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        if spec.name.is_empty() || !valid_name(&spec.name) {
            return Err(BrokerError::precondition(format!(
                "invalid exchange name '{}': 1-255 characters of letters, digits, '-', '_', '.', ':', '/', '@', '+'",
                spec.name
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
        let arbiter = self.ctx.next_arbiter();
        let handle = if let Some(factory) = self.ctx.exchange_actors.get(&spec.kind) {
            factory(spec.clone(), &arbiter).map_err(|e| {
                BrokerError::precondition(format!("exchange '{}' refused: {e}", spec.name))
            })?
        } else {
            let Some(kind) = self.ctx.exchange_types.create(&spec.kind) else {
                let mut known = self.ctx.exchange_types.names();
                known.extend(self.ctx.exchange_actors.keys().cloned());
                known.sort();
                return Err(BrokerError::precondition(format!(
                    "unknown exchange type '{}' for exchange '{}' (known: {})",
                    spec.kind,
                    spec.name,
                    known.join(", ")
                )));
            };
            kind.validate(&spec.arguments).map_err(|e| {
                BrokerError::precondition(format!(
                    "invalid arguments for exchange '{}': {e}",
                    spec.name
                ))
            })?;
            ExchangeHandle::start_builtin(spec.clone(), kind, &arbiter, self.directory.clone())
        };
        tracing::debug!(vhost = %self.vhost, exchange = %spec.name, kind = %spec.kind, "exchange declared");
        self.directory.insert(&spec.name, handle.clone());
        self.exchanges.insert(spec.name, handle);
        Ok(())
    }

    /// Removes bindings matching `pred` from the table and from their source exchanges;
    /// answers the futures to await and the names of sources left without bindings.
    fn unbind_where<F>(&mut self, pred: F) -> (Vec<(ExchangeHandle, RemoveBinding)>, Vec<String>)
    where
        F: Fn(&BindingRecord) -> bool,
    {
        let (gone, kept): (Vec<_>, Vec<_>) = self.bindings.drain(..).partition(|b| pred(b));
        self.bindings = kept;
        let mut removals = Vec::new();
        let mut sources = Vec::new();
        for b in gone {
            if let Some(x) = self.exchanges.get(&b.exchange) {
                removals.push((x.clone(), b.remove_message()));
            }
            if !sources.contains(&b.exchange) {
                sources.push(b.exchange.clone());
            }
        }
        (removals, sources)
    }

    /// Sources among `sources` that are auto-delete and now have no bindings.
    fn auto_delete_candidates(&self, sources: Vec<String>) -> Vec<String> {
        sources
            .into_iter()
            .filter(|s| {
                self.exchanges.get(s).is_some_and(|x| x.spec().auto_delete)
                    && !self.bindings.iter().any(|b| &b.exchange == s)
            })
            .collect()
    }

    /// Deletes an exchange now: its bindings in both directions, its actor. Answers the
    /// removals to send to other exchanges.
    fn remove_exchange(&mut self, name: &str) -> Vec<(ExchangeHandle, RemoveBinding)> {
        let Some(x) = self.exchanges.remove(name) else {
            return Vec::new();
        };
        self.directory.remove(name);
        x.stop();
        let (mut removals, mut sources) = self.unbind_where(|b| {
            b.exchange == name || matches!(&b.target, BindTarget::Exchange(t) if t == name)
        });
        removals.retain(|(h, _)| h.name() != name);
        sources.retain(|s| s != name);
        tracing::debug!(vhost = %self.vhost, exchange = %name, "exchange deleted");
        for s in self.auto_delete_candidates(sources) {
            removals.extend(self.remove_exchange(&s));
        }
        removals
    }

    /// Starts the actor of a new queue (`spec` validated and named), registers it, and
    /// hands a durable one its storage (with what start-up recovered for it).
    fn start_queue(
        &mut self,
        spec: &QueueSpec,
        owner: Option<OwnerId>,
        ctx: &mut Context<Self>,
    ) -> Result<QueueHandle, BrokerError> {
        let config = QueueConfig::from_spec(spec)?;
        let incarnation = self.ctx.next_incarnation();
        let handle = QueueActor::start_on(
            &self.ctx.next_arbiter(),
            QueueInit {
                name: Arc::from(spec.name.as_str()),
                vhost: self.vhost.clone(),
                incarnation,
                auto_delete: spec.auto_delete,
                gauge: self.ctx.gauge.clone(),
                registry: ctx.address().recipient(),
                flow_threshold: self.ctx.queue_flow_threshold,
                config,
                exchanges: self.directory.clone(),
            },
        );
        self.attach_storage(&handle, spec);
        self.queues.insert(
            spec.name.clone(),
            QueueEntry {
                handle: handle.clone(),
                spec: spec.clone(),
                owner,
                incarnation,
            },
        );
        Ok(handle)
    }

    /// Forgets the queue `name` if its actor has stopped (it deleted itself and its
    /// [`QueueGone`] notice has not been handled yet), so that a declare creates a new
    /// one; the late notice carries the old incarnation and is ignored. Answers the
    /// removals to send, which must reach the exchanges before the new queue's default
    /// binding does (they name the queue, not the actor).
    fn forget_if_stopped(&mut self, name: &str) -> Vec<(ExchangeHandle, RemoveBinding)> {
        match self.queues.get(name) {
            Some(q) if !q.handle.is_alive() => self.remove_queue(name),
            _ => Vec::new(),
        }
    }

    /// Forgets a queue: its entry, its bindings (default exchange included). Answers the
    /// removals to send.
    fn remove_queue(&mut self, name: &str) -> Vec<(ExchangeHandle, RemoveBinding)> {
        if self.queues.remove(name).is_none() {
            return Vec::new();
        }
        let (mut removals, sources) =
            self.unbind_where(|b| matches!(&b.target, BindTarget::Queue(t) if t == name));
        if let Some(default) = self.exchanges.get("") {
            removals.push((
                default.clone(),
                RemoveBinding {
                    target: BindTarget::Queue(name.to_string()),
                    routing_key: name.to_string(),
                    arguments: FieldTable::new(),
                },
            ));
        }
        for s in self.auto_delete_candidates(sources) {
            removals.extend(self.remove_exchange(&s));
        }
        tracing::debug!(vhost = %self.vhost, queue = %name, "queue deleted");
        removals
    }
}

async fn apply_removals(removals: Vec<(ExchangeHandle, RemoveBinding)>) {
    for (x, r) in removals {
        let _ = x.remove_binding(r).await;
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::broker::MAILBOX_CAPACITY);
        // The durable entities found at start-up, before any request is handled.
        self.restore(ctx);
    }
}

impl Handler<DeclareExchange> for Registry {
    type Result = ResponseFuture<Result<(), BrokerError>>;

    fn handle(&mut self, msg: DeclareExchange, _ctx: &mut Self::Context) -> Self::Result {
        let created = msg.spec.durable && !self.exchanges.contains_key(&msg.spec.name);
        let result = self.declare_exchange(msg);
        // A new durable exchange is answered once it is saved.
        let saved = (created && result.is_ok()).then(|| self.persist());
        Box::pin(async move {
            result?;
            match saved {
                Some(saved) => saved.await,
                None => Ok(()),
            }
        })
    }
}

impl Handler<DeleteExchange> for Registry {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    fn handle(&mut self, msg: DeleteExchange, _ctx: &mut Self::Context) -> Self::Result {
        let check = || -> Result<(), BrokerError> {
            if msg.name.is_empty() || msg.name.starts_with("amq.") {
                return Err(BrokerError::access_refused(format!(
                    "operation not permitted on exchange '{}'",
                    msg.name
                )));
            }
            // Deleting an exchange that does not exist succeeds, as in RabbitMQ.
            if msg.if_unused && self.bindings.iter().any(|b| b.exchange == msg.name) {
                return Err(BrokerError::precondition(format!(
                    "exchange '{}' in vhost '{}' in use: it has bindings",
                    msg.name, self.vhost
                )));
            }
            Ok(())
        };
        let exchanges_before = self.exchanges.len();
        let removals = match check() {
            Ok(()) => self.remove_exchange(&msg.name),
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        let saved = (self.exchanges.len() != exchanges_before).then(|| self.persist());
        AtomicResponse::new(Box::pin(
            async move {
                apply_removals(removals).await;
                match saved {
                    Some(saved) => saved.await,
                    None => Ok(()),
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<DeclareQueue> for Registry {
    type Result = AtomicResponse<Self, Result<QueueDeclared, BrokerError>>;

    fn handle(&mut self, msg: DeclareQueue, ctx: &mut Self::Context) -> Self::Result {
        type Declared = (QueueHandle, Option<(ExchangeHandle, AddBinding)>);
        let stale = self.forget_if_stopped(&msg.spec.name);
        let result = (|| -> Result<Declared, BrokerError> {
            let mut spec = msg.spec;
            if let Some(existing) = self.queues.get(&spec.name) {
                let existing = existing.clone();
                self.queue_for(&spec.name, msg.owner)?;
                if !msg.passive {
                    if let Some(diff) = existing.spec.difference(&spec) {
                        return Err(BrokerError::precondition(diff));
                    }
                }
                if !msg.passive {
                    // A redeclare renews an x-expires lease (a passive one only looks).
                    // do_send: nothing to wait for.
                    existing.handle.addr().do_send(Touch);
                }
                return Ok((existing.handle, None));
            }
            if msg.passive {
                return Err(self.not_found("queue", &spec.name));
            }
            if spec.name.is_empty() {
                spec.name = format!("amq.gen-{}", self.ctx.unique_suffix());
            } else if spec.name.starts_with("amq.") {
                return Err(BrokerError::access_refused(format!(
                    "queue name '{}' contains reserved prefix 'amq.*'",
                    spec.name
                )));
            } else if !valid_name(&spec.name) {
                return Err(BrokerError::precondition(format!(
                    "invalid queue name '{}': at most 255 characters of letters, digits, '-', '_', '.', ':', '/', '@', '+'",
                    spec.name
                )));
            }
            let owner = spec.exclusive.then_some(msg.owner);
            let handle = self.start_queue(&spec, owner, ctx)?;
            // Every queue is bound to the default exchange by its name.
            let default = self.exchanges.get("").expect("default exchange").clone();
            tracing::debug!(vhost = %self.vhost, queue = %spec.name, "queue declared");
            let add = AddBinding {
                destination: Destination::Queue(handle.clone()),
                routing_key: spec.name.clone(),
                arguments: FieldTable::new(),
            };
            // Awaited atomically below: the binding is in place before the declare is
            // answered.
            Ok((handle, Some((default, add))))
        })();
        let vhost = self.vhost.clone();
        // A new durable queue (or a stale one forgotten) is answered once saved.
        let changed =
            !stale.is_empty() || matches!(&result, Ok((h, Some(_))) if self.stores_queue(h.name()));
        let saved = changed.then(|| self.persist());
        AtomicResponse::new(Box::pin(
            async move {
                apply_removals(stale).await;
                let (handle, default_bind) = result?;
                if let Some((default, add)) = default_bind {
                    default.add_binding(add).await?;
                }
                if let Some(saved) = saved {
                    saved.await?;
                }
                // Closed: the queue deleted itself between the registry's look and now.
                let stats = handle
                    .addr()
                    .send(GetStats)
                    .await
                    .map_err(|_| BrokerError::not_found("queue", handle.name(), &vhost))?;
                Ok(QueueDeclared {
                    name: handle.name().to_string(),
                    messages: stats.ready,
                    consumers: stats.consumers,
                })
            }
            .into_actor(self),
        ))
    }
}

impl Handler<DeleteQueue> for Registry {
    type Result = AtomicResponse<Self, Result<u64, BrokerError>>;

    fn handle(&mut self, msg: DeleteQueue, _ctx: &mut Self::Context) -> Self::Result {
        let handle = match self.queue_for(&msg.name, msg.owner) {
            Ok(q) => q.handle.clone(),
            // Deleting a queue that does not exist succeeds, as in RabbitMQ.
            Err(e) if e.code() == ErrorCode::NotFound => {
                return AtomicResponse::new(Box::pin(fut::ready(Ok(0))))
            }
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        let name = msg.name.clone();
        AtomicResponse::new(Box::pin(
            async move {
                handle
                    .addr()
                    .send(DeleteSelf {
                        if_unused: msg.if_unused,
                        if_empty: msg.if_empty,
                    })
                    .await?
            }
            .into_actor(self)
            .then(move |res, act: &mut Registry, _ctx| {
                let stored = act.stores_queue(&name);
                let exchanges_before = act.exchanges.len();
                let removals = if res.is_ok() {
                    act.remove_queue(&name)
                } else {
                    Vec::new()
                };
                let changed = stored || act.exchanges.len() != exchanges_before;
                let saved = (res.is_ok() && changed).then(|| act.persist());
                async move {
                    apply_removals(removals).await;
                    if let Some(saved) = saved {
                        saved.await?;
                    }
                    res
                }
                .into_actor(act)
            }),
        ))
    }
}

impl Handler<PurgeQueue> for Registry {
    type Result = ResponseFuture<Result<u64, BrokerError>>;

    fn handle(&mut self, msg: PurgeQueue, _ctx: &mut Self::Context) -> Self::Result {
        let handle = self
            .queue_for(&msg.name, msg.owner)
            .map(|q| q.handle.clone());
        Box::pin(async move { handle?.addr().send(Purge).await? })
    }
}

impl Handler<Bind> for Registry {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    fn handle(&mut self, msg: Bind, _ctx: &mut Self::Context) -> Self::Result {
        let prepared = (|| -> Result<(ExchangeHandle, Destination), BrokerError> {
            if msg.exchange.is_empty() {
                return Err(BrokerError::access_refused(
                    "operation not permitted on the default exchange",
                ));
            }
            let source = self.exchange(&msg.exchange)?.clone();
            let destination = match &msg.target {
                BindTarget::Queue(q) => {
                    Destination::Queue(self.queue_for(q, msg.owner)?.handle.clone())
                }
                BindTarget::Exchange(x) => {
                    if x.is_empty() {
                        return Err(BrokerError::access_refused(
                            "operation not permitted on the default exchange",
                        ));
                    }
                    Destination::Exchange(self.exchange(x)?.clone())
                }
            };
            Ok((source, destination))
        })();
        let record = BindingRecord::from_bind(&msg);
        AtomicResponse::new(Box::pin(
            async move {
                let (source, destination) = prepared?;
                source
                    .add_binding(AddBinding {
                        destination,
                        routing_key: msg.routing_key,
                        arguments: msg.arguments,
                    })
                    .await
            }
            .into_actor(self)
            .then(move |res, act: &mut Registry, _ctx| {
                let mut saved = None;
                if res.is_ok() && !act.bindings.contains(&record) {
                    let durable = act.binding_is_durable(&record);
                    act.bindings.push(record);
                    saved = durable.then(|| act.persist());
                }
                async move {
                    res?;
                    match saved {
                        Some(saved) => saved.await,
                        None => Ok(()),
                    }
                }
                .into_actor(act)
            }),
        ))
    }
}

impl Handler<Unbind> for Registry {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    fn handle(&mut self, msg: Unbind, _ctx: &mut Self::Context) -> Self::Result {
        let b = msg.binding;
        let checked = (|| -> Result<(), BrokerError> {
            if b.exchange.is_empty() {
                return Err(BrokerError::access_refused(
                    "operation not permitted on the default exchange",
                ));
            }
            self.exchange(&b.exchange)?;
            match &b.target {
                BindTarget::Queue(q) => {
                    self.queue_for(q, b.owner)?;
                }
                BindTarget::Exchange(x) => {
                    if x.is_empty() {
                        return Err(BrokerError::access_refused(
                            "operation not permitted on the default exchange",
                        ));
                    }
                    self.exchange(x)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = checked {
            return AtomicResponse::new(Box::pin(fut::ready(Err(e))));
        }
        let record = BindingRecord::from_bind(&b);
        let durable = self.binding_is_durable(&record);
        let exchanges_before = self.exchanges.len();
        let (mut removals, sources) = self.unbind_where(|r| r == &record);
        for s in self.auto_delete_candidates(sources) {
            removals.extend(self.remove_exchange(&s));
        }
        let changed = (durable && !removals.is_empty()) || self.exchanges.len() != exchanges_before;
        let saved = changed.then(|| self.persist());
        AtomicResponse::new(Box::pin(
            async move {
                apply_removals(removals).await;
                match saved {
                    Some(saved) => saved.await,
                    None => Ok(()),
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<LookupExchange> for Registry {
    type Result = Result<ExchangeHandle, BrokerError>;

    fn handle(&mut self, msg: LookupExchange, _ctx: &mut Self::Context) -> Self::Result {
        self.exchange(&msg.name).cloned()
    }
}

impl Handler<LookupQueue> for Registry {
    type Result = Result<QueueHandle, BrokerError>;

    fn handle(&mut self, msg: LookupQueue, _ctx: &mut Self::Context) -> Self::Result {
        self.queue_for(&msg.name, msg.owner)
            .map(|q| q.handle.clone())
    }
}

impl Handler<OwnerGone> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: OwnerGone, _ctx: &mut Self::Context) -> Self::Result {
        let owned: Vec<(String, QueueHandle)> = self
            .queues
            .iter()
            .filter(|(_, q)| q.owner == Some(msg.0))
            .map(|(n, q)| (n.clone(), q.handle.clone()))
            .collect();
        let mut removals = Vec::new();
        let exchanges_before = self.exchanges.len();
        for (name, handle) in &owned {
            handle.addr().do_send(DeleteSelf {
                if_unused: false,
                if_empty: false,
            });
            removals.extend(self.remove_queue(name));
        }
        // Exclusive queues are never stored, but an auto-delete exchange may go with them.
        let saved = (self.exchanges.len() != exchanges_before).then(|| self.persist());
        AtomicResponse::new(Box::pin(
            async move {
                apply_removals(removals).await;
                if let Some(saved) = saved {
                    let _ = saved.await;
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<QueueGone> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: QueueGone, _ctx: &mut Self::Context) -> Self::Result {
        let current = self
            .queues
            .get(&*msg.name)
            .is_some_and(|q| q.incarnation == msg.incarnation);
        let stored = current && self.stores_queue(&msg.name);
        let exchanges_before = self.exchanges.len();
        let removals = if current {
            self.remove_queue(&msg.name)
        } else {
            Vec::new()
        };
        let saved = (stored || self.exchanges.len() != exchanges_before).then(|| self.persist());
        AtomicResponse::new(Box::pin(
            async move {
                apply_removals(removals).await;
                if let Some(saved) = saved {
                    let _ = saved.await;
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<ListQueues> for Registry {
    type Result = MessageResult<ListQueues>;

    fn handle(&mut self, _msg: ListQueues, _ctx: &mut Self::Context) -> Self::Result {
        let mut v: Vec<(String, QueueSpec)> = self
            .queues
            .iter()
            .map(|(n, q)| (n.clone(), q.spec.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        MessageResult(v)
    }
}

impl Handler<ListExchanges> for Registry {
    type Result = MessageResult<ListExchanges>;

    fn handle(&mut self, _msg: ListExchanges, _ctx: &mut Self::Context) -> Self::Result {
        let mut v: Vec<ExchangeSpec> = self.exchanges.values().map(|x| x.spec().clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        MessageResult(v)
    }
}

impl Handler<ListBindings> for Registry {
    type Result = MessageResult<ListBindings>;

    fn handle(&mut self, _msg: ListBindings, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.bindings.clone())
    }
}

impl Handler<StopAll> for Registry {
    type Result = ();

    fn handle(&mut self, _msg: StopAll, ctx: &mut Self::Context) {
        for q in self.queues.values() {
            q.handle
                .addr()
                .do_send(crate::broker::queue::actor::StopQueue);
        }
        for x in self.exchanges.values() {
            x.stop();
        }
        self.queues.clear();
        self.exchanges.clear();
        self.directory.clear();
        ctx.stop();
    }
}
