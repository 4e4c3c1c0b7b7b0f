//! The meta of a record being appended, written by hand with the record's
//! `x-stream-offset` header added on the way.
//!
//! Every stream record carries its offset as a header. Adding it to the message itself
//! took, per published message, a copy of the message (the connection keeps its own
//! for a possible return) and of its properties, a header table allocated, rmp-serde's
//! generic encoder, and later both messages dropped: about a fifth of the broker's CPU
//! of a stream publish (docs/BENCHMARKS.md, "a stream publish without a copy per
//! message"). Here the message is only read: its values are written as MessagePack with
//! the header merged into the table in its sorted place.
//!
//! The bytes are exactly those of rmp-serde for the message with the header inserted
//! (`Message::with_header`), the layout [`super::codec`] describes (tested against it,
//! and by the storage fuzz target), so readers, deliver frames copied from records and
//! records written by earlier versions are all the same.

use crate::message::{Message, Properties};
use crate::protocol::wire::STORED_META_HEAD;
use crate::storage::error::StorageError;
use rmp::encode;
use std::cmp::Ordering;

/// The header that holds a record's offset.
pub const OFFSET_HEADER: &str = "x-stream-offset";

/// Fields of [`Properties`] as rmp-serde writes the struct: an array of 13.
const PROPERTY_FIELDS: u32 = 13;

/// Appends the meta of `message` (an array of exchange, routing key and properties)
/// with the header [`OFFSET_HEADER`] = `offset` set, replacing one the message has.
///
/// ```
/// use actormq::message::Message;
/// use actormq::storage::stream::meta::write_meta;
/// let m = Message::new("x", "k", "body");
/// let mut buf = Vec::new();
/// write_meta(&mut buf, &m, 7).unwrap();
/// let with = m.with_header("x-stream-offset", 7i64);
/// let want = rmp_serde::to_vec(&(&*with.exchange, &with.routing_key, &*with.properties));
/// assert_eq!(buf, want.unwrap());
/// ```
pub fn write_meta(buf: &mut Vec<u8>, message: &Message, offset: u64) -> Result<(), StorageError> {
    buf.push(STORED_META_HEAD);
    let offset = i64::try_from(offset)
        .map_err(|_| StorageError::Encode(format!("offset {offset} beyond i64")))?;
    write_properties(
        buf,
        &message.exchange,
        &message.routing_key,
        &message.properties,
        offset,
    )
    .map_err(|e| StorageError::Encode(e.to_string()))
}

type Written = Result<(), encode::ValueWriteError>;

fn write_properties(
    buf: &mut Vec<u8>,
    exchange: &str,
    routing_key: &str,
    p: &Properties,
    offset: i64,
) -> Written {
    encode::write_str(buf, exchange)?;
    encode::write_str(buf, routing_key)?;
    encode::write_array_len(buf, PROPERTY_FIELDS)?;
    opt_str(buf, &p.content_type)?;
    opt_str(buf, &p.content_encoding)?;
    write_headers(buf, p, offset)?;
    opt_uint(buf, p.delivery_mode.map(u64::from))?;
    opt_uint(buf, p.priority.map(u64::from))?;
    opt_str(buf, &p.correlation_id)?;
    opt_str(buf, &p.reply_to)?;
    opt_str(buf, &p.expiration)?;
    opt_str(buf, &p.message_id)?;
    opt_uint(buf, p.timestamp)?;
    opt_str(buf, &p.kind)?;
    opt_str(buf, &p.user_id)?;
    opt_str(buf, &p.app_id)
}

/// The table as a map in key order (a `BTreeMap`'s), with the offset header in its
/// place.
fn write_headers(buf: &mut Vec<u8>, p: &Properties, offset: i64) -> Written {
    let Some(table) = p.headers.as_ref() else {
        encode::write_map_len(buf, 1)?;
        encode::write_str(buf, OFFSET_HEADER)?;
        encode::write_sint(buf, offset)?;
        return Ok(());
    };
    let replaced = table.contains_key(OFFSET_HEADER);
    let len = table.len() + usize::from(!replaced);
    encode::write_map_len(buf, len as u32)?;
    let mut pending = true;
    for (key, value) in table {
        if pending {
            match key.as_str().cmp(OFFSET_HEADER) {
                Ordering::Less => {}
                Ordering::Equal => {
                    pending = false;
                    encode::write_str(buf, OFFSET_HEADER)?;
                    encode::write_sint(buf, offset)?;
                    continue;
                }
                Ordering::Greater => {
                    pending = false;
                    encode::write_str(buf, OFFSET_HEADER)?;
                    encode::write_sint(buf, offset)?;
                }
            }
        }
        encode::write_str(buf, key)?;
        rmp_serde::encode::write(buf, value).map_err(|e| {
            encode::ValueWriteError::InvalidDataWrite(std::io::Error::other(e.to_string()))
        })?;
    }
    if pending {
        encode::write_str(buf, OFFSET_HEADER)?;
        encode::write_sint(buf, offset)?;
    }
    Ok(())
}

