//! Channel methods mapped onto the broker's actor messages: exchange, queue, basic and
//! confirm classes. Each answers with its `-ok` (unless `nowait`) or closes the channel
//! with the error's reply code.

use super::connection::AmqpConnection;
use super::errors::AmqpError;
use super::properties::{short, table_in};
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::*;
use crate::broker::queue::{QueueHandle, QueueSpec};
use crate::error::BrokerError;
use actix::prelude::*;
use amq_protocol::protocol::{
    access, basic, channel as chan, confirm, exchange as ex, queue as qu, AMQPClass,
};

impl AmqpConnection {
    /// Handles one method of channel `ch` (in the channel's order).
    pub(super) fn channel_method(&mut self, ch: u16, m: AMQPClass, ctx: &mut Context<Self>) {
        let method = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let registry = self.session.as_ref().expect("open").registry.clone();
        let owner = self.owner;
        match m {
            AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                self.method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                );
                self.forget_channel(ch);
            }
            AMQPClass::Channel(chan::AMQPMethod::Flow(f)) => {
                self.method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: f.active })),
                );
            }
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => {}
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.method(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
            }
            AMQPClass::Exchange(ex::AMQPMethod::Declare(d)) => {
                let mut arguments = table_in(&d.arguments);
                let spec = ExchangeSpec {
                    name: d.exchange.to_string(),
                    kind: d.kind.to_string(),
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: std::mem::take(&mut arguments),
                };
                let passive = d.passive;
                let nowait = d.nowait;
                self.run(
                    ch,
                    method,
                    async move { registry.send(DeclareExchange { spec, passive }).await? },
                    move |act, ch, (), _| {
                        if !nowait {
                            act.method(
                                ch,
                                AMQPClass::Exchange(ex::AMQPMethod::DeclareOk(ex::DeclareOk {})),
                            );
                        }
                    },
                    ctx,
                );
            }
            AMQPClass::Exchange(ex::AMQPMethod::Delete(d)) => {
                let name = d.exchange.to_string();
                if let Some(st) = self.channels.get_mut(&ch) {
                    st.core.forget_exchange(&name);
                }
                let (if_unused, nowait) = (d.if_unused, d.nowait);
                self.run(
                    ch,
                    method,
                    async move { registry.send(DeleteExchange { name, if_unused }).await? },
                    move |act, ch, (), _| {
                        if !nowait {
                            act.method(
                                ch,
                                AMQPClass::Exchange(ex::AMQPMethod::DeleteOk(ex::DeleteOk {})),
                            );
                        }
                    },
                    ctx,
                );
            }
            AMQPClass::Exchange(ex::AMQPMethod::Bind(b)) => {
                let bind = Bind {
                    exchange: b.source.to_string(),
                    target: BindTarget::Exchange(b.destination.to_string()),
                    routing_key: b.routing_key.to_string(),
                    arguments: table_in(&b.arguments),
                    owner,
                };
                let nowait = b.nowait;
                self.run(
                    ch,
                    method,
                    async move { registry.send(bind).await? },
                    move |act, ch, (), _| {
                        if !nowait {
                            act.method(
                                ch,
                                AMQPClass::Exchange(ex::AMQPMethod::BindOk(ex::BindOk {})),
                            );
                        }
                    },
                    ctx,
                );
            }
            AMQPClass::Exchange(ex::AMQPMethod::Unbind(b)) => {
                let binding = Bind {
                    exchange: b.source.to_string(),
                    target: BindTarget::Exchange(b.destination.to_string()),
                    routing_key: b.routing_key.to_string(),
                    arguments: table_in(&b.arguments),
                    owner,
                };
                let nowait = b.nowait;
                self.run(
                    ch,
                    method,
                    async move { registry.send(Unbind { binding }).await? },
                    move |act, ch, (), _| {
                        if !nowait {
                            act.method(
                                ch,
                                AMQPClass::Exchange(ex::AMQPMethod::UnbindOk(ex::UnbindOk {})),
                            );
                        }
                    },
                    ctx,
                );
            }
            AMQPClass::Queue(qm) => self.queue_method(ch, method, qm, ctx),
            AMQPClass::Basic(bm) => self.basic_method(ch, method, bm, ctx),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if let Some(st) = self.channels.get_mut(&ch) {
                    st.core.select_confirms();
                }
                if !s.nowait {
                    self.method(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Tx(_) => {
                self.close_with(
                    AmqpError::new(
                        540,
                        "transactions (tx.*) are not implemented; use publisher confirms",
                    )
                    .on(method),
                    ctx,
                );
            }
            other => {
                let e = AmqpError::new(
                    503,
                    format!(
                        "method {}.{} is not valid from a client here",
                        method.0, method.1
                    ),
                )
                .on((other.get_amqp_class_id(), other.get_amqp_method_id()));
                self.close_with(e, ctx);
            }
        }
    }

    /// The queue to use for `name`: AMQP's empty name means the channel's last declared.
    fn queue_name(&self, ch: u16, name: &str) -> String {
        if name.is_empty() {
            self.channels
                .get(&ch)
                .map(|s| s.last_queue.clone())
                .unwrap_or_default()
        } else {
            name.to_string()
        }
    }

    fn queue_method(
        &mut self,
        ch: u16,
        method: (u16, u16),
        m: qu::AMQPMethod,
        ctx: &mut Context<Self>,
    ) {
        let registry = self.session.as_ref().expect("open").registry.clone();
        let owner = self.owner;
        match m {
            qu::AMQPMethod::Declare(d) => {
                let spec = QueueSpec {
                    name: d.queue.to_string(),
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: table_in(&d.arguments),
                };
                let (passive, nowait) = (d.passive, d.nowait);
                // New queues go on this connection's arbiter (DeclareQueue::placement).
                let placement = Some(actix::Arbiter::current());
                self.run(
                    ch,
                    method,
                    async move {
                        registry
                            .send(DeclareQueue {
                                spec,
                                passive,
                                owner,
                                placement,
                            })
                            .await?
                    },
                    move |act, ch, d: QueueDeclared, _| {
                        if let Some(st) = act.channels.get_mut(&ch) {
                            st.last_queue = d.name.clone();
                        }
                        if !nowait {
                            act.method(
                                ch,
                                AMQPClass::Queue(qu::AMQPMethod::DeclareOk(qu::DeclareOk {
                                    queue: short(&d.name),
                                    message_count: d.messages.min(u32::MAX as u64) as u32,
                                    consumer_count: d.consumers,
                                })),
                            );
                        }
                    },
                    ctx,
                );
            }
            qu::AMQPMethod::Bind(b) => {
                let bind = Bind {
                    exchange: b.exchange.to_string(),
                    target: BindTarget::Queue(self.queue_name(ch, b.queue.as_str())),
                    routing_key: b.routing_key.to_string(),
                    arguments: table_in(&b.arguments),
                    owner,
                };
                let nowait = b.nowait;
                self.run(
                    ch,
                    method,
                    async move { registry.send(bind).await? },
                    move |act, ch, (), _| {
                        if !nowait {
                            act.method(ch, AMQPClass::Queue(qu::AMQPMethod::BindOk(qu::BindOk {})));
                        }
                    },
                    ctx,
                );
            }
            qu::AMQPMethod::Unbind(b) => {
                let binding = Bind {
                    exchange: b.exchange.to_string(),
                    target: BindTarget::Queue(self.queue_name(ch, b.queue.as_str())),
                    routing_key: b.routing_key.to_string(),
                    arguments: table_in(&b.arguments),
                    owner,
                };
                self.run(
                    ch,
                    method,
                    async move { registry.send(Unbind { binding }).await? },
                    move |act, ch, (), _| {
                        act.method(
                            ch,
                            AMQPClass::Queue(qu::AMQPMethod::UnbindOk(qu::UnbindOk {})),
                        );
                    },
                    ctx,
                );
            }
            qu::AMQPMethod::Purge(p) => {
                let name = self.queue_name(ch, p.queue.as_str());
                let nowait = p.nowait;
                self.run(
                    ch,
                    method,
                    async move { registry.send(PurgeQueue { name, owner }).await? },
                    move |act, ch, n: u64, _| {
                        if !nowait {
                            act.method(
                                ch,
                                AMQPClass::Queue(qu::AMQPMethod::PurgeOk(qu::PurgeOk {
                                    message_count: n.min(u32::MAX as u64) as u32,
                                })),
                            );
                        }
                    },
                    ctx,
                );
            }
            qu::AMQPMethod::Delete(d) => {
                let name = self.queue_name(ch, d.queue.as_str());
                let (if_unused, if_empty, nowait) = (d.if_unused, d.if_empty, d.nowait);
                self.run(
                    ch,
                    method,
                    async move {
                        registry
                            .send(DeleteQueue {
                                name,
                                if_unused,
                                if_empty,
                                owner,
                            })
                            .await?
                    },
                    move |act, ch, n: u64, _| {
                        if !nowait {
                            act.method(
                                ch,
                                AMQPClass::Queue(qu::AMQPMethod::DeleteOk(qu::DeleteOk {
                                    message_count: n.min(u32::MAX as u64) as u32,
                                })),
                            );
                        }
                    },
                    ctx,
                );
            }
            other => {
                let class = AMQPClass::Queue(other);
                let e = AmqpError::new(503, "this queue method is sent by servers only")
                    .on((class.get_amqp_class_id(), class.get_amqp_method_id()));
                self.close_with(e, ctx);
            }
        }
    }

    fn basic_method(
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
                // For new consumers and the channel's existing ones, `global` or not
                // (docs/AMQP.md: the kombu / Celery reading).
                if let Some(st) = self.channels.get_mut(&ch) {
                    st.core.set_prefetch(q.prefetch_count as u32);
                }
                self.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
            }
            basic::AMQPMethod::Recover(_) => {
                if let Some(st) = self.channels.get_mut(&ch) {
                    st.core.recover();
                }
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
                let chan_owner = self.channels.get(&ch).map(|s| s.core.owner());
                let entry = match self.channels.get_mut(&ch) {
                    Some(st) if st.core.has_consumer(&tag) => st.core.remove_consumer(&tag),
                    _ => None,
                };
                if entry.is_some() {
                    self.consumer_channels.remove(&tag);
                }
                let queue = entry.and_then(|e| e.queue);
                let nowait = c.nowait;
                let t2 = tag.clone();
                self.run(
                    ch,
                    method,
                    async move {
                        if let (Some(q), Some(o)) = (queue, chan_owner) {
                            // Through the queue's fast lane, in order with this channel's acks.
                            let _ = q.cancel(o, &t2).await;
                        }
                        Ok(())
                    },
                    move |act, ch, (), _| {
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
        if self.consumer_channels.contains_key(&tag) {
            self.close_with(
                AmqpError::new(530, format!("attempt to reuse consumer tag '{tag}'")).on(method),
                ctx,
            );
            return;
        }
        let name = self.queue_name(ch, c.queue.as_str());
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
            arguments: table_in(&c.arguments),
        };
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
                        act.write_deliver(ch, d);
                    }
                }
                Err(e) => {
                    if let Some(st) = act.channels.get_mut(&ch) {
                        st.core.consumer_failed(&t2);
                    }
                    act.consumer_channels.remove(&t2);
                    act.channel_error(ch, AmqpError::from(e).on(method), ctx);
                }
            },
            ctx,
        );
    }
}
