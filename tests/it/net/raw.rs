//! The native protocol spoken with raw bytes: good frames, and every kind of bad input.
//! Bad input closes only the offending connection (or fails only the request); other
//! connections and queued messages carry on.

use crate::support::{eventually, TestServer, DEADLINE};
use actormq::protocol::frame::take_frame;
use actormq::protocol::wire::*;
use actormq::{ErrorCode, FieldTable};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A hand-driven protocol client.
pub(super) struct Raw {
    pub(super) s: TcpStream,
    pub(super) buf: BytesMut,
    pub(super) next_id: u64,
}

pub(super) fn hello(user: &str, password: &str) -> ClientFrame<'static> {
    ClientFrame::Hello(Hello {
        version: 1,
        user: user.into(),
        password: password.into(),
        vhost: "/".into(),
        client: "raw-test".into(),
        heartbeat_secs: None,
        mechanism: None,
    })
}

pub(super) fn encode(f: &ClientFrame<'_>) -> BytesMut {
    let mut out = BytesMut::new();
    encode_client(f, &mut out).unwrap();
    out
}

/// An owned view of the server frames the tests look at.
#[allow(dead_code)] // fields are read through Debug in failure messages
#[derive(Debug)]
pub(super) enum Got {
    Welcome,
    Reply(u64, String),
    Error {
        id: Option<u64>,
        code: ErrorCode,
        message: String,
        fatal: bool,
    },
    Deliver {
        tag: u64,
        body: Bytes,
        redelivered: bool,
    },
    GetOk {
        id: u64,
        tag: u64,
        body: Bytes,
    },
    GetEmpty(u64),
    Confirm(u64),
    Nack(u64, ErrorCode),
    Return(u64),
    Blocked,
    Unblocked,
    Heartbeat,
    Other(String),
    Closed,
}

impl Raw {
    pub(super) async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    pub(super) async fn open(addr: SocketAddr) -> Raw {
        let mut r = Raw::connect(addr).await;
        r.send(&hello("guest", "guest")).await;
        assert!(matches!(r.recv().await, Got::Welcome));
        r
    }

    pub(super) async fn send(&mut self, f: &ClientFrame<'_>) {
        self.s.write_all(&encode(f)).await.unwrap();
    }

