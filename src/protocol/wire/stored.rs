//! A deliver frame around a message whose exchange, routing key and properties are
//! already MessagePack: a stream record read from its segment files stores them exactly
//! as the deliver frame carries them (docs/STREAMS.md, "Storage"), so a replay copies
//! those bytes into the frame instead of decoding them into a `Message` (five
//! allocations and a parse per record) and encoding them again.
//!
//! The frame written is byte for byte the one [`encode_server`](super::encode_server)
//! writes for the same delivery (tested below against it), so clients cannot tell the
//! two paths apart.

use super::super::frame::LENGTH_PREFIX;
use bytes::{BufMut, BytesMut};

/// `{"deliver": [` with the deliver frame's eight fields: a map of one entry (the
/// variant), its name, and the array header of [`DeliverFrame`](super::DeliverFrame).
const DELIVER_HEAD: &[u8] = b"\x81\xa7deliver\x98";

/// The header of a stored record's meta: a MessagePack array of three values (exchange,
/// routing key, properties).
pub const STORED_META_HEAD: u8 = 0x93;

/// Appends a `deliver` frame (with its length prefix) to `out`, its exchange, routing
/// key and properties taken as they are from `fields`: those three MessagePack values,
/// one after the other, as a stream record stores them after [`STORED_META_HEAD`]. The
/// frame is the one the message would be encoded to, with one exception that no stored
/// record has: empty properties, which an encoded frame sends as nil and this one as
/// the array of nils stored (the same to a client). A stored record's properties always
/// hold its `x-stream-offset` header. Only the body is copied besides: the one copy of
/// a replayed body in user space.
///
/// ```
/// use actormq::protocol::frame::take_frame;
/// use actormq::protocol::{decode_server, encode_deliver_stored, ServerFrame};
/// use bytes::BytesMut;
/// // exchange "x", routing key "k", properties with only `delivery_mode` 2 set
/// let mut fields = vec![0xa1, b'x', 0xa1, b'k', 0x9d, 0xc0, 0xc0, 0xc0, 0x02];
/// fields.extend_from_slice(&[0xc0; 9]);
/// let mut out = BytesMut::new();
/// encode_deliver_stored(&mut out, "ctag", 7, false, 1, &fields, b"body").unwrap();
/// let body = take_frame(&mut out, 1 << 20).unwrap().unwrap();
/// let ServerFrame::Deliver(d) = decode_server(&body).unwrap() else { panic!() };
/// assert_eq!((&*d.exchange, &*d.routing_key, d.body), ("x", "k", &b"body"[..]));
/// assert_eq!(d.properties.unwrap().delivery_mode, Some(2));
/// ```
pub fn encode_deliver_stored(
    out: &mut BytesMut,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    delivery_count: u32,
    fields: &[u8],
    body: &[u8],
) -> Result<(), rmp_serde::encode::Error> {
    let head = LENGTH_PREFIX + DELIVER_HEAD.len() + consumer_tag.len() + 32 + fields.len();
    out.reserve(head + body.len());
    encode_deliver_stored_head(
        out,
        consumer_tag,
        delivery_tag,
        redelivered,
        delivery_count,
        fields,
        body.len(),
    );
    out.extend_from_slice(body);
    Ok(())
}

/// [`encode_deliver_stored`] without the body: everything up to and including the
/// body's length marker, the frame's length prefix counting the `body_len` bytes the
/// caller sends right after. A connection writing plain TCP hands the body to the
/// socket as a separate slice of its segment's mapping (`writev`), so the body is not
/// copied in user space at all.
///
/// ```
/// use actormq::protocol::encode_deliver_stored_head;
/// use bytes::BytesMut;
/// let mut fields = vec![0xa0, 0xa1, b'k', 0x9d];
/// fields.extend_from_slice(&[0xc0; 13]);
/// let mut head = BytesMut::new();
/// encode_deliver_stored_head(&mut head, "c", 1, false, 1, &fields, 4);
/// // The length prefix counts the body that is not there yet.
/// let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
/// assert_eq!(len, head.len() - 4 + 4);
/// ```
pub fn encode_deliver_stored_head(
    out: &mut BytesMut,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    delivery_count: u32,
    fields: &[u8],
    body_len: usize,
) {
    let start = out.len();
    out.put_u32(0);
    out.extend_from_slice(DELIVER_HEAD);
    // The markers rmp-serde writes for these fields (the smallest that fits), by hand:
    // through the serializer they were ~3% of a replay's broker CPU. The test below
    // holds them to the encoder's bytes.
    put_len(out, consumer_tag.len(), [0xd9, 0xda, 0xdb], Some(0xa0));
    out.extend_from_slice(consumer_tag.as_bytes());
    put_uint(out, delivery_tag);
    out.put_u8(if redelivered { 0xc3 } else { 0xc2 });
    put_uint(out, u64::from(delivery_count));
    out.extend_from_slice(fields);
    put_len(out, body_len, [0xc4, 0xc5, 0xc6], None);
    let len = (out.len() - start - LENGTH_PREFIX + body_len) as u32;
    out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
}

/// A string's or binary's header: a fix marker (`fix | len`) below 32 when it has one,
/// else the 8-, 16- or 32-bit length form.
pub(super) fn put_len(b: &mut BytesMut, len: usize, sized: [u8; 3], fix: Option<u8>) {
    match (len, fix) {
        (0..=31, Some(fix)) => b.put_u8(fix | len as u8),
        (0..=0xff, _) => b.put_slice(&[sized[0], len as u8]),
        (0x100..=0xffff, _) => {
            b.put_u8(sized[1]);
            b.put_u16(len as u16);
        }
        _ => {
            b.put_u8(sized[2]);
            b.put_u32(len as u32);
        }
    }
}

