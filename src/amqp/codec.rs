//! AMQP 0-9-1 framing over the `amq-protocol` crate: cutting frames out of the read
//! buffer (the frame header, the method and content-header payloads are parsed by the
//! crate's parsers), the `frame_max` limit, and writing methods, content and heartbeats.
//! No I/O here.
//!
//! A frame is `type:u8 channel:u16 size:u32 payload[size] 0xCE`. Body payloads are
//! slices of the read buffer (`Bytes`), never copied; a message's body frames are
//! joined only when there are several.

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{constants, AMQPClass};
use amq_protocol::types::generation::{gen_id, gen_long_uint, gen_short_short_uint};
use amq_protocol::types::parsing::{parse_id, parse_long_uint, parse_short_short_uint};
use amq_protocol::types::ShortString;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol header a 0-9-1 client sends first, and what a wrong one gets back.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Bytes of a frame around its payload: type, channel, size, frame-end.
pub const FRAME_OVERHEAD: usize = 8;

/// How far past `frame_max` a client's frame may go before it is refused: one frame's
/// overhead, as RabbitMQ allows, because several clients (AMQPStorm among them) put
/// `frame_max` bytes of payload in a body frame, counting without the 8 bytes of
/// header and end. The broker's own frames stay within `frame_max`.
pub const FRAME_SIZE_FUDGE: usize = FRAME_OVERHEAD;

/// One frame read from a client (or, in the perf client, from a server).
///
/// The frames of the publish and consume paths have variants of their own, parsed in
/// place without the crate's boxed `AMQPClass`: `basic.publish`, `basic.ack` and a
/// content header without properties. Every other method is the crate's.
#[derive(Debug)]
pub enum Incoming {
    /// A method.
    Method(u16, Box<AMQPClass>),
    /// `basic.publish`.
    Publish(u16, basic::Publish),
    /// `basic.ack`: delivery tag, multiple.
    Ack(u16, u64, bool),
    /// A content header.
    Header(u16, ContentHeader),
    /// A content body frame.
    Body(u16, Bytes),
    /// A heartbeat (on channel 0, or wrongly on another).
    Heartbeat(u16),
}

/// A content header as the dispatcher needs it.
#[derive(Debug, PartialEq)]
pub struct ContentHeader {
    /// The class (60 for basic, the only one with content).
    pub class_id: u16,
    /// The size of the body that follows.
    pub body_size: u64,
    /// The properties; None when none is set (no allocation for the common case).
    pub properties: Option<Box<AMQPProperties>>,
}

impl ContentHeader {
    /// The properties, the empty set when none is set.
    pub fn properties(&self) -> AMQPProperties {
        self.properties.as_deref().cloned().unwrap_or_default()
    }
}

/// A frame that breaks the framing: the connection closes with 501 FRAME_ERROR (or
/// 505 for an unknown frame type, 502 for an unparsable method).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Larger than the negotiated `frame_max`.
    #[error("frame size {size} exceeds frame_max {max}")]
    TooLarge {
        /// The frame's size, overhead included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The byte after the payload is not 0xCE.
    #[error("frame end byte {0:#04x} is not 0xCE")]
    BadEnd(u8),
    /// An unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A method or content header the crate could not parse.
    #[error("cannot parse {what} on channel {channel}")]
    Malformed {
        /// Method or content header.
        what: &'static str,
        /// The channel.
        channel: u16,
    },
}

impl CodecError {
    /// The AMQP reply code this error closes the connection with.
    pub fn reply_code(&self) -> u16 {
        match self {
            CodecError::TooLarge { .. } | CodecError::BadEnd(_) => 501,
            CodecError::Malformed { .. } => 502,
            CodecError::UnknownType(_) => 505,
        }
    }
}

