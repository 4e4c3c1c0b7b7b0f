//! Each channel's request pipeline: its queued commands run in order until one must
//! wait for another actor's answer (the channel is then busy, and its later commands
//! wait behind it while other channels go on); errors close the channel or the
//! connection; a closed channel releases what it held.

use super::Command;
use crate::amqp::connection::{AmqpConnection, Phase, MAX_BACKLOG};
use crate::amqp::errors::AmqpError;
use crate::error::BrokerError;
use actix::prelude::*;
use amq_protocol::protocol::{basic, channel as chan, AMQPClass};
use std::sync::atomic::Ordering;

impl AmqpConnection {
    /// Runs channel `ch`'s queued commands until one has to wait.
    pub(in crate::amqp) fn pump(&mut self, ch: u16, ctx: &mut Context<Self>) {
        loop {
            let Some(st) = self.channels.get_mut(&ch) else {
                return;
            };
            if st.busy || st.closing || st.wait_publishes {
                break;
            }
            let Some(cmd) = st.pending.pop_front() else {
                break;
            };
            self.backlog.fetch_sub(1, Ordering::AcqRel);
            match cmd {
                Command::Publish(p) => {
                    let st = self.channels.get_mut(&ch).expect("open");
                    if st.core.transactional() {
                        // Routed at tx.commit, dropped at tx.rollback.
                        st.tx_publishes.push(*p);
                    } else {
                        self.publish(ch, *p, ctx);
                    }
                }
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
                        // What the client sent before this method takes effect first:
                        // its publishes are in their queues before a get, declare, purge
                        // or consume looks at them (RabbitMQ's order on a channel).
                        self.send_batch(ch, ctx);
                        let st = self.channels.get_mut(&ch).expect("open");
                        st.core.flush_settles();
                        if st.publishes_in_flight > 0 {
                            st.wait_publishes = true;
                            st.pending.push_front(Command::Method(m));
                            self.backlog.fetch_add(1, Ordering::AcqRel);
                            break;
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

    /// Runs `fut` for channel `ch`, which waits (busy) until it is answered; then
    /// `done` writes the answer, or the error closes the channel (or the connection).
    pub(in crate::amqp) fn run<T: 'static>(
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
                let deferred = match act.channels.get_mut(&ch) {
                    Some(st) if !st.closing => std::mem::take(&mut st.deferred_cancels),
                    _ => Vec::new(),
                };
                for tag in deferred {
                    act.notify_cancelled(ch, tag);
                }
                act.pump(ch, ctx);
                act.flush();
            }),
        );
    }

    /// Tells the client its consumer `tag` on channel `ch` was cancelled by the broker
    /// (its queue went), after the answer the channel waits for, if any.
    pub(in crate::amqp) fn notify_cancelled(&mut self, ch: u16, tag: String) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        if st.closing {
            return;
        }
        if st.busy {
            st.deferred_cancels.push(tag);
            return;
        }
        self.method(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: crate::amqp::properties::short(&tag),
                nowait: true,
            })),
        );
    }

    /// Closes channel `ch` with `e` (or the connection, for a connection-level code).
    pub(in crate::amqp) fn channel_error(
        &mut self,
        ch: u16,
        e: AmqpError,
        ctx: &mut Context<Self>,
    ) {
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
        if let Some((token, tag)) = st.reply_to.take() {
            self.shared.direct_replies.remove(&token);
            self.consumer_channels.remove(&tag);
        }
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
    pub(in crate::amqp) fn forget_channel(&mut self, ch: u16) {
        if let Some(mut st) = self.channels.remove(&ch) {
            self.backlog.fetch_sub(st.waiting(), Ordering::AcqRel);
            if let Some((token, tag)) = st.reply_to.take() {
                self.shared.direct_replies.remove(&token);
                self.consumer_channels.remove(&tag);
            }
            for t in st.core.release() {
                self.consumer_channels.remove(&t);
            }
        }
        self.stats
            .channels
            .store(self.channels.len() as u32, Ordering::Relaxed);
    }
}
