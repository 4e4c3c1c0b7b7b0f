//! The frame types of the native protocol and their MessagePack encoding.
//!
//! Frames borrow their strings and bodies from the buffer they were decoded from, so a
//! publish's body becomes a `Bytes` slice of the socket buffer with no copy
//! ([`body_bytes`]).

use super::frame::put_frame;
use crate::error::ErrorCode;
use crate::message::Properties;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// First frame of a connection, from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub version: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Virtual host to open.
    pub vhost: String,
    /// Free-form client name, for logs.
    pub client: String,
    /// Heartbeat interval the client wants in seconds (None = the server's; 0 = off).
    pub heartbeat_secs: Option<u16>,
    /// The login mechanism: `None` (not sent) = user and password; `"EXTERNAL"` = the
    /// user the TLS client certificate names, `user` and `password` ignored (see
    /// PROTOCOL.md §5.1). Last and optional, so a six-element hello stays valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
}

/// A request: every operation that gets a reply. `id` is chosen by the client and named
/// by the reply or error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Client-chosen request id.
    pub id: u64,
    /// The operation.
    pub op: Op,
}

/// A published message. `seq` > 0 asks for a confirm naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishFrame<'a> {
    /// Publish sequence number (increasing per connection), 0 = no confirm wanted.
    pub seq: u64,
    /// Exchange (`""` = default).
    #[serde(borrow)]
    pub exchange: &'a str,
    /// Routing key.
    #[serde(borrow)]
    pub routing_key: &'a str,
    /// Return the message if it reaches no queue.
    pub mandatory: bool,
    /// Properties; nil = none set. Boxed: inline they made every decoded frame
    /// ~300 bytes larger, moved around per publish whether set or not.
    pub properties: Option<Box<Properties>>,
    /// Body (MessagePack bin).
    #[serde(borrow, with = "serde_bytes")]
    pub body: &'a [u8],
}

/// Frames a client sends.
// Frames live briefly on the stack while decoded. A publish's properties are boxed
// (allocated only when set: most publishes have none), which keeps the hot variant
// small; the large request variants are rare.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientFrame<'a> {
    /// Opens the connection (first frame, exactly once).
    Hello(Hello),
    /// An operation with a reply.
    Request(Request),
    /// A message to publish.
    #[serde(borrow)]
    Publish(PublishFrame<'a>),
    /// Acknowledge a delivery (or all up to it, with `multiple`).
    Ack {
        /// Delivery tag.
        tag: u64,
        /// Up to and including `tag`.
        multiple: bool,
    },
    /// Negative acknowledgement.
    Nack {
        /// Delivery tag.
        tag: u64,
        /// Up to and including `tag`.
        multiple: bool,
        /// Requeue rather than drop.
        requeue: bool,
    },
    /// Reject one delivery.
    Reject {
        /// Delivery tag.
        tag: u64,
        /// Requeue rather than drop.
        requeue: bool,
    },
    /// Keeps the connection alive.
    Heartbeat,
}

/// A message delivered to a consumer or answered to a get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverFrame<'a> {
    /// The consumer's tag (empty for a get).
    #[serde(borrow)]
    pub consumer_tag: Cow<'a, str>,
    /// Delivery tag to ack with, increasing per connection.
    pub delivery_tag: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// Deliveries of this message, this one included.
    pub delivery_count: u32,
    /// Exchange it was published to.
    #[serde(borrow)]
    pub exchange: Cow<'a, str>,
    /// Its routing key.
    #[serde(borrow)]
    pub routing_key: Cow<'a, str>,
    /// Properties, nil when none are set.
    pub properties: Option<PropertiesRef<'a>>,
    /// Body.
    #[serde(borrow, with = "serde_bytes")]
    pub body: &'a [u8],
}

