//! The AMQP connection actor: one per socket, N channels (each a
//! [`crate::channel::Channel`] plus its request pipeline), the handshake, closes in both
//! directions, and the connection's life in the registry of live connections.
//!
//! No `ctx.wait` anywhere: a request that needs an answer from another actor (a declare,
//! a consume, a get) marks its channel busy, and the channel's later frames wait in the
//! channel's own queue while other channels go on (see `dispatch`).

use super::codec::{Encoder, PROTOCOL_HEADER};
use super::dispatch::ChannelState;
use super::errors::AmqpError;
use super::io::{self, AmqpRead, Tuned, Writer};
use crate::broker::messages::{Credit, OwnerId};
use crate::broker::registry::Registry;
use crate::server::connections::{CloseConnection, ConnectionStats};
use crate::server::io::Flow;
use crate::server::ServerShared;
use actix::prelude::*;
use amq_protocol::protocol::{connection, AMQPClass};
use bytes::BytesMut;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Frames from one socket read (the reader awaits the answer: backpressure).
#[derive(Message)]
#[rtype(result = "bool")]
pub(super) struct Inbound(pub AmqpRead);

/// The writer task ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct WriterGone;

/// The server is shutting down.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Shutdown;

/// Where the handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the protocol header.
    Header,
    /// `connection.start` sent, waiting for start-ok.
    Start,
    /// Checking the password (off the arbiter).
    Login,
    /// `connection.tune` sent, waiting for tune-ok.
    Tune,
    /// Waiting for `connection.open`.
    Open,
    /// Open: channels may be used.
    Running,
    /// `connection.close` sent or received: only close / close-ok count now.
    Closing,
}

/// The connection after `connection.open`.
pub(super) struct Session {
    /// The vhost's registry.
    pub registry: Addr<Registry>,
    /// The vhost's name.
    pub vhost: String,
}

/// Most commands waiting in channels' queues before the reader stops reading.
pub(super) const MAX_BACKLOG: usize = 4096;

/// Hashes channel numbers as they are: the channel map is looked up several times per
/// frame, and SipHash showed up at ~5% of the broker's CPU in a publish/consume run.
pub(super) type ChannelNumbers = BuildHasherDefault<NumberHasher>;

/// A hasher for small integer keys (no DoS concern: at most `channel_max` keys, chosen
/// by the client itself).
#[derive(Default)]
pub(super) struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        // Spread the bits (hashbrown takes the top 7 for its control bytes).
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }
}

/// One AMQP client connection.
pub struct AmqpConnection {
    /// Owner of the connection's exclusive queues (channels have owners of their own).
    pub(super) owner: OwnerId,
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// Broker, users, settings, registry of connections.
    pub(super) shared: Arc<ServerShared>,
    /// Handshake state.
    pub(super) phase: Phase,
    /// The authenticated user (set at start-ok).
    pub(super) user: String,
    /// The user a verified client certificate names (EXTERNAL), or why it names none;
    /// `None` without one.
    pub(super) cert_user: Option<Result<String, String>>,
    /// Set by `connection.open`.
    pub(super) session: Option<Session>,
    /// The client announced `consumer_cancel_notify`: tell it when a queue cancels.
    pub(super) cancel_notify: bool,
    /// The client announced `connection.blocked`.
    pub(super) blocked_notify: bool,
    /// `connection.blocked` was sent and `connection.unblocked` not yet.
    pub(super) blocked_sent: bool,
    /// Negotiated frame size and heartbeat, shared with the socket tasks.
    pub(super) tuned: Arc<Tuned>,
    /// Negotiated channel_max.
    pub(super) channel_max: u16,
    /// Open channels by number. Boxed: a channel's state is about a kilobyte, and the
    /// map's table keeps several slots per channel open (that was most of what an idle
    /// AMQP connection held beyond a native one).
    pub(super) channels: HashMap<u16, Box<ChannelState>, ChannelNumbers>,
    /// Consumer tag → channel (tags are unique per connection).
    pub(super) consumer_channels: HashMap<String, u16>,
    /// Generated consumer tags so far.
    pub(super) ctag_seq: u64,
    /// Commands waiting in channels' queues (all channels).
    pub(super) backlog: Arc<AtomicUsize>,
    /// Frames encoded and not yet handed to the writer.
    pub(super) out: BytesMut,
    /// Delivery credit to release once `out` is written.
    pub(super) out_credits: Vec<Credit>,
    /// Frame encoder.
    pub(super) enc: Encoder,
    /// The writer task.
    pub(super) writer: Option<Writer>,
    /// Publish window and write-buffer counters shared with the socket tasks.
    pub(super) flow: Arc<Flow>,
    /// The socket until `started` splits it.
    socket: Option<crate::server::stream::ServerStream>,
    /// True once this connection published (memory blocking applies to it).
    pub(super) publisher: bool,
    /// Counters for the registry of connections.
    pub(super) stats: Arc<ConnectionStats>,
    /// Credit of deliveries that arrived while closing: held, never returned.
    pub(super) held_credits: Vec<Credit>,
    /// Span of this connection.
    pub(super) span: tracing::Span,
    /// The client sent `connection.close` (answered with close-ok): the socket is the
    /// client's to close now.
    pub(super) client_closed: bool,
    /// The close-ok answering the client's close is still to be written.
    pub(super) close_ok_pending: bool,
    /// The session's end was reported (exclusive queues, registry entry).
    pub(super) session_ended: bool,
}

