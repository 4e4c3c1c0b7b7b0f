//! The writer thread of one stream: the only code that writes its directory.
//!
//! One turn of its loop: block for a command, drain every command queued behind it,
//! write the appends of the group to their segment files, fsync once (and the
//! directory when a segment file was created), then resolve every completion of the
//! group: group commit, so a confirm means "on disk" without an fsync per message.
//! A group that begins much smaller than the one before stays open a little for the
//! appends that follow, written as they come and fsynced with it ([`super::gather`]).
//! A rolled segment's index file ([`super::index_file`]) is written after the group's
//! appends, so after the fsync of the segment's last frames: an index file never
//! describes bytes that are not on disk. The active segment's recovery point (the same
//! file form, [`super::index_file::point_path`]) comes after them, on the same terms:
//! it covers only bytes sent before it, so written and fsynced by then; of several
//! queued, only the last is written, and none for a segment sealed meanwhile (its index
//! file says more, and its point is removed). Segment removals (retention, which removes
//! the index file and any point with its segment) and the consumer offsets file come
//! last; of several offsets snapshots queued, only the last is written.
//!
//! After each group's write (before its fsync) the writer publishes the offset up to
//! which the files hold every record ([`Written`]): readers of the files read only
//! below it, and the tail cache drops only records below it.
//!
//! A failed write or fsync fails every later append (the file's state is unknown), as
//! the message log's writer does.

use super::gather::Gather;
use crate::storage::completion::Completer;
use crate::storage::disk::frame::{self, FrameAt};
use crate::storage::error::StorageError;
use crate::storage::fsutil::sync_dir;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

/// The offset below which every record is in the segment files (shared by the writer,
/// which raises it, and the log and its readers).
#[derive(Debug, Clone, Default)]
pub struct Written(Arc<AtomicU64>);

impl Written {
    /// Starts at `offset` (what recovery found).
    pub fn new(offset: u64) -> Self {
        Written(Arc::new(AtomicU64::new(offset)))
    }

    /// The offset below which the files hold every record.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, offset: u64) {
        self.0.fetch_max(offset, Ordering::AcqRel);
    }
}

/// What the stream's actor sends its writer.
pub enum Command {
    /// Append encoded frames to the segment that starts at `segment`.
    Append {
        /// The first offset of the segment (its file name).
        segment: u64,
        /// The frames (shared with the tail cache, whose records are slices of them).
        bytes: bytes::Bytes,
        /// The offset after the last of these frames.
        end: u64,
        /// Resolved once written and fsynced (None: a chunk of an append whose last
        /// chunk carries the answer).
        done: Option<Completer>,
    },
    /// Write the index file of the segment that starts at `segment`, now sealed (its
    /// last frames were sent before this command).
    Seal {
        /// The first offset of the sealed segment.
        segment: u64,
        /// The index file's bytes ([`super::index_file::SealedIndex::encode`]).
        bytes: Vec<u8>,
    },
    /// Write the recovery point of the active segment that starts at `segment` (the
    /// frames it covers were sent before this command).
    Point {
        /// The first offset of the active segment.
        segment: u64,
        /// The point's bytes ([`super::index_file::SealedIndex::encode_point`]).
        bytes: Vec<u8>,
    },
    /// Remove the segment file that starts at this offset, and its index (retention).
    Remove(u64),
    /// Replace the consumer offsets file with these bytes (a framed snapshot).
    Offsets(Vec<u8>),
}

/// The file name of the segment that starts at `first`.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// The stored consumer offsets.
pub fn offsets_path(dir: &Path) -> PathBuf {
    dir.join("offsets")
}

struct Writer {
    dir: PathBuf,
    /// The segment being appended to: its first offset and open file.
    active: Option<(u64, File)>,
    /// Set after a failed write or fsync.
    failed: Option<Arc<StorageError>>,
}

