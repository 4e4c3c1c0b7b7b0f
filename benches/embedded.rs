//! In-process throughput through the embedding API: publish with `publish_batch`
//! (batches of 64, a bounded number of confirms outstanding) and consume with
//! `Session::consume` streams (auto-ack), for 16 B and 1 KiB bodies, into one queue and
//! through a fanout to four. The figure is messages *consumed* per second.
//!
//! ```text
//! cargo bench --bench embedded
//! ```

use actormq::{
    Broker, BrokerHandle, Confirm, ConsumeOptions, ExchangeOptions, FieldTable, Message,
    QueueOptions, Session,
};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Messages per publish batch.
const BATCH: usize = 64;
/// Batches published per iteration.
const BATCHES: usize = 64;
/// Batches whose confirms may be outstanding before the publisher waits for the oldest.
const OUTSTANDING: usize = 32;

/// Consumed-message counter the iterations wait on.
struct Progress {
    consumed: AtomicU64,
    goal: AtomicU64,
    reached: Notify,
}

impl Progress {
    async fn wait_for(&self, goal: u64) {
        loop {
            let notified = self.reached.notified();
            if self.consumed.load(Ordering::Acquire) >= goal {
                return;
            }
            notified.await;
        }
    }
}

/// One configuration: an exchange and routing key to publish to, and a consumer task
/// per queue, running for the whole benchmark.
struct Setup {
    session: Session,
    exchange: String,
    key: String,
    body: Bytes,
    queues: usize,
    progress: Arc<Progress>,
    consumers: Vec<JoinHandle<()>>,
}

impl Setup {
    async fn new(broker: &BrokerHandle, body_len: usize, queues: usize) -> Setup {
        let session = broker.session();
        let name = format!("bench-{body_len}-{queues}");
        let (exchange, key) = if queues == 1 {
            (String::new(), format!("{name}-q0"))
        } else {
            session
                .declare_exchange(&name, "fanout", &ExchangeOptions::new())
                .await
                .unwrap();
            (name.clone(), String::new())
        };
        let progress = Arc::new(Progress {
            consumed: AtomicU64::new(0),
            goal: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
        });
        let mut consumers = Vec::new();
        for q in 0..queues {
            let queue = format!("{name}-q{q}");
            session
                .declare_queue(&queue, &QueueOptions::new())
                .await
                .unwrap();
            if queues > 1 {
                session
                    .bind_queue(&queue, &exchange, "", FieldTable::new())
                    .await
                    .unwrap();
            }
            let options = ConsumeOptions {
                no_ack: true,
                ..Default::default()
            };
            let mut stream = session.consume(&queue, &options).await.unwrap();
            let progress = progress.clone();
            consumers.push(tokio::spawn(async move {
                while let Some(r) = stream.next().await {
                    std::hint::black_box(&r.message.body);
                    let n = progress.consumed.fetch_add(1, Ordering::AcqRel) + 1;
                    if n >= progress.goal.load(Ordering::Acquire) {
                        progress.reached.notify_one();
                    }
                }
            }));
        }
        Setup {
            session,
            exchange,
            key,
            body: Bytes::from(vec![b'x'; body_len]),
            queues,
            progress,
            consumers,
        }
    }

    /// Messages consumed per iteration.
    fn consumed_per_iteration(&self) -> u64 {
        (BATCH * BATCHES * self.queues) as u64
    }

    /// Publishes and consumes `iters` iterations; answers the time it took.
    async fn run(&self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let goal =
                self.progress.consumed.load(Ordering::Acquire) + self.consumed_per_iteration();
            self.progress.goal.store(goal, Ordering::Release);
            let mut outstanding: VecDeque<Confirm> = VecDeque::with_capacity(OUTSTANDING);
            for _ in 0..BATCHES {
                let batch = (0..BATCH)
                    .map(|_| Message::new(&self.exchange, &self.key, self.body.clone()))
                    .collect();
                let mut confirms = self.session.publish_batch(batch, false).await.unwrap();
                // A batch is confirmed as a whole: its last confirm stands for it.
                outstanding.push_back(confirms.pop().unwrap());
                if outstanding.len() > OUTSTANDING {
                    outstanding.pop_front().unwrap().await.unwrap();
                }
            }
            for c in outstanding {
                c.await.unwrap();
            }
            self.progress.wait_for(goal).await;
        }
        start.elapsed()
    }
}

fn embedded_throughput(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let broker = Broker::builder().workers(2).start().unwrap();
    let mut group = c.benchmark_group("embedded_publish_consume");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (body_len, body_name) in [(16, "16B"), (1024, "1KiB")] {
        for (queues, shape) in [(1, "1_queue"), (4, "fanout_4")] {
            let setup = rt.block_on(Setup::new(&broker, body_len, queues));
            group.throughput(Throughput::Elements(setup.consumed_per_iteration()));
            group.bench_function(BenchmarkId::new(shape, body_name), |b| {
                b.iter_custom(|iters| rt.block_on(setup.run(iters)))
            });
            for consumer in &setup.consumers {
                consumer.abort();
            }
        }
    }
    group.finish();
    broker.shutdown();
}

criterion_group!(benches, embedded_throughput);
criterion_main!(benches);
