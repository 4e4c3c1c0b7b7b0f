//! AMQP basic properties and field tables ↔ actormq's [`Properties`] and
//! [`FieldTable`], so a message crosses protocols with its properties and headers.
//!
//! Headers are lossless: every AMQP field type as RabbitMQ reads it comes back as it
//! was written. A value with a plain actormq variant maps to it (`t` bool, `l` 64-bit
//! integer, `d` double, `S` UTF-8 long string, `x` byte array, `A` array, `F` table,
//! `V` void); the others (`b B s u I i` integer widths, `f` float, `D` decimal, `T`
//! timestamp, an `S` that is not UTF-8) map to [`FieldValue::Typed`], which the message
//! store and the native protocol keep as MessagePack ext values (docs/PROTOCOL.md).
//! A value from a native client maps out by its variant (`Int` as `l`, `Str` as `S`).
//!
//! Method arguments (declare, bind, consume) are read by meaning instead ([`args_in`]):
//! the broker interprets them, and an `x-expires` is the same number whichever width
//! the client chose.

use crate::message::{FieldTable, FieldValue, Properties, TypedValue};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{
    AMQPValue, DecimalValue, FieldArray, FieldTable as AmqpTable, LongString, ShortString,
};
use bytes::Bytes;

/// An AMQP table as an actormq table, every value with its wire type.
pub fn table_in(t: &AmqpTable) -> FieldTable {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), value_in(v)))
        .collect()
}

/// An AMQP table of method arguments, values by meaning ([`FieldValue::plain`]).
pub fn args_in(t: &AmqpTable) -> FieldTable {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), plain_deep(value_in(v))))
        .collect()
}

fn plain_deep(v: FieldValue) -> FieldValue {
    match v {
        FieldValue::Array(a) => FieldValue::Array(a.into_iter().map(plain_deep).collect()),
        FieldValue::Table(t) => {
            FieldValue::Table(t.into_iter().map(|(k, v)| (k, plain_deep(v))).collect())
        }
        FieldValue::Typed(_) => v.plain(),
        other => other,
    }
}

fn value_in(v: &AMQPValue) -> FieldValue {
    let typed = |t| FieldValue::Typed(t);
    match v {
        AMQPValue::Boolean(b) => FieldValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => typed(TypedValue::I8(*i)),
        AMQPValue::ShortShortUInt(i) => typed(TypedValue::U8(*i)),
        AMQPValue::ShortInt(i) => typed(TypedValue::I16(*i)),
        AMQPValue::ShortUInt(i) => typed(TypedValue::U16(*i)),
        AMQPValue::LongInt(i) => typed(TypedValue::I32(*i)),
        AMQPValue::LongUInt(i) => typed(TypedValue::U32(*i)),
        AMQPValue::LongLongInt(i) => FieldValue::Int(*i),
        AMQPValue::Float(f) => typed(TypedValue::F32(*f)),
        AMQPValue::Double(f) => FieldValue::Float(*f),
        AMQPValue::DecimalValue(d) => typed(TypedValue::Decimal {
            scale: d.scale,
            value: d.value,
        }),
        // Not an AMQP wire type (amq-protocol's own): a string.
        AMQPValue::ShortString(s) => FieldValue::Str(s.as_str().to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(s) => FieldValue::Str(s.to_string()),
            Err(_) => typed(TypedValue::BinaryStr(Bytes::copy_from_slice(s.as_bytes()))),
        },
        AMQPValue::FieldArray(a) => FieldValue::Array(a.as_slice().iter().map(value_in).collect()),
        AMQPValue::Timestamp(t) => typed(TypedValue::Timestamp(*t)),
        AMQPValue::FieldTable(t) => FieldValue::Table(table_in(t)),
        AMQPValue::ByteArray(b) => FieldValue::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => FieldValue::Void,
    }
}

