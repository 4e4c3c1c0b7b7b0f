//! A hand decoder for the frame a consumer receives most: `deliver`, in the exact
//! shape the broker writes it (rmp-serde's encoder, and
//! [`encode_deliver_stored`](super::encode_deliver_stored) byte for byte the same).
//!
//! Through rmp-serde's generic path a deliver frame cost the client a structure walk
//! of the whole frame, a visitor per field and per property, and the variant's name
//! matched against every server frame's: about half of what a 1 KiB stream delivery
//! cost the client in user space (docs/BENCHMARKS.md). This decoder reads the markers
//! the encoder writes, in order, once.
//!
//! It decides nothing on its own: a frame it does not take (any other frame, another
//! marker width than the encoder's, a map instead of an array, a string that is not
//! UTF-8, a value nested too deep, a truncated or malformed frame) is answered `None`,
//! and the caller decodes it through the generic path, which accepts or refuses it
//! with its own error. What it takes, the generic decoder takes too and decodes to the
//! same frame (tested below over every marker, with mutations and every truncation,
//! and by the `server_deliver` fuzz target).

use super::{DeliverFrame, PropertiesRef, MAX_DEPTH};
use crate::message::{FieldTable, FieldValue, Properties, TypedValue};
use bytes::Bytes;
use std::borrow::Cow;

/// `{"deliver": [` with its eight fields, as the encoder writes it.
const HEAD: &[u8] = b"\x81\xa7deliver\x98";

/// The level of a deliver frame's properties array: the frame's map is at level 1,
/// the array of fields at 2 (see [`MAX_DEPTH`]).
const PROPERTIES_LEVEL: usize = 3;

/// A deliver frame decoded by hand: borrowed strings and body, and the properties
/// inline, for a consumer that takes them by value (the client's `Delivery`) without
/// the box a [`DeliverFrame`] keeps them in.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverParts<'a> {
    /// The consumer's tag (empty for a get).
    pub consumer_tag: &'a str,
    /// Delivery tag to ack with.
    pub delivery_tag: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// Deliveries of this message, this one included.
    pub delivery_count: u32,
    /// Exchange it was published to.
    pub exchange: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// Properties, `None` when the frame has nil.
    pub properties: Option<Properties>,
    /// Body.
    pub body: &'a [u8],
}

impl<'a> DeliverParts<'a> {
    /// The same delivery as the generic decoder's frame.
    pub fn into_frame(self) -> DeliverFrame<'a> {
        DeliverFrame {
            consumer_tag: Cow::Borrowed(self.consumer_tag),
            delivery_tag: self.delivery_tag,
            redelivered: self.redelivered,
            delivery_count: self.delivery_count,
            exchange: Cow::Borrowed(self.exchange),
            routing_key: Cow::Borrowed(self.routing_key),
            properties: self.properties.map(|p| PropertiesRef::Owned(Box::new(p))),
            body: self.body,
        }
    }
}

/// Decodes `body` (a frame body, without its length prefix) when it is a deliver frame
/// in the encoder's shape; `None` for anything else, which the generic decoder
/// ([`decode_server`](super::decode_server)) then decodes or refuses.
///
/// ```
/// use actormq::protocol::frame::take_frame;
/// use actormq::protocol::{decode_deliver, encode_server, DeliverFrame, ServerFrame};
/// use bytes::BytesMut;
/// let frame = ServerFrame::Deliver(DeliverFrame {
///     consumer_tag: "c".into(),
///     delivery_tag: 1,
///     redelivered: false,
///     delivery_count: 1,
///     exchange: "".into(),
///     routing_key: "q".into(),
///     properties: None,
///     body: b"hi",
/// });
/// let mut out = BytesMut::new();
/// encode_server(&frame, &mut out).unwrap();
/// let body = take_frame(&mut out, 1 << 20).unwrap().unwrap();
/// let d = decode_deliver(&body).unwrap();
/// assert_eq!((d.routing_key, d.body), ("q", &b"hi"[..]));
/// assert!(decode_deliver(b"\x81\xa9heartbeat\xc0").is_none());
/// ```
pub fn decode_deliver(body: &[u8]) -> Option<DeliverParts<'_>> {
    let mut r = Reader {
        b: body.strip_prefix(HEAD)?,
    };
    let consumer_tag = r.str()?;
    let delivery_tag = r.uint()?;
    let redelivered = r.bool()?;
    let delivery_count = u32::try_from(r.uint()?).ok()?;
    let exchange = r.str()?;
    let routing_key = r.str()?;
    let properties = if r.nil() { None } else { Some(r.properties()?) };
    let body = r.bin()?;
    r.b.is_empty().then_some(DeliverParts {
        consumer_tag,
        delivery_tag,
        redelivered,
        delivery_count,
        exchange,
        routing_key,
        properties,
        body,
    })
}