/// The successful answer to a request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyBody<'a> {
    /// Done.
    Ok,
    /// A queue was declared (or checked).
    QueueDeclared {
        /// Its name (generated when asked with an empty one).
        name: String,
        /// Messages ready.
        messages: u64,
        /// Consumers attached.
        consumers: u32,
    },
    /// Messages removed by a purge or delete.
    MessageCount {
        /// How many.
        messages: u64,
    },
    /// A consumer started.
    ConsumeOk {
        /// Its tag.
        consumer_tag: String,
    },
    /// A get found a message.
    GetOk {
        /// The message.
        #[serde(borrow)]
        delivery: DeliverFrame<'a>,
        /// Messages left in the queue.
        message_count: u64,
    },
    /// A get found the queue empty.
    GetEmpty,
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// Accepts the Hello.
    Welcome {
        /// The protocol version the server speaks.
        version: u16,
        /// Server name and version.
        server: String,
        /// Largest frame accepted.
        max_frame_size: u32,
        /// Agreed heartbeat interval in seconds, 0 = off.
        heartbeat_secs: u16,
    },
    /// The answer to request `id`.
    Reply {
        /// The request id.
        id: u64,
        /// The answer.
        #[serde(borrow)]
        body: ReplyBody<'a>,
    },
    /// A failure: of request `id`, or of the connection when `fatal` (the server closes
    /// the socket after it).
    Error {
        /// The request it answers, if any.
        id: Option<u64>,
        /// Stable code.
        code: ErrorCode,
        /// Human-readable, names what it concerns.
        message: String,
        /// The connection is closing.
        fatal: bool,
    },
    /// A delivery to a consumer.
    #[serde(borrow)]
    Deliver(DeliverFrame<'a>),
    /// A run of consecutive stream records as stored, to a consumer that asked for runs
    /// ([`RUNS_ARGUMENT`] in [`Op::Consume`]); see [`DeliverRunFrame`] and docs/PROTOCOL.md.
    #[serde(borrow)]
    DeliverRun(DeliverRunFrame<'a>),
    /// Publishes up to `seq` (with `multiple`) or `seq` alone are safely in every queue
    /// they route to.
    Confirm {
        /// Publish sequence number.
        seq: u64,
        /// All outstanding ones up to `seq`.
        multiple: bool,
    },
    /// Publish `seq` was refused; it is not in any queue.
    Nack {
        /// Publish sequence number.
        seq: u64,
        /// Why.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
    /// A mandatory publish reached no queue: the message comes back (before its confirm).
    Return {
        /// Its publish sequence number (0 if it had none).
        seq: u64,
        /// AMQP reply code (312 = NO_ROUTE).
        code: u16,
        /// Reply text.
        reason: String,
        /// The exchange.
        #[serde(borrow)]
        exchange: Cow<'a, str>,
        /// The routing key.
        #[serde(borrow)]
        routing_key: Cow<'a, str>,
        /// Properties.
        properties: Option<PropertiesRef<'a>>,
        /// Body.
        #[serde(borrow, with = "serde_bytes")]
        body: &'a [u8],
    },
    /// Publishing is paused (memory watermark); the server stops reading publishes.
    Blocked {
        /// Why.
        reason: String,
    },
    /// Publishing may resume.
    Unblocked,
    /// The broker cancelled a consumer (its queue was deleted).
    ConsumerCancelled {
        /// Consumer tag.
        consumer_tag: String,
        /// Why.
        reason: String,
    },
    /// Keeps the connection alive.
    Heartbeat,
}

/// A frame body that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// BAD_FRAME, or UNKNOWN_OPERATION for a well-formed frame naming an unknown variant.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

/// Decodes `body`; with `budget`, a frame whose decoded structures would take more than
/// that much memory is refused (RESOURCE_ERROR) before anything is allocated.
fn decode<'a, T: Deserialize<'a>>(body: &'a [u8], budget: Option<usize>) -> Result<T, DecodeError> {
    let mut walk = Walk::default();
    match walk.value(body, 1) {
        Some(n) if n == body.len() => {}
        Some(n) => {
            return Err(DecodeError {
                code: ErrorCode::BadFrame,
                message: format!("{} trailing bytes after the frame", body.len() - n),
            })
        }
        None if walk.too_deep => {
            return Err(DecodeError {
                code: ErrorCode::BadFrame,
                message: format!("MessagePack nested deeper than {MAX_DEPTH} levels"),
            })
        }
        None => {
            return Err(DecodeError {
                code: ErrorCode::BadFrame,
                message: "truncated or malformed MessagePack".into(),
            })
        }
    }
    if let Some(budget) = budget.filter(|b| walk.cost.0 > *b) {
        return Err(DecodeError {
            code: ErrorCode::ResourceError,
            message: format!(
                "a frame of {} bytes would take about {} bytes of memory decoded, more than \
                 the {budget} allowed ({} KiB + {DECODE_RATIO} x its size): too many tiny \
                 values (headers or arguments)",
                body.len(),
                walk.cost.0,
                DECODE_FLOOR / 1024
            ),
        });
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    let value = T::deserialize(&mut de).map_err(|e| {
        let message = e.to_string();
        let code = if message.contains("unknown variant") {
            ErrorCode::UnknownOperation
        } else {
            ErrorCode::BadFrame
        };
        DecodeError { code, message }
    })?;
    Ok(value)
}

/// The id of a request frame whose operation could not be decoded (an unknown
/// operation), so the error can name it.
pub fn request_id(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    enum Only {
        #[serde(rename = "request")]
        Request(u64, serde::de::IgnoredAny),
    }
    match rmp_serde::from_slice::<Only>(body) {
        Ok(Only::Request(id, _)) => Some(id),
        Err(_) => None,
    }
}

/// The sequence number of a publish frame that could not be decoded (one over the
/// decoded-memory budget), so that it can be nacked rather than the connection closed.
/// Reads the seq alone: the rest is skipped without being decoded.
pub fn publish_seq(body: &[u8]) -> Option<u64> {
    use serde::de::IgnoredAny;
    #[derive(Deserialize)]
    enum Only {
        #[serde(rename = "publish")]
        Publish(
            u64,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
        ),
    }
    match rmp_serde::from_slice::<Only>(body) {
        Ok(Only::Publish(seq, ..)) => Some(seq),
        Err(_) => None,
    }
}

/// Decodes a client frame body. A publish in the client encoder's own shape, without
/// headers, is read by hand ([`decode_publish`]), anything else through rmp-serde.
///
/// A frame that would take more than [`decode_budget`] of memory decoded is refused with
/// RESOURCE_ERROR, so no frame within the frame size limit costs the broker more than a
/// small multiple of its size.
pub fn decode_client(body: &[u8]) -> Result<ClientFrame<'_>, DecodeError> {
    if let Some(p) = decode_publish(body) {
        return Ok(ClientFrame::Publish(p));
    }
    decode(body, Some(decode_budget(body.len())))
}

/// Decodes a server frame body. A deliver frame in the encoder's own shape is read by
/// hand ([`decode_deliver`]), anything else through rmp-serde.
///
/// No memory budget here: a client trusts its broker, whose deliveries carry what
/// it accepted plus headers of its own (`x-death`).
pub fn decode_server(body: &[u8]) -> Result<ServerFrame<'_>, DecodeError> {
    if let Some(d) = decode_deliver(body) {
        return Ok(ServerFrame::Deliver(d.into_frame()));
    }
    if let Some(r) = decode_deliver_run(body) {
        return Ok(ServerFrame::DeliverRun(r));
    }
    decode(body, None)
}

/// [`decode_server`] without the hand decoder of deliver frames: rmp-serde's generic
/// path alone. For the fuzz target that holds the two to the same answers.
#[doc(hidden)]
pub fn decode_server_generic(body: &[u8]) -> Result<ServerFrame<'_>, DecodeError> {
    decode(body, None)
}

