//! Requests: each operation of the protocol mapped onto the broker's actor messages.
//!
//! A request pauses the connection (`ctx.wait`) until it is answered, so frames after it
//! are processed in order, as an AMQP channel does: a publish sent right after a
//! declare always sees the declared queue. Every such wait is bounded by
//! `server.request_timeout_ms` (see [`super::bounded`]).

use super::bounded::{bounded, detached, op_name};
use super::Connection;
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::*;
use crate::broker::queue::{QueueHandle, QueueSpec};
use crate::error::{clip, BrokerError};
use crate::message::FieldValue;
use crate::protocol::wire::{Op, ReplyBody, Request, ServerFrame, RUNS_ARGUMENT};
use actix::fut::{wrap_future, LocalBoxActorFuture};
use actix::prelude::*;
use std::future::Future;

/// Request `id`, operation `what`, waited for at most `limit`.
#[derive(Clone, Copy)]
struct Req {
    id: u64,
    what: &'static str,
    limit: std::time::Duration,
}

/// Runs `fut` (for at most the request timeout) and hands its value to `done`, or
/// writes the error for the request.
fn op<T: 'static>(
    req: Req,
    fut: impl Future<Output = Result<T, BrokerError>> + 'static,
    done: impl FnOnce(&mut Connection, T, &mut Context<Connection>) + 'static,
) -> LocalBoxActorFuture<Connection, ()> {
    let Req { id, what, limit } = req;
    Box::pin(
        wrap_future::<_, Connection>(bounded(what, limit, fut)).map(
            move |res, act, ctx| match res {
                Ok(v) => done(act, v, ctx),
                Err(e) => act.error(Some(id), &e),
            },
        ),
    )
}

fn ok(id: u64) -> impl FnOnce(&mut Connection, (), &mut Context<Connection>) {
    move |act, (), _| act.reply(id, ReplyBody::Ok)
}

/// Answers request `id` with `e` (a permission refused) without doing anything: the
/// connection goes on.
fn refused(id: u64, e: BrokerError) -> LocalBoxActorFuture<Connection, ()> {
    Box::pin(actix::fut::ready(()).map(move |_, act: &mut Connection, _| act.error(Some(id), &e)))
}

/// Returns the refusal of request `$id` when the permission check `$check` fails.
macro_rules! authorize {
    ($id:expr, $check:expr) => {
        match $check {
            Ok(v) => v,
            Err(e) => return refused($id, e),
        }
    };
}

