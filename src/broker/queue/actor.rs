//! The queue actor: wraps [`QueueState`] with memory accounting, delivery to consumer
//! recipients, one timer for every deadline, dead-lettering and self-deletion.
//!
//! Every handler ends in `QueueActor::after`: dead letters go out, the memory gauge
//! is brought level with what the queue holds, and the single timer is armed for the
//! state's earliest deadline (TTL, delay, consumer timeout). Nothing polls: a queue with
//! a million delayed messages and nothing due sleeps until the first one is. `x-expires`
//! has a timer of its own, armed only while the queue has no consumer.

use super::consumers::NewConsumer;
use super::dead_letter::Target;
use super::durable::{self, AttachStorage, Durable};
use super::inbox::{Control, Inbox};
use super::outbox::DeadLetterOutbox;
use super::state::{Pushed, QueueState};
use super::timers::Millis;
use super::QueueHandle;
use crate::broker::memory::MemoryGauge;
use crate::broker::messages::{
    Cancel, Consume, ConsumerCancelled, ConsumerInfo, Credit, Deliver, Delivery, Enqueue, Enqueued,
    Get, GetStats, ListConsumers, OwnerId, QueueGone, QueueStats, Release, ReturnCredit, Settle,
};
use crate::broker::queue_args::{consumer_priority, QueueConfig};
use crate::broker::registry::ExchangeDirectory;
use crate::error::{BrokerError, ErrorCode};
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod effects;
mod flow;
mod handlers;
mod inspect;
mod lifecycle;
mod reconfigure;
mod replica;
mod standin;
mod stream;

use flow::{close_flow, hold_until_reopened};
pub use inspect::{DeclareCounts, GetDeclareCounts, LocalCounts, Touch};
pub use reconfigure::Reconfigure;
pub use replica::GroupChanged;

/// Deliveries handed out per dispatch pass before the actor yields to the others on its
/// arbiter (docs/ARCHITECTURE.md: one busy queue must not stall its neighbours).
const DISPATCH_CHUNK: usize = 2048;

/// Deadlines (of each kind) handled per timer firing before the actor yields.
const TIMER_CHUNK: usize = 4096;

/// Ready messages a queue keeps as they are before packing the small ones behind them
/// (see [`super::backlog`]): above the flow threshold, so that a queue whose consumers
/// keep up (and hold its publishers back at the threshold) never packs. A durable
/// queue's head is `storage.queue_ram_messages` instead.
fn packing_head(flow_threshold: usize) -> usize {
    flow_threshold.saturating_mul(2).max(32_768)
}

/// How the queue reaches one consumer.
pub struct ConsumerHandle {
    /// Where deliveries go.
    deliver: Recipient<Deliver>,
    /// Where a broker-side cancel is announced.
    cancelled: Option<Recipient<ConsumerCancelled>>,
}

/// What the registry gives a new queue.
pub(crate) struct QueueInit {
    /// The queue's name.
    pub name: Arc<str>,
    /// Its virtual host.
    pub vhost: Arc<str>,
    /// Its incarnation (see [`QueueGone`]).
    pub incarnation: u64,
    /// Delete when the last consumer leaves.
    pub auto_delete: bool,
    /// Broker-wide memory accounting.
    pub gauge: Arc<MemoryGauge>,
    /// Told when the queue deletes itself.
    pub registry: Recipient<QueueGone>,
    /// Told when a replicated queue is unused for its `x-expires` (the registry has
    /// its delete committed by the cluster).
    pub unused: Recipient<crate::broker::messages::QueueUnused>,
    /// `broker.queue_flow_threshold`.
    pub flow_threshold: usize,
    /// The parsed declare arguments.
    pub config: QueueConfig,
    /// The virtual host's exchanges (for dead-lettering).
    pub exchanges: ExchangeDirectory,
    /// Set for a stream queue: its log and settings.
    pub stream: Option<crate::broker::stream::StreamInit>,
    /// Set on a cluster node that is not the queue's home: where its messages live,
    /// and where its publishes are forwarded.
    pub remote: Option<Arc<crate::cluster::Home>>,
    /// With `remote`: the queue is a stream (its consumers answered once attached).
    pub remote_stream: bool,
    /// Set for a quorum queue in a cluster: its Raft group (see [`replica`]).
    pub replica: Option<Arc<crate::cluster::quorum::runtime::QueueGroup>>,
}

