//! Reading the log back: scan every segment in order, replay its records, and deal with
//! damage.
//!
//! - A torn or corrupt tail (a bad length, a bad checksum, a record cut short, garbage
//!   after the last good record) at the end of the last segment holding data is the
//!   mark of a write cut short by a crash: it was never confirmed, so it is zeroed
//!   (truncated) and logged with `tracing::warn`, never trusted.
//! - A damaged record with good records after it, or damage in an older segment, is
//!   bit rot: it is reported with the file and offset (`tracing::error`) and skipped;
//!   the scan resumes at the next good record (by the damaged record's length when its
//!   checksum alone fails, else by searching for the next frame whose checksum holds).
//!   The store still opens.
//! - Acks, purges and deletes for ids the scan has not seen are ignored: the segments
//!   holding those messages were reclaimed.

use super::codec::{self, Entry};
use super::frame::{self, FrameAt, FRAME_HEADER};
use super::index::{Index, Loc};
use super::pager;
use super::segment::{self, Active, HEADER_LEN};
use crate::storage::error::StorageError;
use crate::storage::fsutil::sync_dir;
use crate::storage::record::Recovered;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A damaged stretch of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The segment file.
    pub file: PathBuf,
    /// Offset of the damage in the file.
    pub offset: u64,
    /// Bytes skipped or truncated.
    pub len: u64,
    /// What was wrong.
    pub reason: String,
}

/// What recovery found besides the records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: usize,
    /// Records replayed.
    pub records: u64,
    /// Torn tails zeroed (at most one: in the last segment holding data).
    pub truncated: Vec<Corruption>,
    /// Damaged records or regions skipped.
    pub skipped: Vec<Corruption>,
}

/// How the scan of one segment ended.
#[derive(Debug)]
struct SegmentScan {
    /// False when the header is missing or wrong (the whole file was skipped).
    header_ok: bool,
    /// End of the good data: where the next frame goes.
    end: usize,
    /// A torn tail: the damaged region `[start, end)` (tail segment only).
    torn: Option<(usize, usize)>,
}

/// True when the segment holds nothing but a good header and zeros.
fn is_empty_segment(seq: u64, data: &[u8]) -> bool {
    data.len() >= HEADER_LEN as usize
        && data[..HEADER_LEN as usize] == segment::header(seq)
        && data[HEADER_LEN as usize..].iter().all(|b| *b == 0)
}

/// Offset after the last non-zero byte at or after `from`.
fn nonzero_end(data: &[u8], from: usize) -> usize {
    data[from..]
        .iter()
        .rposition(|b| *b != 0)
        .map_or(from, |p| from + p + 1)
}

/// The first offset after `from` where a good frame that decodes starts.
fn resync(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(FRAME_HEADER - 1)).find(|&p| match frame::read_at(data, p) {
        FrameAt::Good { payload, .. } => codec::decode(payload).is_ok(),
        _ => false,
    })
}

