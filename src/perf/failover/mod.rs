//! `actormq perf --failover`: what the death of a node costs a publisher, in the manner
//! of a Jepsen-style history check but small.
//!
//! One publisher with confirms (window `--confirm-window`) publishes numbered messages
//! to one queue for `--duration` seconds while something outside (a script) kills a
//! node. When the publisher's connection fails (an error, the connection or channel
//! closed, or no confirm for `--failover-timeout` seconds), what it had outstanding is
//! counted as lost with the connection and published again, and the publisher moves to
//! the next server of the list (`--server a,b,c`, `--amqp-url u1,u2,u3`; with one
//! server, the same one again), trying them in turn for `--failover-timeout` seconds.
//! The failover time is the span from the last confirm before a failure to the first
//! confirm after it; the longest silence between two confirms is reported beside it
//! (a leader dying on a node the publisher is not connected to shows there, not as a
//! failure). While the broker says the connection is blocked (`connection.blocked`: a
//! memory or disk alarm), the silence is not a failure: the publisher waits, and the
//! time blocked is reported apart (see `blocked`). At the end the queue is consumed and
//! every confirmed id must come back.

mod blocked;
mod check;
mod history;
mod report;

pub use history::HistoryCheck;

use super::driver::{BoxFuture, Driver, Producer, Topology};
use super::{histogram, pace, PerfArgs, PerfReport};
use blocked::Blocked;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use history::{Gaps, History};
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A failover run seen from outside while it runs (a test, to kill a connection at the
/// right moment and end the run once it has recovered).
#[derive(Debug, Default)]
pub struct Watch {
    confirmed: AtomicU64,
    reconnects: AtomicU64,
    stop: AtomicBool,
}

impl Watch {
    /// Distinct messages confirmed so far.
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// Times the publisher connected again after a failure.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Ends the publishing before `--duration` (the check still runs).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a failover run measured (besides the rates and confirm latency of the report
/// it is part of).
#[derive(Debug, Clone, Serialize, Default)]
pub struct FailoverReport {
    /// Publishes sent, republishes included.
    pub published: u64,
    /// Distinct messages confirmed.
    pub confirmed: u64,
    /// Publishes the broker refused (nack) while the connection was up; published again.
    pub nacked: u64,
    /// Publishes outstanding when a connection failed; published again.
    pub lost_with_connection: u64,
    /// Publishes of a message sent before.
    pub republished: u64,
    /// Messages never confirmed when the run ended.
    pub unconfirmed_at_end: u64,
    /// Connections made again after a failure.
    pub reconnects: u64,
    /// Why connections failed (the first 10).
    pub errors: Vec<String>,
    /// The first failure's failover, ms: last confirm before it to first confirm after.
    pub failover_ms: Option<f64>,
    /// Every failure's, ms.
    pub failovers_ms: Vec<f64>,
    /// When the first failure's failover ended: its first confirm (Unix ms), to set
    /// beside the time of a kill.
    pub recovered_unix_ms: Option<u64>,
    /// A failure no confirm followed before the run ended: ms from the last confirm
    /// before it to the end of the run (the failover took longer than that).
    pub unrecovered_ms: Option<f64>,
    /// The longest time between two confirms, ms.
    pub max_confirm_gap_ms: f64,
    /// When that gap began and ended (Unix ms), to set beside the time of a kill.
    pub max_gap_from_unix_ms: u64,
    /// See `max_gap_from_unix_ms`.
    pub max_gap_to_unix_ms: u64,
    /// When the first connection failure was seen (Unix ms).
    pub first_failure_unix_ms: Option<u64>,
    /// Time the broker kept the publisher's connection blocked (a resource alarm), ms:
    /// not counted as failovers.
    pub blocked_ms: f64,
    /// The blocked spans (Unix ms, from and to), the first 10.
    pub blocked_unix_ms: Vec<(u64, u64)>,
    /// Why the run stopped early: no server took the publisher back in time.
    pub gave_up: Option<String>,
    /// The history check, when the queue could be consumed.
    pub check: Option<HistoryCheck>,
    /// Why it could not.
    pub check_error: Option<String>,
}

/// Converts the run's instants to Unix milliseconds.
struct Clock {
    at: Instant,
    unix_ms: u64,
}

impl Clock {
    fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            at: Instant::now(),
            unix_ms,
        }
    }

    fn unix_ms(&self, t: Instant) -> u64 {
        self.unix_ms + t.saturating_duration_since(self.at).as_millis() as u64
    }
}

