//! The writer thread: the only code that writes the log. It owns the active segment and
//! the index, and does group commit.
//!
//! One turn of its loop: block for a command, drain every command queued behind it
//! (up to a bound), encode all their records into one buffer, write it with one
//! `write`, fsync once (fdatasync) if any of them asked for durability, then resolve
//! every completion of the group. While it syncs, callers keep queueing: the next
//! group forms on its own, so the busier the store, the more appends share an fsync.
//!
//! A segment is rolled when the next frame does not fit: the full one is fsynced if
//! dirty, the one the preparer thread made ready in the meantime becomes active, and
//! it starts with a mark of every queue. After each group, segments the index says
//! are dead are deleted (then the directory fsynced, before any deletion that depends
//! on them).
//!
//! Page-in reads ([`Command::Read`]) are served after the group they arrived in is
//! written, so a read always sees every append queued before it.
//!
//! A failed write or fsync leaves the file in an unknown state (after a failed fsync,
//! Linux may have dropped the dirty pages), so the writer fails every waiting
//! completion and refuses all later appends until the store is reopened.

use super::codec;
use super::frame;
use super::index::{Index, Loc};
use super::pager;
use super::prepare::Preparer;
use super::recovery;
use super::segment::{self, Active};
use crate::storage::completion::{Completer, Pages};
use crate::storage::error::StorageError;
use crate::storage::fsutil::sync_dir;
use crate::storage::options::{FsyncPolicy, StorageOptions};
use crate::storage::record::{QueueId, Record, Recovered};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Bytes encoded in one group before it is written, whatever else is queued.
const MAX_GROUP_BYTES: usize = 8 << 20;

/// Commands taken into one group before it is written.
const MAX_GROUP_COMMANDS: usize = 65_536;

/// What callers send the writer.
pub enum Command {
    /// Store `records`; resolve `done` when stored (after an fsync if `sync`).
    Append {
        /// The records, in order.
        records: Vec<Record>,
        /// Wait for an fsync (per the policy) before resolving.
        sync: bool,
        /// Resolved when stored.
        done: Completer,
    },
    /// Resolve `done` once everything before it is written and fsynced.
    Flush {
        /// Resolved after the fsync.
        done: Completer,
    },
    /// Read back live messages of `queue` by id (page-in).
    Read {
        /// The queue.
        queue: QueueId,
        /// The ids, in the order wanted.
        ids: Vec<u64>,
        /// Resolved with the messages found.
        done: Completer<Pages>,
    },
    /// Answer what a restart would recover now.
    Recover {
        /// Where the answer goes.
        reply: mpsc::SyncSender<Result<Recovered, StorageError>>,
    },
}

/// State the writer shares with the store handle.
#[derive(Debug, Default)]
pub struct Shared {
    /// fdatasync calls on segments so far (group commits and rolls).
    pub syncs: AtomicU64,
    /// How long those fdatasync calls took.
    pub sync_latency: super::latency::SyncLatency,
    /// Segments deleted by reclamation so far.
    pub reclaimed: AtomicU64,
    /// The error that stopped the writer, if any.
    pub error: Mutex<Option<StorageError>>,
    /// Test hook: while set, writes and fsyncs fail as on a full disk.
    #[cfg(test)]
    pub fail_io: std::sync::atomic::AtomicBool,
}

/// What a completion of the group waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Written to the OS.
    Write,
    /// Fsynced, per the policy.
    Sync,
    /// Fsynced now, whatever the policy.
    Flush,
}

