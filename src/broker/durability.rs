//! The broker's storage, wired to its actors: the message log ([`DiskStore`]) and the
//! metadata snapshot ([`MetadataStore`]), opened before any actor runs, shared by the
//! registries (metadata) and the durable queues (messages), closed at shutdown.
//!
//! Start-up ([`Durability::open`]): the snapshot gives each virtual host's durable
//! exchanges, queues and bindings; the log's recovery gives each durable queue's
//! surviving messages. A queue the log knows and the snapshot does not (deleted while
//! its records were still in the log) gets a `DeleteQueue` appended at once. Each
//! registry then takes its part ([`Durability::take_vhost`]), and each durable queue its
//! messages ([`Durability::take_recovered`]) when the registry spawns it.
//!
//! At run time a registry saves its virtual host's part of the snapshot after every
//! change ([`Durability::save_vhost`]); all virtual hosts share one snapshot file, and a
//! save that changes nothing writes nothing. A monitor thread compares the free space of
//! the data directory with `storage.disk_free_limit` once a second (and watches the
//! message store for a failure) and raises or clears the disk alarm of the
//! [`MemoryGauge`], which blocks publishers as the memory watermark does.
//!
//! A broker started without storage options (the embedding default) has an inert
//! `Durability`: durable entities are accepted but not persisted.

