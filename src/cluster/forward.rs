//! Publishes to a classic queue of another node, forwarded to its home (as RabbitMQ
//! forwards a publish to the node of the queue it routes to).
//!
//! A classic queue's messages live on its home node (the node that declared it). On
//! every other node its actor is a stand-in whose publishes go through a [`Home`]: one
//! batcher per stand-in (so per queue and home node) on the cluster's runtime, with
//! one request in flight on its own connection to the home's cluster port. The
//! publishes that arrive while a request is on its way make the next one (up to
//! [`MAX_BATCH`] messages, [`MAX_BATCH_BYTES`]), so a busy queue sends many per round
//! trip and an idle one sends a lone publish at once.
//!
//! On the home node the batch is handed to the queue's own actor as one `Enqueue`, and
//! answered with the queue's answer: so a durable queue's persistent messages are on
//! the home's disk before the publisher's confirm, a full reject-publish queue refuses
//! them, and the home's flow control holds the answer (and with it the stand-in's
//! publishers, whose windows bound what waits here) exactly as it holds a local
//! publisher. The connection answers its requests in order and the batcher sends the
//! next batch only once the previous one is answered, so the home's queue takes a
//! node's publishes in the order they were made.
//!
//! A home that cannot be reached (down, refusing) or does not answer within
//! [`FORWARD_TIMEOUT`] gets the batch refused: every publisher is nacked with a reason
//! naming the home. One cut off after it took the batch may still have stored it: a
//! publisher that republishes a nacked message may then queue it twice (at least
//! once, as RabbitMQ).

use super::network::Link;
use super::rpc::{Reply, Rpc};
use super::transport::Transport;
use super::NodeId;
use crate::broker::messages::{Enqueued, LookupQueue};
use crate::broker::BrokerHandle;
use crate::cluster::quorum::group::StoredMessage;
use crate::error::{BrokerError, ErrorCode};
use crate::message::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most messages in one forwarded batch.
pub const MAX_BATCH: usize = 1000;
/// A batch takes no more publishes once its bodies reach this size (one publish may
/// be larger on its own).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// How long a forwarded batch may wait for its home's answer (connecting included).
/// Generous: the home's flow control may hold an answer while its consumers catch up.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// A batch of publishes to a classic queue, forwarded to its home node.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    /// The virtual host.
    pub vhost: String,
    /// The queue.
    pub queue: String,
    /// The node that forwards it (logs).
    pub from: NodeId,
    /// The messages, in publish order.
    pub messages: Vec<StoredMessage>,
}

/// The home's answer to a [`Forwarded`] batch: the queue's own answer (positions in
/// the batch it refused, and why), or why nothing was taken.
pub type Taken = Result<(Vec<u32>, Option<BrokerError>), BrokerError>;

type Waiter = oneshot::Sender<Result<Enqueued, BrokerError>>;

/// Where a stand-in's publishes go: its queue's home node.
pub struct Home {
    /// "lives on node 2 (127.0.0.1:25673)".
    describe: String,
    tx: mpsc::UnboundedSender<(Vec<StoredMessage>, Waiter)>,
    /// The home and how to reach it (consume sessions open there too).
    target: Arc<Target>,
    /// The cluster's runtime.
    rt: tokio::runtime::Handle,
}

/// What a [`Home`]'s batcher needs to reach the home.
pub(super) struct Target {
    pub vhost: String,
    pub queue: String,
    pub from: NodeId,
    pub home: NodeId,
    /// The home's cluster address as the membership records it now.
    pub addr: Arc<dyn Fn() -> Option<String> + Send + Sync>,
    pub transport: Arc<Transport>,
}

impl Home {
    /// Starts the batcher of `target` on `rt` (the cluster's runtime: its connections
    /// live there). It ends when the [`Home`] is dropped (the stand-in stopped).
    pub(super) fn start(rt: &tokio::runtime::Handle, describe: String, target: Target) -> Home {
        let (tx, rx) = mpsc::unbounded_channel();
        let target = Arc::new(target);
        rt.spawn(batcher(target.clone(), rx));
        Home {
            describe,
            tx,
            target,
            rt: rt.clone(),
        }
    }