/// The rest of a frame, read from the front. Every method answers `None` (leaving the
/// reader anywhere) on a marker it does not take or on too few bytes.
pub(super) struct Reader<'a> {
    pub(super) b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    pub(super) fn byte(&mut self) -> Option<u8> {
        let (&m, rest) = self.b.split_first()?;
        self.b = rest;
        Some(m)
    }

    /// A big-endian unsigned integer of `n` bytes (at most 8).
    fn be(&mut self, n: usize) -> Option<u64> {
        let s = self.take(n)?;
        Some(s.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    }

    /// Takes a nil when the next value is one.
    pub(super) fn nil(&mut self) -> bool {
        if self.b.first() == Some(&0xc0) {
            self.b = &self.b[1..];
            true
        } else {
            false
        }
    }

    pub(super) fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// An unsigned integer in one of the forms the encoder writes for one.
    pub(super) fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// The length of a string whose marker is `m`.
    fn str_len(&mut self, m: u8) -> Option<usize> {
        let n = match m {
            0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        usize::try_from(n).ok()
    }

    /// A string (str marker, UTF-8).
    pub(super) fn str(&mut self) -> Option<&'a str> {
        let m = self.byte()?;
        let n = self.str_len(m)?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// The bytes of a bin whose marker is `m`.
    fn bin_after(&mut self, m: u8) -> Option<&'a [u8]> {
        let n = match m {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(n).ok()?)
    }

    pub(super) fn bin(&mut self) -> Option<&'a [u8]> {
        let m = self.byte()?;
        self.bin_after(m)
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        if self.nil() {
            return Some(None);
        }
        self.str().map(|s| Some(s.to_owned()))
    }

    fn opt_u8(&mut self) -> Option<Option<u8>> {
        if self.nil() {
            return Some(None);
        }
        match self.byte()? {
            m @ 0x00..=0x7f => Some(Some(m)),
            0xcc => Some(Some(self.byte()?)),
            _ => None,
        }
    }

    fn opt_u64(&mut self) -> Option<Option<u64>> {
        if self.nil() {
            return Some(None);
        }
        self.uint().map(Some)
    }

    /// The properties: an array of their 13 fields in declaration order.
    pub(super) fn properties(&mut self) -> Option<Properties> {
        self.properties_with(true)
    }

    /// [`properties`](Self::properties) whose headers are nil: `None` at a table,
    /// before anything of it is decoded.
    pub(super) fn properties_without_headers(&mut self) -> Option<Properties> {
        self.properties_with(false)
    }

    fn properties_with(&mut self, headers: bool) -> Option<Properties> {
        if self.byte()? != 0x9d {
            return None;
        }
        Some(Properties {
            content_type: self.opt_string()?,
            content_encoding: self.opt_string()?,
            headers: if self.nil() {
                None
            } else if !headers {
                return None;
            } else {
                let m = self.byte()?;
                Some(self.table(m, PROPERTIES_LEVEL + 1)?)
            },
            delivery_mode: self.opt_u8()?,
            priority: self.opt_u8()?,
            correlation_id: self.opt_string()?,
            reply_to: self.opt_string()?,
            expiration: self.opt_string()?,
            message_id: self.opt_string()?,
            timestamp: self.opt_u64()?,
            kind: self.opt_string()?,
            user_id: self.opt_string()?,
            app_id: self.opt_string()?,
        })
    }

    /// A table whose map marker `m` was read, the map at `level`: string keys, values
    /// as [`FieldValue`] decodes them.
    fn table(&mut self, m: u8, level: usize) -> Option<FieldTable> {
        let n = match m {
            0x80..=0x8f => u64::from(m & 0x0f),
            0xde => self.be(2)?,
            0xdf => self.be(4)?,
            _ => return None,
        };
        let mut t = FieldTable::new();
        for _ in 0..n {
            if level + 1 > MAX_DEPTH {
                return None;
            }
            let k = self.str()?;
            let v = self.value(level + 1)?;
            t.insert(k.to_owned(), v);
        }
        Some(t)
    }

    /// A table value at `level`, as `FieldValue`'s own `Deserialize` decodes it.
    fn value(&mut self, level: usize) -> Option<FieldValue> {
        if level > MAX_DEPTH {
            return None;
        }
        let m = self.byte()?;
        Some(match m {
            0x00..=0x7f => FieldValue::Int(i64::from(m)),
            0xe0..=0xff => FieldValue::Int(i64::from(m as i8)),
            0xc0 => FieldValue::Void,
            0xc2 => FieldValue::Bool(false),
            0xc3 => FieldValue::Bool(true),
            0xcc => FieldValue::Int(self.be(1)? as i64),
            0xcd => FieldValue::Int(self.be(2)? as i64),
            0xce => FieldValue::Int(self.be(4)? as i64),
            0xcf => FieldValue::Int(i64::try_from(self.be(8)?).ok()?),
            0xd0 => FieldValue::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => FieldValue::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => FieldValue::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => FieldValue::Int(self.be(8)? as i64),
            0xca => FieldValue::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => FieldValue::Float(f64::from_bits(self.be(8)?)),
            0xa0..=0xbf | 0xd9..=0xdb => {
                let n = self.str_len(m)?;
                FieldValue::Str(std::str::from_utf8(self.take(n)?).ok()?.to_owned())
            }
            0xc4..=0xc6 => FieldValue::Bytes(Bytes::copy_from_slice(self.bin_after(m)?)),
            0x90..=0x9f | 0xdc | 0xdd => {
                let n = match m {
                    0x90..=0x9f => u64::from(m & 0x0f),
                    0xdc => self.be(2)?,
                    _ => self.be(4)?,
                };
                // Each element takes at least a byte: a count beyond the bytes left is
                // a malformed frame, refused before anything is reserved for it.
                if n > self.b.len() as u64 {
                    return None;
                }
                let mut a = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    a.push(self.value(level + 1)?);
                }
                FieldValue::Array(a)
            }
            0x80..=0x8f | 0xde | 0xdf => FieldValue::Table(self.table(m, level)?),
            0xd4..=0xd8 | 0xc7..=0xc9 => {
                let n = match m {
                    0xd4 => 1,
                    0xd5 => 2,
                    0xd6 => 4,
                    0xd7 => 8,
                    0xd8 => 16,
                    0xc7 => self.be(1)?,
                    0xc8 => self.be(2)?,
                    _ => self.be(4)?,
                };
                let code = self.byte()? as i8;
                let payload = self.take(usize::try_from(n).ok()?)?;
                FieldValue::Typed(TypedValue::from_ext(code, payload).ok()?)
            }
            0xc1 => return None,
        })
    }
}

#[cfg(test)]
mod tests;
