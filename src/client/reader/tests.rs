//! The reader's dispatch of one read's frames, without a socket: deliveries gathered
//! per consumer keep the wire's order, among themselves and with the other frames.

use super::*;
use crate::client::ConnectOptions;
use crate::protocol::{decode_client, encode_server, DeliverFrame};
use std::borrow::Cow;

fn shared() -> Arc<Shared> {
    let server = super::super::ServerInfo {
        version: 1,
        server: "test".into(),
        max_frame_size: 1 << 20,
        heartbeat_secs: 0,
    };
    Arc::new(Shared::new(server, &ConnectOptions::new("127.0.0.1:1")))
}

/// Registers consumer `tag` and answers its stream's receiving end.
fn consumer(shared: &Shared, tag: &str) -> mpsc::UnboundedReceiver<ConsumerEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let slot = ConsumerSlot {
        tag: Arc::from(tag),
        tx,
        no_ack: false,
    };
    shared.lock().consumers.insert(tag.into(), slot);
    rx
}

fn put(buf: &mut BytesMut, f: &ServerFrame<'_>) {
    encode_server(f, buf).unwrap();
}

fn deliver(buf: &mut BytesMut, tag: &str, delivery_tag: u64) {
    let body = delivery_tag.to_be_bytes();
    put(
        buf,
        &ServerFrame::Deliver(DeliverFrame {
            consumer_tag: Cow::Borrowed(tag),
            delivery_tag,
            redelivered: false,
            delivery_count: 1,
            exchange: Cow::Borrowed(""),
            routing_key: Cow::Borrowed("q"),
            properties: None,
            body: &body,
        }),
    );
}

/// The delivery tags of the next event, which must be deliveries.
fn tags(rx: &mut mpsc::UnboundedReceiver<ConsumerEvent>) -> Vec<u64> {
    match rx.try_recv() {
        Ok(ConsumerEvent::Deliveries(v)) => v.iter().map(|d| d.delivery_tag).collect(),
        Ok(_) => panic!("another event than deliveries"),
        Err(e) => panic!("no event: {e}"),
    }
}

#[test]
fn one_reads_deliveries_reach_each_consumer_in_wire_order_before_its_cancel_notice() {
    let shared = shared();
    let (mut a, mut b) = (consumer(&shared, "a"), consumer(&shared, "b"));
    let mut buf = BytesMut::new();
    for t in 1..=3 {
        deliver(&mut buf, "a", t);
    }
    deliver(&mut buf, "b", 4);
    deliver(&mut buf, "a", 5);
    put(&mut buf, &ServerFrame::Heartbeat);
    deliver(&mut buf, "a", 6);
    deliver(&mut buf, "a", 7);
    put(
        &mut buf,
        &ServerFrame::ConsumerCancelled {
            consumer_tag: "a".into(),
            reason: "queue deleted".into(),
        },
    );
    deliver(&mut buf, "b", 8);
    drain(&shared, &mut buf, 1 << 20).unwrap();
    assert!(buf.is_empty());
    assert_eq!(tags(&mut a), [1, 2, 3]);
    assert_eq!(tags(&mut a), [5]);
    assert_eq!(tags(&mut a), [6, 7]);
    assert!(matches!(a.try_recv(), Ok(ConsumerEvent::Cancelled(r)) if r == "queue deleted"));
    assert!(a.try_recv().is_err(), "nothing after the notice");
    assert_eq!(tags(&mut b), [4]);
    assert_eq!(tags(&mut b), [8]);
    // Each delivery's body is its own slice of the read.
    let mut buf = BytesMut::new();
    deliver(&mut buf, "b", 9);
    drain(&shared, &mut buf, 1 << 20).unwrap();
    let Ok(ConsumerEvent::Deliveries(v)) = b.try_recv() else {
        panic!("deliveries")
    };
    assert_eq!(&v[0].body[..], 9u64.to_be_bytes());
}

#[test]
fn deliveries_for_a_dropped_stream_are_rejected_back_to_the_queue() {
    let shared = shared();
    drop(consumer(&shared, "gone"));
    let mut buf = BytesMut::new();
    for t in [3, 4, 5] {
        deliver(&mut buf, "gone", t);
    }
    drain(&shared, &mut buf, 1 << 20).unwrap();
    let mut out = std::mem::take(&mut shared.lock().out);
    let mut rejected = Vec::new();
    while let Some(f) = take_frame(&mut out, 1 << 20).unwrap() {
        match decode_client(&f).unwrap() {
            ClientFrame::Reject { tag, requeue } => {
                assert!(requeue);
                rejected.push(tag);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rejected, [3, 4, 5]);
}
