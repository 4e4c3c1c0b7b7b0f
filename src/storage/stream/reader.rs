//! Reading a stream's records back from its segment files, off the queue actor (the
//! actor hands a [`ReadRequest`] to a blocking thread and gets a [`ReadBatch`] back).
//!
//! A segment is mapped whole (read-only `mmap`) and held as one [`Bytes`]; every record
//! read from it is kept as stored ([`codec::stored`]): its meta and body are a slice of
//! the mapping, the page cache's bytes, never copied in user space until the connection
//! writes the delivery for its socket, and its message is decoded only for a reader
//! that asks for it ([`ReadRequest::decode`]: AMQP and embedded consumers; a native
//! connection copies the stored bytes into its frames). Records are read in blocks
//! shared by the stream's readers ([`super::cache`]). The [`Cursor`] keeps the mapping and the file
//! position, so a consumer reading on does not search the index again; a mapping of
//! the active segment is taken again when the file has grown past it.

use super::cache::{Block, BlockCache};
use super::codec;
use super::resync;
use super::span::Span;
use super::verified::Verified;
use super::writer::segment_path;
use super::{RecordMessage, StreamRecord};
use crate::storage::disk::frame::{self, FrameAt};
use crate::storage::error::StorageError;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;

/// Where a reader is in a stream's files.
#[derive(Clone)]
pub struct Cursor {
    /// The first offset of the segment (its file name).
    pub segment: u64,
    /// The file position of the record at `offset`.
    pub pos: usize,
    /// The offset of the record at `pos`.
    pub offset: u64,
    /// The segment's mapping, when already taken.
    map: Option<Bytes>,
}

impl Cursor {
    /// A cursor at `pos` of segment `segment`, where record `offset` starts.
    pub fn new(segment: u64, pos: usize, offset: u64) -> Self {
        Cursor {
            segment,
            pos,
            offset,
            map: None,
        }
    }
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("segment", &self.segment)
            .field("pos", &self.pos)
            .field("offset", &self.offset)
            .field("mapped", &self.map.as_ref().map(|m| m.len()))
            .finish()
    }
}

/// One read: from `cursor` on, the records from offset `from` (below `end`), at most
/// `max_records` of them and about `max_bytes` of bodies.
#[derive(Debug)]
pub struct ReadRequest {
    /// The stream's directory.
    pub dir: Arc<Path>,
    /// Where to start scanning (at or before `from`).
    pub cursor: Cursor,
    /// The first offset wanted.
    pub from: u64,
    /// Read only below this offset (what the files are known to hold).
    pub end: u64,
    /// At most this many records.
    pub max_records: usize,
    /// Stop once the bodies read reach this many bytes.
    pub max_bytes: usize,
    /// Skip records appended before this time (ms; a timestamp start not yet reached).
    pub min_timestamp: Option<i64>,
    /// The stream's blocks, shared by its readers.
    pub cache: Arc<BlockCache>,
    /// Decode each record's message (for a consumer that cannot take stored ones).
    pub decode: bool,
    /// How far the stream's segments were verified: frames there are read without
    /// their checksum, others are checked and noted.
    pub verified: Arc<Verified>,
}

/// What a read found.
#[derive(Debug)]
pub struct ReadBatch {
    /// The offset of the first record (or, when none, where the read stopped).
    pub first: u64,
    /// Contiguous records from `first` on, as ranges of the shared blocks.
    pub spans: Vec<Span>,
    /// Where the next read goes on.
    pub cursor: Cursor,
}

impl ReadBatch {
    /// Records found.
    pub fn len(&self) -> usize {
        self.spans.iter().map(Span::len).sum()
    }

    /// True when the read found no record.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Accounted bytes of the records found (as a consumer's read-ahead).
    pub fn bytes(&self) -> u64 {
        self.spans.iter().map(Span::bytes).sum()
    }

