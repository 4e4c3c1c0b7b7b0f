//! The broker core: registries, exchanges and queues as actix actors.
//!
//! ```text
//!                 Declare / Bind / Delete
//!   front end ──────────────────────────────► Registry (one per vhost: names → actors)
//!   (connection                                   │ spawns on worker arbiters
//!    or Session)                                  ▼
//!       │  Publish(batch) + reply     ┌──────────────────┐  Enqueue(batch), awaited
//!       ├────────────────────────────►│ Exchange actor   ├──────────────────────────┐
//!       │  ◄── routed counts ─────────│ Router + type    │                          ▼
//!       │      (= confirm)            └──────────────────┘              ┌─────────────────┐
//!       │                                                              │ Queue actor     │
//!       │  ◄──────────── Deliver(batch, Credit) ───────────────────────┤ ready / unacked │
//!       │  ─── Settle (ack / nack / reject), ReturnCredit (on drop) ──►│ consumers       │
//!                                                                      └─────────────────┘
//! ```
//!
//! Flow control, hop by hop (docs/ARCHITECTURE.md, "Backpressure"): a publisher has at most
//! `publish_window` batches in flight and reserves their bytes against the memory
//! watermark before sending; the exchange answers only when every queue has enqueued;
//! a queue delivers only within a consumer's prefetch and transport credit. Nothing
//! relies on mailbox capacity.
//!
//! The broker runs its actix `System` on threads of its own, so [`BrokerHandle`] works
//! from any runtime (plain `#[tokio::main]` included).

/// Mailbox capacity of every broker actor: large, because windows and credit (not the
/// mailbox) bound the traffic, and actix counts capacity per sender anyway (docs/ARCHITECTURE.md).
/// Not `usize::MAX`: actix subtracts from its own maximum and would overflow.
pub const MAILBOX_CAPACITY: usize = 1 << 24;

pub mod args;
pub mod context;
pub mod durability;
pub mod exchange;
pub mod memory;
pub mod messages;
pub mod queue;
pub mod queue_args;
pub mod registry;
mod runtime_definitions;
pub mod stream;
pub mod superstream;

use crate::definitions::{BrokerDefinitions, SharedDefinitions};
use crate::embed::Session;
use crate::error::BrokerError;
use crate::settings::BrokerSettings;
use crate::storage::StorageOptions;
use actix::prelude::*;
use context::{BrokerContext, ExchangeActorFactory};
use durability::Durability;
use exchange::{ExchangeHandle, ExchangeSpec, ExchangeType, ExchangeTypes};
use memory::MemoryGauge;
use registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Starts brokers.
///
/// ```
/// use actormq::{Broker, Message, QueueOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
/// let broker = Broker::builder().workers(1).start()?;
/// let session = broker.session();
/// session.declare_queue("jobs", &QueueOptions::new()).await?;
/// let confirm = session.publish(Message::new("", "jobs", "hello")).await?;
/// assert_eq!(confirm.await?.queues, 1);
/// let got = session.get("jobs", true).await?.expect("a message");
/// assert_eq!(&got.message.body[..], b"hello");
/// broker.shutdown();
/// # Ok(()) }
/// ```
pub struct Broker;

impl Broker {
    /// Starts a broker with `settings` and the built-in exchange types.
    pub fn start(settings: BrokerSettings) -> Result<BrokerHandle, BrokerError> {
        BrokerBuilder::new().settings(settings).start()
    }

    /// A builder, for custom exchange types and settings.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::new()
    }
}

/// Configures and starts a broker.
pub struct BrokerBuilder {
    settings: BrokerSettings,
    types: ExchangeTypes,
    actors: HashMap<String, ExchangeActorFactory>,
    storage: Option<StorageOptions>,
    /// Accept durable declares without storage (in memory only).
    transient_durables: bool,
    /// The cluster this broker is a node of, if any.
    cluster: Option<Arc<dyn crate::cluster::ClusterHook>>,
    /// A message store to use instead of opening one (unit tests: failing stores).
    #[cfg(test)]
    test_store: Option<Arc<dyn crate::storage::MessageStore>>,
}

