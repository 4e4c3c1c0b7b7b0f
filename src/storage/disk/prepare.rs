//! The segment preparer: a thread that creates the next segment (zero-filled, fsynced,
//! renamed into place) while the writer fills the current one, so a roll never waits
//! for preallocation. It only ever touches files the writer has not opened yet.

use super::segment;
use crate::storage::error::StorageError;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

/// Makes segments ready ahead of need on a thread of its own, so a roll does not wait
/// for zero-filling.
pub struct Preparer {
    /// Sequence numbers to prepare.
    requests: Option<Sender<u64>>,
    /// Prepared segments (or the error).
    ready: Receiver<(u64, Result<PathBuf, StorageError>)>,
    /// The sequence number being prepared, if any.
    pending: Option<u64>,
    /// The thread, joined on drop.
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    /// Starts the thread, making segments of `size` bytes in `dir`.
    pub fn start(dir: PathBuf, size: u64) -> Result<Preparer, StorageError> {
        let (req_tx, req_rx) = mpsc::channel::<u64>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("actormq-storage-prepare".into())
            .spawn(move || {
                for seq in req_rx {
                    if ready_tx
                        .send((seq, segment::prepare(&dir, seq, size)))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .map_err(|e| StorageError::io("starting the segment preparer for", "", e))?;
        Ok(Preparer {
            requests: Some(req_tx),
            ready: ready_rx,
            pending: None,
            thread: Some(thread),
        })
    }

    /// Asks for segment `seq` to be made ready (ignored while one is pending).
    pub fn request(&mut self, seq: u64) {
        if self.pending.is_none() {
            if let Some(tx) = &self.requests {
                if tx.send(seq).is_ok() {
                    self.pending = Some(seq);
                }
            }
        }
    }

    /// The path of prepared segment `seq`, waiting for it if need be.
    pub fn take(&mut self, seq: u64) -> Result<PathBuf, StorageError> {
        if self.pending != Some(seq) {
            if let Some(other) = self.pending {
                // An unexpected number: collect it and start over.
                let _ = self.ready.recv();
                tracing::debug!(seq = other, "discarding a prepared segment");
                self.pending = None;
            }
            self.request(seq);
        }
        let (got, result) = self.ready.recv().map_err(|_| StorageError::Closed)?;
        self.pending = None;
        debug_assert_eq!(got, seq);
        result
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