    /// The records found, in order.
    pub fn records(&self) -> impl Iterator<Item = &StreamRecord> {
        self.spans.iter().flat_map(Span::records)
    }
}

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError {
    /// The segment file is gone (retention removed it): look the offset up again.
    Gone(u64),
    /// The file could not be read, or holds something else than expected.
    Storage(StorageError),
    /// The record at `offset` is damaged in its file (its checksum fails, or it does
    /// not decode), or cannot be found after a damaged one: the read stopped there, and
    /// every read that reaches it will. A read that reaches it after some records
    /// answers those (it stops before it).
    Damaged {
        /// The first record the read wanted that cannot be read.
        offset: u64,
        /// The first offset after it from which reading goes on (`offset + 1` when
        /// only that record is lost; further when the damage hides the records after
        /// it too, [`super::resync`]); `None` when no later record could be found in
        /// its segment.
        resume: Option<u64>,
        /// What is wrong, and in which file.
        error: StorageError,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Gone(s) => write!(f, "segment {s} was removed"),
            ReadError::Storage(e) => write!(f, "{e}"),
            ReadError::Damaged { offset, error, .. } => write!(f, "record {offset}: {error}"),
        }
    }
}

fn map_segment(dir: &Path, segment: u64) -> Result<Bytes, ReadError> {
    let path = segment_path(dir, segment);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Gone(segment)),
        Err(e) => {
            return Err(ReadError::Storage(StorageError::io(
                "opening segment",
                &path,
                e,
            )))
        }
    };
    map_file(&file, &path).map_err(ReadError::Storage)
}

/// Maps `file` read-only, whole, as [`Bytes`] (empty for an empty file).
pub fn map_file(file: &std::fs::File, path: &Path) -> Result<Bytes, StorageError> {
    let len = file
        .metadata()
        .map_err(|e| StorageError::io("reading segment size", path, e))?
        .len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: segment files are only appended to while the broker runs (truncated only
    // by recovery, before any reader exists) and removed by unlinking, which leaves an
    // existing mapping valid; the mapped bytes are never written through this mapping.
    let map = unsafe { memmap2::Mmap::map(file) }
        .map_err(|e| StorageError::io("mapping segment", path, e))?;
    Ok(Bytes::from_owner(map))
}

fn corrupt(dir: &Path, segment: u64, reason: String) -> ReadError {
    ReadError::Storage(StorageError::Corrupt {
        path: segment_path(dir, segment),
        reason,
    })
}

/// A block ends after this many bytes of bodies or records.
const BLOCK_BYTES: usize = 256 * 1024;
const BLOCK_RECORDS: usize = 2048;

/// Reads the records from `cur` on (below `end`) into a block, within one segment;
/// moves `cur` to the next segment when it starts at `cur`. A record whose frame fails
/// its checksum (or whose length runs past the file) is an error, unless it lies below
/// `wanted` (the reader starts after it): then it is passed over ([`pass_damage`]).
fn decode_block(
    dir: &Path,
    cur: &mut Cursor,
    end: u64,
    wanted: u64,
    verified: &Verified,
) -> Result<Option<Block>, ReadError> {
    let mut remapped = false;
    'segment: loop {
        let map = match &cur.map {
            Some(m) => m.clone(),
            None => {
                let m = map_segment(dir, cur.segment)?;
                cur.map = Some(m.clone());
                m
            }
        };
        let mut block = Block {
            start: cur.offset,
            segment: cur.segment,
            map: map.clone(),
            records: Vec::new(),
            positions: vec![cur.pos],
            bytes: 0,
            decoded: Default::default(),
        };
        let mut pos = cur.pos;
        let mut body_bytes = 0;
        let checked_below = verified.through(cur.segment, cur.pos);
        while block.end() < end && body_bytes < BLOCK_BYTES && block.records.len() < BLOCK_RECORDS {
            let at = if pos < checked_below {
                frame::read_verified(&map, pos)
            } else {
                frame::read_at(&map, pos)
            };
            let FrameAt::Good { payload, next } = at else {
                if let (FrameAt::BadChecksum { .. }, true) = (at, block.records.is_empty()) {
                    // Below `end`, every frame was written whole before this read: a
                    // failed checksum is damage (in a sealed segment trusted by its
                    // index file, found here first), not a write in progress.
                    let what = format!(
                        "record {} at byte {pos} fails its checksum: damaged on disk",
                        block.end()
                    );
                    pass_damage(dir, cur, &map, wanted, what)?;
                    remapped = false;
                    continue 'segment;
                }
                break;
            };
            let read = if pos < checked_below {
                codec::stored_reread
            } else {
                codec::stored
            };
            let (offset, timestamp, message) =
                read(&map, payload).map_err(|e| corrupt(dir, cur.segment, e))?;
            if offset != block.end() {
                return Err(corrupt(
                    dir,
                    cur.segment,
                    format!("record {offset} where {} was expected", block.end()),
                ));
            }
            body_bytes += message.body().len();
            let record = StreamRecord::stored(timestamp, message);
            block.bytes += record.size;
            block.records.push(record);
            pos = next;
            block.positions.push(pos);
        }
        if !block.records.is_empty() || block.end() >= end {
            verified.verified(cur.segment, cur.pos, pos);
            return Ok(Some(block));
        }
        if segment_path(dir, cur.offset).exists() {
            // The segment ended where the next one starts.
            *cur = Cursor::new(cur.offset, 0, cur.offset);
        } else if !remapped {
            // The active segment grew since it was mapped.
            cur.map = None;
            remapped = true;
        } else {
            // Written whole before this read, yet no frame: its length field (or its
            // header) is damaged.
            let what = format!(
                "no whole record {} at byte {}: its length field is damaged on disk",
                cur.offset, cur.pos
            );
            pass_damage(dir, cur, &map, wanted, what)?;
            remapped = false;
        }
    }
}

