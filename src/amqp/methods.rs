//! Channel methods mapped onto the broker's actor messages: exchange, queue, basic and
//! confirm classes. Each answers with its `-ok` (unless `nowait`) or closes the channel
//! with the error's reply code.

use super::connection::AmqpConnection;
use super::errors::AmqpError;
use super::properties::{args_in, short};
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::*;
use crate::broker::queue::QueueSpec;
use crate::channel::TopicGate;
use actix::prelude::*;
use amq_protocol::protocol::{
    access, channel as chan, confirm, exchange as ex, queue as qu, tx, AMQPClass,
};

impl AmqpConnection {
    /// Handles one method of channel `ch` (in the channel's order).
    pub(super) fn channel_method(&mut self, ch: u16, m: AMQPClass, ctx: &mut Context<Self>) {
        let method = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let registry = self.session.as_ref().expect("open").registry.clone();
        let owner = self.owner;
        let gate = match self.authorize(ch, &m) {
            Ok(gate) => gate,
            Err(e) => {
                self.channel_error(ch, AmqpError::from(e).on(method), ctx);
                return;
            }
        };
        match m {
            AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                self.method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                );
                self.forget_channel(ch);
            }
            AMQPClass::Channel(chan::AMQPMethod::Flow(f))
                if !f.active && !self.shared.settings.amqp.channel_flow_pause =>
            {
                // RabbitMQ 3.x refuses to be paused by a client, with a hard error; clients'
                // suites (amqp091-go's consume-flow test) accept only that answer.
                self.close_with(AmqpError::new(540, "active=false").on(method), ctx);
            }
            AMQPClass::Channel(chan::AMQPMethod::Flow(f)) => {
                // Paused: deliveries wait in the channel (holding their queues' credit)
                // until flow is active again; publishes and gets go on, as in RabbitMQ.
                if let Some(st) = self.channels.get_mut(&ch) {
                    st.flow_paused = !f.active;
                }
                self.method(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: f.active })),
                );
                self.write_held(ch);
            }
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => {}
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.method(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
            }
            AMQPClass::Exchange(ex::AMQPMethod::Declare(d))
                if d.passive && d.exchange.as_str().is_empty() =>
            {
                // RabbitMQ refuses the default exchange to passive declares too (aiormq's
                // test_channel_closed_reuse expects the 403); the native protocol, whose
                // clients were written for actormq, answers it as existing.
                let e = crate::error::BrokerError::access_refused(
                    "operation not permitted on the default exchange",
                );
                self.channel_error(ch, AmqpError::from(e).on(method), ctx);
            }
            AMQPClass::Exchange(ex::AMQPMethod::Declare(d)) => {
                // RabbitMQ checks the type first, and an unknown one is a hard error
                // (a passive declare names no type to check).
                if !d.passive
                    && !self
                        .shared
                        .broker
                        .context()
                        .knows_exchange_type(d.kind.as_str())
                {
                    let e = AmqpError::new(503, format!("unknown exchange type '{}'", d.kind));
                    self.close_with(e.on(method), ctx);
                    return;
                }
                let mut arguments = args_in(&d.arguments);
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
                    arguments: args_in(&b.arguments),
                    owner,
                };
                let nowait = b.nowait;
                self.run(
                    ch,
                    method,
                    {
                        let gate = gate.enforce(&registry);
                        async move {
                            gate.await?;
                            registry.send(bind).await?
                        }
                    },
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
                    arguments: args_in(&b.arguments),
                    owner,
                };
                let nowait = b.nowait;
                self.run(
                    ch,
                    method,
                    {
                        let gate = gate.enforce(&registry);
                        async move {
                            gate.await?;
                            unbind_idempotent(registry.send(Unbind { binding }).await?)
                        }
                    },
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
            AMQPClass::Queue(qm) => self.queue_method(ch, method, qm, gate, ctx),
            AMQPClass::Basic(bm) => self.basic_method(ch, method, bm, ctx),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let Some(st) = self.channels.get_mut(&ch) else {
                    return;
                };
                if st.core.transactional() {
                    let e = AmqpError::new(406, "cannot switch from tx to confirm mode");
                    self.channel_error(ch, e.on(method), ctx);
                    return;
                }
                st.core.select_confirms();
                if !s.nowait {
                    self.method(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Tx(t) => self.tx_method(ch, method, t, ctx),
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
    pub(super) fn queue_name(&self, ch: u16, name: &str) -> String {
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
        gate: TopicGate,
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
                    arguments: args_in(&d.arguments),
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
                            .await??
                            .with_home_counts()
                            .await
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
                    arguments: args_in(&b.arguments),
                    owner,
                };
                let nowait = b.nowait;
                self.run(
                    ch,
                    method,
                    {
                        let gate = gate.enforce(&registry);
                        async move {
                            gate.await?;
                            registry.send(bind).await?
                        }
                    },
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
                    arguments: args_in(&b.arguments),
                    owner,
                };
                self.run(
                    ch,
                    method,
                    {
                        let gate = gate.enforce(&registry);
                        async move {
                            gate.await?;
                            unbind_idempotent(registry.send(Unbind { binding }).await?)
                        }
                    },
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
                                ready_only: true,
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

    fn tx_method(
        &mut self,
        ch: u16,
        method: (u16, u16),
        t: tx::AMQPMethod,
        ctx: &mut Context<Self>,
    ) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        match t {
            tx::AMQPMethod::Select(_) => {
                if st.core.confirming() {
                    let e = AmqpError::new(406, "cannot switch from confirm to tx mode");
                    self.channel_error(ch, e.on(method), ctx);
                    return;
                }
                st.core.select_tx();
                self.method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) | tx::AMQPMethod::Rollback(_) if !st.core.transactional() => {
                let e = AmqpError::new(406, "channel is not transactional");
                self.channel_error(ch, e.on(method), ctx);
            }
            tx::AMQPMethod::Commit(_) => self.commit(ch, ctx),
            tx::AMQPMethod::Rollback(_) => {
                st.tx_publishes.clear();
                st.core.rollback_settles();
                self.method(
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            other => {
                let class = AMQPClass::Tx(other);
                let e = AmqpError::new(503, "this tx method is sent by servers only")
                    .on((class.get_amqp_class_id(), class.get_amqp_method_id()));
                self.close_with(e, ctx);
            }
        }
    }
}

/// RabbitMQ 3.x answers unbind-ok when the binding, its source or its destination is
/// already gone (clients clean up in any order after auto-deletes): only other errors
/// close the channel.
fn unbind_idempotent(
    r: Result<(), crate::error::BrokerError>,
) -> Result<(), crate::error::BrokerError> {
    match r {
        Err(e) if e.code() == crate::error::ErrorCode::NotFound => Ok(()),
        r => r,
    }
}