/// One queue.
pub struct QueueActor {
    /// The queue's name (in every delivery, for acks).
    name: Arc<str>,
    /// The virtual host, for messages.
    vhost: Arc<str>,
    /// Distinguishes this queue from an earlier or later one of the same name.
    incarnation: u64,
    /// Messages, consumers, unacked deliveries, deadlines.
    state: QueueState<ConsumerHandle>,
    /// Broker-wide memory accounting.
    gauge: Arc<MemoryGauge>,
    /// Bytes this queue has added to the gauge: what it holds plus its dead letters on
    /// their way out. Brought level after every handler ([`Self::reconcile_gauge`]), so
    /// no path (expiry, drop-head, dead-lettering, delete) can leave the gauge off.
    accounted: usize,
    /// Told when the queue deletes itself.
    registry: Recipient<QueueGone>,
    /// Delete when the last consumer leaves.
    auto_delete: bool,
    /// This queue as consumers see it (set in `started`).
    handle: Option<QueueHandle>,
    /// A dispatch pass is scheduled (after a yield).
    dispatch_scheduled: bool,
    /// Consumer tags generated so far.
    tag_seq: u64,
    /// Set once the queue is being deleted; later requests get NOT_FOUND.
    deleted: bool,
    /// The consumer that asked for exclusive access, while attached.
    exclusive_consumer: Option<u64>,
    /// Acks and credit that skip the mailbox (see [`super::inbox`]).
    inbox: Arc<Inbox>,
    /// Open (true) while publishers may go on; closed while consumers are attached and
    /// the backlog is above `flow_threshold` (Enqueue answers wait for it to reopen).
    flow: tokio::sync::watch::Sender<bool>,
    /// Ready messages above which, with consumers attached, publishers are slowed
    /// (`broker.queue_flow_threshold`; 0 = never).
    flow_threshold: usize,
    /// The origin of the queue's clock: deadlines are milliseconds since.
    epoch: Instant,
    /// The armed deadline timer: when it fires, and its handle to cancel it.
    timer: Option<(Millis, SpawnHandle)>,
    /// Dead letters on their way out (when the queue has a dead-letter exchange).
    outbox: Option<DeadLetterOutbox>,
    /// The virtual host's exchanges: for an outbox made when a policy gives the queue
    /// a dead-letter exchange.
    exchanges: ExchangeDirectory,
    /// Last time the queue was used: a consumer left, a get, a declare (`x-expires`).
    last_used: Instant,
    /// The `x-expires` check, while armed.
    expires_check: Option<SpawnHandle>,
    /// Consumers were attached at the end of the last handler (to see the last leave).
    had_consumers: bool,
    /// What a durable queue appends to the message store (inert otherwise; set by
    /// [`AttachStorage`]). Committed at the end of every handler, in [`Self::after`].
    durable: Durable,
    /// Woken whenever bodies read back from the store reach the backlog (a `get` on an
    /// empty head waits for it).
    paged_in: Arc<tokio::sync::Notify>,
    /// Owners with `get`s waiting for a read, and how many.
    waiting_gets: HashMap<OwnerId, usize>,
    /// Those of them released (connection closed) while waiting: their `get`s answer
    /// empty.
    released_waiters: HashSet<OwnerId>,
    /// Set for a stream queue: the handlers hand their work to it (see [`stream`]).
    stream: Option<stream::Stream>,
    /// Set on a cluster node that is not the queue's home: publishes are forwarded
    /// there, consumers and gets served from there (see [`standin`]).
    remote: Option<Arc<crate::cluster::Home>>,
    /// With `remote`: a stream's stand-in. Its consumers are checked here as at the
    /// home, and answered once the home attached them, their start (`next`) fixed
    /// before the client goes on (see [`standin`]).
    remote_stream: bool,
    /// Set for a quorum queue in a cluster: the handlers hand their work to it (see
    /// [`replica`]).
    replica: Option<Box<replica::Replica>>,
    /// A stand-in's owners, whose consumers and gets the home serves (see
    /// [`standin`]).
    standin: replica::Remotes,
}

