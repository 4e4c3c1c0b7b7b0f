//! The shape of an AMQP headers table as it arrives in a content header (see
//! `crate::message::shape`, which measures the native protocol's the same way), so an
//! over-limit table is refused before the body is gathered or anything is converted.

use crate::message::shape::Shape;
use amq_protocol::types::{AMQPValue, FieldTable as AmqpTable};

/// The depth and encoded size of `t` (an explicit stack: no recursion).
pub fn amqp_table_shape(t: &AmqpTable) -> Shape {
    let mut shape = Shape { depth: 1, bytes: 4 };
    let mut stack: Vec<(&AMQPValue, usize)> = Vec::new();
    for (k, v) in t.inner() {
        shape.bytes += 1 + k.as_str().len();
        stack.push((v, 1));
    }
    while let Some((v, level)) = stack.pop() {
        shape.bytes += 1 + match v {
            AMQPValue::Void => 0,
            AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
            AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
            AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
            AMQPValue::DecimalValue(_) => 5,
            AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
            AMQPValue::ShortString(s) => 1 + s.as_str().len(),
            AMQPValue::LongString(s) => 4 + s.len(),
            AMQPValue::ByteArray(b) => 4 + b.len(),
            AMQPValue::FieldArray(a) => {
                shape.depth = shape.depth.max(level + 1);
                stack.extend(a.as_slice().iter().map(|x| (x, level + 1)));
                4
            }
            AMQPValue::FieldTable(t) => {
                shape.depth = shape.depth.max(level + 1);
                for (k, x) in t.inner() {
                    shape.bytes += 1 + k.as_str().len();
                    stack.push((x, level + 1));
                }
                4
            }
        };
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::shape::table_shape;
    use amq_protocol::types::{FieldArray, LongString};

    #[test]
    fn the_shape_matches_the_native_measure_of_the_same_table() {
        let mut inner = AmqpTable::default();
        inner.insert("s".into(), AMQPValue::LongString(LongString::from("abc")));
        let arr = FieldArray::from(vec![AMQPValue::FieldTable(inner)]);
        let mut t = AmqpTable::default();
        t.insert("a".into(), AMQPValue::FieldArray(arr));
        t.insert("n".into(), AMQPValue::LongLongInt(7));
        let amqp = amqp_table_shape(&t);
        let ours = table_shape(&super::super::properties::table_in(&t));
        assert_eq!(amqp.depth, 3);
        assert_eq!(
            ours, amqp,
            "the same table measures the same in both protocols"
        );
    }
}
