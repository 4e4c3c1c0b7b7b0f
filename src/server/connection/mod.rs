//! The connection actor: one per socket, the only place where wire frames become broker
//! messages and broker messages become frames.
//!
//! A native connection is codec + socket + one [`Channel`] whose owner is the
//! connection's: every rule of publishing, delivering and settling lives in the channel
//! core; this actor decodes frames, calls the channel, and encodes its answers.
//!
//! Life of a connection: the reader task hands over the frames of each socket read
//! ([`Inbound`]); the first must be a Hello (authentication, vhost). Requests go to the
//! vhost's registry or a queue and are answered by id; publishes are grouped per
//! exchange into one `Publish` batch each; deliveries from queues ([`Deliver`]) go to
//! the channel (the only one: every consumer tag maps to it), which gives them delivery
//! tags, and are written in one chunk per batch. The answer to `Inbound` resolves only
//! when the publish window and the write buffer have room (and, for publishers, when
//! memory is not blocked): until then the reader does not read, so TCP pushes back on
//! the client.

use super::connections::{CloseConnection, ConnectionStats};
use super::io::{self, Flow, ReadEvent, WriterHandle};
use super::ServerShared;
use crate::broker::exchange::ExchangeHandle;
use crate::broker::messages::*;
use crate::broker::registry::Registry;
use crate::channel::{Channel, Outbound};
use crate::error::{clip, BrokerError, ErrorCode};
use crate::message::Message;
use crate::protocol::wire::*;
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Frames from one socket read (sent by the reader task, which awaits the answer).
#[derive(Message)]
#[rtype(result = "bool")]
struct Inbound(ReadEvent);

/// The server is shutting down: tell the client and close.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The connection after a successful Hello.
struct Session {
    /// The vhost's registry.
    registry: Addr<Registry>,
    /// The vhost's name (logs, errors).
    vhost: String,
    /// The authenticated user.
    user: String,
}

/// One client connection.
pub struct Connection {
    /// Owner of this connection's exclusive queues, and of its channel.
    owner: OwnerId,
    /// The connection's one channel: consumers, deliveries, settlements, publishes.
    channel: Channel,
    /// The client's address.
    peer: SocketAddr,
    /// Broker, users, settings.
    shared: Arc<ServerShared>,
    /// Set by a successful Hello.
    session: Option<Session>,
    /// Frames encoded and not yet handed to the writer (one chunk per handler).
    out: BytesMut,
    /// What goes before `out`: frame heads split off `out` and the stream bodies they
    /// announce, kept where they lie (plain TCP only; see `write_deliver`).
    parts: Vec<Bytes>,
    /// The socket is plain TCP: its writer takes chunks by reference (`writev`).
    vectored: bool,
    /// Delivery credit to release once `out` is written.
    out_credits: Vec<Credit>,
    /// The writer task.
    writer: Option<WriterHandle>,
    /// Publish window and write-buffer counters shared with the socket tasks.
    flow: Arc<Flow>,
    /// The socket, until `started` splits it.
    socket: Option<crate::server::stream::ServerStream>,
    /// This actor's address, for consumer recipients.
    self_addr: Option<Addr<Connection>>,
    /// Tags generated for consumers without one.
    ctag_seq: u64,
    /// True once closing: no more frames are processed.
    closing: bool,
    /// This connection published at least once (memory blocking applies to it).
    publisher: bool,
    /// Span of this connection, entered while handling its messages.
    span: tracing::Span,
    /// Credit of deliveries that arrived once the connection was closing: held, never
    /// returned, so no queue sends more here; dropped with the actor, after `stopped`
    /// has released (requeued) everything this connection held.
    held_credits: Vec<Credit>,
    /// Counters the connection registry reads when an operator lists connections.
    stats: Arc<ConnectionStats>,
    /// The user a verified TLS client certificate names (EXTERNAL), or why it names
    /// none; `None` without one.
    cert_user: Option<Result<String, String>>,
    /// Frames waiting for a cancel's answer (`cancel.rs`).
    held: cancel::Held,
}

/// Most messages in one `Publish` batch: big enough to amortise the hop, small enough
/// that no actor works on one batch long while others wait on the same thread.
const MAX_PUBLISH_BATCH: usize = 256;

