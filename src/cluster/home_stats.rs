//! A classic queue's (or a stream's) counts in the management API from any node, as
//! RabbitMQ's API shows the same queue figures whichever node it asks. On a node that
//! is not its home the queue is a stand-in that holds nothing, so a listing asks the
//! homes ([`Rpc::QueueStats`]): **one call per home node** for all the queues of that
//! node the listing shows, every home at once, each within [`STATS_WAIT`], on a
//! connection per home kept for listings (never queued behind a forwarded batch or a
//! declare's counts). A home that does not answer in time (down, cut off, frozen) costs
//! the listing that wait once, not once per queue, and its queues are shown as
//! RabbitMQ shows a queue whose node is down: `"state": "down"`, no counts.
//!
//! The home's counts are whole: its consumers include those other nodes serve through
//! consume sessions (a session is one owner of the home's queue), so the stand-in's own
//! count of its forwarded consumers is not added to them.

use super::network::Link;
use super::node::Core;
use super::rpc::{Reply, Rpc};
use super::transport::Transport;
use super::types::NodeId;
use crate::broker::messages::{GetStats, LookupQueue, QueueStats};
use crate::broker::BrokerHandle;
use futures_util::future::join_all;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a listing waits for a home's counts, connecting included: a short wait,
/// since a listing shows every queue and waits for its slowest home.
pub const STATS_WAIT: Duration = Duration::from_secs(2);

/// A queue by virtual host and name.
pub type QueueKey = (String, String);

/// What a listing on this node learns of a queue homed on another node.
#[derive(Debug, Clone, PartialEq)]
pub struct HomeStats {
    /// The home, as `/api/nodes` names it.
    pub node: String,
    /// The home's counts; `None` when it did not answer within [`STATS_WAIT`] (down,
    /// unreachable, frozen) or does not run the queue.
    pub stats: Option<QueueStats>,
}

/// The connections listings ask homes on, one per home address.
#[derive(Default)]
pub(super) struct StatsLinks(Mutex<HashMap<String, Arc<Link>>>);

impl StatsLinks {
    fn to(&self, addr: &str, transport: &Arc<Transport>) -> Arc<Link> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(Link::new(addr, transport.clone())))
            .clone()
    }
}

impl Core {
    /// For each of `queues`: the home's counts when it is a classic queue or a stream
    /// homed on another node, `None` when it lives here, is a quorum queue (served on
    /// every member) or is not known here.
    pub(super) async fn home_stats(
        self: Arc<Self>,
        queues: Vec<QueueKey>,
    ) -> Vec<Option<HomeStats>> {
        let mut by_home: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        {
            let a = self.applied();
            for (i, (vhost, queue)) in queues.iter().enumerate() {
                let quorum = a.groups.get(vhost).is_some_and(|qs| qs.contains_key(queue));
                match a.homes.get(vhost).and_then(|qs| qs.get(queue)) {
                    Some(&home) if !quorum && home != self.id => {
                        by_home.entry(home).or_default().push(i)
                    }
                    _ => {}
                }
            }
        }
        let calls = by_home.into_iter().map(|(home, at)| {
            let asked: Vec<QueueKey> = at.iter().map(|&i| queues[i].clone()).collect();
            let core = self.clone();
            async move { (home, at, core.ask_home(home, asked).await) }
        });
        let mut out = vec![None; queues.len()];
        for (home, at, answer) in join_all(calls).await {
            let node = self.node_api_name(home);
            for (k, i) in at.into_iter().enumerate() {
                let stats = answer.as_ref().and_then(|a| a.get(k).copied().flatten());
                out[i] = Some(HomeStats {
                    node: node.clone(),
                    stats,
                });
            }
        }
        out
    }

    /// Asks `home` the counts of `asked`, all in one call; `None` when it does not
    /// answer in time or answers something else.
    async fn ask_home(
        &self,
        home: NodeId,
        asked: Vec<QueueKey>,
    ) -> Option<Vec<Option<QueueStats>>> {
        let addr = self.node_addr(home)?;
        let link = self.stats_links.to(&addr, &self.transport);
        let n = asked.len();
        let rpc = Rpc::QueueStats {
            from: self.id,
            queues: asked,
        };
        // The whole call bounded, waiting for the link included: another listing's
        // call to a frozen home may hold it.
        match tokio::time::timeout(STATS_WAIT, link.call(&rpc, STATS_WAIT)).await {
            Ok(Ok(Reply::QueueStats(stats))) if stats.len() == n => Some(stats),
            Ok(Ok(other)) => {
                tracing::debug!(node = home, "queue counts: unexpected answer {other:?}");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(node = home, error = %e, "queue counts: home unreachable");
                None
            }
            Err(_) => {
                tracing::debug!(node = home, "queue counts: home silent for {STATS_WAIT:?}");
                None
            }
        }
    }

    /// The home's side of [`Rpc::QueueStats`]: the counts of each queue asked that
    /// lives here; zeros for one whose declare is not applied here yet (it holds
    /// nothing yet), `None` for one that lives elsewhere or is not running.
    pub(super) async fn answer_queue_stats(
        &self,
        queues: Vec<QueueKey>,
    ) -> Vec<Option<QueueStats>> {
        let broker = self.broker();
        let asks = queues.into_iter().map(|(vhost, queue)| {
            let here = self.home_here(&vhost, &queue);
            let broker = broker.clone();
            async move {
                match here {
                    None => Some(QueueStats::default()),
                    Some(false) => None,
                    Some(true) => local_stats(broker, &vhost, &queue).await,
                }
            }
        });
        join_all(asks).await
    }
}

/// The counts of this node's queue `queue` of `vhost`.
async fn local_stats(broker: BrokerHandle, vhost: &str, queue: &str) -> Option<QueueStats> {
    let registry = broker.registry(vhost).ok()?;
    let handle = registry
        .send(LookupQueue {
            name: queue.to_string(),
            owner: broker.new_owner(),
        })
        .await
        .ok()?
        .ok()?;
    handle.addr().send(GetStats).await.ok()
}
