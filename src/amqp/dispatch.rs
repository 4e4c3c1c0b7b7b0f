//! Frames to channel commands: content reassembly (method, header, body frames) with
//! its limits; each channel's request pipeline is in [`pipeline`].
//!
//! A channel handles its commands in order. Publishes are batched (one `Publish` per
//! exchange per read); acks are held and coalesced by the channel core; a method that
//! needs another actor's answer (declare, consume, get, an exchange lookup) marks the
//! channel busy, and the channel's later commands wait in its queue until the answer
//! is written, while the connection's other channels go on. A connection-wide bound
//! on waiting commands ([`MAX_BACKLOG`](super::connection::MAX_BACKLOG)) stops the reader when reached.

use super::codec::Incoming;
use super::connection::{AmqpConnection, Phase};
pub(super) use super::content::PublishCommand;
use super::content::{self, Content};
use super::errors::AmqpError;
use crate::broker::exchange::ExchangeHandle;
use crate::broker::messages::{Deliver, Settlement};
use crate::channel::{Channel, Outbound};
use actix::prelude::*;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{channel as chan, AMQPClass};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

mod pipeline;

/// A command of a channel, in the order the client sent it.
pub(super) enum Command {
    /// A method without content.
    Method(Box<AMQPClass>),
    /// A complete `basic.publish` with its content.
    Publish(Box<PublishCommand>),
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
    pub pending: VecDeque<Command>,
    /// The publish being reassembled.
    content: Option<Content>,
    /// Publishes batched for one exchange.
    pub batch: Option<(ExchangeHandle, Vec<Outbound>)>,
    /// The last queue declared on this channel (AMQP's "" = that queue).
    pub last_queue: String,
    /// Publishes of the open transaction (`tx.select`), routed at commit.
    pub tx_publishes: Vec<PublishCommand>,
    /// The direct reply-to consumer of this channel: (token, consumer tag).
    pub reply_to: Option<(String, String)>,
    /// Publish batches sent to exchanges and not yet answered.
    pub publishes_in_flight: usize,
    /// A method waits for [`Self::publishes_in_flight`] to reach 0 (see `pump`).
    pub wait_publishes: bool,
    /// Broker-side cancels that arrived while the channel waited for an answer: sent
    /// after it (a `queue.delete` answers delete-ok before its consumers' cancels, as
    /// RabbitMQ does).
    pub deferred_cancels: Vec<String>,
    /// Deliveries not written yet: the channel is paused (`channel.flow`) or at its
    /// shared limit (`basic.qos global=true`). Their transport credit is held with
    /// them, so a queue stops sending once its window is here.
    pub held: VecDeque<Deliver>,
    /// `channel.flow(active=false)` received and not yet undone.
    pub flow_paused: bool,
    /// The channel-wide limit of unacked deliveries (`basic.qos global=true`), 0 = none.
    pub global_prefetch: u32,
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
            tx_publishes: Vec::new(),
            reply_to: None,
            publishes_in_flight: 0,
            wait_publishes: false,
            deferred_cancels: Vec::new(),
            held: VecDeque::new(),
            flow_paused: false,
            global_prefetch: 0,
        }
    }

    /// Commands waiting (for the connection's backlog count).
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Nothing waits before a new command: it may run at once, in order.
    fn idle(&self) -> bool {
        !self.busy
            && !self.closing
            && !self.wait_publishes
            && self.content.is_none()
            && self.pending.is_empty()
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
            // The hot methods' own variants, on channel 0, are what they are: methods.
            let f = match f {
                Incoming::Publish(0, p) => {
                    Incoming::Method(0, Box::new(AMQPClass::Basic(basic::AMQPMethod::Publish(p))))
                }
                Incoming::Ack(0, delivery_tag, multiple) => Incoming::Method(
                    0,
                    Box::new(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag,
                        multiple,
                    }))),
                ),
                f => f,
            };
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
                Incoming::Publish(ch, p) => {
                    if self.on_publish(ch, p, ctx) && !touched.contains(&ch) {
                        touched.push(ch);
                    }
                }
                Incoming::Ack(ch, tag, multiple) => {
                    if self.on_ack(ch, tag, multiple, ctx) && !touched.contains(&ch) {
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
            } else if self.channel_max != 0 && self.channels.len() >= usize::from(self.channel_max)
            {
                // As RabbitMQ, channel_max bounds how many channels are open, not their
                // numbers (aiormq's suite opens channel 65535 under channel_max 2047).
                self.close_with(
                    AmqpError::new(
                        530,
                        format!(
                            "number of channels opened ({}) has reached the negotiated channel_max ({})",
                            self.channels.len(),
                            self.channel_max
                        ),
                    )
                    .on((20, 10)),
                    ctx,
                );
            } else {
                let owner = self.shared.broker.new_owner();
                let mut core = Channel::new(owner);
                let vhost = self.session.as_ref().map(|s| s.vhost.as_str());
                core.set_access(crate::channel::Access::new(
                    self.shared.broker.definitions(),
                    &self.user,
                    vhost.unwrap_or_default(),
                ));
                self.channels.insert(ch, Box::new(ChannelState::new(core)));
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
            if p.immediate {
                // RabbitMQ 3 dropped `immediate` and closes the connection, as here.
                self.close_with(AmqpError::new(540, "immediate=true").on((60, 40)), ctx);
                return false;
            }
            st.content = Some(Content::new(p));
            return false;
        }
        st.pending.push_back(Command::Method(Box::new(m)));
        self.backlog.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// `basic.publish` (read in place); true when a command was queued.
    fn on_publish(&mut self, ch: u16, p: basic::Publish, ctx: &mut Context<Self>) -> bool {
        match self.channels.get_mut(&ch) {
            Some(st) if !st.closing && st.content.is_none() && !p.immediate => {
                st.content = Some(Content::new(p));
                false
            }
            // Anything unusual the general path answers.
            _ => self.on_channel_method(ch, AMQPClass::Basic(basic::AMQPMethod::Publish(p)), ctx),
        }
    }

    /// `basic.ack` (read in place): settled at once when nothing waits before it on
    /// its channel (the common case: no boxed method, no command queued); else queued
    /// in order like any method. True when the channel needs a pump.
    fn on_ack(&mut self, ch: u16, tag: u64, multiple: bool, ctx: &mut Context<Self>) -> bool {
        match self.channels.get_mut(&ch) {
            Some(st) if st.idle() => {
                let r = st.core.settle(tag, multiple, Settlement::Ack);
                match r {
                    Ok(()) => self.write_held(ch),
                    Err(e) => self.channel_error(ch, AmqpError::from(e).on((60, 80)), ctx),
                }
                true
            }
            _ => {
                let m = basic::Ack {
                    delivery_tag: tag,
                    multiple,
                };
                self.on_channel_method(ch, AMQPClass::Basic(basic::AMQPMethod::Ack(m)), ctx)
            }
        }
    }

    fn on_header(
        &mut self,
        ch: u16,
        size: u64,
        properties: Option<Box<AMQPProperties>>,
        ctx: &mut Context<Self>,
    ) -> bool {
        let max = self.shared.settings.amqp.max_message_size;
        let header_limit = properties
            .as_ref()
            .and_then(|p| p.headers().as_ref())
            .and_then(|h| {
                let shape = super::limits::amqp_table_shape(h);
                crate::message::shape::check_headers(shape, &self.shared.settings.limits).err()
            });
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
        if let Some(m) = header_limit.filter(|_| content::awaits_header(&st.content)) {
            st.content = None;
            tracing::warn!(peer = %self.peer, "publish refused: {m}");
            self.channel_error(ch, AmqpError::new(406, m).on((60, 40)), ctx);
            return false;
        }
        match content::on_header(&mut st.content, ch, size, properties, max) {
            Ok(None) => false,
            Ok(Some(cmd)) => self.content_done(ch, cmd, ctx),
            Err(e) => {
                self.channel_error(ch, e, ctx);
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
        match content::on_body(&mut st.content, ch, b) {
            Ok(None) => false,
            Ok(Some(cmd)) => self.content_done(ch, cmd, ctx),
            Err(e) => {
                self.channel_error(ch, e, ctx);
                false
            }
        }
    }

    /// A publish's content is complete: into the channel's batch at once when nothing
    /// waits before it (the common case), else queued as a command. True when the
    /// channel needs a pump (which sends the batch).
    fn content_done(&mut self, ch: u16, cmd: PublishCommand, ctx: &mut Context<Self>) -> bool {
        let Some(st) = self.channels.get_mut(&ch) else {
            return false;
        };
        if st.idle() && !st.core.transactional() {
            self.publish(ch, cmd, ctx);
            return true;
        }
        st.pending.push_back(Command::Publish(Box::new(cmd)));
        self.backlog.fetch_add(1, Ordering::AcqRel);
        true
    }
}
