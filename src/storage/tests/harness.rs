//! What the contract suite needs of a store: the store, and a restart.

use crate::message::Message;
use crate::storage::{
    DiskStore, FsyncPolicy, MemoryStore, MessageStore, QueueId, Record, StorageOptions,
};
use std::sync::Arc;

/// A store under test and how to restart it.
pub trait Harness {
    /// The store.
    type Store: MessageStore;
    /// The running store.
    fn store(&self) -> &Self::Store;
    /// Stops the store and starts it again on the same data.
    fn restart(&mut self);
}

/// The memory store: a restart keeps the same state (the process never stops).
#[derive(Default)]
pub struct MemoryHarness(MemoryStore);

impl Harness for MemoryHarness {
    type Store = MemoryStore;
    fn store(&self) -> &MemoryStore {
        &self.0
    }
    fn restart(&mut self) {}
}

/// The disk store in a temporary directory: a restart closes and reopens it.
pub struct DiskHarness {
    /// The options it is opened with.
    pub options: StorageOptions,
    /// The running store (None only inside `restart`).
    store: Option<DiskStore>,
    /// Keeps the directory alive.
    _dir: tempfile::TempDir,
}

impl DiskHarness {
    /// A store with segments of `segment_size` bytes.
    pub fn new(segment_size: u64) -> Self {
        Self::with(segment_size, FsyncPolicy::Always)
    }

    /// A store with segments of `segment_size` bytes and the `fsync` policy.
    pub fn with(segment_size: u64, fsync: FsyncPolicy) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StorageOptions {
            segment_size,
            fsync,
            ..StorageOptions::in_dir(dir.path())
        };
        let store = DiskStore::open(&options).expect("open disk store");
        DiskHarness {
            options,
            store: Some(store),
            _dir: dir,
        }
    }

    /// Closes the store and hands back the directory's options (to damage files).
    pub fn close(&mut self) {
        self.store.take();
    }

    /// Opens the store again after `close`.
    pub fn open(&mut self) {
        self.store = Some(DiskStore::open(&self.options).expect("reopen disk store"));
    }
}

impl Harness for DiskHarness {
    type Store = DiskStore;
    fn store(&self) -> &DiskStore {
        self.store.as_ref().expect("store open")
    }
    fn restart(&mut self) {
        self.close();
        self.open();
    }
}

/// The queue `name` of the default virtual host.
pub fn q(name: &str) -> QueueId {
    QueueId::new("/", name)
}

/// A publish of a persistent message with a text body.
pub fn publish(queue: &QueueId, id: u64, body: &str) -> Record {
    Record::Publish {
        queue: queue.clone(),
        id,
        message: Arc::new(Message::new("ex", &queue.name, body.to_string()).persistent()),
    }
}

/// A message's body as text.
pub fn body_of(m: &Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}
