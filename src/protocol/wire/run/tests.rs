use super::*;
use crate::message::Message;
use crate::protocol::frame::take_frame;
use crate::protocol::{decode_server, decode_server_generic, ServerFrame};
use crate::storage::stream::codec;

/// The frames of records `first..first + n`, as a segment stores them.
fn records(first: u64, n: u64) -> Vec<u8> {
    let mut b = Vec::new();
    for o in first..first + n {
        let m = Message::new("ex", &format!("key-{o}"), format!("body {o}"))
            .with_header("x-stream-offset", o as i64);
        codec::encode(&mut b, o, 1_700_000_000_000 + o as i64, &m).unwrap();
    }
    b
}

fn split(run: &[u8], count: u32) -> (Vec<RunRecord<'_>>, Result<(), RunError>) {
    let mut got = Vec::new();
    let r = split_run(run, count, |rec| got.push(rec));
    (got, r)
}

#[test]
fn a_run_splits_into_its_records_in_order() {
    let run = records(40, 5);
    let (got, r) = split(&run, 5);
    r.unwrap();
    assert_eq!(got.len(), 5);
    for (i, rec) in got.iter().enumerate() {
        let o = 40 + i as u64;
        assert_eq!(rec.offset, o);
        assert_eq!(rec.timestamp, 1_700_000_000_000 + o as i64);
        assert_eq!(
            (&*rec.exchange, &*rec.routing_key),
            ("ex", &*format!("key-{o}"))
        );
        assert_eq!(rec.body, format!("body {o}").as_bytes());
        let h = rec.properties.headers.as_ref().unwrap();
        assert_eq!(h.get("x-stream-offset"), Some(&(o as i64).into()));
        // A slice of the run, not a copy.
        let inside = run.as_ptr_range();
        assert!(inside.contains(&rec.body.as_ptr()));
    }
}

#[test]
fn a_run_frame_round_trips_by_hand_and_generic_alike() {
    let run = records(7, 3);
    for tag in ["c", "", &"t".repeat(40), &"u".repeat(300)] {
        for first in [1u64, 200, 70_000, 1 << 40] {
            let mut out = BytesMut::new();
            encode_deliver_run_head(&mut out, tag, first, true, 2, 3, run.len());
            out.extend_from_slice(&run);
            let body = take_frame(&mut out, 1 << 20).unwrap().unwrap();
            assert!(out.is_empty(), "the length prefix counts the records");
            let want = DeliverRunFrame {
                consumer_tag: tag.into(),
                first_tag: first,
                redelivered: true,
                delivery_count: 2,
                count: 3,
                records: &run,
            };
            assert_eq!(decode_deliver_run(&body), Some(want.clone()));
            let ServerFrame::DeliverRun(g) = decode_server_generic(&body).unwrap() else {
                panic!("not a run");
            };
            assert_eq!(g, want);
            let ServerFrame::DeliverRun(h) = decode_server(&body).unwrap() else {
                panic!("not a run");
            };
            assert_eq!(h, want);
        }
    }
}

#[test]
fn a_corrupt_run_hands_over_the_records_before_the_damage_and_names_it() {
    let good = records(10, 4);
    // Record 2's body damaged: records 0 and 1 are handed over, then the error.
    let mut bad = good.clone();
    let at = bad.windows(7).position(|w| w == b"body 12").unwrap();
    bad[at + 6] ^= 0x01;
    let (got, r) = split(&bad, 4);
    let e = r.unwrap_err();
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [10, 11]);
    assert_eq!((e.index, e.count), (2, 4));
    assert!(e.to_string().contains("record 2 of a run of 4"), "{e}");
    assert!(e.reason.contains("fails its checksum"), "{e}");

    // Fewer records than the count says, and more.
    let (got, r) = split(&good, 5);
    assert_eq!(got.len(), 4);
    assert!(r.unwrap_err().reason.contains("runs past the run"));
    let (_, r) = split(&good, 3);
    let e = r.unwrap_err();
    assert!(e.reason.contains("bytes follow the last record"), "{e}");
    // A length running past the run.
    let (got, r) = split(&good[..good.len() - 1], 4);
    assert_eq!(got.len(), 3);
    assert!(r.unwrap_err().reason.contains("a frame of"));

    // Offsets that do not follow one another (each frame good on its own).
    let mut gap = records(10, 2);
    gap.extend_from_slice(&records(13, 1));
    let (got, r) = split(&gap, 3);
    assert_eq!(got.len(), 2);
    assert!(r.unwrap_err().reason.contains("has offset 13, not 12"));

    // A good checksum over a meta that is not three values.
    let mut b = Vec::new();
    crate::storage::disk::frame::encode_with(&mut b, |p| {
        p.extend_from_slice(&1u64.to_le_bytes());
        p.extend_from_slice(&0i64.to_le_bytes());
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(&[0x92, 0xc0]);
        Ok::<_, ()>(())
    })
    .unwrap();
    let (got, r) = split(&b, 1);
    assert!(got.is_empty());
    assert!(r.unwrap_err().reason.contains("not an exchange"));
}

#[test]
fn a_meta_in_other_marker_widths_goes_through_the_generic_decoder() {
    // delivery_mode as an int8 (0xd0): valid MessagePack the writer does not produce.
    let mut props = vec![0x9d, 0xc0, 0xc0, 0xc0, 0xd0, 2];
    props.extend_from_slice(&[0xc0; 9]);
    let meta = [&[0x93, 0xa2, b'e', b'x', 0xa1, b'k'][..], &props].concat();
    let mut b = Vec::new();
    crate::storage::disk::frame::encode_with(&mut b, |p| {
        p.extend_from_slice(&5u64.to_le_bytes());
        p.extend_from_slice(&0i64.to_le_bytes());
        p.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        p.extend_from_slice(&meta);
        p.extend_from_slice(b"hi");
        Ok::<_, ()>(())
    })
    .unwrap();
    let (got, r) = split(&b, 1);
    r.unwrap();
    assert_eq!((&*got[0].exchange, &*got[0].routing_key), ("ex", "k"));
    assert_eq!(got[0].body, b"hi");
    assert_eq!(got[0].properties.delivery_mode, Some(2));
}
