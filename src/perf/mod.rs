//! `actormq perf`: the load generator, in the manner of rabbitmq-perf-test and
//! `nats bench`.
//!
//! Producers and consumers each get their own connection, publish to an exchange of
//! the chosen type bound to `--queues` queues, and stamp every body with its send time,
//! so the consumers measure end-to-end latency in an HdrHistogram. Rates count what was
//! *consumed* in the measured window (after a warm-up), not what was pushed into a
//! growing backlog; the queue depth left at the end is reported beside them. Given the
//! broker's pid, its CPU and peak RSS are sampled too, and the tool reports its own CPU
//! so that a saturated client is visible.
//!
//! Given a cluster's nodes (`--server a,b,c`, `--amqp-url u1,u2,u3`), connections are
//! spread over them in turn; `--failover` measures what a node's death costs a
//! publisher instead (see `failover`).

#[cfg(feature = "amqp")]
mod amqp;
mod args;
mod driver;
mod failover;
mod native;
mod procstat;
mod raw;
mod report;

use crate::client::ConnectOptions;
pub use args::{servers, AmqpClient, PerfArgs, PerfExchange, QueueType};
pub use driver::{Conn, Consumer, Driver, Producer, Received, Topology};
pub use failover::{FailoverReport, HistoryCheck, Watch};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
pub use report::{Latency, PerfReport};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use procstat::{sample, ProcSample};

/// How long a producer waits for its outstanding confirms once the run is over.
const FINAL_CONFIRMS: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    confirmed: AtomicU64,
    consumed: AtomicU64,
    failed: AtomicU64,
}

/// A latency histogram, 1 µs to 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn percentiles(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: h.value_at_quantile(0.50),
        p95: h.value_at_quantile(0.95),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// Waits until `count` reaches what `rate` allows after `elapsed`.
async fn pace(rate: u64, count: u64, started: Instant) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(count as f64 / rate as f64);
    let elapsed = started.elapsed();
    if due > elapsed {
        tokio::time::sleep(due - elapsed).await;
    }
}

/// Runs the workload against the actormq broker at `connect` (its `addr` may list a
/// cluster's nodes, `a,b,c`) and reports.
pub async fn run(args: PerfArgs, connect: ConnectOptions) -> Result<PerfReport, String> {
    run_watching(args, connect, Arc::default()).await
}

/// [`run`], with a failover run (`--failover`) seen and stoppable through `watch`.
pub async fn run_watching(
    args: PerfArgs,
    connect: ConnectOptions,
    watch: Arc<Watch>,
) -> Result<PerfReport, String> {
    let drivers = servers(&connect.addr)?
        .into_iter()
        .map(|addr| {
            Arc::new(native::Native::new(ConnectOptions {
                addr,
                ..connect.clone()
            }))
        })
        .collect();
    run_on(args, drivers, watch).await
}

/// Runs the workload against the AMQP 0-9-1 broker at `url` (RabbitMQ; a cluster's
/// nodes as `u1,u2,u3`) through the client `args.amqp_client` names. The raw client is
/// always built (it needs nothing beyond the AMQP codec the broker has); lapin only
/// with the `amqp` feature.
pub async fn run_amqp(args: PerfArgs, url: String) -> Result<PerfReport, String> {
    run_amqp_watching(args, url, Arc::default()).await
}

