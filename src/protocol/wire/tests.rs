use super::*;
use crate::message::{FieldTable, FieldValue};
use crate::protocol::frame::take_frame;

fn publish(body: &[u8]) -> ClientFrame<'_> {
    ClientFrame::Publish(PublishFrame {
        seq: 7,
        exchange: "x",
        routing_key: "k",
        mandatory: true,
        properties: None,
        body,
    })
}

fn round_trip_client(f: &ClientFrame<'_>) {
    let mut out = BytesMut::new();
    encode_client(f, &mut out).unwrap();
    let body = take_frame(&mut out, 1 << 20).unwrap().unwrap();
    assert_eq!(&decode_client(&body).unwrap(), f);
}

#[test]
fn every_client_frame_round_trips() {
    let mut args = FieldTable::new();
    args.insert("x-message-ttl".into(), FieldValue::Int(1000));
    let frames = vec![
        ClientFrame::Hello(Hello {
            version: 1,
            user: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
            client: "t".into(),
            heartbeat_secs: Some(10),
            mechanism: None,
        }),
        publish(b"hello"),
        ClientFrame::Request(Request {
            id: 1,
            op: Op::DeclareQueue {
                name: "q".into(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                passive: false,
                arguments: args.clone(),
            },
        }),
        ClientFrame::Request(Request {
            id: 2,
            op: Op::Close,
        }),
        ClientFrame::Request(Request {
            id: 3,
            op: Op::Consume {
                queue: "q".into(),
                consumer_tag: "".into(),
                prefetch: 10,
                no_ack: false,
                exclusive: false,
                arguments: FieldTable::new(),
            },
        }),
        ClientFrame::Ack {
            tag: 5,
            multiple: true,
        },
        ClientFrame::Nack {
            tag: 5,
            multiple: false,
            requeue: true,
        },
        ClientFrame::Reject {
            tag: 1,
            requeue: false,
        },
        ClientFrame::Heartbeat,
    ];
    for f in &frames {
        round_trip_client(f);
    }
}

#[test]
fn every_server_frame_round_trips() {
    let props = Properties {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    let d = DeliverFrame {
        consumer_tag: "c".into(),
        delivery_tag: 9,
        redelivered: true,
        delivery_count: 2,
        exchange: "".into(),
        routing_key: "q".into(),
        properties: Some(PropertiesRef::Borrowed(&props)),
        body: b"body",
    };
    let frames = vec![
        ServerFrame::Welcome {
            version: 1,
            server: "actormq".into(),
            max_frame_size: 1024,
            heartbeat_secs: 60,
        },
        ServerFrame::Reply {
            id: 1,
            body: ReplyBody::QueueDeclared {
                name: "q".into(),
                messages: 3,
                consumers: 1,
            },
        },
        ServerFrame::Reply {
            id: 2,
            body: ReplyBody::GetOk {
                delivery: d.clone(),
                message_count: 4,
            },
        },
        ServerFrame::Reply {
            id: 3,
            body: ReplyBody::GetEmpty,
        },
        ServerFrame::Error {
            id: Some(4),
            code: ErrorCode::NotFound,
            message: "no queue 'q'".into(),
            fatal: false,
        },
        ServerFrame::Deliver(d),
        ServerFrame::Confirm {
            seq: 5,
            multiple: true,
        },
        ServerFrame::Nack {
            seq: 6,
            code: ErrorCode::NotFound,
            message: "m".into(),
        },
        ServerFrame::Return {
            seq: 7,
            code: 312,
            reason: "NO_ROUTE".into(),
            exchange: "x".into(),
            routing_key: "k".into(),
            properties: None,
            body: b"",
        },
        ServerFrame::Blocked {
            reason: "memory".into(),
        },
        ServerFrame::Unblocked,
        ServerFrame::ConsumerCancelled {
            consumer_tag: "c".into(),
            reason: "deleted".into(),
        },
        ServerFrame::Heartbeat,
    ];
    for f in &frames {
        let mut out = BytesMut::new();
        encode_server(f, &mut out).unwrap();
        let body = take_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(&decode_server(&body).unwrap(), f);
    }
}

#[test]
fn a_publish_has_these_exact_bytes() {
    let mut out = BytesMut::new();
    encode_client(&publish(b"hi"), &mut out).unwrap();
    // {"publish": [7, "x", "k", true, nil, bin "hi"]}
    let expected: &[u8] = &[
        0x00, 0x00, 0x00, 0x15, // length 21
        0x81, // map of 1
        0xa7, b'p', b'u', b'b', b'l', b'i', b's', b'h', // "publish"
        0x96, // array of 6
        0x07, // seq 7
        0xa1, b'x', // exchange
        0xa1, b'k', // routing key
        0xc3, // mandatory true
        0xc0, // properties nil
        0xc4, 0x02, b'h', b'i', // body bin8
    ];
    assert_eq!(&out[..], expected, "{:02x?}", &out[..]);
}

#[test]
fn truncation_at_every_byte_is_an_error_never_a_panic() {
    let mut out = BytesMut::new();
    encode_client(&publish(b"hello"), &mut out).unwrap();
    let body = &out[4..];
    for cut in 0..body.len() {
        assert!(decode_client(&body[..cut]).is_err(), "cut at {cut}");
    }
    let mut out = BytesMut::new();
    encode_client(
        &ClientFrame::Request(Request {
            id: 1,
            op: Op::Bind {
                exchange: "x".into(),
                queue: "q".into(),
                routing_key: "k".into(),
                arguments: FieldTable::new(),
            },
        }),
        &mut out,
    )
    .unwrap();
    let body = &out[4..];
    for cut in 0..body.len() {
        assert!(decode_client(&body[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn an_unknown_operation_is_told_apart_from_garbage() {
    // {"explode": []}
    let body = [0x81, 0xa7, b'e', b'x', b'p', b'l', b'o', b'd', b'e', 0x90];
    assert_eq!(
        decode_client(&body).unwrap_err().code,
        ErrorCode::UnknownOperation
    );
    assert_eq!(
        decode_client(&[0xc1]).unwrap_err().code,
        ErrorCode::BadFrame
    );
    assert_eq!(
        decode_client(&[0x01, 0x02]).unwrap_err().code,
        ErrorCode::BadFrame
    );
}

#[test]
fn the_id_of_a_request_with_an_unknown_operation_is_readable() {
    // {"request": [42, {"explode": []}]}
    let body = [
        0x81, 0xa7, b'r', b'e', b'q', b'u', b'e', b's', b't', 0x92, 42, 0x81, 0xa7, b'e', b'x',
        b'p', b'l', b'o', b'd', b'e', 0x90,
    ];
    assert_eq!(
        decode_client(&body).unwrap_err().code,
        ErrorCode::UnknownOperation
    );
    assert_eq!(request_id(&body), Some(42));
    assert_eq!(request_id(&[0xc0]), None);
}

#[test]
fn trailing_bytes_are_refused() {
    let mut out = BytesMut::new();
    encode_client(&ClientFrame::Heartbeat, &mut out).unwrap();
    let mut body = out[4..].to_vec();
    body.push(0x00);
    assert_eq!(decode_client(&body).unwrap_err().code, ErrorCode::BadFrame);
}

#[test]
fn publish_body_is_a_slice_of_the_frame() {
    let mut out = BytesMut::new();
    encode_client(&publish(b"zero-copy"), &mut out).unwrap();
    let frame = take_frame(&mut out, 1 << 20).unwrap().unwrap();
    let ClientFrame::Publish(p) = decode_client(&frame).unwrap() else {
        panic!("not a publish")
    };
    let b = body_bytes(&frame, p.body);
    assert_eq!(&b[..], b"zero-copy");
    let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    assert!(range.contains(&(b.as_ptr() as usize)));
}

/// A `declare_queue` request whose argument `"a"` is `arrays` arrays nested in one
/// another around the integer 1. Levels (section 4.2 of the spec): the outer map is 1,
/// `"request"` and its array 2, the id and the op map 3, `"declare_queue"` and its array
/// 4, the arguments map 5, the outermost array 6, so the integer sits at `arrays + 6`.
fn nested_declare(arrays: usize) -> (ClientFrame<'static>, Bytes) {
    let mut value = FieldValue::Int(1);
    for _ in 0..arrays {
        value = FieldValue::Array(vec![value]);
    }
    let frame = ClientFrame::Request(Request {
        id: 1,
        op: Op::DeclareQueue {
            name: "q".into(),
            durable: false,
            exclusive: false,
            auto_delete: false,
            passive: false,
            arguments: FieldTable::from([("a".to_string(), value)]),
        },
    });
    let mut out = BytesMut::new();
    encode_client(&frame, &mut out).unwrap();
    let body = take_frame(&mut out, 1 << 20).unwrap().unwrap();
    (frame, body)
}

#[test]
fn nesting_is_accepted_down_to_level_64_and_refused_at_65() {
    let (frame, body) = nested_declare(MAX_DEPTH - 6);
    assert_eq!(
        decode_client(&body).unwrap(),
        frame,
        "deepest value at level 64"
    );
    let (_, body) = nested_declare(MAX_DEPTH - 5);
    let err = decode_client(&body).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadFrame);
    assert_eq!(err.message, "MessagePack nested deeper than 64 levels");
    // An empty container is a value like any other: `[]` in place of the integer is
    // accepted at level 64 and refused at level 65.
    for (arrays, ok) in [(MAX_DEPTH - 6, true), (MAX_DEPTH - 5, false)] {
        let mut body = nested_declare(arrays).1.to_vec();
        assert_eq!(body.pop(), Some(0x01), "the integer is the last byte");
        body.push(0x90);
        assert_eq!(decode_client(&body).is_ok(), ok, "{arrays} arrays");
    }
}

/// The body of a publish frame whose headers hold `header`.
fn publish_with_header(header: FieldValue, body: &[u8]) -> Bytes {
    let mut headers = FieldTable::new();
    headers.insert("h".into(), header);
    let frame = ClientFrame::Publish(PublishFrame {
        seq: 1,
        exchange: "",
        routing_key: "q",
        mandatory: false,
        properties: Some(Box::new(Properties {
            headers: Some(headers),
            ..Default::default()
        })),
        body,
    });
    let mut out = BytesMut::new();
    encode_client(&frame, &mut out).unwrap();
    take_frame(&mut out, 1 << 30).unwrap().unwrap()
}

#[test]
fn a_frame_packed_with_tiny_values_is_refused_before_it_is_decoded() {
    // 1 MiB of nils: 1 byte each on the wire, a 40-byte slot each decoded.
    let nils = FieldValue::Array(vec![FieldValue::Void; 1 << 20]);
    let body = publish_with_header(nils, b"");
    let e = decode_client(&body).unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceError);
    assert!(e.message.contains("too many tiny values"), "{}", e.message);
    // The same in an empty nested table, as a request's arguments: refused too.
    let mut args = FieldTable::new();
    args.insert(
        "a".into(),
        FieldValue::Array(vec![FieldValue::Int(1); 1 << 18]),
    );
    let mut out = BytesMut::new();
    let declare = ClientFrame::Request(Request {
        id: 1,
        op: Op::DeclareQueue {
            name: "q".into(),
            durable: false,
            exclusive: false,
            auto_delete: false,
            passive: false,
            arguments: args,
        },
    });
    encode_client(&declare, &mut out).unwrap();
    let body = take_frame(&mut out, 1 << 30).unwrap().unwrap();
    assert_eq!(
        decode_client(&body).unwrap_err().code,
        ErrorCode::ResourceError
    );
    // A client trusts its broker: server frames have no budget.
    assert!(decode(
        &publish_with_header(FieldValue::Array(vec![FieldValue::Void; 1 << 16]), b""),
        None
    )
    .map(|_: ClientFrame<'_>| ())
    .is_ok());
}

#[test]
fn ordinary_frames_fit_the_budget() {
    // A large body decodes to a slice of the frame: far within the budget.
    let body = vec![7u8; 4 << 20];
    let frame = publish_with_header(FieldValue::Str("v".into()), &body);
    assert!(decode_client(&frame).is_ok());
    // A few thousand small headers (more than any real table) in a small frame.
    let mut t = FieldTable::new();
    for i in 0..1000 {
        t.insert(format!("key-{i}"), FieldValue::Str(format!("value-{i}")));
    }
    let frame = publish_with_header(FieldValue::Table(t), b"");
    assert!(decode_client(&frame).is_ok());
    // Strings of 32 bytes and up decode to under 4 times their size.
    let strings = FieldValue::Array(vec![FieldValue::Str("s".repeat(32)); 100_000]);
    let frame = publish_with_header(strings, b"");
    assert!(frame.len() > 3 << 20);
    assert!(decode_client(&frame).is_ok());
}

#[test]
fn the_walk_cost_bounds_what_the_headers_really_decode_to() {
    // Mixed, nested values: the decoded table's size (the accounting model) is what
    // the walk charged for it, give or take the frame's own few fields.
    let mut inner = FieldTable::new();
    inner.insert("n".into(), FieldValue::Array(vec![FieldValue::Void; 300]));
    inner.insert("s".into(), FieldValue::Str("x".repeat(70)));
    let frame = publish_with_header(FieldValue::Table(inner), b"body");
    let mut walk = Walk::default();
    walk.value(&frame, 1).unwrap();
    let ClientFrame::Publish(p) = decode_client(&frame).unwrap() else {
        panic!("a publish")
    };
    let headers = crate::message::size::table_size(p.properties.unwrap().headers.as_ref().unwrap());
    assert!(walk.cost.0 >= headers, "{} < {headers}", walk.cost.0);
    // The frame's own structures (the publish and properties field arrays) on top.
    assert!(walk.cost.0 < headers + 2048, "{} vs {headers}", walk.cost.0);
}

#[test]
fn the_seq_of_a_refused_publish_is_read_without_decoding_it() {
    let body = publish_with_header(FieldValue::Array(vec![FieldValue::Void; 1 << 20]), b"");
    assert!(decode_client(&body).is_err());
    assert_eq!(publish_seq(&body), Some(1));
    let mut out = BytesMut::new();
    encode_client(&ClientFrame::Heartbeat, &mut out).unwrap();
    let heartbeat = take_frame(&mut out, 1 << 20).unwrap().unwrap();
    assert_eq!(publish_seq(&heartbeat), None);
}

#[test]
fn a_hello_names_its_mechanism_only_when_it_has_one() {
    let plain = Hello {
        version: 1,
        user: "u".into(),
        password: "p".into(),
        vhost: "/".into(),
        client: "t".into(),
        heartbeat_secs: None,
        mechanism: None,
    };
    let mut out = BytesMut::new();
    encode_client(&ClientFrame::Hello(plain.clone()), &mut out).unwrap();
    let six = out.clone();
    let external = Hello {
        mechanism: Some("EXTERNAL".into()),
        ..plain.clone()
    };
    let mut out = BytesMut::new();
    encode_client(&ClientFrame::Hello(external.clone()), &mut out).unwrap();
    assert!(out.len() > six.len(), "the seventh element is sent");
    let frame = |b: &BytesMut| crate::protocol::frame::take_frame(&mut b.clone(), 1 << 20);
    let f = frame(&six).unwrap().unwrap();
    assert_eq!(decode_client(&f).unwrap(), ClientFrame::Hello(plain));
    let f = frame(&out).unwrap().unwrap();
    assert_eq!(decode_client(&f).unwrap(), ClientFrame::Hello(external));
}