/// The record at `cur` (its frame at `cur.pos` of `map`) is damaged (`what`). A reader
/// that starts after it is moved past it ([`resync::after_damage`]) and goes on, unless
/// records it wants cannot be found; otherwise the error names the first record it
/// cannot have and where reading goes on.
fn pass_damage(
    dir: &Path,
    cur: &mut Cursor,
    map: &[u8],
    wanted: u64,
    what: String,
) -> Result<(), ReadError> {
    let damaged = cur.offset;
    let index = resync::landmarks(dir, cur.segment);
    let resume = resync::after_damage(map, cur.pos, damaged, index.as_ref());
    let path = segment_path(dir, cur.segment);
    if let Some(r) = resume.filter(|r| damaged < wanted && r.offset <= wanted) {
        if r.offset == damaged + 1 {
            tracing::warn!(segment = %path.display(), offset = damaged, at = cur.pos, how = ?r.how, "damaged stream record passed over by a reader that starts after it");
        } else {
            tracing::warn!(segment = %path.display(), offset = damaged, at = cur.pos, unreadable = %format!("{damaged}..{}", r.offset - 1), resumes_at = r.offset, "damaged stream records passed over by a reader that starts after them (a damaged length hides the records after the damaged one up to the next index entry)");
        }
        cur.pos = r.pos;
        cur.offset = r.offset;
        return Ok(());
    }
    let offset = damaged.max(wanted);
    let reason = match resume {
        Some(r) if r.offset == damaged + 1 => what,
        Some(r) => format!(
            "{what}; its length is damaged too and records {}..{} cannot be found after it: \
             record {} at byte {} is the next one found",
            damaged + 1,
            r.offset - 1,
            r.offset,
            r.pos
        ),
        None => format!(
            "{what}; its length is damaged too, and no index of the segment marks a later \
             record"
        ),
    };
    Err(ReadError::Damaged {
        offset,
        resume: resume.map(|r| r.offset.max(offset + 1)),
        error: StorageError::Corrupt { path, reason },
    })
}

