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

#[cfg(feature = "amqp")]
mod amqp;
mod driver;
mod native;
mod procstat;
mod raw;

use crate::client::ConnectOptions;
pub use driver::{Conn, Consumer, Driver, Producer, Received, Topology};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use procstat::{sample, ProcSample};

/// Exchange types the tool can set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PerfExchange {
    /// Each message to one queue (round-robin over the queues).
    Direct,
    /// Each message to every queue.
    Fanout,
    /// Each message to one queue through a `key.#` pattern.
    Topic,
}

/// The AMQP client `actormq perf --amqp-url` measures with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AmqpClient {
    /// The lapin crate.
    Lapin,
    /// The tool's own lean client.
    Raw,
}

/// The options of `actormq perf` (names fixed: scripts rely on them).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct PerfArgs {
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers (spread over the queues, round-robin).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Queues bound to the exchange.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Exchange type.
    #[arg(long, value_enum, default_value = "direct")]
    pub exchange_type: PerfExchange,
    /// Body size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Total publish rate in messages per second; 0 = as fast as the broker allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total consume rate limit in messages per second; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub consumer_rate: u64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Ask for publisher confirms.
    #[arg(long)]
    pub confirm: bool,
    /// Unconfirmed publishes outstanding per producer.
    #[arg(long, default_value_t = 1000)]
    pub confirm_window: usize,
    /// Persistent messages in durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 100)]
    pub prefetch: u32,
    /// Consume without acks.
    #[arg(long)]
    pub auto_ack: bool,
    /// Ack every N deliveries with one multiple ack (1 = ack each).
    #[arg(long, default_value_t = 1)]
    pub multi_ack: u64,
    /// Consumer connections (consumers spread over them); default one per consumer.
    #[arg(long)]
    pub connections: Option<usize>,
    /// The broker's pid, to report its CPU and peak RSS.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Threads of the load generator's runtime (1 = current-thread, the leanest).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Extra connections opened before the run that do nothing but stay open (to
    /// measure memory per connection and idle CPU).
    #[arg(long, default_value_t = 0)]
    pub idle_connections: usize,
    /// Measure an AMQP 0-9-1 broker (RabbitMQ) at this URL instead, e.g.
    /// amqp://guest:guest@127.0.0.1:5672/%2f (lapin needs the `amqp` cargo feature).
    #[arg(long)]
    pub amqp_url: Option<String>,
    /// The AMQP client of `--amqp-url`: lapin (a thread per connection), or `raw`, a
    /// lean client of the tool's own built like actormq's native client (to tell
    /// what the broker costs from what lapin costs).
    #[arg(long, value_enum, default_value = "lapin")]
    pub amqp_client: AmqpClient,
    /// Prefix of the exchange and queue names the tool declares.
    #[arg(long, default_value = "perf")]
    pub prefix: String,
    /// Use the queues an earlier run left (same --prefix, --queues): nothing is deleted
    /// or declared. With --producers 0, measures draining a backlog (a lazy queue read
    /// back from disk, for instance).
    #[arg(long)]
    pub predeclared: bool,
    /// Delete the queues at the end (after the depth is read), so that a backlog left
    /// behind does not cost the broker anything during whatever runs next.
    #[arg(long)]
    pub delete_queues: bool,
    /// Stream queues (`x-queue-type = stream`, durable): publishes are appended
    /// (confirmed once on disk with --confirm), every consumer reads its stream from
    /// `first` (each consumer of one queue reads all of it).
    #[arg(long)]
    pub stream: bool,
}

impl Default for PerfArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            a: PerfArgs,
        }
        Wrap::parse_from(["perf"]).a
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PerfReport {
    /// The options of the run.
    pub options: PerfArgs,
    /// Publishes per second in the measured window.
    pub published_per_sec: f64,
    /// Confirms per second in the measured window.
    pub confirmed_per_sec: f64,
    /// Deliveries consumed per second in the measured window.
    pub consumed_per_sec: f64,
    /// End-to-end latency (publish to consume) in the measured window.
    pub latency_us: Latency,
    /// Confirm latency (publish to confirm) when confirms were on.
    pub confirm_latency_us: Option<Latency>,
    /// Messages left in the queues at the end.
    pub queue_depth_end: u64,
    /// Broker CPU over the measured window, in cores.
    pub broker_cpu_cores: Option<f64>,
    /// Broker CPU per message in the measured window, in microseconds: per consumed
    /// message, or per confirmed (else published) one when nothing was consumed. The
    /// figure to compare when the client, not the broker, sets the rate.
    pub broker_us_per_msg: Option<f64>,
    /// Highest broker RSS sampled, bytes.
    pub broker_peak_rss: Option<u64>,
    /// This tool's CPU over the measured window, in cores.
    pub client_cpu_cores: Option<f64>,
    /// Publishes the broker refused (nacks) or returned.
    pub publish_failures: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    confirmed: AtomicU64,
    consumed: AtomicU64,
    failed: AtomicU64,
}

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

