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
//! A fixed little-endian layout rather than MessagePack: the file is the in-memory
//! index as it is (three 8-byte words an entry), its size follows from the count so a
//! short or long file is refused before anything else, and decoding is a bounds-checked
//! loop with no schema to evolve or to fuzz beyond this one function. All integers
//! little-endian:
//!
//! ```text
//! magic     8  b"AMQSIDX1" (the 1 is the layout's version)
//! first     8  the segment's first offset (its file name)
//! next      8  the offset after its last record
//! bytes     8  the segment file's length
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

/// Bytes before the entries: magic, five words, count.
const HEAD: usize = 8 + 5 * 8 + 4;
/// Bytes of one entry.
const ENTRY: usize = 24;

/// What an index file says of its sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedIndex {
    /// The segment's first offset.
    pub first: u64,
    /// The offset after its last record.
    pub next: u64,
    /// The segment file's length in bytes.
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

/// The temporary file an index file is written to before its rename.
fn tmp_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.idx.tmp"))
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

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD + self.entries.len() * ENTRY + 4);
        b.extend_from_slice(MAGIC);
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
        if b.len() < HEAD + 4 {
            return Err(format!("{} bytes: shorter than a header", b.len()));
        }
        if &b[..8] != MAGIC {
            return Err("not an index file (magic)".into());
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
    let tmp = tmp_path(dir, first);
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| StorageError::io("creating segment index", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_data())
        .map_err(|e| StorageError::io("writing segment index", &tmp, e))?;
    let to = path(dir, first);
    std::fs::rename(&tmp, &to).map_err(|e| StorageError::io("renaming segment index", &to, e))
}

/// Removes the index file of segment `first` if there is one.
pub fn remove(dir: &Path, first: u64) {
    let p = path(dir, first);
    match std::fs::remove_file(&p) {
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
        }
    }
}
