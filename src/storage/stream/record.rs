//! A stream's record in memory: its timestamp, its message (decoded, or as its segment
//! stores it) and the bytes it is accounted for against the memory watermark.

use super::codec;
use super::meta::OFFSET_HEADER;
use crate::message::{size, Message};
use std::sync::Arc;

/// One retained record.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// When the broker appended it, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The message, with its `x-stream-offset` header.
    pub message: RecordMessage,
    /// Bytes of memory it is accounted for, worked out once: the tail cache, the
    /// shared blocks and every consumer's read-ahead count it as it comes and goes,
    /// and walking its headers each time cost ~5% of a replay's CPU.
    pub size: u64,
}

/// A record's message: decoded, or as its segment stores it.
#[derive(Debug, Clone)]
pub enum RecordMessage {
    /// Appended in this run (the tail cache), or held in memory only.
    Decoded(Arc<Message>),
    /// Read back from a segment file: decoded only for a consumer that needs a
    /// [`Message`] (see [`codec::StoredMessage`]).
    Stored(Arc<codec::StoredMessage>),
}

impl RecordMessage {
    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            RecordMessage::Decoded(m) => &m.body,
            RecordMessage::Stored(s) => s.body(),
        }
    }

    /// The message, if decoded.
    pub fn decoded(&self) -> Option<&Arc<Message>> {
        match self {
            RecordMessage::Decoded(m) => Some(m),
            RecordMessage::Stored(s) => s.decoded(),
        }
    }
}

impl StreamRecord {
    /// A record of `message` appended at `timestamp`.
    pub fn new(timestamp: i64, message: Arc<Message>) -> Self {
        let size = decoded_size(&message);
        StreamRecord {
            timestamp,
            message: RecordMessage::Decoded(message),
            size,
        }
    }

    /// A record read back from a segment, kept as stored: accounted for the bytes it
    /// holds (its three values and body) and its own two allocations.
    pub fn stored(timestamp: i64, message: codec::StoredMessage) -> Self {
        let size = message.len() as u64 + STORED_OVERHEAD;
        StreamRecord {
            timestamp,
            message: RecordMessage::Stored(Arc::new(message)),
            size,
        }
    }
}

impl StreamRecord {
    /// A record just appended, kept as stored in the chunk of frames it was written
    /// in and decoded only for a consumer that needs a message: accounted for the
    /// stored bytes, its allocations and `decoded`, what the message it was encoded
    /// from costs with its offset header ([`appended_decoded_size`]), as if an AMQP or
    /// embedded consumer at the head had decoded it (the decoded message then stays
    /// with the record).
    pub fn appended(timestamp: i64, message: codec::StoredMessage, decoded: u64) -> Self {
        let size = (message.len()
            + std::mem::size_of::<codec::StoredMessage>()
            + std::mem::size_of::<StreamRecord>()) as u64
            + decoded;
        StreamRecord {
            timestamp,
            message: RecordMessage::Stored(Arc::new(message)),
            size,
        }
    }
}

/// What a stored record is accounted for besides its bytes: its own two allocations.
pub(super) const STORED_OVERHEAD: u64 =
    (std::mem::size_of::<codec::StoredMessage>() + std::mem::size_of::<StreamRecord>()) as u64;

/// What `m` costs decoded once its `x-stream-offset` header is added (an entry more
/// in its own table, unless it had one): the decoded form of the record it is
/// appended as.
pub(super) fn appended_decoded_size(m: &Message) -> u64 {
    let header = match &m.properties.headers {
        Some(t) if t.contains_key(OFFSET_HEADER) => 0,
        _ => size::ENTRY + size::heap(OFFSET_HEADER.len()),
    };
    (m.body.len() + size::properties_size(&m.properties) + header + std::mem::size_of::<Message>())
        as u64
}

/// What a decoded message is accounted for.
pub(super) fn decoded_size(m: &Message) -> u64 {
    (m.accounted_size() + std::mem::size_of::<Message>()) as u64
}