/// Most bytes of an error message logged or sent: the parts a client controls are
/// clipped where the message is made ([`clip`]); this catches what they missed.
const MESSAGE_BYTES: usize = 1024;

/// An error message as logged and written to the client (see [`MESSAGE_BYTES`]).
pub(super) fn shown(message: &str) -> String {
    crate::error::clip_to(message, MESSAGE_BYTES).into_owned()
}

impl Connection {
    /// Starts a connection actor for `socket` on the current arbiter.
    pub(crate) fn start(
        socket: crate::server::stream::ServerStream,
        peer: SocketAddr,
        shared: Arc<ServerShared>,
    ) -> Addr<Connection> {
        let owner = shared.broker.new_owner();
        let flow = Arc::new(Flow::new(
            shared.broker.context().publish_window,
            shared.settings.server.max_write_buffer,
        ));
        let local = socket.local_addr().ok();
        let stats = Arc::new(ConnectionStats::default());
        let registry = shared.clone();
        let st = stats.clone();
        let cert_user = socket
            .peer_certificate()
            .map(|der| crate::server::auth::cert_user(der, &shared.settings.tls));
        Connection::create(move |ctx| {
            registry.registry.register(
                owner.0,
                "native",
                peer,
                local,
                st,
                ctx.address().recipient(),
            );
            Connection {
                owner,
                channel: Channel::new(owner),
                peer,
                shared,
                session: None,
                out: BytesMut::with_capacity(8 * 1024),
                parts: Vec::new(),
                vectored: false,
                out_credits: Vec::new(),
                writer: None,
                flow,
                socket: Some(socket),
                self_addr: None,
                ctag_seq: 0,
                closing: false,
                publisher: false,
                span: tracing::info_span!("conn", id = owner.0, %peer),
                held_credits: Vec::new(),
                stats,
                cert_user,
                held: Default::default(),
            }
        })
    }

    // ------------------------------------------------------------------ output

    fn frame(&mut self, f: &ServerFrame<'_>) {
        if let Err(e) = encode_server(f, &mut self.out) {
            tracing::error!(error = %e, "cannot encode a server frame");
        }
    }

    /// Hands what was encoded to the writer (one chunk per handler call).
    fn flush(&mut self) {
        if self.out.is_empty() && self.parts.is_empty() {
            return;
        }
        let bytes = self.out.split().freeze();
        let mut parts = std::mem::take(&mut self.parts);
        let credits = std::mem::take(&mut self.out_credits);
        if self.flow.closed.load(Ordering::Acquire) {
            // The socket is gone: keep the credit, so the queues stop sending here
            // (returning it would make them push more deliveries into a dead socket).
            self.held_credits.extend(credits);
            return;
        }
        if let Some(w) = &self.writer {
            if parts.is_empty() {
                w.send(bytes, credits);
            } else {
                parts.push(bytes);
                w.send_parts(parts, credits);
            }
        }
    }

    fn reply(&mut self, id: u64, body: ReplyBody<'_>) {
        self.frame(&ServerFrame::Reply { id, body });
    }

    fn error(&mut self, id: Option<u64>, e: &BrokerError) {
        let message = shown(e.message());
        tracing::debug!(peer = %self.peer, code = %e.code(), %message, "request failed");
        self.frame(&ServerFrame::Error {
            id,
            code: e.code(),
            message,
            fatal: false,
        });
    }

    /// Sends a fatal error, flushes, and closes the connection.
    fn fatal(&mut self, code: ErrorCode, message: String, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let message = shown(&message);
        tracing::warn!(peer = %self.peer, %code, %message, "closing connection");
        self.frame(&ServerFrame::Error {
            id: None,
            code,
            message,
            fatal: true,
        });
        self.close(ctx);
    }

    fn close(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        self.flush();
        if let Some(w) = &self.writer {
            w.close();
        }
        ctx.stop();
    }

    // ------------------------------------------------------------------ input

