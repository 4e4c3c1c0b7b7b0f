//! Tests of the AMQP frame codec: frames cut and read in place agree with amq-protocol's parser and encoder; oversized and badly ended frames are errors.

use super::*;
use amq_protocol::protocol::queue;

fn declare() -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: "q".into(),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: Default::default(),
    }))
}

#[test]
fn a_method_round_trips_and_truncation_asks_for_more() {
    let mut enc = Encoder::default();
    let mut out = BytesMut::new();
    enc.method(&mut out, 3, declare());
    let whole = out.clone();
    for cut in 0..whole.len() {
        let mut b = BytesMut::from(&whole[..cut]);
        assert!(matches!(take_frame(&mut b, 131_072), Ok(None)), "cut {cut}");
    }
    match take_frame(&mut out, 131_072) {
        Ok(Some(Incoming::Method(3, m))) => assert_eq!(*m, declare()),
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty());
}

#[test]
fn publish_and_ack_read_in_place_are_what_the_crate_reads() {
    use amq_protocol::protocol::basic;
    let mut enc = Encoder::default();
    let p = basic::Publish {
        exchange: "ex.ç".into(),
        routing_key: "k".repeat(255).as_str().into(),
        mandatory: true,
        immediate: false,
    };
    let a = basic::Ack {
        delivery_tag: u64::MAX - 3,
        multiple: true,
    };
    let mut out = BytesMut::new();
    enc.method(
        &mut out,
        2,
        AMQPClass::Basic(basic::AMQPMethod::Publish(p.clone())),
    );
    enc.method(
        &mut out,
        3,
        AMQPClass::Basic(basic::AMQPMethod::Ack(a.clone())),
    );
    match take_frame(&mut out, 131_072) {
        Ok(Some(Incoming::Publish(2, got))) => assert_eq!(got, p),
        other => panic!("{other:?}"),
    }
    match take_frame(&mut out, 131_072) {
        Ok(Some(Incoming::Ack(3, tag, multiple))) => {
            assert_eq!((tag, multiple), (a.delivery_tag, a.multiple))
        }
        other => panic!("{other:?}"),
    }
    // Broken ones are 502 SYNTAX_ERROR, as the crate's parser makes them.
    for payload in [
        &[0u8, 60, 0, 40, 0, 0, 5, b'x'][..],     // exchange cut short
        &[0, 60, 0, 40, 0, 0, 1, 0xff, 0, 0][..], // not UTF-8
        &[0, 60, 0, 40, 0, 0, 0, 0, 0, 9][..],    // trailing byte
        &[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1][..], // ack without its bits
    ] {
        let mut f = BytesMut::new();
        f.put_u8(1);
        f.put_u16(1);
        f.put_u32(payload.len() as u32);
        f.extend_from_slice(payload);
        f.put_u8(0xCE);
        assert_eq!(take_frame(&mut f, 4096).unwrap_err().reply_code(), 502);
    }
}

#[test]
fn a_content_header_without_properties_allocates_none() {
    let mut enc = Encoder::default();
    let mut out = BytesMut::new();
    enc.content(&mut out, 1, AMQPProperties::default(), b"", 4096);
    let props = AMQPProperties::default().with_delivery_mode(2);
    enc.content(&mut out, 1, props.clone(), b"", 4096);
    match take_frame(&mut out, 4096) {
        Ok(Some(Incoming::Header(1, h))) => {
            assert_eq!((h.class_id, h.body_size, h.properties), (60, 0, None))
        }
        other => panic!("{other:?}"),
    }
    match take_frame(&mut out, 4096) {
        Ok(Some(Incoming::Header(1, h))) => assert_eq!(h.properties(), props),
        other => panic!("{other:?}"),
    }
}