impl AmqpConnection {
    /// Starts a connection actor for `socket` on the current arbiter.
    pub(crate) fn start(
        socket: crate::server::stream::ServerStream,
        peer: SocketAddr,
        shared: Arc<ServerShared>,
    ) -> Addr<AmqpConnection> {
        let owner = shared.broker.new_owner();
        let flow = Arc::new(Flow::new(
            shared.broker.context().publish_window,
            shared.settings.server.max_write_buffer,
        ));
        let local = socket.local_addr().ok();
        let stats = Arc::new(ConnectionStats::default());
        let frame_max = shared.settings.amqp.frame_max as usize;
        let cert_user = socket
            .peer_certificate()
            .map(|der| crate::server::auth::cert_user(der, &shared.settings.tls));
        AmqpConnection::create(move |ctx| {
            shared.registry.register(
                owner.0,
                "amqp",
                peer,
                local,
                stats.clone(),
                ctx.address().recipient(),
            );
            shared
                .registry
                .set_channel_source(owner.0, ctx.address().recipient());
            AmqpConnection {
                owner,
                peer,
                phase: Phase::Header,
                user: String::new(),
                cert_user,
                session: None,
                cancel_notify: false,
                blocked_notify: false,
                blocked_sent: false,
                tuned: Arc::new(Tuned::new(frame_max)),
                channel_max: shared.settings.amqp.channel_max,
                channels: HashMap::default(),
                consumer_channels: HashMap::new(),
                ctag_seq: 0,
                backlog: Arc::new(AtomicUsize::new(0)),
                // Empty until there is something to write: an idle connection holds no
                // output buffer (4 KiB each before), and a busy one reuses what the
                // writer gives back.
                out: BytesMut::new(),
                out_credits: Vec::new(),
                enc: Encoder::default(),
                writer: None,
                flow,
                socket: Some(socket),
                publisher: false,
                stats,
                held_credits: Vec::new(),
                span: tracing::info_span!("amqp", id = owner.0, %peer),
                client_closed: false,
                close_ok_pending: false,
                session_ended: false,
                shared,
            }
        })
    }

    /// The negotiated frame_max.
    pub(super) fn frame_max(&self) -> usize {
        self.tuned.frame_max.load(Ordering::Acquire)
    }

    /// Encodes a method frame.
    pub(super) fn method(&mut self, channel: u16, m: AMQPClass) {
        self.enc.method(&mut self.out, channel, m);
    }

    /// Hands what was encoded to the writer.
    pub(super) fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let bytes = self.out.split().freeze();
        let credits = std::mem::take(&mut self.out_credits);
        if self.flow.closed.load(Ordering::Acquire) {
            self.held_credits.extend(credits);
            return;
        }
        if let Some(w) = &self.writer {
            w.send(bytes, credits);
        }
    }

    /// Releases every channel (settlements read so far count; unacked requeued).
    pub(super) fn release_all(&mut self) {
        for (_, mut ch) in self.channels.drain() {
            ch.core.release();
            if let Some((token, _)) = ch.reply_to.take() {
                self.shared.direct_replies.remove(&token);
            }
        }
        self.consumer_channels.clear();
        self.backlog.store(0, Ordering::Release);
        self.stats.channels.store(0, Ordering::Relaxed);
    }

    fn on_read(&mut self, ev: AmqpRead, ctx: &mut Context<Self>) -> bool {
        match ev {
            AmqpRead::Header(true) => {
                self.send_start();
                true
            }
            AmqpRead::Header(false) => {
                tracing::info!(peer = %self.peer, "wrong protocol header: answering with 0-9-1's");
                self.out.extend_from_slice(PROTOCOL_HEADER);
                self.close_socket(ctx);
                false
            }
            AmqpRead::Frames(frames) => {
                self.on_frames(frames, ctx);
                self.phase != Phase::Closing || !self.flow.closed.load(Ordering::Acquire)
            }
            AmqpRead::Invalid(e) => {
                let code = e.reply_code();
                self.close_with(AmqpError::new(code, e), ctx);
                false
            }
            AmqpRead::Silent(d) => {
                tracing::warn!(peer = %self.peer, ?d, "missed heartbeats: closing");
                self.close_socket(ctx);
                false
            }
            AmqpRead::Eof => {
                tracing::debug!(peer = %self.peer, "client closed the socket");
                self.close_socket(ctx);
                false
            }
            AmqpRead::Failed(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "socket error");
                self.close_socket(ctx);
                false
            }
        }
    }
}