impl Writer {
    fn file_for(&mut self, segment: u64) -> Result<(&mut File, bool), StorageError> {
        let mut created = false;
        if self.active.as_ref().map(|(s, _)| *s) != Some(segment) {
            if let Some((_, f)) = self.active.take() {
                f.sync_data()
                    .map_err(|e| StorageError::io("syncing segment", &self.dir, e))?;
            }
            let path = segment_path(&self.dir, segment);
            created = !path.exists();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| StorageError::io("opening segment", &path, e))?;
            self.active = Some((segment, f));
        }
        Ok((&mut self.active.as_mut().expect("just set").1, created))
    }

    /// Writes appends of the open group (not fsynced: see [`Writer::sync`]); true when
    /// a segment file was created.
    fn write_group(
        &mut self,
        appends: &[(u64, bytes::Bytes)],
        end: u64,
        written: &Written,
    ) -> Result<bool, StorageError> {
        if let Some(e) = &self.failed {
            return Err(StorageError::Failed(e.clone()));
        }
        let mut new_file = false;
        // One `writev` per run of chunks bound for the same segment (most groups: one
        // run), not a `write` per chunk.
        for run in appends.chunk_by(|a, b| a.0 == b.0) {
            let dir = self.dir.clone();
            let (f, created) = self.file_for(run[0].0)?;
            new_file |= created;
            write_all_vectored(f, run)
                .map_err(|e| StorageError::io("writing stream segment", &dir, e))?;
        }
        // Written (in the page cache): readers may read it; the confirm waits for the fsync.
        written.set(end);
        Ok(new_file)
    }

    /// Fsyncs the active segment (and the directory when a segment file was created):
    /// every frame written before it is then on disk.
    fn sync(&self, new_file: bool) -> Result<(), StorageError> {
        if let Some((_, f)) = &self.active {
            f.sync_data()
                .map_err(|e| StorageError::io("syncing stream segment", &self.dir, e))?;
        }
        if new_file {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes the appends the open group took since its last write, unless the stream
    /// was deleted (then they are refused, [`StorageError::Closed`]).
    fn write_pending(
        &mut self,
        group: &mut Group,
        written: &Written,
        deleted: &AtomicBool,
    ) -> Result<(), StorageError> {
        let appends = std::mem::take(&mut group.appends);
        if deleted.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        group.new_file |= self.write_group(&appends, group.end, written)?;
        Ok(())
    }

    /// Writes the index files of sealed segments (their frames are fsynced: a
    /// segment is sealed by an append to the next one, written in the same group or
    /// an earlier one). A failure is logged and costs only a scan at the next start.
    fn write_seals(&self, seals: &[(u64, Vec<u8>)]) {
        if seals.is_empty() || self.failed.is_some() {
            return;
        }
        let mut any = false;
        for (segment, bytes) in seals {
            match super::index_file::write(&self.dir, *segment, bytes) {
                Ok(()) => any = true,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), segment, error = %e, "cannot write a sealed segment's index: the next start scans the segment")
                }
            }
        }
        if any {
            if let Err(e) = sync_dir(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the stream directory after writing segment indexes");
            }
        }
        // A sealed segment's point says less than its index file (recovery ignores and
        // removes it when the index file is used; a crash before this leaves it so).
        for (segment, _) in seals {
            super::index_file::remove_point(&self.dir, *segment);
        }
    }

    /// Writes the active segment's recovery point (its frames are fsynced: the
    /// appends it covers came before it). A failure is logged and costs only a longer
    /// scan at the next start.
    fn write_point(&self, segment: u64, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let written = super::index_file::write_point(&self.dir, segment, bytes)
            .and_then(|_| sync_dir(&self.dir));
        if let Err(e) = written {
            tracing::warn!(dir = %self.dir.display(), segment, error = %e, "cannot write the active segment's recovery point: the next start scans more of it");
        }
    }

    fn write_offsets(&self, bytes: &[u8]) -> Result<(), StorageError> {
        let tmp = self.dir.join("offsets.tmp");
        let mut f =
            File::create(&tmp).map_err(|e| StorageError::io("creating offsets", &tmp, e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_data())
            .map_err(|e| StorageError::io("writing offsets", &tmp, e))?;
        let path = offsets_path(&self.dir);
        std::fs::rename(&tmp, &path).map_err(|e| StorageError::io("renaming offsets", &path, e))?;
        sync_dir(&self.dir)
    }
}

