//! [`DiskStore`]: the [`MessageStore`] as an append-only, segmented, checksummed log in
//! `data_dir/messages`, written by one thread with group commit.
//!
//! - [`frame`]: `[len][crc32][payload]` framing; [`codec`]: the record payloads.
//! - [`segment`]: segment files (named, preallocated, zero-filled) and the active one.
//! - [`index`]: which segment holds which live message; when a segment may go.
//! - [`recovery`]: replaying the log at open; torn tails and corrupt records.
//! - [`writer`]: the writer thread (group commit, rolls, reclamation, compaction);
//!   [`prepare`]: the thread that makes the next segment ready; [`pager`]: page-in
//!   reads, served by the writer thread between groups.
//!
//! The handle only sends commands to the writer thread: an append never touches the
//! disk on the caller's thread.

pub mod codec;
pub mod frame;
pub mod index;
pub mod latency;
pub mod pager;
pub mod prepare;
pub mod recovery;
pub mod segment;
pub mod writer;

#[cfg(test)]
mod tests;

pub use recovery::{Corruption, RecoveryReport};

use super::completion::{Completion, Pages};
use super::error::StorageError;
use super::fsutil::{self, DirLock};
use super::options::StorageOptions;
use super::record::{QueueId, Record, Recovered};
use super::MessageStore;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use writer::{Command, Shared, Writer};

/// The message log on disk. Share it behind an `Arc`; dropping it writes and fsyncs
/// what is queued and stops the writer thread.
pub struct DiskStore {
    /// Commands to the writer thread (taken on drop to stop it).
    tx: Option<mpsc::Sender<Command>>,
    /// The writer thread, joined on drop.
    thread: Option<JoinHandle<()>>,
    /// Counters and the error state, shared with the writer.
    shared: Arc<Shared>,
    /// What the open found, handed out by the first `recover` if nothing was appended
    /// since (else `recover` rescans the log).
    recovered: Mutex<Option<Recovered>>,
    /// Set by the first append (which drops `recovered`).
    appended: AtomicBool,
    /// Damage found at open.
    report: RecoveryReport,
    /// The segment directory.
    dir: PathBuf,
    /// Keeps other processes out of the directory.
    _lock: DirLock,
}

impl DiskStore {
    /// Opens (or creates) the log under `options.data_dir`, recovers it, and starts the
    /// writer thread. Blocks while it reads the log: call it at start-up.
    pub fn open(options: &StorageOptions) -> Result<DiskStore, StorageError> {
        let dir = options.messages_dir();
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("creating", &dir, e))?;
        fsutil::sync_dir(&options.data_dir)?;
        let lock = DirLock::acquire(&dir, dir.join("LOCK"))?;
        let segment_size = options.effective_segment_size();
        let head = options.recovery_head();
        let opened = recovery::open_log(&dir, segment_size, head)?;
        let shared = Arc::new(Shared::default());
        let writer = Writer::new(
            dir.clone(),
            options,
            opened.active,
            opened.index,
            opened.next_seq,
            shared.clone(),
        )?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("actormq-storage-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StorageError::io("starting the writer thread for", &dir, e))?;
        let queues = opened.recovered.len();
        let messages: usize = opened
            .recovered
            .values()
            .map(|q| q.messages.len() + q.paged.len())
            .sum();
        tracing::info!(dir = %dir.display(), segments = opened.report.segments, queues, messages, "message log opened");
        Ok(DiskStore {
            tx: Some(tx),
            thread: Some(thread),
            shared,
            recovered: Mutex::new(Some(opened.recovered)),
            appended: AtomicBool::new(false),
            report: opened.report,
            dir,
            _lock: lock,
        })
    }

    /// What the open found: segments and records read, tails truncated, damage skipped.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The segment directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// fdatasync calls made on the log so far: with group commit, far fewer than the
    /// appends that asked for durability.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Segments deleted by reclamation so far.
    pub fn reclaimed_segments(&self) -> u64 {
        self.shared.reclaimed.load(Ordering::Relaxed)
    }

    /// The segment files now in the directory, oldest first (the prepared next one
    /// included).
    pub fn segment_files(&self) -> Result<Vec<PathBuf>, StorageError> {
        Ok(segment::list(&self.dir)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Free bytes on the log's filesystem (compare with `storage.disk_free_limit`).
    pub fn disk_free(&self) -> Result<u64, StorageError> {
        fsutil::disk_free(&self.dir)
    }

    /// Test hook: while `on`, every write and fsync fails as on a full disk.
    #[cfg(test)]
    pub(crate) fn inject_io_failure(&self, on: bool) {
        self.shared.fail_io.store(on, Ordering::SeqCst);
    }

    fn send(&self, cmd: Command) -> Result<(), StorageError> {
        self.tx
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(cmd)
            .map_err(|_| StorageError::Closed)
    }

    fn failure(&self) -> Option<StorageError> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl MessageStore for DiskStore {
    fn sync_stats(&self) -> Option<latency::SyncStats> {
        Some(self.shared.sync_latency.snapshot(self.sync_count()))
    }

    fn append(&self, batch: Vec<Record>, sync: bool) -> Completion {
        if let Some(e) = self.failure() {
            return Completion::ready(Err(StorageError::Failed(Arc::new(e))));
        }
        if !self.appended.swap(true, Ordering::Relaxed) {
            // The state found at open is no longer what a restart would see.
            self.recovered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        let (done, completion) = Completion::pending();
        match self.send(Command::Append {
            records: batch,
            sync,
            done,
        }) {
            Ok(()) => completion,
            Err(e) => Completion::ready(Err(e)),
        }
    }

    fn flush(&self) -> Completion {
        let (done, completion) = Completion::pending();
        match self.send(Command::Flush { done }) {
            Ok(()) => completion,
            Err(e) => Completion::ready(Err(e)),
        }
    }

    fn recover(&self) -> Result<Recovered, StorageError> {
        if let Some(r) = self
            .recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Ok(r);
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Command::Recover { reply })?;
        answer.recv().map_err(|_| StorageError::Closed)?
    }

    fn error(&self) -> Option<StorageError> {
        self.failure()
    }

    fn read(&self, queue: &QueueId, ids: Vec<u64>) -> Completion<Pages> {
        let (done, completion) = Completion::pending();
        match self.send(Command::Read {
            queue: queue.clone(),
            ids,
            done,
        }) {
            Ok(()) => completion,
            Err(e) => Completion::ready(Err(e)),
        }
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "the storage writer thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore").field("dir", &self.dir).finish()
    }
}