impl BrokerBuilder {
    fn new() -> Self {
        BrokerBuilder {
            settings: BrokerSettings::default(),
            types: ExchangeTypes::with_builtins(),
            actors: HashMap::new(),
            storage: None,
            transient_durables: false,
            cluster: None,
            #[cfg(test)]
            test_store: None,
        }
    }

    /// Uses `store` as the message store, with no metadata (unit tests).
    #[cfg(test)]
    pub(crate) fn test_store(mut self, store: Arc<dyn crate::storage::MessageStore>) -> Self {
        self.test_store = Some(store);
        self
    }

    /// Keeps durable entities and persistent messages under `options.data_dir`: they
    /// come back when a broker is started again on the same directory (see
    /// [`crate::storage`]), and a persistent message in a durable queue is confirmed
    /// only once it is on disk. Without it (the default for an embedded broker), a
    /// durable queue or exchange is refused with PRECONDITION_FAILED, unless
    /// [`transient_durables`](Self::transient_durables) says otherwise.
    ///
    /// ```
    /// use actormq::storage::StorageOptions;
    /// use actormq::{Broker, QueueOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let broker = Broker::builder().storage(StorageOptions::in_dir(dir.path())).start()?;
    /// broker.session().declare_queue("jobs", &QueueOptions::durable()).await?;
    /// broker.shutdown();
    /// # Ok(()) }
    /// ```
    pub fn storage(mut self, options: StorageOptions) -> Self {
        self.storage = Some(options);
        self
    }

    /// Accepts durable queues and exchanges on a broker without storage, keeping them
    /// (and persistent messages) in memory only: they are lost when the broker stops,
    /// and a confirm means "in the queue", not "on disk". For tests and caches that
    /// reuse declarations written for a networked broker. Without this call, such a
    /// declare fails with PRECONDITION_FAILED saying how to add storage. No effect
    /// when the broker has storage.
    ///
    /// ```
    /// use actormq::{Broker, ErrorCode, QueueOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
    /// let strict = Broker::builder().start()?;
    /// let e = strict.session().declare_queue("jobs", &QueueOptions::durable()).await;
    /// assert_eq!(e.unwrap_err().code(), ErrorCode::PreconditionFailed);
    /// strict.shutdown();
    ///
    /// let in_memory = Broker::builder().transient_durables().start()?;
    /// in_memory.session().declare_queue("jobs", &QueueOptions::durable()).await?;
    /// in_memory.shutdown();
    /// # Ok(()) }
    /// ```
    pub fn transient_durables(mut self) -> Self {
        self.transient_durables = true;
        self
    }