/// Takes one frame off the front of `buf`: `Ok(None)` when more bytes are needed.
pub fn take_frame(buf: &mut BytesMut, frame_max: usize) -> Result<Option<Incoming>, CodecError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let head = &buf[..7];
    let (rest, kind) = parse_short_short_uint(head).map_err(|_| CodecError::UnknownType(0))?;
    let (rest, channel) = parse_id(rest).map_err(|_| CodecError::UnknownType(kind))?;
    let (_, size) = parse_long_uint(rest).map_err(|_| CodecError::UnknownType(kind))?;
    let total = size as usize + FRAME_OVERHEAD;
    if total > frame_max.saturating_add(FRAME_SIZE_FUDGE) {
        return Err(CodecError::TooLarge {
            size: total,
            max: frame_max,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != constants::FRAME_END {
        return Err(CodecError::BadEnd(end));
    }
    let malformed = |what| CodecError::Malformed { what, channel };
    let body = 7..7 + size as usize;
    // Methods and headers are parsed in place (no `Bytes` per frame: freezing a slice
    // of the read buffer costs an atomic count each); only bodies are kept as slices.
    if (kind == constants::FRAME_METHOD || kind == constants::FRAME_HEADER)
        && super::depth::too_deep(&buf[body.clone()])
    {
        // The crate's parsers recurse per level: refuse before they run out of stack.
        return Err(malformed("a frame nesting field tables too deeply"));
    }
    let frame = match kind {
        constants::FRAME_METHOD => {
            if let Some(f) = hot_method(channel, &buf[body.clone()]) {
                f.ok_or_else(|| malformed("a method"))?
            } else {
                let (left, m) = amq_protocol::protocol::parse_class(&buf[body])
                    .map_err(|_| malformed("a method"))?;
                if !left.is_empty() {
                    return Err(malformed("a method"));
                }
                Incoming::Method(channel, Box::new(m))
            }
        }
        constants::FRAME_HEADER => {
            let h = content_header(&buf[body]).ok_or_else(|| malformed("a content header"))?;
            Incoming::Header(channel, h)
        }
        constants::FRAME_BODY => {
            let frame = buf.split_to(total).freeze();
            return Ok(Some(Incoming::Body(channel, frame.slice(body))));
        }
        constants::FRAME_HEARTBEAT => Incoming::Heartbeat(channel),
        other => return Err(CodecError::UnknownType(other)),
    };
    buf.advance(total);
    Ok(Some(frame))
}

/// `basic.publish` (60, 40) and `basic.ack` (60, 80), read in place: `None` for any
/// other method, `Some(None)` for one of these two that is malformed. Their fields as
/// the spec lays them out (and as the crate's parsers read them: a short string must
/// be UTF-8; nothing may follow the last field).
fn hot_method(channel: u16, p: &[u8]) -> Option<Option<Incoming>> {
    match p.get(..4)? {
        [0, 60, 0, 40] => Some(publish(channel, &p[4..])),
        [0, 60, 0, 80] => Some(match p[4..] {
            [t0, t1, t2, t3, t4, t5, t6, t7, bits] => Some(Incoming::Ack(
                channel,
                u64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
                bits & 1 != 0,
            )),
            _ => None,
        }),
        _ => None,
    }
}

fn publish(channel: u16, p: &[u8]) -> Option<Incoming> {
    // The ticket (deprecated, ignored as by the crate), then the names and bits.
    let (exchange, rest) = short_string(p.get(2..)?)?;
    let (routing_key, rest) = short_string(rest)?;
    let [bits] = rest else {
        return None;
    };
    Some(Incoming::Publish(
        channel,
        basic::Publish {
            exchange,
            routing_key,
            mandatory: bits & 1 != 0,
            immediate: bits & 2 != 0,
        },
    ))
}

/// A short string off the front of `p`, and what follows it.
fn short_string(p: &[u8]) -> Option<(ShortString, &[u8])> {
    let (&len, rest) = p.split_first()?;
    let s = rest.get(..len as usize)?;
    let s = std::str::from_utf8(s).ok()?;
    Some((ShortString::from(s.to_string()), &rest[len as usize..]))
}

/// A content header: class, weight, body size, then the properties, read by the
/// crate only when their flags say some are set.
fn content_header(p: &[u8]) -> Option<ContentHeader> {
    if p.len() < 14 {
        return None;
    }
    let class_id = u16::from_be_bytes([p[0], p[1]]);
    let body_size = u64::from_be_bytes(p[4..12].try_into().ok()?);
    if p.len() == 14 && p[12..14] == [0, 0] {
        return Some(ContentHeader {
            class_id,
            body_size,
            properties: None,
        });
    }
    let (left, h) = amq_protocol::frame::parsing::parse_content_header(p).ok()?;
    if !left.is_empty() {
        return None;
    }
    Some(ContentHeader {
        class_id: h.class_id,
        body_size: h.body_size,
        properties: Some(Box::new(h.properties)),
    })
}

/// Writes frames into a connection's output buffer.
#[derive(Default)]
pub struct Encoder {
    /// Scratch space for the crate's generator (it needs a seekable writer).
    scratch: Vec<u8>,
}

impl Encoder {
    fn frame(&mut self, out: &mut BytesMut, frame: &AMQPFrame) {
        self.scratch.clear();
        let buf = std::mem::take(&mut self.scratch);
        match gen_frame(frame)(WriteContext::from(buf)) {
            Ok(ctx) => {
                let (buf, _) = ctx.into_inner();
                out.extend_from_slice(&buf);
                self.scratch = buf;
            }
            Err(e) => tracing::error!(error = ?e, "cannot encode an AMQP frame"),
        }
    }

    /// A method frame.
    pub fn method(&mut self, out: &mut BytesMut, channel: u16, m: AMQPClass) {
        self.frame(out, &AMQPFrame::Method(channel, m));
    }

    /// A content header and the body frames of `body`, each within `frame_max`.
    pub fn content(
        &mut self,
        out: &mut BytesMut,
        channel: u16,
        properties: AMQPProperties,
        body: &[u8],
        frame_max: usize,
    ) {
        self.frame(
            out,
            &AMQPFrame::Header(
                channel,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties,
                },
            ),
        );
        let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
        for part in body.chunks(chunk) {
            body_frame(out, channel, part);
        }
    }

    /// One delivery's frames (`basic.deliver`, content header, body frames), written
    /// straight into `out`: the crate's generator needs owned `ShortString`s (three
    /// allocations) and a scratch copy per frame, which made the encoding the larger
    /// part of a delivery's cost. Names longer than a short string are cut at 255
    /// bytes, as [`super::properties`] does. `properties`: None = none set.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &mut self,
        out: &mut BytesMut,
        channel: u16,
        head: &DeliverHead<'_>,
        properties: Option<&AMQPProperties>,
        body: &[u8],
        frame_max: usize,
    ) {
        let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
        out.reserve(
            2 * FRAME_OVERHEAD
                + 40
                + head.consumer_tag.len().min(255)
                + head.exchange.len().min(255)
                + head.routing_key.len().min(255)
                + body.len()
                + body.len().div_ceil(chunk) * FRAME_OVERHEAD,
        );
        let at = begin_frame(out, constants::FRAME_METHOD, channel);
        out.put_u16(60);
        out.put_u16(60);
        put_short(out, head.consumer_tag);
        out.put_u64(head.delivery_tag);
        out.put_u8(u8::from(head.redelivered));
        put_short(out, head.exchange);
        put_short(out, head.routing_key);
        end_frame(out, at);
        self.content_header(out, channel, body.len() as u64, properties);
        for part in body.chunks(chunk) {
            body_frame(out, channel, part);
        }
    }

    /// A content header frame (class basic).
    fn content_header(
        &mut self,
        out: &mut BytesMut,
        channel: u16,
        body_size: u64,
        properties: Option<&AMQPProperties>,
    ) {
        let at = begin_frame(out, constants::FRAME_HEADER, channel);
        out.put_u16(60);
        out.put_u16(0);
        out.put_u64(body_size);
        match properties {
            None => out.put_u16(0),
            Some(p) => {
                self.scratch.clear();
                let buf = std::mem::take(&mut self.scratch);
                match amq_protocol::protocol::basic::gen_properties(p)(WriteContext::from(buf)) {
                    Ok(ctx) => {
                        let (buf, _) = ctx.into_inner();
                        out.extend_from_slice(&buf);
                        self.scratch = buf;
                    }
                    Err(e) => {
                        tracing::error!(error = ?e, "cannot encode AMQP properties");
                        out.put_u16(0);
                    }
                }
            }
        }
        end_frame(out, at);
    }

    /// A heartbeat frame.
    pub fn heartbeat(&mut self, out: &mut BytesMut) {
        self.frame(out, &AMQPFrame::Heartbeat);
    }
}

