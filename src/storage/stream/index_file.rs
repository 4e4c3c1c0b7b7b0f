//! The index file of a sealed segment (`<first offset, 20 digits>.idx`, beside its
//! `.seg`): what recovery would otherwise rebuild by reading every frame of the
//! segment, written once when the segment is rolled (by the writer thread, after the
//! segment's last frames are fsynced) or when recovery scanned a sealed segment that
//! had none. Recovery trusts a sealed segment whose index file is whole (CRC), well
//! formed, and describes the file as it is (same first offset, same length), and does
//! not read its frames: their checksums are then checked lazily, by the first read of
//! each frame ([`super::verified`]). A damaged, stale or missing file only costs the
//! scan it was meant to spare; it is never an error.
//!
//! The same layout, under another magic and name (`<first offset>.idx.partial`), is the
//! active segment's **recovery point**: its sparse index up to a byte position the
//! writer had fsynced (`bytes` is then that position, `next` the offset of the record
//! that starts there), written now and then while the segment grows
//! ([`super::RECOVERY_POINT_SPACING`]) and at a clean shutdown. Recovery trusts the
//! prefix it covers after the checks a sealed index gets and scans only the bytes
//! after it, as Kafka recovers only what follows its recovery point. A segment that is
//! sealed (its `.idx` written), removed or cut loses its point.
//!
//! A fixed little-endian layout rather than MessagePack: the file is the in-memory
//! index as it is (three 8-byte words an entry), its size follows from the count so a
//! short or long file is refused before anything else, and decoding is a bounds-checked
//! loop with no schema to evolve or to fuzz beyond this one function. All integers
//! little-endian:
//!
//! ```text
//! magic     8  b"AMQSIDX1" (the 1 is the layout's version); a point: b"AMQSRPT1"
//! first     8  the segment's first offset (its file name)
//! next      8  the offset after its last record (a point: after the last it covers)
//! bytes     8  the segment file's length (a point: the bytes it covers)
//! last_ts   8  the timestamp of its last record (ms, signed)
//! run_start 8  the first offset of its trailing run of records with last_ts
//! count     4  entries that follow (at least one: the first record, at 0)
//! entries   count x (offset 8, timestamp 8 signed, file position 8)
//! crc       4  CRC-32 (ISO-HDLC) of every byte before it
//! ```

use super::{IndexEntry, Segment};
use crate::storage::error::StorageError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first bytes of every index file (layout version 1).
pub const MAGIC: &[u8; 8] = b"AMQSIDX1";

/// The first bytes of every recovery point (the same layout, version 1): a point is
/// never taken for a sealed segment's index file, nor the other way round.
pub const POINT_MAGIC: &[u8; 8] = b"AMQSRPT1";

/// Bytes before the entries: magic, five words, count.
const HEAD: usize = 8 + 5 * 8 + 4;
/// Bytes of one entry.
const ENTRY: usize = 24;

/// What an index file says of its sealed segment, or a recovery point of the first
/// `bytes` bytes of the active one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedIndex {
    /// The segment's first offset.
    pub first: u64,
    /// The offset after its last record.
    pub next: u64,
    /// The segment file's length in bytes (a recovery point: the bytes it covers).
    pub bytes: u64,
    /// The timestamp of its last record.
    pub last_timestamp: i64,
    /// The first offset of the trailing records stamped `last_timestamp` (recovery's
    /// "last chunk" start, when the chunk began in this segment).
    pub run_start: u64,
    /// The sparse index: (offset, timestamp, file position) of each entry.
    pub entries: Vec<(u64, i64, u64)>,
}

/// The index file of the segment that starts at `first`.
pub fn path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.idx"))
}

/// The recovery point of the (active) segment that starts at `first`.
pub fn point_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.idx.partial"))
}

