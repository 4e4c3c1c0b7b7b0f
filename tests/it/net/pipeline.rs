//! Pipelined requests (issue 16): frames sent in one write, every one answered. A
//! request holds the frames after it, so one that never finishes freezes its whole
//! connection: the cancel pipelined after `delete_queue` of its consumer's queue did.

use super::raw::{expect_fatal, hello, Got, Raw};
use crate::support::{TestServer, DEADLINE};
use actormq::protocol::wire::*;
use actormq::{ErrorCode, FieldTable};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

/// The operations that touch one queue or its consumer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Declare,
    Consume,
    Cancel,
    Delete,
    Purge,
    Get,
    Ack,
    Close,
}

const STEPS: [Step; 8] = [
    Step::Declare,
    Step::Consume,
    Step::Cancel,
    Step::Delete,
    Step::Purge,
    Step::Get,
    Step::Ack,
    Step::Close,
];

/// The frame of `step` on queue `q` with consumer `ctag`, as request `id`.
fn frame(step: Step, id: u64, q: &str, ctag: &str) -> ClientFrame<'static> {
    let op = match step {
        Step::Declare => Op::DeclareQueue {
            name: q.into(),
            durable: false,
            exclusive: false,
            auto_delete: false,
            passive: false,
            arguments: FieldTable::new(),
        },
        Step::Consume => Op::Consume {
            queue: q.into(),
            consumer_tag: ctag.into(),
            prefetch: 0,
            no_ack: false,
            exclusive: false,
            arguments: FieldTable::new(),
        },
        Step::Cancel => Op::Cancel {
            consumer_tag: ctag.into(),
        },
        Step::Delete => Op::DeleteQueue {
            name: q.into(),
            if_unused: false,
            if_empty: false,
        },
        Step::Purge => Op::PurgeQueue { name: q.into() },
        Step::Get => Op::Get {
            queue: q.into(),
            no_ack: false,
        },
        // Settles everything outstanding; never an error, even with nothing to ack.
        Step::Ack => {
            return ClientFrame::Ack {
                tag: 0,
                multiple: true,
            }
        }
        Step::Close => Op::Close,
    };
    ClientFrame::Request(Request { id, op })
}

