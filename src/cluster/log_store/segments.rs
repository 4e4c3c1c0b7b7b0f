//! The log's files: segments named `log-<index of the first entry, 20 digits>`, each a
//! run of records, appended to until it passes [`SEGMENT_BYTES`]; the next append
//! starts a new one. So a purge deletes whole old segments instead of rewriting what
//! it keeps (for a busy quorum queue that rewrite was tens of megabytes, and delayed
//! the group's heartbeats), and a truncation rewrites one segment at most.
//!
//! A log written before segments (one file, `log`) becomes the first segment when it
//! is opened. Opening reads the segments in order; a short or corrupt record ends the
//! log there: its segment is truncated at it and any later segment removed (an append
//! cut by a crash was never reported flushed, so no one counted on what follows it).

use super::{parse, Logged};
use openraft::Entry;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A segment takes appends until it holds this many bytes (small in unit tests, so
/// that their logs roll over segments).
#[cfg(not(test))]
pub(super) const SEGMENT_BYTES: u64 = 8 << 20;
#[cfg(test)]
pub(super) const SEGMENT_BYTES: u64 = 64 << 10;

/// The name of the segment whose first entry is `first`.
pub(super) fn name(first: u64) -> String {
    format!("log-{first:020}")
}

fn first_of(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_prefix("log-")?;
    (digits.len() == 20).then(|| digits.parse().ok())?
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segments of one log directory: each one's first index and length in bytes.
pub(super) struct Files {
    dir: PathBuf,
    lens: BTreeMap<u64, u64>,
    /// The segment appends go to, kept open between appends (by its first index):
    /// opening and closing it for every append cost two system calls and a path
    /// lookup per batch on every member. Dropped whenever that segment is removed or
    /// replaced, so an append never writes to an unlinked file.
    open: Option<(u64, File)>,
}

impl Files {
    /// Opens the segments of `dir` and reads their entries (each with its record's
    /// size), in order, ending at the first torn or corrupt record.
    #[allow(clippy::type_complexity)]
    pub(super) fn open<C: Logged>(dir: &Path) -> std::io::Result<(Files, Vec<(Entry<C>, usize)>)>
    where
        Entry<C>: DeserializeOwned,
    {
        let legacy = dir.join("log");
        if legacy.exists() {
            let bytes = std::fs::read(&legacy)?;
            match parse::<C>(&bytes).0.first() {
                Some((e, _)) => std::fs::rename(&legacy, dir.join(name(e.log_id.index)))?,
                None => std::fs::remove_file(&legacy)?,
            }
            sync_dir(dir)?;
        }
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| first_of(e.file_name().to_str()?))
            .collect();
        firsts.sort_unstable();
        let mut files = Files {
            dir: dir.to_path_buf(),
            lens: BTreeMap::new(),
            open: None,
        };
        let mut all = Vec::new();
        let mut ended = false;
        let mut removed = false;
        for first in firsts {
            let path = dir.join(name(first));
            if ended {
                tracing::warn!(path = %path.display(), "raft log: segment after a torn record removed");
                std::fs::remove_file(&path)?;
                removed = true;
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let (entries, valid) = parse::<C>(&bytes);
            if valid < bytes.len() {
                tracing::warn!(path = %path.display(), kept = valid, dropped = bytes.len() - valid, "raft log: torn tail truncated");
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
                ended = true;
            }
            files.lens.insert(first, valid as u64);
            all.extend(entries);
        }
        if removed {
            // Durable before anything is appended: a removed segment that came back
            // after a power loss would bring stale entries under the indexes of new
            // ones.
            sync_dir(dir)?;
        }
        Ok((files, all))
    }

    /// The path of the segment starting at `first`.
    pub(super) fn path(&self, first: u64) -> PathBuf {
        self.dir.join(name(first))
    }

    /// Appends `bytes` (the records of entries from `first_index` on) to the last
    /// segment, or to a new one when it is full, and fsyncs them.
    pub(super) fn append(&mut self, first_index: u64, bytes: &[u8]) -> std::io::Result<()> {
        let first = match self.lens.iter().next_back() {
            Some((f, len)) if *len < SEGMENT_BYTES => *f,
            _ => first_index,
        };
        let new = !self.lens.contains_key(&first);
        if self.open.as_ref().is_none_or(|(f, _)| *f != first) {
            // A segment full or new: the one before it is never appended to again.
            self.open = None;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(first))?;
            self.open = Some((first, f));
        }
        let (_, f) = self.open.as_mut().expect("opened above");
        // The stage times of a commit round at debug level (docs/CLUSTERING.md,
        // "Measured"): what this member's write and fsync of an append cost.
        let started = std::time::Instant::now();
        let written = f.write_all(bytes).and_then(|()| {
            let wrote = started.elapsed();
            f.sync_data()?;
            tracing::debug!(
                target: "actormq::cluster::stages",
                bytes = bytes.len(),
                write_us = wrote.as_micros() as u64,
                sync_us = (started.elapsed() - wrote).as_micros() as u64,
                "log append"
            );
            Ok(())
        });
        if written.is_err() {
            // Reopened on the next append: a failed write may have left the handle at
            // an unknown length (and `lens` is not advanced).
            self.open = None;
        }
        written?;
        if new {
            // The new file's name is durable too.
            sync_dir(&self.dir)?;
        }
        *self.lens.entry(first).or_default() += bytes.len() as u64;
        Ok(())
    }

    /// Removes the segments that start at or after `index` (the last first, so a
    /// crash leaves no gap); answers the first index of the segment that holds the
    /// entries just before `index`, if any, for the caller to rewrite.
    pub(super) fn remove_from(&mut self, index: u64) -> std::io::Result<Option<u64>> {
        let later: Vec<u64> = self.lens.range(index..).map(|(f, _)| *f).rev().collect();
        for first in later {
            self.close(first);
            std::fs::remove_file(self.path(first))?;
            self.lens.remove(&first);
        }
        Ok(self.lens.keys().next_back().copied())
    }

    /// Replaces the segment starting at `first` with `bytes`.
    pub(super) fn rewrite(&mut self, first: u64, bytes: &[u8]) -> std::io::Result<()> {
        // Replaced by a rename: a handle kept open would append to the old file.
        self.close(first);
        crate::cluster::log_store::write_atomic(&self.path(first), bytes)?;
        self.lens.insert(first, bytes.len() as u64);
        Ok(())
    }

    /// Removes the segments whose every entry is at or before `upto` (never the last
    /// one, which takes the next appends).
    pub(super) fn purge(&mut self, upto: u64) -> std::io::Result<()> {
        let firsts: Vec<u64> = self.lens.keys().copied().collect();
        for pair in firsts.windows(2) {
            if pair[1] > upto + 1 {
                break;
            }
            self.close(pair[0]);
            std::fs::remove_file(self.path(pair[0]))?;
            self.lens.remove(&pair[0]);
        }
        Ok(())
    }

    /// Closes the segment starting at `first` if it is the one kept open.
    fn close(&mut self, first: u64) {
        if self.open.as_ref().is_some_and(|(f, _)| *f == first) {
            self.open = None;
        }
    }

    /// The first index of the segment kept open for appends, if any.
    #[cfg(test)]
    pub(super) fn open_segment(&self) -> Option<u64> {
        self.open.as_ref().map(|(f, _)| *f)
    }

    /// The segments' first indexes, in order.
    #[cfg(test)]
    pub(super) fn firsts(&self) -> Vec<u64> {
        self.lens.keys().copied().collect()
    }
}
