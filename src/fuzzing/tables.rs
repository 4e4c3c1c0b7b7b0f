//! Field tables in both encodings, and topic patterns.

use crate::amqp::properties::{args_in, table_in, table_out};
use crate::broker::exchange::topic::TopicTrie;
use crate::message::FieldTable;
use amq_protocol::frame::WriteContext;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable as AmqpTable;

/// An AMQP table's wire bytes (tables with NaN floats do not compare equal, their
/// bytes do).
fn amqp_bytes(t: &AmqpTable) -> Vec<u8> {
    gen_field_table(t)(WriteContext::from(Vec::new()))
        .expect("a parsed table encodes")
        .into_inner()
        .0
}

/// A native table's MessagePack bytes.
fn native_bytes(t: &FieldTable) -> Vec<u8> {
    rmp_serde::to_vec(t).expect("a decoded table encodes")
}

/// Decodes `data` as a native (MessagePack) field table and as an AMQP field table, and
/// checks what the broker relies on: a decoded table encodes again and decodes to the
/// same bytes, and an AMQP table survives the trip through actormq's table and the
/// message store's encoding unchanged (the lossless promise of `amqp::properties`).
pub fn field_table(data: &[u8]) {
    if let Ok(t) = rmp_serde::from_slice::<FieldTable>(data) {
        let bytes = native_bytes(&t);
        let back: FieldTable = rmp_serde::from_slice(&bytes).expect("re-encoded table decodes");
        assert_eq!(native_bytes(&back), bytes, "native table round trip");
        let _ = crate::message::size::table_size(&t);
        // To AMQP (what a native publish looks like to an AMQP consumer).
        let _ = amqp_bytes(&table_out(&t));
    }
    if let Ok((_, t)) = parse_field_table(data) {
        let want = amqp_bytes(&t);
        let native = table_in(&t);
        assert_eq!(
            amqp_bytes(&table_out(&native)),
            want,
            "AMQP table round trip"
        );
        let stored: FieldTable =
            rmp_serde::from_slice(&native_bytes(&native)).expect("stored table decodes");
        assert_eq!(amqp_bytes(&table_out(&stored)), want, "through the store");
        let _ = args_in(&t);
    }
}

/// The routing keys a pattern matches, the textbook way: `*` is one word, `#` any
/// number, over RabbitMQ's words (the empty string has none).
fn reference_match(pattern: &[&str], key: &[&str]) -> bool {
    // m[i][j]: pattern[i..] matches key[j..].
    let (p, k) = (pattern.len(), key.len());
    let mut m = vec![vec![false; k + 1]; p + 1];
    m[p][k] = true;
    for i in (0..p).rev() {
        for j in (0..=k).rev() {
            m[i][j] = match pattern[i] {
                "#" => m[i + 1][j] || (j < k && m[i][j + 1]),
                "*" => j < k && m[i + 1][j + 1],
                w => j < k && key[j] == w && m[i + 1][j + 1],
            };
        }
    }
    m[0][0]
}

fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// Reads `data` as lines: the first a routing key, the others binding patterns. Binds
/// every pattern in a topic trie, checks that the trie routes the key exactly where the
/// reference matcher says, then unbinds every pattern and checks the trie is empty.
pub fn topic(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let key = lines.next().unwrap_or("");
    let patterns: Vec<&str> = lines.take(64).collect();
    let mut trie = TopicTrie::new();
    for (i, p) in patterns.iter().enumerate() {
        trie.insert(p, i as u32);
    }
    let mut got = Vec::new();
    trie.matches(key, &mut got);
    got.sort_unstable();
    got.dedup();
    let key_words = words(key);
    let want: Vec<u32> = (0..patterns.len() as u32)
        .filter(|i| reference_match(&words(patterns[*i as usize]), &key_words))
        .collect();
    assert_eq!(got, want, "routing of {key:?} through {patterns:?}");
    for (i, p) in patterns.iter().enumerate() {
        assert!(trie.remove(p, i as u32), "binding {p:?} removes");
    }
    assert!(trie.is_empty(), "every binding removed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_matcher_agrees_with_rabbitmq_examples() {
        let m = |p: &str, k: &str| reference_match(&words(p), &words(k));
        assert!(m("#", ""));
        assert!(m("a.#", "a"));
        assert!(m("*.b.#", "a.b.c.d"));
        assert!(!m("*", ""));
        assert!(m("a..b", "a..b"));
        assert!(!m("a.*", "a"));
    }
}