/// Runs the workload against the actormq broker at `connect` and reports.
pub async fn run(args: PerfArgs, connect: ConnectOptions) -> Result<PerfReport, String> {
    let driver = Arc::new(native::Native::new(connect));
    run_with(args, driver).await
}

/// Runs the workload against the AMQP 0-9-1 broker at `url` (RabbitMQ) through the
/// client `args.amqp_client` names. The raw client is always built (it needs nothing
/// beyond the AMQP codec the broker has); lapin only with the `amqp` feature.
pub async fn run_amqp(args: PerfArgs, url: String) -> Result<PerfReport, String> {
    if args.amqp_client == AmqpClient::Raw {
        let driver = Arc::new(raw::Raw::new(&url)?);
        return run_with(args, driver).await;
    }
    #[cfg(feature = "amqp")]
    {
        let driver = Arc::new(amqp::Amqp::new(url));
        run_with(args, driver).await
    }
    #[cfg(not(feature = "amqp"))]
    Err(
        "--amqp-client lapin needs a build with `--features amqp` (or use --amqp-client raw)"
            .into(),
    )
}

/// Runs the workload through `driver`, the same way for every broker. Progress lines go
/// to standard error once a second.
pub async fn run_with<D: Driver>(args: PerfArgs, driver: Arc<D>) -> Result<PerfReport, String> {
    let topo = Arc::new(Topology::new(&args));
    let size = args.size.max(8);
    // Queues that get a consumer are declared by it (on its connection).
    let by_consumers = args.consumers.min(topo.queues.len());
    if !args.predeclared {
        driver
            .setup(&topo, args.persistent || args.stream, by_consumers)
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
    for _ in 0..n_conns.min(args.consumers) {
        conns.push(driver.connect().await?);
    }
    let mut tasks = Vec::new();
    for c in 0..args.consumers {
        let queue = topo.queues[c % topo.queues.len()].clone();
        let qi = c % topo.queues.len();
        let key = topo.binding_key(qi);
        let declare = (c < topo.queues.len() && !args.predeclared).then_some(driver::Declare {
            exchange: &topo.exchange,
            binding_key: &key,
            durable: args.persistent || args.stream,
        });
        let mut consumer = conns[c % conns.len()]
            .consume(&queue, args.prefetch, args.auto_ack, args.stream, declare)
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
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let started = Instant::now();
            let mut n: u64 = 0;
            loop {
                let d = tokio::select! {
                    biased;
                    _ = stop_rx.wait_for(|s| *s) => break,
                    d = consumer.next() => d,
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
        let mut producer = driver
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
            while let Some((ok, at)) = inflight.next().await {
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

impl PerfReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        s.push_str(&format!(
            "producers {} consumers {} queues {} exchange {:?} size {} B rate {} confirm {} persistent {} prefetch {} auto-ack {} multi-ack {}\n",
            o.producers, o.consumers, o.queues, o.exchange_type, o.size, o.rate, o.confirm, o.persistent, o.prefetch, o.auto_ack, o.multi_ack
        ));
        s.push_str(&format!("published/s   {:>12.0}\n", self.published_per_sec));
        if o.confirm {
            s.push_str(&format!("confirmed/s   {:>12.0}\n", self.confirmed_per_sec));
        }
        s.push_str(&format!("consumed/s    {:>12.0}\n", self.consumed_per_sec));
        let l = &self.latency_us;
        s.push_str(&format!(
            "latency µs    p50 {} p95 {} p99 {} p99.9 {} max {}\n",
            l.p50, l.p95, l.p99, l.p999, l.max
        ));
        if let Some(c) = &self.confirm_latency_us {
            s.push_str(&format!(
                "confirm µs    p50 {} p95 {} p99 {} p99.9 {} max {}\n",
                c.p50, c.p95, c.p99, c.p999, c.max
            ));
        }
        s.push_str(&format!("queue depth at end {}\n", self.queue_depth_end));
        if let Some(c) = self.broker_cpu_cores {
            s.push_str(&format!("broker CPU    {c:.2} cores\n"));
        }
        if let Some(u) = self.broker_us_per_msg {
            s.push_str(&format!("broker CPU    {u:.2} µs per message\n"));
        }
        if let Some(r) = self.broker_peak_rss {
            s.push_str(&format!(
                "broker peak RSS {:.1} MiB\n",
                r as f64 / 1048576.0
            ));
        }
        if let Some(c) = self.client_cpu_cores {
            s.push_str(&format!("perf client CPU {c:.2} cores\n"));
        }
        if self.publish_failures > 0 {
            s.push_str(&format!(
                "publish failures (nacks, returns) {}\n",
                self.publish_failures
            ));
        }
        s
    }

    /// The JSON report.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}