    pub(super) async fn send_bytes(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b).await;
    }

    pub(super) async fn request(&mut self, op: Op) -> Got {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&ClientFrame::Request(Request { id, op })).await;
        loop {
            match self.recv().await {
                Got::Reply(rid, body) if rid == id => return Got::Reply(rid, body),
                g @ Got::GetOk { id: rid, .. } if rid == id => return g,
                g @ Got::GetEmpty(rid) if rid == id => return g,
                // Confirms of earlier publishes may come first.
                Got::Confirm(_) => continue,
                e @ Got::Error { id: Some(rid), .. } if rid == id => return e,
                Got::Heartbeat | Got::Blocked | Got::Unblocked => continue,
                other => panic!("unexpected {other:?} while waiting for reply {id}"),
            }
        }
    }

    pub(super) async fn recv(&mut self) -> Got {
        let read = async {
            loop {
                if let Some(f) = take_frame(&mut self.buf, 64 << 20).unwrap() {
                    return Some(f);
                }
                if self.s.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        };
        let Some(frame) = tokio::time::timeout(DEADLINE, read)
            .await
            .expect("a frame within the deadline")
        else {
            return Got::Closed;
        };
        match decode_server(&frame).unwrap() {
            ServerFrame::Welcome { .. } => Got::Welcome,
            ServerFrame::Reply { id, body } => match body {
                ReplyBody::GetOk { delivery, .. } => Got::GetOk {
                    id,
                    tag: delivery.delivery_tag,
                    body: body_bytes(&frame, delivery.body),
                },
                ReplyBody::GetEmpty => Got::GetEmpty(id),
                other => Got::Reply(id, format!("{other:?}")),
            },
            ServerFrame::Error {
                id,
                code,
                message,
                fatal,
            } => Got::Error {
                id,
                code,
                message,
                fatal,
            },
            ServerFrame::Deliver(d) => Got::Deliver {
                tag: d.delivery_tag,
                body: body_bytes(&frame, d.body),
                redelivered: d.redelivered,
            },
            ServerFrame::Confirm { seq, .. } => Got::Confirm(seq),
            ServerFrame::Nack { seq, code, .. } => Got::Nack(seq, code),
            ServerFrame::Return { seq, .. } => Got::Return(seq),
            ServerFrame::Blocked { .. } => Got::Blocked,
            ServerFrame::Unblocked => Got::Unblocked,
            ServerFrame::Heartbeat => Got::Heartbeat,
            other => Got::Other(format!("{other:?}")),
        }
    }

    pub(super) async fn declare(&mut self, q: &str) {
        let r = self
            .request(Op::DeclareQueue {
                name: q.into(),
                durable: false,
                exclusive: false,
                auto_delete: false,
                passive: false,
                arguments: FieldTable::new(),
            })
            .await;
        assert!(matches!(r, Got::Reply(..)), "{r:?}");
    }

    pub(super) async fn publish(&mut self, seq: u64, rk: &str, body: &[u8]) {
        self.send(&publish_frame(seq, "", rk, body)).await;
    }

    pub(super) async fn count(&mut self, q: &str) -> u64 {
        match self
            .request(Op::DeclareQueue {
                name: q.into(),
                durable: false,
                exclusive: false,
                auto_delete: false,
                passive: true,
                arguments: FieldTable::new(),
            })
            .await
        {
            Got::Reply(_, body) => {
                let start = body.find("messages: ").unwrap() + 10;
                body[start..]
                    .split(',')
                    .next()
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            }
            other => panic!("{other:?}"),
        }
    }
}

pub(super) fn publish_frame<'a>(
    seq: u64,
    x: &'a str,
    rk: &'a str,
    body: &'a [u8],
) -> ClientFrame<'a> {
    ClientFrame::Publish(PublishFrame {
        seq,
        exchange: x,
        routing_key: rk,
        mandatory: false,
        properties: None,
        body,
    })
}