    fn on_frames(&mut self, frames: Vec<Bytes>, from: usize, ctx: &mut Context<Self>) {
        let mut batch: Option<(ExchangeHandle, Vec<Outbound>)> = None;
        let mut i = from;
        while i < frames.len() {
            if self.closing {
                return;
            }
            let raw = frames[i].clone();
            let frame = match decode_client(&raw) {
                Ok(f) => f,
                Err(e) if e.code == ErrorCode::ResourceError && self.session.is_some() => {
                    // Too large decoded: refused, not necessarily fatal (publish.rs).
                    self.send_batch(batch.take(), ctx);
                    self.refuse_oversized(&raw, e, ctx);
                    i += 1;
                    continue;
                }
                Err(e) if e.code == ErrorCode::UnknownOperation && self.session.is_some() => {
                    self.send_batch(batch.take(), ctx);
                    // Name the request when its id can be read, so the client is not
                    // left waiting for an answer.
                    self.error(
                        request_id(&raw),
                        &BrokerError::new(ErrorCode::UnknownOperation, e.message),
                    );
                    i += 1;
                    continue;
                }
                Err(e) => {
                    self.send_batch(batch.take(), ctx);
                    self.fatal(e.code, format!("cannot decode frame: {}", e.message), ctx);
                    return;
                }
            };
            if self.session.is_none() {
                match frame {
                    ClientFrame::Hello(h) => {
                        // The version first (PROTOCOL.md §2.2): a client of another
                        // version is told so whatever its credentials.
                        if !self.version_ok(&h, ctx) {
                            return;
                        }
                        if h.mechanism.is_some() {
                            // EXTERNAL: the certificate was checked in the TLS
                            // handshake; no password to hash, nothing to wait for.
                            if self.external_hello(h, ctx) {
                                self.on_frames(frames, i + 1, ctx);
                            }
                            return;
                        }
                        // The password hash check costs about a millisecond of CPU:
                        // off the arbiter, so other connections' traffic on this
                        // thread does not wait for it. Later frames wait (ctx.wait),
                        // at most the request timeout.
                        let shared = self.shared.clone();
                        let ip = self.peer.ip();
                        let (user, password) = (h.user.clone(), h.password.clone());
                        let check = crate::server::auth::login_slowed(shared, user, password, ip);
                        let check = bounded::bounded("hello", self.request_timeout(), check);
                        ctx.wait(actix::fut::wrap_future::<_, Self>(check).map(
                            move |res, act, ctx| {
                                match res {
                                    Err(e) => act.fatal(e.code(), e.message().to_string(), ctx),
                                    Ok(()) => {
                                        if act.hello(h, ctx) {
                                            act.on_frames(frames, i + 1, ctx);
                                        }
                                    }
                                }
                                act.channel.flush_settles();
                                act.flush();
                            },
                        ));
                        return;
                    }
                    _ => {
                        self.fatal(
                            ErrorCode::BadFrame,
                            "the first frame must be a hello".into(),
                            ctx,
                        );
                        return;
                    }
                }
            }
            match frame {
                ClientFrame::Publish(p) => {
                    self.publisher = true;
                    let same = batch.as_ref().is_some_and(|(x, items)| {
                        x.name() == p.exchange && items.len() < MAX_PUBLISH_BATCH
                    });
                    if !same {
                        self.send_batch(batch.take(), ctx);
                        match self.channel.cached_exchange(p.exchange) {
                            Some(x) => batch = Some((x, Vec::new())),
                            None => {
                                // Permission first, as RabbitMQ: a refused publish to a
                                // missing exchange is ACCESS_REFUSED, not NOT_FOUND.
                                if let Err(e) = self.channel.may_write_exchange(p.exchange) {
                                    self.refuse_publish(&raw, &e, ctx);
                                    i += 1;
                                    continue;
                                }
                                // Look the exchange up, pausing this connection (ctx.wait)
                                // so that frames keep their order; then go on from here.
                                self.lookup_then_continue(p.exchange.to_string(), frames, i, ctx);
                                return;
                            }
                        }
                    }
                    if let Some(uid) = p.properties.as_ref().and_then(|pr| pr.user_id.as_deref()) {
                        let user = &self.session.as_ref().expect("open").user;
                        if uid != user {
                            // RabbitMQ's rule: user_id must be the authenticated user.
                            let e = BrokerError::precondition(format!(
                                "user_id property set to '{}' but authenticated user was '{}'",
                                clip(uid),
                                clip(user)
                            ));
                            self.send_batch(batch.take(), ctx);
                            self.refuse_publish(&raw, &e, ctx);
                            i += 1;
                            continue;
                        }
                    }
                    if let Some(h) = p.properties.as_ref().and_then(|pr| pr.headers.as_ref()) {
                        let shape = crate::message::shape::table_shape(h);
                        let limits = &self.shared.settings.limits;
                        if let Err(m) = crate::message::shape::check_headers(shape, limits) {
                            tracing::warn!(peer = %self.peer, "publish refused: {m}");
                            self.send_batch(batch.take(), ctx);
                            self.refuse_publish(&raw, &BrokerError::precondition(m), ctx);
                            i += 1;
                            continue;
                        }
                    }
                    let x = &batch.as_ref().expect("batch set above").0;
                    if let Err(e) = self.channel.may_publish(x, p.routing_key) {
                        // Refused (write permission): this publish only.
                        self.send_batch(batch.take(), ctx);
                        self.refuse_publish(&raw, &e, ctx);
                        i += 1;
                        continue;
                    }
                    if p.seq != 0 && !self.channel.register_seq(p.seq) {
                        self.send_batch(batch.take(), ctx);
                        self.fatal(
                            ErrorCode::PreconditionFailed,
                            format!("publish seq {} does not increase", p.seq),
                            ctx,
                        );
                        return;
                    }
                    let (x, items) = batch.as_mut().expect("batch set above");
                    items.push(Outbound {
                        seq: p.seq,
                        mandatory: p.mandatory,
                        message: Arc::new(Message {
                            exchange: x.name_arc().clone(),
                            routing_key: p.routing_key.to_string(),
                            properties: crate::message::Properties::shared(
                                p.properties.map(|b| *b),
                            ),
                            body: kept_body(&raw, p.body),
                        }),
                    });
                }
                ClientFrame::Request(r) => {
                    self.send_batch(batch.take(), ctx);
                    // Settlements sent before this request take effect before it.
                    self.channel.flush_settles();
                    let fut = self.request(r, ctx);
                    // Later frames wait for this request (ordered, like an AMQP channel).
                    ctx.wait(fut.map(move |_, act, ctx| {
                        act.rest_of_batch(frames, i + 1, ctx);
                        act.channel.flush_settles();
                        act.flush();
                    }));
                    return;
                }
                other => {
                    self.send_batch(batch.take(), ctx);
                    self.on_frame(other, ctx);
                }
            }
            i += 1;
        }
        self.send_batch(batch.take(), ctx);
        self.next_batch(ctx);
    }

