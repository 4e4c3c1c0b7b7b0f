//! One connection: the state shared by the application's handles and the two socket
//! tasks, the handshake, and the writer task. The reader task lives in `reader.rs`.
//!
//! Frames are encoded straight into one shared output buffer (the "outbox"), under the
//! same lock that assigns request ids and publish sequence numbers, so the wire order
//! is the order of those numbers. The writer task swaps the whole outbox out and writes
//! it with one `write_all`: however many publishes were queued meanwhile, they leave in
//! one syscall.

use super::error::ClientError;
use super::options::ConnectOptions;
use super::publish::ConfirmTracker;
use super::reader::Reply;
use super::tls::ClientStream;
use super::Delivery;
use crate::error::ErrorCode;
use crate::protocol::{
    decode_server, encode_client, frame::take_frame, ClientFrame, Hello, Op, Request, ServerFrame,
    LENGTH_PREFIX, PROTOCOL_VERSION,
};
use bytes::BytesMut;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The writing half of the socket.
type OwnedWriteHalf = crate::server::stream::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>;
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};

/// What the broker said about itself in its Welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The protocol version it speaks.
    pub version: u16,
    /// Its name and version.
    pub server: String,
    /// The largest frame it accepts (and so the largest message).
    pub max_frame_size: u32,
    /// The agreed heartbeat interval in seconds, 0 = off.
    pub heartbeat_secs: u16,
}

/// What the reader does, besides answering, when a request's reply arrives. Done by the
/// reader so that it happens before the next frame is handled (a consumer must be known
/// before its first delivery is read).
pub(crate) enum OnReply {
    /// Nothing more.
    Nothing,
    /// A consume: route deliveries for the tag in the reply to `tx`.
    RegisterConsumer {
        /// The consumer's channel.
        tx: mpsc::UnboundedSender<ConsumerEvent>,
        /// Whether its deliveries need settling.
        no_ack: bool,
    },
    /// A cancel: stop routing deliveries for this tag (its stream ends).
    RemoveConsumer(String),
    /// A get: whether the delivery needs settling.
    Get {
        /// Asked without ack.
        no_ack: bool,
    },
    /// A close: shut the socket once the outbox is written.
    Close,
}

/// A request awaiting its reply.
pub(crate) struct PendingRequest {
    /// Where the reply goes (dropped receivers are fine: a detached request).
    pub(crate) tx: oneshot::Sender<Result<Reply, ClientError>>,
    /// The reader's part of handling the reply.
    pub(crate) on_reply: OnReply,
}

/// What a consumer's stream receives.
pub(crate) enum ConsumerEvent {
    /// Messages, in wire order: those of one socket read that came for this consumer
    /// one after another (one send and one wake-up for them all).
    Deliveries(Vec<Delivery>),
    /// The broker cancelled the consumer, for this reason.
    Cancelled(String),
    /// The connection failed.
    Failed(ClientError),
}

/// A consumer known to the reader.
pub(crate) struct ConsumerSlot {
    /// The consumer's tag, shared by its deliveries.
    pub(crate) tag: Arc<str>,
    /// Its stream's channel; unbounded because prefetch bounds what the broker sends.
    pub(crate) tx: mpsc::UnboundedSender<ConsumerEvent>,
    /// Deliveries need no settling (and must not be rejected when the stream is gone).
    pub(crate) no_ack: bool,
}

/// The mutable state of a connection, behind one lock.
pub(crate) struct State {
    /// Encoded frames waiting for the writer.
    pub(crate) out: BytesMut,
    /// The id of the next request.
    next_request: u64,
    /// Requests sent and not yet answered, by id.
    pub(crate) pending: HashMap<u64, PendingRequest>,
    /// Publishes awaiting a confirm.
    pub(crate) confirms: ConfirmTracker,
    /// Consumers by tag.
    pub(crate) consumers: HashMap<String, ConsumerSlot>,
    /// A Close was sent: no new operation may start.
    closing: bool,
    /// The writer should shut the socket once the outbox is empty.
    pub(crate) shutdown: bool,
    /// Set once, when the connection is finished; every later operation fails with it.
    pub(crate) closed: Option<ClientError>,
    /// Errors the broker reported outside any request (a fire-and-forget publish to a
    /// missing exchange, an unknown delivery tag), oldest first, at most
    /// [`MAX_ASYNC_ERRORS`].
    pub(crate) async_errors: VecDeque<ClientError>,
}

