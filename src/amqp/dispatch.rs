//! Frames to channel commands: content reassembly (method, header, body frames) with
//! its limits, and each channel's request pipeline.
//!
//! A channel handles its commands in order. Publishes are batched (one `Publish` per
//! exchange per read); acks are held and coalesced by the channel core; a method that
//! needs another actor's answer (declare, consume, get, an exchange lookup) marks the
//! channel busy, and the channel's later commands wait in its queue until the answer
//! is written, while the connection's other channels go on. A connection-wide bound
//! on waiting commands ([`MAX_BACKLOG`]) stops the reader when reached.

use super::codec::Incoming;
use super::connection::{AmqpConnection, Phase, MAX_BACKLOG};
use super::errors::AmqpError;
use super::properties::properties_in;
use crate::broker::exchange::ExchangeHandle;
use crate::broker::messages::LookupExchange;
use crate::channel::{Channel, Outbound, PublishOutcome};
use crate::error::BrokerError;
use crate::message::{Message, Properties};
use actix::prelude::*;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{channel as chan, AMQPClass};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most messages in one `Publish` batch.
const MAX_PUBLISH_BATCH: usize = 256;

/// A command of a channel, in the order the client sent it.
pub(super) enum Command {
    /// A method without content.
    Method(Box<AMQPClass>),
    /// A complete `basic.publish` with its content.
    Publish(Box<PublishCommand>),
}

/// A complete `basic.publish`: method, properties, body.
pub(super) struct PublishCommand {
    publish: basic::Publish,
    properties: AMQPProperties,
    body: Bytes,
}

/// A `basic.publish` whose content is still arriving.
struct Content {
    publish: basic::Publish,
    /// Set by the content header.
    header: Option<(AMQPProperties, u64)>,
    /// Body frames so far.
    parts: Vec<Bytes>,
    /// Body bytes so far.
    got: u64,
}

/// One open channel of a connection.
pub(super) struct ChannelState {
    /// The protocol-neutral core.
    pub core: Channel,
    /// `channel.close` sent by the server: only close / close-ok count now.
    pub closing: bool,
    /// Waiting for an answer (see the module documentation).
    pub busy: bool,
    /// Commands waiting behind a busy one.
    pending: VecDeque<Command>,
    /// The publish being reassembled.
    content: Option<Content>,
    /// Publishes batched for one exchange.
    batch: Option<(ExchangeHandle, Vec<Outbound>)>,
    /// The last queue declared on this channel (AMQP's "" = that queue).
    pub last_queue: String,
}

impl ChannelState {
    fn new(core: Channel) -> Self {
        ChannelState {
            core,
            closing: false,
            busy: false,
            pending: VecDeque::new(),
            content: None,
            batch: None,
            last_queue: String::new(),
        }
    }

    /// Commands waiting (for the connection's backlog count).
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

fn ids(m: &AMQPClass) -> (u16, u16) {
    (m.get_amqp_class_id(), m.get_amqp_method_id())
}

impl AmqpConnection {
    /// Handles the frames of one read.
    pub(super) fn on_frames(&mut self, frames: Vec<Incoming>, ctx: &mut Context<Self>) {
        let mut touched: Vec<u16> = Vec::new();
        for f in frames {
            if self.phase == Phase::Closing {
                // Only the answer to our close matters now.
                if let Incoming::Method(0, m) = f {
                    if let AMQPClass::Connection(m) = *m {
                        self.on_connection_method(m, ctx);
                    }
                }
                continue;
            }
            match f {
                Incoming::Heartbeat(0) => {}
                Incoming::Heartbeat(ch) => {
                    self.close_with(
                        AmqpError::new(501, format!("heartbeat frame on channel {ch}")),
                        ctx,
                    );
                }
                Incoming::Method(0, m) => match *m {
                    AMQPClass::Connection(m) => self.on_connection_method(m, ctx),
                    other => {
                        let e = AmqpError::new(503, "only connection methods on channel 0")
                            .on(ids(&other));
                        self.close_with(e, ctx);
                    }
                },
                _ if self.phase != Phase::Running => {
                    self.close_with(
                        AmqpError::new(504, "channel frame before the connection is open"),
                        ctx,
                    );
                }
                Incoming::Method(ch, m) => {
                    if self.on_channel_method(ch, *m, ctx) && !touched.contains(&ch) {
                        touched.push(ch);
                    }
                }
                Incoming::Header(ch, h) => {
                    if self.on_header(ch, h.body_size, h.properties, ctx) && !touched.contains(&ch)
                    {
                        touched.push(ch);
                    }
                }
                Incoming::Body(ch, b) => {
                    if self.on_body(ch, b, ctx) && !touched.contains(&ch) {
                        touched.push(ch);
                    }
                }
            }
        }
        for ch in touched {
            self.pump(ch, ctx);
        }
    }

