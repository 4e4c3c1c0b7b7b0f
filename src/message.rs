//! Messages as RabbitMQ users know them: routing key, the basic properties, typed
//! headers and a body.
//!
//! The body is a [`Bytes`]: a fanout to N queues shares one allocation (a refcount
//! increment per queue), and over the network it is a slice of the socket's read buffer.
//! A routed message is wrapped in an `Arc` once by the exchange and shared by every queue
//! it reaches.

use bytes::Bytes;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub mod shape;
pub mod size;
mod typed;

pub use typed::TypedValue;

/// A typed table of header or argument values, ordered by key (deterministic encoding).
pub type FieldTable = BTreeMap<String, FieldValue>;

/// One value of a [`FieldTable`]: the types AMQP tables carry, mapped to MessagePack's
/// own types on the wire (nil, bool, int, float, str, bin, array, map).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// No value (MessagePack nil, AMQP void).
    Void,
    /// A boolean.
    Bool(bool),
    /// A signed integer (every AMQP integer width fits; unsigned values above
    /// `i64::MAX` are refused when decoding).
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes.
    Bytes(Bytes),
    /// An array of values.
    Array(Vec<FieldValue>),
    /// A nested table.
    Table(FieldTable),
    /// An AMQP value whose wire type the variants above would lose (an integer width,
    /// a 32-bit float, a decimal, a timestamp, a non-UTF-8 long string): a MessagePack
    /// ext value (docs/PROTOCOL.md).
    Typed(TypedValue),
}