fn opt_str(buf: &mut Vec<u8>, s: &Option<String>) -> Written {
    match s {
        Some(s) => encode::write_str(buf, s),
        None => nil(buf),
    }
}

fn opt_uint(buf: &mut Vec<u8>, v: Option<u64>) -> Written {
    match v {
        Some(v) => encode::write_uint(buf, v).map(|_| ()),
        None => nil(buf),
    }
}

fn nil(buf: &mut Vec<u8>) -> Written {
    encode::write_nil(buf).map_err(encode::ValueWriteError::InvalidMarkerWrite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{FieldTable, FieldValue, TypedValue};

    fn rmp_serde_meta(m: &Message, offset: u64) -> Vec<u8> {
        let with = m.clone().with_header(OFFSET_HEADER, offset as i64);
        rmp_serde::to_vec(&(&*with.exchange, &with.routing_key, &*with.properties)).unwrap()
    }

    fn hand_meta(m: &Message, offset: u64) -> Vec<u8> {
        let mut buf = vec![0xee]; // appended after what the buffer holds
        write_meta(&mut buf, m, offset).unwrap();
        buf.remove(0);
        buf
    }

    fn full_properties() -> Properties {
        Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("gzip".into()),
            headers: None,
            delivery_mode: Some(2),
            priority: Some(200),
            correlation_id: Some("c".repeat(40)),
            reply_to: Some("r".into()),
            expiration: Some("60000".into()),
            message_id: Some("m".repeat(300)),
            timestamp: Some(1_700_000_000),
            kind: Some("t".into()),
            user_id: Some("guest".into()),
            app_id: Some(String::new()),
        }
    }

    #[test]
    fn the_meta_is_rmp_serdes_for_the_message_with_its_offset_header() {
        let mut tables: Vec<FieldTable> = vec![FieldTable::new()];
        for keys in [
            &["a"][..],
            &["zz"],
            &["a", "x-stream-offset", "zz"],
            &["x-stream-offset"],
            &["x-a", "x-stream-offseu", "x-stream-offse", "y"],
        ] {
            let mut t = FieldTable::new();
            for (i, k) in keys.iter().enumerate() {
                let v = match i % 4 {
                    0 => FieldValue::Str(format!("v{i}")),
                    1 => FieldValue::Int(-(i as i64) * 1000),
                    2 => FieldValue::Typed(TypedValue::I16(7)),
                    _ => FieldValue::Array(vec![FieldValue::Float(1.5), FieldValue::Void]),
                };
                t.insert((*k).into(), v);
            }
            tables.push(t);
        }
        let long_key = "k".repeat(40);
        let mut messages = vec![
            Message::new("", "", ""),
            Message::new("x", "k", "body").persistent(),
            Message::new(&"e".repeat(300), &long_key, vec![0u8; 1024])
                .with_properties(full_properties()),
        ];
        for t in tables {
            let mut p = full_properties();
            p.headers = Some(t);
            messages.push(Message::new("x", "k", "b").with_properties(p));
        }
        for m in &messages {
            for offset in [0, 1, 127, 128, 255, 256, 65_536, 1 << 32, i64::MAX as u64] {
                assert_eq!(
                    hand_meta(m, offset),
                    rmp_serde_meta(m, offset),
                    "{m:?} at {offset}"
                );
            }
        }
    }

    #[test]
    fn an_offset_beyond_i64_is_refused() {
        let mut buf = Vec::new();
        let e = write_meta(&mut buf, &Message::new("x", "k", "b"), u64::MAX).unwrap_err();
        assert!(e.to_string().contains("beyond i64"), "{e}");
    }
}