/// Wakes the queue to drain its inbox (sent when the inbox turns non-empty).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Wake;

impl QueueActor {
    /// Starts a queue actor on `arbiter`.
    pub(crate) fn start_on(arbiter: &ArbiterHandle, init: QueueInit) -> QueueHandle {
        let name = init.name.clone();
        let inbox = Arc::new(Inbox::default());
        let i2 = inbox.clone();
        let addr = QueueActor::start_in_arbiter(arbiter, move |_| {
            let outbox = init.config.dead_letter_exchange.as_ref().map(|x| {
                let target = Target {
                    exchange: Arc::from(x.as_str()),
                    routing_key: init.config.dead_letter_routing_key.clone(),
                };
                DeadLetterOutbox::new(init.name.clone(), target, init.exchanges.clone())
            });
            let now = Instant::now();
            let mut state = QueueState::new(init.config);
            state.enable_backlog(packing_head(init.flow_threshold));
            QueueActor {
                name: init.name,
                vhost: init.vhost,
                incarnation: init.incarnation,
                state,
                gauge: init.gauge,
                accounted: 0,
                registry: init.registry,
                auto_delete: init.auto_delete,
                handle: None,
                dispatch_scheduled: false,
                tag_seq: 0,
                deleted: false,
                exclusive_consumer: None,
                inbox: i2,
                flow: tokio::sync::watch::channel(true).0,
                flow_threshold: init.flow_threshold,
                epoch: now,
                timer: None,
                outbox,
                exchanges: init.exchanges,
                last_used: now,
                expires_check: None,
                had_consumers: false,
                durable: Durable::default(),
                paged_in: Arc::default(),
                waiting_gets: HashMap::new(),
                released_waiters: HashSet::new(),
                stream: init
                    .stream
                    .map(|s| Box::new(crate::broker::stream::StreamState::new(s))),
                remote: init.remote,
                remote_stream: init.remote_stream,
                standin: replica::Remotes::default(),
                replica: init
                    .replica
                    .map(|g| replica::Replica::new(g, init.unused.clone())),
            }
        });
        QueueHandle::new(name, addr, inbox)
    }

    /// What the flow threshold bounds: the messages the queue holds for its consumers
    /// and has not seen settled, ready (in memory or not) and delivered but unacked.
    /// Unacked ones count: a consumer with no prefetch limit that never acks takes every
    /// message at once and leaves none ready, yet the queue holds them all.
    fn flow_depth(&self) -> usize {
        self.state.ready_len() + self.state.unacked_len()
    }

    /// True when a queue with consumers holds `queue_flow_threshold` messages or more:
    /// its publishers' answers then wait for the flow to reopen.
    fn flow_should_close(&self) -> bool {
        self.flow_threshold > 0
            && !self.state.consumers().is_empty()
            && self.flow_depth() >= self.flow_threshold
    }

    /// True when `publisher` consumes from this queue with acks (see [`FLOW_MAX_HOLD`]).
    fn acks_from(&self, publisher: Option<OwnerId>) -> bool {
        publisher.is_some_and(|p| {
            self.state
                .consumers()
                .iter()
                .any(|c| c.owner == p && !c.auto_ack)
        })
    }

    /// Reopens the flow once the depth is down to half the threshold, the consumers
    /// are gone, or the queue is deleted.
    fn update_flow(&mut self) {
        if *self.flow.borrow() {
            return;
        }
        if self.deleted
            || self.state.consumers().is_empty()
            || self.flow_depth() <= self.flow_threshold / 2
        {
            self.flow.send_replace(true);
        }
    }

    /// Logs settlements naming deliveries the owner does not hold.
    fn unknown_ids(&self, unknown: Vec<u64>) {
        if unknown.is_empty() {
            return;
        }
        if self.state.config().consumer_timeout.is_some() {
            // Expected: deliveries that timed out and went back to the queue.
            tracing::debug!(queue = %self.name, ids = ?unknown, "late settlement of timed-out deliveries ignored");
        } else {
            tracing::warn!(queue = %self.name, ids = ?unknown, "settlement names deliveries this owner does not hold");
        }
    }

