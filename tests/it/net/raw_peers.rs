//! The native protocol over raw bytes, as clients come and go: vanished clients and
//! readers, missed heartbeats, memory alarms, shutdown, many connections at once.

use super::raw::*;
use crate::support::{eventually, TestServer};
use actormq::protocol::wire::*;
use actormq::{ErrorCode, FieldTable};

#[tokio::test]
async fn unacked_deliveries_of_a_vanished_client_are_requeued_as_redelivered() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.declare("vanish").await;
    for i in 0..3u8 {
        c.publish(0, "vanish", &[b'a' + i]).await;
    }
    let r = c
        .request(Op::Consume {
            queue: "vanish".into(),
            consumer_tag: "".into(),
            prefetch: 10,
            no_ack: false,
            exclusive: false,
            arguments: FieldTable::new(),
        })
        .await;
    assert!(matches!(r, Got::Reply(..)), "{r:?}");
    for _ in 0..3 {
        assert!(matches!(c.recv().await, Got::Deliver { .. }));
    }
    drop(c);
    let mut o = Raw::open(srv.addr).await;
    eventually("requeued", || {
        let addr = srv.addr;
        async move { Raw::open(addr).await.count("vanish").await == 3 }
    })
    .await;
    for expect in [b"a", b"b", b"c"] {
        match o
            .request(Op::Get {
                queue: "vanish".into(),
                no_ack: true,
            })
            .await
        {
            Got::GetOk { body, .. } => assert_eq!(&body[..], expect),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_nacked_not_fatal() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.send(&publish_frame(1, "no-such-x", "k", b"m")).await;
    match c.recv().await {
        Got::Nack(1, code) => assert_eq!(code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    c.declare("still-open").await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_missed_heartbeats() {
    let srv = TestServer::with(|s| s.server.heartbeat_secs = 1);
    let mut c = Raw::connect(srv.addr).await;
    c.send(&hello("guest", "guest")).await;
    assert!(matches!(c.recv().await, Got::Welcome));
    c.declare("hb").await;
    c.publish(0, "hb", b"m").await;
    match c
        .request(Op::Get {
            queue: "hb".into(),
            no_ack: false,
        })
        .await
    {
        Got::GetOk { .. } => {}
        other => panic!("{other:?}"),
    }
    // Say nothing more: the server gives up and requeues the unacked message.
    expect_fatal(&mut c, ErrorCode::HeartbeatTimeout).await;
    eventually("requeued after the heartbeat timeout", || {
        let addr = srv.addr;
        async move { Raw::open(addr).await.count("hb").await == 1 }
    })
    .await;
}

#[tokio::test]
async fn publishers_are_told_when_memory_blocks_them() {
    let srv = TestServer::with(|s| s.broker.memory_high_watermark = 64 * 1024);
    let mut c = Raw::open(srv.addr).await;
    c.declare("fill").await;
    let body = vec![7u8; 4096];
    // 32 × 4 KiB = 128 KiB, twice the watermark.
    for _ in 0..32 {
        c.publish(0, "fill", &body).await;
    }
    loop {
        match c.recv().await {
            Got::Blocked => break,
            Got::Heartbeat => continue,
            other => panic!("{other:?}"),
        }
    }
    let mut drain = Raw::open(srv.addr).await;
    drain
        .request(Op::PurgeQueue {
            name: "fill".into(),
        })
        .await;
    loop {
        match c.recv().await {
            Got::Unblocked => break,
            Got::Blocked | Got::Heartbeat => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_tells_connected_clients() {
    let mut srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    let handle = srv.handle.take().unwrap();
    let stopper = std::thread::spawn(move || handle.shutdown());
    expect_fatal(&mut c, ErrorCode::ConnectionForced).await;
    stopper.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_each_publish_and_get() {
    let srv = TestServer::start();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::open(addr).await;
            let q = format!("conn-{i}");
            c.declare(&q).await;
            c.publish(1, &q, q.as_bytes()).await;
            assert!(matches!(c.recv().await, Got::Confirm(1)));
            match c
                .request(Op::Get {
                    queue: q.clone(),
                    no_ack: true,
                })
                .await
            {
                Got::GetOk { body, .. } => assert_eq!(&body[..], q.as_bytes()),
                other => panic!("{other:?}"),
            }
            c
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    assert_eq!(srv.handle().connections(), 200);
}

/// Regression: acks that followed a request in the same socket read were held until
/// the connection's next read (a prefetch-1 consumer stalled).
#[tokio::test]
async fn acks_after_a_request_in_one_read_take_effect_at_once() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.declare("after-req").await;
    c.publish(0, "after-req", b"1").await;
    c.publish(0, "after-req", b"2").await;
    let r = c
        .request(Op::Consume {
            queue: "after-req".into(),
            consumer_tag: "".into(),
            prefetch: 1,
            no_ack: false,
            exclusive: false,
            arguments: FieldTable::new(),
        })
        .await;
    assert!(matches!(r, Got::Reply(..)), "{r:?}");
    let tag = match c.recv().await {
        Got::Deliver { tag, .. } => tag,
        other => panic!("{other:?}"),
    };
    // One write: a request, then the ack. Nothing else is sent afterwards.
    let mut bytes = encode(&ClientFrame::Request(Request {
        id: 99,
        op: Op::DeclareQueue {
            name: "after-req".into(),
            durable: false,
            exclusive: false,
            auto_delete: false,
            passive: true,
            arguments: FieldTable::new(),
        },
    }));
    bytes.extend_from_slice(&encode(&ClientFrame::Ack {
        tag,
        multiple: false,
    }));
    c.send_bytes(&bytes).await;
    let mut got_second = false;
    for _ in 0..3 {
        match c.recv().await {
            Got::Deliver { body, .. } => {
                assert_eq!(&body[..], b"2");
                got_second = true;
                break;
            }
            Got::Reply(..) | Got::Heartbeat => continue,
            other => panic!("{other:?}"),
        }
    }
    assert!(got_second, "the ack freed the prefetch slot");
}

/// Regression: a confirmed publish with someone else's user_id closed the connection
/// ("seq does not increase") instead of being nacked.
#[tokio::test]
async fn a_foreign_user_id_is_nacked_and_the_connection_stays() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.declare("uid").await;
    let props = actormq::Properties {
        user_id: Some("mallory".into()),
        ..Default::default()
    };
    c.send(&ClientFrame::Publish(PublishFrame {
        seq: 1,
        exchange: "",
        routing_key: "uid",
        mandatory: false,
        properties: Some(Box::new(props)),
        body: b"x",
    }))
    .await;
    match c.recv().await {
        Got::Nack(1, code) => assert_eq!(code, ErrorCode::PreconditionFailed),
        other => panic!("{other:?}"),
    }
    c.publish(2, "uid", b"ok").await;
    assert!(matches!(c.recv().await, Got::Confirm(2)));
    assert_eq!(c.count("uid").await, 1);
}

/// Regression: a consumer that stopped reading and then vanished while the broker had
/// more than max_write_buffer queued for it left a connection that never closed, its
/// deliveries never requeued.
#[tokio::test]
async fn a_vanished_reader_with_a_full_write_buffer_is_cleaned_up() {
    let srv = TestServer::with(|s| s.server.max_write_buffer = 64 * 1024);
    let mut p = Raw::open(srv.addr).await;
    p.declare("big").await;
    let body = vec![1u8; 256 * 1024];
    for seq in 1..=20 {
        p.publish(seq, "big", &body).await;
    }
    let mut confirmed = 0;
    while confirmed < 20 {
        match p.recv().await {
            Got::Confirm(seq) => confirmed = seq,
            other => panic!("{other:?}"),
        }
    }
    let mut c = Raw::open(srv.addr).await;
    let r = c
        .request(Op::Consume {
            queue: "big".into(),
            consumer_tag: "".into(),
            prefetch: 0,
            no_ack: false,
            exclusive: false,
            arguments: FieldTable::new(),
        })
        .await;
    assert!(matches!(r, Got::Reply(..)), "{r:?}");
    // Never read another byte; send one frame so the broker's reader waits for room.
    c.send(&ClientFrame::Heartbeat).await;
    drop(c);
    eventually("the consumer is gone and its deliveries are back", || {
        let addr = srv.addr;
        async move {
            let mut o = Raw::open(addr).await;
            o.count("big").await == 20
        }
    })
    .await;
}
