//! The storage settings: where the data lives, when it is fsynced, how big a segment is,
//! how much free disk the broker keeps. Plain data with defaults; `settings.rs` maps the
//! `[storage]` section of `Settings.toml` onto it.

use std::path::PathBuf;
use std::time::Duration;

/// When the message log is fsynced (`storage.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every group of appends that asked for durability is fsynced before its
    /// completions resolve (`fsync = "always"`, the default): a confirm means "on disk".
    Always,
    /// The log is fsynced at most every N milliseconds (`fsync = "interval_ms"` with
    /// `fsync_interval_ms = N`); appends that asked for durability complete after the
    /// fsync that follows them. Fewer fsyncs, later confirms.
    IntervalMs(u64),
}

impl FsyncPolicy {
    /// The interval between fsyncs, for [`FsyncPolicy::IntervalMs`].
    pub fn interval(&self) -> Option<Duration> {
        match self {
            FsyncPolicy::Always => None,
            FsyncPolicy::IntervalMs(ms) => Some(Duration::from_millis((*ms).max(1))),
        }
    }
}

/// Options of the disk store (the `[storage]` section of `Settings.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// Directory holding the metadata snapshot and the message log
    /// (`storage.data_dir`, default `./data`).
    pub data_dir: PathBuf,
    /// When the message log is fsynced (`storage.fsync` and `storage.fsync_interval_ms`).
    pub fsync: FsyncPolicy,
    /// Size of one log segment file in bytes (`storage.segment_size`, default 32 MiB).
    /// Segments are preallocated to this size and reclaimed whole, so it is also the
    /// granularity at which disk space is given back.
    pub segment_size: u64,
    /// Free bytes the data directory's filesystem must keep (`storage.disk_free_limit`,
    /// default 1 GiB); below it the broker blocks publishers.
    pub disk_free_limit: u64,
    /// Ready messages a durable queue keeps in memory (`storage.queue_ram_messages`,
    /// default 16384). Persistent messages beyond them leave their bodies on disk and
    /// are paged in as consumers get near them (RabbitMQ's lazy queues), so a backlog
    /// of millions costs an index entry each, not a body. 0 = keep every body in memory.
    pub queue_ram_messages: usize,
}

/// The smallest segment size accepted: one header and a few small records.
pub const MIN_SEGMENT_SIZE: u64 = 4096;

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            data_dir: PathBuf::from("./data"),
            fsync: FsyncPolicy::Always,
            segment_size: 32 * 1024 * 1024,
            disk_free_limit: 1024 * 1024 * 1024,
            queue_ram_messages: 16_384,
        }
    }
}

impl StorageOptions {
    /// Default options with the data under `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        StorageOptions {
            data_dir: dir.into(),
            ..Default::default()
        }
    }

    /// The directory of the message log segments.
    pub fn messages_dir(&self) -> PathBuf {
        self.data_dir.join("messages")
    }

    /// Messages per queue whose bodies recovery reads back into memory: the in-memory
    /// head of `queue_ram_messages` (everything when it is 0).
    pub fn recovery_head(&self) -> usize {
        match self.queue_ram_messages {
            0 => usize::MAX,
            n => n,
        }
    }

    /// The segment size actually used (at least [`MIN_SEGMENT_SIZE`]).
    pub fn effective_segment_size(&self) -> u64 {
        self.segment_size.max(MIN_SEGMENT_SIZE)
    }
}
