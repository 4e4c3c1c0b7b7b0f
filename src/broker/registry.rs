//! The registry of one virtual host: its definitions ([`VhostDefinitions`]: exchanges,
//! queues, bindings, changed only by commands) and the actors that run them. Declares,
//! deletes, binds and unbinds are applied as commands; the registry then starts or
//! stops actors and tells exchanges about removed bindings from what the command
//! answered ([`Applied`]); it deletes exclusive queues when their owner goes.
//!
//! Operations that must await another actor (a queue's delete conditions, an exchange's
//! binding validation) run as atomic responses: the registry handles them one at a time,
//! so no two of them interleave. The registry never awaits anything that could await
//! the registry.

use crate::broker::context::BrokerContext;
use crate::broker::exchange::{Destination, ExchangeHandle, ExchangeSpec};
use crate::broker::messages::*;
use crate::broker::queue::actor::{DeleteSelf, GetDeclareCounts, Purge, QueueInit, Touch};
use crate::broker::queue::{QueueActor, QueueHandle, QueueSpec};
use crate::broker::queue_args::QueueConfig;
use crate::definitions::{Applied, Command, VhostDefinitions};
use crate::error::{BrokerError, ErrorCode};
use crate::message::FieldTable;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

mod barrier;
mod durable;
mod handlers;
mod policies;
mod replicated;
mod unused;

pub use policies::{ClearPolicy, ListPolicies, PutPolicy, SnapshotDefinitions};
pub use replicated::Local;

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

/// The actor of a defined queue.
#[derive(Clone)]
struct QueueEntry {
    handle: QueueHandle,
    /// The owning connection of an exclusive queue.
    owner: Option<OwnerId>,
    incarnation: u64,
}

/// The exchange-side messages a change needs: removed bindings, told to their source
/// exchanges (which keep their own routing tables).
type Removals = Vec<(ExchangeHandle, RemoveBinding)>;

/// The registry actor of one virtual host.
pub struct Registry {
    /// The virtual host's name (in every error message).
    vhost: Arc<str>,
    /// Arbiters, exchange types, memory gauge: what new actors need.
    ctx: Arc<BrokerContext>,
    /// What the virtual host is: every exchange, queue and binding, as commands left them.
    defs: VhostDefinitions,
    /// The running exchange actors by name, the default exchange `""` and the `amq.*`
    /// ones included. A defined exchange missing here is dormant (see `dormant`).
    exchanges: HashMap<String, ExchangeHandle>,
    /// The same exchanges, for queues and exchanges to read (dead-letter and alternate
    /// exchanges); written together with `exchanges`.
    directory: ExchangeDirectory,
    /// The running queue actors by name.
    queues: HashMap<String, QueueEntry>,
    /// Why each dormant exchange has no actor: durable exchanges restored from the store
    /// whose type this broker does not know (a custom type not registered this time),
    /// or whose actor could not start. Publishes and binds are refused naming the
    /// reason; they and their bindings stay defined and stored, so a later start with
    /// the type registered brings them back. A user's missing code never erases
    /// durable state.
    dormant: HashMap<String, String>,
    /// Set when the virtual host is being deleted or the broker stops: from then on
    /// nothing new is declared (its actors would outlive the registry).
    closing: bool,
}

/// Lists the queues of a virtual host: (name, spec).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<(String, QueueSpec)>")]
pub struct ListQueues;

/// Every running queue of a virtual host with its actor, for statistics (management
/// API, metrics): read-only, so no exclusivity check; the caller asks each queue for
/// its counts ([`GetStats`]) when it is asked.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<(QueueSpec, QueueHandle)>")]
pub struct ListQueueHandles;

/// Every running exchange of a virtual host (handles), for statistics: read-only.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<ExchangeHandle>")]
pub struct ListExchangeHandles;

/// Lists the exchanges of a virtual host.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<ExchangeSpec>")]
pub struct ListExchanges;

/// Lists the explicit bindings of a virtual host.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<BindingRecord>")]
pub struct ListBindings;

/// Deletes everything in the virtual host (the virtual host is being deleted): every
/// queue deletes itself (its stored messages too), every exchange stops, then the
/// registry; answered once the queues have.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct DeleteAll;

/// Stops every exchange and queue actor of the virtual host (broker shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopAll;

impl Registry {
    /// Starts the registry of `vhost` with its predeclared exchanges.
    pub fn start(vhost: &str, ctx: Arc<BrokerContext>) -> Addr<Registry> {
        let vhost: Arc<str> = Arc::from(vhost);
        let arbiter = ctx.next_arbiter();
        Registry::start_in_arbiter(&arbiter, move |_| {
            let mut r = Registry {
                defs: VhostDefinitions::new(&vhost),
                vhost,
                ctx,
                exchanges: HashMap::new(),
                directory: ExchangeDirectory::default(),
                queues: HashMap::new(),
                dormant: HashMap::new(),
                closing: false,
            };
            r.predeclare();
            r
        })
    }