    fn on_frame(&mut self, frame: ClientFrame<'_>, ctx: &mut Context<Self>) {
        match frame {
            ClientFrame::Hello(_) => {
                self.fatal(ErrorCode::BadFrame, "hello sent twice".into(), ctx);
            }
            ClientFrame::Heartbeat => {}
            ClientFrame::Request(_) => unreachable!("requests are sequenced by on_frames"),
            ClientFrame::Ack { tag, multiple } => self.settle(tag, multiple, Settlement::Ack),
            ClientFrame::Nack {
                tag,
                multiple,
                requeue,
            } => self.settle(
                tag,
                multiple,
                if requeue {
                    Settlement::Requeue
                } else {
                    Settlement::Discard
                },
            ),
            ClientFrame::Reject { tag, requeue } => self.settle(
                tag,
                false,
                if requeue {
                    Settlement::Requeue
                } else {
                    Settlement::Discard
                },
            ),
            ClientFrame::Publish(_) => unreachable!("publishes are batched by on_frames"),
        }
    }

    /// Settles delivery `tag` (or up to it); held until the read is done, so the
    /// settlements of one read reach each queue as one message (see
    /// [`Channel::flush_settles`]).
    fn settle(&mut self, tag: u64, multiple: bool, settlement: Settlement) {
        if let Err(e) = self.channel.settle(tag, multiple, settlement) {
            self.error(None, &e);
        }
    }

    /// How long a request may hold this connection's later frames.
    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.settings.server.request_timeout_ms.max(1))
    }
}

mod bounded;
mod cancel;
mod delivery;
mod lifecycle;
mod opening;
mod publish;
mod requests;