/// Sends `frames` in one write; then reads until every request id in `expect` is
/// answered (a reply or an error naming it) and, after a close, the socket closes.
/// Panics (naming `case`) if anything is missing within the deadline.
async fn pipeline(r: &mut Raw, case: &str, frames: &[ClientFrame<'_>], mut expect: Vec<u64>) {
    let mut out = BytesMut::new();
    for f in frames {
        encode_client(f, &mut out).unwrap();
    }
    r.s.write_all(&out).await.unwrap();
    let closes = frames
        .iter()
        .any(|f| matches!(f, ClientFrame::Request(Request { op: Op::Close, .. })));
    let wait = async {
        while !expect.is_empty() {
            match r.recv().await {
                Got::Reply(id, _) | Got::GetOk { id, .. } | Got::GetEmpty(id) => {
                    assert_eq!(expect.remove(0), id, "{case}: replies come in order");
                }
                Got::Error {
                    id: Some(id),
                    fatal: false,
                    ..
                } => assert_eq!(expect.remove(0), id, "{case}: replies come in order"),
                Got::Deliver { .. } | Got::Heartbeat | Got::Other(_) => {}
                other => panic!("{case}: unexpected {other:?}, still waiting for {expect:?}"),
            }
        }
        if closes {
            loop {
                match r.recv().await {
                    Got::Closed => break,
                    Got::Deliver { .. } | Got::Heartbeat | Got::Other(_) => {}
                    other => panic!("{case}: {other:?} after the close reply"),
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("{case}: not every request was answered within {DEADLINE:?}"));
}

/// The ids of the requests among `steps` numbered from `first`, up to and including a
/// close (frames after a close are not processed).
fn answered(steps: &[Step], first: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if *s != Step::Ack {
            ids.push(first + i as u64);
        }
        if *s == Step::Close {
            break;
        }
    }
    ids
}

#[tokio::test]
async fn the_reported_cancel_after_delete_is_answered() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.declare("Q").await;
    let frames = [
        frame(Step::Consume, 501, "Q", "c2"),
        frame(Step::Delete, 502, "Q", "c2"),
        frame(Step::Cancel, 503, "Q", "c2"),
        frame(Step::Close, 504, "Q", "c2"),
    ];
    pipeline(&mut c, "issue 16 §1", &frames, vec![501, 502, 503, 504]).await;
}

#[tokio::test]
async fn the_connection_goes_on_after_cancel_after_delete() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    c.declare("Q2").await;
    let frames = [
        frame(Step::Consume, 1, "Q2", "c2"),
        frame(Step::Delete, 2, "Q2", "c2"),
        frame(Step::Cancel, 3, "Q2", "c2"),
    ];
    pipeline(&mut c, "cancel after delete", &frames, vec![1, 2, 3]).await;
    c.next_id = 10;
    c.declare("Q2").await;
    // Not confirmed: the publish reaches the queue through the exchange, on its own
    // path, so the get may come first. Ask until it is there.
    c.publish(0, "Q2", b"after").await;
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        match c
            .request(Op::Get {
                queue: "Q2".into(),
                no_ack: true,
            })
            .await
        {
            Got::GetOk { body, .. } => {
                assert_eq!(&body[..], b"after");
                break;
            }
            Got::GetEmpty(_) if std::time::Instant::now() < end => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Every ordered pair of steps, after two set-ups (a queue with messages; the same with
/// the consumer attached), in one write each, on a connection of its own.
#[tokio::test]
async fn every_pipelined_pair_on_one_queue_is_answered() {
    let srv = TestServer::start();
    let mut cases = Vec::new();
    for with_consumer in [false, true] {
        for a in STEPS {
            for b in STEPS {
                cases.push((with_consumer, a, b));
            }
        }
    }
    // A few connections at a time: every case must be answered, not merely most.
    for chunk in cases.chunks(16) {
        let mut tasks = Vec::new();
        for (n, &(with_consumer, a, b)) in chunk.iter().enumerate() {
            let addr = srv.addr;
            let q = format!("pp-{with_consumer}-{a:?}-{b:?}-{n}");
            tasks.push(tokio::spawn(async move {
                let case = format!("set-up consumer={with_consumer}, then {a:?} + {b:?}");
                let mut c = Raw::open(addr).await;
                let mut frames = vec![frame(Step::Declare, 1, &q, "c")];
                frames.push(ClientFrame::Publish(PublishFrame {
                    seq: 0,
                    exchange: "",
                    routing_key: &q,
                    mandatory: false,
                    properties: None,
                    body: b"m1",
                }));
                let mut steps = vec![Step::Declare];
                if with_consumer {
                    frames.push(frame(Step::Consume, 2, &q, "c"));
                    steps.push(Step::Consume);
                }
                let first = steps.len() as u64 + 1;
                frames.push(frame(a, first, &q, "c"));
                frames.push(frame(b, first + 1, &q, "c"));
                let mut expect = answered(&steps, 1);
                expect.extend(answered(&[a, b], first));
                pipeline(&mut c, &case, &frames, expect).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_bad_version_is_refused_before_the_password_is_checked() {
    let srv = TestServer::start();
    let mut c = Raw::connect(srv.addr).await;
    let mut h = hello("guest", "wrong password");
    if let ClientFrame::Hello(h) = &mut h {
        h.version = 2;
    }
    c.send(&h).await;
    let msg = expect_fatal(&mut c, ErrorCode::UnsupportedVersion).await;
    assert!(msg.contains("version 2"), "{msg}");
}

#[tokio::test]
async fn a_huge_user_name_is_clipped_in_the_error() {
    let srv = TestServer::start();
    let mut c = Raw::connect(srv.addr).await;
    let user = "u".repeat(1 << 20);
    c.send(&hello(&user, "pw")).await;
    let msg = expect_fatal(&mut c, ErrorCode::AccessRefused).await;
    assert!(msg.len() < 1024, "{} bytes echoed", msg.len());
    assert!(msg.contains("(1048576 bytes)"), "notes the length: {msg}");
}

#[tokio::test]
async fn a_huge_queue_name_is_clipped_in_the_error() {
    let srv = TestServer::start();
    let mut c = Raw::open(srv.addr).await;
    let name = "q".repeat(1 << 20);
    match c
        .request(Op::Get {
            queue: name,
            no_ack: true,
        })
        .await
    {
        Got::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::NotFound);
            assert!(message.len() < 1024, "{} bytes echoed", message.len());
            assert!(message.contains("(1048576 bytes)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_idle_connection_gets_heartbeats_while_it_sends_some() {
    let srv = TestServer::with(|s| s.server.heartbeat_secs = 1);
    let mut c = Raw::open(srv.addr).await;
    for _ in 0..3 {
        let got = c.recv().await;
        assert!(matches!(got, Got::Heartbeat), "{got:?}");
        c.send(&ClientFrame::Heartbeat).await;
    }
    c.declare("still-open").await;
}
