//! Small filesystem helpers the stores share: free space of a filesystem, fsync of a
//! directory (so a created, renamed or deleted file survives a power loss), and an
//! exclusive lock on a data directory so two brokers never write the same files.

use super::error::StorageError;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Free bytes available to this (unprivileged) process on the filesystem holding
/// `path`, as `df` shows them (statvfs `f_bavail * f_frsize`).
pub fn disk_free(path: &Path) -> Result<u64, StorageError> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            StorageError::io(
                "checking free space of",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL"),
            )
        })?;
        // SAFETY: statvfs writes into the zeroed struct we own; `c` is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(StorageError::io(
                "checking free space of",
                path,
                std::io::Error::last_os_error(),
            ));
        }
        #[allow(clippy::unnecessary_cast)] // the field widths differ between platforms
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(u64::MAX)
    }
}

/// Fsyncs a directory, making the creation, rename or removal of its entries durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io("syncing directory", dir, e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// An exclusive advisory lock on a file, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    /// The locked file (the lock lives as long as the open file).
    _file: File,
    /// Its path, for messages.
    path: PathBuf,
}

/// How long a lock held by another is asked for again before the directory is called
/// in use ([`DirLock::acquire`]).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

impl DirLock {
    /// Locks `path` (created if missing), or fails with [`StorageError::Locked`] naming
    /// `dir` when another process holds it.
    pub fn acquire(dir: &Path, path: PathBuf) -> Result<DirLock, StorageError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("opening lock file", &path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // A lock held a moment longer than its holder: a process that forks (to
            // spawn a child) while a broker of the same process closes its lock file
            // holds a copy of the descriptor, and so the lock, until the child's exec
            // closes it. A broker started again on the directory right after the
            // shutdown of the one before (an embedding service, the tests) would be
            // refused for that moment; the lock is asked again for up to a second.
            let deadline = std::time::Instant::now() + LOCK_PATIENCE;
            loop {
                // SAFETY: flock on a file descriptor we own.
                let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                if rc == 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(StorageError::io("locking", &path, e));
                }
                if std::time::Instant::now() >= deadline {
                    return Err(StorageError::Locked(dir.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        Ok(DirLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_temp_dir_is_positive() {
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_free(dir.path()).unwrap() > 0);
        assert!(disk_free(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_locked_dir_cannot_be_locked_twice() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(dir.path(), dir.path().join("LOCK")).unwrap();
        let e = DirLock::acquire(dir.path(), dir.path().join("LOCK")).unwrap_err();
        assert!(matches!(e, StorageError::Locked(_)), "{e}");
        drop(a);
        DirLock::acquire(dir.path(), dir.path().join("LOCK")).unwrap();
    }
}
