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
mod handlers;

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
    /// Durable exchanges restored from the store whose type this broker does not know
    /// (a custom type not registered this time): no actor runs for them, publishes and
    /// binds are refused naming the missing type, but they and their bindings stay in
    /// the store, so a later start with the type registered brings them back. A user's
    /// missing code must never erase durable state.
    dormant: HashMap<String, Dormant>,
}

/// A durable exchange kept without an actor (see [`Registry`]'s `dormant`).
struct Dormant {
    /// As stored.
    spec: ExchangeSpec,
    /// Why it is not running, for the refusals (e.g. "its type 'x-hash' is not
    /// registered in this broker").
    reason: String,
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
                dormant: HashMap::new(),
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
            .ok_or_else(|| match self.dormant.get(name) {
                Some(d) => self.dormant_error(d),
                None => self.not_found("exchange", name),
            })
    }

    /// The refusal of any use of a dormant exchange: it names why (the missing type).
    fn dormant_error(&self, d: &Dormant) -> BrokerError {
        BrokerError::new(
            ErrorCode::NotFound,
            format!(
                "exchange '{}' in vhost '{}' is dormant: {} (it and its bindings are kept; restart with the type registered)",
                d.spec.name, self.vhost, d.reason
            ),
        )
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
        if let Some(dormant) = self.dormant.get(&spec.name) {
            return if msg.passive {
                Ok(())
            } else {
                Err(self.dormant_error(dormant))
            };
        }
        if msg.passive {
            return Err(self.not_found("exchange", &spec.name));
        }
        if spec.name.starts_with("amq.") {
            return Err(BrokerError::access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                crate::error::clip(&spec.name)
            )));
        }
        if spec.name.is_empty() || !valid_name(&spec.name) {
            return Err(BrokerError::precondition(format!(
                "invalid exchange name '{}': 1-255 characters of letters, digits, '-', '_', '.', ':', '/', '@', '+'",
                crate::error::clip(&spec.name)
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
        if let Some(x) = self.exchanges.remove(name) {
            self.directory.remove(name);
            x.stop();
        } else if self.dormant.remove(name).is_none() {
            return Vec::new();
        }
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
        placement: Option<&ArbiterHandle>,
        ctx: &mut Context<Self>,
    ) -> Result<QueueHandle, BrokerError> {
        let config = QueueConfig::from_spec(spec)?;
        let incarnation = self.ctx.next_incarnation();
        let arbiter = placement
            .cloned()
            .unwrap_or_else(|| self.ctx.next_arbiter());
        let handle = QueueActor::start_on(
            &arbiter,
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

/// What a handler that removed bindings (and maybe changed the durable metadata) waits
/// for before it answers: the removals applied, then the snapshot `saved`, if any.
async fn removed_then_saved(
    removals: Vec<(ExchangeHandle, RemoveBinding)>,
    saved: Option<impl std::future::Future<Output = Result<(), BrokerError>>>,
) -> Result<(), BrokerError> {
    apply_removals(removals).await;
    match saved {
        Some(saved) => saved.await,
        None => Ok(()),
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
