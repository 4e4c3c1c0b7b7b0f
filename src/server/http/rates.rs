//! Message rates: the actors keep plain totals (queues count what they enqueue,
//! deliver and see acked; exchanges what they route; connections what they publish and
//! receive); this module keeps the previous reading of each object and turns two
//! readings into per-second rates, in RabbitMQ's `message_stats` shape
//! (`publish_details.rate` ...). Nothing is sampled unless someone asks: a reading is
//! taken when a listing is requested, at most one per [`MIN_INTERVAL`] per object (a
//! second request within it answers the rate already computed).
//!
//! Totals of a virtual host (and of the node) are sums of the objects' rates, so a
//! deleted queue never makes a total jump backwards. For the UI's plots, each
//! overview request that comes [`HISTORY_STEP`] after the last one records the virtual
//! hosts' accumulated totals (growing only) and depths in a bounded history.

use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The counters rates are kept for, in RabbitMQ's names.
pub(crate) const FIELDS: [&str; 10] = [
    "publish",
    "publish_in",
    "publish_out",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "deliver_get",
    "redeliver",
    "ack",
];

/// Index of a field in [`FIELDS`].
pub(crate) mod field {
    pub const PUBLISH: usize = 0;
    pub const PUBLISH_IN: usize = 1;
    pub const PUBLISH_OUT: usize = 2;
    pub const DELIVER: usize = 3;
    pub const DELIVER_NO_ACK: usize = 4;
    pub const GET: usize = 5;
    pub const GET_NO_ACK: usize = 6;
    pub const DELIVER_GET: usize = 7;
    pub const REDELIVER: usize = 8;
    pub const ACK: usize = 9;
}

/// Totals of one object, by [`FIELDS`] index.
pub(crate) type Counts = [u64; FIELDS.len()];
/// Per-second rates, by [`FIELDS`] index.
pub(crate) type PerSec = [f64; FIELDS.len()];

/// Readings of one object closer than this answer the rate already computed: a rate
/// over a few milliseconds says little.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The spacing of the history's points.
pub const HISTORY_STEP: Duration = Duration::from_secs(2);
/// Points kept (10 minutes at [`HISTORY_STEP`]).
pub const HISTORY_POINTS: usize = 300;
/// An object not read for this long is forgotten (it was deleted, or nobody looks).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What kind of object a reading is of; decides which fields it shows and what it
/// adds to its virtual host's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Enqueues, deliveries, gets, redeliveries, acks.
    Queue,
    /// Messages in and routed out.
    Exchange,
    /// Messages published and delivered over it.
    Connection,
    /// A queue read from its home, another cluster node: a queue's fields, and nothing
    /// added to this node's totals (its work is the home's). Apart from [`Kind::Queue`],
    /// whose reading of the same queue here is the stand-in's.
    HomeQueue,
}

impl Kind {
    /// The fields this kind of object shows.
    pub fn fields(self) -> &'static [usize] {
        use field::*;
        match self {
            Kind::Queue | Kind::HomeQueue => &[
                PUBLISH,
                DELIVER,
                DELIVER_NO_ACK,
                GET,
                GET_NO_ACK,
                DELIVER_GET,
                REDELIVER,
                ACK,
            ],
            Kind::Exchange => &[PUBLISH_IN, PUBLISH_OUT],
            Kind::Connection => &[PUBLISH, DELIVER_GET],
        }
    }
}

/// The fields a virtual host and the overview show: publishes (what exchanges took
/// in), and what queues delivered and saw acked.
pub(crate) const TOTAL_FIELDS: [usize; 7] = [
    field::PUBLISH,
    field::DELIVER,
    field::DELIVER_NO_ACK,
    field::GET,
    field::DELIVER_GET,
    field::REDELIVER,
    field::ACK,
];

/// What an object's reading adds to its virtual host's totals: a queue's deliveries
/// and acks, an exchange's `publish_in` as `publish`; connections add nothing (their
/// messages are already counted at the exchanges and queues).
fn to_totals(kind: Kind, v: &PerSec) -> PerSec {
    let mut out = [0.0; FIELDS.len()];
    match kind {
        Kind::Queue => {
            for f in TOTAL_FIELDS.iter().filter(|f| **f != field::PUBLISH) {
                out[*f] = v[*f];
            }
        }
        Kind::Exchange => out[field::PUBLISH] = v[field::PUBLISH_IN],
        Kind::Connection | Kind::HomeQueue => {}
    }
    out
}

