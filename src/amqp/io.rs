//! The socket halves of an AMQP connection, with the heartbeats in them (an actor
//! interval would stop while the actor waits): the reader checks the protocol header,
//! cuts frames, and reports a peer silent for two heartbeat intervals; the writer writes
//! what the actor queued, bounded in bytes through [`Flow`], and sends a heartbeat when
//! it has written nothing for half an interval.

use super::codec::{take_frame, CodecError, Incoming, PROTOCOL_HEADER};
use crate::broker::messages::Credit;
use crate::server::io::Flow;
use crate::server::stream::{ServerReadHalf as OwnedReadHalf, ServerWriteHalf as OwnedWriteHalf};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Values negotiated in `connection.tune-ok`, read by the socket tasks.
#[derive(Debug)]
pub struct Tuned {
    /// Largest frame, overhead included.
    pub frame_max: AtomicUsize,
    /// Heartbeat interval in seconds; 0 = off.
    pub heartbeat_secs: AtomicU64,
}

impl Tuned {
    /// Before the tune: `frame_max` as offered, no heartbeats.
    pub fn new(frame_max: usize) -> Self {
        Tuned {
            frame_max: AtomicUsize::new(frame_max),
            heartbeat_secs: AtomicU64::new(0),
        }
    }

    fn heartbeat(&self) -> Option<Duration> {
        match self.heartbeat_secs.load(Ordering::Acquire) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }
}

/// What the reader reports to the connection actor.
pub enum AmqpRead {
    /// The 8-byte protocol header: right (true) or not.
    Header(bool),
    /// Complete frames from one read.
    Frames(Vec<Incoming>),
    /// The stream broke the framing: close with the error's code.
    Invalid(CodecError),
    /// Nothing arrived for two heartbeat intervals.
    Silent(Duration),
    /// The peer closed the socket.
    Eof,
    /// A socket error.
    Failed(std::io::Error),
}

const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Reads the protocol header, then frames, handing each read's frames to `deliver`,
/// which resolves when the connection is ready for more (false = stop).
pub async fn read_loop<F, Fut>(mut half: OwnedReadHalf, tuned: Arc<Tuned>, mut deliver: F)
where
    F: FnMut(AmqpRead) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut buf = BytesMut::with_capacity(MIN_READ);
    while buf.len() < PROTOCOL_HEADER.len() {
        match half.read_buf(&mut buf).await {
            Ok(0) => {
                deliver(AmqpRead::Eof).await;
                return;
            }
            Ok(_) => {
                // A wrong header is refused as soon as it cannot become the right one.
                let n = buf.len().min(PROTOCOL_HEADER.len());
                if buf[..n] != PROTOCOL_HEADER[..n] {
                    deliver(AmqpRead::Header(false)).await;
                    return;
                }
            }
            Err(e) => {
                deliver(AmqpRead::Failed(e)).await;
                return;
            }
        }
    }
    let _ = buf.split_to(PROTOCOL_HEADER.len());
    if !deliver(AmqpRead::Header(true)).await {
        return;
    }
    let mut chunk = MIN_READ;
    loop {
        let mut frames = Vec::new();
        let frame_max = tuned.frame_max.load(Ordering::Acquire);
        loop {
            match take_frame(&mut buf, frame_max) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    if !frames.is_empty() {
                        deliver(AmqpRead::Frames(frames)).await;
                    }
                    deliver(AmqpRead::Invalid(e)).await;
                    return;
                }
            }
        }
        if !frames.is_empty() && !deliver(AmqpRead::Frames(frames)).await {
            return;
        }
        if buf.capacity() - buf.len() < chunk / 8 {
            buf.reserve(chunk);
        }
        let room = buf.capacity() - buf.len();
        let read = half.read_buf(&mut buf);
        // Only time spent waiting on the socket counts as silence; time the actor holds
        // the reader back (backpressure) does not.
        let n = match tuned.heartbeat() {
            Some(hb) => match tokio::time::timeout(hb * 2, read).await {
                Ok(r) => r,
                Err(_) => {
                    deliver(AmqpRead::Silent(hb * 2)).await;
                    return;
                }
            },
            None => read.await,
        };
        match n {
            Ok(0) => {
                deliver(AmqpRead::Eof).await;
                return;
            }
            Ok(n) => {
                if n == room {
                    chunk = (chunk * 2).min(MAX_READ);
                }
            }
            Err(e) => {
                deliver(AmqpRead::Failed(e)).await;
                return;
            }
        }
    }
}

/// What the writer task receives.
pub enum Outgoing {
    /// Bytes to write, and the delivery credit to return once they are written.
    Data(Bytes, Vec<Credit>),
    /// Write everything queued, then close the socket.
    Close,
}

/// Sends to the writer task, counting queued bytes.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Outgoing>,
    flow: Arc<Flow>,
}

impl Writer {
    /// Queues bytes (and credit released once they are written).
    pub fn send(&self, bytes: Bytes, credits: Vec<Credit>) {
        self.flow
            .queued_bytes
            .fetch_add(bytes.len(), Ordering::AcqRel);
        // Unbounded channel, bounded in bytes by `Flow` (the reader stops) and in
        // deliveries by consumer credit.
        let _ = self.tx.send(Outgoing::Data(bytes, credits));
    }

    /// Flushes and closes the socket.
    pub fn close(&self) {
        let _ = self.tx.send(Outgoing::Close);
    }
}

/// A write that makes no progress for this long means the peer stopped reading.
const WRITE_STALL: Duration = Duration::from_secs(30);

async fn write(half: &mut OwnedWriteHalf, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_STALL, half.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Starts the writer task; `gone` runs when it ends (socket gone or stalled).
pub fn spawn_writer(
    mut half: OwnedWriteHalf,
    flow: Arc<Flow>,
    tuned: Arc<Tuned>,
    heartbeat_frame: Bytes,
    gone: impl FnOnce() + 'static,
) -> Writer {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let f2 = flow.clone();
    actix_rt::spawn(async move {
        let mut batch = BytesMut::new();
        let mut last_write = Instant::now();
        'outer: loop {
            let first = match tuned.heartbeat() {
                Some(hb) => {
                    let due = last_write + hb / 2;
                    tokio::select! {
                        item = rx.recv() => item,
                        _ = tokio::time::sleep_until(due) => {
                            if !write(&mut half, &heartbeat_frame).await {
                                break;
                            }
                            last_write = Instant::now();
                            continue;
                        }
                    }
                }
                None => rx.recv().await,
            };
            let Some(first) = first else { break };
            let mut closing = false;
            let mut credits: Vec<Credit> = Vec::new();
            let mut next = Some(first);
            // Gather whatever is queued into one write.
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Data(bytes, c) => {
                        batch.extend_from_slice(&bytes);
                        credits.extend(c);
                    }
                    Outgoing::Close => closing = true,
                }
                if closing || batch.len() >= 256 * 1024 {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !batch.is_empty() {
                let n = batch.len();
                if !write(&mut half, &batch).await {
                    break 'outer;
                }
                batch.clear();
                f2.queued_bytes.fetch_sub(n, Ordering::AcqRel);
                last_write = Instant::now();
            }
            // Written: the consumers may have more.
            drop(credits);
            f2.notify.notify_waiters();
            if closing {
                let _ = tokio::time::timeout(WRITE_STALL, half.shutdown()).await;
                break;
            }
        }
        rx.close();
        f2.closed.store(true, Ordering::Release);
        f2.notify.notify_waiters();
        gone();
    });
    Writer { tx, flow }
}