impl Connection {
    /// Starts request `r`; the connection waits for the returned future before it
    /// processes the next frame.
    pub(super) fn request(
        &mut self,
        r: Request,
        _ctx: &mut Context<Self>,
    ) -> LocalBoxActorFuture<Self, ()> {
        let registry = self.session.as_ref().expect("open").registry.clone();
        let owner = self.owner;
        let id = r.id;
        let req = Req {
            id,
            what: op_name(&r.op),
            limit: self.request_timeout(),
        };
        match r.op {
            Op::DeclareExchange {
                name,
                kind,
                durable,
                auto_delete,
                internal,
                passive,
                arguments,
            } => {
                let spec = ExchangeSpec {
                    name,
                    kind,
                    durable,
                    auto_delete,
                    internal,
                    arguments,
                };
                authorize!(id, self.channel.may_declare_exchange(&spec, passive));
                op(
                    req,
                    async move { registry.send(DeclareExchange { spec, passive }).await? },
                    ok(id),
                )
            }
            Op::DeleteExchange { name, if_unused } => {
                authorize!(id, self.channel.may_delete_exchange(&name));
                self.channel.forget_exchange(&name);
                op(
                    req,
                    async move { registry.send(DeleteExchange { name, if_unused }).await? },
                    ok(id),
                )
            }
            Op::DeclareQueue {
                name,
                durable,
                exclusive,
                auto_delete,
                passive,
                arguments,
            } => {
                // New queues go on this connection's arbiter (see DeclareQueue::placement).
                let placement = Some(actix::Arbiter::current());
                let spec = QueueSpec {
                    name,
                    durable,
                    exclusive,
                    auto_delete,
                    arguments,
                };
                authorize!(id, self.channel.may_declare_queue(&spec, passive));
                op(
                    req,
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
                    move |act, d: QueueDeclared, _| {
                        act.reply(
                            id,
                            ReplyBody::QueueDeclared {
                                name: d.name,
                                messages: d.messages,
                                consumers: d.consumers,
                            },
                        )
                    },
                )
            }
            Op::DeleteQueue {
                name,
                if_unused,
                if_empty,
            } => {
                authorize!(id, self.channel.may_delete_queue(&name));
                op(
                    req,
                    async move {
                        registry
                            .send(DeleteQueue {
                                name,
                                if_unused,
                                if_empty,
                                ready_only: false,
                                owner,
                            })
                            .await?
                    },
                    move |act, n, _| act.reply(id, ReplyBody::MessageCount { messages: n }),
                )
            }
            Op::PurgeQueue { name } => {
                authorize!(id, self.channel.may_read_queue(&name));
                op(
                    req,
                    async move { registry.send(PurgeQueue { name, owner }).await? },
                    move |act, n, _| act.reply(id, ReplyBody::MessageCount { messages: n }),
                )
            }
            Op::Bind {
                exchange,
                queue,
                routing_key,
                arguments,
            } => {
                let target = BindTarget::Queue(queue);
                self.binding(req, exchange, target, routing_key, arguments, true)
            }
            Op::Unbind {
                exchange,
                queue,
                routing_key,
                arguments,
            } => {
                let target = BindTarget::Queue(queue);
                self.binding(req, exchange, target, routing_key, arguments, false)
            }
            Op::BindExchange {
                source,
                destination,
                routing_key,
                arguments,
            } => {
                let target = BindTarget::Exchange(destination);
                self.binding(req, source, target, routing_key, arguments, true)
            }
            Op::UnbindExchange {
                source,
                destination,
                routing_key,
                arguments,
            } => {
                let target = BindTarget::Exchange(destination);
                self.binding(req, source, target, routing_key, arguments, false)
            }
            Op::Consume {
                queue,
                consumer_tag,
                prefetch,
                no_ack,
                exclusive,
                mut arguments,
            } => {
                let runs = matches!(
                    arguments.remove(RUNS_ARGUMENT),
                    Some(FieldValue::Bool(true))
                );
                self.consume(
                    req,
                    queue,
                    consumer_tag,
                    prefetch,
                    no_ack,
                    exclusive,
                    arguments,
                    runs,
                )
            }
            Op::Cancel { consumer_tag } => self.cancel_consumer(id, consumer_tag, req.limit),
            Op::Get { queue, no_ack } => {
                authorize!(id, self.channel.may_read_queue(&queue));
                let work = async move {
                    let q: QueueHandle =
                        registry.send(LookupQueue { name: queue, owner }).await??;
                    let got = q
                        .addr()
                        .send(Get {
                            owner,
                            auto_ack: no_ack,
                        })
                        .await??;
                    Ok((q, got))
                };
                // A message fetched after the request gave up goes back to the queue
                // (an auto-acked one has left it: it is lost, and logged).
                let undo = move |(q, got): (QueueHandle, Option<(Delivery, u64)>)| {
                    let Some((d, _)) = got else { return };
                    if no_ack {
                        tracing::warn!(queue = %q.name(), "a get answered after its timeout: its auto-acked message is lost");
                    } else {
                        q.settle(owner, vec![d.id], Settlement::Requeue);
                    }
                };
                op(req, detached(work, undo), move |act, (q, got), _| {
                    act.got(id, q, got, no_ack)
                })
            }
            Op::DeclareSuperStream {
                name,
                partitions,
                binding_keys,
                arguments,
            } => {
                let spec = crate::broker::superstream::SuperStreamSpec::from_wire(
                    name,
                    partitions,
                    binding_keys,
                    arguments,
                );
                if let Ok(s) = &spec {
                    authorize!(id, self.channel.may_declare_super_stream(s));
                }
                op(
                    req,
                    async move {
                        crate::broker::superstream::declare(&registry, owner, &spec?).await?;
                        Ok(())
                    },
                    ok(id),
                )
            }
            Op::DeleteSuperStream { name } => {
                authorize!(id, self.channel.may_delete_super_stream(&name));
                self.channel.forget_exchange(&name);
                let vhost = self.session.as_ref().expect("open").vhost.clone();
                op(
                    req,
                    async move {
                        crate::broker::superstream::delete(&registry, &vhost, owner, &name).await?;
                        Ok(())
                    },
                    ok(id),
                )
            }
            Op::Close => Box::pin(actix::fut::ready(()).map(
                move |_, act: &mut Connection, ctx| {
                    act.reply(id, ReplyBody::Ok);
                    act.close(ctx);
                },
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn consume(
        &mut self,
        req: Req,
        queue: String,
        tag: String,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
        arguments: crate::message::FieldTable,
        runs: bool,
    ) -> LocalBoxActorFuture<Self, ()> {
        let registry = self.session.as_ref().expect("open").registry.clone();
        let owner = self.owner;
        let id = req.id;
        authorize!(id, self.channel.may_read_queue(&queue));
        let tag = if tag.is_empty() {
            self.ctag_seq += 1;
            format!("ctag-{}-{}", owner.0, self.ctag_seq)
        } else {
            tag
        };
        let max = self.shared.settings.limits.consumer_max_per_channel;
        let over = max > 0 && self.channel.consumer_count() >= max;
        if over || self.channel.has_consumer(&tag) {
            let e = BrokerError::not_allowed(if over {
                // RabbitMQ's words for its consumer_max_per_channel.
                format!("reached maximum ({max}) of consumers per channel")
            } else {
                format!(
                    "consumer tag '{}' is already in use on this connection",
                    clip(&tag)
                )
            });
            return Box::pin(
                actix::fut::ready(())
                    .map(move |_, act: &mut Connection, _| act.error(Some(id), &e)),
            );
        }
        let consumer = tag.clone();
        let options = ConsumerSpec {
            tag: tag.clone(),
            prefetch,
            auto_ack: no_ack,
            exclusive,
            arguments,
        };
        let window = self.shared.broker.context().consumer_window;
        let run_bytes = match runs {
            true => super::delivery::run_max(self.shared.settings.server.max_frame_size),
            false => 0,
        };
        let deliver = self.self_addr.clone().expect("started").recipient();
        let cancelled = self.self_addr.clone().expect("started").recipient();
        let work = async move {
            let q: QueueHandle = registry.send(LookupQueue { name: queue, owner }).await??;
            let tag = q
                .addr()
                .send(Consume {
                    options,
                    owner,
                    deliver,
                    cancelled: Some(cancelled),
                    window,
                    accepts_stored: true,
                    run_bytes,
                })
                .await??;
            Ok((q, tag))
        };
        // A consumer attached after the request gave up is detached again: the client
        // was told the consume failed, so nothing would ever settle its deliveries.
        let undo = move |(q, tag): (QueueHandle, std::sync::Arc<str>)| {
            tracing::warn!(queue = %q.name(), consumer = %clip(&tag), "a consume answered after its timeout: consumer detached");
            drop(q.cancel(owner, &tag));
        };
        // Known to the channel from now on: a delivery that beats the answer is held
        // for it, not requeued (none can while this request holds the connection, but
        // the channel does not rely on that).
        self.channel.consumer_starting(&tag, no_ack);
        let Req { what, limit, .. } = req;
        Box::pin(
            wrap_future::<_, Connection>(bounded(what, limit, detached(work, undo))).map(
                move |res, act, _| match res {
                    Ok((q, tag)) => {
                        let early = act.channel.consumer_started(&tag, q);
                        // Written before any delivery: deliveries wait in the mailbox
                        // while this request holds the connection (ctx.wait).
                        act.reply(
                            id,
                            ReplyBody::ConsumeOk {
                                consumer_tag: tag.to_string(),
                            },
                        );
                        for msg in early {
                            act.write_deliver(msg, no_ack);
                        }
                    }
                    Err(e) => {
                        act.channel.consumer_failed(&consumer);
                        act.error(Some(id), &e);
                    }
                },
            ),
        )
    }

    fn got(&mut self, id: u64, q: QueueHandle, got: Option<(Delivery, u64)>, no_ack: bool) {
        self.channel.touch(&q);
        match got {
            None => self.reply(id, ReplyBody::GetEmpty),
            Some((d, left)) => {
                self.stats.add_delivered(1);
                let tag = self.channel.track(&q, d.id, no_ack);
                let delivery = super::delivery::deliver_frame("", tag, &d);
                self.frame(&ServerFrame::Reply {
                    id,
                    body: ReplyBody::GetOk {
                        delivery,
                        message_count: left,
                    },
                });
            }
        }
    }

    /// A queue or exchange binding made (`bind`) or removed: the same permission
    /// check (write on the destination, read on the source, and the topic
    /// permission for a topic exchange) and the same answer for all four requests.
    fn binding(
        &mut self,
        req: Req,
        exchange: String,
        target: BindTarget,
        routing_key: String,
        arguments: crate::message::FieldTable,
        bind: bool,
    ) -> LocalBoxActorFuture<Self, ()> {
        let id = req.id;
        let registry = self.session.as_ref().expect("open").registry.clone();
        let binding = Bind {
            exchange,
            target,
            routing_key,
            arguments,
            owner: self.owner,
        };
        let gate = authorize!(
            id,
            self.channel
                .may_bind(&binding.exchange, &binding.target, &binding.routing_key)
        );
        let gate = gate.enforce(&registry);
        op(
            req,
            async move {
                gate.await?;
                if bind {
                    registry.send(binding).await?
                } else {
                    registry.send(Unbind { binding }).await?
                }
            },
            ok(id),
        )
    }
}