    /// A method on channel `ch`; true when a command was queued.
    fn on_channel_method(&mut self, ch: u16, m: AMQPClass, ctx: &mut Context<Self>) -> bool {
        if let AMQPClass::Channel(chan::AMQPMethod::Open(_)) = m {
            if self.channels.contains_key(&ch) {
                self.close_with(
                    AmqpError::new(504, format!("second 'channel.open' seen on channel {ch}"))
                        .on((20, 10)),
                    ctx,
                );
            } else if ch > self.channel_max {
                self.close_with(
                    AmqpError::new(
                        530,
                        format!(
                            "channel {ch} is above the negotiated channel_max {}",
                            self.channel_max
                        ),
                    )
                    .on((20, 10)),
                    ctx,
                );
            } else {
                let owner = self.shared.broker.new_owner();
                self.channels
                    .insert(ch, ChannelState::new(Channel::new(owner)));
                self.stats
                    .channels
                    .store(self.channels.len() as u32, Ordering::Relaxed);
                self.method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
                );
            }
            return false;
        }
        let Some(st) = self.channels.get_mut(&ch) else {
            self.close_with(
                AmqpError::new(504, format!("expected 'channel.open' on channel {ch}")).on(ids(&m)),
                ctx,
            );
            return false;
        };
        if st.closing {
            match m {
                AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => self.forget_channel(ch),
                AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                    self.method(
                        ch,
                        AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                    );
                    self.forget_channel(ch);
                }
                _ => {}
            }
            return false;
        }
        if st.content.is_some() {
            self.close_with(
                AmqpError::new(
                    505,
                    format!("expected content on channel {ch}, got a method"),
                )
                .on(ids(&m)),
                ctx,
            );
            return false;
        }
        if let AMQPClass::Basic(basic::AMQPMethod::Publish(p)) = m {
            st.content = Some(Content {
                publish: p,
                header: None,
                parts: Vec::new(),
                got: 0,
            });
            return false;
        }
        st.pending.push_back(Command::Method(Box::new(m)));
        self.backlog.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn on_header(
        &mut self,
        ch: u16,
        size: u64,
        properties: AMQPProperties,
        ctx: &mut Context<Self>,
    ) -> bool {
        let max = self.shared.settings.amqp.max_message_size;
        let Some(st) = self.channels.get_mut(&ch) else {
            self.close_with(
                AmqpError::new(504, format!("content on closed channel {ch}")),
                ctx,
            );
            return false;
        };
        if st.closing {
            return false;
        }
        match &mut st.content {
            Some(c) if c.header.is_none() => {
                if size > max {
                    st.content = None;
                    self.channel_error(
                        ch,
                        AmqpError::new(
                            406,
                            format!("message size {size} is larger than configured max size {max}"),
                        )
                        .on((60, 40)),
                        ctx,
                    );
                    return false;
                }
                c.header = Some((properties, size));
                if size == 0 {
                    return self.content_done(ch);
                }
                false
            }
            _ => {
                self.close_with(
                    AmqpError::new(505, format!("unexpected content header on channel {ch}")),
                    ctx,
                );
                false
            }
        }
    }

    fn on_body(&mut self, ch: u16, b: Bytes, ctx: &mut Context<Self>) -> bool {
        let Some(st) = self.channels.get_mut(&ch) else {
            self.close_with(
                AmqpError::new(504, format!("content on closed channel {ch}")),
                ctx,
            );
            return false;
        };
        if st.closing {
            return false;
        }
        match &mut st.content {
            Some(Content {
                header: Some((_, size)),
                parts,
                got,
                ..
            }) => {
                *got += b.len() as u64;
                if *got > *size {
                    let e = AmqpError::new(
                        501,
                        format!("body frames carry more than the {size} bytes announced"),
                    );
                    self.close_with(e, ctx);
                    return false;
                }
                parts.push(b);
                if *got == *size {
                    return self.content_done(ch);
                }
                false
            }
            _ => {
                self.close_with(
                    AmqpError::new(505, format!("unexpected content body on channel {ch}")),
                    ctx,
                );
                false
            }
        }
    }

