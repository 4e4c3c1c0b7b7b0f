//! Where a reader goes on after a damaged record. A frame's length field says where the
//! next frame starts, and the frame's CRC covers that field, so a failed checksum does
//! not tell whether the length is right. When it is (the frame it points at holds, with
//! the next offset), reading goes on there: only the damaged record is lost. When it is
//! not (or the frame runs past the file), the segment's sparse index, kept on disk in
//! its index file (`.idx`) or, for the active segment, its recovery point
//! (`.idx.partial`), knows where a later frame begins: the first entry after the damage
//! (or the end of what the file describes). Between the two, the frame of the next
//! record is searched for byte by byte: a candidate must hold the next offset, pass its
//! checksum and lead frame by frame (checksums, contiguous offsets) exactly to that
//! entry, so a body that happens to contain a well-formed frame cannot be taken for
//! one. Found, only the damaged record is lost; not found (more damage), reading goes
//! on at the entry and the records before it cannot be read.
//!
//! The search is bounded by the index's spacing (128 KiB, or one frame when a record is
//! larger) and runs only when a reader meets damage. Without an index file for the
//! segment (it could not be written) nothing marks a later frame: only the length can
//! be followed.

use super::codec;
use super::index_file::{self, SealedIndex};
use crate::storage::disk::frame::{self, FrameAt};
use std::path::Path;

/// Bytes the search for the next frame may checksum, in all, before it gives up and
/// goes on at the next index entry (the records between are then reported unreadable).
const SEARCH_BUDGET: usize = 64 << 20;

/// How a reader found where to go on after a damaged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The damaged frame's length led to the next record.
    Length,
    /// The next record's frame was found through the index: searched for up to the
    /// next entry, or that entry itself.
    Searched,
    /// Only the next index entry was found: the records before it cannot be read.
    Entry,
}

/// Where reading goes on after a damaged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The file position of the record found.
    pub pos: usize,
    /// Its offset: the damaged record's next, unless records between cannot be found.
    pub offset: u64,
    /// How it was found.
    pub how: How,
}

/// The sparse index on disk of segment `segment`: its index file if it is sealed, else
/// its recovery point; `None` when it has neither, or one that does not decode or
/// describes another segment (then only a frame's length can be followed).
pub fn landmarks(dir: &Path, segment: u64) -> Option<SealedIndex> {
    let sealed = std::fs::read(index_file::path(dir, segment))
        .ok()
        .and_then(|b| SealedIndex::decode(&b).ok());
    sealed
        .or_else(|| {
            std::fs::read(index_file::point_path(dir, segment))
                .ok()
                .and_then(|b| SealedIndex::decode_point(&b).ok())
        })
        .filter(|i| i.first == segment)
}

/// The offset of the record whose frame starts at `pos`, if a frame whose checksum
/// holds starts there and ends by `limit`.
fn record_at(map: &[u8], pos: usize, limit: usize) -> Option<(u64, usize)> {
    match frame::read_at(map, pos) {
        FrameAt::Good { payload, next } if next <= limit => {
            codec::header(payload).ok().map(|(o, _)| (o, next))
        }
        _ => None,
    }
}

/// True when the frames from `pos` (record `offset` on) follow each other, every one
/// whole and in sequence, up to exactly `to` where record `to_offset` begins.
fn leads_to(map: &[u8], mut pos: usize, mut offset: u64, to: usize, to_offset: u64) -> bool {
    while pos < to {
        match record_at(map, pos, to) {
            Some((o, next)) if o == offset => {
                pos = next;
                let Some(n) = offset.checked_add(1) else {
                    return false;
                };
                offset = n;
            }
            _ => return false,
        }
    }
    pos == to && offset == to_offset
}