/// Unclaimed asynchronous errors kept; older ones are dropped.
pub(crate) const MAX_ASYNC_ERRORS: usize = 64;

impl State {
    /// Appends a frame to the outbox, refusing it if larger than the broker's maximum.
    pub(crate) fn encode(
        &mut self,
        frame: &ClientFrame<'_>,
        max: usize,
    ) -> Result<(), ClientError> {
        let start = self.out.len();
        encode_client(frame, &mut self.out)
            .map_err(|e| ClientError::Protocol(format!("cannot encode a frame: {e}")))?;
        let size = self.out.len() - start - LENGTH_PREFIX;
        if size > max {
            self.out.truncate(start);
            return Err(ClientError::FrameTooLarge { size, max });
        }
        Ok(())
    }

    /// Queues a request (the caller wakes the writer) and hands back where its reply
    /// will arrive.
    pub(crate) fn queue_request(
        &mut self,
        op: Op,
        on_reply: OnReply,
        max: usize,
    ) -> Result<oneshot::Receiver<Result<Reply, ClientError>>, ClientError> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_request;
        self.encode(&ClientFrame::Request(Request { id, op }), max)?;
        self.next_request += 1;
        self.pending.insert(id, PendingRequest { tx, on_reply });
        Ok(rx)
    }

    /// Fails when no new operation may start.
    pub(crate) fn check_open(&self) -> Result<(), ClientError> {
        match &self.closed {
            Some(e) => Err(e.clone()),
            None if self.closing => Err(ClientError::Closed),
            None => Ok(()),
        }
    }
}

/// Everything the application's handles and the socket tasks share.
pub(crate) struct Shared {
    /// The mutable state.
    state: Mutex<State>,
    /// Wakes the writer: frames were queued, or the connection is closing.
    writer_wake: Notify,
    /// Wakes publishers waiting for the outbox to drain below `max_write_buffer`.
    drained: Notify,
    /// The publish window: one permit per confirm-tracked publish that may be
    /// outstanding. Taken by a publish, given back by its confirm, closed on failure.
    pub(crate) window: Semaphore,
    /// `Some(reason)` while the broker blocks publishers (memory watermark).
    pub(crate) blocked: watch::Sender<Option<String>>,
    /// The broker's Welcome.
    pub(crate) server: ServerInfo,
    /// Whether publishes ask for confirms by default.
    pub(crate) confirms: bool,
    /// Outbox size above which publishes wait.
    max_write_buffer: usize,
    /// Largest frame the broker accepts.
    pub(crate) max_frame: usize,
}

impl Shared {
    /// Locks the state (never held across an await).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the writer there is work.
    pub(crate) fn wake_writer(&self) {
        self.writer_wake.notify_one();
    }

    /// Queues a frame that needs no reply (ack, nack, reject). Never waits.
    pub(crate) fn send(&self, frame: &ClientFrame<'_>) -> Result<(), ClientError> {
        {
            let mut st = self.lock();
            st.check_open()?;
            st.encode(frame, self.max_frame)?;
        }
        self.wake_writer();
        Ok(())
    }

    /// Queues a request and hands back where its reply will arrive.
    pub(crate) fn start_request(
        &self,
        op: Op,
        on_reply: OnReply,
    ) -> Result<oneshot::Receiver<Result<Reply, ClientError>>, ClientError> {
        let is_close = matches!(op, Op::Close);
        let rx = {
            let mut st = self.lock();
            st.check_open()?;
            let rx = st.queue_request(op, on_reply, self.max_frame)?;
            st.closing |= is_close;
            rx
        };
        self.wake_writer();
        Ok(rx)
    }

