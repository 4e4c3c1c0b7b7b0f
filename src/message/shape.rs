//! The shape of a headers table (how deep it nests, how many bytes it takes encoded),
//! checked against `[limits]` when a message is published, in both protocols. Walked
//! with an explicit stack: a hostile table cannot exhaust the thread's stack here.

use super::{FieldTable, FieldValue, TypedValue};
use crate::settings::LimitsSettings;

/// How deep a table nests and its encoded size (AMQP's field-table encoding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Levels of tables and arrays, the table itself being level 1.
    pub depth: usize,
    /// Bytes encoded: a table's 4-byte length, each key's length byte and bytes, each
    /// value's type byte and payload.
    pub bytes: usize,
}

/// The shape of `t`.
///
/// ```
/// use actormq::message::{shape::table_shape, FieldTable, FieldValue};
/// let mut inner = FieldTable::new();
/// inner.insert("n".into(), FieldValue::Int(1));
/// let mut t = FieldTable::new();
/// t.insert("x".into(), FieldValue::Table(inner));
/// assert_eq!(table_shape(&t).depth, 2);
/// ```
pub fn table_shape(t: &FieldTable) -> Shape {
    let mut shape = Shape { depth: 1, bytes: 4 };
    let mut stack: Vec<(&FieldValue, usize)> = Vec::new();
    for (k, v) in t {
        shape.bytes += 1 + k.len();
        stack.push((v, 1));
    }
    while let Some((v, level)) = stack.pop() {
        shape.bytes += 1 + match v {
            FieldValue::Void => 0,
            FieldValue::Bool(_) => 1,
            FieldValue::Int(_) | FieldValue::Float(_) => 8,
            FieldValue::Str(s) => 4 + s.len(),
            FieldValue::Bytes(b) => 4 + b.len(),
            FieldValue::Typed(TypedValue::BinaryStr(b)) => 4 + b.len(),
            FieldValue::Typed(_) => 8,
            FieldValue::Array(a) => {
                shape.depth = shape.depth.max(level + 1);
                stack.extend(a.iter().map(|x| (x, level + 1)));
                4
            }
            FieldValue::Table(t) => {
                shape.depth = shape.depth.max(level + 1);
                for (k, x) in t {
                    shape.bytes += 1 + k.len();
                    stack.push((x, level + 1));
                }
                4
            }
        };
    }
    shape
}

/// The refusal of a headers table of `shape` over `limits`, naming the limit.
pub fn check_headers(shape: Shape, limits: &LimitsSettings) -> Result<(), String> {
    if shape.depth > limits.max_header_depth {
        return Err(format!(
            "headers table nested {} levels deep, deeper than limits.max_header_depth ({})",
            shape.depth, limits.max_header_depth
        ));
    }
    if shape.bytes > limits.max_header_bytes {
        return Err(format!(
            "headers table of {} bytes encoded, larger than limits.max_header_bytes ({})",
            shape.bytes, limits.max_header_bytes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> FieldTable {
        let mut v = FieldValue::Int(1);
        for i in 1..levels {
            v = if i % 2 == 0 {
                FieldValue::Array(vec![v])
            } else {
                FieldValue::Table([("k".to_string(), v)].into())
            };
        }
        [("top".to_string(), v)].into()
    }

    #[test]
    fn depth_and_size_are_measured_and_refusals_name_the_limit() {
        assert_eq!(
            table_shape(&FieldTable::new()),
            Shape { depth: 1, bytes: 4 }
        );
        let mut t = FieldTable::new();
        t.insert("ab".into(), FieldValue::Str("xyz".into()));
        assert_eq!(table_shape(&t).bytes, 4 + 3 + 1 + 4 + 3);
        assert_eq!(table_shape(&nested(16)).depth, 16);
        let limits = LimitsSettings::default();
        check_headers(table_shape(&nested(16)), &limits).unwrap();
        let e = check_headers(table_shape(&nested(17)), &limits).unwrap_err();
        assert!(
            e.contains("17 levels") && e.contains("limits.max_header_depth (16)"),
            "{e}"
        );
        let big: FieldTable =
            [("b".to_string(), FieldValue::Bytes(vec![0; 2 << 20].into()))].into();
        let e = check_headers(table_shape(&big), &limits).unwrap_err();
        assert!(e.contains("limits.max_header_bytes (1048576)"), "{e}");
    }
}
