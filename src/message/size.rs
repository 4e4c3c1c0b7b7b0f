//! What a message costs in memory, beyond its body: its properties and decoded headers.
//!
//! A decoded [`FieldValue`] is far larger than its MessagePack encoding (a nil is one
//! byte on the wire and a 40-byte slot in memory), so neither the memory watermark nor
//! the decoder may take a frame's length for what it costs. One model serves both:
//! [`properties_size`] for what a held message is accounted for, and [`Cost`], which the
//! wire decoder fills while it checks a frame's structure, before anything is
//! allocated, to refuse frames that would decode to far more than their size.
//!
//! The model counts allocations as glibc's malloc makes them (16-byte granules, 8 bytes
//! of header, 32 bytes at least): an estimate, deliberately on the high side.

use super::{FieldTable, FieldValue, Properties};
use std::mem::size_of;

/// One element of a decoded array: a `FieldValue` slot in the `Vec`'s buffer.
pub const SLOT: usize = size_of::<FieldValue>();

/// One entry of a decoded table: its key `String` and value slot in a B-tree leaf of 11
/// (leaves are at least five-elevenths full after a split), plus the share of internal
/// nodes. The key's and the value's own heap come on top.
pub const ENTRY: usize = (size_of::<String>() + SLOT) * 11 / 5 + 32;

/// The heap an allocation of `len` bytes really takes (0 for none).
pub fn heap(len: usize) -> usize {
    match len {
        0 => 0,
        n => (n.saturating_add(8 + 15) & !15).max(32),
    }
}

/// Heap held by `v` beyond its slot.
fn value_heap(v: &FieldValue) -> usize {
    match v {
        FieldValue::Void | FieldValue::Bool(_) | FieldValue::Int(_) | FieldValue::Float(_) => 0,
        FieldValue::Str(s) => heap(s.len()),
        FieldValue::Bytes(b) => heap(b.len()),
        FieldValue::Array(a) => heap(a.len() * SLOT) + a.iter().map(value_heap).sum::<usize>(),
        FieldValue::Table(t) => table_size(t),
        FieldValue::Typed(crate::message::TypedValue::BinaryStr(b)) => heap(b.len()),
        FieldValue::Typed(_) => 0,
    }
}

/// Bytes of memory a decoded table holds.
pub fn table_size(t: &FieldTable) -> usize {
    t.iter()
        .map(|(k, v)| ENTRY + heap(k.len()) + value_heap(v))
        .sum()
}

/// Bytes of memory a property set held in its own `Arc` takes: the struct, its strings
/// and its headers.
pub fn properties_size(p: &Properties) -> usize {
    let strings = [
        &p.content_type,
        &p.content_encoding,
        &p.correlation_id,
        &p.reply_to,
        &p.expiration,
        &p.message_id,
        &p.kind,
        &p.user_id,
        &p.app_id,
    ];
    heap(size_of::<Properties>() + 16)
        + strings
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| heap(s.len())))
            .sum::<usize>()
        + p.headers.as_ref().map_or(0, table_size)
}

/// The memory a MessagePack value would take once decoded, summed by the decoder's
/// structure walk (one call per container or string it meets): an array of `n` is a
/// buffer of `n` slots, a map of `n` is `n` table entries, a string or binary its
/// bytes. Scalars live in their slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cost(pub usize);

impl Cost {
    /// An array of `n` elements.
    pub fn array(&mut self, n: usize) {
        self.0 = self.0.saturating_add(heap(n.saturating_mul(SLOT)));
    }

    /// A map of `n` entries.
    pub fn map(&mut self, n: usize) {
        self.0 = self.0.saturating_add(n.saturating_mul(ENTRY));
    }

    /// A string or binary of `len` bytes.
    pub fn bytes(&mut self, len: usize) {
        self.0 = self.0.saturating_add(heap(len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn empty_properties_cost_only_the_struct() {
        let p = Properties::default();
        assert_eq!(properties_size(&p), heap(size_of::<Properties>() + 16));
    }

    #[test]
    fn headers_are_counted_by_what_they_decode_to() {
        let mut t = FieldTable::new();
        t.insert(
            "nils".into(),
            FieldValue::Array(vec![FieldValue::Void; 1000]),
        );
        t.insert("s".into(), FieldValue::Str("x".repeat(100)));
        t.insert("b".into(), FieldValue::Bytes(Bytes::from(vec![0u8; 50])));
        let expected =
            3 * ENTRY + heap(4) + heap(1000 * SLOT) + heap(1) + heap(100) + heap(1) + heap(50);
        assert_eq!(table_size(&t), expected);
        // 1000 nils: 1000 bytes or so on the wire, 40 times that decoded.
        assert!(table_size(&t) > 40_000);
    }

    #[test]
    fn the_walk_cost_of_an_encoding_matches_the_decoded_size() {
        let mut inner = FieldTable::new();
        inner.insert("k".into(), FieldValue::Int(3));
        let mut t = FieldTable::new();
        t.insert("a".into(), FieldValue::Array(vec![FieldValue::Void; 10]));
        t.insert("t".into(), FieldValue::Table(inner));
        // What the decoder's walk would add up for the encoded table.
        let mut c = Cost::default();
        c.map(2);
        c.bytes(1); // "a"
        c.array(10);
        c.bytes(1); // "t"
        c.map(1);
        c.bytes(1); // "k"
        assert_eq!(c.0, table_size(&t));
    }

    #[test]
    fn allocations_round_like_malloc() {
        assert_eq!(heap(0), 0);
        assert_eq!(heap(1), 32);
        assert_eq!(heap(24), 32);
        assert_eq!(heap(25), 48);
        assert_eq!(heap(usize::MAX), usize::MAX & !15);
    }
}
