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
//! On the home node the batch waits while the home's memory or disk alarm is raised
//! (a local publisher there is blocked the same way), then is handed to the queue's own
//! actor as one `Enqueue`, and answered with the queue's answer: so a durable queue's
//! persistent messages are on the home's disk before the publisher's confirm, a full
//! reject-publish queue refuses them, and the home's flow control holds the answer (and
//! with it the stand-in's publishers, whose windows bound what waits here) exactly as
//! it holds a local publisher; a publisher that also consumes from the queue with acks
//! (through its session) is held at most as long as a local one ([`Forwarded::own_acks`]).
//! The connection answers its requests in order and the batcher sends the next batch
//! only once the previous one is answered, so the home's queue takes a node's
//! publishes in the order they were made.
//!
//! A held answer may take as long as the alarm or the consumers: the batcher waits for
//! it as long as the home still answers a probe on another connection every
//! [`FORWARD_PROBE`]. A home that cannot be reached (down, refusing), or that stops
//! answering, gets the batch refused: every publisher is nacked with a reason naming
//! the home. One cut off after it took the batch may still have stored it (the reason
//! says so): a publisher that republishes a nacked message may then queue it twice (at
//! least once, as RabbitMQ).

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

mod counts;
pub(super) use counts::answer as answer_counts;

/// Most messages in one forwarded batch.
pub const MAX_BATCH: usize = 1000;
/// A batch takes no more publishes once its bodies reach this size (one publish may
/// be larger on its own).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// How long a forwarded batch waits for its home's answer before the batcher checks,
/// on another connection, that the home still answers (and how long that check may
/// take). A home that answers the check is holding the batch (its alarms, its flow
/// control) and is waited for again; one that does not is taken as down.
pub const FORWARD_PROBE: Duration = Duration::from_secs(15);

/// The bound of a forwarded call itself: none in practice, [`FORWARD_PROBE`] decides.
const HELD_FOR_GOOD: Duration = Duration::from_secs(365 * 24 * 3600);

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
    /// A publisher of the batch also consumes from the queue with acks, through a
    /// consume session at the home: its acks wait behind its held publishes, so the
    /// home's flow control holds the answer at most `FLOW_MAX_HOLD` (as it holds such
    /// a local publisher), never for good.
    #[serde(default)]
    pub own_acks: bool,
}

/// The home's answer to a [`Forwarded`] batch: the queue's own answer (positions in
/// the batch it refused, and why), or why nothing was taken.
pub type Taken = Result<(Vec<u32>, Option<BrokerError>), BrokerError>;

type Waiter = oneshot::Sender<Result<Enqueued, BrokerError>>;

/// One publish waiting for the batcher: its messages, whether its publisher consumes
/// from the queue with acks, and where its answer goes.
type Pending = (Vec<StoredMessage>, bool, Waiter);

/// Where a stand-in's publishes go: its queue's home node.
pub struct Home {
    /// "lives on node 2 (127.0.0.1:25673)".
    describe: String,
    tx: mpsc::UnboundedSender<Pending>,
    /// The home and how to reach it (consume sessions open there too).
    target: Arc<Target>,
    /// The cluster's runtime.
    rt: tokio::runtime::Handle,
    /// Where a declare's counts are asked of the home (`counts`).
    counts: counts::CountsLink,
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
            counts: counts::CountsLink::default(),
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
    /// queue's. `own_acks`: its publisher consumes from the queue with acks (see
    /// [`Forwarded::own_acks`]). Synchronous up to the queueing, so the order of calls
    /// is the order the home's queue takes them in.
    pub fn publish(
        &self,
        messages: Vec<Arc<Message>>,
        own_acks: bool,
    ) -> impl std::future::Future<Output = Result<Enqueued, BrokerError>> + Send + 'static {
        let stored = messages.into_iter().map(StoredMessage::from).collect();
        let (tx, rx) = oneshot::channel();
        let queued = self.tx.send((stored, own_acks, tx)).is_ok();
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

async fn batcher(t: Arc<Target>, mut rx: mpsc::UnboundedReceiver<Pending>) {
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
        let sizes: Vec<usize> = batch.iter().map(|(m, _, _)| m.len()).collect();
        let own_acks = batch.iter().any(|(_, own, _)| *own);
        let mut messages = Vec::with_capacity(count);
        let mut waiters = Vec::with_capacity(batch.len());
        for (m, _, w) in batch {
            messages.extend(m);
            waiters.push(w);
        }
        let taken = send(&t, &mut link, messages, own_acks).await;
        answer(&t, taken, &sizes, waiters);
    }
}

