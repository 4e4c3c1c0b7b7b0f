use super::super::{decode, encode_deliver_stored, encode_server, DecodeError, ServerFrame};
use super::*;
use crate::protocol::frame::take_frame;
use bytes::BytesMut;

/// Properties with every field set and a header of every kind the generic decoder
/// knows (typed ones as ext values, nested tables and arrays).
fn rich() -> Properties {
    let mut inner = FieldTable::new();
    inner.insert("n".into(), FieldValue::Int(-3));
    inner.insert("big".into(), FieldValue::Int(i64::MIN));
    let mut h = FieldTable::new();
    h.insert("x-stream-offset".into(), FieldValue::Int(123_456_789));
    h.insert("s".into(), FieldValue::Str("é".repeat(40)));
    h.insert("f".into(), FieldValue::Float(1.25));
    h.insert("b".into(), FieldValue::Bool(false));
    h.insert("v".into(), FieldValue::Void);
    h.insert("bin".into(), FieldValue::Bytes(vec![0, 1, 2].into()));
    h.insert("bin16".into(), FieldValue::Bytes(vec![9; 300].into()));
    h.insert(
        "a".into(),
        FieldValue::Array(vec![FieldValue::Int(1), FieldValue::Table(inner.clone())]),
    );
    h.insert("t".into(), FieldValue::Table(inner));
    for (k, v) in [
        ("i8", TypedValue::I8(-1)),
        ("u8", TypedValue::U8(200)),
        ("i16", TypedValue::I16(-300)),
        ("u16", TypedValue::U16(60_000)),
        ("i32", TypedValue::I32(-70_000)),
        ("u32", TypedValue::U32(4_000_000_000)),
        ("f32", TypedValue::F32(0.5)),
        (
            "d",
            TypedValue::Decimal {
                scale: 2,
                value: 314,
            },
        ),
        ("ts", TypedValue::Timestamp(1 << 40)),
        ("bs", TypedValue::BinaryStr(vec![0xff, 0xfe].into())),
    ] {
        h.insert(k.into(), FieldValue::Typed(v));
    }
    for (i, n) in [
        0i64, 127, 128, 255, 256, 65_535, 65_536, -1, -32, -33, -129, -40_000,
    ]
    .into_iter()
    .chain([i64::from(u32::MAX) + 1, i64::MAX, -(1 << 40)])
    .enumerate()
    {
        h.insert(format!("int{i}"), FieldValue::Int(n));
    }
    Properties {
        content_type: Some("application/json".into()),
        content_encoding: Some("gzip".into()),
        headers: Some(h),
        delivery_mode: Some(2),
        priority: Some(200),
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

/// A stream record's properties: only its offset header.
fn offset_only() -> Properties {
    let mut p = Properties::default();
    p.headers
        .get_or_insert_with(FieldTable::new)
        .insert("x-stream-offset".into(), FieldValue::Int(70_000));
    p
}

fn frame_bytes(f: &ServerFrame<'_>) -> Bytes {
    let mut out = BytesMut::new();
    encode_server(f, &mut out).unwrap();
    take_frame(&mut out, 1 << 24).unwrap().unwrap()
}

fn deliver<'a>(
    tag: &'a str,
    dtag: u64,
    count: u32,
    key: &'a str,
    p: Option<&'a Properties>,
    body: &'a [u8],
) -> ServerFrame<'a> {
    ServerFrame::Deliver(DeliverFrame {
        consumer_tag: Cow::Borrowed(tag),
        delivery_tag: dtag,
        redelivered: dtag % 2 == 0,
        delivery_count: count,
        exchange: Cow::Borrowed(if dtag % 3 == 0 { "" } else { "orders" }),
        routing_key: Cow::Borrowed(key),
        properties: p.map(PropertiesRef::Borrowed),
        body,
    })
}

