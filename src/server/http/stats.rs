//! Reading counts from the actors when a request asks: every queue of a virtual host
//! with its counts (one `GetStats` per queue, all in flight at once), every exchange
//! with its routing totals (atomics on its handle), their rates (see `rates`), and the
//! totals of a virtual host.

use super::error::ApiError;
use super::rates::{self, field, Counts, Kind, PerSec};
use super::Api;
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::{GetStats, QueueStats};
use crate::broker::queue::QueueSpec;
use crate::broker::registry::{ListExchangeHandles, ListQueueHandles};
use futures_util::future::join_all;
use std::collections::HashMap;

/// One queue as a listing shows it.
pub(crate) struct QueueRow {
    /// Its virtual host.
    pub vhost: String,
    /// Its definition.
    pub spec: QueueSpec,
    /// Its counts; `None` when the queue went away while being asked, or its home
    /// (`home`) did not answer.
    pub stats: Option<QueueStats>,
    /// Its totals by [`rates::FIELDS`].
    pub counts: Counts,
    /// Its rates.
    pub rates: PerSec,
    /// In a cluster, the node its messages live on when that is another node (its
    /// counts are that node's, asked when the listing wants them: [`Homes::Ask`]).
    pub home: Option<String>,
}

/// Whether a listing asks the homes of the queues that live on other cluster nodes
/// their counts (the queues API, as RabbitMQ's shows every queue's figures on any
/// node), or shows this node's own readings (a stand-in's: nothing held; what this
/// node's totals and metrics count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Homes {
    /// This node's own readings.
    Local,
    /// Each home's counts, one call per home node.
    Ask,
}

/// A queue's totals by [`rates::FIELDS`].
fn queue_counts(s: &QueueStats) -> Counts {
    let c = &s.counts;
    let mut out = [0; rates::FIELDS.len()];
    out[field::PUBLISH] = c.publish;
    out[field::DELIVER] = c.deliver;
    out[field::DELIVER_NO_ACK] = c.deliver_no_ack;
    out[field::GET] = c.get;
    out[field::GET_NO_ACK] = c.get_no_ack;
    out[field::DELIVER_GET] = c.deliver_get();
    out[field::REDELIVER] = c.redeliver;
    out[field::ACK] = c.ack;
    out
}

/// A queue read, before its rates.
struct Read {
    vhost: String,
    spec: QueueSpec,
    /// Its counts, `None` when not read (see [`QueueRow::stats`]).
    stats: Option<QueueStats>,
    /// Its home when another node's (see [`QueueRow::home`]).
    home: Option<String>,
}

/// Every queue of `vhost` (only queue `only` when given) with this node's readings.
async fn read_vhost(api: &Api, vhost: &str, only: Option<&str>) -> Result<Vec<Read>, ApiError> {
    let registry = api.shared.broker.registry(vhost)?;
    let mut handles = registry.send(ListQueueHandles).await?;
    if let Some(name) = only {
        // One queue's page asks that queue alone for its counts.
        handles.retain(|(spec, _)| spec.name == name);
    }
    let stats = join_all(handles.iter().map(|(_, q)| q.addr().send(GetStats))).await;
    let mut read: Vec<Read> = handles
        .into_iter()
        .zip(stats)
        .map(|((spec, _), s)| Read {
            vhost: vhost.to_string(),
            spec,
            stats: s.ok(),
            home: None,
        })
        .collect();
    read.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(read)
}

/// Puts the homes' counts in place of the stand-ins' (the home's consumers already
/// include those the stand-in forwards).
async fn ask_homes(api: &Api, read: &mut [Read]) {
    let Some(cluster) = api.shared.broker.context().cluster.clone() else {
        return;
    };
    let keys = read
        .iter()
        .map(|r| (r.vhost.clone(), r.spec.name.clone()))
        .collect();
    let homes = cluster.home_stats(keys).await;
    for (r, home) in read.iter_mut().zip(homes) {
        if let Some(h) = home {
            r.stats = h.stats;
            r.home = Some(h.node);
        }
    }
}

/// The rows of `read` (in its order), with their rates.
fn rows(api: &Api, read: Vec<Read>) -> Vec<QueueRow> {
    read.into_iter()
        .map(
            |Read {
                 vhost,
                 spec,
                 stats,
                 home,
             }| {
                let counts = stats.as_ref().map(queue_counts).unwrap_or_default();
                // A home's readings apart from this node's of its stand-in.
                let kind = if home.is_some() {
                    Kind::HomeQueue
                } else {
                    Kind::Queue
                };
                let rates = match (&stats, kind) {
                    // Not read: no reading to keep (the next one is compared to the last).
                    (None, Kind::HomeQueue) => [0.0; rates::FIELDS.len()],
                    _ => api.rates.observe(kind, &vhost, &spec.name, counts),
                };
                QueueRow {
                    vhost,
                    spec,
                    stats,
                    counts,
                    rates,
                    home,
                }
            },
        )
        .collect()
}

/// Every queue of `vhost` with its counts and rates, by name.
pub(crate) async fn queues_in(api: &Api, vhost: &str) -> Result<Vec<QueueRow>, ApiError> {
    queues_in_with(api, vhost, Homes::Local).await
}

/// [`queues_in`], the counts of queues of other nodes as `homes` says.
pub(crate) async fn queues_in_with(
    api: &Api,
    vhost: &str,
    homes: Homes,
) -> Result<Vec<QueueRow>, ApiError> {
    let mut read = read_vhost(api, vhost, None).await?;
    if homes == Homes::Ask {
        ask_homes(api, &mut read).await;
    }
    Ok(rows(api, read))
}