    /// Starts the actors of the predeclared exchanges (defined from the start).
    fn predeclare(&mut self) {
        let predeclared: Vec<ExchangeSpec> = self.defs.exchanges().cloned().collect();
        for spec in predeclared {
            let kind = self
                .ctx
                .exchange_types
                .create(&spec.kind)
                .expect("built-in type");
            let name = spec.name.clone();
            let h = ExchangeHandle::start_builtin(
                spec,
                kind,
                &self.ctx.next_arbiter(),
                self.directory.clone(),
            );
            self.directory.insert(&name, h.clone());
            self.exchanges.insert(name, h);
        }
    }

    /// The refusal of a change while the virtual host closes.
    fn closing_error(&self) -> BrokerError {
        BrokerError::new(
            ErrorCode::ConnectionForced,
            format!("vhost '{}' is closing", self.vhost),
        )
    }

    fn not_found(&self, kind: &str, name: &str) -> BrokerError {
        BrokerError::not_found(kind, name, &self.vhost)
    }

    /// The running exchange `name`: NOT_FOUND when undefined, and when dormant an error
    /// that says why.
    fn exchange(&self, name: &str) -> Result<&ExchangeHandle, BrokerError> {
        self.exchanges
            .get(name)
            .ok_or_else(|| match self.dormant.get(name) {
                Some(reason) => self.dormant_error(name, reason),
                None => self.not_found("exchange", name),
            })
    }