    /// Makes the broker a node of a cluster: definitions changes are committed through
    /// `cluster`'s log before they apply (see [`crate::cluster`]).
    pub fn cluster(mut self, cluster: Arc<dyn crate::cluster::ClusterHook>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Replaces the settings.
    pub fn settings(mut self, settings: BrokerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets the number of worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.settings.workers = n;
        self
    }

    /// Sets the memory high watermark in bytes (0 = none).
    pub fn memory_high_watermark(mut self, bytes: u64) -> Self {
        self.settings.memory_high_watermark = bytes;
        self
    }

    /// Registers an exchange type: `declare_exchange(name, type_name)` then works.
    pub fn exchange_type<F>(mut self, type_name: &str, factory: F) -> Self
    where
        F: Fn() -> Box<dyn ExchangeType> + Send + Sync + 'static,
    {
        self.types.register(type_name, factory);
        self
    }

    /// Registers a whole actor as an exchange type: `start` is called on a worker
    /// arbiter's handle for each exchange declared with `type_name` and returns its
    /// handle (see [`ExchangeHandle::from_actor`]).
    pub fn exchange_actor<F>(mut self, type_name: &str, start: F) -> Self
    where
        F: Fn(ExchangeSpec, &ArbiterHandle) -> Result<ExchangeHandle, String>
            + Send
            + Sync
            + 'static,
    {
        self.actors.insert(type_name.to_string(), Arc::new(start));
        self
    }

    /// Starts the broker's threads and registries.
    pub fn start(self) -> Result<BrokerHandle, BrokerError> {
        let workers = self.settings.worker_count();
        let shutdown_timeout_secs = self.settings.shutdown_timeout_secs;
        let settings = self.settings;
        let (tx, rx) = std::sync::mpsc::channel();
        let types = self.types;
        let actors = self.actors;
        let transient_durables = self.transient_durables;
        let cluster = self.cluster;
        let gauge = Arc::new(MemoryGauge::new(settings.memory_high_watermark as usize));
        // Storage is opened and recovered here, before any actor runs.
        let durability = Arc::new(match self.storage {
            Some(options) => Durability::open(options, gauge.clone())?,
            None => Durability::disabled(),
        });
        #[cfg(test)]
        let durability = match self.test_store {
            Some(store) => Arc::new(Durability::with_store(store)),
            None => durability,
        };
        if cluster.is_some() {
            refuse_quorum_backlog(&durability)?;
        }
        // Virtual hosts and users are runtime definitions: a data directory that holds
        // them is authoritative; `broker.vhosts` only seeds a new one.
        let definitions = match durability.stored_definitions() {
            Some(stored) => {
                if settings.vhosts.iter().any(|v| !stored.has_vhost(v)) {
                    tracing::info!("virtual hosts come from the data directory; broker.vhosts only seeds a new one");
                }
                stored
            }
            None => {
                let mut vhost_names = settings.vhosts.clone();
                for v in durability.stored_vhosts() {
                    if !vhost_names.contains(&v) {
                        tracing::warn!(vhost = %v, "virtual host not in broker.vhosts but holds durable entities: created");
                        vhost_names.push(v);
                    }
                }
                let seeded = BrokerDefinitions::new(vhost_names, []);
                // Written before any registry saves: from now on the store is authoritative.
                drop(durability.save_broker(&seeded));
                seeded
            }
        };
        let vhost_names: Vec<String> = definitions.vhosts().cloned().collect();
        let definitions = Arc::new(RwLock::new(definitions));
        let shared_definitions = definitions.clone();
        let thread = std::thread::Builder::new()
            .name("actormq-system".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                sys.block_on(async move {
                    let arbiters: Vec<Arbiter> = (0..workers).map(|_| Arbiter::new()).collect();
                    let handles = arbiters.iter().map(|a| a.handle()).collect();
                    let ctx = Arc::new(
                        BrokerContext::new(
                            handles,
                            types,
                            actors,
                            gauge,
                            settings.consumer_window,
                            settings.publish_window,
                            settings.queue_flow_threshold,
                        )
                        .with_durability(durability)
                        .with_transient_durables(transient_durables)
                        .with_cluster(cluster)
                        .with_definitions(shared_definitions),
                    );
                    let vhosts: HashMap<String, Addr<Registry>> = vhost_names
                        .iter()
                        .map(|v| (v.clone(), Registry::start(v, ctx.clone())))
                        .collect();
                    let _ = tx.send((System::current(), ctx, vhosts, arbiters));
                });
                if let Err(e) = sys.run() {
                    tracing::error!(error = %e, "actix system ended with an error");
                }
            })
            .map_err(|e| BrokerError::internal(format!("cannot start the broker thread: {e}")))?;
        let (system, ctx, vhosts, arbiters) = rx
            .recv()
            .map_err(|_| BrokerError::internal("the broker thread failed to start"))?;
        Ok(BrokerHandle {
            inner: Arc::new(HandleInner {
                shutdown_timeout: std::time::Duration::from_secs(shutdown_timeout_secs),
                definitions,
                stopping: std::sync::atomic::AtomicBool::new(false),
                stopped: tokio::sync::watch::channel(false).0,
                system,
                ctx,
                vhosts: RwLock::new(vhosts),
                arbiters: Mutex::new(arbiters),
                thread: Mutex::new(Some(thread)),
                next_owner: AtomicU64::new(1),
            }),
        })
    }
}

