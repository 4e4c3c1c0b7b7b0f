//! What every registry needs to create entities: the worker arbiters, the exchange types,
//! the memory gauge and the flow-control settings. Shared read-only (`Arc`) by all
//! virtual hosts of one broker.

use crate::broker::durability::Durability;
use crate::broker::exchange::{ExchangeHandle, ExchangeSpec, ExchangeTypes};
use crate::broker::memory::MemoryGauge;
use crate::error::BrokerError;
use actix::ArbiterHandle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Starts a user actor standing in as an exchange of a registered type name.
pub type ExchangeActorFactory =
    Arc<dyn Fn(ExchangeSpec, &ArbiterHandle) -> Result<ExchangeHandle, String> + Send + Sync>;

/// Shared, read-only context of one broker.
pub struct BrokerContext {
    /// Worker arbiters (one thread each); entity actors are spread over them.
    pub arbiters: Vec<ArbiterHandle>,
    /// Round-robin position for placing the next actor.
    next: AtomicUsize,
    /// Exchange types by name (built-in and registered).
    pub exchange_types: ExchangeTypes,
    /// Whole-actor exchange types by name.
    pub exchange_actors: HashMap<String, ExchangeActorFactory>,
    /// Broker-wide memory accounting.
    pub gauge: Arc<MemoryGauge>,
    /// Incarnation numbers for queues (stale notices from a deleted queue are ignored).
    incarnation: AtomicU64,
    /// Maximum deliveries in transit to one consumer (transport credit).
    pub consumer_window: u32,
    /// Publish batches one publisher may have in flight.
    pub publish_window: usize,
    /// Backlog (ready messages) above which a queue with consumers slows publishers.
    pub queue_flow_threshold: usize,
    /// The broker's storage (inert when the broker has none).
    pub durability: Arc<Durability>,
    /// Accept durable declares on a broker without storage, keeping them in memory
    /// only ([`BrokerBuilder::transient_durables`](crate::BrokerBuilder::transient_durables)).
    /// Off by default: durable must mean on disk.
    pub transient_durables: bool,
    /// The cluster this broker is a node of (definitions changes go through its log);
    /// `None` on a single node.
    pub cluster: Option<Arc<dyn crate::cluster::ClusterHook>>,
    /// The broker-wide definitions, for the vhost limits registries check.
    pub definitions: crate::definitions::SharedDefinitions,
}

impl BrokerContext {
    /// A context over `arbiters`.
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        exchange_types: ExchangeTypes,
        exchange_actors: HashMap<String, ExchangeActorFactory>,
        gauge: Arc<MemoryGauge>,
        consumer_window: u32,
        publish_window: usize,
        queue_flow_threshold: usize,
    ) -> Self {
        assert!(!arbiters.is_empty(), "at least one worker arbiter");
        BrokerContext {
            arbiters,
            next: AtomicUsize::new(0),
            exchange_types,
            exchange_actors,
            gauge,
            incarnation: AtomicU64::new(1),
            consumer_window,
            publish_window,
            queue_flow_threshold,
            durability: Arc::new(Durability::disabled()),
            transient_durables: false,
            cluster: None,
            definitions: Arc::default(),
        }
    }

    /// The context reading vhost limits from `definitions`.
    pub fn with_definitions(mut self, definitions: crate::definitions::SharedDefinitions) -> Self {
        self.definitions = definitions;
        self
    }

    /// Refuses a new queue in `vhost` when it has `queues` already and its `max-queues`
    /// limit says no more, in RabbitMQ's words (PRECONDITION_FAILED).
    pub fn admit_queue(&self, vhost: &str, queues: usize, name: &str) -> Result<(), BrokerError> {
        let limits = self
            .definitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .vhost_limits(vhost);
        match limits.max_queues {
            Some(max) if queues >= max as usize => {
                tracing::warn!(vhost, queue = %crate::error::clip(name), max, "queue refused: vhost queue limit reached");
                Err(BrokerError::precondition(format!(
                    "cannot declare queue '{}': queue limit in vhost '{}' ({max}) is reached",
                    crate::error::clip(name),
                    crate::error::clip(vhost)
                )))
            }
            _ => Ok(()),
        }
    }

    /// The context with `durability` as its storage.
    pub fn with_durability(mut self, durability: Arc<Durability>) -> Self {
        self.durability = durability;
        self
    }

    /// True when `kind` names a registered exchange type or exchange actor.
    pub fn knows_exchange_type(&self, kind: &str) -> bool {
        self.exchange_actors.contains_key(kind) || self.exchange_types.contains(kind)
    }

    /// The context of a node of `cluster`.
    pub fn with_cluster(mut self, cluster: Option<Arc<dyn crate::cluster::ClusterHook>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The context accepting (or not) durable declares without storage.
    pub fn with_transient_durables(mut self, accept: bool) -> Self {
        self.transient_durables = accept;
        self
    }

    /// Refuses a new durable entity when the broker has no storage (unless told to
    /// accept them in memory): a confirm of a persistent message in a durable queue
    /// must mean it is on disk, so the declare fails before any publish can be
    /// confirmed. `kind` is `queue` or `exchange`.
    pub fn admit_durable(&self, kind: &str, name: &str) -> Result<(), BrokerError> {
        if self.durability.is_enabled() || self.transient_durables {
            return Ok(());
        }
        let e = BrokerError::precondition(format!(
            "{kind} '{name}' is durable but this broker has no storage, so it would not \
             survive a restart: start the broker with BrokerBuilder::storage(...) (a data \
             directory), declare the {kind} transient, or call \
             BrokerBuilder::transient_durables() to accept durable declares in memory only"
        ));
        tracing::warn!(kind, name, "durable declare refused: no storage");
        Err(e)
    }

    /// The arbiter for the next actor (round-robin).
    pub fn next_arbiter(&self) -> ArbiterHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.arbiters[i % self.arbiters.len()].clone()
    }

    /// A fresh incarnation number.
    pub fn next_incarnation(&self) -> u64 {
        self.incarnation.fetch_add(1, Ordering::Relaxed)
    }

    /// A unique suffix for generated names (`amq.gen-...`).
    pub fn unique_suffix(&self) -> String {
        let n = self.next_incarnation();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{:x}{:08x}", n, nanos)
    }
}