#[test]
fn content_is_split_by_frame_max_and_read_back() {
    let mut enc = Encoder::default();
    let mut out = BytesMut::new();
    let body = vec![7u8; 10_000];
    enc.content(&mut out, 1, AMQPProperties::default(), &body, 4096);
    let mut got = Vec::new();
    let mut header = None;
    while let Some(f) = take_frame(&mut out, 4096).unwrap() {
        match f {
            Incoming::Header(1, h) => header = Some(h.body_size),
            Incoming::Body(1, b) => {
                assert!(b.len() + FRAME_OVERHEAD <= 4096);
                got.extend_from_slice(&b);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(header, Some(10_000));
    assert_eq!(got, body);
}

#[test]
fn a_hand_written_delivery_is_what_the_crate_writes() {
    use amq_protocol::protocol::basic;
    let mut enc = Encoder::default();
    let body = vec![5u8; 9000];
    let long_key = "k".repeat(300);
    let props = AMQPProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2);
    for (props, key) in [(None, "rk"), (Some(props), long_key.as_str())] {
        let mut fast = BytesMut::new();
        let head = DeliverHead {
            consumer_tag: "ctag-1",
            delivery_tag: 42,
            redelivered: true,
            exchange: "x",
            routing_key: key,
        };
        enc.deliver(&mut fast, 7, &head, props.as_ref(), &body, 4096);
        let mut slow = BytesMut::new();
        enc.method(
            &mut slow,
            7,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag-1".into(),
                delivery_tag: 42,
                redelivered: true,
                exchange: "x".into(),
                routing_key: key[..key.len().min(255)].into(),
            })),
        );
        enc.content(&mut slow, 7, props.unwrap_or_default(), &body, 4096);
        assert_eq!(fast, slow);
    }
}

/// A `connection.start-ok` whose client properties nest `depth` arrays.
fn deep_start_ok(depth: usize) -> BytesMut {
    let mut v = b"V".to_vec();
    for _ in 0..depth {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(v.len() as u32).to_be_bytes());
        outer.extend(v);
        v = outer;
    }
    let mut args = vec![];
    args.extend_from_slice(&(v.len() as u32 + 2).to_be_bytes());
    args.extend_from_slice(&[1, b'k']);
    args.extend(v);
    args.extend_from_slice(b"\x05PLAIN\0\0\0\x0c\0guest\0guest\x05en_US");
    let mut f = vec![1, 0, 0];
    f.extend_from_slice(&(args.len() as u32 + 4).to_be_bytes());
    f.extend_from_slice(&[0, 10, 0, 11]);
    f.extend(args);
    f.push(0xCE);
    BytesMut::from(&f[..])
}

#[test]
fn deeply_nested_tables_are_refused_before_parsing() {
    // 500 levels overflowed the stack of the parsing thread (the broker aborted).
    let e = take_frame(&mut deep_start_ok(500), 131_072).unwrap_err();
    assert_eq!(e.reply_code(), 502, "{e}");
    // Moderate nesting still parses.
    let f = take_frame(&mut deep_start_ok(20), 131_072).unwrap();
    assert!(matches!(f, Some(Incoming::Method(0, _))), "{f:?}");
}

/// A body frame of `payload` bytes on channel 1.
fn body_frame(payload: usize) -> BytesMut {
    let mut f = BytesMut::new();
    f.put_u8(3);
    f.put_u16(1);
    f.put_u32(payload as u32);
    f.extend_from_slice(&vec![7u8; payload]);
    f.put_u8(0xCE);
    f
}

#[test]
fn a_body_frame_that_counts_frame_max_without_its_overhead_is_taken_as_rabbitmq_takes_it() {
    let mut f = body_frame(4096);
    match take_frame(&mut f, 4096) {
        Ok(Some(Incoming::Body(1, b))) => assert_eq!(b.len(), 4096),
        other => panic!("{other:?}"),
    }
    let mut f = body_frame(4097);
    assert_eq!(take_frame(&mut f, 4096).unwrap_err().reply_code(), 501);
}

#[test]
fn oversized_and_badly_ended_frames_are_frame_errors() {
    let mut enc = Encoder::default();
    let mut out = BytesMut::new();
    enc.content(
        &mut out,
        1,
        AMQPProperties::default(),
        &[1u8; 5000],
        131_072,
    );
    let _ = take_frame(&mut out, 131_072).unwrap();
    let e = take_frame(&mut out, 4096).unwrap_err();
    assert_eq!(e.reply_code(), 501);
    let mut hb = BytesMut::new();
    enc.heartbeat(&mut hb);
    assert_eq!(&hb[..], &[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    hb[7] = 0;
    assert_eq!(
        take_frame(&mut hb, 4096).unwrap_err(),
        CodecError::BadEnd(0)
    );
}