/// The previous reading of one object.
struct Reading {
    at: Instant,
    counts: Counts,
    rate: PerSec,
}

/// One point of the history: per virtual host, accumulated totals and depths.
struct Point {
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
    by_vhost: HashMap<String, VhostPoint>,
}

#[derive(Clone, Copy, Default)]
struct VhostPoint {
    totals: PerSec,
    ready: u64,
    unacked: u64,
}

/// The readings and the history.
#[derive(Default)]
struct Inner {
    readings: HashMap<(Kind, String, String), Reading>,
    /// Accumulated totals per virtual host: the sum of every increase seen.
    accumulated: HashMap<String, PerSec>,
    history: VecDeque<Point>,
    last_point: Option<Instant>,
    last_prune: Option<Instant>,
}

/// Previous readings, rates and the history (one per HTTP front end).
#[derive(Default)]
pub(crate) struct Rates {
    inner: Mutex<Inner>,
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain maps, always left consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rates of one object read now with totals `counts`.
    pub fn observe(&self, kind: Kind, vhost: &str, name: &str, counts: Counts) -> PerSec {
        self.observe_at(kind, vhost, name, counts, Instant::now())
    }

    fn observe_at(
        &self,
        kind: Kind,
        vhost: &str,
        name: &str,
        counts: Counts,
        now: Instant,
    ) -> PerSec {
        let mut inner = self.lock();
        inner.prune(now);
        let key = (kind, vhost.to_string(), name.to_string());
        let Some(prev) = inner.readings.get_mut(&key) else {
            inner.readings.insert(
                key,
                Reading {
                    at: now,
                    counts,
                    rate: [0.0; FIELDS.len()],
                },
            );
            return [0.0; FIELDS.len()];
        };
        let dt = now.saturating_duration_since(prev.at);
        if dt < MIN_INTERVAL {
            return prev.rate;
        }
        let mut delta = [0.0; FIELDS.len()];
        for (i, d) in delta.iter_mut().enumerate() {
            // A counter that went back is a new object under the same name.
            *d = counts[i].saturating_sub(prev.counts[i]) as f64;
        }
        let secs = dt.as_secs_f64();
        let rate = delta.map(|d| d / secs);
        *prev = Reading {
            at: now,
            counts,
            rate,
        };
        let acc = inner.accumulated.entry(vhost.to_string()).or_default();
        for (a, d) in acc.iter_mut().zip(to_totals(kind, &delta)) {
            *a += d;
        }
        rate
    }

    /// Records a history point (unless the last one is more recent than
    /// [`HISTORY_STEP`]): each virtual host's accumulated totals and its depth.
    pub fn record(&self, depths: &[(String, u64, u64)]) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner
            .last_point
            .is_some_and(|t| now.saturating_duration_since(t) < HISTORY_STEP)
        {
            return;
        }
        inner.last_point = Some(now);
        let by_vhost = depths
            .iter()
            .map(|(v, ready, unacked)| {
                let totals = inner.accumulated.get(v).copied().unwrap_or_default();
                (
                    v.clone(),
                    VhostPoint {
                        totals,
                        ready: *ready,
                        unacked: *unacked,
                    },
                )
            })
            .collect();
        inner.history.push_back(Point {
            at_ms: now_ms(),
            by_vhost,
        });
        while inner.history.len() > HISTORY_POINTS {
            inner.history.pop_front();
        }
    }

    /// The history of the virtual hosts `keep` accepts, newest first, no older than
    /// `age`: per point, the summed accumulated totals and depths.
    pub fn history(&self, age: Duration, keep: impl Fn(&str) -> bool) -> Vec<HistoryPoint> {
        let oldest = now_ms().saturating_sub(age.as_millis() as u64);
        let inner = self.lock();
        inner
            .history
            .iter()
            .rev()
            .take_while(|p| p.at_ms >= oldest)
            .map(|p| {
                let mut h = HistoryPoint {
                    at_ms: p.at_ms,
                    ..HistoryPoint::default()
                };
                for (v, vp) in p.by_vhost.iter().filter(|(v, _)| keep(v)) {
                    let _ = v;
                    for (t, x) in h.totals.iter_mut().zip(vp.totals) {
                        *t += x;
                    }
                    h.ready += vp.ready;
                    h.unacked += vp.unacked;
                }
                h
            })
            .collect()
    }
}