/// [`run_amqp`], with a failover run (`--failover`) seen and stoppable through `watch`.
pub async fn run_amqp_watching(
    args: PerfArgs,
    url: String,
    watch: Arc<Watch>,
) -> Result<PerfReport, String> {
    let urls = servers(&url)?;
    if args.amqp_client == AmqpClient::Raw {
        let drivers = urls
            .iter()
            .map(|u| raw::Raw::new(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        return run_on(args, drivers, watch).await;
    }
    #[cfg(feature = "amqp")]
    {
        let drivers = urls
            .into_iter()
            .map(|u| Arc::new(amqp::Amqp::new(u)))
            .collect();
        run_on(args, drivers, watch).await
    }
    #[cfg(not(feature = "amqp"))]
    {
        let _ = watch;
        Err(
            "--amqp-client lapin needs a build with `--features amqp` (or use --amqp-client raw)"
                .into(),
        )
    }
}

/// Runs the workload through `driver`, the same way for every broker. Progress lines go
/// to standard error once a second.
pub async fn run_with<D: Driver>(args: PerfArgs, driver: Arc<D>) -> Result<PerfReport, String> {
    run_on(args, vec![driver], Arc::default()).await
}

/// Runs the workload (or with `--failover`, the failover run) over a cluster's nodes,
/// one driver each: producer `p` connects to node `p`, consumer connection `c` to node
/// `producers + c` (modulo their number); the first node sets up the queues and
/// answers the depth readings.
pub async fn run_on<D: Driver>(
    args: PerfArgs,
    drivers: Vec<Arc<D>>,
    watch: Arc<Watch>,
) -> Result<PerfReport, String> {
    if drivers.is_empty() {
        return Err("no server to measure".into());
    }
    if args.failover {
        return failover::run(args, drivers, watch).await;
    }
    let driver = drivers[0].clone();
    let node = |k: usize| drivers[k % drivers.len()].clone();
    let topo = Arc::new(Topology::new(&args));
    let size = args.size.max(8);
    // Queues that get a consumer are declared by it (on its connection).
    let by_consumers = args.consumers.min(topo.queues.len());
    if !args.predeclared {
        driver
            .setup(&topo, topo.durable(args.persistent), by_consumers)
            .await?;
    }

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let measuring = Arc::new(AtomicBool::new(false));
    let latency = Arc::new(Mutex::new(histogram()));
    let confirm_latency = Arc::new(Mutex::new(histogram()));
    let epoch = Instant::now();

    let mut idle = Vec::with_capacity(args.idle_connections);
    for _ in 0..args.idle_connections {
        idle.push(driver.idle().await?);
    }

    // Consumers first, so nothing piles up before they attach.
    let n_conns = args
        .connections
        .unwrap_or(args.consumers)
        .clamp(1, args.consumers.max(1));
    let mut conns = Vec::new();
    for i in 0..n_conns.min(args.consumers) {
        conns.push(node(args.producers + i).connect().await?);
    }
    let mut tasks = Vec::new();
    for c in 0..args.consumers {
        let queue = topo.queues[c % topo.queues.len()].clone();
        let qi = c % topo.queues.len();
        let key = topo.binding_key(qi);
        let declare = (c < topo.queues.len() && !args.predeclared).then_some(driver::Declare {
            exchange: &topo.exchange,
            binding_key: &key,
            durable: topo.durable(args.persistent),
            queue_type: topo.queue_type,
        });
        let mut consumer = conns[c % conns.len()]
            .consume(&queue, args.prefetch, args.auto_ack, topo.stream, declare)
            .await?;
        let counters = counters.clone();
        let mut stop_rx = stop_rx.clone();
        let measuring = measuring.clone();
        let latency = latency.clone();
        let per_consumer_rate = args.consumer_rate / args.consumers.max(1) as u64;
        let auto_ack = args.auto_ack;
        let multi = args.multi_ack.max(1);
        // Acks go out every half prefetch window (the consumer yields so its writer
        // runs): the broker sends the next half while the consumer handles this one.
        // Without it the consumer acked each whole window at once and the pipe ran
        // stop-and-wait (scenario 1: 570k -> 706-723k msg/s; a quarter window:
        // 605k, a tenth: 551-568k).
        let flush_every = u64::from(args.prefetch / 2).max(1);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let started = Instant::now();
            let mut n: u64 = 0;
            // The stop signal is one future for the whole run, polled only when no
            // delivery is ready (a delivery ready first is taken; the flag ends a run
            // whose deliveries never stop coming). A `wait_for` made per delivery
            // registered and removed a waiter under the channel's locks each time.
            let stopped = stop_rx.wait_for(|s| *s);
            tokio::pin!(stopped);
            while !stop.load(Ordering::Relaxed) {
                let d = tokio::select! {
                    biased;
                    d = consumer.next() => d,
                    _ = &mut stopped => break,
                };
                let Some(d) = d else { break };
                if measuring.load(Ordering::Relaxed) && d.body.len() >= 8 {
                    let sent = u64::from_le_bytes(d.body[..8].try_into().expect("8 bytes"));
                    let now = epoch.elapsed().as_nanos() as u64;
                    h.saturating_record(now.saturating_sub(sent) / 1000);
                }
                n += 1;
                counters.consumed.fetch_add(1, Ordering::Relaxed);
                if !auto_ack {
                    if multi > 1 {
                        if n % multi == 0 {
                            consumer.ack(d.tag, true);
                        }
                    } else {
                        consumer.ack(d.tag, false);
                    }
                    if n % flush_every == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                pace(per_consumer_rate, n, started).await;
            }
            latency.lock().expect("poisoned").add(&h).ok();
        }));
    }

    let mut producers = Vec::new();
    for p in 0..args.producers {
        let mut producer = node(p)
            .producer(args.confirm, args.confirm_window.max(1))
            .await?;
        let topo = topo.clone();
        let counters = counters.clone();
        let stop = stop.clone();
        let measuring = measuring.clone();
        let confirm_latency = confirm_latency.clone();
        let rate = args.rate / args.producers.max(1) as u64;
        let window = args.confirm_window.max(1);
        let persistent = args.persistent;
        let keys: Vec<String> = (0..topo.queues.len())
            .map(|i| topo.routing_key(i))
            .collect();
        let mut stop_rx = stop_rx.clone();
        producers.push(tokio::spawn(async move {
            let mut body = vec![0u8; size];
            let mut inflight = FuturesUnordered::new();
            let mut h = histogram();
            let started = Instant::now();
            let mut n: u64 = 0;
            let mut k = p;
            while !stop.load(Ordering::Relaxed) {
                let sent = epoch.elapsed().as_nanos() as u64;
                body[..8].copy_from_slice(&sent.to_le_bytes());
                k = (k + 1) % keys.len();
                // A publish waiting for room (the broker holds a publisher back while
                // its queues are over their flow threshold, as after the consumers
                // stopped) must not keep the run from ending.
                let published = tokio::select! {
                    r = producer.publish(&topo.exchange, &keys[k], &body, persistent) => r,
                    _ = stop_rx.wait_for(|s| *s) => break,
                };
                let confirm = match published {
                    Ok(c) => c,
                    Err(_) => break,
                };
                n += 1;
                counters.published.fetch_add(1, Ordering::Relaxed);
                if let Some(confirm) = confirm {
                    inflight.push(confirm.map(move |ok| (ok, sent)));
                    while inflight.len() >= window {
                        if let Some((ok, at)) = inflight.next().await {
                            settle(&counters, &measuring, &mut h, ok, at, epoch);
                        }
                    }
                    while let Some(Some((ok, at))) = inflight.next().now_or_never() {
                        settle(&counters, &measuring, &mut h, ok, at, epoch);
                    }
                }
                if n % 128 == 0 {
                    tokio::task::yield_now().await;
                }
                pace(rate, n, started).await;
            }
            // The confirms still outstanding, for a while: the broker may hold them
            // for good (its queue over the flow threshold, whose consumers stopped
            // with the run: the run never ended once, on a quorum queue), and the
            // measured window is over anyway.
            let until = tokio::time::Instant::now() + FINAL_CONFIRMS;
            while let Ok(Some((ok, at))) = tokio::time::timeout_at(until, inflight.next()).await {
                settle(&counters, &measuring, &mut h, ok, at, epoch);
            }
            confirm_latency.lock().expect("poisoned").add(&h).ok();
        }));
    }

    // Warm-up, then the measured window with a progress line each second.
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    latency.lock().expect("poisoned").reset();
    confirm_latency.lock().expect("poisoned").reset();
    measuring.store(true, Ordering::Relaxed);
    let snap = |c: &Counters| {
        (
            c.published.load(Ordering::Relaxed),
            c.confirmed.load(Ordering::Relaxed),
            c.consumed.load(Ordering::Relaxed),
        )
    };
    let start = snap(&counters);
    let t0 = Instant::now();
    let broker0 = args.broker_pid.and_then(|p| sample(Some(p)));
    let client0 = sample(None);
    let mut peak_rss = broker0.map(|s| s.rss);
    let mut last = start;
    for sec in 1..=args.duration {
        let until = t0 + Duration::from_secs(sec);
        while Instant::now() < until {
            tokio::time::sleep(
                Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())),
            )
            .await;
            if let Some(s) = args.broker_pid.and_then(|p| sample(Some(p))) {
                peak_rss = Some(peak_rss.unwrap_or(0).max(s.rss));
            }
        }
        let now = snap(&counters);
        // With many queues a depth reading takes longer than the second it reports on.
        let depth = if topo.queues.len() <= 64 {
            driver.depth(&topo.queues).await.to_string()
        } else {
            "-".to_string()
        };
        eprintln!(
            "t={sec:>3}s published/s {:>9} consumed/s {:>9} depth {:>9}{}",
            now.0 - last.0,
            now.2 - last.2,
            depth,
            args.broker_pid
                .and_then(|p| sample(Some(p)))
                .map(|s| format!(" broker RSS {:.1} MiB", s.rss as f64 / 1048576.0))
                .unwrap_or_default()
        );
        last = now;
    }
    let end = snap(&counters);
    let secs = t0.elapsed().as_secs_f64();
    let broker1 = args.broker_pid.and_then(|p| sample(Some(p)));
    let client1 = sample(None);
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for p in producers {
        let _ = p.await;
    }
    // Each consumer merges its histogram into the shared one as it stops.
    for t in tasks {
        let _ = t.await;
    }
    let queue_depth_end = driver.depth(&topo.queues).await;
    if args.delete_queues {
        if let Err(e) = driver.delete_queues(&topo.queues).await {
            eprintln!("could not delete the queues: {e}");
        }
    }
    drop(idle);
    let lat = percentiles(&latency.lock().expect("poisoned"));
    let conf = args
        .confirm
        .then(|| percentiles(&confirm_latency.lock().expect("poisoned")));
    let cores = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => Some((b.cpu.saturating_sub(a.cpu)).as_secs_f64() / secs),
        _ => None,
    };
    let broker_cpu_cores = cores(broker0, broker1);
    let per_sec = [end.2 - start.2, end.1 - start.1, end.0 - start.0]
        .into_iter()
        .find(|n| *n > 0)
        .map(|n| n as f64 / secs);
    Ok(PerfReport {
        broker_us_per_msg: broker_cpu_cores.zip(per_sec).map(|(c, r)| c / r * 1e6),
        published_per_sec: (end.0 - start.0) as f64 / secs,
        confirmed_per_sec: (end.1 - start.1) as f64 / secs,
        consumed_per_sec: (end.2 - start.2) as f64 / secs,
        latency_us: lat,
        confirm_latency_us: conf,
        queue_depth_end,
        broker_cpu_cores,
        broker_peak_rss: peak_rss,
        client_cpu_cores: cores(client0, client1),
        publish_failures: counters.failed.load(Ordering::Relaxed),
        failover: None,
        options: args,
    })
}

fn settle(
    counters: &Counters,
    measuring: &AtomicBool,
    h: &mut Histogram<u64>,
    ok: bool,
    sent: u64,
    epoch: Instant,
) {
    if ok {
        counters.confirmed.fetch_add(1, Ordering::Relaxed);
        if measuring.load(Ordering::Relaxed) {
            let now = epoch.elapsed().as_nanos() as u64;
            h.saturating_record(now.saturating_sub(sent) / 1000);
        }
    } else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
}