    /// Applies the acks, credit, cancels and releases waiting in the inbox; true if
    /// there were any.
    fn drain_inbox(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.stream.is_some() {
            return self.stream_drain_inbox();
        }
        if self.replica.is_some() {
            let drained = self.replica_drain_inbox();
            self.remote_wait(ctx);
            return drained;
        }
        if self.remote.is_some() {
            return self.standin_drain_inbox(ctx);
        }
        let items = self.inbox.take();
        if items.is_empty() {
            return false;
        }
        let now = self.now();
        let mut detached = false;
        for item in items {
            match item {
                Control::Settle {
                    owner,
                    ids,
                    settlement,
                } => {
                    let unknown = self.state.settle(owner, &ids, settlement, now);
                    self.unknown_ids(unknown);
                }
                Control::SettleRuns {
                    owner,
                    runs,
                    settlement,
                } => {
                    // Only streams hand out runs: settled one by one here.
                    let ids = super::inbox::run_ids(&runs);
                    let unknown = self.state.settle(owner, &ids, settlement, now);
                    self.unknown_ids(unknown);
                }
                Control::Credit { consumer, amount } => self.state.return_credit(consumer, amount),
                Control::Prefetch { owner, prefetch } => self.state.set_prefetch(owner, prefetch),
                Control::Unhold { .. } => {}
                Control::Cancel { owner, tag, done } => {
                    let id = self
                        .state
                        .consumers()
                        .iter()
                        .find(|c| c.owner == owner && *c.tag == *tag)
                        .map(|c| c.id);
                    if let Some(id) = id {
                        self.state.remove_consumer(id);
                        detached = true;
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Control::Release(owner) => {
                    self.note_release(owner);
                    detached |= !self.state.release(owner, now).is_empty();
                }
            }
        }
        if detached {
            self.maybe_auto_delete(ctx);
        }
        true
    }

    fn not_found(&self) -> BrokerError {
        BrokerError::not_found("queue", &self.name, &self.vhost)
    }

    /// Hands ready messages to consumers with credit (one chunk now, the rest after a
    /// yield), then settles the effects ([`Self::after`]).
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        self.dispatch_ready(ctx);
        self.after(ctx);
    }

    fn dispatch_ready(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        loop {
            let now = self.now();
            let batches = self.state.dispatch(DISPATCH_CHUNK, now);
            if batches.is_empty() {
                return;
            }
            let handed: usize = batches.iter().map(|(_, d)| d.len()).sum();
            let mut gone = Vec::new();
            let quorum = self.state.config().quorum;
            for (idx, mut deliveries) in batches {
                let slot = self.state.consumer_at(idx);
                self.durable.on_delivered(&deliveries, slot.auto_ack);
                if quorum {
                    deliveries
                        .iter_mut()
                        .for_each(super::quorum::mark_redelivery);
                }
                if !slot.handle.deliver.connected() {
                    gone.push(slot.id);
                    continue;
                }
                let credit = Credit {
                    queue: self.handle.clone(),
                    consumer: slot.id,
                    amount: deliveries.len() as u32,
                };
                // do_send: credit bounds what is in flight to this consumer.
                slot.handle.deliver.do_send(Deliver {
                    consumer_tag: slot.tag.clone(),
                    queue: self.handle.clone().expect("queue handle set in started"),
                    deliveries,
                    credit,
                });
            }
            if !gone.is_empty() {
                for id in gone {
                    if let Some(slot) = self.state.drop_consumer(id, now) {
                        tracing::debug!(queue = %self.name, consumer = %slot.tag, "consumer vanished; its deliveries are requeued");
                    }
                }
                if self.maybe_auto_delete(ctx) {
                    return;
                }
                continue;
            }
            if handed >= DISPATCH_CHUNK && !self.dispatch_scheduled {
                self.dispatch_scheduled = true;
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(tokio::task::yield_now()).map(
                        |_, act, ctx| {
                            act.dispatch_scheduled = false;
                            act.dispatch(ctx);
                        },
                    ),
                );
            }
            return;
        }
    }