/// Sends one batch to the home and reads its answer.
async fn send(
    t: &Target,
    link: &mut Option<(String, Link)>,
    messages: Vec<StoredMessage>,
    own_acks: bool,
) -> Taken {
    let Some(addr) = (t.addr)() else {
        return Err(down(t, "its address is unknown", false));
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
        own_acks,
    });
    let reply = {
        let call = l.call(&rpc, HELD_FOR_GOOD);
        tokio::pin!(call);
        let mut probe: Option<Link> = None;
        loop {
            match tokio::time::timeout(FORWARD_PROBE, &mut call).await {
                Ok(reply) => break reply,
                // Held (an alarm, flow control) or gone: asked on another connection.
                Err(_) => {
                    let p = probe.get_or_insert_with(|| Link::new(&addr, t.transport.clone()));
                    match p.call(&Rpc::Local, FORWARD_PROBE).await {
                        Ok(Reply::Local(_)) => {
                            tracing::debug!(queue = %t.queue, vhost = %t.vhost, home = t.home, "forwarded publishes held by the queue's home");
                        }
                        Ok(other) => {
                            break Err(std::io::Error::other(format!(
                                "unexpected answer to a probe: {other:?}"
                            )))
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
        }
    };
    if reply.is_err() {
        // A call given up mid-answer leaves its connection out of step: never reused.
        *link = None;
    }
    match reply {
        Ok(Reply::Forward(taken)) => taken.and_then(|ok| checked(t, ok, count_of(&rpc))),
        Ok(other) => Err(BrokerError::internal(format!(
            "queue '{}': unexpected reply from node {}: {other:?}",
            t.queue, t.home
        ))),
        Err(e) => Err(down(t, &e.to_string(), true)),
    }
}

fn count_of(rpc: &Rpc) -> usize {
    match rpc {
        Rpc::Forward(f) => f.messages.len(),
        _ => 0,
    }
}

/// The home's answer to a batch of `n` messages, if it makes sense: refused positions
/// strictly increasing and inside the batch. Any other answer (a peer's bug, a damaged
/// frame) refuses the whole batch: confirming a message the home may have refused
/// would lose it.
fn checked(t: &Target, (refused, reason): (Vec<u32>, Option<BrokerError>), n: usize) -> Taken {
    if valid_positions(&refused, n) {
        return Ok((refused, reason));
    }
    Err(BrokerError::internal(format!(
        "queue '{}' in vhost '{}': node {} answered a forwarded batch of {n} message(s) with refused positions {refused:?} (not increasing or past the batch); the whole batch is refused, and may have been stored there",
        t.queue, t.vhost, t.home
    )))
}

/// True when `refused` are positions in a batch of `n`: strictly increasing, each below
/// `n` (what [`split`] relies on).
fn valid_positions(refused: &[u32], n: usize) -> bool {
    let increasing = refused.windows(2).all(|w| w[0] < w[1]);
    increasing && refused.last().is_none_or(|last| (*last as usize) < n)
}

/// The refusal of a batch whose home could not be reached (`maybe_sent`: the batch may
/// have reached it before the connection failed).
fn down(t: &Target, why: &str, maybe_sent: bool) -> BrokerError {
    let stored = if maybe_sent {
        "the message may have been stored there all the same"
    } else {
        "message not stored"
    };
    BrokerError::new(
        ErrorCode::ResourceError,
        format!(
            "queue '{}' in vhost '{}': its home node {} is down or inaccessible ({why}); {stored}",
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
/// its home (`here`, from the applied log: `None` when the log here knows no such
/// queue), and answers what the queue answered.
pub(super) async fn take(broker: BrokerHandle, here: Option<bool>, batch: Forwarded) -> Taken {
    let Some(is_home) = here else {
        // Not declared here yet (the forwarding node applied the declare first) or
        // deleted: the two cannot be told apart, so refused (nacked, never confirmed
        // as routed nowhere and dropped).
        return Err(not_running(
            BrokerError::internal("not in this node's log"),
            &batch,
        ));
    };
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
    // Held while this node's own memory or disk alarm is raised: the held answer
    // fills the forwarders' windows, so producers on other nodes cannot fill this one
    // (their publishers are blocked too once they hear of the alarm, but a batch may
    // be on its way before). Another node's alarm does not hold it: that node's
    // alarm blocks the publishers, not what they sent before it.
    broker.memory().wait_local_clear().await;
    let registry = broker.registry(&batch.vhost)?;
    let queue = registry
        .send(LookupQueue {
            name: batch.queue.clone(),
            owner: broker.new_owner(),
        })
        .await
        .map_err(|e| BrokerError::internal(format!("registry: {e}")))?
        .map_err(|e| not_running(e, &batch))?;
    let messages = batch.messages.iter().map(StoredMessage::shared).collect();
    let answer = queue
        .enqueue_forwarded(messages, batch.own_acks)
        .await
        .map_err(|_| not_running(BrokerError::internal("its actor stopped"), &batch))??;
    Ok((answer.refused, answer.reason))
}

/// The refusal of a batch for a queue that is not running here although a stand-in
/// forwarded to this node (not started yet, not yet in this node's log, or stopping):
/// RESOURCE_ERROR, so the publisher is nacked and may retry. A NotFound would make the
/// stand-in confirm the batch as routed nowhere and drop it; that answer is left to a
/// queue actor that says it was deleted.
fn not_running(e: BrokerError, batch: &Forwarded) -> BrokerError {
    BrokerError::new(
        ErrorCode::ResourceError,
        format!(
            "queue '{}' in vhost '{}' is not running on its home node ({}): forwarded publish refused, message not stored",
            batch.queue, batch.vhost, e.message()
        ),
    )
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

    /// Regression: a peer's answer was split as it came; positions not increasing made
    /// `i - start` underflow (a panic in a debug build, in release refused messages
    /// confirmed), and one past the batch was silently dropped.
    #[test]
    fn a_home_s_answer_is_used_only_with_increasing_positions_inside_the_batch() {
        assert!(valid_positions(&[], 0));
        assert!(valid_positions(&[], 3));
        assert!(valid_positions(&[0, 2], 3));
        assert!(!valid_positions(&[2, 0], 3), "decreasing");
        assert!(!valid_positions(&[1, 1], 3), "repeated");
        assert!(!valid_positions(&[0, 3], 3), "past the batch");
        assert!(!valid_positions(&[0], 0), "in an empty batch");
        assert!(!valid_positions(&[u32::MAX], 3));
    }
}
