//! Segment files: naming, the 16-byte header, preparation (preallocated and zero-filled,
//! so an fdatasync after an append flushes data only, not block allocation or file
//! size: measurably faster than appending to a growing file), and the active segment
//! the writer appends to.
//!
//! A segment is prepared under a `.tmp` name, fsynced, renamed to `NNN.seg`, and the
//! directory fsynced: a file with a segment name always has an intact header and a
//! durable directory entry before anything is written to it.

use crate::storage::error::StorageError;
use crate::storage::fsutil::sync_dir;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The magic at the start of every segment; its last two characters are the format
/// version.
pub const MAGIC: &[u8; 8] = b"AMQSEG01";

/// Bytes of the segment header: magic, then the sequence number (u64 LE).
pub const HEADER_LEN: u64 = 16;

/// The file name of segment `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// The sequence number of a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of segment `seq`.
pub fn header(seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

/// The segments in `dir`, sequence numbers increasing. A `.seg.tmp` file is skipped: on
/// a running store it is the preparer's next segment, being written.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_name(name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// Removes leftover `.seg.tmp` files (a preparation cut short by a crash). Only at
/// recovery, before the preparer runs: on a running store one of them is being written.
pub fn remove_unfinished(dir: &Path) -> Result<(), StorageError> {
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".seg.tmp"))
        {
            let path = entry.path();
            tracing::info!(file = %path.display(), "removing an unfinished segment");
            fs::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
        }
    }
    Ok(())
}

/// Creates segment `seq` of `size` bytes in `dir`: header, zeros, fsynced, renamed into
/// place, directory fsynced. Answers its path. Runs on the preparer thread.
pub fn prepare(dir: &Path, seq: u64, size: u64) -> Result<PathBuf, StorageError> {
    let path = dir.join(file_name(seq));
    let tmp = dir.join(format!("{}.tmp", file_name(seq)));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(|e| StorageError::io("creating segment", &tmp, e))?;
    let zeros = vec![0u8; 1 << 20];
    let result = (|| {
        f.write_all(&header(seq))?;
        let mut left = size.saturating_sub(HEADER_LEN);
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(StorageError::io("preallocating segment", &tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| StorageError::io("renaming segment", &path, e))?;
    sync_dir(dir)?;
    Ok(path)
}

/// The segment being appended to. Owned by the writer thread.
#[derive(Debug)]
pub struct Active {
    /// Its sequence number.
    pub seq: u64,
    /// Its path, for messages.
    pub path: PathBuf,
    /// The open file, positioned at `pos`.
    file: File,
    /// Where the next frame goes (end of the written data).
    pub pos: u64,
    /// The preallocated size; frames go past it only when one frame alone is larger.
    pub capacity: u64,
    /// Written since the last fsync.
    pub dirty: bool,
}

impl Active {
    /// Opens segment `seq` at `path` for appending at `pos`.
    pub fn open(seq: u64, path: PathBuf, pos: u64) -> Result<Active, StorageError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("opening segment", &path, e))?;
        let capacity = file
            .metadata()
            .map_err(|e| StorageError::io("reading size of", &path, e))?
            .len();
        file.seek(SeekFrom::Start(pos))
            .map_err(|e| StorageError::io("seeking in", &path, e))?;
        Ok(Active {
            seq,
            path,
            file,
            pos,
            capacity,
            dirty: false,
        })
    }

    /// Bytes left before the preallocated end.
    pub fn remaining(&self) -> u64 {
        self.capacity.saturating_sub(self.pos)
    }

    /// True when nothing but the header has been written.
    pub fn is_empty(&self) -> bool {
        self.pos <= HEADER_LEN
    }

    /// Writes `buf` at the end of the data.
    pub fn write(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(buf)
            .map_err(|e| StorageError::io("writing", &self.path, e))?;
        self.pos += buf.len() as u64;
        self.capacity = self.capacity.max(self.pos);
        self.dirty = true;
        Ok(())
    }

    /// Flushes the written data to disk (fdatasync).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("syncing", &self.path, e))?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_number() {
        assert_eq!(parse_name(&file_name(7)), Some(7));
        assert_eq!(parse_name("7.seg"), None);
        assert_eq!(parse_name("00000000000000000007.seg.tmp"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn a_prepared_segment_is_zero_filled_with_a_header() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("00000000000000000002.seg.tmp"), b"junk").unwrap();
        let path = prepare(dir.path(), 3, 8192).unwrap();
        let data = fs::read(&path).unwrap();
        assert_eq!(data.len(), 8192);
        assert_eq!(&data[..16], &header(3));
        assert!(data[16..].iter().all(|b| *b == 0));
        // Listing skips a `.tmp` (on a running store, the segment being prepared) and
        // leaves it; only recovery removes it.
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed, vec![(3, path.clone())]);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "tmp kept by list"
        );
        remove_unfinished(dir.path()).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![(3, path)]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "tmp removed");
    }
}
