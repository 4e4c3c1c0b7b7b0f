//! The perf driver for an AMQP 0-9-1 broker (RabbitMQ), through the lapin client, so
//! that `actormq perf` measures both brokers with the same workload and the same
//! accounting. Built with `--features amqp` only.

use super::driver::{BoxFuture, Conn, Consumer, Declare, Driver, Producer, Received, Topology};
use super::PerfExchange;
use futures_util::{FutureExt, StreamExt};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

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

/// Declare arguments: `x-queue-type = stream` for a stream run (RabbitMQ's name).
fn queue_args(stream: bool) -> FieldTable {
    let mut t = FieldTable::default();
    if stream {
        t.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("stream".into()),
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
                    durable: durable || topo.stream,
                    ..Default::default()
                };
                ch.queue_declare(q.as_str().into(), opts, queue_args(topo.stream))
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
                _conn: conn,
                ch,
                confirm,
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
                    durable: d.durable || stream,
                    ..Default::default()
                };
                ch.queue_declare(queue.into(), opts, queue_args(stream))
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
            Ok(AmqpConsumer { ch, consumer })
        })
    }
}

/// A publishing channel.
pub struct AmqpProducer {
    _conn: Connection,
    ch: Channel,
    confirm: bool,
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
            let confirm = self
                .ch
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .map_err(err)?;
            Ok(self.confirm.then(|| {
                confirm
                    .map(|r| matches!(r, Ok(Confirmation::Ack(None))))
                    .boxed()
            }))
        })
    }
}

/// A consumer on its own channel.
pub struct AmqpConsumer {
    ch: Channel,
    consumer: lapin::Consumer,
}

impl Consumer for AmqpConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Received>> {
        Box::pin(async move {
            match self.consumer.next().await {
                Some(Ok(d)) => Some(Received {
                    body: bytes::Bytes::from(d.data),
                    tag: d.delivery_tag,
                }),
                _ => None,
            }
        })
    }

    fn ack(&mut self, tag: u64, multiple: bool) {
        // Fire and forget, like the native driver's acks: the ack is queued at once.
        let ch = self.ch.clone();
        tokio::spawn(async move {
            let _ = ch.basic_ack(tag, BasicAckOptions { multiple }).await;
        });
    }
}