/// An actormq table as an AMQP table. Keys longer than 255 bytes (impossible to
/// write as a short string) are dropped with a warning.
pub fn table_out(t: &FieldTable) -> AmqpTable {
    let mut out = AmqpTable::default();
    for (k, v) in t {
        match ShortString::try_new(k.as_str()) {
            Ok(key) => {
                out.insert(key, value_out(v));
            }
            Err(_) => tracing::warn!(key = %k, "header key longer than 255 bytes dropped"),
        }
    }
    out
}

fn value_out(v: &FieldValue) -> AMQPValue {
    match v {
        FieldValue::Void => AMQPValue::Void,
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
        FieldValue::Int(i) => AMQPValue::LongLongInt(*i),
        FieldValue::Float(f) => AMQPValue::Double(*f),
        FieldValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        FieldValue::Bytes(b) => AMQPValue::ByteArray(b.to_vec().into()),
        FieldValue::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(value_out).collect::<Vec<_>>(),
        )),
        FieldValue::Table(t) => AMQPValue::FieldTable(table_out(t)),
        FieldValue::Typed(t) => match t {
            TypedValue::I8(v) => AMQPValue::ShortShortInt(*v),
            TypedValue::U8(v) => AMQPValue::ShortShortUInt(*v),
            TypedValue::I16(v) => AMQPValue::ShortInt(*v),
            TypedValue::U16(v) => AMQPValue::ShortUInt(*v),
            TypedValue::I32(v) => AMQPValue::LongInt(*v),
            TypedValue::U32(v) => AMQPValue::LongUInt(*v),
            TypedValue::F32(v) => AMQPValue::Float(*v),
            TypedValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
                scale: *scale,
                value: *value,
            }),
            TypedValue::Timestamp(v) => AMQPValue::Timestamp(*v),
            TypedValue::BinaryStr(b) => AMQPValue::LongString(LongString::from(b.to_vec())),
        },
    }
}

fn s(v: &Option<ShortString>) -> Option<String> {
    v.as_ref().map(|s| s.as_str().to_string())
}

/// AMQP basic properties as actormq's (`cluster-id`, deprecated, is dropped).
pub fn properties_in(p: &AMQPProperties) -> Properties {
    Properties {
        content_type: s(p.content_type()),
        content_encoding: s(p.content_encoding()),
        headers: p.headers().as_ref().map(table_in),
        delivery_mode: *p.delivery_mode(),
        priority: *p.priority(),
        correlation_id: s(p.correlation_id()),
        reply_to: s(p.reply_to()),
        expiration: s(p.expiration()),
        message_id: s(p.message_id()),
        timestamp: *p.timestamp(),
        kind: s(p.kind()),
        user_id: s(p.user_id()),
        app_id: s(p.app_id()),
    }
}

/// A property string as a short string, cut to 255 bytes at a character boundary (a
/// native client may set longer ones).
pub(super) fn short(v: &str) -> ShortString {
    let mut end = v.len().min(255);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::try_new(&v[..end]).unwrap_or_default()
}