    /// The refusal of any use of a dormant exchange: it names why (the missing type).
    fn dormant_error(&self, name: &str, reason: &str) -> BrokerError {
        BrokerError::new(
            ErrorCode::NotFound,
            format!(
                "exchange '{name}' in vhost '{}' is dormant: {reason} (it and its bindings are kept; restart with the type registered)",
                self.vhost
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
            Some(o) if o != owner => Err(self.locked(name)),
            _ => Ok(q),
        }
    }

    /// RESOURCE_LOCKED on queue `name`, in RabbitMQ's words (3.8 on), which name both
    /// causes: another connection's exclusive queue, or a redeclare whose `exclusive`
    /// differs from the queue's.
    pub(super) fn locked(&self, name: &str) -> BrokerError {
        BrokerError::locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            self.vhost
        ))
    }

    /// Declares an exchange: answers whether a durable definition changed (the snapshot
    /// must be saved before the declare is answered).
    fn declare_exchange(&mut self, msg: DeclareExchange) -> Result<bool, BrokerError> {
        let spec = msg.spec;
        if msg.passive {
            // A dormant exchange exists: a passive declare only asks that.
            return match self.defs.exchange(&spec.name) {
                Some(_) => Ok(false),
                None => Err(self.not_found("exchange", &spec.name)),
            };
        }
        let cmd = Command::DeclareExchange(spec.clone());
        self.defs.check(&cmd)?;
        if self.defs.exchange(&spec.name).is_some() {
            // Equivalent to the one defined (check passed): nothing to start.
            return match self.dormant.get(&spec.name) {
                Some(reason) => Err(self.dormant_error(&spec.name, reason)),
                None => Ok(false),
            };
        }
        if self.closing {
            return Err(self.closing_error());
        }
        if spec.durable {
            self.ctx.admit_durable("exchange", &spec.name)?;
        }
        let handle = self.start_exchange(&spec)?;
        self.apply_exchange_policy(&spec, &handle);
        let applied = self.defs.apply(cmd).expect("checked above");
        tracing::debug!(vhost = %self.vhost, exchange = %spec.name, kind = %spec.kind, "exchange declared");
        self.directory.insert(&spec.name, handle.clone());
        self.exchanges.insert(spec.name, handle);
        Ok(applied.durable_changed)
    }

    /// Starts the actor of a new exchange: its type must be registered (a type or a
    /// whole actor) and accept the arguments.
    fn start_exchange(&self, spec: &ExchangeSpec) -> Result<ExchangeHandle, BrokerError> {
        let arbiter = self.ctx.next_arbiter();
        // A user's factory may panic: that fails this declare, never the registry.
        let panicked = |what: &str| {
            tracing::error!(vhost = %self.vhost, exchange = %spec.name, kind = %spec.kind, "exchange type panicked in {what}");
            BrokerError::internal(format!(
                "exchange '{}' of type '{}' failed: its {what} panicked",
                spec.name, spec.kind
            ))
        };
        if let Some(factory) = self.ctx.exchange_actors.get(&spec.kind) {
            let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                factory(spec.clone(), &arbiter)
            }));
            return match started {
                Ok(started) => started.map_err(|e| {
                    BrokerError::precondition(format!("exchange '{}' refused: {e}", spec.name))
                }),
                Err(_) => Err(panicked("actor factory")),
            };
        }
        let created = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.ctx.exchange_types.create(&spec.kind)
        }))
        .map_err(|_| panicked("factory"))?;
        let Some(kind) = created else {
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
        // A user type's panic must not take the registry down with it.
        let validated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kind.validate(&spec.arguments)
        }));
        match validated {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(BrokerError::precondition(format!(
                    "invalid arguments for exchange '{}': {e}",
                    spec.name
                )))
            }
            Err(_) => {
                tracing::error!(vhost = %self.vhost, exchange = %spec.name, kind = %spec.kind, "exchange type panicked in validate");
                return Err(BrokerError::internal(format!(
                    "exchange '{}' of type '{}' failed: its validate panicked",
                    spec.name, spec.kind
                )));
            }
        }
        Ok(ExchangeHandle::start_builtin(
            spec.clone(),
            kind,
            &arbiter,
            self.directory.clone(),
        ))
    }

    /// Applies a checked change's effects to the actors: removed exchanges stop,
    /// removed queues are forgotten (their actors are deleting themselves or were told
    /// to), and the surviving source exchanges of removed bindings are told (the
    /// answered removals, to send).
    fn enact(&mut self, applied: &Applied) -> Removals {
        for x in &applied.removed_exchanges {
            if let Some(h) = self.exchanges.remove(&x.name) {
                self.directory.remove(&x.name);
                h.stop();
            }
            self.dormant.remove(&x.name);
            tracing::debug!(vhost = %self.vhost, exchange = %x.name, "exchange deleted");
        }
        let mut removals: Removals = applied
            .removed_bindings
            .iter()
            .filter_map(|b| {
                let source = self.exchanges.get(&b.exchange)?;
                Some((source.clone(), b.remove_message()))
            })
            .collect();
        for q in &applied.removed_queues {
            self.queues.remove(&q.name);
            if let Some(default) = self.exchanges.get("") {
                // Every queue is bound to the default exchange by its name.
                removals.push((
                    default.clone(),
                    RemoveBinding {
                        target: BindTarget::Queue(q.name.clone()),
                        routing_key: q.name.clone(),
                        arguments: FieldTable::new(),
                    },
                ));
            }
            tracing::debug!(vhost = %self.vhost, queue = %q.name, "queue deleted");
        }
        removals
    }

    /// Applies `cmd` (checked by the caller or known to pass) and its effects: the
    /// removals to send, and whether a durable definition changed.
    fn apply(&mut self, cmd: Command) -> Result<(Removals, bool), BrokerError> {
        let applied = self.defs.apply(cmd)?;
        Ok((self.enact(&applied), applied.durable_changed))
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
        // The declare arguments are checked as given; the queue runs with them merged
        // with the policies that apply to it.
        QueueConfig::from_spec(spec)?;
        // In a cluster a queue's messages live on its home node; elsewhere it is a
        // stand-in that forwards publishes there and refuses consumers, naming it.
        let remote = (self.ctx.cluster.as_ref())
            .filter(|_| !spec.exclusive)
            .and_then(|c| c.classic_home(&self.vhost, &spec.name));
        // A quorum queue in a cluster: its messages are its Raft group's.
        let replica = (self.ctx.cluster.as_ref())
            .filter(|_| crate::broker::queue::quorum::is_quorum(spec))
            .and_then(|c| c.quorum_group(&self.vhost, &spec.name));
        let stream = (remote.is_none() && crate::broker::queue_args::is_stream(spec))
            .then(|| crate::broker::stream::open(&self.ctx.durability, &self.vhost, spec))
            .transpose()?;
        // A stream acts on its own arguments; the classic body stays inert (a
        // replicated quorum queue's actor keeps its dead-letter target).
        let config = match (&stream, &remote) {
            (None, None) if replica.is_none() => self.queue_config(spec),
            (None, None) => self.queue_config(spec).dead_letter_only(),
            _ => QueueConfig::default(),
        };
        let is_stream = stream.is_some();
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
                auto_delete: spec.auto_delete && remote.is_none(),
                gauge: self.ctx.gauge.clone(),
                registry: ctx.address().recipient(),
                unused: ctx.address().recipient(),
                flow_threshold: self.ctx.queue_flow_threshold,
                config,
                exchanges: self.directory.clone(),
                stream,
                remote: remote.clone(),
                remote_stream: crate::broker::queue_args::is_stream(spec),
                replica: replica.clone(),
            },
        );
        if !is_stream && remote.is_none() && replica.is_none() {
            self.attach_storage(&handle, spec);
        }
        self.queues.insert(
            spec.name.clone(),
            QueueEntry {
                handle: handle.clone(),
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
    /// binding does (they name the queue, not the actor), and whether a durable
    /// definition changed.
    fn forget_if_stopped(&mut self, name: &str) -> (Removals, bool) {
        match self.queues.get(name) {
            Some(q) if !q.handle.is_alive() => self.remove_queue(name),
            _ => (Vec::new(), false),
        }
    }

    /// Deletes the definition of queue `name` (its bindings, and auto-delete exchanges
    /// left without any). Answers the removals to send, and whether a durable definition
    /// changed.
    fn remove_queue(&mut self, name: &str) -> (Removals, bool) {
        self.apply(Command::DeleteQueue {
            name: name.to_string(),
        })
        .expect("deleting a queue always passes its checks")
    }
}

async fn apply_removals(removals: Removals) {
    for (x, r) in removals {
        let _ = x.remove_binding(r).await;
    }
}

/// What a handler that removed bindings (and maybe changed the durable metadata) waits
/// for before it answers: the removals applied, then the snapshot `saved`, if any.
async fn removed_then_saved(
    removals: Removals,
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