/// Deliver frames over every marker width of every field, and the stored (replay)
/// encoding of a few.
fn corpus() -> Vec<Bytes> {
    let (rich, offset) = (rich(), offset_only());
    let mut long = rich.clone();
    long.headers
        .as_mut()
        .unwrap()
        .insert("long".into(), FieldValue::Str("l".repeat(70_000)));
    let long_tag = "t".repeat(70_000);
    let long_key = "k".repeat(300);
    let mut frames = Vec::new();
    let bodies: [&[u8]; 4] = [b"", b"x", &[7; 300], &[8; 70_000]];
    for tag in [
        "",
        "amq.ctag-1",
        &"t".repeat(31),
        &"t".repeat(32),
        &long_tag,
    ] {
        for (dtag, count) in [
            (1u64, 1u32),
            (127, 128),
            (255, 256),
            (65_536, 70_000),
            (1 << 40, u32::MAX),
            (u64::MAX, 0),
        ] {
            for p in [None, Some(&offset), Some(&rich), Some(&long)] {
                let body = bodies[(dtag % 4) as usize];
                frames.push(frame_bytes(&deliver(tag, dtag, count, &long_key, p, body)));
                frames.push(frame_bytes(&deliver(tag, dtag, count, "q", p, body)));
            }
        }
    }
    let meta = rmp_serde::to_vec(&("", "stream", &offset)).unwrap();
    for body in bodies {
        let mut out = BytesMut::new();
        encode_deliver_stored(&mut out, "ctag", 9, true, 2, &meta[1..], body).unwrap();
        frames.push(take_frame(&mut out, 1 << 24).unwrap().unwrap());
    }
    frames
}

/// The generic decoder alone (`decode_server` takes the hand decoder's frames first).
fn generic(body: &[u8]) -> Result<ServerFrame<'_>, DecodeError> {
    decode(body, None)
}

/// What the hand decoder takes, the generic decoder takes, as the same frame: the two
/// encode to the same bytes (compared encoded, so that a NaN header equals itself).
fn agrees(body: &[u8]) -> bool {
    let Some(parts) = decode_deliver(body) else {
        return false;
    };
    let shown = &body[..body.len().min(64)];
    let want = generic(body).unwrap_or_else(|e| panic!("{e}: {shown:02x?}"));
    let got = ServerFrame::Deliver(parts.into_frame());
    assert!(frame_bytes(&got) == frame_bytes(&want), "{shown:02x?}");
    true
}

#[test]
fn every_marker_width_decodes_as_the_generic_decoder_does() {
    let frames = corpus();
    for f in &frames {
        assert!(agrees(f), "not taken: {:02x?}", &f[..f.len().min(64)]);
    }
    assert_eq!(frames.len(), 5 * 6 * 4 * 2 + 4);
}

#[test]
fn truncation_at_every_byte_is_left_to_the_generic_decoder_which_refuses_it() {
    let (rich, offset) = (rich(), offset_only());
    for p in [None, Some(&offset), Some(&rich)] {
        let f = frame_bytes(&deliver("ctag", 300, 2, "q", p, &[5; 40]));
        for cut in 0..f.len() {
            assert!(decode_deliver(&f[..cut]).is_none(), "cut at {cut}");
            assert!(generic(&f[..cut]).is_err(), "cut at {cut}");
        }
        // A byte more is trailing garbage.
        let mut longer = f.to_vec();
        longer.push(0);
        assert!(decode_deliver(&longer).is_none());
        assert!(generic(&longer).is_err());
    }
}

