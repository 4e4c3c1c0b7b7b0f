//! The basic class: qos, consume, cancel, get, ack / nack / reject, recover, on the
//! channel core (publish lives in `publish`, deliveries in `deliver`).

use super::connection::AmqpConnection;
use super::errors::AmqpError;
use super::properties::{args_in, short};
use super::reply_to::REPLY_TO;
use crate::broker::messages::*;
use crate::broker::queue::QueueHandle;
use crate::error::BrokerError;
use actix::prelude::*;
use amq_protocol::protocol::{basic, AMQPClass};

impl AmqpConnection {
    pub(super) fn basic_method(
        &mut self,
        ch: u16,
        method: (u16, u16),
        m: basic::AMQPMethod,
        ctx: &mut Context<Self>,
    ) {
        let settle =
            |act: &mut Self, tag: u64, multiple: bool, s: Settlement, ctx: &mut Context<Self>| {
                let r = match act.channels.get_mut(&ch) {
                    Some(st) => st.core.settle(tag, multiple, s),
                    None => Ok(()),
                };
                if let Err(e) = r {
                    act.channel_error(ch, AmqpError::from(e).on(method), ctx);
                } else {
                    // Room under a shared limit (basic.qos global=true) for held ones.
                    act.write_held(ch);
                }
            };
        let requeue = |r: bool| {
            if r {
                Settlement::Requeue
            } else {
                Settlement::Discard
            }
        };
        match m {
            basic::AMQPMethod::Ack(a) => {
                settle(self, a.delivery_tag, a.multiple, Settlement::Ack, ctx)
            }
            basic::AMQPMethod::Nack(n) => {
                settle(self, n.delivery_tag, n.multiple, requeue(n.requeue), ctx)
            }
            basic::AMQPMethod::Reject(r) => {
                settle(self, r.delivery_tag, false, requeue(r.requeue), ctx)
            }
            basic::AMQPMethod::Qos(q) => {
                if let Some(st) = self.channels.get_mut(&ch) {
                    if q.global {
                        // RabbitMQ's reading: one limit shared by the channel's consumers.
                        st.global_prefetch = q.prefetch_count as u32;
                    } else {
                        // Per consumer, for new consumers and the channel's existing
                        // ones (docs/AMQP.md: the kombu / Celery reading).
                        st.core.set_prefetch(q.prefetch_count as u32);
                    }
                }
                self.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                self.write_held(ch);
            }
            basic::AMQPMethod::Recover(basic::Recover { requeue: false })
            | basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue: false }) => {
                // The spec's requeue=false (redeliver to the same consumer) is not served,
                // and RabbitMQ 3.x says so with a hard error rather than requeueing anyway.
                self.close_with(AmqpError::new(540, "requeue=false").on(method), ctx);
            }
            basic::AMQPMethod::Recover(_) => {
                if let Some(st) = self.channels.get_mut(&ch) {
                    st.core.recover();
                }
                self.write_held(ch);
                self.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
            }
            basic::AMQPMethod::RecoverAsync(_) => {
                if let Some(st) = self.channels.get_mut(&ch) {
                    st.core.recover();
                }
            }
            basic::AMQPMethod::Consume(c) => self.consume(ch, method, c, ctx),
            basic::AMQPMethod::Cancel(c) => {
                let tag = c.consumer_tag.to_string();
                if let Some(st) = self.channels.get_mut(&ch) {
                    if st.reply_to.as_ref().is_some_and(|(_, t)| *t == tag) {
                        let (token, _) = st.reply_to.take().expect("checked");
                        self.shared.direct_replies.remove(&token);
                        self.consumer_channels.remove(&tag);
                    }
                }
                let chan_owner = self.channels.get(&ch).map(|s| s.core.owner());
                // The tag stays mapped to `ch` until the cancel is answered: deliveries
                // the queue sent before it saw the cancel are written (an auto-acked
                // one has left the queue), before the cancel-ok, as RabbitMQ does.
                let entry = self
                    .channels
                    .get_mut(&ch)
                    .and_then(|st| st.core.begin_cancel(&tag));
                let queue = entry.and_then(|e| e.queue);
                let nowait = c.nowait;
                // Sent to the queue now, not when the future is first polled: actix
                // drains the whole mailbox before it polls a spawned future, and a
                // follower's consume session takes an auto-ack consumer's credit that
                // reaches it before the cancel as "written" (issue 17). Through the
                // queue's fast lane, in order with this channel's acks.
                let cancelled = match (queue, chan_owner) {
                    (Some(q), Some(o)) => Some(q.cancel(o, &tag)),
                    _ => None,
                };
                self.run(
                    ch,
                    method,
                    async move {
                        if let Some(done) = cancelled {
                            let _ = done.await;
                        }
                        Ok(())
                    },
                    move |act, ch, (), _| {
                        act.end_cancel(ch, &tag);
                        if !nowait {
                            act.method(
                                ch,
                                AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                                    consumer_tag: short(&tag),
                                })),
                            );
                        }
                    },
                    ctx,
                );
            }
            basic::AMQPMethod::Get(g) => {
                let registry = self.session.as_ref().expect("open").registry.clone();
                let name = self.queue_name(ch, g.queue.as_str());
                let owner = self.owner;
                let Some(chan_owner) = self.channels.get(&ch).map(|s| s.core.owner()) else {
                    return;
                };
                let no_ack = g.no_ack;
                self.run(
                    ch,
                    method,
                    async move {
                        let q: QueueHandle = registry.send(LookupQueue { name, owner }).await??;
                        let got = q
                            .addr()
                            .send(Get {
                                owner: chan_owner,
                                auto_ack: no_ack,
                            })
                            .await??;
                        Ok((q, got))
                    },
                    move |act, ch, (q, got), _| act.got(ch, q, got, no_ack),
                    ctx,
                );
            }
            other => {
                let class = AMQPClass::Basic(other);
                let e = AmqpError::new(503, "this basic method is sent by servers only")
                    .on((class.get_amqp_class_id(), class.get_amqp_method_id()));
                self.close_with(e, ctx);
            }
        }
    }

    fn consume(&mut self, ch: u16, method: (u16, u16), c: basic::Consume, ctx: &mut Context<Self>) {
        let registry = self.session.as_ref().expect("open").registry.clone();
        let owner = self.owner;
        let tag = if c.consumer_tag.as_str().is_empty() {
            self.ctag_seq += 1;
            format!("amq.ctag-{}-{}", owner.0, self.ctag_seq)
        } else {
            c.consumer_tag.to_string()
        };
        if let Some(&holder) = self.consumer_channels.get(&tag) {
            // A tag being cancelled on another channel is still that channel's: the
            // deliveries on their way to its consumer are routed by tag, and taken
            // here they would be written on this channel (acked here, they stayed
            // unacked at their queue for the other channel).
            let cancelling = self.cancelling_anywhere(&tag);
            if holder != ch || !cancelling {
                let m = match cancelling {
                    true => format!("attempt to reuse consumer tag '{tag}' (its cancel on channel {holder} is not answered yet)"),
                    false => format!("attempt to reuse consumer tag '{tag}'"),
                };
                self.close_with(AmqpError::new(530, m).on(method), ctx);
                return;
            }
        }
        let max = self.shared.settings.limits.consumer_max_per_channel;
        let count = self
            .channels
            .get(&ch)
            .map_or(0, |st| st.core.consumer_count());
        if max > 0 && count >= max {
            // RabbitMQ's consumer_max_per_channel: a connection error, in its words.
            let m = format!("reached maximum ({max}) of consumers per channel");
            tracing::warn!(peer = %self.peer, channel = ch, "consume refused: {m}");
            self.close_with(AmqpError::new(530, m).on(method), ctx);
            return;
        }
        let name = self.queue_name(ch, c.queue.as_str());
        if name == REPLY_TO {
            self.consume_replies(ch, method, tag, c, ctx);
            return;
        }
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        st.core.consumer_starting(&tag, c.no_ack);
        let chan_owner = st.core.owner();
        self.consumer_channels.insert(tag.clone(), ch);
        let options = ConsumerSpec {
            tag: tag.clone(),
            prefetch: st.core.prefetch(),
            auto_ack: c.no_ack,
            exclusive: c.exclusive,
            arguments: crate::broker::stream::args::amqp_consume_arguments(
                args_in(&c.arguments),
                &c.arguments,
            ),
        };
        let (qname, vhost) = (
            name.clone(),
            self.session.as_ref().expect("open").vhost.clone(),
        );
        let window = self.shared.broker.context().consumer_window;
        let addr = ctx.address();
        let (deliver, cancelled) = (addr.clone().recipient(), addr.recipient());
        let nowait = c.nowait;
        let t2 = tag.clone();
        let fut = async move {
            let q: QueueHandle = registry.send(LookupQueue { name, owner }).await??;
            q.addr()
                .send(Consume {
                    options,
                    owner: chan_owner,
                    deliver,
                    cancelled: Some(cancelled),
                    window,
                    accepts_stored: false,
                    run_bytes: 0,
                })
                .await??;
            Ok::<_, BrokerError>(q)
        };
        // Errors are handled here (the consumer must be forgotten), not by `run`.
        let fut = async move { Ok::<_, BrokerError>(fut.await) };
        self.run(
            ch,
            method,
            fut,
            move |act, ch, res, ctx| match res {
                Ok(q) => {
                    let early = match act.channels.get_mut(&ch) {
                        Some(st) => st.core.consumer_started(&t2, q),
                        None => return,
                    };
                    if !nowait {
                        act.method(
                            ch,
                            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                                consumer_tag: short(&t2),
                            })),
                        );
                    }
                    for d in early {
                        act.deliver_or_hold(ch, d);
                    }
                }
                Err(e) => {
                    if let Some(st) = act.channels.get_mut(&ch) {
                        st.core.consumer_failed(&t2);
                    }
                    act.consumer_channels.remove(&t2);
                    act.channel_error(ch, consume_error(e, &qname, &vhost).on(method), ctx);
                }
            },
            ctx,
        );
    }

    /// Consumes from the direct reply-to pseudo-queue: no queue, a token.
    fn consume_replies(
        &mut self,
        ch: u16,
        method: (u16, u16),
        tag: String,
        c: basic::Consume,
        ctx: &mut Context<Self>,
    ) {
        if !c.no_ack {
            let e = AmqpError::new(406, "reply consumer cannot acknowledge");
            self.channel_error(ch, e.on(method), ctx);
            return;
        }
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        if st.reply_to.is_some() {
            let e = AmqpError::new(406, "reply consumer already set");
            self.channel_error(ch, e.on(method), ctx);
            return;
        }
        self.ctag_seq += 1;
        let token = format!("g{}.{}.{}", self.owner.0, st.core.owner().0, self.ctag_seq);
        st.reply_to = Some((token.clone(), tag.clone()));
        self.consumer_channels.insert(tag.clone(), ch);
        self.shared
            .direct_replies
            .add(&token, ctx.address().recipient(), ch);
        if !c.nowait {
            self.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: short(&tag),
                })),
            );
        }
    }
}

/// RabbitMQ's answer to a consume that an exclusive consumer prevents (one already on
/// the queue, or an exclusive one asked while others are there): 403 "in exclusive
/// use", where the broker says RESOURCE_LOCKED.
fn consume_error(e: BrokerError, queue: &str, vhost: &str) -> AmqpError {
    let exclusive = e.code() == crate::error::ErrorCode::ResourceLocked
        && (e.message().contains("exclusive consumer")
            || e.message().contains("exclusive consume refused"));
    if exclusive {
        AmqpError::new(
            403,
            format!("queue '{queue}' in vhost '{vhost}' in exclusive use"),
        )
    } else {
        AmqpError::from(e)
    }
}
