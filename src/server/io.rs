//! The socket halves of a connection, for both front ends (native and AMQP 0-9-1; each
//! brings its [`Framing`]): a reader task that cuts frames and hands them to the
//! connection actor one read at a time (waiting for the actor's go-ahead, which is how
//! backpressure reaches TCP), and a writer task with a byte-bounded queue that writes
//! whatever piled up in one syscall.
//!
//! actix's `FramedWrite` watermarks never trigger on tokio sockets (docs/ARCHITECTURE.md), so the
//! write side bounds itself: the bytes queued are counted in [`Flow`] and the reader does
//! not take more requests while they exceed `max_write_buffer`.
//!
//! Heartbeats live here too, not in the connection actor: a request pauses the actor
//! (it holds the frames after it), and heartbeats must go on whatever it waits for
//! (issue 16). Once the handshake has agreed the interval `H` ([`Flow::set_heartbeat`]),
//! the writer sends a heartbeat whenever it has written nothing for `H/2`, and the
//! reader closes the connection (after the framing's last word, e.g. the native fatal
//! `HEARTBEAT_TIMEOUT`, written through the writer) when a read has waited `2H` for a
//! byte. The reader only times reads it is actually
//! doing: while it is held back (backpressure) the client's heartbeats wait unread in
//! the socket, and their absence proves nothing.