/// The publisher's bookkeeping.
#[derive(Default)]
struct Book {
    report: FailoverReport,
    history: History,
    gaps: Gaps,
    outstanding: BTreeSet<u64>,
    retry: VecDeque<u64>,
    next_id: u64,
    /// The last positive confirm, or the connection's start (or the end of a block)
    /// when none came since.
    progress_at: Option<Instant>,
    blocked: Blocked,
}

impl Book {
    fn settle(&mut self, id: u64, ok: bool, connection_gone: bool, watch: &Watch) {
        if !self.outstanding.remove(&id) {
            return; // counted lost already, and published again
        }
        if ok {
            let now = Instant::now();
            self.progress_at = Some(now);
            self.gaps.confirm(now);
            if self.history.confirm(id) {
                self.report.confirmed += 1;
                watch.confirmed.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            if connection_gone {
                self.report.lost_with_connection += 1;
            } else {
                self.report.nacked += 1;
            }
            self.retry.push_back(id);
        }
    }

    /// The connection failed: what is outstanding is lost with it.
    fn fail(&mut self, why: String, clock: &Clock) {
        let now = Instant::now();
        self.blocked.close(now);
        self.gaps.fail(now);
        self.report
            .first_failure_unix_ms
            .get_or_insert(clock.unix_ms(now));
        if self.report.errors.len() < 10 {
            self.report.errors.push(why);
        }
    }

    /// Whether the broker blocks the connection now (`blocked`); while it does, the
    /// silence counts from now.
    fn blocked_now(&mut self, blocked: bool) -> bool {
        let now = Instant::now();
        if self.blocked.observe(blocked, now) {
            self.progress_at = Some(now);
        }
        blocked
    }

    fn give_up_outstanding(&mut self) {
        for id in std::mem::take(&mut self.outstanding) {
            self.report.lost_with_connection += 1;
            self.retry.push_back(id);
        }
    }
}

/// How often a publisher waiting for a confirm looks whether the broker blocks it.
const BLOCKED_POLL: Duration = Duration::from_millis(250);

type Inflight = FuturesUnordered<BoxFuture<'static, (u64, u64, bool)>>;

/// Runs the failover mode over `drivers` (one per server, in the list's order) until
/// `--duration` ends or `watch` stops it, then checks the queue.
pub async fn run<D: Driver>(
    args: PerfArgs,
    drivers: Vec<Arc<D>>,
    watch: Arc<Watch>,
) -> Result<PerfReport, String> {
    let topo = Topology::new(&args);
    if topo.stream {
        return Err("--failover measures classic or quorum queues, not streams".into());
    }
    let timeout = Duration::from_secs(args.failover_timeout.max(1));
    let window = args.confirm_window.max(1);
    let key = topo.routing_key(0);
    let queue = topo.queues[0].clone();
    let clock = Clock::now();
    let epoch = Instant::now();
    let mut at = 0;
    if !args.predeclared {
        let mut last = None;
        for (i, d) in drivers.iter().enumerate() {
            match d.setup(&topo, topo.durable(args.persistent), 0).await {
                Ok(()) => {
                    at = i;
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(format!("no server could set up the queue: {e}"));
        }
    }
    let mut book = Book {
        progress_at: Some(Instant::now()),
        ..Default::default()
    };
    let mut latency = histogram();
    let mut producer = Some(drivers[at].producer(true, window).await?);
    let mut inflight = Inflight::new();
    let mut body = vec![0u8; args.size.max(history::HEADER)];
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    let mut tick = started + Duration::from_secs(1);
    let mut tick_confirmed = 0;
    let mut n: u64 = 0;
    while Instant::now() < end && !watch.stop.load(Ordering::Relaxed) {
        let p = producer.as_mut().expect("connected");
        let (id, again) = match book.retry.pop_front() {
            Some(id) => (id, true),
            None => {
                book.next_id += 1;
                (book.next_id - 1, false)
            }
        };
        let sent = epoch.elapsed().as_nanos() as u64;
        history::stamp(&mut body, sent, id);
        let published = tokio::time::timeout(
            timeout,
            p.publish(&topo.exchange, &key, &body, args.persistent),
        )
        .await;
        // A publish that found no room while the broker blocks the connection was not
        // sent: it goes again once unblocked.
        let mut unsent = false;
        let mut failed = match published {
            Ok(Ok(Some(confirm))) => {
                book.report.published += 1;
                book.report.republished += u64::from(again);
                book.outstanding.insert(id);
                inflight.push(confirm.map(move |ok| (id, sent, ok)).boxed());
                None
            }
            Ok(Ok(None)) => Some("the channel closed (no confirm for a publish)".to_string()),
            Ok(Err(e)) => Some(e),
            Err(_) if book.blocked_now(p.blocked()) => {
                unsent = true;
                None
            }
            Err(_) => Some(format!("a publish waited {timeout:?} for room")),
        };
        if failed.is_some() || unsent {
            if again {
                book.retry.push_front(id);
            } else {
                book.next_id -= 1; // never sent: still a first publish next time
            }
        }
        // A full window waits for a confirm, `timeout` at most unless the broker
        // blocks the connection (then until it unblocks, or the run ends).
        let mut silent_since = Instant::now();
        while failed.is_none() && inflight.len() >= window {
            let wait = BLOCKED_POLL.min(timeout.saturating_sub(silent_since.elapsed()));
            match tokio::time::timeout(wait, inflight.next()).await {
                Ok(Some((id, sent, ok))) => {
                    record(&mut latency, ok, sent, epoch);
                    book.settle(id, ok, p.closed(), &watch);
                    silent_since = Instant::now();
                }
                Ok(None) => break,
                Err(_) if book.blocked_now(p.blocked()) => {
                    silent_since = Instant::now();
                    if Instant::now() >= end || watch.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(_) if silent_since.elapsed() < timeout => {}
                Err(_) => failed = Some(format!("no confirm for {timeout:?}")),
            }
        }
        while let Some(Some((id, sent, ok))) = inflight.next().now_or_never() {
            record(&mut latency, ok, sent, epoch);
            book.settle(id, ok, p.closed(), &watch);
        }
        if failed.is_none() && p.closed() {
            failed = Some("the connection closed".into());
        }
        // Nacks alone are no progress: a channel that refuses everything for as long as
        // a missing confirm would take counts as failed too (RabbitMQ 3.10 kept nacking
        // every publish on a channel opened while the queue had no leader).
        if failed.is_none()
            && !book.blocked_now(p.blocked())
            && book.progress_at.is_some_and(|t| t.elapsed() > timeout)
        {
            failed = Some(format!("no positive confirm for {timeout:?}"));
        }
        if let Some(why) = failed {
            eprintln!("perf: publisher connection failed: {why}; moving to the next server");
            book.fail(why, &clock);
            // Confirms the dead connection still resolves (those that arrived before it
            // died, and the failed ones at once), for a moment; the rest are lost.
            let failed_at = Instant::now();
            drain(&mut inflight, &mut book, &mut latency, epoch, &watch, true).await;
            let drained = failed_at.elapsed();
            book.give_up_outstanding();
            inflight = Inflight::new();
            producer = None;
            match reconnect(&drivers, &mut at, timeout, window).await {
                Ok(p) => {
                    eprintln!(
                        "perf: reconnected to server {} {} ms after the failure (confirms drained in {} ms)",
                        at + 1,
                        failed_at.elapsed().as_millis(),
                        drained.as_millis()
                    );
                    producer = Some(p);
                    book.progress_at = Some(Instant::now());
                    book.report.reconnects += 1;
                    watch.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    book.report.gave_up = Some(e);
                    break;
                }
            }
        }
        n += 1;
        if n % 128 == 0 {
            tokio::task::yield_now().await;
        }
        if Instant::now() >= tick {
            let c = book.report.confirmed;
            let blocked = producer.as_ref().is_some_and(|p| p.blocked());
            eprintln!(
                "t={:>3}s confirmed/s {:>9} outstanding {:>5} reconnects {}{}",
                started.elapsed().as_secs(),
                c - tick_confirmed,
                book.outstanding.len(),
                book.report.reconnects,
                if blocked {
                    " (blocked by the broker)"
                } else {
                    ""
                }
            );
            tick_confirmed = c;
            tick += Duration::from_secs(1);
        }
        pace(args.rate, n, started).await;
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(p) = &producer {
        let gone = p.closed();
        drain_until(
            &mut inflight,
            &mut book,
            &mut latency,
            epoch,
            &watch,
            gone,
            timeout,
        )
        .await;
    }
    let ended = Instant::now();
    book.blocked.close(ended);
    book.report.blocked_ms = book.blocked.total().as_secs_f64() * 1000.0;
    book.report.blocked_unix_ms = (book.blocked.spans.iter().take(10))
        .map(|(from, to)| (clock.unix_ms(*from), clock.unix_ms(*to)))
        .collect();
    book.report.unconfirmed_at_end = book.outstanding.len() as u64 + book.retry.len() as u64;
    drop(producer);
    let published_ids = book.next_id;
    let (depth, check) = check::check_queue(
        &drivers,
        at,
        &queue,
        &mut book.history,
        published_ids,
        timeout,
    )
    .await;
    report::finish(
        args,
        book.report,
        book.gaps,
        clock,
        latency,
        secs,
        ended,
        depth,
        check,
    )
}

fn record(h: &mut hdrhistogram::Histogram<u64>, ok: bool, sent: u64, epoch: Instant) {
    if ok {
        let now = epoch.elapsed().as_nanos() as u64;
        h.saturating_record(now.saturating_sub(sent) / 1000);
    }
}

/// Settles what `inflight` resolves within a short moment.
async fn drain(
    inflight: &mut Inflight,
    book: &mut Book,
    latency: &mut hdrhistogram::Histogram<u64>,
    epoch: Instant,
    watch: &Watch,
    gone: bool,
) {
    drain_until(
        inflight,
        book,
        latency,
        epoch,
        watch,
        gone,
        Duration::from_secs(2),
    )
    .await
}

/// Settles what `inflight` resolves within `limit`.
async fn drain_until(
    inflight: &mut Inflight,
    book: &mut Book,
    latency: &mut hdrhistogram::Histogram<u64>,
    epoch: Instant,
    watch: &Watch,
    gone: bool,
    limit: Duration,
) {
    let until = tokio::time::Instant::now() + limit;
    while let Ok(Some((id, sent, ok))) = tokio::time::timeout_at(until, inflight.next()).await {
        record(latency, ok, sent, epoch);
        book.settle(id, ok, gone, watch);
    }
}

/// A publisher on the next server that takes one, trying the list in turn for
/// `timeout`.
async fn reconnect<D: Driver>(
    drivers: &[Arc<D>],
    at: &mut usize,
    timeout: Duration,
    window: usize,
) -> Result<D::Producer, String> {
    let give_up = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        for _ in 0..drivers.len() {
            *at = (*at + 1) % drivers.len();
            let attempt = drivers[*at].producer(true, window);
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(p)) => return Ok(p),
                Ok(Err(e)) => last = e,
                Err(_) => last = "connecting took over 5 s".into(),
            }
        }
        if Instant::now() >= give_up {
            return Err(format!(
                "no server took the publisher back within {timeout:?}: {last}"
            ));
        }
        // Between two rounds over the list: a node restarting needs a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