impl Actor for AmqpConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::broker::MAILBOX_CAPACITY);
        let socket = self.socket.take().expect("socket set at creation");
        let _ = socket.set_nodelay(true);
        let (read, write) = socket.into_split();
        let addr = ctx.address();
        let writer = io::spawn_writer(write, self.flow.clone(), &self.tuned, move || {
            addr.do_send(WriterGone)
        });
        self.writer = Some(writer.clone());
        let addr = ctx.address();
        let reader = io::read_loop(
            read,
            self.tuned.clone(),
            self.flow.clone(),
            writer,
            move |ev| {
                let addr = addr.clone();
                async move { addr.send(Inbound(ev)).await.unwrap_or(false) }
            },
        );
        actix_rt::spawn(tracing::Instrument::instrument(reader, self.span.clone()));
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            ctx.notify(Shutdown);
        } else {
            let addr = ctx.address();
            actix_rt::spawn(async move {
                if shutdown.wait_for(|s| *s).await.is_ok() {
                    addr.do_send(Shutdown);
                }
            });
        }
        // A client that has not finished the handshake (login and `connection.open`)
        // within the handshake timeout is dropped, as by RabbitMQ's handshake_timeout.
        let limit = self.shared.settings.server.handshake_timeout_ms;
        ctx.run_later(Duration::from_millis(limit), move |act, ctx| {
            if act.session.is_none() && act.phase != Phase::Closing {
                tracing::warn!(peer = %act.peer, timeout_ms = limit, "handshake timeout: no connection.open in time, socket dropped");
                act.close_socket(ctx);
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        self.phase = Phase::Closing;
        self.flush();
        if let Some(w) = &self.writer {
            w.close();
        }
        Running::Stop
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.release_all();
        self.end_session();
        self.shared.connection_gone();
    }
}

impl Handler<Inbound> for AmqpConnection {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) -> Self::Result {
        if self.phase == Phase::Closing && !matches!(msg.0, AmqpRead::Frames(_)) {
            // The client went (or broke the stream) while we waited for its close-ok.
            self.close_socket(ctx);
            return Box::pin(async { false });
        }
        let span = self.span.clone();
        let _entered = span.enter();
        let go_on = self.on_read(msg.0, ctx);
        self.flush();
        if !go_on {
            return Box::pin(async { false });
        }
        let flow = self.flow.clone();
        let backlog = self.backlog.clone();
        let gauge = self.publisher.then(|| self.shared.broker.memory().clone());
        // The reader waits for this: backpressure reaches the socket here.
        Box::pin(async move {
            loop {
                let notified = flow.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if backlog.load(Ordering::Acquire) < MAX_BACKLOG
                    || flow.closed.load(Ordering::Acquire)
                {
                    break;
                }
                notified.await;
            }
            if !flow.ready().await {
                return false;
            }
            if let Some(g) = gauge {
                g.wait_unblocked().await;
            }
            true
        })
    }
}

impl AmqpConnection {
    /// Sends `connection.blocked` if the broker is blocking publishers, this connection
    /// publishes, its client asked to be told, and it has not been told yet.
    pub(super) fn notify_blocked(&mut self) {
        let memory = self.shared.broker.memory();
        if !self.blocked_notify
            || !self.publisher
            || self.blocked_sent
            || self.phase == Phase::Closing
            || !memory.is_blocked()
        {
            return;
        }
        let reason = memory.blocked_reason();
        self.blocked_sent = true;
        self.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                reason: super::properties::short(&reason),
            })),
        );
        self.flush();
    }

    /// Sends `connection.unblocked` after a `connection.blocked`.
    fn notify_unblocked(&mut self) {
        if !self.blocked_sent || self.phase == Phase::Closing {
            return;
        }
        self.blocked_sent = false;
        self.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
        );
        self.flush();
    }
}

impl Handler<WriterGone> for AmqpConnection {
    type Result = ();

    fn handle(&mut self, _msg: WriterGone, ctx: &mut Self::Context) {
        if self.phase != Phase::Closing {
            tracing::warn!(peer = %self.peer, "socket write failed or stalled: closing");
        }
        self.phase = Phase::Closing;
        ctx.stop();
    }
}

impl Handler<Shutdown> for AmqpConnection {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        if self.client_closed {
            // Closed already: no need to wait for the client any longer.
            self.close_socket(ctx);
            return;
        }
        self.close_with(
            AmqpError::new(
                320,
                "broker forced connection closure with reason 'shutdown'",
            ),
            ctx,
        );
    }
}

impl Handler<CloseConnection> for AmqpConnection {
    type Result = ();

    fn handle(&mut self, msg: CloseConnection, ctx: &mut Self::Context) {
        self.close_with(
            AmqpError::new(320, format!("Closed via management plugin: {}", msg.reason)),
            ctx,
        );
    }
}

/// The memory and disk alarms, as RabbitMQ tells them: `connection.blocked` goes to
/// publishing connections only (those are the ones whose reads stop), a connection's
/// first publish during an alarm gets it then, and `connection.unblocked` follows only
/// a `connection.blocked`. A consume-only connection hears nothing and goes on: some
/// clients (lapin) send nothing at all, acks included, once told they are blocked.
impl StreamHandler<bool> for AmqpConnection {
    fn handle(&mut self, blocked: bool, _ctx: &mut Self::Context) {
        if blocked {
            self.notify_blocked();
        } else {
            self.notify_unblocked();
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}