    /// The refusal of a message by a full reject-publish queue.
    fn full_error(&self) -> BrokerError {
        let c = self.state.config();
        BrokerError::new(
            ErrorCode::ResourceError,
            format!(
                "queue '{}' in vhost '{}' is full ({}): message refused (x-overflow {})",
                self.name,
                self.vhost,
                c.limits_text(),
                c.overflow.as_str()
            ),
        )
    }

    /// Deletes the queue if it is auto-delete and its last consumer left.
    fn maybe_auto_delete(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.auto_delete && self.state.had_consumer() && self.state.consumers().is_empty() {
            tracing::debug!(queue = %self.name, "auto-delete: last consumer left");
            self.delete(ctx, "auto-delete");
            return true;
        }
        false
    }

    /// Drops everything, cancels consumers, tells the registry, stops. Answers the
    /// messages it held (ready and delayed).
    fn delete(&mut self, ctx: &mut Context<Self>, reason: &str) -> u64 {
        if self.deleted {
            return 0;
        }
        self.deleted = true;
        // Before the stop: a batch dropped in the mailbox reads as routed nowhere.
        self.inbox.mark_deleted();
        let mut count = (self.state.ready_len() + self.state.delayed_len()) as u64;
        if self.stream.is_some() {
            count = self.stream_delete(reason);
        }
        if self.replica.is_some() {
            count = self.replica_delete(reason);
        }
        if self.remote.is_some() {
            self.remote_delete(reason);
        }
        self.gauge.sub(self.accounted);
        self.accounted = 0;
        for c in self.state.consumers() {
            if let Some(r) = &c.handle.cancelled {
                r.do_send(ConsumerCancelled {
                    consumer_tag: c.tag.clone(),
                    reason: format!("queue '{}' was deleted ({reason})", self.name),
                });
            }
        }
        self.durable.on_delete();
        self.state = QueueState::new(self.state.config().clone());
        self.outbox = None;
        self.flow.send_replace(true);
        self.registry.do_send(QueueGone {
            name: self.name.clone(),
            incarnation: self.incarnation,
        });
        ctx.stop();
        count
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Publishers' windows and consumers' credit bound the traffic, not the mailbox.
        ctx.set_mailbox_capacity(crate::broker::MAILBOX_CAPACITY);
        self.handle = Some(QueueHandle::new(
            self.name.clone(),
            ctx.address(),
            self.inbox.clone(),
        ));
        if self.stream.is_some() {
            self.start_stream(ctx);
        } else if self.replica.is_some() {
            self.start_replica(ctx);
        } else {
            self.watch_expires(ctx);
        }
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if !self.deleted {
            // Acks handed over since the last handler still count (and reach the log).
            self.drain_inbox(ctx);
        }
        // Nothing drains the inbox from now on: close it, so a cancel waiting in it (or
        // pushed later through a handle still held) resolves instead of hanging.
        self.inbox.close();
        self.stream_stop();
        // Acks drained by the last handler (broker shutdown) still reach the log.
        self.durable.commit(&mut self.state);
        if !self.deleted {
            // Stopped without a delete (broker shutdown): release the accounting.
            self.gauge.sub(self.accounted);
            self.accounted = 0;
        }
    }
}

impl Drop for QueueActor {
    /// An actor dropped without `stopped` (its arbiter stopped) closes its inbox too.
    fn drop(&mut self) {
        self.inbox.close();
    }
}

/// Removes every ready and delayed message of the queue (sent by the registry).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct Purge;

/// Deletes the queue if the conditions hold (sent by the registry); answers the number
/// of messages it held.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct DeleteSelf {
    /// Refuse while consumers are attached.
    pub if_unused: bool,
    /// Refuse while messages are held.
    pub if_empty: bool,
    /// `if_empty` counts ready messages only (see [`crate::broker::messages::DeleteQueue::ready_only`]).
    pub ready_only: bool,
}

/// Stops the queue without deleting anything durable (broker shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopQueue;

/// The owner of `OwnerId` as seen in logs.
impl std::fmt::Display for OwnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "owner#{}", self.0)
    }
}
