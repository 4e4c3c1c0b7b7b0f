//! The storage layer's one error enum. Every variant names the file or directory
//! concerned; it is `Clone` because one failed group commit fails many appends.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// An error of the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The filesystem is full: nothing of the append was stored (ENOSPC, EDQUOT).
    #[error("disk full while {op} {path}: {source} (see storage.disk_free_limit)")]
    DiskFull {
        /// What the store was doing ("writing", "creating segment", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// Any other I/O error.
    #[error("I/O error while {op} {path}: {source}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// An earlier write or fsync failed; the log's state on disk is unknown, so the store
    /// refuses every append until it is reopened. Carries the first error.
    #[error("storage failed earlier and refuses writes until restart: {0}")]
    Failed(Arc<StorageError>),
    /// A file that must be intact is not (the metadata snapshot, a segment header).
    #[error("corrupt {path}: {reason}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process (storage.data_dir)")]
    Locked(PathBuf),
    /// A record could not be encoded (a bug, or a value MessagePack cannot hold).
    #[error("cannot encode a storage record: {0}")]
    Encode(String),
    /// The store was closed (or its writer thread is gone) before the operation finished.
    #[error("storage is closed")]
    Closed,
}

impl StorageError {
    /// Wraps an I/O error, telling a full disk from the other errors.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, e: io::Error) -> Self {
        let path = path.into();
        let full = e.kind() == io::ErrorKind::StorageFull
            || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
        let source = Arc::new(e);
        if full {
            StorageError::DiskFull { op, path, source }
        } else {
            StorageError::Io { op, path, source }
        }
    }

    /// True when the error (or the error it wraps) is a full disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::DiskFull { .. } => true,
            StorageError::Failed(inner) => inner.is_disk_full(),
            _ => false,
        }
    }
}