struct HandleInner {
    /// How long [`BrokerHandle::stop`] waits for the queues to write what they hold.
    shutdown_timeout: std::time::Duration,
    /// Set by the first stop: later calls wait for `stopped`.
    stopping: std::sync::atomic::AtomicBool,
    /// True once a stop has finished (threads joined, store closed).
    stopped: tokio::sync::watch::Sender<bool>,
    /// The broker's actix system (stopped by `shutdown`).
    system: System,
    /// Arbiters, exchange types, gauge.
    ctx: Arc<BrokerContext>,
    /// The broker-wide definitions (virtual hosts, users), changed by commands.
    definitions: SharedDefinitions,
    /// Registry of each virtual host (in step with `definitions`).
    vhosts: RwLock<HashMap<String, Addr<Registry>>>,
    /// The worker arbiters, joined on shutdown.
    arbiters: Mutex<Vec<Arbiter>>,
    /// The system thread, joined on shutdown.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Owner ids handed to sessions and connections.
    next_owner: AtomicU64,
}

/// A handle to a running broker: `Send + Clone`, usable from any thread or runtime.
#[derive(Clone)]
pub struct BrokerHandle {
    inner: Arc<HandleInner>,
}

impl BrokerHandle {
    /// A session on the default virtual host `/`.
    pub fn session(&self) -> Session {
        self.session_in("/")
            .expect("the default virtual host exists")
    }

    /// A session on `vhost`.
    pub fn session_in(&self, vhost: &str) -> Result<Session, BrokerError> {
        let registry = self.registry(vhost)?;
        Ok(Session::new(
            self.clone(),
            registry,
            vhost,
            self.new_owner(),
        ))
    }

    /// The registry actor of `vhost`.
    pub fn registry(&self, vhost: &str) -> Result<Addr<Registry>, BrokerError> {
        self.registries()
            .get(vhost)
            .cloned()
            .ok_or_else(|| BrokerError::not_found("vhost", vhost, vhost))
    }