/// The writer thread's state.
pub struct Writer {
    /// The segment directory.
    dir: PathBuf,
    /// When to fsync.
    policy: FsyncPolicy,
    /// The segment being appended to.
    active: Active,
    /// Live messages per segment, queue watermarks.
    index: Index,
    /// Sequence number of the next segment.
    next_seq: u64,
    /// Makes the next segment ready.
    preparer: Preparer,
    /// Counters and error, seen by the store handle.
    shared: Arc<Shared>,
    /// Frames encoded, not yet written.
    buf: Vec<u8>,
    /// Completions of the group being formed.
    group: Vec<(Completer, Need)>,
    /// Completions written, waiting for the next interval fsync.
    awaiting_sync: Vec<Completer>,
    /// When the log was last fsynced.
    last_sync: Instant,
    /// The first error; set, every append fails.
    failed: Option<StorageError>,
    /// A record that may free segments was applied.
    reclaim_due: bool,
    /// Page-in reads of the group being formed, served once it is written.
    reads: Vec<(QueueId, Vec<u64>, Completer<Pages>)>,
    /// Bodies per queue a recovery reads back (see [`recovery::rescan`]).
    recovery_head: usize,
}

impl Writer {
    /// A writer over an opened log in `dir`, with `options` (segment size, fsync
    /// policy, recovery head).
    pub fn new(
        dir: PathBuf,
        options: &StorageOptions,
        opened_active: Active,
        index: Index,
        next_seq: u64,
        shared: Arc<Shared>,
    ) -> Result<Writer, StorageError> {
        let policy = options.fsync;
        let recovery_head = options.recovery_head();
        let mut preparer = Preparer::start(dir.clone(), options.effective_segment_size())?;
        preparer.request(next_seq);
        Ok(Writer {
            dir,
            policy,
            active: opened_active,
            index,
            next_seq,
            preparer,
            shared,
            buf: Vec::with_capacity(1 << 20),
            group: Vec::new(),
            awaiting_sync: Vec::new(),
            last_sync: Instant::now(),
            failed: None,
            reclaim_due: true,
            reads: Vec::new(),
            recovery_head,
        })
    }

    /// The loop; returns when every sender is gone, after a final write and fsync.
    pub fn run(mut self, rx: Receiver<Command>) {
        if self.active.is_empty() {
            if let Err(e) = self.put_marks() {
                self.fail(e);
            }
        }
        // Write the marks, and reclaim or compact what the open found dead.
        self.commit();
        loop {
            let first = match self.interval_deadline() {
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                },
                Some(deadline) => {
                    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(c) => c,
                        Err(RecvTimeoutError::Timeout) => {
                            self.commit();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            self.handle(first);
            let mut taken = 1;
            while self.buf.len() < MAX_GROUP_BYTES && taken < MAX_GROUP_COMMANDS {
                match rx.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(_) => break,
                }
                taken += 1;
            }
            self.commit();
            self.serve_reads();
        }
        // Shutdown: write what is left and fsync it, whatever the policy.
        let owed: Vec<_> = self.awaiting_sync.drain(..).collect();
        self.group
            .extend(owed.into_iter().map(|c| (c, Need::Flush)));
        self.commit();
        if self.failed.is_none() && self.active.dirty {
            if let Err(e) = self.sync() {
                self.fail(e);
            }
        }
    }

    /// When the interval policy owes an fsync, the instant it is due.
    fn interval_deadline(&self) -> Option<Instant> {
        let every = self.policy.interval()?;
        (!self.awaiting_sync.is_empty()).then(|| self.last_sync + every)
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append {
                records,
                sync,
                done,
            } => {
                if let Some(e) = &self.failed {
                    done.complete(Err(StorageError::Failed(Arc::new(e.clone()))));
                    return;
                }
                for r in &records {
                    if let Err(e) = self.encode(r) {
                        if !matches!(e, StorageError::Encode(_)) {
                            self.fail(e.clone());
                        }
                        done.complete(Err(e));
                        return;
                    }
                }
                self.group
                    .push((done, if sync { Need::Sync } else { Need::Write }));
            }
            Command::Flush { done } => self.group.push((done, Need::Flush)),
            Command::Read { queue, ids, done } => self.reads.push((queue, ids, done)),
            Command::Recover { reply } => {
                self.commit();
                let segments: Vec<(u64, PathBuf)> = self
                    .index
                    .segments()
                    .into_iter()
                    .map(|s| (s, self.dir.join(segment::file_name(s))))
                    .collect();
                let _ = reply.send(
                    recovery::rescan(&self.dir, &segments, self.recovery_head).map(|(r, _)| r),
                );
            }
        }
    }

