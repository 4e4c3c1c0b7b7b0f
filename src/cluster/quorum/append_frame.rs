//! A quorum queue group's append frame (`Rpc::Group { group, rpc: GroupRpc::Append
//! }`) built from entries already encoded, and the entries' bytes found again in a
//! received one: each entry is encoded once per member (see
//! `src/cluster/log_store/encoded.rs`), not once more per follower and again by each
//! follower for its log.
//!
//! The frame is the one `rpc::encode_frame` makes of the same request, byte for byte
//! (the tests compare them), so either side may be a node that encodes it whole: the
//! MessagePack of `(id, Rpc)` as rmp-serde writes it, an enum variant as a map of its
//! name to its fields, a struct as an array of its fields in order. An entry whose
//! encoding is not kept (a follower far behind) is encoded into the frame in place.

use super::group::QueueTypes;
use super::wire::GroupId;
use crate::cluster::log_store::Encoded;
use crate::cluster::rpc::frame_with;
use openraft::raft::AppendEntriesRequest;
use std::ops::Range;

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// The whole frame (length first) of the append `req` to `group` under request `id`,
/// with the entries `encoded` holds copied in rather than encoded.
pub fn encode(
    id: u64,
    group: GroupId,
    req: &AppendEntriesRequest<QueueTypes>,
    encoded: Option<&Encoded>,
) -> std::io::Result<Vec<u8>> {
    let kept: Vec<Option<bytes::Bytes>> = req
        .entries
        .iter()
        .map(|e| encoded.and_then(|k| k.get(&e.log_id)))
        .collect();
    if let Some(k) = encoded.filter(|_| !kept.is_empty()) {
        let copied = kept.iter().flatten().count();
        k.count_sent(copied, kept.len() - copied);
    }
    // Sized up front when every entry is kept: a frame of a megabyte grown by
    // doubling copied most of it again, and touched fresh pages each time.
    let size = 128 + kept.iter().flatten().map(|b| b.len()).sum::<usize>();
    frame_with(size, |out| {
        rmp::encode::write_array_len(out, 2).map_err(invalid)?;
        value(out, &id)?;
        // Rpc::Group { group, rpc }
        rmp::encode::write_map_len(out, 1).map_err(invalid)?;
        rmp::encode::write_str(out, "Group").map_err(invalid)?;
        rmp::encode::write_array_len(out, 2).map_err(invalid)?;
        value(out, &group)?;
        // GroupRpc::Append(req)
        rmp::encode::write_map_len(out, 1).map_err(invalid)?;
        rmp::encode::write_str(out, "Append").map_err(invalid)?;
        // AppendEntriesRequest { vote, prev_log_id, entries, leader_commit }
        rmp::encode::write_array_len(out, 4).map_err(invalid)?;
        value(out, &req.vote)?;
        value(out, &req.prev_log_id)?;
        let n = u32::try_from(req.entries.len()).map_err(invalid)?;
        rmp::encode::write_array_len(out, n).map_err(invalid)?;
        for (e, kept) in req.entries.iter().zip(&kept) {
            match kept {
                Some(bytes) => out.extend_from_slice(bytes),
                None => value(out, e)?,
            }
        }
        value(out, &req.leader_commit)
    })
}

/// Writes `v` as rmp-serde writes it inside a larger value (where it stands, with
/// nothing around it).
fn value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> std::io::Result<()> {
    rmp_serde::encode::write(out, v).map_err(invalid)
}

/// How deep a received frame's values may nest before [`entries`] gives up (an entry
/// nests a handful of levels; a frame nested deeper is not walked, only decoded).
const DEPTH: u32 = 32;

/// Where each entry of the append in `frame` (a frame's body: after its length) lies,
/// in order; `None` when `frame` is not an append in the form [`encode`] writes (then
/// the entries are encoded again, as they always were). The caller has decoded the
/// frame: this only finds the bytes each entry was decoded from.
pub fn entries(frame: &[u8]) -> Option<Vec<Range<usize>>> {
    let r = Reader { b: frame };
    let at = r.array(0, 2)?;
    let at = r.skip(at, 0)?; // the request id
    let at = r.map(at, 1)?;
    let at = r.skip(at, 0)?; // "Group"
    let at = r.array(at, 2)?;
    let at = r.skip(at, 0)?; // the group
    let at = r.map(at, 1)?;
    let at = r.skip(at, 0)?; // "Append"
    let at = r.array(at, 4)?;
    let at = r.skip(at, 0)?; // vote
    let at = r.skip(at, 0)?; // prev_log_id
    let (n, mut at) = r.len(at, Kind::Array)?;
    let mut out = Vec::with_capacity(n.min(frame.len()));
    for _ in 0..n {
        let end = r.skip(at, 0)?;
        out.push(at..end);
        at = end;
    }
    Some(out)
}