use crate::broker::memory::MemoryGauge;
use crate::broker::queue::durable::Durable;
use crate::broker::queue::QueueSpec;
use crate::definitions::{BrokerDefinitions, UserDefinition};
use crate::error::{BrokerError, ErrorCode};
use crate::storage::{
    disk_free, Completion, DiskStore, MessageStore, MetadataSnapshot, MetadataStore, QueueId,
    Record, RecoveredQueue, StorageError, StorageOptions, StoredVhost,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the monitor checks the free disk space and the store's health.
const MONITOR_EVERY: Duration = Duration::from_secs(1);

/// The metadata store and the snapshot last handed to it, under one lock so that saves
/// reach the store in the order the snapshot changed.
struct Meta {
    store: Option<MetadataStore>,
    snapshot: MetadataSnapshot,
}

/// What start-up found, until the registries and queues take it.
#[derive(Default)]
struct Startup {
    vhosts: BTreeMap<String, StoredVhost>,
    queues: HashMap<QueueId, RecoveredQueue>,
}

/// The monitor thread and the channel that stops it (dropped = stop).
struct Monitor {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// Storage of one broker (inert without storage options).
pub struct Durability {
    /// The options it was opened with (None: no storage).
    options: Option<StorageOptions>,
    /// The message log; taken (and so closed) at shutdown.
    store: RwLock<Option<Arc<dyn MessageStore>>>,
    /// The metadata snapshot.
    meta: Mutex<Meta>,
    /// What start-up recovered, not yet taken.
    startup: Mutex<Startup>,
    /// The disk monitor.
    monitor: Mutex<Option<Monitor>>,
}

fn open_error(options: &StorageOptions, e: StorageError) -> BrokerError {
    let code = if e.is_disk_full() || matches!(e, StorageError::Locked(_)) {
        ErrorCode::ResourceError
    } else {
        ErrorCode::InternalError
    };
    BrokerError::new(
        code,
        format!(
            "cannot open the storage in {} (storage.data_dir): {e}",
            options.data_dir.display()
        ),
    )
}

impl Durability {
    /// No storage: durable entities and persistent messages live in memory only.
    pub fn disabled() -> Self {
        Durability {
            options: None,
            store: RwLock::new(None),
            meta: Mutex::new(Meta {
                store: None,
                snapshot: MetadataSnapshot::default(),
            }),
            startup: Mutex::new(Startup::default()),
            monitor: Mutex::new(None),
        }
    }

    /// Opens the metadata and the message log under `options.data_dir`, recovers them,
    /// and starts the disk monitor on `gauge`. Blocks while it reads: call it before the
    /// actors run.
    pub fn open(options: StorageOptions, gauge: Arc<MemoryGauge>) -> Result<Self, BrokerError> {
        let (meta, snapshot) =
            MetadataStore::open(&options.data_dir).map_err(|e| open_error(&options, e))?;
        let store = DiskStore::open(&options).map_err(|e| open_error(&options, e))?;
        let recovered = store.recover().map_err(|e| open_error(&options, e))?;
        let listed = |q: &QueueId| {
            snapshot
                .vhosts
                .get(&*q.vhost)
                .is_some_and(|v| v.queues.iter().any(|s| s.name == *q.name))
        };
        let mut queues = HashMap::new();
        let mut orphans = Vec::new();
        for (id, q) in recovered {
            if listed(&id) {
                queues.insert(id, q);
            } else {
                tracing::info!(queue = %id, messages = q.messages.len() + q.paged.len(), "the message log holds a queue the metadata does not list (deleted): its messages are dropped");
                orphans.push(Record::DeleteQueue { queue: id });
            }
        }
        if !orphans.is_empty() {
            // Written before any queue runs, in order before anything they append.
            drop(store.append(orphans, false));
        }
        let messages: usize = queues
            .values()
            .map(|q| q.messages.len() + q.paged.len())
            .sum();
        let entities: usize = snapshot
            .vhosts
            .values()
            .map(|v| v.exchanges.len() + v.queues.len() + v.bindings.len())
            .sum();
        tracing::info!(dir = %options.data_dir.display(), entities, durable_queues = queues.len(), messages, "storage recovered");
        let store: Arc<dyn MessageStore> = Arc::new(store);
        let monitor = start_monitor(&options, store.clone(), gauge);
        Ok(Durability {
            store: RwLock::new(Some(store)),
            meta: Mutex::new(Meta {
                store: Some(meta),
                snapshot: snapshot.clone(),
            }),
            startup: Mutex::new(Startup {
                vhosts: snapshot.vhosts,
                queues,
            }),
            monitor: Mutex::new(monitor),
            options: Some(options),
        })
    }

    /// Storage over `store` alone: no metadata, no disk monitor (unit tests).
    #[cfg(test)]
    pub(crate) fn with_store(store: Arc<dyn MessageStore>) -> Self {
        let mut d = Durability::disabled();
        d.options = Some(StorageOptions::default());
        d.store = RwLock::new(Some(store));
        d
    }

    /// True when the broker has storage.
    pub fn is_enabled(&self) -> bool {
        self.options.is_some()
    }

    /// The options it was opened with.
    pub fn options(&self) -> Option<&StorageOptions> {
        self.options.as_ref()
    }

    /// `storage.queue_ram_messages` (0 without storage).
    fn ram_messages(&self) -> usize {
        self.options.as_ref().map_or(0, |o| o.queue_ram_messages)
    }

    /// The message store, while open.
    pub fn store(&self) -> Option<Arc<dyn MessageStore>> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Virtual hosts the snapshot has entities for (created at start-up beside the
    /// configured ones, so that nothing stored is lost).
    pub fn stored_vhosts(&self) -> Vec<String> {
        let startup = self.startup.lock().unwrap_or_else(|p| p.into_inner());
        startup
            .vhosts
            .iter()
            .filter(|(_, v)| !v.exchanges.is_empty() || !v.queues.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The durable entities of `vhost` found at start-up (taken once, by its registry).
    pub fn take_vhost(&self, vhost: &str) -> Option<StoredVhost> {
        self.startup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .vhosts
            .remove(vhost)
    }

    /// The quorum queues of the stored definitions that hold recovered messages, as
    /// `(vhost, queue, messages)`: what a single broker stored for them. In a cluster a
    /// quorum queue's messages are its Raft group's, so these would never be served;
    /// [`Broker::start`](crate::broker::Broker::start) refuses to join with them.
    pub fn quorum_backlog(&self) -> Vec<(String, String, usize)> {
        let startup = self.startup.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = Vec::new();
        for (vhost, stored) in &startup.vhosts {
            for q in &stored.queues {
                if !crate::broker::queue::quorum::is_quorum_args(&q.arguments) {
                    continue;
                }
                let held = startup
                    .queues
                    .get(&QueueId::new(vhost, &q.name))
                    .map_or(0, |r| r.messages.len() + r.paged.len());
                if held > 0 {
                    found.push((vhost.clone(), q.name.clone(), held));
                }
            }
        }
        found
    }

    /// The messages recovered for queue `name` of `vhost` (taken once, when spawned).
    pub fn take_recovered(&self, vhost: &str, name: &str) -> Option<RecoveredQueue> {
        self.startup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queues
            .remove(&QueueId::new(vhost, name))
    }

    /// True when a queue with `spec` is stored: durable and not exclusive (an exclusive
    /// queue never outlives its connection), on a broker with storage.
    pub fn stores(&self, spec: &QueueSpec) -> bool {
        self.is_enabled() && spec.durable && !spec.exclusive
    }

    /// The durable side for a new queue `spec` of `vhost`; inert unless it is stored.
    pub fn durable_for(&self, vhost: &str, spec: &QueueSpec) -> Durable {
        match (self.stores(spec), self.store()) {
            (true, Some(store)) => {
                let d = Durable::new(store, QueueId::new(vhost, &spec.name))
                    .with_ram_messages(self.ram_messages());
                if crate::broker::queue::quorum::is_quorum(spec) {
                    d.keeping_all()
                } else {
                    d
                }
            }
            _ => Durable::default(),
        }
    }

    /// The broker-wide definitions the snapshot holds, once a broker has written them
    /// (`seeded`); `None` for a new data directory (or no storage): the settings seed it.
    pub fn stored_definitions(&self) -> Option<BrokerDefinitions> {
        let meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        meta.store.as_ref()?;
        if !meta.snapshot.seeded {
            return None;
        }
        let users = meta
            .snapshot
            .users
            .iter()
            .cloned()
            .map(UserDefinition::from);
        Some(
            BrokerDefinitions::new(meta.snapshot.vhosts.keys().cloned(), users)
                .with_users_seeded(meta.snapshot.users_seeded)
                .with_seeded_users(meta.snapshot.seeded_users.clone())
                .with_cluster_name(meta.snapshot.cluster_name.clone())
                .with_limits(meta.snapshot.vhost_limits.clone()),
        )
    }

    /// Saves the broker-wide definitions: the users, and the set of virtual hosts (an
    /// empty part for a new one, a deleted one's part removed). From then on the
    /// snapshot is authoritative (`seeded`). `None` without storage.
    pub fn save_broker(&self, defs: &BrokerDefinitions) -> Option<Completion> {
        let mut meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        meta.store.as_ref()?;
        let snapshot = &mut meta.snapshot;
        snapshot.seeded = true;
        snapshot.users_seeded = defs.users_seeded();
        snapshot.seeded_users = defs.seeded_users().clone();
        snapshot.cluster_name = defs.cluster_name().map(str::to_string);
        snapshot.users = defs.stored_users();
        snapshot.vhost_limits = defs.all_vhost_limits().clone();
        snapshot.vhosts.retain(|v, _| defs.has_vhost(v));
        for v in defs.vhosts() {
            snapshot.vhosts.entry(v.clone()).or_default();
        }
        let snapshot = meta.snapshot.clone();
        meta.store.as_ref().map(|s| s.save(snapshot))
    }

    /// Replaces `vhost`'s part of the snapshot with `stored` and saves the snapshot;
    /// `None` when nothing changed (or there is no storage, or the virtual host was
    /// deleted: a registry's last saves while it goes must not bring it back).
    pub fn save_vhost(&self, vhost: &str, stored: StoredVhost) -> Option<Completion> {
        let mut meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        meta.store.as_ref()?;
        if meta.snapshot.seeded && !meta.snapshot.vhosts.contains_key(vhost) {
            return None;
        }
        let unchanged = match meta.snapshot.vhosts.get(vhost) {
            Some(v) => *v == stored,
            None => stored == StoredVhost::default(),
        };
        if unchanged {
            return None;
        }
        meta.snapshot.vhosts.insert(vhost.to_string(), stored);
        let snapshot = meta.snapshot.clone();
        meta.store.as_ref().map(|s| s.save(snapshot))
    }

    /// Stops the monitor and closes both stores, after writing and fsyncing everything
    /// appended and saved so far. Safe to call twice; later saves and appends fail.
    pub fn close(&self) {
        if let Some(m) = self
            .monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            drop(m.stop);
            let _ = m.thread.join();
        }
        let store = self.store.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(store) = store {
            // The store closes when its last handle goes (a queue actor may still hold
            // one); flush first so that everything appended is on disk either way. On a
            // plain thread: the caller may be on an async runtime, where blocking on the
            // completion is not allowed.
            let flush = store.flush();
            let flushed = std::thread::spawn(move || flush.wait()).join();
            if let Ok(Err(e)) = flushed {
                tracing::error!(error = %e, "the message log could not be flushed at shutdown");
            }
            if Arc::strong_count(&store) > 1 {
                tracing::debug!("the message log closes when its last queue goes");
            }
        }
        let meta = self
            .meta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .store
            .take();
        // Dropping it writes any save still queued, then stops its thread.
        drop(meta);
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        self.close();
    }
}

/// The disk alarm's reason now, if it should be raised; `None` to clear it.
fn disk_alarm(
    options: &StorageOptions,
    store: &dyn MessageStore,
    current: Option<String>,
) -> Option<String> {
    if let Some(e) = store.error() {
        return Some(format!("message store failed: {e}"));
    }
    if options.disk_free_limit == 0 {
        return None;
    }
    match disk_free(&options.data_dir) {
        Ok(free) if free < options.disk_free_limit => Some(format!(
            "disk free space {free} bytes in {} is below storage.disk_free_limit = {} bytes",
            options.data_dir.display(),
            options.disk_free_limit
        )),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the free disk space");
            current
        }
    }
}

/// Checks once now (so a broker starting on a full disk starts blocked), then once a
/// second on a thread of its own.
fn start_monitor(
    options: &StorageOptions,
    store: Arc<dyn MessageStore>,
    gauge: Arc<MemoryGauge>,
) -> Option<Monitor> {
    let first = disk_alarm(options, &*store, None);
    gauge.set_disk_alarm(first.clone());
    let (stop, rx) = mpsc::channel::<()>();
    let options = options.clone();
    let thread = std::thread::Builder::new()
        .name("actormq-disk-monitor".into())
        .spawn(move || {
            let mut current = first;
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(MONITOR_EVERY) {
                let next = disk_alarm(&options, &*store, current.clone());
                if next != current {
                    gauge.set_disk_alarm(next.clone());
                    current = next;
                }
            }
        });
    match thread {
        Ok(thread) => Some(Monitor { stop, thread }),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the disk monitor: storage.disk_free_limit is not enforced");
            None
        }
    }
}

#[cfg(test)]
mod tests;