    /// Encodes one record into the group buffer, rolling first if it does not fit.
    fn encode(&mut self, record: &Record) -> Result<(), StorageError> {
        let start = self.buf.len();
        frame::encode_with(&mut self.buf, |b| codec::encode_record(b, record))?;
        let (seg, off) = self.place(start)?;
        let loc = Loc::of(record, seg, off);
        if !matches!(
            record,
            Record::Delivered { .. } | Record::DeliveryCounts { .. }
        ) {
            self.reclaim_due = true;
        }
        self.index.apply_record(record, loc);
        Ok(())
    }

    /// Rolls to a new segment first if the frame at `buf[start..]` does not fit in the
    /// active one (a frame larger than a whole segment goes alone into a fresh one).
    /// Answers where the frame will be once the buffer is written: segment, offset.
    fn place(&mut self, start: usize) -> Result<(u64, u64), StorageError> {
        let fits = self.active.pos + self.buf.len() as u64 <= self.active.capacity;
        let alone = self.active.is_empty() && start == 0;
        let mut start = start;
        if !(fits || alone) {
            let frame = self.buf.split_off(start);
            self.roll()?;
            start = self.buf.len();
            self.buf.extend_from_slice(&frame);
        }
        Ok((self.active.seq, self.active.pos + start as u64))
    }

