//! Small messages of a long backlog, packed back to back in a byte log.
//!
//! A message in memory costs far more than its body: its `Arc` allocation (~112 bytes
//! with the allocator's rounding), a routing-key `String`, and its body's share of the
//! read buffer it was sliced from (the frame around it). For a backlog of millions of
//! small messages that overhead is the memory. So the backlog packs small messages into
//! 64 KiB chunks (exchange and routing key as short strings, properties as MessagePack
//! when any are set, the body) and rebuilds each one when it reaches the head. The
//! backlog is FIFO, so the log is read only at its front: a chunk is freed as soon as
//! the read position leaves it.
//!
//! Entry layout: `[flags u8][exchange len u8][exchange][routing key len u8][routing key]`
//! `[properties len u32 LE][properties]` (only with flag bit 0) `[body len u32 LE][body]`.

use crate::message::{Message, Properties};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// Bytes of one chunk (an entry larger than that gets a chunk of its own size).
const CHUNK: usize = 64 * 1024;

/// Flag bit: properties follow.
const HAS_PROPERTIES: u8 = 1;

/// Packed messages, oldest first.
#[derive(Debug, Default)]
pub struct PackedLog {
    chunks: VecDeque<Vec<u8>>,
    /// Read position in the front chunk.
    read: usize,
    /// The exchange name of the last message unpacked, shared by the next ones that
    /// name the same exchange (most do).
    exchange: Option<Arc<str>>,
}

impl PackedLog {
    /// Appends `m`; answers its packed length, or `None` when it cannot be packed
    /// (an exchange or routing key over 255 bytes, or properties that do not come back
    /// the same from MessagePack).
    pub fn pack(&mut self, m: &Message) -> Option<u32> {
        let exchange = u8::try_from(m.exchange.len()).ok()?;
        let key = u8::try_from(m.routing_key.len()).ok()?;
        let properties = if Arc::ptr_eq(&m.properties, &Properties::shared_empty()) {
            None
        } else {
            // Checked to decode back to the same properties: a packed message must come
            // back exactly as it was (unpacking cannot fail then), or stay unpacked.
            let bytes = rmp_serde::to_vec(&*m.properties).ok()?;
            let back: Properties = rmp_serde::from_slice(&bytes).ok()?;
            if back != *m.properties {
                return None;
            }
            Some(bytes)
        };
        let body = u32::try_from(m.body.len()).ok()?;
        let len = 1
            + 1
            + m.exchange.len()
            + 1
            + m.routing_key.len()
            + properties.as_ref().map_or(0, |p| 4 + p.len())
            + 4
            + m.body.len();
        let chunk = self.room_for(len);
        chunk.push(if properties.is_some() {
            HAS_PROPERTIES
        } else {
            0
        });
        chunk.push(exchange);
        chunk.extend_from_slice(m.exchange.as_bytes());
        chunk.push(key);
        chunk.extend_from_slice(m.routing_key.as_bytes());
        if let Some(p) = &properties {
            chunk.extend_from_slice(&(p.len() as u32).to_le_bytes());
            chunk.extend_from_slice(p);
        }
        chunk.extend_from_slice(&body.to_le_bytes());
        chunk.extend_from_slice(&m.body);
        Some(len as u32)
    }

    /// The back chunk, with room for `len` more bytes.
    fn room_for(&mut self, len: usize) -> &mut Vec<u8> {
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.capacity() - c.len() >= len);
        if !fits {
            self.chunks.push_back(Vec::with_capacity(len.max(CHUNK)));
        }
        self.chunks.back_mut().expect("a chunk was just ensured")
    }

    /// Takes the oldest message, `len` bytes long as [`PackedLog::pack`] answered.
    pub fn unpack(&mut self, len: u32) -> Message {
        if self.chunks.front().is_some_and(|c| self.read == c.len()) && self.chunks.len() > 1 {
            self.chunks.pop_front();
            self.read = 0;
        }
        let chunk = self.chunks.front().expect("a packed message to unpack");
        let entry = &chunk[self.read..self.read + len as usize];
        let message = decode(entry, &mut self.exchange);
        self.read += len as usize;
        if self.read == chunk.len() {
            // Fully read: drop it, or empty it for reuse if it is the one appended to.
            if self.chunks.len() > 1 {
                self.chunks.pop_front();
            } else if let Some(c) = self.chunks.front_mut() {
                c.clear();
            }
            self.read = 0;
        }
        message
    }

    /// Drops every packed message.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.read = 0;
    }

    /// Bytes of memory held (whole chunks).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }
}