fn encode<T: Serialize>(frame: &T, out: &mut BytesMut) -> Result<(), rmp_serde::encode::Error> {
    put_frame(out, |b| rmp_serde::encode::write(&mut b.writer(), frame))
}

/// Appends a client frame (with its length prefix) to `out`.
pub fn encode_client(
    frame: &ClientFrame<'_>,
    out: &mut BytesMut,
) -> Result<(), rmp_serde::encode::Error> {
    encode(frame, out)
}

/// Appends a server frame (with its length prefix) to `out`.
pub fn encode_server(
    frame: &ServerFrame<'_>,
    out: &mut BytesMut,
) -> Result<(), rmp_serde::encode::Error> {
    encode(frame, out)
}

/// The body of a decoded frame as a `Bytes` sharing `frame`'s buffer (no copy).
pub fn body_bytes(frame: &Bytes, body: &[u8]) -> Bytes {
    if body.is_empty() {
        Bytes::new()
    } else {
        frame.slice_ref(body)
    }
}

/// Bodies at least this long stay slices of the read buffer they came in; shorter ones
/// are copied out of it ([`kept_body`]).
pub const SHARED_BODY_MIN: usize = crate::server::io::MAX_READ / 4;

/// The body a broker keeps for a message read in `frame`: a slice of the frame when it
/// is large, else a copy of its own.
///
/// A slice holds its whole read buffer (up to `MAX_READ` of other frames) for as long
/// as the message lives, while queues and the memory watermark count only the body. A
/// queue keeping one small message of every read, the rest routed elsewhere and freed,
/// held about 4,000 times what it counted (20,000 bodies of 16 bytes kept 1.2 GB). A
/// body of at least a quarter of a read buffer keeps at most about four times itself
/// (the frames after one longer than a read get a buffer of their own:
/// `server::io::read_frames`).
///
/// ```
/// use actormq::protocol::wire::{kept_body, SHARED_BODY_MIN};
/// use bytes::Bytes;
/// let frame = Bytes::from(vec![7u8; 2 * SHARED_BODY_MIN]);
/// let small = kept_body(&frame, &frame[..16]);
/// assert!(small.is_unique(), "copied: the frame's buffer is not held");
/// let large = kept_body(&frame, &frame[..SHARED_BODY_MIN]);
/// assert_eq!(large.as_ptr(), frame.as_ptr(), "shared: no copy");
/// ```
pub fn kept_body(frame: &Bytes, body: &[u8]) -> Bytes {
    if body.len() < SHARED_BODY_MIN {
        Bytes::copy_from_slice(body)
    } else {
        body_bytes(frame, body)
    }
}

