//! The disk message store under `fsync = always`: 1 KiB persistent messages appended
//! through group commit by several concurrent appenders, each keeping a window of
//! appends in flight (like a publisher with confirms outstanding), each message acked
//! once stored (like a consumer keeping up, so the log is reclaimed as it goes).
//!
//! The figure is durable appends per second; the messages per fsync are printed after
//! each configuration.
//!
//! ```text
//! cargo bench --bench storage
//! ```

use actormq::storage::{
    Completion, DiskStore, FsyncPolicy, MessageStore, QueueId, Record, StorageOptions,
};
use actormq::Message;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Body size of every message.
const BODY: usize = 1024;

/// One configuration.
#[derive(Clone, Copy)]
struct Load {
    /// Concurrent appender threads.
    appenders: usize,
    /// Appends in flight per appender before it waits for the oldest.
    window: usize,
    /// Messages per append.
    batch: usize,
}

impl Load {
    fn name(&self) -> String {
        format!(
            "{}x_window{}_batch{}",
            self.appenders, self.window, self.batch
        )
    }
}

/// One appender: appends `batches` batches to its own queue, keeps `window` of them in
/// flight, acks each batch (without waiting) once its completion resolves.
fn appender(store: &DiskStore, queue: QueueId, next_id: &AtomicU64, load: Load, batches: u64) {
    let message =
        Arc::new(Message::new("bench", "bench", Bytes::from(vec![7u8; BODY])).persistent());
    let mut in_flight: VecDeque<(Vec<u64>, Completion)> = VecDeque::new();
    let settle = |ids: Vec<u64>, c: Completion| {
        c.wait().expect("stored");
        // Acked once stored, as a consumer keeping up would: not waited for.
        drop(store.append(
            vec![Record::Ack {
                queue: queue.clone(),
                ids,
            }],
            false,
        ));
    };
    for _ in 0..batches {
        let first = next_id.fetch_add(load.batch as u64, Ordering::Relaxed);
        let ids: Vec<u64> = (first..first + load.batch as u64).collect();
        let records = ids
            .iter()
            .map(|id| Record::Publish {
                queue: queue.clone(),
                id: *id,
                message: message.clone(),
            })
            .collect();
        in_flight.push_back((ids, store.append(records, true)));
        if in_flight.len() >= load.window {
            let (ids, c) = in_flight.pop_front().expect("in flight");
            settle(ids, c);
        }
    }
    for (ids, c) in in_flight {
        settle(ids, c);
    }
}

fn bench_storage(c: &mut Criterion) {
    let loads = [
        Load {
            appenders: 1,
            window: 1,
            batch: 1,
        },
        Load {
            appenders: 4,
            window: 1,
            batch: 1,
        },
        Load {
            appenders: 16,
            window: 1,
            batch: 1,
        },
        Load {
            appenders: 4,
            window: 256,
            batch: 1,
        },
        Load {
            appenders: 1,
            window: 16,
            batch: 64,
        },
    ];
    let mut group = c.benchmark_group("storage_append_1KiB_fsync_always");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for load in loads {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StorageOptions {
            fsync: FsyncPolicy::Always,
            ..StorageOptions::in_dir(dir.path())
        };
        let store = DiskStore::open(&options).expect("open store");
        let ids: Vec<AtomicU64> = (0..load.appenders).map(|_| AtomicU64::new(1)).collect();
        let (syncs0, appended) = (store.sync_count(), AtomicU64::new(0));
        group.throughput(Throughput::Elements(load.batch as u64));
        group.bench_function(BenchmarkId::from_parameter(load.name()), |b| {
            b.iter_custom(|iters| {
                // `iters` batches, split among the appenders.
                let per = (iters / load.appenders as u64).max(1);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (t, next) in ids.iter().enumerate() {
                        let store = &store;
                        s.spawn(move || {
                            appender(store, QueueId::new("/", &format!("q{t}")), next, load, per)
                        });
                    }
                });
                appended.fetch_add(
                    per * load.appenders as u64 * load.batch as u64,
                    Ordering::Relaxed,
                );
                start.elapsed()
            })
        });
        let syncs = store.sync_count() - syncs0;
        let msgs = appended.load(Ordering::Relaxed);
        eprintln!(
            "{}: {msgs} messages, {syncs} fsyncs, {:.1} messages per fsync, {} segments reclaimed",
            load.name(),
            msgs as f64 / syncs.max(1) as f64,
            store.reclaimed_segments()
        );
    }
    group.finish();
}

criterion_group!(benches, bench_storage);
criterion_main!(benches);