/// An unsigned integer in its smallest form.
pub(super) fn put_uint(b: &mut BytesMut, n: u64) {
    match n {
        0..=0x7f => b.put_u8(n as u8),
        0x80..=0xff => b.put_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            b.put_u8(0xcd);
            b.put_u16(n as u16);
        }
        0x1_0000..=0xffff_ffff => {
            b.put_u8(0xce);
            b.put_u32(n as u32);
        }
        _ => {
            b.put_u8(0xcf);
            b.put_u64(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{encode_server, DeliverFrame, PropertiesRef, ServerFrame};
    use super::*;
    use crate::message::{FieldTable, FieldValue, Properties, TypedValue};
    use std::borrow::Cow;

    /// The stored meta of a record, as the stream codec writes it.
    fn meta(exchange: &str, routing_key: &str, p: &Properties) -> Vec<u8> {
        let v = rmp_serde::to_vec(&(exchange, &routing_key.to_string(), p)).unwrap();
        assert_eq!(v[0], STORED_META_HEAD);
        v
    }

    fn rich() -> Properties {
        let mut inner = FieldTable::new();
        inner.insert("n".into(), FieldValue::Int(-3));
        let mut h = FieldTable::new();
        h.insert("x-stream-offset".into(), FieldValue::Int(123_456_789));
        h.insert("s".into(), FieldValue::Str("é".repeat(40)));
        h.insert("f".into(), FieldValue::Float(1.25));
        h.insert("b".into(), FieldValue::Bool(true));
        h.insert("v".into(), FieldValue::Void);
        h.insert("bin".into(), FieldValue::Bytes(vec![0, 1, 2].into()));
        h.insert(
            "a".into(),
            FieldValue::Array(vec![FieldValue::Int(1), FieldValue::Table(inner.clone())]),
        );
        h.insert("t".into(), FieldValue::Table(inner));
        h.insert("i8".into(), FieldValue::Typed(TypedValue::I8(-1)));
        h.insert(
            "ts".into(),
            FieldValue::Typed(TypedValue::Timestamp(1 << 40)),
        );
        h.insert(
            "d".into(),
            FieldValue::Typed(TypedValue::Decimal {
                scale: 2,
                value: 314,
            }),
        );
        Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("gzip".into()),
            headers: Some(h),
            delivery_mode: Some(2),
            priority: Some(9),
            correlation_id: Some("c".repeat(300)),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            expiration: Some("60000".into()),
            message_id: Some("m-1".into()),
            timestamp: Some(u64::MAX),
            kind: Some("order.created".into()),
            user_id: Some("guest".into()),
            app_id: Some("app".into()),
        }
    }

    #[test]
    fn a_spliced_frame_is_byte_for_byte_the_encoded_one() {
        let mut only_offset = Properties::default();
        only_offset
            .headers
            .get_or_insert_with(FieldTable::new)
            .insert("x-stream-offset".into(), FieldValue::Int(0));
        let long_key = "k".repeat(70_000);
        let tags = [
            "",
            "amq.ctag-1",
            &"t".repeat(31),
            &"t".repeat(40),
            &"u".repeat(300),
            &"v".repeat(70_000),
        ];
        let bodies: [Vec<u8>; 5] = [
            vec![],
            vec![7],
            vec![1; 200],
            vec![2; 1024],
            vec![3; 70_000],
        ];
        let mut n = 0;
        for p in [only_offset, rich()] {
            for (exchange, key) in [("", "q"), ("orders", long_key.as_str())] {
                let m = meta(exchange, key, &p);
                for tag in tags {
                    for body in &bodies {
                        for (dtag, again, count) in [
                            (1u64, false, 1u32),
                            (127, false, 128),
                            (200, true, 2),
                            (300, true, 70_000),
                            (70_000, false, u32::MAX),
                            (1 << 40, true, 255),
                            (u64::MAX, true, 256),
                        ] {
                            let want_frame = ServerFrame::Deliver(DeliverFrame {
                                consumer_tag: Cow::Borrowed(tag),
                                delivery_tag: dtag,
                                redelivered: again,
                                delivery_count: count,
                                exchange: Cow::Borrowed(exchange),
                                routing_key: Cow::Borrowed(key),
                                properties: Some(PropertiesRef::Borrowed(&p)),
                                body,
                            });
                            let mut want = BytesMut::new();
                            encode_server(&want_frame, &mut want).unwrap();
                            let mut got = BytesMut::from(&b"before"[..]);
                            encode_deliver_stored(&mut got, tag, dtag, again, count, &m[1..], body)
                                .unwrap();
                            assert_eq!(&got[..6], b"before", "appends");
                            assert!(got[6..] == want[..], "tag {tag:?}, body {}", body.len());
                            // The head alone, then the body as a separate slice (writev).
                            let mut head = BytesMut::new();
                            encode_deliver_stored_head(
                                &mut head,
                                tag,
                                dtag,
                                again,
                                count,
                                &m[1..],
                                body.len(),
                            );
                            head.extend_from_slice(body);
                            assert!(
                                head[..] == want[..],
                                "head: tag {tag:?}, body {}",
                                body.len()
                            );
                            n += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(n, 2 * 2 * 6 * 5 * 7);
    }
}