    /// A publish's content is complete: queue it as a command.
    fn content_done(&mut self, ch: u16) -> bool {
        let Some(st) = self.channels.get_mut(&ch) else {
            return false;
        };
        let Some(Content {
            publish,
            header: Some((properties, size)),
            mut parts,
            ..
        }) = st.content.take()
        else {
            return false;
        };
        let body = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            let mut b = BytesMut::with_capacity(size as usize);
            for p in &parts {
                b.extend_from_slice(p);
            }
            b.freeze()
        };
        st.pending
            .push_back(Command::Publish(Box::new(PublishCommand {
                publish,
                properties,
                body,
            })));
        self.backlog.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Runs channel `ch`'s queued commands until one has to wait.
    pub(super) fn pump(&mut self, ch: u16, ctx: &mut Context<Self>) {
        loop {
            let Some(st) = self.channels.get_mut(&ch) else {
                return;
            };
            if st.busy || st.closing {
                break;
            }
            let Some(cmd) = st.pending.pop_front() else {
                break;
            };
            self.backlog.fetch_sub(1, Ordering::AcqRel);
            match cmd {
                Command::Publish(p) => self.publish(ch, *p, ctx),
                Command::Method(m) => {
                    let settles_only = matches!(
                        *m,
                        AMQPClass::Basic(
                            basic::AMQPMethod::Ack(_)
                                | basic::AMQPMethod::Nack(_)
                                | basic::AMQPMethod::Reject(_)
                        )
                    );
                    if !settles_only {
                        // What the client sent before this method takes effect first.
                        self.send_batch(ch, ctx);
                        if let Some(st) = self.channels.get_mut(&ch) {
                            st.core.flush_settles();
                        }
                    }
                    self.channel_method(ch, *m, ctx);
                }
            }
        }
        self.send_batch(ch, ctx);
        if let Some(st) = self.channels.get_mut(&ch) {
            st.core.flush_settles();
        }
        if self.backlog.load(Ordering::Acquire) < MAX_BACKLOG {
            self.flow.notify.notify_waiters();
        }
    }

    /// Adds one publish to the channel's batch (looking its exchange up first if needed).
    fn publish(&mut self, ch: u16, cmd: PublishCommand, ctx: &mut Context<Self>) {
        self.publisher = true;
        let PublishCommand {
            publish: p,
            properties,
            body,
        } = cmd;
        let name = p.exchange.as_str().to_string();
        let same = self.channels[&ch]
            .batch
            .as_ref()
            .is_some_and(|(x, items)| x.name() == name && items.len() < MAX_PUBLISH_BATCH);
        if !same {
            self.send_batch(ch, ctx);
            let st = self.channels.get_mut(&ch).expect("open");
            match st.core.cached_exchange(&name) {
                Some(x) => st.batch = Some((x, Vec::new())),
                None => {
                    // Look it up, then handle this publish again.
                    st.pending
                        .push_front(Command::Publish(Box::new(PublishCommand {
                            publish: p,
                            properties,
                            body,
                        })));
                    self.backlog.fetch_add(1, Ordering::AcqRel);
                    self.lookup_exchange(ch, name, ctx);
                    return;
                }
            }
        }
        if let Some(uid) = properties.user_id() {
            if uid.as_str() != self.user {
                let e = AmqpError::new(
                    406,
                    format!(
                        "user_id property set to '{uid}' but authenticated user was '{}'",
                        self.user
                    ),
                )
                .on((60, 40));
                self.channel_error(ch, e, ctx);
                return;
            }
        }
        let st = self.channels.get_mut(&ch).expect("open");
        let seq = st.core.next_seq();
        let (x, items) = st.batch.as_mut().expect("batch set above");
        items.push(Outbound {
            seq,
            mandatory: p.mandatory,
            message: Arc::new(Message {
                exchange: x.name_arc().clone(),
                routing_key: p.routing_key.as_str().to_string(),
                properties: Properties::shared(Some(properties_in(&properties))),
                body,
            }),
        });
    }

    fn lookup_exchange(&mut self, ch: u16, name: String, ctx: &mut Context<Self>) {
        let registry = self.session.as_ref().expect("open").registry.clone();
        let vhost = self.session.as_ref().expect("open").vhost.clone();
        let fut = async move {
            let x = registry
                .send(LookupExchange { name: name.clone() })
                .await??;
            if x.spec().internal {
                return Err(BrokerError::access_refused(format!(
                    "cannot publish to internal exchange '{name}' in vhost '{vhost}'"
                )));
            }
            Ok(x)
        };
        self.run(
            ch,
            (60, 40),
            fut,
            |act, ch, x, _ctx| {
                if let Some(st) = act.channels.get_mut(&ch) {
                    st.core.cache_exchange(x);
                }
            },
            ctx,
        );
    }