    /// Compacts the oldest segment with few live messages, if any: copies their frames
    /// to the active segment, fsyncs them, and lets reclamation delete the segment.
    fn compact(&mut self) -> Result<(), StorageError> {
        let Some(seq) = self.index.compactable(self.active.seq) else {
            return Ok(());
        };
        let path = self.dir.join(segment::file_name(seq));
        let data = match recovery::read(&path) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read a segment to compact");
                return Ok(());
            }
        };
        let mut off = segment::HEADER_LEN as usize;
        let mut moved = 0u64;
        while let frame::FrameAt::Good { payload, next } = frame::read_at(&data, off) {
            if let Ok(codec::Entry::Record(r @ Record::Publish { .. })) = codec::decode(payload) {
                if let Record::Publish { queue, id, .. } = &r {
                    if self.index.is_live_at(queue, *id, seq) {
                        let start = self.buf.len();
                        self.buf.extend_from_slice(&data[off..next]);
                        let (seg, at) = self.place(start)?;
                        self.index.apply_record(&r, Loc::of(&r, seg, at));
                        moved += 1;
                    }
                }
            }
            off = next;
        }
        if self.index.live_in(seq) > 0 {
            // Damaged frames hid some of its live messages: leave the segment alone.
            tracing::warn!(file = %path.display(), "segment not fully compacted: it stays");
        }
        self.write_buf()?;
        if self.active.dirty {
            // The copies must be durable before the originals are deleted.
            self.sync()?;
            for done in self.awaiting_sync.drain(..) {
                done.complete(Ok(()));
            }
        }
        tracing::debug!(segment = seq, moved, "segment compacted");
        self.reclaim();
        Ok(())
    }

    /// Writes what is buffered, fsyncs the full segment, switches to the prepared one
    /// and writes the marks at its start.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.write_buf()?;
        if self.active.dirty {
            self.sync()?;
        }
        let seq = self.next_seq;
        let path = self.preparer.take(seq)?;
        self.active = Active::open(seq, path, segment::HEADER_LEN)?;
        self.index.add_segment(seq);
        self.next_seq += 1;
        self.preparer.request(self.next_seq);
        self.reclaim_due = true;
        tracing::debug!(segment = seq, "message log rolled to a new segment");
        self.put_marks()
    }

    /// Encodes a mark of every queue, and the delivery counts of its live messages,
    /// into the buffer (start of a new segment).
    fn put_marks(&mut self) -> Result<(), StorageError> {
        for (queue, next_id, delivered) in self.index.marks() {
            frame::encode_with(&mut self.buf, |b| {
                codec::encode_mark(b, &queue, next_id, delivered)
            })?;
        }
        for (queue, counts) in self.index.counts() {
            // Bounded records: a queue with many redelivered messages gets several.
            for chunk in counts.chunks(4096) {
                let record = Record::DeliveryCounts {
                    queue: queue.clone(),
                    counts: chunk.to_vec(),
                };
                frame::encode_with(&mut self.buf, |b| codec::encode_record(b, &record))?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn injected_fault(&self) -> Result<(), StorageError> {
        if self.shared.fail_io.load(Ordering::SeqCst) {
            return Err(StorageError::io(
                "writing",
                &self.active.path,
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            ));
        }
        Ok(())
    }

    #[cfg(not(test))]
    fn injected_fault(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.injected_fault()?;
        let result = self.active.write(&self.buf);
        self.buf.clear();
        result
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.injected_fault()?;
        let started = Instant::now();
        self.active.sync()?;
        self.shared.sync_latency.record(started.elapsed());
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Writes the group, fsyncs if it (or the interval) asks, resolves completions.
    fn commit(&mut self) {
        if let Some(e) = self.failed.clone() {
            self.buf.clear();
            self.fail(e);
            return;
        }
        if let Err(e) = self.write_buf() {
            self.fail(e);
            return;
        }
        let flush = self.group.iter().any(|(_, n)| *n == Need::Flush);
        let wants_sync = self.group.iter().any(|(_, n)| *n == Need::Sync);
        let interval_due = self
            .interval_deadline()
            .is_some_and(|d| d <= Instant::now());
        let sync_now = flush
            || interval_due
            || (wants_sync && self.policy == FsyncPolicy::Always)
            || (wants_sync
                && self
                    .policy
                    .interval()
                    .is_some_and(|i| self.last_sync.elapsed() >= i));
        if sync_now && self.active.dirty {
            if let Err(e) = self.sync() {
                self.fail(e);
                return;
            }
        }
        for (done, need) in std::mem::take(&mut self.group) {
            if need == Need::Sync && !sync_now {
                self.awaiting_sync.push(done);
            } else {
                done.complete(Ok(()));
            }
        }
        if sync_now {
            for done in self.awaiting_sync.drain(..) {
                done.complete(Ok(()));
            }
        }
        if self.reclaim_due {
            self.reclaim_due = false;
            self.reclaim();
            if let Err(e) = self.compact() {
                self.fail(e);
            }
        }
    }

    /// Answers the page-in reads of the group just written.
    fn serve_reads(&mut self) {
        for (queue, ids, done) in std::mem::take(&mut self.reads) {
            let result = match &self.failed {
                // What was written before the failure is readable, but a failed store
                // refuses everything until it is reopened: simpler to reason about.
                Some(e) => Err(StorageError::Failed(Arc::new(e.clone()))),
                None => pager::read(&self.dir, &self.index, &queue, &ids),
            };
            done.complete(result);
        }
    }

    /// Deletes dead segments, oldest first; fsyncs the directory between passes so a
    /// deletion another depends on is durable first.
    fn reclaim(&mut self) {
        loop {
            let doomed = self.index.reclaimable(self.active.seq);
            if doomed.is_empty() {
                return;
            }
            for seq in doomed {
                let path = self.dir.join(segment::file_name(seq));
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(file = %path.display(), error = %e, "cannot delete a reclaimed segment");
                        return;
                    }
                }
                tracing::debug!(segment = seq, "segment reclaimed: no live message left");
                self.index.remove_segment(seq);
                self.shared.reclaimed.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = sync_dir(&self.dir) {
                tracing::warn!(error = %e, "cannot sync the segment directory after reclaiming");
                return;
            }
        }
    }

    /// Records the first error and fails every waiting completion with it.
    fn fail(&mut self, e: StorageError) {
        if self.failed.is_none() {
            tracing::error!(error = %e, "message log failed: appends are refused until restart");
            *self.shared.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            self.failed = Some(e.clone());
        }
        let e = self.failed.clone().unwrap_or(e);
        for (done, _) in self.group.drain(..) {
            done.complete(Err(e.clone()));
        }
        for done in self.awaiting_sync.drain(..) {
            done.complete(Err(e.clone()));
        }
    }
}