/// Scans one segment, handing every good entry to `on_entry`.
fn scan_segment(
    path: &Path,
    seq: u64,
    data: &[u8],
    tail: bool,
    report: &mut RecoveryReport,
    on_entry: &mut dyn FnMut(Entry, usize),
) -> SegmentScan {
    let corruption = |offset: usize, len: usize, reason: String| Corruption {
        file: path.to_path_buf(),
        offset: offset as u64,
        len: len as u64,
        reason,
    };
    if data.len() < HEADER_LEN as usize || data[..HEADER_LEN as usize] != segment::header(seq) {
        report.skipped.push(corruption(
            0,
            data.len(),
            "missing or wrong segment header: whole file skipped".into(),
        ));
        return SegmentScan {
            header_ok: false,
            end: 0,
            torn: None,
        };
    }
    let mut off = HEADER_LEN as usize;
    loop {
        let damage = match frame::read_at(data, off) {
            FrameAt::Good { payload, next } => match codec::decode(payload) {
                Ok(entry) => {
                    report.records += 1;
                    on_entry(entry, off);
                    off = next;
                    continue;
                }
                Err(reason) => {
                    // The frame is intact, so its length is right: skip just this record.
                    report.skipped.push(corruption(off, next - off, reason));
                    off = next;
                    continue;
                }
            },
            FrameAt::End if data[off.min(data.len())..].iter().all(|b| *b == 0) => {
                return SegmentScan {
                    header_ok: true,
                    end: off,
                    torn: None,
                };
            }
            FrameAt::End => "a zero header followed by data",
            FrameAt::Torn => "a record length running past the data",
            FrameAt::BadChecksum { next } => {
                let next_ok = match frame::read_at(data, next) {
                    FrameAt::Good { .. } => true,
                    FrameAt::End => data[next.min(data.len())..].iter().all(|b| *b == 0) && !tail,
                    _ => false,
                };
                if next_ok {
                    report.skipped.push(corruption(
                        off,
                        next - off,
                        "checksum mismatch: record skipped".into(),
                    ));
                    off = next;
                    continue;
                }
                "a checksum mismatch"
            }
        };
        match resync(data, off + 1) {
            Some(good) => {
                report.skipped.push(corruption(
                    off,
                    good - off,
                    format!("{damage}: {} bytes skipped", good - off),
                ));
                off = good;
            }
            None => {
                let end = nonzero_end(data, off).max(off + 1).min(data.len());
                let c = corruption(off, end - off, format!("{damage} at the end of the data"));
                if tail {
                    report.truncated.push(c);
                    return SegmentScan {
                        header_ok: true,
                        end: off,
                        torn: Some((off, end)),
                    };
                }
                report.skipped.push(c);
                return SegmentScan {
                    header_ok: true,
                    end: off,
                    torn: None,
                };
            }
        }
    }
}

/// A whole segment file's bytes, mapped read-only rather than copied into a buffer:
/// recovery and compaction read whole segments (32 MiB by default), and an allocator
/// that keeps freed memory until its next allocation on that heap (mimalloc, the
/// binary's) would leave such a buffer in an idle broker's RSS (40 instead of 8 MiB
/// after a restart).
pub struct SegmentData(Option<memmap2::Mmap>);

impl std::ops::Deref for SegmentData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// Maps the segment at `path`.
pub fn read(path: &Path) -> Result<SegmentData, StorageError> {
    let io = |e| StorageError::io("reading segment", path, e);
    let file = fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Ok(SegmentData(None));
    }
    // SAFETY: a mapped file must not be truncated or rewritten while the map lives. The
    // data directory is locked to this process; within it, only the writer thread
    // writes segments, and it maps one only while it is not writing it (a compaction
    // reads a segment that is no longer active, a rescan runs on the writer thread),
    // and recovery maps before the writer starts. The map is read-only and private.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(SegmentData(Some(map)))
}

/// Replays segments into `index` (locations only: bodies are read back afterwards, as
/// many as wanted). `tail` names the segment whose damaged end counts as a torn tail;
/// answers how each scan ended.
fn replay_segments(
    segments: &[(u64, PathBuf)],
    tail: Option<u64>,
    index: &mut Index,
    report: &mut RecoveryReport,
    mut first_data: Option<(u64, SegmentData)>,
) -> Result<Vec<(u64, SegmentScan)>, StorageError> {
    let mut scans = Vec::new();
    for (seq, path) in segments {
        let data = match first_data.take() {
            Some((s, d)) if s == *seq => d,
            other => {
                first_data = other;
                read(path)?
            }
        };
        report.segments += 1;
        index.add_segment(*seq);
        let seq = *seq;
        let scan = scan_segment(
            path,
            seq,
            &data,
            tail == Some(seq),
            report,
            &mut |entry, off| index_entry(index, seq, &entry, off),
        );
        scans.push((seq, scan));
    }
    Ok(scans)
}

/// Indexes one entry found at `off` of segment `seq`.
fn index_entry(index: &mut Index, seq: u64, entry: &Entry, off: usize) {
    let loc = match entry {
        Entry::Record(r) => Loc::of(r, seq, off as u64),
        Entry::Mark { .. } => Loc {
            seg: seq,
            off: off as u64,
            size: 0,
        },
    };
    index.apply(entry, loc);
}

/// Replays the bytes of one segment file (header included) into a fresh index as
/// recovery does at open, touching no file: `tail` says whether it is the last segment
/// (where damage at the end is a torn tail). For the fuzzer (`actormq::fuzzing`).
#[doc(hidden)]
pub fn replay_bytes(seq: u64, data: &[u8], tail: bool) -> (Index, RecoveryReport) {
    let mut index = Index::default();
    let mut report = RecoveryReport::default();
    index.add_segment(seq);
    let path = Path::new("fuzzed.seg");
    scan_segment(path, seq, data, tail, &mut report, &mut |entry, off| {
        index_entry(&mut index, seq, &entry, off)
    });
    (index, report)
}