mod deliver;
mod op;
mod props;
mod publish;
mod run;
mod stored;
mod walk;

pub use deliver::{decode_deliver, DeliverParts};
pub use op::{Op, RUNS_ARGUMENT};
pub use props::{properties_or_none, PropertiesRef};
pub use publish::decode_publish;

pub use run::{
    decode_deliver_run, encode_deliver_run_head, split_run, DeliverRunFrame, RunError, RunRecord,
};
pub use stored::{encode_deliver_stored, encode_deliver_stored_head, STORED_META_HEAD};
use walk::Walk;
pub use walk::{decode_budget, walk_value, DECODE_FLOOR, DECODE_RATIO, MAX_DEPTH};

#[cfg(test)]
mod tests;

/// Copies of a frame with one byte changed, for tests of the hand-written decoders
/// against rmp-serde's: at each of the first `upto` positions, every MessagePack
/// marker kind and the byte's neighbours.
#[cfg(test)]
pub(crate) fn one_byte_changed(frame: &[u8], upto: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    const MARKERS: [u8; 22] = [
        0x00, 0x01, 0x7f, 0x80, 0x90, 0x9d, 0xa0, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xca, 0xcc, 0xcf,
        0xd0, 0xd4, 0xd9, 0xdc, 0xde, 0xe0, 0xff,
    ];
    (0..frame.len().min(upto)).flat_map(move |at| {
        let b = frame[at];
        MARKERS
            .into_iter()
            .chain([b ^ 1, b.wrapping_add(1), b.wrapping_sub(1)])
            .map(move |v| {
                let mut m = frame.to_vec();
                m[at] = v;
                m
            })
    })
}
