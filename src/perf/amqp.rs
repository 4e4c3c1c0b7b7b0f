//! The perf driver for an AMQP 0-9-1 broker (RabbitMQ), through the lapin client, so
//! that `actormq perf` measures both brokers with the same workload and the same
//! accounting. Built with `--features amqp` only.

use super::driver::{BoxFuture, Conn, Consumer, Declare, Driver, Producer, Received, Topology};
use super::PerfExchange;
use futures_util::stream::FuturesUnordered;
use futures_util::{future, FutureExt, StreamExt};
use lapin::options::*;
use lapin::types::{FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use std::task::Poll;

/// The AMQP broker at `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`).
pub struct Amqp {
    url: String,
    /// One channel for the once-a-second depth reads.
    control: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl Amqp {
    /// A driver for the broker at `url`.
    pub fn new(url: String) -> Self {
        Amqp {
            url,
            control: tokio::sync::Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<(Connection, Channel), String> {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| e.to_string())?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        Ok((conn, ch))
    }
}

fn err(e: lapin::Error) -> String {
    e.to_string()
}

/// Declare arguments: the `x-queue-type` of a quorum queue or stream.
fn queue_args(queue_type: Option<&str>) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(qt) = queue_type {
        t.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString(qt.into()),
        );
    }
    t
}

/// Consume arguments: a stream is read from `first`.
fn consume_args(stream: bool) -> FieldTable {
    let mut t = FieldTable::default();
    if stream {
        t.insert(
            "x-stream-offset".into(),
            lapin::types::AMQPValue::LongString("first".into()),
        );
    }
    t
}

impl Driver for Amqp {
    type Conn = AmqpConn;
    type Producer = AmqpProducer;

    fn setup<'a>(
        &'a self,
        topo: &'a Topology,
        durable: bool,
        first_declared: usize,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (conn, ch) = self.channel().await?;
            let kind = match topo.kind {
                PerfExchange::Direct => ExchangeKind::Direct,
                PerfExchange::Fanout => ExchangeKind::Fanout,
                PerfExchange::Topic => ExchangeKind::Topic,
            };
            ch.exchange_declare(
                topo.exchange.as_str().into(),
                kind,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
            for (i, q) in topo.queues.iter().enumerate() {
                ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await
                    .map_err(err)?;
                if i < first_declared {
                    continue;
                }
                let opts = QueueDeclareOptions {
                    durable: durable || topo.queue_type.is_some(),
                    ..Default::default()
                };
                ch.queue_declare(q.as_str().into(), opts, queue_args(topo.queue_type))
                    .await
                    .map_err(err)?;
                ch.queue_bind(
                    q.as_str().into(),
                    topo.exchange.as_str().into(),
                    topo.binding_key(i).as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(err)?;
            }
            let _ = conn.close(200, "setup done".into()).await;
            Ok(())
        })
    }

    fn connect(&self) -> BoxFuture<'_, Result<AmqpConn, String>> {
        Box::pin(async move {
            let conn = Connection::connect(&self.url, ConnectionProperties::default())
                .await
                .map_err(err)?;
            Ok(AmqpConn { conn })
        })
    }

    fn idle(&self) -> BoxFuture<'_, Result<Box<dyn Send>, String>> {
        Box::pin(async move { Ok(Box::new(self.channel().await?) as Box<dyn Send>) })
    }

    fn producer(
        &self,
        confirm: bool,
        _window: usize,
    ) -> BoxFuture<'_, Result<AmqpProducer, String>> {
        Box::pin(async move {
            let (conn, ch) = self.channel().await?;
            if confirm {
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(err)?;
            }
            Ok(AmqpProducer {
                conn,
                ch,
                confirm,
                sending: FuturesUnordered::new(),
            })
        })
    }

    fn delete_queues<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (_conn, ch) = self.channel().await?;
            for q in queues {
                ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await
                    .map_err(err)?;
            }
            Ok(())
        })
    }

    fn depth<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, u64> {
        Box::pin(async move {
            let mut control = self.control.lock().await;
            if control
                .as_ref()
                .is_none_or(|(_, ch)| !ch.status().connected())
            {
                *control = self.channel().await.ok();
            }
            let Some((_, ch)) = control.as_ref() else {
                return 0;
            };
            let mut total = 0;
            for q in queues {
                let opts = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                if let Ok(info) = ch
                    .queue_declare(q.as_str().into(), opts, FieldTable::default())
                    .await
                {
                    total += info.message_count() as u64;
                }
            }
            total
        })
    }
}

/// A connection consumers are opened on (one channel each).
pub struct AmqpConn {
    conn: Connection,
}