    /// Sends channel `ch`'s batch; its outcomes come back as confirms, nacks, returns.
    pub(super) fn send_batch(&mut self, ch: u16, ctx: &mut Context<Self>) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        let Some((x, items)) = st.batch.take() else {
            return;
        };
        if items.is_empty() {
            return;
        }
        self.stats.add_published(items.len() as u64);
        let gauge = self.shared.broker.memory().clone();
        let fut = st.core.send_batch(&x, &items, &gauge, &self.flow);
        let epoch = st.core.owner();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(fut).map(move |res, act, _ctx| {
                let Some(st) = act.channels.get_mut(&ch) else {
                    return;
                };
                if st.core.owner() != epoch || st.closing {
                    return;
                }
                if res.is_err() {
                    st.core.forget_exchange(x.name());
                }
                let outcomes = st.core.on_published(&items, res);
                for o in outcomes {
                    act.publish_outcome(ch, &items, o);
                }
                act.flush();
            }),
        );
    }

    fn publish_outcome(&mut self, ch: u16, items: &[Outbound], o: PublishOutcome) {
        match o {
            PublishOutcome::Return { index } => {
                let m = &items[index].message;
                self.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                        reply_code: 312,
                        reply_text: "NO_ROUTE".into(),
                        exchange: super::properties::short(&m.exchange),
                        routing_key: super::properties::short(&m.routing_key),
                    })),
                );
                let props = super::properties::properties_out(&m.properties);
                let fm = self.frame_max();
                self.enc.content(&mut self.out, ch, props, &m.body, fm);
            }
            PublishOutcome::Nack { seq, error } => {
                tracing::debug!(channel = ch, seq, %error, "publish nacked");
                self.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    })),
                );
            }
            PublishOutcome::Error(e) => {
                tracing::warn!(channel = ch, error = %e, "publish refused");
            }
            PublishOutcome::Confirm { seq } => self.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: seq,
                    multiple: true,
                })),
            ),
        }
    }

    /// Runs `fut` for channel `ch`, which waits (busy) until it is answered; then
    /// `done` writes the answer, or the error closes the channel (or the connection).
    pub(super) fn run<T: 'static>(
        &mut self,
        ch: u16,
        method: (u16, u16),
        fut: impl std::future::Future<Output = Result<T, BrokerError>> + 'static,
        done: impl FnOnce(&mut Self, u16, T, &mut Context<Self>) + 'static,
        ctx: &mut Context<Self>,
    ) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        st.busy = true;
        let epoch = st.core.owner();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(fut).map(move |res, act, ctx| {
                let alive = act
                    .channels
                    .get(&ch)
                    .is_some_and(|s| s.core.owner() == epoch && !s.closing);
                if !alive || act.phase == Phase::Closing {
                    return;
                }
                if let Some(st) = act.channels.get_mut(&ch) {
                    st.busy = false;
                }
                match res {
                    Ok(v) => done(act, ch, v, ctx),
                    Err(e) => act.channel_error(ch, AmqpError::from(e).on(method), ctx),
                }
                act.pump(ch, ctx);
                act.flush();
            }),
        );
    }

    /// Closes channel `ch` with `e` (or the connection, for a connection-level code).
    pub(super) fn channel_error(&mut self, ch: u16, e: AmqpError, ctx: &mut Context<Self>) {
        if e.is_connection_level() {
            self.close_with(e, ctx);
            return;
        }
        tracing::info!(peer = %self.peer, channel = ch, code = e.code, text = %e.text, "closing channel");
        // Publishes sent before the error still count.
        self.send_batch(ch, ctx);
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        st.closing = true;
        let dropped = st.pending.len();
        st.pending.clear();
        st.content = None;
        self.backlog.fetch_sub(dropped, Ordering::AcqRel);
        let tags = st.core.release();
        for t in tags {
            self.consumer_channels.remove(&t);
        }
        let (class_id, method_id) = e.method;
        self.method(
            ch,
            AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                reply_code: e.code,
                reply_text: e.short_text(),
                class_id,
                method_id,
            })),
        );
    }

    /// Forgets channel `ch` after its close handshake, releasing what it held.
    pub(super) fn forget_channel(&mut self, ch: u16) {
        if let Some(mut st) = self.channels.remove(&ch) {
            self.backlog.fetch_sub(st.waiting(), Ordering::AcqRel);
            for t in st.core.release() {
                self.consumer_channels.remove(&t);
            }
        }
        self.stats
            .channels
            .store(self.channels.len() as u32, Ordering::Relaxed);
    }
}