    /// The home node's id.
    pub fn home_id(&self) -> NodeId {
        self.target.home
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.target.from
    }

    /// The home's cluster address as the membership records it now.
    pub fn addr(&self) -> Option<String> {
        (self.target.addr)()
    }

    /// How connections to the home are opened.
    pub fn transport(&self) -> Arc<Transport> {
        self.target.transport.clone()
    }

    /// The cluster's runtime (where connections to the home live).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Where the queue lives, as a sentence for errors ("lives on node 2 (addr)").
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Forwards `messages` (one publish batch, in order); the answer is the home
    /// queue's. Synchronous up to the queueing, so the order of calls is the order the
    /// home's queue takes them in.
    pub fn publish(
        &self,
        messages: Vec<Arc<Message>>,
    ) -> impl std::future::Future<Output = Result<Enqueued, BrokerError>> + Send + 'static {
        let stored = messages.into_iter().map(StoredMessage::from).collect();
        let (tx, rx) = oneshot::channel();
        let queued = self.tx.send((stored, tx)).is_ok();
        async move {
            if !queued {
                return Err(BrokerError::internal("queue forwarder stopped"));
            }
            rx.await
                .unwrap_or_else(|_| Err(BrokerError::internal("queue forwarder stopped")))
        }
    }
}

/// Every message of a batch of `n` refused for `reason`.
fn all_refused(n: usize, reason: BrokerError) -> Enqueued {
    Enqueued {
        refused: (0..n as u32).collect(),
        reason: Some(reason),
    }
}

