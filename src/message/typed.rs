//! AMQP 0-9-1 table values that carry a wire type of their own (an integer width, a
//! 32-bit float, a decimal, a timestamp, a long string that is not UTF-8), so that a
//! header crosses actormq as the client wrote it: AMQP to AMQP, and AMQP to the native
//! protocol and back.
//!
//! In MessagePack (the native protocol and the message store) each is an *ext* value of
//! its own type code, so a table written before these existed decodes unchanged, and a
//! native client that does not know them passes them on untouched (a MessagePack
//! library keeps an unknown ext as a (code, bytes) pair). docs/PROTOCOL.md lists the
//! codes.

use bytes::Bytes;
use std::fmt;

/// A table value with an AMQP wire type that the plain [`super::FieldValue`] variants
/// would lose (every other AMQP type maps to a plain variant without loss).
///
/// ```
/// use actormq::{FieldValue, TypedValue};
/// let v = FieldValue::Typed(TypedValue::I32(5));
/// assert_eq!(v.as_int(), Some(5));
/// assert_eq!(v.plain(), FieldValue::Int(5));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    /// AMQP `b`, a signed 8-bit integer.
    I8(i8),
    /// AMQP `B`, an unsigned 8-bit integer.
    U8(u8),
    /// AMQP `s` (as RabbitMQ reads it), a signed 16-bit integer.
    I16(i16),
    /// AMQP `u`, an unsigned 16-bit integer.
    U16(u16),
    /// AMQP `I`, a signed 32-bit integer.
    I32(i32),
    /// AMQP `i`, an unsigned 32-bit integer.
    U32(u32),
    /// AMQP `f`, a 32-bit float.
    F32(f32),
    /// AMQP `D`: `value` / 10^`scale`.
    Decimal {
        /// Decimal places.
        scale: u8,
        /// The unscaled value.
        value: u32,
    },
    /// AMQP `T`, seconds since the Unix epoch.
    Timestamp(u64),
    /// AMQP `S` whose bytes are not UTF-8 (a UTF-8 one is a plain string).
    BinaryStr(Bytes),
}

/// MessagePack ext type codes, one per variant (documented in docs/PROTOCOL.md).
pub(crate) mod code {
    pub const I8: i8 = 1;
    pub const U8: i8 = 2;
    pub const I16: i8 = 3;
    pub const U16: i8 = 4;
    pub const I32: i8 = 5;
    pub const U32: i8 = 6;
    pub const F32: i8 = 7;
    pub const DECIMAL: i8 = 8;
    pub const TIMESTAMP: i8 = 9;
    pub const BINARY_STR: i8 = 10;
}

impl TypedValue {
    /// The value as an integer, for the integer types and timestamps.
    pub fn as_int(&self) -> Option<i64> {
        Some(match *self {
            TypedValue::I8(v) => v as i64,
            TypedValue::U8(v) => v as i64,
            TypedValue::I16(v) => v as i64,
            TypedValue::U16(v) => v as i64,
            TypedValue::I32(v) => v as i64,
            TypedValue::U32(v) => v as i64,
            TypedValue::Timestamp(v) => i64::try_from(v).ok()?,
            _ => return None,
        })
    }

    /// The ext type code and payload (big-endian, as AMQP writes them).
    pub(crate) fn to_ext(&self) -> (i8, Vec<u8>) {
        match self {
            TypedValue::I8(v) => (code::I8, v.to_be_bytes().to_vec()),
            TypedValue::U8(v) => (code::U8, vec![*v]),
            TypedValue::I16(v) => (code::I16, v.to_be_bytes().to_vec()),
            TypedValue::U16(v) => (code::U16, v.to_be_bytes().to_vec()),
            TypedValue::I32(v) => (code::I32, v.to_be_bytes().to_vec()),
            TypedValue::U32(v) => (code::U32, v.to_be_bytes().to_vec()),
            TypedValue::F32(v) => (code::F32, v.to_be_bytes().to_vec()),
            TypedValue::Decimal { scale, value } => {
                let mut b = vec![*scale];
                b.extend_from_slice(&value.to_be_bytes());
                (code::DECIMAL, b)
            }
            TypedValue::Timestamp(v) => (code::TIMESTAMP, v.to_be_bytes().to_vec()),
            TypedValue::BinaryStr(b) => (code::BINARY_STR, b.to_vec()),
        }
    }

    /// The value of ext type `code` with payload `b`; an error names what is wrong.
    pub(crate) fn from_ext(code: i8, b: &[u8]) -> Result<TypedValue, String> {
        fn exact<const N: usize>(b: &[u8], code: i8) -> Result<[u8; N], String> {
            b.try_into()
                .map_err(|_| format!("ext type {code} takes {N} bytes, got {}", b.len()))
        }
        Ok(match code {
            code::I8 => TypedValue::I8(i8::from_be_bytes(exact(b, code)?)),
            code::U8 => TypedValue::U8(u8::from_be_bytes(exact(b, code)?)),
            code::I16 => TypedValue::I16(i16::from_be_bytes(exact(b, code)?)),
            code::U16 => TypedValue::U16(u16::from_be_bytes(exact(b, code)?)),
            code::I32 => TypedValue::I32(i32::from_be_bytes(exact(b, code)?)),
            code::U32 => TypedValue::U32(u32::from_be_bytes(exact(b, code)?)),
            code::F32 => TypedValue::F32(f32::from_be_bytes(exact(b, code)?)),
            code::DECIMAL => {
                let d: [u8; 5] = exact(b, code)?;
                TypedValue::Decimal {
                    scale: d[0],
                    value: u32::from_be_bytes([d[1], d[2], d[3], d[4]]),
                }
            }
            code::TIMESTAMP => TypedValue::Timestamp(u64::from_be_bytes(exact(b, code)?)),
            code::BINARY_STR => TypedValue::BinaryStr(Bytes::copy_from_slice(b)),
            other => return Err(format!("unknown ext type {other} in a table value")),
        })
    }

    /// A short name of the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            TypedValue::I8(_) => "int8",
            TypedValue::U8(_) => "uint8",
            TypedValue::I16(_) => "int16",
            TypedValue::U16(_) => "uint16",
            TypedValue::I32(_) => "int32",
            TypedValue::U32(_) => "uint32",
            TypedValue::F32(_) => "float32",
            TypedValue::Decimal { .. } => "decimal",
            TypedValue::Timestamp(_) => "timestamp",
            TypedValue::BinaryStr(_) => "binary string",
        }
    }
}

impl fmt::Display for TypedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypedValue::F32(v) => write!(f, "{v}"),
            TypedValue::Decimal { scale, value } => {
                write!(f, "{}", *value as f64 / 10f64.powi(*scale as i32))
            }
            TypedValue::BinaryStr(b) => write!(f, "<{} bytes>", b.len()),
            other => write!(f, "{}", other.as_int().unwrap_or_default()),
        }
    }
}