/// The fields of a `basic.deliver` method.
pub struct DeliverHead<'a> {
    /// The consumer's tag.
    pub consumer_tag: &'a str,
    /// The channel's delivery tag.
    pub delivery_tag: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// The exchange it was published to.
    pub exchange: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
}

/// Writes a frame's type, channel and a size to be filled in by [`end_frame`]; answers
/// where the size goes.
fn begin_frame(out: &mut BytesMut, kind: u8, channel: u16) -> usize {
    out.put_u8(kind);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

/// Fills in the size of the frame begun at `at` and ends it.
fn end_frame(out: &mut BytesMut, at: usize) {
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(constants::FRAME_END);
}

/// A short string: at most 255 bytes, cut at a character boundary.
fn put_short(out: &mut BytesMut, v: &str) {
    let mut end = v.len().min(255);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u8(end as u8);
    out.extend_from_slice(&v.as_bytes()[..end]);
}

/// One body frame, written straight into `out` with the crate's field generators (its
/// own `AMQPFrame::Body` would copy the body into a `Vec` first).
fn body_frame(out: &mut BytesMut, channel: u16, part: &[u8]) {
    out.reserve(part.len() + FRAME_OVERHEAD);
    let head = (
        gen_short_short_uint(constants::FRAME_BODY),
        gen_id(channel),
        gen_long_uint(part.len() as u32),
    );
    let w = out.writer();
    let ctx = WriteContext::from(w);
    let ctx = head.0(ctx).and_then(|c| head.1(c)).and_then(|c| head.2(c));
    match ctx {
        Ok(ctx) => {
            let (w, _) = ctx.into_inner();
            let out = w.into_inner();
            out.extend_from_slice(part);
            out.put_u8(constants::FRAME_END);
        }
        Err(e) => tracing::error!(error = ?e, "cannot encode a body frame"),
    }
}

#[cfg(test)]
mod tests;