    fn registries(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Addr<Registry>>> {
        self.inner.vhosts.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The virtual hosts, sorted.
    pub fn vhosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self.registries().keys().cloned().collect();
        v.sort();
        v
    }

    /// A fresh owner id for a connection or session.
    pub fn new_owner(&self) -> messages::OwnerId {
        messages::OwnerId(self.inner.next_owner.fetch_add(1, Ordering::Relaxed))
    }

    /// The broker-wide memory gauge.
    pub fn memory(&self) -> &Arc<MemoryGauge> {
        &self.inner.ctx.gauge
    }

    /// The shared context (arbiters, windows).
    pub fn context(&self) -> &Arc<BrokerContext> {
        &self.inner.ctx
    }

    /// Stops the broker without losing what it has taken: every virtual host stops its
    /// exchanges, then each queue applies the acks and cancels it has been handed,
    /// appends what they settled and what it has not yet written, and answers; only
    /// then are the broker's threads stopped and the store flushed and closed. Bounded
    /// by `broker.shutdown_timeout_secs`: past it the broker stops anyway and logs how
    /// many virtual hosts had not answered. Safe to call twice (the second returns at
    /// once).
    ///
    /// Close the front ends first (a [`ServerHandle`](crate::server::ServerHandle) does),
    /// so that their last acks reach the queues before this. Await it on a tokio runtime
    /// (its bound is a tokio timer); elsewhere call [`shutdown`](Self::shutdown).
    pub async fn stop(&self) {
        if self.on_broker_thread() {
            // Stopping joins the broker's threads, this one among them: hand the whole
            // stop to a plain thread and do not wait for it.
            let me = self.clone();
            std::thread::spawn(move || me.shutdown());
            return;
        }
        let mut stopped = self.inner.stopped.subscribe();
        if self.inner.stopping.swap(true, Ordering::AcqRel) {
            // A stop is under way: done when it is (the data directory is closed then).
            let _ = stopped.wait_for(|done| *done).await;
            return;
        }
        let registries: Vec<Addr<Registry>> = self.registries().values().cloned().collect();
        let answered =
            futures_util::future::join_all(registries.iter().map(|r| r.send(registry::StopAll)));
        match tokio::time::timeout(self.inner.shutdown_timeout, answered).await {
            Ok(answers) => {
                let lost = answers.iter().filter(|a| a.is_err()).count();
                if lost > 0 {
                    tracing::warn!(
                        vhosts = lost,
                        "virtual hosts stopped before they could answer the shutdown"
                    );
                }
            }
            Err(_) => tracing::warn!(
                timeout = ?self.inner.shutdown_timeout,
                "shutdown: queues had not written everything within broker.shutdown_timeout_secs; stopping anyway (unwritten acks are redelivered after the restart, unconfirmed publishes were never confirmed)"
            ),
        }
        let inner = self.inner.clone();
        // Joining threads blocks: off the caller's runtime.
        let _ = std::thread::spawn(move || Self::stop_threads(&inner)).join();
        self.inner.stopped.send_replace(true);
    }

    /// The blocking form of [`stop`](Self::stop), for code that is not async. Safe to
    /// call twice. Called on one of the broker's own threads (inside an actor), it
    /// starts the stop on a thread of its own and returns at once.
    pub fn shutdown(&self) {
        let me = self.clone();
        if self.on_broker_thread() {
            std::thread::spawn(move || me.shutdown());
            return;
        }
        let waited =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(me.stop()),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the shutdown runtime");
                        if !me.inner.stopping.swap(true, Ordering::AcqRel) {
                            Self::stop_threads(&me.inner);
                        }
                    }
                }
            })
            .join();
        if waited.is_err() {
            tracing::error!("the shutdown thread panicked");
        }
    }

    /// True on the broker's system thread or one of its worker arbiters (where the
    /// broker's actix `System` is the current one).
    pub(crate) fn on_broker_thread(&self) -> bool {
        System::try_current().is_some_and(|s| s.id() == self.inner.system.id())
    }

    /// Stops the actix system and the arbiters, joins their threads, then flushes and
    /// closes the store.
    fn stop_threads(inner: &HandleInner) {
        inner.system.stop();
        if let Some(t) = inner.thread.lock().expect("poisoned").take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        for a in inner.arbiters.lock().expect("poisoned").drain(..) {
            a.stop();
            let _ = a.join();
        }
        // Everything appended and saved is written and fsynced, then the files closed.
        inner.ctx.durability.close();
    }
}

/// A single broker's quorum queues store their messages in its message log; in a
/// cluster a quorum queue's messages are its Raft group's, and the log's would never be
/// served. So a data directory whose quorum queues still hold messages does not start
/// as a cluster node: the operator drains them first (RabbitMQ, for its part, has a
/// node reset, and so emptied, before it joins a cluster).
fn refuse_quorum_backlog(durability: &Durability) -> Result<(), BrokerError> {
    let backlog = durability.quorum_backlog();
    if backlog.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = backlog
        .iter()
        .map(|(vhost, name, n)| format!("'{name}' in vhost '{vhost}' ({n} messages)"))
        .collect();
    Err(BrokerError::new(
        crate::error::ErrorCode::PreconditionFailed,
        format!(
            "this data directory's quorum queues hold messages stored by a single broker: {}; \
             in a cluster a quorum queue's messages are its Raft group's and these would not \
             be served. Start this node once without [cluster], consume them (or move them \
             to another queue), then start it with [cluster] again",
            list.join(", ")
        ),
    ))
}
