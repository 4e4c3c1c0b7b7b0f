//! The perf driver for an AMQP 0-9-1 broker through a lean client of our own
//! (`--amqp-client raw`): the second client beside lapin, to tell what the broker costs
//! from what lapin costs (see `conn`).

mod conn;

use super::driver::{BoxFuture, Conn, Consumer, Declare, Driver, Producer, Received, Topology};
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use conn::RawConn;
use futures_util::FutureExt;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The AMQP broker at a URL, through [`RawConn`].
pub struct Raw {
    uri: amq_protocol::uri::AMQPUri,
    control: tokio::sync::Mutex<Option<(RawConn, u16)>>,
}

impl Raw {
    /// A driver for the broker at `url` (`amqp://user:pass@host:port/vhost`).
    pub fn new(url: &str) -> Result<Self, String> {
        Ok(Raw {
            uri: url.parse().map_err(|e| format!("{url}: {e}"))?,
            control: tokio::sync::Mutex::new(None),
        })
    }

    async fn channel(&self) -> Result<(RawConn, u16), String> {
        let c = RawConn::connect(&self.uri).await?;
        let ch = c.channel().await?;
        Ok((c, ch))
    }
}

fn declare_queue(name: &str, durable: bool, passive: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        passive,
        durable,
        ..Default::default()
    }))
}

/// A quorum queue's or stream's declare: durable, with its `x-queue-type`.
fn declare_typed(name: &str, queue_type: &str) -> AMQPClass {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        durable: true,
        arguments,
        ..Default::default()
    }))
}

/// The declare of a run's queue, of its `--queue-type`.
fn declare_for(name: &str, durable: bool, queue_type: Option<&str>) -> AMQPClass {
    match queue_type {
        Some(t) => declare_typed(name, t),
        None => declare_queue(name, durable, false),
    }
}

fn bind(q: &str, x: &str, key: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: q.into(),
        exchange: x.into(),
        routing_key: key.into(),
        ..Default::default()
    }))
}

fn delete_queue(q: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
        queue: q.into(),
        ..Default::default()
    }))
}

/// Consume arguments: a stream is read from `first` (each consumer reads all of it).
fn consume_args(stream: bool) -> FieldTable {
    let mut t = FieldTable::default();
    if stream {
        t.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
    }
    t
}

impl Driver for Raw {
    type Conn = RawConsumers;
    type Producer = RawProducer;

    fn setup<'a>(
        &'a self,
        topo: &'a Topology,
        durable: bool,
        first_declared: usize,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (c, ch) = self.channel().await?;
            c.call(
                ch,
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: topo.exchange.as_str().into(),
                    kind: topo.kind_name().into(),
                    ..Default::default()
                })),
            )
            .await?;
            for (i, q) in topo.queues.iter().enumerate() {
                c.call(ch, delete_queue(q)).await?;
                if i < first_declared {
                    continue;
                }
                c.call(ch, declare_for(q, durable, topo.queue_type)).await?;
                c.call(ch, bind(q, &topo.exchange, &topo.binding_key(i)))
                    .await?;
            }
            Ok(())
        })
    }

    fn connect(&self) -> BoxFuture<'_, Result<RawConsumers, String>> {
        Box::pin(async move {
            Ok(RawConsumers {
                conn: Arc::new(RawConn::connect(&self.uri).await?),
            })
        })
    }

    fn idle(&self) -> BoxFuture<'_, Result<Box<dyn Send>, String>> {
        Box::pin(async move { Ok(Box::new(self.channel().await?) as Box<dyn Send>) })
    }

    fn producer(
        &self,
        confirm: bool,
        _window: usize,
    ) -> BoxFuture<'_, Result<RawProducer, String>> {
        Box::pin(async move {
            let (conn, ch) = self.channel().await?;
            if confirm {
                conn.confirm_select(ch).await?;
            }
            Ok(RawProducer { conn, ch })
        })
    }

    fn depth<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, u64> {
        Box::pin(async move {
            let mut control = self.control.lock().await;
            if control.as_ref().is_none_or(|(c, _)| c.closed()) {
                *control = self.channel().await.ok();
            }
            let Some((c, ch)) = control.as_ref() else {
                return 0;
            };
            let mut total = 0;
            for q in queues {
                match c.call(*ch, declare_queue(q, false, true)).await {
                    Ok(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => {
                        total += u64::from(ok.message_count)
                    }
                    _ => {
                        // A missing queue closed the channel: a fresh one next time.
                        *control = None;
                        break;
                    }
                }
            }
            total
        })
    }

    fn delete_queues<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (c, ch) = self.channel().await?;
            for q in queues {
                c.call(ch, delete_queue(q)).await?;
            }
            Ok(())
        })
    }
}

/// A connection consumers are opened on, one channel each.
pub struct RawConsumers {
    conn: Arc<RawConn>,
}

impl Conn for RawConsumers {
    type Consumer = RawConsumer;

    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: u32,
        auto_ack: bool,
        stream: bool,
        declare: Option<Declare<'a>>,
    ) -> BoxFuture<'a, Result<RawConsumer, String>> {
        Box::pin(async move {
            if stream && auto_ack {
                // A stream consumer needs acks (its credit), in RabbitMQ as here.
                return Err("--stream needs acks: drop --auto-ack".into());
            }
            let c = &self.conn;
            let ch = c.channel().await?;
            if let Some(d) = declare {
                c.call(ch, declare_for(queue, d.durable, d.queue_type))
                    .await?;
                c.call(ch, bind(queue, d.exchange, d.binding_key)).await?;
            }
            if !auto_ack {
                c.call(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                        prefetch_count: prefetch.min(u16::MAX as u32) as u16,
                        global: false,
                    })),
                )
                .await?;
            }
            let rx = c
                .consume(
                    ch,
                    basic::Consume {
                        queue: queue.into(),
                        no_ack: auto_ack,
                        arguments: consume_args(stream),
                        ..Default::default()
                    },
                )
                .await?;
            Ok(RawConsumer {
                conn: c.clone(),
                ch,
                rx,
            })
        })
    }
}

/// A publishing connection with one channel.
pub struct RawProducer {
    conn: RawConn,
    ch: u16,
}

impl Producer for RawProducer {
    fn publish<'a>(
        &'a mut self,
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        persistent: bool,
    ) -> BoxFuture<'a, Result<Option<BoxFuture<'static, bool>>, String>> {
        Box::pin(async move {
            let props = if persistent {
                AMQPProperties::default().with_delivery_mode(2)
            } else {
                AMQPProperties::default()
            };
            let confirm = self
                .conn
                .publish(self.ch, exchange, routing_key, body, props)
                .await?;
            Ok(confirm.map(|rx| rx.map(|r| r.unwrap_or(false)).boxed()))
        })
    }

    fn closed(&self) -> bool {
        self.conn.closed() || !self.conn.has_channel(self.ch)
    }

    fn blocked(&self) -> bool {
        self.conn.blocked()
    }
}

/// A consumer on its own channel.
pub struct RawConsumer {
    conn: Arc<RawConn>,
    ch: u16,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Consumer for RawConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Received>> {
        Box::pin(self.rx.recv())
    }

    fn ack(&mut self, tag: u64, multiple: bool) {
        self.conn.ack(self.ch, tag, multiple);
    }
}