/// Rebuilds the message packed in `entry`; `exchange` caches the last exchange name.
fn decode(entry: &[u8], cache: &mut Option<Arc<str>>) -> Message {
    let flags = entry[0];
    let mut at = 1;
    let short = |at: &mut usize| {
        let n = entry[*at] as usize;
        let s = std::str::from_utf8(&entry[*at + 1..*at + 1 + n]).expect("packed from a str");
        *at += 1 + n;
        s
    };
    let exchange_name = short(&mut at);
    let exchange = match cache {
        Some(e) if &**e == exchange_name => e.clone(),
        _ => {
            let e: Arc<str> = Arc::from(exchange_name);
            *cache = Some(e.clone());
            e
        }
    };
    let routing_key = short(&mut at).to_string();
    let long = |at: &mut usize| {
        let n = u32::from_le_bytes(entry[*at..*at + 4].try_into().expect("4 bytes")) as usize;
        let s = &entry[*at + 4..*at + 4 + n];
        *at += 4 + n;
        s
    };
    let properties = if flags & HAS_PROPERTIES != 0 {
        let p = rmp_serde::from_slice(long(&mut at)).expect("properties packed by to_vec");
        Arc::new(p)
    } else {
        Properties::shared_empty()
    };
    let body = Bytes::copy_from_slice(long(&mut at));
    Message {
        exchange,
        routing_key,
        properties,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: usize) -> Message {
        let m = Message::new("orders", &format!("key.{i}"), vec![i as u8; i % 300]);
        if i % 3 == 0 {
            m.with_header("n", i as i64).persistent()
        } else {
            m
        }
    }

    #[test]
    fn messages_come_back_exactly_in_order_and_chunks_are_freed() {
        let mut log = PackedLog::default();
        let lens: Vec<u32> = (0..2000).map(|i| log.pack(&message(i)).unwrap()).collect();
        assert!(log.held() >= 2 * CHUNK, "several chunks");
        for (i, len) in lens.into_iter().enumerate() {
            let m = log.unpack(len);
            assert_eq!(m, message(i));
            if i % 3 != 0 {
                assert!(Arc::ptr_eq(&m.properties, &Properties::shared_empty()));
            }
        }
        assert!(log.held() <= CHUNK, "read chunks are freed");
        // Interleaved packing and unpacking reuses the last chunk.
        for i in 0..100 {
            let len = log.pack(&message(i)).unwrap();
            assert_eq!(log.unpack(len), message(i));
        }
        assert!(log.held() <= CHUNK);
    }

    #[test]
    fn consecutive_messages_share_the_exchange_name() {
        let mut log = PackedLog::default();
        let a = log.pack(&message(1)).unwrap();
        let b = log.pack(&message(2)).unwrap();
        let (a, b) = (log.unpack(a), log.unpack(b));
        assert!(Arc::ptr_eq(&a.exchange, &b.exchange));
    }

    #[test]
    fn large_entries_and_long_names() {
        let mut log = PackedLog::default();
        let big = Message::new("", "q", vec![7u8; 3 * CHUNK]);
        let len = log.pack(&big).unwrap();
        let long = Message::new("", &"k".repeat(256), "x");
        assert_eq!(log.pack(&long), None, "routing key over 255 bytes");
        assert_eq!(log.unpack(len), big);
        log.pack(&message(5)).unwrap();
        log.clear();
        assert_eq!(log.held(), 0);
    }
}
