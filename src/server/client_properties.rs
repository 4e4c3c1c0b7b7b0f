//! What a client says about itself at connection (AMQP `client_properties`: product,
//! version, platform, capabilities, `connection_name`), kept for the management API's
//! connection listing as RabbitMQ shows it.
//!
//! The client chooses the table and its size (up to a frame), and it lives as long as
//! the connection, so what is kept is bounded: [`bounded`] keeps at most
//! [`BUDGET`] bytes of keys and values, strings clipped, nesting cut at [`MAX_DEPTH`].

use crate::message::{FieldTable, FieldValue, TypedValue};
use serde_json::{json, Map, Value};

/// Bytes of keys and values kept per connection.
pub const BUDGET: usize = 4096;

/// Nesting kept (`capabilities` is one level down).
pub const MAX_DEPTH: usize = 4;

/// What every value costs against the budget besides its text, whatever its kind: an
/// empty string, byte string, table or array is still an entry kept.
const VALUE_COST: usize = 8;

/// `table` within [`BUDGET`] and [`MAX_DEPTH`]: entries past the budget are left out;
/// a string that does not fit is clipped to what is left; byte strings are kept as
/// their length only.
///
/// ```
/// use actormq::message::{FieldTable, FieldValue};
/// use actormq::server::client_properties::{bounded, BUDGET};
/// let mut t = FieldTable::new();
/// t.insert("product".into(), FieldValue::Str("x".repeat(100_000)));
/// let kept = bounded(&t);
/// assert!(kept["product"].as_str().unwrap().len() < BUDGET);
/// ```
pub fn bounded(table: &FieldTable) -> FieldTable {
    let mut left = BUDGET;
    bounded_table(table, &mut left, 0)
}

fn bounded_table(table: &FieldTable, left: &mut usize, depth: usize) -> FieldTable {
    let mut out = FieldTable::new();
    for (k, v) in table {
        if *left <= k.len() {
            break;
        }
        *left -= k.len();
        match bounded_value(v, left, depth + 1) {
            Some(v) => {
                out.insert(k.clone(), v);
            }
            None => break,
        }
    }
    out
}

fn bounded_value(v: &FieldValue, left: &mut usize, depth: usize) -> Option<FieldValue> {
    if *left < VALUE_COST {
        return None;
    }
    *left -= VALUE_COST;
    Some(match v {
        FieldValue::Str(s) => {
            let mut end = s.len().min(*left);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            *left -= end;
            FieldValue::Str(s[..end].to_string())
        }
        FieldValue::Table(t) if depth < MAX_DEPTH => {
            FieldValue::Table(bounded_table(t, left, depth))
        }
        FieldValue::Array(a) if depth < MAX_DEPTH => {
            let mut out = Vec::new();
            for x in a {
                match bounded_value(x, left, depth + 1) {
                    Some(x) => out.push(x),
                    None => break,
                }
            }
            FieldValue::Array(out)
        }
        FieldValue::Table(_) | FieldValue::Array(_) => FieldValue::Void,
        FieldValue::Bytes(b) => FieldValue::Int(b.len() as i64),
        FieldValue::Typed(TypedValue::BinaryStr(b)) => FieldValue::Int(b.len() as i64),
        other => other.clone(),
    })
}

/// The table as JSON, as RabbitMQ's API shows `client_properties`.
pub fn to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect::<Map<String, Value>>(),
    )
}

fn value_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Void => Value::Null,
        FieldValue::Bool(b) => json!(b),
        FieldValue::Int(i) => json!(i),
        FieldValue::Float(f) => json!(f),
        FieldValue::Str(s) => json!(s),
        FieldValue::Bytes(b) => json!(String::from_utf8_lossy(b)),
        FieldValue::Array(a) => Value::Array(a.iter().map(value_json).collect()),
        FieldValue::Table(t) => to_json(t),
        FieldValue::Typed(t) => match t {
            TypedValue::I8(x) => json!(x),
            TypedValue::U8(x) => json!(x),
            TypedValue::I16(x) => json!(x),
            TypedValue::U16(x) => json!(x),
            TypedValue::I32(x) => json!(x),
            TypedValue::U32(x) => json!(x),
            TypedValue::F32(x) => json!(x),
            TypedValue::Timestamp(x) => json!(x),
            TypedValue::BinaryStr(b) => json!(String::from_utf8_lossy(b)),
            other => json!(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_usual_table_is_kept_whole_and_shown_as_rabbitmq_shows_it() {
        let caps = table(&[
            ("publisher_confirms", FieldValue::Bool(true)),
            ("consumer_cancel_notify", FieldValue::Bool(true)),
        ]);
        let t = table(&[
            ("product", FieldValue::Str("AMQPStorm".into())),
            ("version", FieldValue::Str("3.1.4".into())),
            ("capabilities", FieldValue::Table(caps)),
            ("n", FieldValue::Typed(TypedValue::U16(7))),
        ]);
        let kept = bounded(&t);
        assert_eq!(kept, t);
        assert_eq!(
            to_json(&kept),
            json!({
                "product": "AMQPStorm",
                "version": "3.1.4",
                "capabilities": {"publisher_confirms": true, "consumer_cancel_notify": true},
                "n": 7,
            })
        );
    }

    #[test]
    fn a_huge_or_deep_table_is_cut_to_the_budget() {
        let mut t = FieldTable::new();
        for i in 0..1000 {
            t.insert(format!("key{i:04}"), FieldValue::Str("é".repeat(100)));
        }
        let kept = bounded(&t);
        let size: usize = kept
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        assert!(size <= BUDGET, "{size}");
        assert!(kept.len() < 1000 && !kept.is_empty());
        let mut deep = FieldValue::Str("bottom".into());
        for _ in 0..10 {
            deep = FieldValue::Table(table(&[("d", deep)]));
        }
        let kept = bounded(&table(&[("top", deep)]));
        let mut v = &kept["top"];
        let mut levels = 0;
        while let FieldValue::Table(t) = v {
            v = &t["d"];
            levels += 1;
        }
        assert_eq!(*v, FieldValue::Void);
        assert!(levels < MAX_DEPTH, "{levels}");
    }

    #[test]
    fn values_without_text_still_count_against_the_budget() {
        let empty = FieldValue::Bytes(bytes::Bytes::new());
        let many = FieldValue::Array(vec![empty; 26_000]);
        let kept = bounded(&table(&[("a", many)]));
        let FieldValue::Array(a) = &kept["a"] else {
            panic!("{kept:?}");
        };
        assert!(a.len() <= BUDGET / VALUE_COST, "{}", a.len());
        let tables = FieldValue::Array(vec![FieldValue::Table(FieldTable::new()); 26_000]);
        let kept = bounded(&table(&[("t", tables)]));
        let FieldValue::Array(a) = &kept["t"] else {
            panic!("{kept:?}");
        };
        assert!(a.len() <= BUDGET / VALUE_COST, "{}", a.len());
    }
}