/// Where reading goes on after record `offset`, whose frame at `pos` of the segment's
/// bytes `map` is damaged (its checksum fails, or its length runs past the file), with
/// `index` the segment's sparse index from disk ([`landmarks`]). `None` when no later
/// record can be found (no index on disk, or none of its entries lies after `pos`
/// within `map`, and the length does not lead to the next record).
pub fn after_damage(
    map: &[u8],
    pos: usize,
    offset: u64,
    index: Option<&SealedIndex>,
) -> Option<Resume> {
    let want = offset.checked_add(1)?;
    let by_length = match frame::read_at(map, pos) {
        FrameAt::BadChecksum { next } => Some(next),
        _ => None,
    };
    if let Some(next) = by_length {
        if record_at(map, next, map.len()).is_some_and(|(o, _)| o == want) {
            return Some(Resume {
                pos: next,
                offset: want,
                how: How::Length,
            });
        }
    }
    // The first place after the damage where the index says a record begins: one of
    // its entries, or where the records it describes end.
    let entry = index.and_then(|idx| {
        idx.entries
            .iter()
            .map(|&(o, _, p)| (p, o))
            .chain(std::iter::once((idx.bytes, idx.next)))
            .find(|&(p, _)| p > pos as u64)
            .filter(|&(p, _)| p <= map.len() as u64)
            .map(|(p, o)| (p as usize, o))
    });
    let Some((to, to_offset)) = entry else {
        // Nothing marks a later frame: a length that reaches the end of the bytes at
        // hand is followed (the next segment, or bytes mapped since, tell the rest).
        return by_length.filter(|&n| n == map.len()).map(|next| Resume {
            pos: next,
            offset: want,
            how: How::Length,
        });
    };
    if to_offset <= want {
        // The entry is the next record itself (an index that says otherwise does not
        // describe these frames).
        return (to_offset == want).then_some(Resume {
            pos: to,
            offset: want,
            how: How::Searched,
        });
    }
    let needle = want.to_le_bytes();
    // A record's frame is at least a header and the record's own 20-byte header.
    let last = (to + 1).saturating_sub(frame::FRAME_HEADER + 20);
    // Candidates are checked within the bytes up to the entry only (a length past it
    // fails before any checksum), and at most SEARCH_BUDGET bytes are checksummed in
    // all: a body crafted full of the wanted offset makes a candidate every 8 bytes.
    let bounded = &map[..to];
    let mut budget = SEARCH_BUDGET;
    let found = (pos + 1..last).find(|&q| {
        let at = q + frame::FRAME_HEADER;
        if map[at..at + 8] != needle || budget == 0 {
            return false;
        }
        budget = budget.saturating_sub(to - q);
        leads_to(bounded, q, want, to, to_offset)
    });
    Some(match found {
        Some(q) => Resume {
            pos: q,
            offset: want,
            how: How::Searched,
        },
        None => Resume {
            pos: to,
            offset: to_offset,
            how: How::Entry,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    /// Frames of records `first..first + n` with bodies of `body` bytes, and where each
    /// starts.
    fn frames(first: u64, n: u64, body: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut at = Vec::new();
        for o in first..first + n {
            at.push(buf.len());
            let m = Message::new("", "k", vec![b'a' + (o % 26) as u8; body]);
            codec::encode(&mut buf, o, 1_700_000_000_000, &m).unwrap();
        }
        (buf, at)
    }

    /// An index of the frames with an entry at each of `entries` (record numbers).
    fn index(first: u64, at: &[usize], len: usize, entries: &[usize]) -> SealedIndex {
        SealedIndex {
            first,
            next: first + at.len() as u64,
            bytes: len as u64,
            last_timestamp: 1_700_000_000_000,
            run_start: first,
            entries: entries
                .iter()
                .map(|&i| (first + i as u64, 1_700_000_000_000, at[i] as u64))
                .collect(),
        }
    }

    #[test]
    fn a_damaged_payload_is_passed_over_by_its_length() {
        let (mut map, at) = frames(10, 20, 30);
        map[at[5] + 30] ^= 1;
        let r = after_damage(&map, at[5], 15, None);
        assert_eq!(
            r,
            Some(Resume {
                pos: at[6],
                offset: 16,
                how: How::Length
            })
        );
    }

    #[test]
    fn a_damaged_length_is_passed_over_by_searching_up_to_the_next_entry() {
        let (mut map, at) = frames(10, 20, 30);
        let idx = index(10, &at, map.len(), &[0, 12]);
        for bad in [3u32, 200, 1 << 20, 0] {
            let mut m = map.clone();
            m[at[5]..at[5] + 4].copy_from_slice(&bad.to_le_bytes());
            // Without the index: nothing marks the next frame.
            assert_eq!(after_damage(&m, at[5], 15, None), None, "length {bad}");
            let r = after_damage(&m, at[5], 15, Some(&idx));
            assert_eq!(
                r,
                Some(Resume {
                    pos: at[6],
                    offset: 16,
                    how: How::Searched
                }),
                "length {bad}"
            );
        }
        // The record after it damaged too: reading goes on at the next entry.
        map[at[5]..at[5] + 4].copy_from_slice(&7u32.to_le_bytes());
        map[at[6] + 40] ^= 1;
        let r = after_damage(&map, at[5], 15, Some(&idx));
        assert_eq!(
            r,
            Some(Resume {
                pos: at[12],
                offset: 22,
                how: How::Entry
            })
        );
        // No entry after it: the end of what the index describes.
        let idx = index(10, &at, map.len(), &[0]);
        let r = after_damage(&map, at[5], 15, Some(&idx));
        assert_eq!(r.map(|r| (r.pos, r.offset)), Some((map.len(), 30)));
    }

    #[test]
    fn a_damaged_last_record_leads_to_the_end_of_its_segment() {
        let (mut map, at) = frames(10, 20, 30);
        let idx = index(10, &at, map.len(), &[0, 12]);
        map[at[19]..at[19] + 4].copy_from_slice(&5u32.to_le_bytes());
        let r = after_damage(&map, at[19], 29, Some(&idx));
        assert_eq!(r.map(|r| (r.pos, r.offset)), Some((map.len(), 30)));
    }

    #[test]
    fn a_frame_inside_a_body_is_not_taken_for_the_next_record() {
        // Record 16's body holds a whole frame of a record 16 (a copied segment, say).
        let (inner, _) = frames(16, 1, 5);
        let mut map = Vec::new();
        let mut at = Vec::new();
        for o in 10..30u64 {
            at.push(map.len());
            let body = if o == 15 {
                inner.clone()
            } else {
                vec![b'x'; 30]
            };
            codec::encode(&mut map, o, 0, &Message::new("", "", body)).unwrap();
        }
        let idx = index(10, &at, map.len(), &[0, 10]);
        map[at[5]..at[5] + 4].copy_from_slice(&3u32.to_le_bytes());
        let r = after_damage(&map, at[5], 15, Some(&idx)).unwrap();
        assert_eq!((r.pos, r.offset, r.how), (at[6], 16, How::Searched));
    }

    #[test]
    fn landmarks_come_from_the_index_file_or_else_the_recovery_point() {
        let dir = tempfile::tempdir().unwrap();
        let (map, at) = frames(10, 20, 30);
        assert_eq!(landmarks(dir.path(), 10), None);
        let point = index(10, &at, map.len(), &[0, 4]);
        index_file::write_point(dir.path(), 10, &point.encode_point()).unwrap();
        assert_eq!(landmarks(dir.path(), 10), Some(point.clone()));
        let sealed = index(10, &at, map.len(), &[0, 8]);
        index_file::write(dir.path(), 10, &sealed.encode()).unwrap();
        assert_eq!(landmarks(dir.path(), 10), Some(sealed));
        // Another segment's file under this name is not used.
        index_file::write_point(dir.path(), 30, &point.encode_point()).unwrap();
        assert_eq!(landmarks(dir.path(), 30), None);
    }
}