impl Inner {
    /// Forgets objects not read for [`FORGET_AFTER`] (checked at most once a minute).
    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.last_prune = Some(now);
        self.readings
            .retain(|_, r| now.saturating_duration_since(r.at) < FORGET_AFTER);
    }
}

/// One point of a history answer.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HistoryPoint {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Accumulated totals (only ever grow).
    pub totals: PerSec,
    /// Messages ready.
    pub ready: u64,
    /// Messages unacknowledged.
    pub unacked: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sums rates.
pub(crate) fn add(into: &mut PerSec, v: &PerSec) {
    for (a, b) in into.iter_mut().zip(v) {
        *a += b;
    }
}

/// What `v` (of an object of `kind`) adds to a virtual host's totals.
pub(crate) fn totals_of(kind: Kind, v: &PerSec) -> PerSec {
    to_totals(kind, v)
}

/// RabbitMQ's `message_stats` object: `{field: count, field_details: {rate}}` for
/// `fields`.
pub(crate) fn message_stats(fields: &[usize], counts: &Counts, rates: &PerSec) -> Value {
    let mut m = Map::new();
    for &f in fields {
        m.insert(FIELDS[f].to_string(), json!(counts[f]));
        m.insert(
            format!("{}_details", FIELDS[f]),
            json!({ "rate": round(rates[f]) }),
        );
    }
    Value::Object(m)
}

/// Rates to one decimal place, as RabbitMQ shows them.
pub(crate) fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(publish: u64, ack: u64) -> Counts {
        let mut c = [0; FIELDS.len()];
        c[field::PUBLISH] = publish;
        c[field::ACK] = ack;
        c
    }

    #[test]
    fn two_readings_a_second_apart_make_a_rate() {
        let r = Rates::default();
        let t0 = Instant::now();
        let first = r.observe_at(Kind::Queue, "/", "q", counts(10, 0), t0);
        assert_eq!(first[field::PUBLISH], 0.0, "no rate from one reading");
        let close = r.observe_at(Kind::Queue, "/", "q", counts(50, 0), t0 + MIN_INTERVAL / 2);
        assert_eq!(close[field::PUBLISH], 0.0, "too close: the previous rate");
        let later = r.observe_at(Kind::Queue, "/", "q", counts(30, 4), t0 + 2 * MIN_INTERVAL);
        assert_eq!(later[field::PUBLISH], 10.0);
        assert_eq!(later[field::ACK], 2.0);
    }

    #[test]
    fn a_counter_that_goes_back_is_no_negative_rate_and_totals_only_grow() {
        let r = Rates::default();
        let t0 = Instant::now();
        r.observe_at(Kind::Exchange, "/", "x", counts(0, 0), t0);
        let mut c = counts(0, 0);
        c[field::PUBLISH_IN] = 100;
        r.observe_at(Kind::Exchange, "/", "x", c, t0 + MIN_INTERVAL * 2);
        c[field::PUBLISH_IN] = 5;
        let back = r.observe_at(Kind::Exchange, "/", "x", c, t0 + MIN_INTERVAL * 4);
        assert_eq!(back[field::PUBLISH_IN], 0.0);
        r.record(&[("/".into(), 1, 2)]);
        let h = r.history(Duration::from_secs(60), |_| true);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].totals[field::PUBLISH], 100.0, "exchanges' publish_in");
        assert_eq!((h[0].ready, h[0].unacked), (1, 2));
        assert!(r.history(Duration::from_secs(60), |v| v != "/")[0].totals[0] == 0.0);
    }

    #[test]
    fn the_history_is_bounded() {
        let r = Rates::default();
        for _ in 0..HISTORY_POINTS + 5 {
            r.lock().last_point = None;
            r.record(&[("/".into(), 0, 0)]);
        }
        assert_eq!(r.lock().history.len(), HISTORY_POINTS);
    }
}
