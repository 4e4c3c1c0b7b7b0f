//! Reading counts from the actors when a request asks: every queue of a virtual host
//! with its counts (one `GetStats` per queue, all in flight at once), and totals.

use super::error::ApiError;
use crate::broker::messages::{GetStats, QueueStats};
use crate::broker::queue::QueueSpec;
use crate::broker::registry::ListQueueHandles;
use crate::broker::BrokerHandle;
use futures_util::future::join_all;

/// One queue as a listing shows it.
pub(crate) struct QueueRow {
    /// Its virtual host.
    pub vhost: String,
    /// Its definition.
    pub spec: QueueSpec,
    /// Its counts; `None` when the queue went away while being asked.
    pub stats: Option<QueueStats>,
}

/// Every queue of `vhost` with its counts, by name.
pub(crate) async fn queues_in(
    broker: &BrokerHandle,
    vhost: &str,
) -> Result<Vec<QueueRow>, ApiError> {
    let registry = broker.registry(vhost)?;
    let handles = registry.send(ListQueueHandles).await?;
    let stats = join_all(handles.iter().map(|(_, q)| q.addr().send(GetStats))).await;
    let mut rows: Vec<QueueRow> = handles
        .into_iter()
        .zip(stats)
        .map(|((spec, _), s)| QueueRow {
            vhost: vhost.to_string(),
            spec,
            stats: s.ok(),
        })
        .collect();
    rows.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(rows)
}

/// Every queue of every virtual host in `vhosts` (a vhost deleted meanwhile is skipped).
pub(crate) async fn queues_of(broker: &BrokerHandle, vhosts: &[String]) -> Vec<QueueRow> {
    let per_vhost = join_all(vhosts.iter().map(|v| queues_in(broker, v))).await;
    per_vhost.into_iter().flatten().flatten().collect()
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
