//! How messages are printed: the body alone, or one JSON object per line for tools.
//!
//! A JSON line is `{"exchange", "routing_key", "redelivered", "properties", "headers",
//! "body", "body_encoding"}`: properties holds only those set (headers apart), and the
//! body is text when it is UTF-8, else base64 (`body_encoding` says which).

use super::flags::Format;
use actormq::client::Delivery;
use actormq::{FieldTable, FieldValue, Properties};
use serde_json::{json, Map, Value};
use std::io::Write;

/// Writes `delivery` in `format`, then a newline. `message_count` (the messages left,
/// for a get) is added to a JSON line when given.
pub fn write_delivery(
    out: &mut impl Write,
    delivery: &Delivery,
    format: Format,
    message_count: Option<u64>,
) -> std::io::Result<()> {
    match format {
        Format::Body => out.write_all(&delivery.body)?,
        Format::Json => {
            let mut line = delivery_json(delivery);
            if let Some(n) = message_count {
                line["message_count"] = json!(n);
            }
            serde_json::to_writer(&mut *out, &line)?;
        }
    }
    out.write_all(b"\n")
}

/// A delivery as one JSON object.
pub fn delivery_json(d: &Delivery) -> Value {
    let (body, encoding) = match std::str::from_utf8(&d.body) {
        Ok(text) => (text.to_string(), "text"),
        Err(_) => (base64(&d.body), "base64"),
    };
    json!({
        "exchange": d.exchange,
        "routing_key": d.routing_key,
        "redelivered": d.redelivered,
        "properties": properties_json(&d.properties),
        "headers": d.properties.headers.as_ref().map_or(Value::Object(Map::new()), table_json),
        "body": body,
        "body_encoding": encoding,
    })
}

/// The properties that are set, headers apart, by their AMQP names.
fn properties_json(p: &Properties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("content_type", p.content_type.clone().map(Value::from));
    put(
        "content_encoding",
        p.content_encoding.clone().map(Value::from),
    );
    put("delivery_mode", p.delivery_mode.map(Value::from));
    put("priority", p.priority.map(Value::from));
    put("correlation_id", p.correlation_id.clone().map(Value::from));
    put("reply_to", p.reply_to.clone().map(Value::from));
    put("expiration", p.expiration.clone().map(Value::from));
    put("message_id", p.message_id.clone().map(Value::from));
    put("timestamp", p.timestamp.map(Value::from));
    put("type", p.kind.clone().map(Value::from));
    put("user_id", p.user_id.clone().map(Value::from));
    put("app_id", p.app_id.clone().map(Value::from));
    Value::Object(m)
}

fn table_json(t: &FieldTable) -> Value {
    Value::Object(t.iter().map(|(k, v)| (k.clone(), field_json(v))).collect())
}

/// A header value: JSON's own types where they fit; bytes as base64 text.
fn field_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Void => Value::Null,
        FieldValue::Bool(b) => Value::from(*b),
        FieldValue::Int(i) => Value::from(*i),
        FieldValue::Float(f) => Value::from(*f),
        FieldValue::Str(s) => Value::from(s.as_str()),
        FieldValue::Bytes(b) => Value::from(base64(b)),
        FieldValue::Array(a) => Value::Array(a.iter().map(field_json).collect()),
        FieldValue::Table(t) => table_json(t),
        FieldValue::Typed(_) => field_json(&v.plain()),
    }
}

/// Standard base64 (RFC 4648, with padding). A dozen lines, so no dependency.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn header_values_map_to_json_types() {
        let t: FieldTable = [
            ("i".to_string(), FieldValue::Int(3)),
            ("s".to_string(), FieldValue::Str("x".into())),
            ("b".to_string(), FieldValue::Bytes(vec![0u8, 1].into())),
            ("v".to_string(), FieldValue::Void),
            (
                "a".to_string(),
                FieldValue::Array(vec![FieldValue::Bool(true)]),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            table_json(&t),
            json!({"i": 3, "s": "x", "b": "AAE=", "v": null, "a": [true]})
        );
    }

    #[test]
    fn only_set_properties_are_written() {
        let p = Properties {
            content_type: Some("text/plain".into()),
            kind: Some("order".into()),
            priority: Some(4),
            ..Default::default()
        };
        assert_eq!(
            properties_json(&p),
            json!({"content_type": "text/plain", "type": "order", "priority": 4})
        );
    }
}
