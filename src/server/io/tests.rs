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

/// A peer whose bytes come in the reads scripted (each read takes at most one piece,
/// then nothing more comes).
struct Script(std::collections::VecDeque<Vec<u8>>);

impl AsyncRead for Script {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let Some(piece) = self.0.front_mut() else {
            return std::task::Poll::Pending;
        };
        let n = piece.len().min(buf.remaining());
        buf.put_slice(&piece[..n]);
        piece.drain(..n);
        if piece.is_empty() {
            self.0.pop_front();
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// The frames read after one longer than a read are not cut from the large frame's
/// buffer: a body kept from them (a slice, `protocol::wire::kept_body`) must not hold
/// that buffer, grown to the large frame's size and more, once the large one is freed.
/// The large frame's last bytes come in a read of their own with the small frames, as
/// from a publisher that sent them in turn: the buffer, nearly full, grew for that
/// read (to twice the large frame), and that read took the small frames into it.
#[actix_rt::test]
async fn frames_after_a_large_frame_do_not_share_its_buffer() {
    const LARGE: usize = 3 << 20;
    const SMALL: usize = 64 * 1024;
    let (ours, _peer) = tokio::io::duplex(4096);
    let flow = flow();
    let writer = spawn_writer(ours, flow.clone(), Sink.start().recipient(), true);
    let mut large = (LARGE as u32).to_be_bytes().to_vec();
    large.extend_from_slice(&vec![b'L'; LARGE]);
    let mut rest = large.split_off(large.len() - 100);
    for i in 0..8u8 {
        rest.extend_from_slice(&(SMALL as u32).to_be_bytes());
        rest.extend_from_slice(&[i; SMALL]);
    }
    let script = Script([large, rest].into());
    let (tx, mut events) = mpsc::unbounded_channel();
    actix_rt::spawn(read_loop(script, 8 << 20, flow, writer, move |ev| {
        let _ = tx.send(ev);
        async { true }
    }));
    let mut frames = Vec::new();
    while frames.len() < 9 {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("frames within the deadline");
        match ev {
            Some(ReadEvent::Frames(f)) => frames.extend(f),
            _ => panic!("expected frames"),
        }
    }
    assert_eq!(frames[0].len(), LARGE);
    assert!(frames[0].iter().all(|b| *b == b'L'));
    for (i, f) in frames[1..].iter().enumerate() {
        assert_eq!(&f[..], &[i as u8; SMALL][..], "small frame {i} whole");
    }
    // Every other frame is alive, and the reader still reads: none shares the large
    // frame's buffer, and neither does the reader's.
    assert!(
        frames[0].is_unique(),
        "the large frame's buffer is shared with the frames after it"
    );
}
