//! The socket halves of a connection: a reader task that cuts frames and hands them to
//! the connection actor one read at a time (waiting for the actor's go-ahead, which is
//! how backpressure reaches TCP), and a writer task with a byte-bounded queue.
//!
//! actix's `FramedWrite` watermarks never trigger on tokio sockets (docs/ARCHITECTURE.md), so the
//! write side bounds itself: the bytes queued are counted in [`Flow`] and the reader does
//! not take more requests while they exceed `max_write_buffer`.

use crate::broker::messages::Credit;
use crate::protocol::frame::{take_frame, FrameError};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Notify};

/// Shared counters between the connection actor and its socket tasks.
#[derive(Debug)]
pub struct Flow {
    /// Publish batches sent to exchanges and not yet answered.
    pub inflight: AtomicUsize,
    /// The publish window.
    pub window: usize,
    /// Bytes handed to the writer and not yet written.
    pub queued_bytes: AtomicUsize,
    /// Above this many queued bytes, stop reading requests.
    pub max_queued: usize,
    /// Woken when `inflight` or `queued_bytes` fall.
    pub notify: Notify,
    /// True while the reader waits for room (heartbeat checks are suspended).
    pub paused: std::sync::atomic::AtomicBool,
    /// Set when the writer task has ended (socket gone): nothing waits for room then.
    pub closed: std::sync::atomic::AtomicBool,
}

impl Flow {
    /// New counters.
    pub fn new(window: usize, max_queued: usize) -> Self {
        Flow {
            inflight: AtomicUsize::new(0),
            window,
            queued_bytes: AtomicUsize::new(0),
            max_queued,
            notify: Notify::new(),
            paused: std::sync::atomic::AtomicBool::new(false),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn has_room(&self) -> bool {
        self.inflight.load(Ordering::Acquire) < self.window
            && self.queued_bytes.load(Ordering::Acquire) <= self.max_queued
    }

    /// Waits until another read may be processed; false once the writer is gone (the
    /// connection is closing and nothing will make room).
    pub async fn ready(&self) -> bool {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.has_room() {
                return true;
            }
            notified.await;
        }
    }

    /// A publish batch was answered.
    pub fn batch_done(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// A write that makes no progress for this long means the peer stopped reading: the
/// connection is dropped rather than held open forever.
const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes all of `bytes`; false on error or stall.
async fn write(half: &mut OwnedWriteHalf, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_STALL, half.write_all(bytes)).await,
        Ok(Ok(()))
    )
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
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Outgoing>,
    flow: std::sync::Arc<Flow>,
}

impl WriterHandle {
    /// Queues bytes (and credit released after they are written).
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

/// Tells the connection actor its writer task ended (the socket is gone or stalled).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct WriterGone;

/// Starts the writer task on the current arbiter; `gone` hears when it ends.
pub fn spawn_writer(
    mut half: OwnedWriteHalf,
    flow: std::sync::Arc<Flow>,
    gone: actix::Recipient<WriterGone>,
) -> WriterHandle {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let f2 = flow.clone();
    actix_rt::spawn(async move {
        let mut batch = BytesMut::new();
        let mut credits: Vec<Credit> = Vec::new();
        'outer: while let Some(first) = rx.recv().await {
            let mut closing = false;
            let mut next = Some(first);
            // Gather whatever is queued into one write (one syscall per batch).
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Data(bytes, c) => {
                        if batch.is_empty() && bytes.len() >= 64 * 1024 {
                            // Large chunk: write it as it is, no copy.
                            let n = bytes.len();
                            if !write(&mut half, &bytes).await {
                                break 'outer;
                            }
                            f2.queued_bytes.fetch_sub(n, Ordering::AcqRel);
                        } else {
                            batch.extend_from_slice(&bytes);
                        }
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
                    break;
                }
                batch.clear();
                f2.queued_bytes.fetch_sub(n, Ordering::AcqRel);
            }
            // Written: the consumers may have more.
            credits.clear();
            f2.notify.notify_waiters();
            if closing {
                let _ = tokio::time::timeout(WRITE_STALL, half.shutdown()).await;
                break;
            }
        }
        // Socket gone: whatever is still queued is dropped with its credit; the
        // connection actor requeues the unacked deliveries when it stops. Wake the
        // reader (it must not wait for room that will never come) and the actor.
        rx.close();
        f2.closed.store(true, Ordering::Release);
        f2.notify.notify_waiters();
        gone.do_send(WriterGone);
    });
    WriterHandle { tx, flow }
}

/// What the reader task reports to the connection actor.
pub enum ReadEvent {
    /// Complete frames from one read.
    Frames(Vec<Bytes>),
    /// The stream broke the framing (oversized or empty frame): fatal.
    Invalid(FrameError),
    /// The peer closed (cleanly, or mid-frame with `partial` bytes pending).
    Eof {
        /// Bytes of an incomplete frame left unread.
        partial: usize,
    },
    /// A socket error.
    Failed(std::io::Error),
}

/// Smallest and largest read buffer reservation.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Reads frames off `half` and delivers them with `deliver`, which resolves when the
/// connection is ready for more (false = stop reading).
pub async fn read_loop<F, Fut>(mut half: OwnedReadHalf, max_frame: usize, mut deliver: F)
where
    F: FnMut(ReadEvent) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // The read buffer starts small and grows while reads fill it: a publisher soon
    // reads 64 KiB at a time (few syscalls), while a connection that only consumes
    // (acks, a few bytes each) keeps 8 KiB instead of 64 resident.
    let mut chunk = MIN_READ;
    let mut buf = BytesMut::with_capacity(chunk);
    loop {
        if buf.capacity() - buf.len() < chunk / 8 {
            buf.reserve(chunk);
        }
        let room = buf.capacity() - buf.len();
        let n = match half.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                deliver(ReadEvent::Failed(e)).await;
                return;
            }
        };
        if n == 0 {
            deliver(ReadEvent::Eof { partial: buf.len() }).await;
            return;
        }
        if n == room {
            chunk = (chunk * 2).min(MAX_READ);
        }
        let mut frames = Vec::new();
        loop {
            match take_frame(&mut buf, max_frame) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    if !frames.is_empty() {
                        deliver(ReadEvent::Frames(frames)).await;
                    }
                    deliver(ReadEvent::Invalid(e)).await;
                    return;
                }
            }
        }
        if !frames.is_empty() && !deliver(ReadEvent::Frames(frames)).await {
            return;
        }
    }
}
