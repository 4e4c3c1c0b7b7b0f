//! Delayed delivery at scale: what a million pending delayed messages cost while they
//! wait, and how late they are delivered.
//!
//! ```text
//! cargo run --release --example delayed_bench            # the full run (~2 minutes)
//! cargo run --release --example delayed_bench -- quick   # 1/10 of the messages
//! ```
//!
//! Three phases, each on a fresh queue of one embedded broker (two worker threads):
//!
//! 1. **Memory and CPU while waiting.** 1,000,000 messages (16-byte bodies) with an
//!    `x-delay` header drawn uniformly from 0..60 s, published through the embedding API
//!    in batches of 256. Reported: resident memory (VmRSS, `/proc/self/status`) before
//!    and after, and the process CPU time (utime + stime, `/proc/self/stat`) over the
//!    10 s that follow, while about a sixth of them come due and move to the ready list.
//! 2. **Idle cost.** The same million, with delays of 40..60 s: the 10 s after publishing
//!    have nothing due, which shows what waiting costs on its own (one armed timer).
//! 3. **Lateness.** 100,000 messages with delays of 0..10 s to a queue with an auto-ack
//!    consumer; each body carries its due time (publish time + delay), and the consumer
//!    records how late it arrived (HdrHistogram, microseconds).

use actormq::{Broker, BrokerHandle, Confirm, ConsumeOptions, Message, QueueOptions, Session};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Messages per publish batch.
const BATCH: usize = 256;
/// Publish batches whose confirms may be outstanding.
const OUTSTANDING: usize = 64;
/// The CPU measurement window.
const WINDOW: Duration = Duration::from_secs(10);

/// A small, fast PRNG (xorshift64*): the delays need spread, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Resident set size in bytes (VmRSS).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

/// CPU time of the whole process (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_sec)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Publishes `n` messages to `queue`, each with `x-delay` from `delay_ms(i)`, and a
/// body from `body(i, delay)`; waits for every confirm.
async fn publish_delayed(
    session: &Session,
    queue: &str,
    n: usize,
    mut delay_ms: impl FnMut() -> u64,
    mut body: impl FnMut(u64) -> Vec<u8>,
) {
    let mut outstanding: VecDeque<Vec<Confirm>> = VecDeque::new();
    let mut sent = 0;
    while sent < n {
        let k = BATCH.min(n - sent);
        let batch: Vec<Message> = (0..k)
            .map(|_| {
                let d = delay_ms();
                Message::new("", queue, body(d)).with_header("x-delay", d as i64)
            })
            .collect();
        outstanding.push_back(session.publish_batch(batch, false).await.expect("publish"));
        sent += k;
        if outstanding.len() > OUTSTANDING {
            for c in outstanding.pop_front().unwrap() {
                c.await.expect("confirmed");
            }
        }
    }
    for cs in outstanding {
        for c in cs {
            c.await.expect("confirmed");
        }
    }
}

/// Phases 1 and 2: memory after publishing `n`, CPU over the next window.
async fn waiting_cost(broker: &BrokerHandle, n: usize, queue: &str, min_ms: u64, max_ms: u64) {
    let session = broker.session();
    session
        .declare_queue(queue, &QueueOptions::new())
        .await
        .unwrap();
    let before = rss();
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    publish_delayed(
        &session,
        queue,
        n,
        || min_ms + rng.below(max_ms - min_ms),
        |_| vec![b'x'; 16],
    )
    .await;
    let publish_time = started.elapsed();
    let after = rss();
    let stats = session.queue_stats(queue).await.unwrap();
    let cpu_before = cpu_time();
    let window_start = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let cpu = cpu_time() - cpu_before;
    let wall = window_start.elapsed();
    let stats_after = session.queue_stats(queue).await.unwrap();
    println!(
        "  {n} messages, delays {}..{} s: published and confirmed in {:.2} s ({:.0} msg/s)",
        min_ms / 1000,
        max_ms / 1000,
        publish_time.as_secs_f64(),
        n as f64 / publish_time.as_secs_f64()
    );
    println!(
        "  RSS before {:.1} MiB, after {:.1} MiB: +{:.1} MiB, {:.0} B per pending message (gauge: {:.1} MiB of bodies)",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        after.saturating_sub(before) as f64 / n as f64,
        mib(broker.memory().used() as u64),
    );
    println!(
        "  right after publishing: {} delayed, {} ready; {:.1} s later: {} delayed, {} ready",
        stats.delayed,
        stats.ready,
        wall.as_secs_f64(),
        stats_after.delayed,
        stats_after.ready
    );
    println!(
        "  CPU over those {:.1} s: {:.3} s ({:.2}% of one core)",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    session.delete_queue(queue, false, false).await.unwrap();
}

/// Phase 3: lateness of `n` messages delayed 0..`max_ms`.
async fn lateness(broker: &BrokerHandle, n: usize, max_ms: u64) {
    let session = broker.session();
    session
        .declare_queue("lateness", &QueueOptions::new())
        .await
        .unwrap();
    let epoch = Instant::now();
    let mut consumer = session
        .consume(
            "lateness",
            &ConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // When publishing ended (micros since `epoch`), to tell steady state from the
    // messages that came due while the queue was still taking publishes.
    let published = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let published_at = published.clone();
    let receiver = tokio::spawn(async move {
        let new = || Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
        let (mut all, mut steady) = (new(), new());
        let mut early = 0u64;
        for _ in 0..n {
            let r = consumer.next().await.expect("a delivery");
            let now = epoch.elapsed().as_micros() as u64;
            let due = u64::from_le_bytes(r.message.body[..8].try_into().unwrap());
            if now < due {
                early += 1;
            }
            let late = now.saturating_sub(due).max(1);
            all.record(late).unwrap();
            if due > published_at.load(std::sync::atomic::Ordering::Relaxed) {
                steady.record(late).unwrap();
            }
        }
        (all, steady, early)
    });
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    publish_delayed(
        &session,
        "lateness",
        n,
        || rng.below(max_ms),
        |d| {
            let due = epoch.elapsed().as_micros() as u64 + d * 1000;
            due.to_le_bytes().to_vec()
        },
    )
    .await;
    let publish_time = epoch.elapsed();
    published.store(
        publish_time.as_micros() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let (all, steady, early) = receiver.await.unwrap();
    println!(
        "  {n} messages, delays 0..{} s, published in {:.2} s, consumed (auto-ack) as they come due;",
        max_ms / 1000,
        publish_time.as_secs_f64()
    );
    println!("  lateness = delivery time - (publish call + delay):");
    let ms = |v: u64| v as f64 / 1000.0;
    for (what, h) in [("all", &all), ("due after publishing ended", &steady)] {
        println!(
            "    {what} ({}): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        );
    }
    println!("    delivered before due: {early}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 10 } else { 1 };
    let broker = Broker::builder().workers(2).start().expect("broker");
    println!("delayed delivery: {} worker threads", 2);
    println!("phase 1: memory, and CPU while messages come due");
    waiting_cost(&broker, 1_000_000 / scale, "delayed", 0, 60_000).await;
    println!("phase 2: CPU while nothing is due");
    waiting_cost(&broker, 1_000_000 / scale, "idle", 40_000, 60_000).await;
    println!("phase 3: lateness");
    lateness(&broker, 100_000 / scale, 10_000).await;
    broker.shutdown();
}
