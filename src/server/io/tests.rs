//! The socket tasks on in-memory pipes: heartbeats are theirs alone, so these run with
//! no connection actor at all (which is the point: nothing the actor waits for can
//! stop them).

use super::*;
use crate::protocol::wire::decode_server;
use actix::prelude::*;
use std::sync::Arc;
use tokio::io::DuplexStream;

/// Stands in for the connection actor: counts `WriterGone`.
struct Sink;

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<WriterGone> for Sink {
    type Result = ();
    fn handle(&mut self, _: WriterGone, _: &mut Self::Context) {}
}

fn flow() -> Arc<Flow> {
    Arc::new(Flow::new(16, 1 << 20))
}

/// Reads one server frame off `peer` (generous deadline).
async fn next_frame(peer: &mut DuplexStream, buf: &mut BytesMut) -> Option<Bytes> {
    let read = async {
        loop {
            if let Some(f) = take_frame(buf, 1 << 20).unwrap() {
                return Some(f);
            }
            if peer.read_buf(buf).await.ok()? == 0 {
                return None;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("a frame within the deadline")
}

#[actix_rt::test]
async fn an_idle_writer_sends_heartbeats_once_the_interval_is_set() {
    let (ours, mut peer) = tokio::io::duplex(4096);
    let flow = flow();
    let writer = spawn_writer(ours, flow.clone(), Sink.start().recipient(), false);
    writer.send(Bytes::from_static(b"\0\0\0\x01\xc0"), Vec::new());
    let mut buf = BytesMut::new();
    assert_eq!(&next_frame(&mut peer, &mut buf).await.unwrap()[..], b"\xc0");
    // No interval yet: nothing more. Then H = 1 s: heartbeats with no data at all.
    flow.set_heartbeat(Duration::from_secs(1));
    for _ in 0..2 {
        let f = next_frame(&mut peer, &mut buf).await.unwrap();
        assert!(matches!(decode_server(&f).unwrap(), ServerFrame::Heartbeat));
    }
}

#[actix_rt::test]
async fn a_silent_peer_gets_heartbeat_timeout_from_the_reader() {
    let (ours, mut peer) = tokio::io::duplex(4096);
    let (rd, wr) = tokio::io::split(ours);
    let flow = flow();
    flow.set_heartbeat(Duration::from_secs(1));
    let writer = spawn_writer(wr, flow.clone(), Sink.start().recipient(), true);
    let (tx, mut events) = mpsc::unbounded_channel();
    actix_rt::spawn(read_loop(rd, 1 << 20, flow, writer, move |ev| {
        let _ = tx.send(ev);
        async { true }
    }));
    let mut buf = BytesMut::new();
    let fatal = loop {
        let f = next_frame(&mut peer, &mut buf).await.expect("a frame");
        match decode_server(&f).unwrap() {
            ServerFrame::Heartbeat => continue,
            ServerFrame::Error {
                code,
                fatal,
                message,
                ..
            } => break (code, fatal, message),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(fatal.0, ErrorCode::HeartbeatTimeout);
    assert!(fatal.1, "fatal");
    assert!(fatal.2.contains("2s"), "{}", fatal.2);
    assert!(next_frame(&mut peer, &mut buf).await.is_none(), "closed");
    assert!(matches!(events.recv().await, Some(ReadEvent::Silent(_))));
}

#[actix_rt::test]
async fn bytes_from_the_peer_keep_the_reader_going() {
    let (ours, mut peer) = tokio::io::duplex(4096);
    let (rd, wr) = tokio::io::split(ours);
    let flow = flow();
    let writer = spawn_writer(wr, flow.clone(), Sink.start().recipient(), true);
    let (tx, mut events) = mpsc::unbounded_channel();
    actix_rt::spawn(read_loop(rd, 1 << 20, flow.clone(), writer, move |ev| {
        let _ = tx.send(ev);
        async { true }
    }));
    flow.set_heartbeat(Duration::from_secs(1));
    // A heartbeat frame ("heartbeat" as a MessagePack string).
    let mut hb = BytesMut::new();
    crate::protocol::wire::encode_client(&crate::protocol::wire::ClientFrame::Heartbeat, &mut hb)
        .unwrap();
    for _ in 0..3 {
        peer.write_all(&hb).await.unwrap();
        match events.recv().await {
            Some(ReadEvent::Frames(f)) => assert_eq!(f.len(), 1),
            _ => panic!("expected the frame"),
        }
    }
}

/// A publisher that keeps the socket full is read 256 KiB at a time once the buffer
/// has grown, so one read's frames (one publish batch) hold about 250 frames of 1 KiB,
/// not the 60 or so of a 64 KiB read.
#[actix_rt::test]
async fn a_full_socket_is_read_in_large_chunks() {
    const FRAMES: usize = 2_000;
    let (ours, mut peer) = tokio::io::duplex(4 << 20);
    let (rd, wr) = tokio::io::split(ours);
    let flow = flow();
    let writer = spawn_writer(wr, flow.clone(), Sink.start().recipient(), true);
    // Every frame is in the pipe before the reader starts: each read can be full.
    let mut all = BytesMut::new();
    for i in 0..FRAMES {
        all.extend_from_slice(&1020u32.to_be_bytes());
        all.extend_from_slice(&[(i % 251) as u8; 1020]);
    }
    peer.write_all(&all).await.unwrap();
    let (tx, mut events) = mpsc::unbounded_channel();
    actix_rt::spawn(read_loop(rd, 1 << 20, flow, writer, move |ev| {
        let _ = tx.send(ev);
        async { true }
    }));
    let (mut seen, mut largest) = (0, 0);
    while seen < FRAMES {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("frames within the deadline");
        match ev {
            Some(ReadEvent::Frames(f)) => {
                seen += f.len();
                largest = largest.max(f.len());
            }
            _ => panic!("expected frames"),
        }
    }
    assert_eq!(seen, FRAMES);
    assert!(largest >= 250, "largest read held {largest} frames");
}