use crate::broker::messages::Credit;
use crate::error::ErrorCode;
use crate::protocol::frame::{take_frame, FrameError};
use crate::protocol::wire::{encode_server, ServerFrame};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};

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
    /// Set when the writer task has ended (socket gone): nothing waits for room then.
    pub closed: std::sync::atomic::AtomicBool,
    /// The agreed heartbeat interval `H` (zero = off, the value until Hello sets it);
    /// the socket tasks watch it.
    heartbeat: watch::Sender<Duration>,
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
            closed: std::sync::atomic::AtomicBool::new(false),
            heartbeat: watch::channel(Duration::ZERO).0,
        }
    }

    /// Starts heartbeats with interval `h` in both socket tasks (zero = off).
    pub fn set_heartbeat(&self, h: Duration) {
        self.heartbeat.send_replace(h);
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
async fn write<W: AsyncWrite + Unpin>(half: &mut W, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_STALL, half.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Gathered bytes are written once they reach this many (or nothing more is queued).
const GATHER_BYTES: usize = 256 * 1024;

/// What the writer task receives.
pub enum Outgoing {
    /// Bytes to write, and the delivery credit to return once they are written.
    Data(Bytes, Vec<Credit>),
    /// Chunks to write in this order (frame heads and the bodies they announce, kept
    /// where they lie), and the credit to return once they are written.
    Parts(Vec<Bytes>, Vec<Credit>),
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

    /// Queues chunks to be written one after the other (by reference with `writev` on
    /// plain TCP: see [`spawn_writer`]), and credit released after they are written.
    pub fn send_parts(&self, parts: Vec<Bytes>, credits: Vec<Credit>) {
        let n: usize = parts.iter().map(Bytes::len).sum();
        self.flow.queued_bytes.fetch_add(n, Ordering::AcqRel);
        let _ = self.tx.send(Outgoing::Parts(parts, credits));
    }

    /// Flushes and closes the socket.
    pub fn close(&self) {
        let _ = self.tx.send(Outgoing::Close);
    }
}

/// A wire protocol's framing, as the socket tasks need it.
pub trait Framing: 'static {
    /// A frame cut from the stream.
    type Frame;
    /// Why the stream cannot be framed.
    type Error;
    /// Takes one frame off the front of `buf`: `Ok(None)` when more bytes are needed.
    fn take(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Frame>, Self::Error>;
    /// One encoded heartbeat frame.
    fn heartbeat(&self) -> Bytes;
    /// What to write to a peer silent for `limit` before closing, if anything.
    fn silent(&self, limit: Duration) -> Option<Bytes>;
}

/// The native protocol's framing (docs/PROTOCOL.md).
pub struct NativeFraming {
    /// Largest frame accepted.
    pub max_frame: usize,
}

impl Framing for NativeFraming {
    type Frame = Bytes;
    type Error = FrameError;

    fn take(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        take_frame(buf, self.max_frame)
    }

    fn heartbeat(&self) -> Bytes {
        let mut out = BytesMut::new();
        encode_server(&ServerFrame::Heartbeat, &mut out).expect("a heartbeat encodes");
        out.freeze()
    }

    fn silent(&self, limit: Duration) -> Option<Bytes> {
        let mut out = BytesMut::new();
        let frame = ServerFrame::Error {
            id: None,
            code: ErrorCode::HeartbeatTimeout,
            message: format!("missed heartbeats from the client for {limit:?}"),
            fatal: true,
        };
        encode_server(&frame, &mut out).ok()?;
        Some(out.freeze())
    }
}

/// Waits for the writer's next item; meanwhile, with heartbeats on, writes a heartbeat
/// after every `H/2` without anything to write. `None` when the channel closed or a
/// heartbeat could not be written.
async fn next_outgoing<W: AsyncWrite + Unpin>(
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    hb: &mut watch::Receiver<Duration>,
    half: &mut W,
    beat: &Bytes,
) -> Option<Outgoing> {
    loop {
        let idle = *hb.borrow_and_update() / 2;
        if idle.is_zero() {
            tokio::select! {
                item = rx.recv() => return item,
                _ = hb.changed() => continue,
            }
        }
        tokio::select! {
            item = rx.recv() => return item,
            _ = hb.changed() => continue,
            _ = tokio::time::sleep(idle) => {
                if !write(half, beat).await {
                    return None;
                }
            }
        }
    }
}

/// Tells the connection actor its writer task ended (the socket is gone or stalled).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct WriterGone;

/// Starts the native protocol's writer task on the current arbiter; `gone` hears when
/// it ends. `vectored` (plain TCP) writes the chunks queued as they are, with `writev`;
/// otherwise (TLS) small chunks are copied together first (see [`gather`]).
pub fn spawn_writer<W: AsyncWrite + Unpin + 'static>(
    half: W,
    flow: std::sync::Arc<Flow>,
    gone: actix::Recipient<WriterGone>,
    vectored: bool,
) -> WriterHandle {
    let beat = NativeFraming { max_frame: 0 }.heartbeat();
    spawn_writer_with(half, flow, beat, vectored, move || gone.do_send(WriterGone))
}

/// Starts a writer task on the current arbiter that writes `beat` as its heartbeat;
/// `gone` runs when it ends (socket gone or stalled). `vectored`: as for
/// [`spawn_writer`].
pub fn spawn_writer_with<W: AsyncWrite + Unpin + 'static>(
    mut half: W,
    flow: std::sync::Arc<Flow>,
    beat: Bytes,
    vectored: bool,
    gone: impl FnOnce() + 'static,
) -> WriterHandle {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let f2 = flow.clone();
    let mut hb = flow.heartbeat.subscribe();
    actix_rt::spawn(async move {
        let mut gather = gather::Gather::new(vectored);
        let mut credits: Vec<Credit> = Vec::new();
        while let Some(first) = next_outgoing(&mut rx, &mut hb, &mut half, &beat).await {
            let mut closing = false;
            let mut next = Some(first);
            // Gather whatever is queued into one write (one syscall per batch, or a
            // few `writev`s of many slices).
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Data(bytes, c) => {
                        gather.push(bytes);
                        credits.extend(c);
                    }
                    Outgoing::Parts(parts, c) => {
                        for p in parts {
                            gather.push(p);
                        }
                        credits.extend(c);
                    }
                    Outgoing::Close => closing = true,
                }
                if closing || gather.len() >= GATHER_BYTES {
                    break;
                }
                next = rx.try_recv().ok();
            }
            let n = gather.len();
            if !gather.write_to(&mut half, WRITE_STALL).await {
                break;
            }
            f2.queued_bytes.fetch_sub(n, Ordering::AcqRel);
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
        gone();
    });
    WriterHandle { tx, flow }
}

/// What the reader task reports to the connection actor.
pub enum Read<F, E> {
    /// Complete frames from one read.
    Frames(Vec<F>),
    /// The stream broke the framing (oversized or empty frame): fatal.
    Invalid(E),
    /// The peer closed (cleanly, or mid-frame with `partial` bytes pending).
    Eof {
        /// Bytes of an incomplete frame left unread.
        partial: usize,
    },
    /// A socket error.
    Failed(std::io::Error),
    /// Nothing came for this long (twice the heartbeat interval) while the reader was
    /// reading; the reader has already written the framing's last word
    /// ([`Framing::silent`]) and closed the writer.
    Silent(Duration),
}

/// What the native reader reports.
pub type ReadEvent = Read<Bytes, FrameError>;

/// Smallest and largest read buffer reservation.
pub(crate) const MIN_READ: usize = 8 * 1024;
/// A publisher that keeps reads full gets this much per read: the frames of one read
/// go to the exchange as one batch (up to 256 messages), so a larger read shares each
/// batch's hops (connection, exchange, queue, a stream's writer, the answer back) among
/// more messages. At 64 KiB a stream of 1 KiB publishes went in batches of about 60.
pub(crate) const MAX_READ: usize = 256 * 1024;

