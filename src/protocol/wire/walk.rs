//! The structure walk that runs before a frame is decoded: it checks that the frame is
//! one complete MessagePack value (not truncated, not nested too deep) and sums what
//! its structures would take in memory once decoded, so that a frame packed with tiny
//! values (an array of nils: one byte each on the wire, a 40-byte slot decoded) is
//! refused before anything is allocated. See [`crate::message::size`] for the model.

use crate::message::size::Cost;

/// Decoded memory allowed for any frame, however small: a frame's structures (a
/// request's arguments, a publish's properties and headers) may take many times their
/// encoded size, but no more than this plus [`DECODE_RATIO`] times the frame.
pub const DECODE_FLOOR: usize = 256 * 1024;

/// Decoded memory allowed per byte of a frame, on top of [`DECODE_FLOOR`]: a body or a
/// string decodes to about its size, so only frames packed with tiny values (an array of
/// nils: 1 byte each on the wire, a 40-byte slot decoded) come near it.
pub const DECODE_RATIO: usize = 4;

/// The most memory a client frame of `len` bytes may decode to.
pub fn decode_budget(len: usize) -> usize {
    DECODE_FLOOR.saturating_add(len.saturating_mul(DECODE_RATIO))
}

/// The deepest level a value of a frame may sit at: the frame's outer map is at level 1
/// and a value inside a map or an array at level L (key, value or element, empty
/// containers and scalars alike) is at level L + 1. Deeper is refused, so that a hostile
/// frame cannot exhaust the stack of a recursive decoder.
pub const MAX_DEPTH: usize = 64;

/// Walks the first MessagePack value of `b` as a frame's (at level 1): its length
/// (None when truncated, malformed or too deep) and its decoded cost. For the fuzz
/// targets (`fuzz/`), which must reach the walk without the decoder behind it.
#[doc(hidden)]
pub fn walk_value(b: &[u8]) -> (Option<usize>, usize) {
    let mut walk = Walk::default();
    let n = walk.value(b, 1);
    (n, walk.cost.0)
}

/// A walk over MessagePack markers that checks a value's structure and sums what it
/// would take decoded ([`Cost`]).
#[derive(Default)]
pub(super) struct Walk {
    /// Decoded memory of what was walked so far.
    pub(super) cost: Cost,
    /// Set when the walk failed on a value deeper than [`MAX_DEPTH`] (to tell that
    /// case from a truncated or malformed frame).
    pub(super) too_deep: bool,
}

impl Walk {
    /// The length in bytes of the first MessagePack value in `b`, which sits at level
    /// `depth` (see [`MAX_DEPTH`]), or None when it is truncated, malformed or has a
    /// value deeper than [`MAX_DEPTH`] (then `too_deep` is set). Walks markers only.
    pub(super) fn value(&mut self, b: &[u8], depth: usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            self.too_deep = true;
            return None;
        }
        let m = *b.first()?;
        let be = |at: usize, n: usize| -> Option<usize> {
            let s = b.get(at..at + n)?;
            Some(s.iter().fold(0usize, |acc, x| (acc << 8) | *x as usize))
        };
        let fixed = |n: usize| (b.len() >= n).then_some(n);
        let sized = |hdr: usize, len: usize| {
            let end = hdr.checked_add(len)?;
            (b.len() >= end).then_some(end)
        };
        match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(1),
            0x80..=0x8f => self.map(b, 1, (m & 0x0f) as usize, depth),
            0x90..=0x9f => self.array(b, 1, (m & 0x0f) as usize, depth),
            0xa0..=0xbf => self.string(sized(1, (m & 0x1f) as usize)?, 1),
            0xc4 | 0xd9 => self.string(sized(2, be(1, 1)?)?, 2),
            0xc5 | 0xda => self.string(sized(3, be(1, 2)?)?, 3),
            0xc6 | 0xdb => self.string(sized(5, be(1, 4)?)?, 5),
            0xc7 => sized(3, be(1, 1)?),
            0xc8 => sized(4, be(1, 2)?),
            0xc9 => sized(6, be(1, 4)?),
            0xca => fixed(5),
            0xcb => fixed(9),
            0xcc | 0xd0 => fixed(2),
            0xcd | 0xd1 => fixed(3),
            0xce | 0xd2 => fixed(5),
            0xcf | 0xd3 => fixed(9),
            0xd4 => fixed(3),
            0xd5 => fixed(4),
            0xd6 => fixed(6),
            0xd7 => fixed(10),
            0xd8 => fixed(18),
            0xdc => self.array(b, 3, be(1, 2)?, depth),
            0xdd => self.array(b, 5, be(1, 4)?, depth),
            0xde => self.map(b, 3, be(1, 2)?, depth),
            0xdf => self.map(b, 5, be(1, 4)?, depth),
            0xc1 => None,
        }
    }

    /// A string or binary ending at `end`, its header `hdr` bytes long.
    fn string(&mut self, end: usize, hdr: usize) -> Option<usize> {
        self.cost.bytes(end - hdr);
        Some(end)
    }

    /// An array of `count` values from `start`.
    fn array(&mut self, b: &[u8], start: usize, count: usize, depth: usize) -> Option<usize> {
        self.cost.array(count);
        self.items(b, start, count, depth)
    }

    /// A map of `count` entries from `start`.
    fn map(&mut self, b: &[u8], start: usize, count: usize, depth: usize) -> Option<usize> {
        self.cost.map(count);
        self.items(b, start, count.checked_mul(2)?, depth)
    }

    /// The end of `count` values from `start`.
    fn items(&mut self, b: &[u8], start: usize, count: usize, depth: usize) -> Option<usize> {
        let mut at = start;
        for _ in 0..count {
            at += self.value(b.get(at..)?, depth + 1)?;
        }
        Some(at)
    }
}