/// Queue `name` of `vhost` (`None` if there is none), its counts its home's when it
/// lives on another cluster node.
pub(crate) async fn queue_in(
    api: &Api,
    vhost: &str,
    name: &str,
) -> Result<Option<QueueRow>, ApiError> {
    let mut read = read_vhost(api, vhost, Some(name)).await?;
    ask_homes(api, &mut read).await;
    Ok(rows(api, read).pop())
}

/// Every queue of every virtual host in `vhosts` (a vhost deleted meanwhile is skipped).
pub(crate) async fn queues_of(api: &Api, vhosts: &[String]) -> Vec<QueueRow> {
    queues_of_with(api, vhosts, Homes::Local).await
}

/// [`queues_of`], the counts of queues of other nodes as `homes` says: each home is
/// asked once for all its queues of every virtual host.
pub(crate) async fn queues_of_with(api: &Api, vhosts: &[String], homes: Homes) -> Vec<QueueRow> {
    let per_vhost = join_all(vhosts.iter().map(|v| read_vhost(api, v, None))).await;
    let mut read: Vec<Read> = per_vhost.into_iter().flatten().flatten().collect();
    if homes == Homes::Ask {
        ask_homes(api, &mut read).await;
    }
    rows(api, read)
}

/// One exchange as a listing shows it.
pub(crate) struct ExchangeRow {
    /// Its virtual host.
    pub vhost: String,
    /// Its definition.
    pub spec: ExchangeSpec,
    /// Its totals by [`rates::FIELDS`] (zero for a dormant or custom exchange).
    pub counts: Counts,
    /// Its rates.
    pub rates: PerSec,
}

/// Every exchange of `vhost` (dormant ones too) with its totals and rates, by name.
pub(crate) async fn exchanges_in(api: &Api, vhost: &str) -> Result<Vec<ExchangeRow>, ApiError> {
    let broker = &api.shared.broker;
    let specs = broker.session_in(vhost)?.list_exchanges().await?;
    let handles = broker.registry(vhost)?.send(ListExchangeHandles).await?;
    let by_name: HashMap<&str, _> = handles.iter().map(|h| (h.name(), h)).collect();
    let mut rows: Vec<ExchangeRow> = specs
        .into_iter()
        .map(|spec| {
            let mut counts = [0; rates::FIELDS.len()];
            if let Some(h) = by_name.get(spec.name.as_str()) {
                counts[field::PUBLISH_IN] = h.counters().publish_in();
                counts[field::PUBLISH_OUT] = h.counters().publish_out();
            }
            let rates = api.rates.observe(Kind::Exchange, vhost, &spec.name, counts);
            ExchangeRow {
                vhost: vhost.to_string(),
                spec,
                counts,
                rates,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(rows)
}

/// Message totals of some queues.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    /// Ready.
    pub ready: u64,
    /// Delivered and not yet acknowledged.
    pub unacked: u64,
    /// Consumers.
    pub consumers: u64,
    /// Bytes of bodies held.
    pub bytes: u64,
}

impl Totals {
    /// Sums the counts of `rows`.
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a QueueRow>) -> Totals {
        let mut t = Totals::default();
        for s in rows.into_iter().filter_map(|r| r.stats.as_ref()) {
            t.ready += s.ready;
            t.unacked += s.unacked;
            t.consumers += u64::from(s.consumers);
            t.bytes += s.bytes;
        }
        t
    }

    /// Ready plus unacknowledged.
    pub fn messages(&self) -> u64 {
        self.ready + self.unacked
    }
}

/// Everything a virtual host's or the node's summary shows.
#[derive(Default)]
pub(crate) struct Summary {
    /// Depths and consumers.
    pub totals: Totals,
    /// Queues.
    pub queues: usize,
    /// Exchanges.
    pub exchanges: usize,
    /// Message totals of the objects alive (publishes at exchanges, the rest at queues).
    pub counts: Counts,
    /// Rates: sums of the objects' rates.
    pub rates: PerSec,
}

impl Summary {
    /// The summary of `queues` and `exchanges`.
    pub fn of(queues: &[QueueRow], exchanges: &[ExchangeRow]) -> Summary {
        let mut s = Summary {
            totals: Totals::of(queues),
            queues: queues.len(),
            exchanges: exchanges.len(),
            ..Summary::default()
        };
        for q in queues {
            rates::add(&mut s.rates, &rates::totals_of(Kind::Queue, &q.rates));
            for f in rates::TOTAL_FIELDS.iter().filter(|f| **f != field::PUBLISH) {
                s.counts[*f] += q.counts[*f];
            }
        }
        for x in exchanges {
            rates::add(&mut s.rates, &rates::totals_of(Kind::Exchange, &x.rates));
            s.counts[field::PUBLISH] += x.counts[field::PUBLISH_IN];
        }
        s
    }

    /// Adds another summary (another virtual host).
    pub fn add(&mut self, o: &Summary) {
        self.totals.ready += o.totals.ready;
        self.totals.unacked += o.totals.unacked;
        self.totals.consumers += o.totals.consumers;
        self.totals.bytes += o.totals.bytes;
        self.queues += o.queues;
        self.exchanges += o.exchanges;
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        rates::add(&mut self.rates, &o.rates);
    }

    /// RabbitMQ's `message_stats` of a virtual host or the node.
    pub fn message_stats(&self) -> serde_json::Value {
        rates::message_stats(&rates::TOTAL_FIELDS, &self.counts, &self.rates)
    }
}

/// The summary of one virtual host (its queues and exchanges read now).
pub(crate) async fn vhost_summary(api: &Api, vhost: &str) -> Result<Summary, ApiError> {
    let (queues, exchanges) =
        futures_util::future::join(queues_in(api, vhost), exchanges_in(api, vhost)).await;
    Ok(Summary::of(&queues?, &exchanges?))
}
