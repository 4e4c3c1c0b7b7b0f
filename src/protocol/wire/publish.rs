//! A hand decoder for the frame a publisher sends most: `publish`, in the shape the
//! client's encoder writes it (rmp-serde's), with no headers.
//!
//! Through rmp-serde's generic path a publish cost the broker a structure walk of the
//! whole frame (the decoded-memory budget), a visitor per field, and the variant's
//! name matched against every client frame's: about a tenth of the broker's CPU of a
//! 1 KiB stream publish besides the append (docs/BENCHMARKS.md, "a stream publish
//! without a copy per message"). This decoder reads the markers, in order, once.
//!
//! As the deliver decoder ([`super::decode_deliver`]) it decides nothing on its own:
//! a frame it does not take (another frame, another marker or width than the encoder's,
//! properties with headers, which the budget must weigh, a truncated or malformed
//! frame) is answered `None` and goes through the generic path, which accepts or
//! refuses it with its own error. What it takes, the generic decoder takes too, as the
//! same frame (tested below over mutations and every truncation). A frame it takes
//! holds strings and a body borrowed from it and at most the properties' strings:
//! nothing the budget would refuse.

use super::deliver::Reader;
use super::PublishFrame;

/// `{"publish": [` with its six fields, as the encoder writes it.
const HEAD: &[u8] = b"\x81\xa7publish\x96";