/// Writes every chunk of `run` to `f`, in order, with as few `writev` calls as the
/// kernel allows (it may take part of them, or fewer slices than given).
fn write_all_vectored(f: &mut File, run: &[(u64, bytes::Bytes)]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> = run
        .iter()
        .filter(|(_, b)| !b.is_empty())
        .map(|(_, b)| std::io::IoSlice::new(b))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Frames a consumer offsets snapshot (MessagePack map name -> offset).
pub fn encode_offsets(
    offsets: &std::collections::BTreeMap<String, u64>,
) -> Result<Vec<u8>, StorageError> {
    let mut buf = Vec::new();
    frame::encode_with(&mut buf, |b| {
        rmp_serde::encode::write(b, offsets).map_err(|e| StorageError::Encode(e.to_string()))
    })?;
    Ok(buf)
}

/// The consumer offsets stored in `dir` (none when there is no file; an unreadable
/// one is logged and read as none).
pub fn read_offsets(dir: &Path) -> Result<std::collections::BTreeMap<String, u64>, StorageError> {
    let path = offsets_path(dir);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(StorageError::io("reading offsets", &path, e)),
    };
    match frame::read_at(&data, 0) {
        FrameAt::Good { payload, .. } => rmp_serde::from_slice(payload)
            .map_err(|e| corrupt_offsets(&path, format!("bad consumer offsets: {e}"))),
        other => {
            // Written to a temporary file and renamed: a damaged file is not a torn write.
            tracing::error!(path = %path.display(), ?other, "consumer offsets unreadable: named consumers start from their default");
            Ok(Default::default())
        }
    }
}

fn corrupt_offsets(path: &Path, reason: String) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// The commands one turn of the writer took: a group of appends, fsynced once, and
/// what comes after their fsync.
#[derive(Default)]
struct Group {
    /// Appends taken and not yet written.
    appends: Vec<(u64, bytes::Bytes)>,
    /// Whether the group took any append.
    any_append: bool,
    /// Whether a write of this group created a segment file.
    new_file: bool,
    /// Resolved after the group's fsync.
    done: Vec<Completer>,
    /// The offset after the group's last record.
    end: u64,
    removes: Vec<u64>,
    seals: Vec<(u64, Vec<u8>)>,
    point: Option<(u64, Vec<u8>)>,
    offsets: Option<Vec<u8>>,
}

impl Group {
    fn take(&mut self, cmd: Command) {
        match cmd {
            Command::Append {
                segment,
                bytes,
                end,
                done,
            } => {
                self.end = self.end.max(end);
                self.appends.push((segment, bytes));
                self.any_append = true;
                self.done.extend(done);
            }
            Command::Seal { segment, bytes } => {
                if self.point.as_ref().is_some_and(|(s, _)| *s == segment) {
                    self.point = None;
                }
                self.seals.push((segment, bytes));
            }
            Command::Point { segment, bytes } => self.point = Some((segment, bytes)),
            Command::Remove(s) => self.removes.push(s),
            Command::Offsets(b) => self.offsets = Some(b),
        }
    }
}

/// Runs the writer until every sender is gone. Once `deleted` is set (the stream was
/// deleted) the appends not yet begun are refused with [`StorageError::Closed`]
/// instead of written: their publishers are nacked, never confirmed for a log that is
/// about to be removed.
pub fn run(dir: PathBuf, rx: Receiver<Command>, written: Written, deleted: Arc<AtomicBool>) {
    run_with(dir, rx, written, deleted, Gather::default())
}