/// Reads what `req` asks for, through the stream's shared blocks: the records found in
/// each block come back as one [`Span`] of it, not a record each. Blocks on the
/// files: run it off the actor.
pub fn read(req: ReadRequest) -> Result<ReadBatch, ReadError> {
    let dir = req.dir;
    let mut cur = req.cursor;
    let mut spans = Vec::new();
    let mut taken = 0usize;
    let mut first = req.from.max(cur.offset);
    let mut bytes = 0usize;
    let mut min_ts = req.min_timestamp;
    let mut exchange = None;
    while cur.offset < req.end && taken < req.max_records && bytes < req.max_bytes {
        let block = match req.cache.find_or_claim(cur.offset) {
            Ok(b) => b,
            Err(_claim) => match decode_block(&dir, &mut cur, req.end, req.from, &req.verified) {
                Ok(Some(b)) => {
                    let b = Arc::new(b);
                    req.cache.insert(b.clone());
                    b
                }
                Ok(None) => break,
                Err(ReadError::Storage(error @ StorageError::Corrupt { .. })) => {
                    if taken == 0 {
                        return Err(ReadError::Damaged {
                            offset: cur.offset,
                            resume: Some(cur.offset + 1),
                            error,
                        });
                    }
                    // The records before it first; the next read stops at it.
                    break;
                }
                Err(e @ ReadError::Damaged { .. }) => {
                    if taken == 0 {
                        return Err(e);
                    }
                    break;
                }
                Err(e) => return Err(e),
            },
        };
        let len = block.records.len();
        let mut i = (cur.offset - block.start) as usize;
        if taken == 0 {
            // Records before the first wanted one, or before a timestamp start, are
            // passed over (only ever at the read's start).
            i = i
                .max(req.from.saturating_sub(block.start) as usize)
                .min(len);
            if let Some(t) = min_ts {
                while i < len && block.records[i].timestamp < t {
                    i += 1;
                }
            }
            first = block.start + i as u64;
        }
        // A record that does not decode (its checksum held): the read ends before it.
        let mut undecodable = false;
        if i < len {
            min_ts = None;
            let whole = Span::new(block.clone(), i, len, 0).expect("records left");
            let wanted = whole.starting_within(req.max_records - taken, req.max_bytes - bytes);
            let (n, decoded, first_decoded) = if req.decode {
                match decode(&whole, wanted, &mut exchange) {
                    Ok(d) => d,
                    Err(e) if taken == 0 => {
                        return Err(ReadError::Damaged {
                            offset: block.start + i as u64,
                            resume: Some(block.start + i as u64 + 1),
                            error: StorageError::Corrupt {
                                path: segment_path(&dir, block.segment),
                                reason: e,
                            },
                        });
                    }
                    Err(_) => (0, 0, 0),
                }
            } else {
                (wanted, 0, 0)
            };
            if first_decoded > 0 {
                // Messages this read decoded first: the block keeps them, its budget
                // counts them.
                req.cache.decoded(&block, first_decoded);
            }
            if let Some(span) = Span::new(block.clone(), i, i + n, decoded) {
                bytes += whole.frames(n).len();
                taken += n;
                spans.push(span);
            }
            undecodable = n < wanted;
            i += n;
        }
        let map = if cur.segment == block.segment {
            cur.map.take().filter(|m| m.len() >= block.map.len())
        } else {
            None
        };
        cur = Cursor {
            segment: block.segment,
            pos: block.positions[i],
            offset: block.start + i as u64,
            map: Some(map.unwrap_or_else(|| block.map.clone())),
        };
        if undecodable {
            break;
        }
    }
    Ok(ReadBatch {
        first,
        spans,
        cursor: cur,
    })
}

/// Decodes the messages of `span`'s first `n` records (each once, however many read
/// it: the record keeps it). Answers how many decode (fewer than `n` when one does
/// not: the read ends before it), the bytes their messages are accounted for, and the
/// part of those this call decoded first; an error when the first does not decode.
fn decode(
    span: &Span,
    n: usize,
    exchange: &mut Option<Arc<str>>,
) -> Result<(usize, u64, u64), String> {
    let (mut decoded, mut first_decoded) = (0, 0);
    for (k, r) in span.records()[..n].iter().enumerate() {
        let RecordMessage::Stored(s) = &r.message else {
            continue;
        };
        let first_decode = s.decoded().is_none();
        let m = match s.message(exchange) {
            Ok(m) => m,
            Err(e) if k == 0 => return Err(e),
            Err(_) => return Ok((k, decoded, first_decoded)),
        };
        let size = super::record::decoded_size(m);
        decoded += size;
        if first_decode {
            first_decoded += size;
        }
    }
    Ok((n, decoded, first_decoded))
}