async fn batcher(t: Arc<Target>, mut rx: mpsc::UnboundedReceiver<(Vec<StoredMessage>, Waiter)>) {
    let mut link: Option<(String, Link)> = None;
    while let Some(first) = rx.recv().await {
        let mut count = first.0.len();
        let mut bytes: usize = first.0.iter().map(|m| m.body.len()).sum();
        let mut batch = vec![first];
        while count < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    count += next.0.len();
                    bytes += next.0.iter().map(|m| m.body.len()).sum::<usize>();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let sizes: Vec<usize> = batch.iter().map(|(m, _)| m.len()).collect();
        let (messages, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let messages: Vec<StoredMessage> = messages.into_iter().flatten().collect();
        let taken = send(&t, &mut link, messages).await;
        answer(&t, taken, &sizes, waiters);
    }
}

/// Sends one batch to the home and reads its answer.
async fn send(
    t: &Target,
    link: &mut Option<(String, Link)>,
    messages: Vec<StoredMessage>,
) -> Taken {
    let Some(addr) = (t.addr)() else {
        return Err(down(t, "its address is unknown"));
    };
    if link.as_ref().is_none_or(|(a, _)| *a != addr) {
        *link = Some((addr.clone(), Link::new(&addr, t.transport.clone())));
    }
    let (_, l) = link.as_ref().expect("set above");
    let rpc = Rpc::Forward(Forwarded {
        vhost: t.vhost.clone(),
        queue: t.queue.clone(),
        from: t.from,
        messages,
    });
    match l.call(&rpc, FORWARD_TIMEOUT).await {
        Ok(Reply::Forward(taken)) => taken,
        Ok(other) => Err(BrokerError::internal(format!(
            "queue '{}': unexpected reply from node {}: {other:?}",
            t.queue, t.home
        ))),
        Err(e) => Err(down(t, &e.to_string())),
    }
}

/// The refusal of a batch whose home could not be reached.
fn down(t: &Target, why: &str) -> BrokerError {
    BrokerError::new(
        ErrorCode::ResourceError,
        format!(
            "queue '{}' in vhost '{}': its home node {} is down or inaccessible ({why}); message not stored",
            t.queue, t.vhost, t.home
        ),
    )
}

/// Hands each publish of the batch its part of the home's answer.
fn answer(t: &Target, taken: Taken, sizes: &[usize], waiters: Vec<Waiter>) {
    match taken {
        Ok((refused, reason)) => {
            for (part, w) in split(refused, reason, sizes).into_iter().zip(waiters) {
                let _ = w.send(Ok(part));
            }
        }
        // Deleted on its home meanwhile: as a local queue deleted while a publish was
        // on its way (routed nowhere).
        Err(e) if e.code() == ErrorCode::NotFound => {
            for w in waiters {
                let _ = w.send(Err(e.clone()));
            }
        }
        Err(e) => {
            tracing::warn!(queue = %t.queue, vhost = %t.vhost, home = t.home, error = %e, "publishes forwarded to the queue's home not taken");
            for (n, w) in sizes.iter().zip(waiters) {
                let _ = w.send(Ok(all_refused(*n, e.clone())));
            }
        }
    }
}

/// The home queue's answer to a whole batch (`refused`: positions in it, increasing)
/// split into one answer per publish of `sizes` messages, positions in each.
fn split(refused: Vec<u32>, reason: Option<BrokerError>, sizes: &[usize]) -> Vec<Enqueued> {
    let mut refused = refused.into_iter().peekable();
    let mut start = 0u32;
    let mut parts = Vec::with_capacity(sizes.len());
    for n in sizes {
        let end = start + *n as u32;
        let mut mine = Vec::new();
        while let Some(i) = refused.next_if(|i| *i < end) {
            mine.push(i - start);
        }
        let reason = (!mine.is_empty()).then(|| reason.clone()).flatten();
        parts.push(Enqueued {
            refused: mine,
            reason,
        });
        start = end;
    }
    parts
}

/// The home's side: hands a forwarded batch to the queue's actor here, if this node is
/// its home (`is_home`), and answers what the queue answered.
pub(super) async fn take(broker: BrokerHandle, is_home: bool, batch: Forwarded) -> Taken {
    if !is_home {
        // Never forwarded again: a stand-in here would chain the hop.
        return Err(BrokerError::new(
            ErrorCode::NotAllowed,
            format!(
                "queue '{}' in vhost '{}' does not live on this node: forwarded publish refused",
                batch.queue, batch.vhost
            ),
        ));
    }
    let registry = broker.registry(&batch.vhost)?;
    let queue = registry
        .send(LookupQueue {
            name: batch.queue.clone(),
            owner: broker.new_owner(),
        })
        .await
        .map_err(|e| BrokerError::internal(format!("registry: {e}")))??;
    let messages = batch.messages.iter().map(StoredMessage::shared).collect();
    let answer = queue
        .enqueue(messages)
        .await
        .map_err(|_| BrokerError::not_found("queue", &batch.queue, &batch.vhost))??;
    Ok((answer.refused, answer.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answer_is_split_back_to_each_publish_with_its_own_positions() {
        let full = BrokerError::new(ErrorCode::ResourceError, "full");
        // Publishes of 2, 3, 1 and 2 messages; the home refused 1, 4, 5 and 7.
        let parts = split(vec![1, 4, 5, 7], Some(full.clone()), &[2, 3, 1, 2]);
        let refused: Vec<Vec<u32>> = parts.iter().map(|p| p.refused.clone()).collect();
        assert_eq!(refused, vec![vec![1], vec![2], vec![0], vec![1]]);
        assert!(parts.iter().all(|p| p.reason == Some(full.clone())));
        // Nothing refused: no reason anywhere (a publish whose messages were all taken
        // is confirmed, whatever the others of its batch got).
        let parts = split(vec![3], Some(full), &[2, 2, 1]);
        assert_eq!(parts[0], Enqueued::default());
        assert_eq!(parts[1].refused, vec![1]);
        assert_eq!(parts[2], Enqueued::default());
    }
}