/// [`run`], with the policy that says how long a group waits for more appends.
fn run_with(
    dir: PathBuf,
    rx: Receiver<Command>,
    written: Written,
    deleted: Arc<AtomicBool>,
    mut gather: Gather,
) {
    let mut w = Writer {
        dir,
        active: None,
        failed: None,
    };
    loop {
        let Ok(first) = rx.recv() else { break };
        let start = written.get();
        let mut group = Group::default();
        group.take(first);
        for cmd in rx.try_iter() {
            group.take(cmd);
        }
        if group.any_append {
            let mut result = w.write_pending(&mut group, &written, &deleted);
            if let (Ok(()), Some(linger)) =
                (&result, gather.linger(group.end.saturating_sub(start)))
            {
                // Held open: what comes is written at once, fsynced with the rest.
                let deadline = Instant::now() + linger;
                while result.is_ok() && gather.wants_more(group.end.saturating_sub(start)) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(cmd) => group.take(cmd),
                        Err(_) => break,
                    }
                    for cmd in rx.try_iter() {
                        group.take(cmd);
                    }
                    if !group.appends.is_empty() {
                        result = w.write_pending(&mut group, &written, &deleted);
                    }
                }
            }
            if result.is_ok() {
                let began = Instant::now();
                result = w.sync(group.new_file);
                gather.finished(group.end.saturating_sub(start), began.elapsed());
            }
            // A refusal for a deleted stream is no write failure.
            let failed = result
                .as_ref()
                .err()
                .filter(|_| !deleted.load(Ordering::Acquire));
            if let Some(e) = failed {
                if w.failed.is_none() {
                    tracing::error!(dir = %w.dir.display(), error = %e, "stream write failed: later appends are refused");
                    w.failed = Some(Arc::new(e.clone()));
                }
            }
            for d in std::mem::take(&mut group.done) {
                d.complete(result.clone());
            }
        }
        // Before the removes: a segment sealed and removed in one group leaves no index.
        w.write_seals(&group.seals);
        if let Some((segment, bytes)) = group.point {
            w.write_point(segment, &bytes);
        }
        for s in group.removes {
            let path = segment_path(&w.dir, s);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stream segment");
            }
            // After the segment: a crash between leaves an index without a segment,
            // which recovery removes, rather than a segment it would have to scan.
            super::index_file::remove(&w.dir, s);
            super::index_file::remove_point(&w.dir, s);
        }
        if let Some(b) = group.offsets {
            if let Err(e) = w.write_offsets(&b) {
                tracing::error!(dir = %w.dir.display(), error = %e, "cannot store the consumer offsets");
            }
        }
    }
    if let Some((_, f)) = w.active.take() {
        let _ = f.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More chunks than one `writev` takes (the kernel's limit is 1,024 slices), some
    /// empty: the file holds every byte, in order.
    #[test]
    fn a_run_of_chunks_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("seg");
        let mut f = File::create(&path).expect("create");
        let run: Vec<(u64, bytes::Bytes)> = (0..2_500u32)
            .map(|i| {
                let len = (i % 7) as usize * 3; // every seventh chunk is empty
                (0, bytes::Bytes::from(vec![(i % 251) as u8; len]))
            })
            .collect();
        write_all_vectored(&mut f, &run).expect("written");
        let expected: Vec<u8> = run.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        assert_eq!(std::fs::read(&path).expect("read"), expected);
    }
    /// A group that begins with fewer than half the records of the one before stays
    /// open for the appends that follow (a publisher refilling its window): its record
    /// is written at once but fsynced and answered with them.
    #[test]
    fn a_small_group_is_fsynced_with_the_appends_that_follow() {
        use crate::storage::completion::Completion;
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("temp dir");
        let (tx, rx) = std::sync::mpsc::channel();
        let written = Written::new(0);
        let (path, w) = (dir.path().to_path_buf(), written.clone());
        // A linger far longer than the test: only the records end the wait.
        let gather = Gather::fixed(Duration::from_secs(120));
        let writer = std::thread::spawn(move || {
            run_with(path, rx, w, Arc::new(AtomicBool::new(false)), gather)
        });
        let append = |end, done| Command::Append {
            segment: 0,
            bytes: bytes::Bytes::from(vec![7u8; 10]),
            end,
            done,
        };
        let (done, stored) = Completion::pending();
        tx.send(append(100, Some(done))).expect("send");
        stored.wait().expect("a group of 100 stored");
        // One record.
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let at_answer = written.clone();
        let done = Completer::calling(move |r: Result<(), StorageError>| {
            seen_tx.send((r.is_ok(), at_answer.get())).expect("seen");
        });
        tx.send(append(101, Some(done))).expect("send");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while written.get() < 101 {
            assert!(
                std::time::Instant::now() < deadline,
                "the record was never written"
            );
            std::thread::yield_now();
        }
        // Then 59 more: with them the group holds over half of 100.
        let (done, stored) = Completion::pending();
        tx.send(append(160, Some(done))).expect("send");
        stored.wait().expect("stored");
        let (ok, written_then) = seen
            .recv_timeout(Duration::from_secs(30))
            .expect("answered");
        assert!(ok);
        assert_eq!(
            written_then, 160,
            "fsynced and answered with the records that followed"
        );
        drop(tx);
        writer.join().expect("writer");
    }
}