impl Conn for AmqpConn {
    type Consumer = AmqpConsumer;

    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: u32,
        auto_ack: bool,
        stream: bool,
        declare: Option<Declare<'a>>,
    ) -> BoxFuture<'a, Result<AmqpConsumer, String>> {
        Box::pin(async move {
            let ch = self.conn.create_channel().await.map_err(err)?;
            if let Some(d) = declare {
                let opts = QueueDeclareOptions {
                    durable: d.durable || d.queue_type.is_some(),
                    ..Default::default()
                };
                ch.queue_declare(queue.into(), opts, queue_args(d.queue_type))
                    .await
                    .map_err(err)?;
                ch.queue_bind(
                    queue.into(),
                    d.exchange.into(),
                    d.binding_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(err)?;
            }
            if !auto_ack {
                ch.basic_qos(
                    prefetch.min(u16::MAX as u32) as u16,
                    BasicQosOptions::default(),
                )
                .await
                .map_err(err)?;
            }
            let consumer = ch
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: auto_ack,
                        ..Default::default()
                    },
                    consume_args(stream),
                )
                .await
                .map_err(err)?;
            Ok(AmqpConsumer {
                ch,
                consumer,
                ended: false,
            })
        })
    }
}

/// Publishes handed to lapin and not yet written by its I/O thread.
const MAX_SENDING: usize = 64;

/// A publishing channel.
pub struct AmqpProducer {
    conn: Connection,
    ch: Channel,
    confirm: bool,
    /// Publishes in flight (without confirms).
    sending: FuturesUnordered<BoxFuture<'static, ()>>,
}

impl Producer for AmqpProducer {
    fn publish<'a>(
        &'a mut self,
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        persistent: bool,
    ) -> BoxFuture<'a, Result<Option<BoxFuture<'static, bool>>, String>> {
        Box::pin(async move {
            let props = if persistent {
                BasicProperties::default().with_delivery_mode(2)
            } else {
                BasicProperties::default()
            };
            // lapin's `basic_publish` resolves once its I/O thread wrote the frames:
            // awaiting each one made a thread round trip (and a write) per message, and
            // that, not the broker, set the rate. Several are kept in flight instead,
            // so the I/O thread writes them together; the first poll queues the frames,
            // in order.
            let ch = self.ch.clone();
            let body = body.to_vec();
            let (x, rk) = (ShortString::from(exchange), ShortString::from(routing_key));
            let send = async move {
                ch.basic_publish(x, rk, BasicPublishOptions::default(), &body, props)
                    .await
            };
            if self.confirm {
                // The write, then the confirm, polled by the caller's window of confirms
                // rather than by a task of its own: a task per publish cost a spawn, and
                // two wake-ups of the runtime from lapin's I/O thread (the write, the
                // confirm) each scheduling that task. Polled once here, so that the
                // frames are queued now and in publish order.
                let mut confirm: BoxFuture<'static, bool> = Box::pin(async move {
                    match send.await {
                        Ok(c) => matches!(c.await, Ok(Confirmation::Ack(None))),
                        Err(_) => false,
                    }
                });
                let first = future::poll_fn(|cx| Poll::Ready(confirm.as_mut().poll(cx))).await;
                if let Poll::Ready(ok) = first {
                    return Ok(Some(future::ready(ok).boxed()));
                }
                return Ok(Some(confirm));
            }
            self.sending.push(send.map(|_| ()).boxed());
            while self.sending.len() >= MAX_SENDING {
                self.sending.next().await;
            }
            while let Some(Some(())) = self.sending.next().now_or_never() {}
            Ok(None)
        })
    }

    fn closed(&self) -> bool {
        !self.ch.status().connected()
    }

    fn blocked(&self) -> bool {
        self.conn.status().blocked()
    }
}

/// A consumer on its own channel.
pub struct AmqpConsumer {
    ch: Channel,
    consumer: lapin::Consumer,
    /// Set once [`try_next`](Consumer::try_next) saw the end (or an error), which
    /// lapin reports once: `next` then answers None at once.
    ended: bool,
}

fn received(d: Option<lapin::Result<lapin::message::Delivery>>) -> Option<Received> {
    match d {
        Some(Ok(d)) => Some(Received {
            tag: d.delivery_tag,
            redelivered: d.redelivered,
            body: bytes::Bytes::from(d.data),
        }),
        _ => None,
    }
}

impl Consumer for AmqpConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Received>> {
        Box::pin(async move {
            if self.ended {
                return None;
            }
            received(self.consumer.next().await)
        })
    }

    fn try_next(&mut self) -> Option<Received> {
        // lapin hands deliveries over in bursts (all that one read of its I/O thread
        // parsed): those ready are taken without the boxed future and the select of
        // `next`, as the native driver does.
        if self.ended {
            return None;
        }
        let d = self.consumer.next().now_or_never()?;
        let r = received(d);
        self.ended = r.is_none();
        r
    }

    fn ack(&mut self, tag: u64, multiple: bool) {
        // Fire and forget, like the native driver's acks: the first poll queues the
        // frame (and wakes lapin's I/O thread); what is left only reports the write.
        // (A task per ack cost a spawn per message.)
        let _ = self
            .ch
            .basic_ack(tag, BasicAckOptions { multiple })
            .now_or_never();
    }
}
