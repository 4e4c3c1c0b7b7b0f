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

    /// A string or bin of `data` as a client may write it: the marker of `width`
    /// (0 fix, 1, 2 or 4 bytes of length) and a declared length that need not be
    /// `data`'s (longer than the frame, `u32::MAX`).
    fn with_length(out: &mut Vec<u8>, bin: bool, width: usize, declared: u64, data: &[u8]) {
        match (bin, width) {
            (false, 0) => out.push(0xa0 | (declared as u8 & 0x1f)),
            (false, 1) => out.push(0xd9),
            (false, 2) => out.push(0xda),
            (false, _) => out.push(0xdb),
            (true, 1) => out.push(0xc4),
            (true, 2) => out.push(0xc5),
            (true, _) => out.push(0xc6),
        }
        if width > 0 {
            out.extend_from_slice(&declared.to_be_bytes()[8 - width..]);
        }
        out.extend_from_slice(data);
    }

    /// Declared lengths around and far beyond what a field holds, at every width.
    fn declared_lengths(actual: usize, rest: usize, width: usize) -> Vec<u64> {
        let max = match width {
            0 => 31,
            1 => 0xff,
            2 => 0xffff,
            _ => u64::from(u32::MAX),
        };
        let a = actual as u64;
        let r = rest as u64;
        [
            0,
            a.saturating_sub(1),
            a,
            a + 1,
            a + r,
            a + r + 1,
            max / 2 + 1,
            max,
        ]
        .into_iter()
        .map(|d| d.min(max))
        .collect()
    }

    /// The exchange, routing key, content type and body of [`hand_frame`].
    const FIELDS: [&[u8]; 4] = [b"ex", b"route", b"text/plain", b"the body"];

    /// A frame whose exchange, routing key, one property and body each have a
    /// client-chosen width and declared length (`which` picks the field whose declared
    /// length is `declared`; the others are declared as they are).
    fn hand_frame(widths: [usize; 4], which: usize, declared: u64) -> Vec<u8> {
        let fields = FIELDS;
        let len = |i: usize| {
            if i == which {
                declared
            } else {
                fields[i].len() as u64
            }
        };
        let mut f = HEAD.to_vec();
        f.push(0x07); // seq
        with_length(&mut f, false, widths[0], len(0), fields[0]);
        with_length(&mut f, false, widths[1], len(1), fields[1]);
        f.push(0xc3); // mandatory
        f.push(0x9d); // 13 properties: a content type, the rest nil
        with_length(&mut f, false, widths[2], len(2), fields[2]);
        f.extend_from_slice(&[0xc0; 12]);
        with_length(&mut f, true, widths[3].max(1), len(3), fields[3]);
        f
    }

    /// Every declared length of every field at every width, the frame's own and ones
    /// beyond it up to `u32::MAX`: no panic, nothing taken the generic decoder would not
    /// take as the same frame, and the frames as written taken.
    #[test]
    fn declared_lengths_beyond_the_frame_at_every_width_are_never_taken_wrongly() {
        let mut taken = 0;
        for w0 in [0, 1, 2, 4] {
            for w1 in [0, 1, 4] {
                for w2 in [0, 2, 4] {
                    for w3 in [1, 2, 4] {
                        let widths = [w0, w1, w2, w3];
                        let honest = hand_frame(widths, 4, 0);
                        assert!(agrees(&honest), "as written: {honest:02x?}");
                        for which in 0..4 {
                            let (actual, rest) = (FIELDS[which].len(), honest.len());
                            for d in declared_lengths(actual, rest, widths[which]) {
                                let f = hand_frame(widths, which, d);
                                if agrees(&f) {
                                    taken += 1;
                                }
                                // The budgeted path a client reaches: an error, no panic.
                                let _ = crate::protocol::wire::decode_client(&f);
                            }
                        }
                    }
                }
            }
        }
        assert!(taken > 0);
    }

    /// Seeded random mutations (bytes changed, a 32-bit length spliced in, bytes cut
    /// or inserted) of frames with and without properties: what the hand decoder takes,
    /// the generic one takes as the same frame, and neither panics.
    #[test]
    fn random_mutations_are_decoded_as_the_generic_decoder_does_or_left_to_it() {
        let mut p = rich();
        p.app_id = Some("a".into());
        p.correlation_id = Some("c".into());
        let frames = [
            publish(300, "x", "q", None, &[5; 40]),
            publish(1 << 40, "exchange", "key", Some(&p), &[6; 300]),
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..40_000 {
            let mut m = frames[i % 2].to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % m.len();
                match next() % 4 {
                    0 => m[at] = next() as u8,
                    1 => {
                        let marker = [0xdb, 0xc6, 0xce][(next() % 3) as usize];
                        let len = [u32::MAX, 0x8000_0000, m.len() as u32, next() as u32]
                            [(next() % 4) as usize];
                        m.splice(at..(at + 5).min(m.len()), std::iter::once(marker));
                        m.splice(at + 1..at + 1, len.to_be_bytes());
                    }
                    2 => m.truncate(at.max(1)),
                    _ => m.insert(at, next() as u8),
                }
            }
            agrees(&m);
            let _ = crate::protocol::wire::decode_client(&m);
        }
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