impl FieldValue {
    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            FieldValue::Int(i) => Some(*i),
            FieldValue::Typed(t) => t.as_int(),
            _ => None,
        }
    }

    /// The value by meaning, without its AMQP wire type: integers as [`FieldValue::Int`],
    /// floats and decimals as [`FieldValue::Float`], a non-UTF-8 string as bytes. Used
    /// where values are compared (the headers exchange), as RabbitMQ compares by type
    /// class.
    pub fn plain(&self) -> FieldValue {
        match self {
            FieldValue::Typed(TypedValue::F32(f)) => FieldValue::Float(*f as f64),
            FieldValue::Typed(TypedValue::Decimal { scale, value }) => {
                FieldValue::Float(*value as f64 / 10f64.powi(*scale as i32))
            }
            FieldValue::Typed(TypedValue::BinaryStr(b)) => FieldValue::Bytes(b.clone()),
            FieldValue::Typed(t) => FieldValue::Int(t.as_int().unwrap_or(i64::MAX)),
            other => other.clone(),
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Void => "void",
            FieldValue::Bool(_) => "bool",
            FieldValue::Int(_) => "integer",
            FieldValue::Float(_) => "float",
            FieldValue::Str(_) => "string",
            FieldValue::Bytes(_) => "bytes",
            FieldValue::Array(_) => "array",
            FieldValue::Table(_) => "table",
            FieldValue::Typed(t) => t.type_name(),
        }
    }

    /// Parses a command-line `VALUE` the way RabbitMQ's tools do: integers, `true` /
    /// `false`, floats, else a string.
    ///
    /// ```
    /// use actormq::FieldValue;
    /// assert_eq!(FieldValue::parse_cli("60000"), FieldValue::Int(60000));
    /// assert_eq!(FieldValue::parse_cli("true"), FieldValue::Bool(true));
    /// assert_eq!(FieldValue::parse_cli("jobs"), FieldValue::Str("jobs".into()));
    /// ```
    pub fn parse_cli(s: &str) -> FieldValue {
        if let Ok(i) = s.parse::<i64>() {
            FieldValue::Int(i)
        } else if s == "true" || s == "false" {
            FieldValue::Bool(s == "true")
        } else if let Ok(f) = s.parse::<f64>() {
            FieldValue::Float(f)
        } else {
            FieldValue::Str(s.to_string())
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::Str(s.to_string())
    }
}
impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        FieldValue::Str(s)
    }
}
impl From<i64> for FieldValue {
    fn from(i: i64) -> Self {
        FieldValue::Int(i)
    }
}
impl From<bool> for FieldValue {
    fn from(b: bool) -> Self {
        FieldValue::Bool(b)
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Void => f.write_str("void"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Float(x) => write!(f, "{x}"),
            FieldValue::Str(s) => f.write_str(s),
            FieldValue::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            FieldValue::Array(a) => write!(f, "<array of {}>", a.len()),
            FieldValue::Table(t) => write!(f, "<table of {}>", t.len()),
            FieldValue::Typed(t) => write!(f, "{t}"),
        }
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Void => s.serialize_unit(),
            FieldValue::Bool(b) => s.serialize_bool(*b),
            FieldValue::Int(i) => s.serialize_i64(*i),
            FieldValue::Float(x) => s.serialize_f64(*x),
            FieldValue::Str(v) => s.serialize_str(v),
            FieldValue::Bytes(b) => s.serialize_bytes(b),
            FieldValue::Array(a) => a.serialize(s),
            FieldValue::Table(t) => t.serialize(s),
            FieldValue::Typed(t) => {
                let (code, payload) = t.to_ext();
                s.serialize_newtype_struct(
                    rmp_serde::MSGPACK_EXT_STRUCT_NAME,
                    &(code, serde_bytes::ByteBuf::from(payload)),
                )
            }
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl<'de> Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a MessagePack value")
    }
    fn visit_unit<E>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Void)
    }
    fn visit_none<E>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Void)
    }
    fn visit_bool<E>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<FieldValue, E> {
        i64::try_from(v)
            .map(FieldValue::Int)
            .map_err(|_| E::custom(format!("integer {v} does not fit a signed 64-bit field")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<FieldValue, E> {
        Ok(FieldValue::Bytes(Bytes::copy_from_slice(v)))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<FieldValue, E> {
        Ok(FieldValue::Bytes(Bytes::from(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        // Growth by doubling may leave up to half the buffer unused; a held message is
        // accounted for the slots it has ([`size`]), so it keeps no more.
        out.shrink_to_fit();
        Ok(FieldValue::Array(out))
    }
    /// A MessagePack ext value: one of the typed values of [`TypedValue`].
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        let (code, payload): (i8, serde_bytes::ByteBuf) = Deserialize::deserialize(d)?;
        TypedValue::from_ext(code, &payload)
            .map(FieldValue::Typed)
            .map_err(de::Error::custom)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
        let mut out = FieldTable::new();
        while let Some((k, v)) = map.next_entry::<String, FieldValue>()? {
            out.insert(k, v);
        }
        Ok(FieldValue::Table(out))
    }
}

/// The basic properties of a message, with RabbitMQ's names and meanings.
///
/// Every field is optional; `Properties::default()` is a message with none set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    /// MIME type of the body, e.g. `application/json`.
    pub content_type: Option<String>,
    /// Encoding of the body, e.g. `gzip`.
    pub content_encoding: Option<String>,
    /// Application headers; also read by the `headers` exchange.
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent (kept across restarts in durable queues).
    pub delivery_mode: Option<u8>,
    /// 0-255; honoured by priority queues.
    pub priority: Option<u8>,
    /// Correlates a reply with its request.
    pub correlation_id: Option<String>,
    /// Name of the queue to reply to.
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as a decimal string (RabbitMQ's convention).
    pub expiration: Option<String>,
    /// Application message id; also the deduplication key where a queue asks for it.
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Application message type (`type` in AMQP).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The authenticated user that published the message.
    pub user_id: Option<String>,
    /// The publishing application.
    pub app_id: Option<String>,
}

impl Properties {
    /// The one shared empty property set (no allocation per message).
    pub fn shared_empty() -> Arc<Properties> {
        Self::empty_ref().clone()
    }

    fn empty_ref() -> &'static Arc<Properties> {
        static EMPTY: std::sync::OnceLock<Arc<Properties>> = std::sync::OnceLock::new();
        EMPTY.get_or_init(|| Arc::new(Properties::default()))
    }

    /// True when `p` is the one shared empty set (no refcount traffic, unlike comparing
    /// with [`Properties::shared_empty`]).
    pub fn is_shared_empty(p: &Arc<Properties>) -> bool {
        Arc::ptr_eq(p, Self::empty_ref())
    }

    /// `Arc`-wraps `p`, sharing the empty set when nothing is set.
    pub fn shared(p: Option<Properties>) -> Arc<Properties> {
        match p {
            Some(p) if p != Properties::default() => Arc::new(p),
            _ => Self::shared_empty(),
        }
    }

    /// True when `delivery_mode` is 2 (persistent).
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }
}

/// A message as published: where it was sent, its properties and its body.
///
/// ```
/// use actormq::Message;
/// let m = Message::new("orders", "order.created", "hello").with_header("tenant", "acme");
/// assert_eq!(&m.body[..], b"hello");
/// assert_eq!(m.header("tenant").and_then(|v| v.as_str()), Some("acme"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The exchange the message was published to (`""` = the default exchange).
    pub exchange: Arc<str>,
    /// The routing key given by the publisher.
    pub routing_key: String,
    /// The basic properties. Shared: most messages carry none, and they all point at
    /// one empty set instead of holding ~300 bytes of `None`s each; change them with
    /// `Arc::make_mut`.
    pub properties: Arc<Properties>,
    /// The payload, shared rather than copied between queues.
    pub body: Bytes,
}

impl Message {
    /// A message for `exchange` with `routing_key` and `body`, no properties set.
    pub fn new(exchange: &str, routing_key: &str, body: impl Into<Bytes>) -> Self {
        Message {
            exchange: Arc::from(exchange),
            routing_key: routing_key.to_string(),
            properties: Properties::shared_empty(),
            body: body.into(),
        }
    }

    /// Sets one header.
    pub fn with_header(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        Arc::make_mut(&mut self.properties)
            .headers
            .get_or_insert_with(FieldTable::new)
            .insert(key.to_string(), value.into());
        self
    }

    /// Replaces the properties.
    pub fn with_properties(mut self, properties: Properties) -> Self {
        self.properties = Arc::new(properties);
        self
    }

    /// Marks the message persistent (`delivery_mode` 2).
    pub fn persistent(mut self) -> Self {
        Arc::make_mut(&mut self.properties).delivery_mode = Some(2);
        self
    }

    /// A header value, if set.
    pub fn header(&self, key: &str) -> Option<&FieldValue> {
        self.properties.headers.as_ref()?.get(key)
    }

    /// Bytes of memory the message is accounted for against the memory watermark: its
    /// body, plus its properties and decoded headers when it has any of its own (a
    /// table of tiny values takes tens of times its encoded size: see [`size`]).
    /// Length limits (`x-max-length-bytes`) count the body alone, as RabbitMQ does.
    pub fn accounted_size(&self) -> usize {
        if Properties::is_shared_empty(&self.properties) {
            return self.body.len();
        }
        self.body.len() + size::properties_size(&self.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_round_trip_as_plain_msgpack() {
        let mut t = FieldTable::new();
        t.insert("i".into(), FieldValue::Int(-5));
        t.insert("s".into(), FieldValue::Str("x".into()));
        t.insert("b".into(), FieldValue::Bool(true));
        t.insert("f".into(), FieldValue::Float(1.5));
        t.insert("v".into(), FieldValue::Void);
        t.insert(
            "bin".into(),
            FieldValue::Bytes(Bytes::from_static(b"\x00\x01")),
        );
        t.insert(
            "a".into(),
            FieldValue::Array(vec![FieldValue::Int(1), FieldValue::Str("y".into())]),
        );
        let mut inner = FieldTable::new();
        inner.insert("k".into(), FieldValue::Int(300));
        t.insert("t".into(), FieldValue::Table(inner));
        let bytes = rmp_serde::to_vec(&t).unwrap();
        let back: FieldTable = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn an_integer_encodes_as_a_msgpack_integer() {
        let bytes = rmp_serde::to_vec(&FieldValue::Int(5)).unwrap();
        assert_eq!(bytes, vec![0x05]);
        let bytes = rmp_serde::to_vec(&FieldValue::Str("a".into())).unwrap();
        assert_eq!(bytes, vec![0xa1, b'a']);
    }

    #[test]
    fn unsigned_values_above_i64_are_refused() {
        let bytes = rmp_serde::to_vec(&u64::MAX).unwrap();
        assert!(rmp_serde::from_slice::<FieldValue>(&bytes).is_err());
    }
}