/// actormq's properties as AMQP basic properties.
pub fn properties_out(p: &Properties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    if let Some(v) = &p.content_type {
        out = out.with_content_type(short(v));
    }
    if let Some(v) = &p.content_encoding {
        out = out.with_content_encoding(short(v));
    }
    if let Some(v) = &p.headers {
        out = out.with_headers(table_out(v));
    }
    if let Some(v) = p.delivery_mode {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        out = out.with_correlation_id(short(v));
    }
    if let Some(v) = &p.reply_to {
        out = out.with_reply_to(short(v));
    }
    if let Some(v) = &p.expiration {
        out = out.with_expiration(short(v));
    }
    if let Some(v) = &p.message_id {
        out = out.with_message_id(short(v));
    }
    if let Some(v) = p.timestamp {
        out = out.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        out = out.with_type(short(v));
    }
    if let Some(v) = &p.user_id {
        out = out.with_user_id(short(v));
    }
    if let Some(v) = &p.app_id {
        out = out.with_app_id(short(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_actormq() {
        let mut h = AmqpTable::default();
        h.insert("n".into(), AMQPValue::LongLongInt(-3));
        h.insert("s".into(), AMQPValue::LongString("x".into()));
        h.insert("b".into(), AMQPValue::Boolean(true));
        h.insert("f".into(), AMQPValue::Double(1.5));
        h.insert("bin".into(), AMQPValue::ByteArray(vec![0u8, 1].into()));
        h.insert(
            "a".into(),
            AMQPValue::FieldArray(vec![AMQPValue::LongLongInt(1)].into()),
        );
        let mut inner = AmqpTable::default();
        inner.insert("k".into(), AMQPValue::Void);
        h.insert("t".into(), AMQPValue::FieldTable(inner));
        let p = AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_headers(h)
            .with_delivery_mode(2)
            .with_priority(5)
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_expiration("60000".into())
            .with_message_id("m".into())
            .with_timestamp(1_700_000_000)
            .with_type("t".into())
            .with_user_id("guest".into())
            .with_app_id("app".into())
            .with_content_encoding("gzip".into());
        assert_eq!(properties_out(&properties_in(&p)), p);
    }

    /// Every AMQP field type as RabbitMQ reads it, nested in arrays and tables.
    pub(crate) fn every_type() -> AmqpTable {
        let mut inner = AmqpTable::default();
        inner.insert("v".into(), AMQPValue::Void);
        inner.insert("b".into(), AMQPValue::ShortShortInt(-5));
        let scalars = vec![
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-128),
            AMQPValue::ShortShortUInt(255),
            AMQPValue::ShortInt(-32768),
            AMQPValue::ShortUInt(65535),
            AMQPValue::LongInt(i32::MIN),
            AMQPValue::LongUInt(u32::MAX),
            AMQPValue::LongLongInt(i64::MIN),
            AMQPValue::Float(1.25),
            AMQPValue::Double(-2.5e300),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
            AMQPValue::LongString("text".into()),
            AMQPValue::LongString(LongString::from(vec![0xffu8, 0xfe, 0])),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::ByteArray(vec![0u8, 1, 255].into()),
            AMQPValue::Void,
        ];
        let mut t = AmqpTable::default();
        for (i, v) in scalars.iter().enumerate() {
            t.insert(format!("k{i}").as_str().into(), v.clone());
        }
        let mut nested = scalars;
        nested.push(AMQPValue::FieldTable(inner.clone()));
        nested.push(AMQPValue::FieldArray(vec![AMQPValue::LongInt(1)].into()));
        t.insert("array".into(), AMQPValue::FieldArray(nested.into()));
        t.insert("table".into(), AMQPValue::FieldTable(inner));
        t
    }

    #[test]
    fn every_field_type_round_trips_unchanged() {
        let t = every_type();
        assert_eq!(table_out(&table_in(&t)), t);
    }

    #[test]
    fn every_field_type_survives_the_message_store_encoding() {
        // What the store and the native protocol write (MessagePack) and read back.
        let native = table_in(&every_type());
        let bytes = rmp_serde::to_vec(&native).unwrap();
        let back: FieldTable = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, native);
        assert_eq!(table_out(&back), every_type());
    }

    #[test]
    fn arguments_read_by_meaning() {
        let mut h = AmqpTable::default();
        h.insert("i".into(), AMQPValue::LongInt(7));
        h.insert("u".into(), AMQPValue::ShortShortUInt(200));
        h.insert(
            "d".into(),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 150,
            }),
        );
        h.insert("ss".into(), AMQPValue::ShortString("x".into()));
        let t = args_in(&h);
        assert_eq!(t["i"], FieldValue::Int(7));
        assert_eq!(t["u"], FieldValue::Int(200));
        assert_eq!(t["d"], FieldValue::Float(1.5));
        assert_eq!(t["ss"], FieldValue::Str("x".into()));
    }
}