/// Reads `segments` of `dir` (all of the log, the active one included) without
/// repairing anything: the state a restart would recover now, the bodies of the first
/// `head` messages of each queue read back (see [`pager::recover`]).
pub fn rescan(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    head: usize,
) -> Result<(Recovered, RecoveryReport), StorageError> {
    let mut index = Index::default();
    let mut report = RecoveryReport::default();
    replay_segments(segments, None, &mut index, &mut report, None)?;
    Ok((pager::recover(dir, &index, head)?, report))
}

/// The log as found at open, repaired and ready for the writer.
#[derive(Debug)]
pub struct Opened {
    /// Where every live message is.
    pub index: Index,
    /// The surviving messages (bodies of the first `head` of each queue included).
    pub recovered: Recovered,
    /// The segment to append to.
    pub active: Active,
    /// The sequence number of the next segment.
    pub next_seq: u64,
    /// What recovery found.
    pub report: RecoveryReport,
}

/// Opens the log in `dir`: removes unused trailing segments, replays the rest, zeroes
/// a torn tail, and picks (or creates) the active segment. The recovered state holds
/// the bodies of the first `head` messages of each queue.
pub fn open_log(dir: &Path, segment_size: u64, head: usize) -> Result<Opened, StorageError> {
    segment::remove_unfinished(dir)?;
    let mut segments = segment::list(dir)?;
    let mut max_seq = segments.last().map_or(0, |(s, _)| *s);
    // Trailing segments with nothing written: keep the first one as the active segment.
    let mut spare = None;
    let mut tail_data = None;
    while let Some((seq, path)) = segments.pop() {
        let data = read(&path)?;
        if !is_empty_segment(seq, &data) {
            segments.push((seq, path));
            tail_data = Some((seq, data));
            break;
        }
        if let Some((_, newer)) = spare.replace((seq, path)) {
            fs::remove_file(&newer).map_err(|e| StorageError::io("removing", &newer, e))?;
        }
    }
    let tail = segments.last().map(|(s, _)| *s);
    let mut index = Index::default();
    let mut report = RecoveryReport::default();
    let scans = replay_segments(&segments, tail, &mut index, &mut report, tail_data)?;
    for c in &report.truncated {
        tracing::warn!(file = %c.file.display(), offset = c.offset, bytes = c.len, reason = %c.reason, "torn tail of the message log truncated: it was never confirmed");
    }
    for c in &report.skipped {
        tracing::error!(file = %c.file.display(), offset = c.offset, bytes = c.len, reason = %c.reason, "corrupt region of the message log skipped");
    }
    let mut active = None;
    if let (Some((seq, scan)), Some((_, path))) = (scans.last(), segments.last()) {
        if let Some((start, end)) = scan.torn {
            zero(path, start as u64, (end - start) as u64)?;
        }
        if scan.header_ok && spare.is_none() {
            active = Some(Active::open(*seq, path.clone(), scan.end as u64)?);
        }
    }
    let active = match (active, spare) {
        (Some(a), None) => a,
        (_, Some((seq, path))) => {
            index.add_segment(seq);
            Active::open(seq, path, HEADER_LEN)?
        }
        (None, None) => {
            max_seq += 1;
            let path = segment::prepare(dir, max_seq, segment_size)?;
            index.add_segment(max_seq);
            Active::open(max_seq, path, HEADER_LEN)?
        }
    };
    sync_dir(dir)?;
    let recovered = pager::recover(dir, &index, head)?;
    Ok(Opened {
        index,
        recovered,
        next_seq: max_seq.max(active.seq) + 1,
        active,
        report,
    })
}

/// Overwrites `len` bytes at `offset` of `path` with zeros and syncs it.
fn zero(path: &Path, offset: u64, len: u64) -> Result<(), StorageError> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("opening segment", path, e))?;
    let zeros = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.write_all(&zeros))
        .and_then(|_| f.sync_data())
        .map_err(|e| StorageError::io("truncating torn tail of", path, e))
}
