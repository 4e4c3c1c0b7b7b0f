//! Storage: durable messages and durable metadata, as plain Rust (no actix here).
//!
//! This module owns what survives a restart; the queue actors and the registry decide
//! what to store and when to wait for it.
//!
//! - [`MessageStore`] is the seam a queue actor calls: it appends [`Record`]s (a message
//!   published to a durable queue, acks, a "delivered up to" watermark, the delivery
//!   counts of redeliveries, a purge, a queue deleted) and gets a [`Completion`] back at once, resolved when the batch is stored.
//!   [`MessageStore::recover`] answers, per queue, the messages that survived, in id
//!   order, with their redelivered flag and delivery count (the disk store reads back the bodies of the
//!   first `storage.queue_ram_messages` of each queue, and names the rest by id);
//!   [`MessageStore::read`] reads live messages back by id (a long durable queue keeps
//!   most bodies on disk and pages them in).
//! - [`MemoryStore`] implements it in memory (transient queues, tests); [`DiskStore`]
//!   as an append-only, segmented, checksummed log with group commit on a writer thread
//!   of its own, so disk I/O never runs on the caller's thread.
//! - [`MetadataStore`] keeps the durable exchanges, queues, bindings and users as one
//!   snapshot file, replaced atomically on every change.
//! - [`disk_free`] answers the free bytes of the data directory's filesystem, for
//!   `storage.disk_free_limit`.
//!
//! ## On-disk layout
//!
//! ```text
//! data_dir/                              (storage.data_dir, default ./data)
//! ├── metadata.lock                      flock'ed by the MetadataStore
//! ├── metadata.amq                       the metadata snapshot (replaced by rename)
//! └── messages/
//!     ├── LOCK                           flock'ed by the DiskStore: one broker per dir
//!     ├── 00000000000000000007.seg       a segment, named by its sequence number
//!     ├── 00000000000000000009.seg       (8 was reclaimed: all its messages acked)
//!     └── 00000000000000000010.seg       the active segment, being appended to
//!
//! segment file (preallocated to storage.segment_size, zero-filled):
//! ┌──────────────────────────────┬─────────┬─────────┬─────┬──────────────────────┐
//! │ header: "AMQSEG01" + seq u64 │ frame 1 │ frame 2 │ ... │ zeros (not yet used) │
//! └──────────────────────────────┴─────────┴─────────┴─────┴──────────────────────┘
//!
//! frame:   [len u32 LE][crc32 u32 LE][payload: len bytes]
//!          crc = CRC-32 (ISO-HDLC) of the 4 length bytes and the payload;
//!          a zero length marks the end of the written part
//! payload: [kind u8][meta_len u32 LE][meta: MessagePack][body: raw bytes, publish only]
//!          kind 1 publish  meta [vhost, queue, id, exchange, routing_key, properties]
//!          kind 2 ack      meta [vhost, queue, [ids]]
//!          kind 3 delivered meta [vhost, queue, up_to]
//!          kind 4 purge    meta [vhost, queue, below, [except]]
//!          kind 5 delete   meta [vhost, queue]
//!          kind 6 mark     meta [vhost, queue, next_id, delivered]  (written on roll)
//!
//! metadata.amq: "AMQMETA1" + one frame whose payload is the MessagePack snapshot
//! ```
//!
//! Layout of this module: [`options`] (settings), [`error`], [`completion`], [`record`]
//! (what is appended, what recovery answers), `replay` (the state a sequence of
//! records leaves: shared by both stores), [`memory`], [`disk`] (segments, writer,
//! recovery), [`metadata`], [`fsutil`] (free space, directory fsync and lock).

pub mod completion;
pub mod disk;
pub mod error;
pub mod fsutil;
pub mod memory;
pub mod metadata;
pub mod options;
pub mod record;
pub(crate) mod replay;
pub mod stream;

#[cfg(test)]
mod tests;

pub use completion::{Completer, Completion, Pages, StoreResult};
pub use disk::{Corruption, DiskStore, RecoveryReport};
pub use error::StorageError;
pub use fsutil::disk_free;
pub use memory::MemoryStore;
pub use metadata::{
    MetadataSnapshot, MetadataStore, StoredBinding, StoredBindingTarget, StoredExchange,
    StoredPermission, StoredPolicy, StoredQueue, StoredTopicPermission, StoredUser, StoredVhost,
};
pub use options::{FsyncPolicy, StorageOptions};
pub use record::{PagedMessage, QueueId, Record, Recovered, RecoveredMessage, RecoveredQueue};

/// Where a queue keeps the messages it must not lose: the seam between a queue actor
/// and the disk.
///
/// Contract (run against every implementation by one test suite):
/// - `append` never blocks on I/O: it queues the batch and answers a [`Completion`].
///   Records of one store are applied in the order of the `append` calls.
/// - The completion resolves `Ok` once the batch is stored: with `sync` and
///   [`FsyncPolicy::Always`], after the fsync that covers it (many batches share one
///   fsync: group commit); with `sync` and [`FsyncPolicy::IntervalMs`], after the next
///   interval fsync; without `sync`, once written to the OS (it survives a crash of the
///   process, not of the machine). It resolves to an error if the batch could not be
///   stored; never to a silent success.
/// - `recover` answers what a restart would find: for every queue, the messages
///   published and not acked, purged or deleted, in id order, each marked redelivered
///   if its id is at or below the queue's "delivered up to" watermark, with its
///   delivery count (the highest `DeliveryCounts` count of its id, else 1 if
///   redelivered, else 0).
pub trait MessageStore: Send + Sync + 'static {
    /// Queues `batch`; the completion resolves when it is stored (see the trait docs).
    fn append(&self, batch: Vec<Record>, sync: bool) -> Completion;

    /// Resolves once everything appended before it is stored and fsynced (shutdown,
    /// tests). Independent of the fsync policy.
    fn flush(&self) -> Completion;

    /// The surviving state, as a restart would see it. Blocks until the store has read
    /// it: call it at start-up (before the actors run), not from an actor's thread.
    fn recover(&self) -> Result<Recovered, StorageError>;

    /// The error that makes the store refuse appends, if any (health checks, alarms).
    fn error(&self) -> Option<StorageError>;

    /// Reads back live messages of `queue` by id: how a queue pages in the bodies it
    /// let go of (see `storage.queue_ram_messages`). Ids not live are left out of the
    /// answer; the order is that of `ids`. Like `append`, it never blocks on I/O: the
    /// read runs where the store's I/O runs, after every append queued before it.
    fn read(&self, queue: &QueueId, ids: Vec<u64>) -> Completion<Pages>;

    /// How many fsyncs the store made and how long they took (`/metrics`); `None` for
    /// a store that does not fsync or does not count.
    fn sync_stats(&self) -> Option<disk::latency::SyncStats> {
        None
    }
}
