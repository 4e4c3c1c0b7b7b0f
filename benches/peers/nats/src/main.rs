//! Peer benchmark for docs/STREAMS.md: NATS JetStream (file storage) measured the way
//! `actormq perf --stream` measures actormq's streams, so the two can sit in one table.
//!
//! ```text
//! nats-peer-bench publish --url nats://127.0.0.1:4333 --stream S --size 1024 --window 1000 --duration 10 [--pid P]
//! nats-peer-bench replay  --url nats://127.0.0.1:4333 --stream S --duration 10 [--pid P]
//! ```
//!
//! `publish` creates the stream (file storage, subject = its name) and publishes with
//! `--window` acks outstanding; `replay` reads it from the first message through a pull
//! consumer without acks. Each prints one JSON line: the rate, and the server's CPU
//! per message when given its pid (read from /proc, as `actormq perf` does).

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};

struct Args {
    mode: String,
    url: String,
    stream: String,
    size: usize,
    window: usize,
    duration: u64,
    warmup: u64,
    pid: Option<u32>,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    let mut a = Args {
        mode,
        url: "nats://127.0.0.1:4222".into(),
        stream: "perf".into(),
        size: 1024,
        window: 1000,
        duration: 10,
        warmup: 1,
        pid: None,
    };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--url" => a.url = v,
            "--stream" => a.stream = v,
            "--size" => a.size = v.parse().expect("--size"),
            "--window" => a.window = v.parse().expect("--window"),
            "--duration" => a.duration = v.parse().expect("--duration"),
            "--warmup" => a.warmup = v.parse().expect("--warmup"),
            "--pid" => a.pid = Some(v.parse().expect("--pid")),
            _ => panic!("unknown option {k}"),
        }
    }
    a
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The measured window: starts after the warm-up, counts, and answers (per second,
/// server µs per message) at its end.
struct Window {
    pid: Option<u32>,
    warm_until: Instant,
    until: Instant,
    started: Option<(Instant, Option<f64>)>,
    n: u64,
}

impl Window {
    fn new(a: &Args) -> Self {
        let warm_until = Instant::now() + Duration::from_secs(a.warmup);
        Window {
            pid: a.pid,
            warm_until,
            until: warm_until + Duration::from_secs(a.duration),
            started: None,
            n: 0,
        }
    }

    /// Counts `n` done; false once the window is over.
    fn count(&mut self, n: u64) -> bool {
        let now = Instant::now();
        if now < self.warm_until {
            return true;
        }
        match self.started {
            None => self.started = Some((now, cpu_secs(self.pid))),
            Some(_) => self.n += n,
        }
        now < self.until
    }

    fn result(&self) -> (f64, Option<f64>) {
        let (t0, c0) = self.started.expect("the window started");
        let secs = t0.elapsed().as_secs_f64();
        let us = c0
            .zip(cpu_secs(self.pid))
            .map(|(c0, c1)| (c1 - c0) / self.n.max(1) as f64 * 1e6);
        (self.n as f64 / secs, us)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), async_nats::Error> {
    let a = args();
    let client = async_nats::connect(a.url.as_str()).await?;
    let js = jetstream::new(client);
    match a.mode.as_str() {
        "publish" => {
            let _ = js.delete_stream(&a.stream).await;
            js.create_stream(stream::Config {
                name: a.stream.clone(),
                subjects: vec![a.stream.clone()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
            let body = Bytes::from(vec![7u8; a.size]);
            let mut inflight = FuturesUnordered::new();
            let window = a.window.max(1);
            let mut w = Window::new(&a);
            loop {
                let ack = js.publish(a.stream.clone(), body.clone()).await?;
                inflight.push(ack.into_future());
                let mut done = 0;
                while inflight.len() >= window {
                    if let Some(r) = inflight.next().await {
                        r?;
                        done += 1;
                    }
                }
                if !w.count(done) {
                    break;
                }
            }
            let (rate, us) = w.result();
            while let Some(r) = inflight.next().await {
                r?;
            }
            println!(
                "{}",
                serde_json::json!({"peer": "jetstream", "mode": "publish", "size": a.size,
                    "confirmed_per_sec": rate, "broker_us_per_msg": us})
            );
        }
        "replay" => {
            let s = js.get_stream(&a.stream).await?;
            let c = s
                .create_consumer(consumer::pull::Config {
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await?;
            let mut messages = c
                .stream()
                .max_messages_per_batch(1000)
                .messages()
                .await?;
            let mut w = Window::new(&a);
            loop {
                // A stream read to its end sends nothing more: the window still ends.
                let left = w.until.saturating_duration_since(Instant::now());
                let n = match tokio::time::timeout(left, messages.next()).await {
                    Ok(Some(Ok(_))) => 1,
                    Ok(other) => panic!("replay ended: {:?}", other.map(|r| r.err())),
                    Err(_) => 0,
                };
                if !w.count(n) {
                    break;
                }
            }
            let (rate, us) = w.result();
            println!(
                "{}",
                serde_json::json!({"peer": "jetstream", "mode": "replay",
                    "consumed_per_sec": rate, "broker_us_per_msg": us})
            );
        }
        m => panic!("mode '{m}': publish or replay"),
    }
    Ok(())
}
