//! The perf driver for actormq itself, over the native protocol client.

use super::driver::{BoxFuture, Conn, Consumer, Declare, Driver, Producer, Received, Topology};
use crate::client::{self, Client, ConnectOptions, ConsumeOptions, PublishOptions, QueueOptions};
use futures_util::{FutureExt, StreamExt};

/// actormq at `options.addr`.
pub struct Native {
    options: ConnectOptions,
    /// One connection for the once-a-second depth reads (opening one each time would
    /// itself disturb what is measured).
    control: tokio::sync::Mutex<Option<Client>>,
}

impl Native {
    /// A driver for the broker these options reach.
    pub fn new(options: ConnectOptions) -> Self {
        Native {
            options,
            control: tokio::sync::Mutex::new(None),
        }
    }
}

fn err(e: client::ClientError) -> String {
    e.to_string()
}

/// The declare options of a run's queues: a quorum queue or stream is always durable.
fn queue_options(durable: bool, queue_type: Option<&str>) -> QueueOptions {
    let opts = QueueOptions {
        durable: durable || queue_type.is_some(),
        ..Default::default()
    };
    match queue_type {
        Some(t) => opts.arg("x-queue-type", t),
        None => opts,
    }
}

impl Driver for Native {
    type Conn = Client;
    type Producer = NativeProducer;

    fn setup<'a>(
        &'a self,
        topo: &'a Topology,
        durable: bool,
        first_declared: usize,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let c = Client::connect(self.options.clone()).await.map_err(err)?;
            c.declare_exchange(&topo.exchange, topo.kind_name(), &Default::default())
                .await
                .map_err(err)?;
            for (i, q) in topo.queues.iter().enumerate() {
                c.delete_queue(q).await.map_err(err)?;
                if i < first_declared {
                    continue;
                }
                c.declare_queue(q, &queue_options(durable, topo.queue_type))
                    .await
                    .map_err(err)?;
                c.bind_queue(q, &topo.exchange, &topo.binding_key(i), Default::default())
                    .await
                    .map_err(err)?;
            }
            c.close().await.map_err(err)
        })
    }

    fn connect(&self) -> BoxFuture<'_, Result<Client, String>> {
        Box::pin(async move { Client::connect(self.options.clone()).await.map_err(err) })
    }

    fn producer(
        &self,
        confirm: bool,
        window: usize,
    ) -> BoxFuture<'_, Result<NativeProducer, String>> {
        Box::pin(async move {
            let mut opts = self.options.clone();
            // A small client-side buffer: what is measured is the broker, not a queue
            // of frames waiting in this process.
            opts.max_write_buffer = 256 * 1024;
            opts.confirms = confirm;
            opts.max_unconfirmed = window;
            let client = Client::connect(opts).await.map_err(err)?;
            Ok(NativeProducer {
                client,
                plain: PublishOptions {
                    confirm: Some(confirm),
                    ..Default::default()
                },
                persistent: PublishOptions {
                    confirm: Some(confirm),
                    ..Default::default()
                }
                .persistent(),
                confirm,
            })
        })
    }

    fn delete_queues<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let c = Client::connect(self.options.clone()).await.map_err(err)?;
            for chunk in queues.chunks(512) {
                for r in
                    futures_util::future::join_all(chunk.iter().map(|q| c.delete_queue(q))).await
                {
                    r.map_err(err)?;
                }
            }
            c.close().await.map_err(err)
        })
    }

    fn depth<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, u64> {
        Box::pin(async move {
            let mut control = self.control.lock().await;
            if control.as_ref().is_none_or(|c| c.closed_reason().is_some()) {
                *control = Client::connect(self.options.clone()).await.ok();
            }
            let Some(c) = control.as_ref() else {
                return 0;
            };
            let passive = QueueOptions {
                passive: true,
                ..Default::default()
            };
            // Pipelined (the client sends them all before the first answer): with
            // thousands of queues, one round trip each would take longer than the
            // second between two readings.
            let mut total = 0;
            for chunk in queues.chunks(512) {
                let answers = futures_util::future::join_all(
                    chunk.iter().map(|q| c.declare_queue(q, &passive)),
                )
                .await;
                total += answers
                    .into_iter()
                    .flatten()
                    .map(|i| i.messages)
                    .sum::<u64>();
            }
            total
        })
    }
}

impl Conn for Client {
    type Consumer = NativeConsumer;

    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: u32,
        auto_ack: bool,
        stream: bool,
        declare: Option<Declare<'a>>,
    ) -> BoxFuture<'a, Result<NativeConsumer, String>> {
        Box::pin(async move {
            if let Some(d) = declare {
                self.declare_queue(queue, &queue_options(d.durable, d.queue_type))
                    .await
                    .map_err(err)?;
                self.bind_queue(queue, d.exchange, d.binding_key, Default::default())
                    .await
                    .map_err(err)?;
            }
            let mut opts = ConsumeOptions {
                prefetch,
                no_ack: auto_ack,
                ..Default::default()
            };
            if stream {
                opts = opts.arg("x-stream-offset", "first");
            }
            let consumer = self.consume(queue, &opts).await.map_err(err)?;
            Ok(NativeConsumer {
                client: self.clone(),
                consumer,
            })
        })
    }
}

/// A publishing connection.
pub struct NativeProducer {
    client: Client,
    plain: PublishOptions,
    persistent: PublishOptions,
    confirm: bool,
}

impl Producer for NativeProducer {
    fn publish<'a>(
        &'a mut self,
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        persistent: bool,
    ) -> BoxFuture<'a, Result<Option<BoxFuture<'static, bool>>, String>> {
        Box::pin(async move {
            let opts = if persistent {
                &self.persistent
            } else {
                &self.plain
            };
            let c = self
                .client
                .publish_with(exchange, routing_key, body, opts)
                .await
                .map_err(err)?;
            Ok(self.confirm.then(|| {
                c.map(|r| matches!(r, Ok(c) if c.returned.is_none()))
                    .boxed()
            }))
        })
    }

    fn closed(&self) -> bool {
        self.client.closed_reason().is_some()
    }
}

/// A consumer.
pub struct NativeConsumer {
    client: Client,
    consumer: client::Consumer,
}

impl Consumer for NativeConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Received>> {
        Box::pin(async move {
            match self.consumer.next().await {
                Some(Ok(d)) => Some(Received {
                    tag: d.delivery_tag,
                    redelivered: d.redelivered,
                    body: d.body,
                }),
                _ => None,
            }
        })
    }

    fn try_next(&mut self) -> Option<Received> {
        match self.consumer.next().now_or_never()? {
            Some(Ok(d)) => Some(Received {
                tag: d.delivery_tag,
                redelivered: d.redelivered,
                body: d.body,
            }),
            _ => None,
        }
    }

    fn ack(&mut self, tag: u64, multiple: bool) {
        let _ = if multiple {
            self.client.ack_multiple(tag)
        } else {
            self.client.ack(tag)
        };
    }
}
