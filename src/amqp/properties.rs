//! AMQP basic properties and field tables ↔ actormq's [`Properties`] and
//! [`FieldTable`], so a message crosses protocols with its properties and headers.
//!
//! Values map by meaning: every integer width to `Int`, both float widths to `Float`,
//! short and long strings to `Str` (a long string that is not UTF-8 to `Bytes`), byte
//! arrays to `Bytes`, arrays and tables recursively, void to `Void`. A timestamp inside
//! a table becomes `Int` (seconds) and a decimal becomes `Float`: actormq's tables have
//! no types of their own for them (see docs/AMQP.md). Going out, `Int` is written as a
//! signed 64-bit (`l`), `Str` as a long string (`S`), `Bytes` as a byte array (`x`), as
//! RabbitMQ writes the values it generates itself.

use crate::message::{FieldTable, FieldValue, Properties};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{
    AMQPValue, FieldArray, FieldTable as AmqpTable, LongString, ShortString,
};
use bytes::Bytes;

/// An AMQP table as an actormq table.
pub fn table_in(t: &AmqpTable) -> FieldTable {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), value_in(v)))
        .collect()
}

fn value_in(v: &AMQPValue) -> FieldValue {
    match v {
        AMQPValue::Boolean(b) => FieldValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => FieldValue::Int(*i as i64),
        AMQPValue::ShortShortUInt(i) => FieldValue::Int(*i as i64),
        AMQPValue::ShortInt(i) => FieldValue::Int(*i as i64),
        AMQPValue::ShortUInt(i) => FieldValue::Int(*i as i64),
        AMQPValue::LongInt(i) => FieldValue::Int(*i as i64),
        AMQPValue::LongUInt(i) => FieldValue::Int(*i as i64),
        AMQPValue::LongLongInt(i) => FieldValue::Int(*i),
        AMQPValue::Float(f) => FieldValue::Float(*f as f64),
        AMQPValue::Double(f) => FieldValue::Float(*f),
        AMQPValue::DecimalValue(d) => {
            FieldValue::Float(d.value as f64 / 10f64.powi(d.scale as i32))
        }
        AMQPValue::ShortString(s) => FieldValue::Str(s.as_str().to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(s) => FieldValue::Str(s.to_string()),
            Err(_) => FieldValue::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        },
        AMQPValue::FieldArray(a) => FieldValue::Array(a.as_slice().iter().map(value_in).collect()),
        AMQPValue::Timestamp(t) => FieldValue::Int(*t as i64),
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
    use amq_protocol::types::DecimalValue;

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

    #[test]
    fn narrower_types_read_by_meaning() {
        let mut h = AmqpTable::default();
        h.insert("i".into(), AMQPValue::LongInt(7));
        h.insert("u".into(), AMQPValue::ShortShortUInt(200));
        h.insert("ts".into(), AMQPValue::Timestamp(5));
        h.insert(
            "d".into(),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 150,
            }),
        );
        h.insert("ss".into(), AMQPValue::ShortString("x".into()));
        let t = table_in(&h);
        assert_eq!(t["i"], FieldValue::Int(7));
        assert_eq!(t["u"], FieldValue::Int(200));
        assert_eq!(t["ts"], FieldValue::Int(5));
        assert_eq!(t["d"], FieldValue::Float(1.5));
        assert_eq!(t["ss"], FieldValue::Str("x".into()));
    }
}