    /// Sends a request and waits for its reply.
    pub(crate) async fn request(&self, op: Op, on_reply: OnReply) -> Result<Reply, ClientError> {
        let rx = self.start_request(op, on_reply)?;
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.closed_error()),
        }
    }

    /// The error the connection finished with (Closed when it has not).
    pub(crate) fn closed_error(&self) -> ClientError {
        self.lock().closed.clone().unwrap_or(ClientError::Closed)
    }

    /// Runs `queue` under the lock once the outbox has room (publish backpressure).
    pub(crate) async fn with_room<T>(
        &self,
        queue: impl FnOnce(&mut State) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut queue = Some(queue);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut st = self.lock();
                st.check_open()?;
                if let Some(queue) = queue.take_if(|_| st.out.len() < self.max_write_buffer) {
                    let r = queue(&mut st);
                    drop(st);
                    self.wake_writer();
                    return r;
                }
            }
            drained.await;
        }
    }

    /// Asks the writer to shut the socket once everything queued is written.
    pub(crate) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.wake_writer();
    }

    /// Finishes the connection with `error` (the first error wins): every waiting
    /// request, publish and consumer gets it.
    pub(crate) fn fail(&self, error: ClientError) {
        let mut st = self.lock();
        if st.closed.is_some() {
            return;
        }
        st.closed = Some(error.clone());
        st.shutdown = true;
        for (_, p) in st.pending.drain() {
            let _ = p.tx.send(Err(error.clone()));
        }
        st.confirms.fail_all(&error);
        for (_, c) in st.consumers.drain() {
            let _ = c.tx.send(ConsumerEvent::Failed(error.clone()));
        }
        drop(st);
        self.window.close();
        self.blocked.send_replace(None);
        self.drained.notify_waiters();
        self.wake_writer();
    }
}

impl Shared {
    /// A connection's state before its socket tasks start (and, in the reader's unit
    /// tests, without any).
    pub(crate) fn new(server: ServerInfo, opts: &ConnectOptions) -> Shared {
        Shared {
            state: Mutex::new(State {
                out: BytesMut::with_capacity(64 * 1024),
                next_request: 1,
                pending: HashMap::new(),
                confirms: ConfirmTracker::default(),
                consumers: HashMap::new(),
                closing: false,
                shutdown: false,
                closed: None,
                async_errors: VecDeque::new(),
            }),
            writer_wake: Notify::new(),
            drained: Notify::new(),
            window: Semaphore::new(opts.max_unconfirmed.clamp(1, Semaphore::MAX_PERMITS)),
            blocked: watch::channel(None).0,
            max_frame: server.max_frame_size as usize,
            server,
            confirms: opts.confirms,
            max_write_buffer: opts.max_write_buffer.max(1),
        }
    }
}

/// Connects, says Hello, waits for Welcome, then starts the reader and writer tasks.
pub(crate) async fn open(opts: &ConnectOptions) -> Result<Arc<Shared>, ClientError> {
    let (stream, server, rest) = tokio::time::timeout(opts.connect_timeout, handshake(opts))
        .await
        .map_err(|_| {
            ClientError::io(
                format!("connecting to {}", opts.full_addr()),
                std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"),
            )
        })??;
    let (rd, wr) = stream.into_split();
    let heartbeat = Duration::from_secs(server.heartbeat_secs.into());
    let shared = Arc::new(Shared::new(server, opts));
    tokio::spawn(super::reader::run(shared.clone(), rd, rest, heartbeat));
    tokio::spawn(write_loop(shared.clone(), wr, heartbeat));
    Ok(shared)
}

/// Largest frame accepted before the Welcome says the real maximum.
const HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

async fn handshake(
    opts: &ConnectOptions,
) -> Result<(ClientStream, ServerInfo, BytesMut), ClientError> {
    let addr = opts.full_addr();
    let ctx = || format!("connecting to {addr}");
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| ClientError::io(ctx(), e))?;
    tcp.set_nodelay(true)
        .map_err(|e| ClientError::io(ctx(), e))?;
    let mut stream = match &opts.tls {
        Some(tls) => super::tls::connect(tcp, &addr, tls).await?,
        None => ClientStream::Plain(tcp),
    };
    let mut out = BytesMut::new();
    let (user, password, mechanism) = if opts.external {
        let external = crate::server::auth::EXTERNAL.to_string();
        (String::new(), String::new(), Some(external))
    } else {
        (opts.user.clone(), opts.password.clone(), None)
    };
    let hello = ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        user,
        password,
        vhost: opts.vhost.clone(),
        client: opts.client_name.clone(),
        heartbeat_secs: opts.heartbeat_secs,
        mechanism,
    });
    encode_client(&hello, &mut out).map_err(|e| ClientError::Protocol(e.to_string()))?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| ClientError::io(ctx(), e))?;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        if let Some(e) = foreign_greeting(&buf, &addr) {
            return Err(e);
        }
        let frame = take_frame(&mut buf, HANDSHAKE_MAX_FRAME)
            .map_err(|e| ClientError::Protocol(format!("during the handshake: {e}")))?;
        if let Some(frame) = frame {
            let info =
                match decode_server(&frame).map_err(|e| ClientError::Protocol(e.to_string()))? {
                    ServerFrame::Welcome {
                        version,
                        server,
                        max_frame_size,
                        heartbeat_secs,
                    } => ServerInfo {
                        version,
                        server,
                        max_frame_size,
                        heartbeat_secs,
                    },
                    ServerFrame::Error { code, message, .. } => {
                        return Err(ClientError::server(code, message))
                    }
                    other => return Err(ClientError::unexpected("Welcome", other)),
                };
            return Ok((stream, info, buf));
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| ClientError::io(ctx(), e))?;
        if n == 0 {
            return Err(ClientError::server(
                ErrorCode::ConnectionForced,
                "the broker closed the connection during the handshake",
            ));
        }
    }
}