#[test]
fn a_deliver_frame_has_these_exact_bytes() {
    // {"deliver": ["c", 300, true, 2, "", "q", [nil, nil, {"x-stream-offset": 5},
    //   nil x 10], bin "hi"]}
    let mut b = b"\x81\xa7deliver\x98\xa1c\xcd\x01\x2c\xc3\x02\xa0\xa1q\x9d\xc0\xc0\x81".to_vec();
    b.push(0xaf);
    b.extend_from_slice(b"x-stream-offset");
    b.push(0x05);
    b.extend_from_slice(&[0xc0; 10]);
    b.extend_from_slice(b"\xc4\x02hi");
    let mut headers = FieldTable::new();
    headers.insert("x-stream-offset".into(), FieldValue::Int(5));
    let want = DeliverParts {
        consumer_tag: "c",
        delivery_tag: 300,
        redelivered: true,
        delivery_count: 2,
        exchange: "",
        routing_key: "q",
        properties: Some(Properties {
            headers: Some(headers),
            ..Default::default()
        }),
        body: b"hi",
    };
    assert_eq!(decode_deliver(&b), Some(want.clone()));
    // The encoder writes these bytes for that frame.
    let p = want.properties.clone().unwrap();
    let f = deliver("c", 300, 2, "q", Some(&p), b"hi");
    let ServerFrame::Deliver(mut d) = f else {
        unreachable!()
    };
    d.redelivered = true;
    d.exchange = Cow::Borrowed("");
    assert_eq!(&frame_bytes(&ServerFrame::Deliver(d))[..], &b[..]);
}

#[test]
fn any_byte_changed_is_decoded_as_the_generic_decoder_does_or_left_to_it() {
    let (rich, offset) = (rich(), offset_only());
    let mut frames = Vec::new();
    for p in [None, Some(&offset), Some(&rich)] {
        frames.push(frame_bytes(&deliver("ctag", 300, 2, "q", p, &[5; 40])));
    }
    let (mut taken, mut left) = (0, 0);
    for f in &frames {
        // Rich properties are long: change the first 2,000 bytes (every marker kind).
        for m in crate::protocol::wire::one_byte_changed(f, 2000) {
            if agrees(&m) {
                taken += 1;
            } else {
                left += 1;
            }
        }
    }
    assert!(taken > 1000 && left > 1000, "taken {taken}, left {left}");
}

#[test]
fn other_shapes_are_left_to_the_generic_decoder() {
    let p = offset_only();
    let ServerFrame::Deliver(d) = deliver("c", 3, 1, "q", Some(&p), b"b") else {
        unreachable!()
    };
    // Properties as a map of field names: valid, not the encoder's shape.
    let named = rmp_serde::to_vec_named(&ServerFrame::Deliver(d.clone())).unwrap();
    assert!(decode_deliver(&named).is_none());
    assert!(matches!(generic(&named), Ok(ServerFrame::Deliver(_))));
    // A delivery tag as a signed integer: valid, not the encoder's marker.
    let mut f = frame_bytes(&ServerFrame::Deliver(d.clone())).to_vec();
    assert_eq!(f[12], 0x03);
    f.splice(12..13, [0xd0, 0x03]);
    assert!(decode_deliver(&f).is_none());
    assert_eq!(generic(&f), Ok(ServerFrame::Deliver(d)));
    // Other frames.
    for other in [ServerFrame::Heartbeat, ServerFrame::Unblocked] {
        assert!(decode_deliver(&frame_bytes(&other)).is_none());
    }
}

/// A delivery whose one header holds `arrays` nested arrays around an integer.
fn nested(arrays: usize) -> Bytes {
    let mut v = FieldValue::Int(1);
    for _ in 0..arrays {
        v = FieldValue::Array(vec![v]);
    }
    let mut p = Properties::default();
    p.headers
        .get_or_insert_with(FieldTable::new)
        .insert("n".into(), v);
    frame_bytes(&deliver("c", 1, 1, "q", Some(&p), b""))
}

#[test]
fn nesting_is_taken_down_to_level_64_and_left_to_the_generic_decoder_below() {
    // The header's value is at level 5; each array puts the integer a level deeper.
    let deepest = nested(MAX_DEPTH - 5);
    assert!(agrees(&deepest), "level 64");
    let too_deep = nested(MAX_DEPTH - 4);
    assert!(decode_deliver(&too_deep).is_none(), "level 65");
    assert!(generic(&too_deep).is_err());
}