/// Reads one chunk of at most `max` bytes into `buf`; with heartbeats on, gives up
/// after `2H` without a byte (`Err(limit)`). Reads are cancel safe: a read cut short
/// by the timer or by a change of `H` has taken nothing.
async fn read_chunk<R: AsyncRead + Unpin>(
    half: &mut R,
    buf: &mut BytesMut,
    max: usize,
    hb: &mut watch::Receiver<Duration>,
) -> Result<std::io::Result<usize>, Duration> {
    use bytes::BufMut;
    loop {
        let limit = *hb.borrow_and_update() * 2;
        let mut into = (&mut *buf).limit(max);
        if limit.is_zero() {
            tokio::select! {
                n = half.read_buf(&mut into) => return Ok(n),
                _ = hb.changed() => continue,
            }
        }
        tokio::select! {
            n = half.read_buf(&mut into) => return Ok(n),
            _ = hb.changed() => continue,
            _ = tokio::time::sleep(limit) => return Err(limit),
        }
    }
}

/// Reads native frames off `half` and delivers them with `deliver`, which resolves when
/// the connection is ready for more (false = stop reading). A peer silent for twice the
/// heartbeat interval (set in `flow`) gets a fatal `HEARTBEAT_TIMEOUT` through
/// `writer`, then `deliver` hears [`Read::Silent`].
pub async fn read_loop<R, F, Fut>(
    half: R,
    max_frame: usize,
    flow: std::sync::Arc<Flow>,
    writer: WriterHandle,
    deliver: F,
) where
    R: AsyncRead + Unpin,
    F: FnMut(ReadEvent) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let framing = NativeFraming { max_frame };
    let buf = BytesMut::with_capacity(MIN_READ);
    read_frames(half, buf, framing, flow, writer, deliver).await
}

/// Reads frames off `half` with `framing` (after the bytes already in `buf`) and
/// delivers them with `deliver`, which resolves when the connection is ready for more
/// (false = stop reading). A peer silent for twice the heartbeat interval (set in
/// `flow`) gets [`Framing::silent`] through `writer`, then `deliver` hears
/// [`Read::Silent`].
pub async fn read_frames<R, C, F, Fut>(
    mut half: R,
    mut buf: BytesMut,
    mut framing: C,
    flow: std::sync::Arc<Flow>,
    writer: WriterHandle,
    mut deliver: F,
) where
    R: AsyncRead + Unpin,
    C: Framing,
    F: FnMut(Read<C::Frame, C::Error>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut hb = flow.heartbeat.subscribe();
    // The read buffer starts small and grows while reads fill it: a publisher soon
    // reads 256 KiB at a time (few syscalls, large batches), while a connection that
    // only consumes (acks, a few bytes each) keeps 8 KiB resident.
    let mut chunk = MIN_READ;
    loop {
        let mut frames = Vec::new();
        loop {
            let before = buf.len();
            match framing.take(&mut buf) {
                Ok(Some(f)) => {
                    frames.push(f);
                    // A frame longer than a read grew the buffer to its size (doubled
                    // as it came): the frames after it go to a buffer of their own, so
                    // that a body kept from them holds a read's worth (see
                    // `protocol::wire::kept_body`), not the large frame's buffer, and the
                    // connection does not keep that buffer once the frame is freed.
                    if before - buf.len() > MAX_READ {
                        buf = BytesMut::from(&buf[..]);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if !frames.is_empty() {
                        deliver(Read::Frames(frames)).await;
                    }
                    deliver(Read::Invalid(e)).await;
                    return;
                }
            }
        }
        if !frames.is_empty() && !deliver(Read::Frames(frames)).await {
            return;
        }
        if buf.capacity() - buf.len() < chunk / 8 {
            buf.reserve(chunk);
        }
        // At most `chunk` a read, whatever room a large frame left: the bytes after a
        // large frame are at most a read, moved out of its buffer above.
        let room = (buf.capacity() - buf.len()).min(chunk);
        let n = match read_chunk(&mut half, &mut buf, room, &mut hb).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                deliver(Read::Failed(e)).await;
                return;
            }
            Err(limit) => {
                tracing::warn!(
                    silent_ms = limit.as_millis() as u64,
                    "missed heartbeats: closing"
                );
                if let Some(last) = framing.silent(limit) {
                    writer.send(last, Vec::new());
                }
                writer.close();
                deliver(Read::Silent(limit)).await;
                return;
            }
        };
        if n == 0 {
            deliver(Read::Eof { partial: buf.len() }).await;
            return;
        }
        if n == room {
            chunk = (chunk * 2).min(MAX_READ);
        }
    }
}

mod gather;

#[cfg(test)]
mod tests;