pub(super) async fn expect_fatal(r: &mut Raw, code: ErrorCode) -> String {
    loop {
        match r.recv().await {
            Got::Error {
                code: c,
                fatal: true,
                message,
                ..
            } => {
                assert_eq!(c, code, "{message}");
                assert!(
                    matches!(r.recv().await, Got::Closed),
                    "closed after a fatal error"
                );
                return message;
            }
            Got::Heartbeat => continue,
            other => panic!("expected a fatal {code}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn publish_confirm_and_get_over_raw_frames() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.declare("raw-q").await;
    c.publish(1, "raw-q", b"one").await;
    c.publish(2, "raw-q", b"two").await;
    let mut confirmed = 0;
    while confirmed < 2 {
        match c.recv().await {
            Got::Confirm(seq) => confirmed = seq,
            other => panic!("{other:?}"),
        }
    }
    match c
        .request(Op::Get {
            queue: "raw-q".into(),
            no_ack: true,
        })
        .await
    {
        Got::GetOk { body, .. } => assert_eq!(&body[..], b"one"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.count("raw-q").await, 1);
}

#[tokio::test]
async fn wrong_credentials_get_access_refused_and_nothing_else() {
    let srv = TestServer::start();
    for (user, pw) in [("guest", "wrong"), ("nobody", "guest")] {
        let mut c = Raw::connect(srv.addr).await;
        c.send(&hello(user, pw)).await;
        let msg = expect_fatal(&mut c, ErrorCode::AccessRefused).await;
        assert!(
            !msg.contains("password"),
            "does not say which check failed: {msg}"
        );
    }
}

#[tokio::test]
async fn a_frame_before_hello_is_refused() {
    let srv = TestServer::start();
    let mut c = Raw::connect(srv.addr).await;
    c.send(&ClientFrame::Heartbeat).await;
    expect_fatal(&mut c, ErrorCode::BadFrame).await;
}

#[tokio::test]
async fn an_unsupported_version_is_refused() {
    let srv = TestServer::start();
    let mut c = Raw::connect(srv.addr).await;
    let mut h = hello("guest", "guest");
    if let ClientFrame::Hello(h) = &mut h {
        h.version = 99;
    }
    c.send(&h).await;
    expect_fatal(&mut c, ErrorCode::UnsupportedVersion).await;
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    let srv = TestServer::with(|s| s.server.max_frame_size = 64 * 1024);
    let mut good = Raw::open(srv.addr).await;
    good.declare("keep").await;
    good.publish(0, "keep", b"kept").await;
    let mut bad = Raw::open(srv.addr).await;
    bad.send_bytes(&(1u32 << 20).to_be_bytes()).await;
    let msg = expect_fatal(&mut bad, ErrorCode::FrameTooLarge).await;
    assert!(msg.contains("65536"), "names the limit: {msg}");
    assert_eq!(good.count("keep").await, 1);
    good.publish(0, "keep", b"still").await;
    eventually("the good connection still publishes", || {
        let addr = srv.addr;
        async move { Raw::open(addr).await.count("keep").await == 2 }
    })
    .await;
}

#[tokio::test]
async fn garbage_gets_bad_frame() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.send_bytes(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await;
    expect_fatal(&mut c, ErrorCode::BadFrame).await;
    let mut c = Raw::connect(srv.addr).await;
    c.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // "GET " read as a length is far above the maximum frame size.
    expect_fatal(&mut c, ErrorCode::FrameTooLarge).await;
}

#[tokio::test]
async fn an_unknown_operation_fails_without_closing() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    // {"explode": []}
    let body = [0x81, 0xa7, b'e', b'x', b'p', b'l', b'o', b'd', b'e', 0x90];
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    c.send_bytes(&f).await;
    match c.recv().await {
        Got::Error { code, fatal, .. } => {
            assert_eq!(code, ErrorCode::UnknownOperation);
            assert!(!fatal);
        }
        other => panic!("{other:?}"),
    }
    c.declare("after-unknown").await;
}

#[tokio::test]
async fn a_wrong_delivery_tag_fails_only_that_ack() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.declare("tags").await;
    c.publish(0, "tags", b"m").await;
    let tag = match c
        .request(Op::Get {
            queue: "tags".into(),
            no_ack: false,
        })
        .await
    {
        Got::GetOk { tag, .. } => tag,
        other => panic!("{other:?}"),
    };
    c.send(&ClientFrame::Ack {
        tag: tag + 100,
        multiple: false,
    })
    .await;
    match c.recv().await {
        Got::Error {
            code,
            fatal,
            message,
            ..
        } => {
            assert_eq!(code, ErrorCode::PreconditionFailed);
            assert!(!fatal);
            assert!(message.contains(&format!("{}", tag + 100)), "{message}");
        }
        other => panic!("{other:?}"),
    }
    c.send(&ClientFrame::Ack {
        tag,
        multiple: false,
    })
    .await;
    eventually("the right tag acks", || {
        let addr = srv.addr;
        async move {
            let mut o = Raw::open(addr).await;
            o.count("tags").await == 0
        }
    })
    .await;
}

#[tokio::test]
async fn truncation_at_every_byte_loses_nothing_and_keeps_the_broker_up() {
    let srv = TestServer::start();
    let mut setup = Raw::open(srv.addr).await;
    setup.declare("trunc").await;
    let frame = encode(&publish_frame(0, "", "trunc", b"partial-message"));
    for cut in 1..frame.len() {
        let mut c = Raw::open(srv.addr).await;
        c.send_bytes(&frame[..cut]).await;
        drop(c); // disconnect mid-frame
    }
    // A complete frame still works, and no partial frame became a message.
    let mut c = Raw::open(srv.addr).await;
    c.publish(1, "trunc", b"whole").await;
    assert!(matches!(c.recv().await, Got::Confirm(1)));
    assert_eq!(c.count("trunc").await, 1);
}