/// The temporary file `to` is written to before its rename (`.idx.tmp`,
/// `.idx.partial.tmp`).
fn tmp_path(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

impl SealedIndex {
    /// What `seg`, sealed with `next` as the offset after its last record, says of
    /// itself. `None` for a segment without records (never sealed).
    pub(super) fn of(seg: &Segment, next: u64) -> Option<Self> {
        Some(SealedIndex {
            first: seg.first,
            next,
            bytes: seg.bytes,
            last_timestamp: seg.last_timestamp?,
            run_start: seg.run_start,
            entries: seg
                .index
                .iter()
                .map(|e| (e.offset, e.timestamp, e.pos))
                .collect(),
        })
    }

    /// The segment as recovery would have built it by reading its frames.
    pub(super) fn segment(&self) -> Segment {
        Segment {
            first: self.first,
            index: self
                .entries
                .iter()
                .map(|&(offset, timestamp, pos)| IndexEntry {
                    offset,
                    timestamp,
                    pos,
                })
                .collect(),
            bytes: self.bytes,
            last_timestamp: Some(self.last_timestamp),
            run_start: self.run_start,
        }
    }

    /// The index file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(MAGIC)
    }

    /// The recovery point's bytes.
    pub fn encode_point(&self) -> Vec<u8> {
        self.encode_as(POINT_MAGIC)
    }

    fn encode_as(&self, magic: &[u8; 8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD + self.entries.len() * ENTRY + 4);
        b.extend_from_slice(magic);
        for w in [self.first, self.next, self.bytes] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&self.last_timestamp.to_le_bytes());
        b.extend_from_slice(&self.run_start.to_le_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for &(offset, timestamp, pos) in &self.entries {
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&timestamp.to_le_bytes());
            b.extend_from_slice(&pos.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads an index file's bytes: whole (its length is the count's, its CRC holds)
    /// and consistent with itself (entries in order within the segment, the first at
    /// its start). Says what is wrong otherwise.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        Self::decode_as(b, MAGIC, "an index file")
    }

    /// Reads a recovery point's bytes, checked as [`Self::decode`] checks an index file.
    pub fn decode_point(b: &[u8]) -> Result<Self, String> {
        Self::decode_as(b, POINT_MAGIC, "a recovery point")
    }

    fn decode_as(b: &[u8], magic: &[u8; 8], what: &str) -> Result<Self, String> {
        if b.len() < HEAD + 4 {
            return Err(format!("{} bytes: shorter than a header", b.len()));
        }
        if &b[..8] != magic {
            return Err(format!("not {what} (magic)"));
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(b[HEAD - 4..HEAD].try_into().expect("4 bytes")) as usize;
        let want = count
            .checked_mul(ENTRY)
            .and_then(|n| n.checked_add(HEAD + 4))
            .ok_or("entry count overflows")?;
        if b.len() != want {
            return Err(format!(
                "{} bytes where {count} entries take {want}",
                b.len()
            ));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        let idx = SealedIndex {
            first: word(8),
            next: word(16),
            bytes: word(24),
            last_timestamp: word(32) as i64,
            run_start: word(40),
            entries: (0..count)
                .map(|i| {
                    let at = HEAD + i * ENTRY;
                    (word(at), word(at + 8) as i64, word(at + 16))
                })
                .collect(),
        };
        idx.check()?;
        Ok(idx)
    }

    /// The structure a real segment's index has (a CRC-valid file is still checked:
    /// recovery builds the log from it, and the fuzzer writes valid CRCs).
    fn check(&self) -> Result<(), String> {
        if self.next <= self.first || self.bytes == 0 {
            return Err(format!(
                "empty segment: offsets {}..{}, {} bytes",
                self.first, self.next, self.bytes
            ));
        }
        if self.entries.first().map(|e| (e.0, e.2)) != Some((self.first, 0)) {
            return Err("the first entry is not the segment's first record".into());
        }
        for w in self.entries.windows(2) {
            if w[1].0 <= w[0].0 || w[1].2 <= w[0].2 {
                return Err(format!("entries out of order at offset {}", w[1].0));
            }
        }
        let last = self.entries.last().expect("one entry at least");
        if last.0 >= self.next || last.2 >= self.bytes {
            return Err(format!(
                "entry for offset {} past the segment's end",
                last.0
            ));
        }
        if self.run_start < self.first || self.run_start >= self.next {
            return Err(format!(
                "last run at {} outside the segment",
                self.run_start
            ));
        }
        Ok(())
    }
}

/// Writes `bytes` as the index file of segment `first`: to a temporary file, fsynced,
/// then renamed over the name, so a reader of the name finds a whole file or none. The
/// caller fsyncs the directory (once for several files) to make the name durable.
pub fn write(dir: &Path, first: u64, bytes: &[u8]) -> Result<(), StorageError> {
    write_file(&path(dir, first), bytes)
}

/// Writes `bytes` as the recovery point of segment `first`, as [`write`] writes an
/// index file (the caller fsyncs the directory).
pub fn write_point(dir: &Path, first: u64, bytes: &[u8]) -> Result<(), StorageError> {
    write_file(&point_path(dir, first), bytes)
}

fn write_file(to: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = tmp_path(to);
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| StorageError::io("creating segment index", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_data())
        .map_err(|e| StorageError::io("writing segment index", &tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| StorageError::io("renaming segment index", to, e))
}

/// Removes the index file of segment `first` if there is one.
pub fn remove(dir: &Path, first: u64) {
    remove_file(&path(dir, first));
}

/// Removes the recovery point of segment `first` if there is one.
pub fn remove_point(dir: &Path, first: u64) {
    remove_file(&point_path(dir, first));
}

fn remove_file(p: &Path) {
    match std::fs::remove_file(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %p.display(), error = %e, "cannot remove a segment index"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedIndex {
        SealedIndex {
            first: 100,
            next: 250,
            bytes: 300_000,
            last_timestamp: 1_700_000_000_123,
            run_start: 240,
            entries: vec![
                (100, 1_700_000_000_000, 0),
                (180, 1_700_000_000_100, 131_100),
            ],
        }
    }

    #[test]
    fn an_index_file_has_the_exact_layout_and_reads_back() {
        let idx = sample();
        let b = idx.encode();
        assert_eq!(b.len(), 52 + 2 * 24 + 4);
        assert_eq!(&b[..8], b"AMQSIDX1");
        assert_eq!(&b[8..16], &100u64.to_le_bytes());
        assert_eq!(&b[48..52], &2u32.to_le_bytes());
        assert_eq!(&b[52..60], &100u64.to_le_bytes());
        assert_eq!(
            &b[b.len() - 4..],
            &crc32fast::hash(&b[..b.len() - 4]).to_le_bytes()
        );
        assert_eq!(SealedIndex::decode(&b), Ok(idx));
    }

    #[test]
    fn a_cut_or_damaged_index_file_is_refused_never_a_panic() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert!(SealedIndex::decode(&b[..n]).is_err(), "cut at {n}");
        }
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x01;
            assert!(SealedIndex::decode(&d).is_err(), "bit flipped at {i}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(SealedIndex::decode(&long).is_err());
    }

    #[test]
    fn a_recovery_point_has_the_same_layout_under_its_own_magic() {
        let idx = sample();
        let (sealed, point) = (idx.encode(), idx.encode_point());
        assert_eq!(&point[..8], b"AMQSRPT1");
        assert_eq!(point[8..point.len() - 4], sealed[8..sealed.len() - 4]);
        assert_eq!(
            &point[point.len() - 4..],
            &crc32fast::hash(&point[..point.len() - 4]).to_le_bytes()
        );
        assert_eq!(SealedIndex::decode_point(&point), Ok(idx));
        // Neither is taken for the other.
        assert!(SealedIndex::decode(&point).is_err());
        assert!(SealedIndex::decode_point(&sealed).is_err());
        for n in 0..point.len() {
            assert!(
                SealedIndex::decode_point(&point[..n]).is_err(),
                "cut at {n}"
            );
        }
        for i in 0..point.len() {
            let mut d = point.clone();
            d[i] ^= 0x01;
            assert!(SealedIndex::decode_point(&d).is_err(), "bit flipped at {i}");
        }
    }

    #[test]
    fn a_point_is_written_whole_beside_the_index_file_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let idx = sample();
        write_point(dir.path(), 100, &idx.encode_point()).unwrap();
        assert!(point_path(dir.path(), 100).ends_with("00000000000000000100.idx.partial"));
        let back = std::fs::read(point_path(dir.path(), 100)).unwrap();
        assert_eq!(SealedIndex::decode_point(&back), Ok(idx));
        assert!(!path(dir.path(), 100).exists(), "not an index file");
        assert!(!tmp_path(&point_path(dir.path(), 100)).exists());
        remove_point(dir.path(), 100);
        remove_point(dir.path(), 100);
        assert!(!point_path(dir.path(), 100).exists());
    }

    #[test]
    fn a_crc_valid_index_that_cannot_describe_a_segment_is_refused() {
        let bad = [
            SealedIndex {
                next: 100,
                ..sample()
            },
            SealedIndex {
                entries: vec![(101, 0, 0)],
                ..sample()
            },
            SealedIndex {
                entries: vec![(100, 0, 0), (100, 0, 5)],
                ..sample()
            },
            SealedIndex {
                entries: vec![(100, 0, 0), (260, 0, 5)],
                ..sample()
            },
            SealedIndex {
                run_start: 250,
                ..sample()
            },
        ];
        for idx in bad {
            assert!(SealedIndex::decode(&idx.encode()).is_err(), "{idx:?}");
            assert!(
                SealedIndex::decode_point(&idx.encode_point()).is_err(),
                "{idx:?}"
            );
        }
    }
}