#[derive(PartialEq)]
enum Kind {
    Array,
    Map,
    Other,
}

/// A walk over MessagePack values that reads only their headers.
struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    /// The big-endian number of `width` bytes at `at`.
    fn num(&self, at: usize, width: usize) -> Option<usize> {
        let bytes = self.b.get(at..at + width)?;
        Some(bytes.iter().fold(0usize, |n, b| (n << 8) | *b as usize))
    }

    /// The container at `at`: its kind, its item count (a map's pairs count twice),
    /// and where its items start; or, for any other value, where it ends.
    fn header(&self, at: usize) -> Option<(Kind, usize, usize)> {
        use rmp::Marker as M;
        let m = *self.b.get(at)?;
        let data = |head: usize, len: usize| Some((Kind::Other, 0, at + head + len));
        match M::from_u8(m) {
            M::FixPos(_) | M::FixNeg(_) | M::Null | M::False | M::True => data(1, 0),
            M::U8 | M::I8 => data(1, 1),
            M::U16 | M::I16 => data(1, 2),
            M::U32 | M::I32 | M::F32 => data(1, 4),
            M::U64 | M::I64 | M::F64 => data(1, 8),
            M::FixStr(n) => data(1, n as usize),
            M::Str8 | M::Bin8 => data(2, self.num(at + 1, 1)?),
            M::Str16 | M::Bin16 => data(3, self.num(at + 1, 2)?),
            M::Str32 | M::Bin32 => data(5, self.num(at + 1, 4)?),
            M::FixExt1 => data(2, 1),
            M::FixExt2 => data(2, 2),
            M::FixExt4 => data(2, 4),
            M::FixExt8 => data(2, 8),
            M::FixExt16 => data(2, 16),
            M::Ext8 => data(3, self.num(at + 1, 1)?),
            M::Ext16 => data(4, self.num(at + 1, 2)?),
            M::Ext32 => data(6, self.num(at + 1, 4)?),
            M::FixArray(n) => Some((Kind::Array, n as usize, at + 1)),
            M::Array16 => Some((Kind::Array, self.num(at + 1, 2)?, at + 3)),
            M::Array32 => Some((Kind::Array, self.num(at + 1, 4)?, at + 5)),
            M::FixMap(n) => Some((Kind::Map, 2 * n as usize, at + 1)),
            M::Map16 => Some((Kind::Map, 2 * self.num(at + 1, 2)?, at + 3)),
            M::Map32 => Some((Kind::Map, 2 * self.num(at + 1, 4)?, at + 5)),
            M::Reserved => None,
        }
    }

    /// The item count of the container of `kind` at `at`, and where its items start.
    fn len(&self, at: usize, kind: Kind) -> Option<(usize, usize)> {
        let (k, n, items) = self.header(at)?;
        (k == kind).then_some((n, items))
    }

    /// Where the items of the array of `n` items at `at` start.
    fn array(&self, at: usize, n: usize) -> Option<usize> {
        let (len, items) = self.len(at, Kind::Array)?;
        (len == n).then_some(items)
    }

    /// Where the pairs of the map of `n` pairs at `at` start.
    fn map(&self, at: usize, n: usize) -> Option<usize> {
        let (len, items) = self.len(at, Kind::Map)?;
        (len == 2 * n).then_some(items)
    }

    /// Where the value at `at` ends.
    fn skip(&self, at: usize, depth: u32) -> Option<usize> {
        let (kind, n, mut end) = self.header(at)?;
        if kind != Kind::Other {
            if depth >= DEPTH {
                return None;
            }
            for _ in 0..n {
                end = self.skip(end, depth + 1)?;
            }
        }
        (end <= self.b.len()).then_some(end)
    }
}

#[cfg(test)]
#[path = "append_frame_tests.rs"]
mod tests;