/// Decodes `body` (a frame body, without its length prefix) when it is a publish frame
/// in the encoder's shape without headers; `None` for anything else, which the generic
/// decoder ([`decode_client`](super::decode_client)) then decodes or refuses.
///
/// ```
/// use actormq::protocol::frame::take_frame;
/// use actormq::protocol::{decode_publish, encode_client, ClientFrame, PublishFrame};
/// use bytes::BytesMut;
/// let frame = ClientFrame::Publish(PublishFrame {
///     seq: 7,
///     exchange: "",
///     routing_key: "q",
///     mandatory: false,
///     properties: None,
///     body: b"hi",
/// });
/// let mut out = BytesMut::new();
/// encode_client(&frame, &mut out).unwrap();
/// let body = take_frame(&mut out, 1 << 20).unwrap().unwrap();
/// let p = decode_publish(&body).unwrap();
/// assert_eq!((p.seq, p.routing_key, p.body), (7, "q", &b"hi"[..]));
/// assert!(decode_publish(b"\x81\xa9heartbeat\xc0").is_none());
/// ```
pub fn decode_publish(body: &[u8]) -> Option<PublishFrame<'_>> {
    let mut r = Reader {
        b: body.strip_prefix(HEAD)?,
    };
    let seq = r.uint()?;
    let exchange = r.str()?;
    let routing_key = r.str()?;
    let mandatory = r.bool()?;
    let properties = if r.nil() {
        None
    } else {
        let p = r.properties_without_headers()?;
        Some(Box::new(p))
    };
    let body = r.bin()?;
    r.b.is_empty().then_some(PublishFrame {
        seq,
        exchange,
        routing_key,
        mandatory,
        properties,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{FieldTable, FieldValue, Properties};
    use crate::protocol::frame::take_frame;
    use crate::protocol::wire::{decode, encode_client, ClientFrame, DecodeError};
    use bytes::{Bytes, BytesMut};

    fn frame_bytes(f: &ClientFrame<'_>) -> Bytes {
        let mut out = BytesMut::new();
        encode_client(f, &mut out).unwrap();
        take_frame(&mut out, 1 << 24).unwrap().unwrap()
    }

    fn publish<'a>(
        seq: u64,
        exchange: &'a str,
        key: &'a str,
        p: Option<&Properties>,
        body: &'a [u8],
    ) -> Bytes {
        frame_bytes(&ClientFrame::Publish(PublishFrame {
            seq,
            exchange,
            routing_key: key,
            mandatory: seq % 2 == 1,
            properties: p.map(|p| Box::new(p.clone())),
            body,
        }))
    }

    fn rich() -> Properties {
        Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("c".repeat(40)),
            headers: None,
            delivery_mode: Some(2),
            priority: Some(200),
            correlation_id: Some("x".repeat(300)),
            reply_to: Some(String::new()),
            expiration: Some("60000".into()),
            message_id: Some("m".into()),
            timestamp: Some(u64::MAX),
            kind: Some("t".into()),
            user_id: Some("guest".into()),
            app_id: Some("a".repeat(70_000)),
        }
    }

    fn generic(body: &[u8]) -> Result<ClientFrame<'_>, DecodeError> {
        decode(body, None)
    }

    /// What the hand decoder takes, the generic decoder takes, as the same frame.
    fn agrees(body: &[u8]) -> bool {
        let Some(p) = decode_publish(body) else {
            return false;
        };
        let shown = &body[..body.len().min(64)];
        let want = generic(body).unwrap_or_else(|e| panic!("{e}: {shown:02x?}"));
        assert_eq!(ClientFrame::Publish(p), want, "{shown:02x?}");
        true
    }

    fn corpus() -> Vec<Bytes> {
        let rich = rich();
        let persistent = Properties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        let long_key = "k".repeat(300);
        let mut frames = Vec::new();
        for seq in [0, 1, 127, 128, 255, 256, 65_536, 1 << 32, u64::MAX] {
            for (exchange, key) in [("", ""), ("x", "q"), ("ex", long_key.as_str())] {
                for p in [None, Some(&persistent), Some(&rich)] {
                    for body in [&[][..], &[7; 31], &[1; 300], &[2; 70_000]] {
                        frames.push(publish(seq, exchange, key, p, body));
                    }
                }
            }
        }
        frames
    }

    #[test]
    fn every_marker_width_decodes_as_the_generic_decoder_does() {
        for f in corpus() {
            assert!(agrees(&f), "not taken: {:02x?}", &f[..f.len().min(64)]);
        }
    }

    #[test]
    fn truncation_at_every_byte_is_left_to_the_generic_decoder_which_refuses_it() {
        let rich = rich();
        for p in [None, Some(&rich)] {
            let f = publish(300, "x", "q", p, &[5; 40]);
            for cut in 0..f.len() {
                assert!(decode_publish(&f[..cut]).is_none(), "cut at {cut}");
                assert!(generic(&f[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = f.to_vec();
            longer.push(0);
            assert!(decode_publish(&longer).is_none());
            assert!(generic(&longer).is_err());
        }
    }

    #[test]
    fn any_byte_changed_is_decoded_as_the_generic_decoder_does_or_left_to_it() {
        let mut p = rich();
        p.app_id = Some("a".into());
        let frames = [
            publish(300, "x", "q", None, &[5; 40]),
            publish(300, "x", "q", Some(&p), &[5; 40]),
        ];
        let (mut taken, mut left) = (0, 0);
        for f in &frames {
            for m in crate::protocol::wire::one_byte_changed(f, usize::MAX) {
                if agrees(&m) {
                    taken += 1;
                } else {
                    left += 1;
                }
            }
        }
        assert!(taken > 500 && left > 500, "taken {taken}, left {left}");
    }

    #[test]
    fn headers_and_other_shapes_are_left_to_the_generic_decoder() {
        let mut p = Properties::default();
        let mut t = FieldTable::new();
        t.insert("h".into(), FieldValue::Int(1));
        p.headers = Some(t);
        let f = publish(1, "x", "q", Some(&p), b"b");
        assert!(decode_publish(&f).is_none());
        assert!(matches!(generic(&f), Ok(ClientFrame::Publish(_))));
        // A seq as a signed integer: valid, not the encoder's marker.
        let mut f = publish(3, "x", "q", None, b"b").to_vec();
        assert_eq!(f[10], 0x03);
        f.splice(10..11, [0xd0, 0x03]);
        assert!(decode_publish(&f).is_none());
        assert!(matches!(generic(&f), Ok(ClientFrame::Publish(_))));
        // Named fields: valid, not the encoder's shape.
        let named = rmp_serde::to_vec_named(&ClientFrame::Publish(PublishFrame {
            seq: 1,
            exchange: "x",
            routing_key: "q",
            mandatory: false,
            properties: None,
            body: b"b",
        }))
        .unwrap();
        assert!(decode_publish(&named).is_none());
        assert!(decode_publish(&frame_bytes(&ClientFrame::Heartbeat)).is_none());
    }
}
