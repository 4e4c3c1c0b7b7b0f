//! A bound on how deeply field tables and arrays nest in a method or content-header
//! payload, checked before the payload reaches amq-protocol's parsers, which recurse
//! once per level: 500 nested arrays (2.5 KB, in `connection.start-ok`'s client
//! properties, before any login) overflowed the stack of the thread parsing them and
//! aborted the broker. The native protocol bounds its MessagePack the same way
//! (`protocol::MAX_DEPTH`, also 64).
//!
//! The payload is not parsed here (where a table sits depends on the method). Instead
//! every byte that could start a nested table or array (`F`, `A`) followed by a 32-bit
//! length that fits in the rest of the payload counts as a possible container, and the
//! bound is the most possible containers open at any one offset. The real containers
//! are among them, so the bound is never below the real depth; other bytes seldom
//! qualify (in text, an `A` or `F` is followed by text, which read as a length does not
//! fit), so real frames are not refused for what their strings hold.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The deepest nesting of field tables and arrays accepted in one frame.
pub const MAX_NESTING: usize = 64;

/// True when `payload` may nest tables or arrays deeper than [`MAX_NESTING`].
pub fn too_deep(payload: &[u8]) -> bool {
    // Ends of the possible containers open at the current offset, soonest first.
    let mut open: BinaryHeap<Reverse<usize>> = BinaryHeap::new();
    for (i, &b) in payload.iter().enumerate() {
        if b != b'A' && b != b'F' {
            continue;
        }
        while open.peek().is_some_and(|Reverse(end)| *end <= i) {
            open.pop();
        }
        let Some(len) = payload.get(i + 1..i + 5) else {
            break;
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len <= payload.len() - (i + 5) {
            open.push(Reverse(i + 5 + len));
            if open.len() > MAX_NESTING {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::WriteContext;
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

    /// A table holding `depth` nested containers (alternately arrays and tables).
    fn nested(depth: usize) -> Vec<u8> {
        let mut v = AMQPValue::Void;
        for level in 1..depth {
            v = if level % 2 == 0 {
                AMQPValue::FieldArray(FieldArray::from(vec![v]))
            } else {
                let mut t = FieldTable::default();
                t.insert("k".into(), v);
                AMQPValue::FieldTable(t)
            };
        }
        let mut top = FieldTable::default();
        top.insert("h".into(), v);
        // With a string holding `A` and `F` around it, as real headers may.
        top.insert("s".into(), AMQPValue::LongString("AFAFA F".into()));
        let bytes = gen_field_table(&top)(WriteContext::from(Vec::new()))
            .unwrap()
            .into_inner()
            .0;
        bytes
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_deeper_is_caught() {
        assert!(!too_deep(&nested(MAX_NESTING - 1)));
        assert!(too_deep(&nested(MAX_NESTING + 2)));
        assert!(too_deep(&nested(500)));
    }

    #[test]
    fn text_and_short_payloads_pass() {
        assert!(!too_deep(b""));
        assert!(!too_deep(b"A"));
        assert!(!too_deep(&b"AAAAFFFF".repeat(1000)));
    }
}