/// Recognises a server that is not an actormq broker from the first bytes it sent.
///
/// A Welcome is well under [`HANDSHAKE_MAX_FRAME`], so its 4-byte big-endian length
/// starts with two zero bytes. Anything else is another protocol: text such as
/// `HTTP/1.1 400` or `AMQP\0\0\x09\x01` would otherwise read as a frame of ~1.2 GB.
fn foreign_greeting(buf: &[u8], addr: &str) -> Option<ClientError> {
    let first = buf.get(..2)?;
    if first == [0, 0] {
        return None;
    }
    let line = buf
        .split(|b| *b == b'\n' || *b == b'\r' || *b == 0)
        .next()
        .unwrap_or_default();
    let text = line.iter().take(80).all(|b| (0x20..0x7f).contains(b));
    let said = (text && line.len() >= 2)
        .then(|| String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned());
    Some(ClientError::NotAnActormqServer {
        addr: addr.to_string(),
        said,
    })
}

/// The writer task: writes the whole outbox at once whenever it has frames, sends a
/// heartbeat after half an interval of silence, and shuts the socket down when asked.
async fn write_loop(shared: Arc<Shared>, mut wr: OwnedWriteHalf, heartbeat: Duration) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    let idle = heartbeat / 2;
    loop {
        let done = {
            let mut st = shared.lock();
            if st.out.is_empty() {
                st.shutdown
            } else {
                std::mem::swap(&mut st.out, &mut batch);
                false
            }
        };
        if done {
            break;
        }
        if batch.is_empty() {
            if idle.is_zero() {
                shared.writer_wake.notified().await;
            } else if tokio::time::timeout(idle, shared.writer_wake.notified())
                .await
                .is_err()
            {
                // Half an interval without writing anything: say we are alive.
                let mut st = shared.lock();
                let _ = st.encode(&ClientFrame::Heartbeat, usize::MAX);
            }
            continue;
        }
        // The outbox is empty again: publishers may fill it while this batch is written.
        shared.drained.notify_waiters();
        let written = wr.write_all(&batch).await;
        batch.clear();
        if batch.capacity() > 2 * shared.max_write_buffer {
            batch = BytesMut::with_capacity(64 * 1024);
        }
        if let Err(e) = written {
            shared.fail(ClientError::io("writing to the broker", e));
            return;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::{foreign_greeting, ClientError};

    #[test]
    fn a_server_speaking_another_protocol_is_named_as_such() {
        let e = foreign_greeting(b"HTTP/1.1 400 Bad Request\r\n\r\n", "h:1").unwrap();
        assert_eq!(
            e.to_string(),
            "h:1 is not an actormq server (it said \"HTTP/1.1 400 Bad Request\")"
        );
        let e = foreign_greeting(b"AMQP\0\0\x09\x01", "h:1").unwrap();
        assert!(e.to_string().contains("\"AMQP\""), "{e}");
        let e = foreign_greeting(&[0xff, 0xfe, 0, 1], "h:1").unwrap();
        assert!(matches!(
            e,
            ClientError::NotAnActormqServer { said: None, .. }
        ));
        assert!(foreign_greeting(&[0, 0, 1, 0], "h:1").is_none(), "a frame");
        assert!(foreign_greeting(b"H", "h:1").is_none(), "too early to tell");
    }
}
