//! The queue actor: wraps [`QueueState`] with memory accounting, delivery to consumer
//! recipients, and self-deletion.

use super::inbox::{Control, Inbox};
use super::state::QueueState;
use super::QueueHandle;
use crate::broker::memory::MemoryGauge;
use crate::broker::messages::{
    Cancel, Consume, ConsumerCancelled, Credit, Deliver, Delivery, Enqueue, Get, GetStats, OwnerId,
    QueueGone, QueueStats, Release, ReturnCredit, Settle, Settlement,
};
use crate::error::BrokerError;
use actix::prelude::*;
use std::sync::Arc;

/// Deliveries handed out per dispatch pass before the actor yields to the others on its
/// arbiter (DESIGN.md: one busy queue must not stall its neighbours).
const DISPATCH_CHUNK: usize = 2048;

/// How the queue reaches one consumer.
pub struct ConsumerHandle {
    /// Where deliveries go.
    deliver: Recipient<Deliver>,
    /// Where a broker-side cancel is announced.
    cancelled: Option<Recipient<ConsumerCancelled>>,
}

/// One queue.
pub struct QueueActor {
    /// The queue's name (in every delivery, for acks).
    name: Arc<str>,
    /// The virtual host, for messages.
    vhost: Arc<str>,
    /// Distinguishes this queue from an earlier or later one of the same name.
    incarnation: u64,
    /// Messages, consumers, unacked deliveries.
    state: QueueState<ConsumerHandle>,
    /// Broker-wide memory accounting.
    gauge: Arc<MemoryGauge>,
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
}

/// Wakes the queue to drain its inbox (sent when the inbox turns non-empty).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Wake;

impl QueueActor {
    /// Starts a queue actor on `arbiter`.
    #[allow(clippy::too_many_arguments)] // one call site, in the registry
    pub(crate) fn start_on(
        arbiter: &ArbiterHandle,
        name: Arc<str>,
        vhost: Arc<str>,
        incarnation: u64,
        auto_delete: bool,
        gauge: Arc<MemoryGauge>,
        registry: Recipient<QueueGone>,
        flow_threshold: usize,
    ) -> QueueHandle {
        let n2 = name.clone();
        let inbox = Arc::new(Inbox::default());
        let i2 = inbox.clone();
        let addr = QueueActor::start_in_arbiter(arbiter, move |_| QueueActor {
            name: n2,
            vhost,
            incarnation,
            state: QueueState::new(),
            gauge,
            registry,
            auto_delete,
            handle: None,
            dispatch_scheduled: false,
            tag_seq: 0,
            deleted: false,
            exclusive_consumer: None,
            inbox: i2,
            flow: tokio::sync::watch::channel(true).0,
            flow_threshold,
        });
        QueueHandle::new(name, addr, inbox)
    }

    fn flow_should_close(&self) -> bool {
        self.flow_threshold > 0
            && !self.state.consumers().is_empty()
            && self.state.ready_len() >= self.flow_threshold
    }

    /// Reopens the flow once the backlog is down to half the threshold, the consumers
    /// are gone, or the queue is deleted.
    fn update_flow(&mut self) {
        if *self.flow.borrow() {
            return;
        }
        if self.deleted
            || self.state.consumers().is_empty()
            || self.state.ready_len() <= self.flow_threshold / 2
        {
            self.flow.send_replace(true);
        }
    }

    /// Applies the acks, credit, cancels and releases waiting in the inbox; true if
    /// there were any.
    fn drain_inbox(&mut self, ctx: &mut Context<Self>) -> bool {
        let items = self.inbox.take();
        if items.is_empty() {
            return false;
        }
        let mut released = 0;
        let mut detached = false;
        for item in items {
            match item {
                Control::Settle {
                    owner,
                    ids,
                    settlement,
                } => match self
                    .state
                    .settle(owner, &ids, settlement == Settlement::Requeue)
                {
                    Ok(bytes) => released += bytes,
                    Err(unknown) => {
                        tracing::warn!(queue = %self.name, ids = ?unknown.0, "settlement names deliveries this owner does not hold");
                    }
                },
                Control::Credit { consumer, amount } => self.state.return_credit(consumer, amount),
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
                    detached |= !self.state.release(owner).is_empty();
                }
            }
        }
        self.gauge.sub(released);
        if detached {
            self.maybe_auto_delete(ctx);
        }
        true
    }

    fn not_found(&self) -> BrokerError {
        BrokerError::not_found("queue", &self.name, &self.vhost)
    }

    /// Hands ready messages to consumers with credit. Does at most one chunk now and
    /// schedules the rest after a yield.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        self.dispatch_ready(ctx);
        self.update_flow();
    }

    fn dispatch_ready(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        loop {
            let batches = self.state.dispatch(DISPATCH_CHUNK);
            if batches.is_empty() {
                return;
            }
            let handed: usize = batches.iter().map(|(_, d)| d.len()).sum();
            let mut gone = Vec::new();
            let mut released = 0usize;
            for (idx, deliveries) in batches {
                let slot = self.state.consumer_at(idx);
                if !slot.handle.deliver.connected() {
                    gone.push(slot.id);
                    continue;
                }
                if slot.auto_ack {
                    released += deliveries
                        .iter()
                        .map(|d| d.message.accounted_size())
                        .sum::<usize>();
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
            self.gauge.sub(released);
            if !gone.is_empty() {
                for id in gone {
                    if let Some(slot) = self.state.drop_consumer(id) {
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

    /// Deletes the queue if it is auto-delete and its last consumer left.
    fn maybe_auto_delete(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.auto_delete && self.state.had_consumer() && self.state.consumers().is_empty() {
            tracing::debug!(queue = %self.name, "auto-delete: last consumer left");
            self.delete(ctx, "auto-delete");
            return true;
        }
        false
    }

    /// Drops everything, cancels consumers, tells the registry, stops.
    fn delete(&mut self, ctx: &mut Context<Self>, reason: &str) -> u64 {
        if self.deleted {
            return 0;
        }
        self.deleted = true;
        let count = self.state.ready_len() as u64;
        self.gauge.sub(self.state.bytes());
        for c in self.state.consumers() {
            if let Some(r) = &c.handle.cancelled {
                r.do_send(ConsumerCancelled {
                    consumer_tag: c.tag.clone(),
                    reason: format!("queue '{}' was deleted ({reason})", self.name),
                });
            }
        }
        self.state = QueueState::new();
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
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if !self.deleted {
            // Stopped without a delete (broker shutdown): release the accounting.
            self.gauge.sub(self.state.bytes());
        }
    }
}

impl Handler<Enqueue> for QueueActor {
    type Result = ResponseFuture<Result<(), BrokerError>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Self::Context) -> Self::Result {
        self.drain_inbox(ctx);
        if self.deleted {
            let e = self.not_found();
            return Box::pin(async move { Err(e) });
        }
        let mut added = 0;
        for m in msg.messages {
            added += self.state.push(m);
        }
        self.gauge.add(added);
        self.dispatch(ctx);
        if self.flow_should_close() {
            // The answer (and with it the publisher's window) waits until the
            // consumers have brought the backlog down: a fast producer is slowed to
            // what the consumers take, instead of the broker filling up.
            self.flow
                .send_if_modified(|open| std::mem::replace(open, false));
            let mut rx = self.flow.subscribe();
            return Box::pin(async move {
                let _ = rx.wait_for(|open| *open).await;
                Ok(())
            });
        }
        Box::pin(async { Ok(()) })
    }
}

impl Handler<Consume> for QueueActor {
    type Result = Result<Arc<str>, BrokerError>;

    fn handle(&mut self, msg: Consume, ctx: &mut Self::Context) -> Self::Result {
        self.drain_inbox(ctx);
        if self.deleted {
            return Err(self.not_found());
        }
        let exclusive_attached = self
            .exclusive_consumer
            .is_some_and(|id| self.state.consumers().iter().any(|c| c.id == id));
        if exclusive_attached {
            return Err(BrokerError::locked(format!(
                "queue '{}' in vhost '{}' has an exclusive consumer",
                self.name, self.vhost
            )));
        }
        if msg.options.exclusive && !self.state.consumers().is_empty() {
            return Err(BrokerError::locked(format!(
                "queue '{}' in vhost '{}' already has consumers: exclusive consume refused",
                self.name, self.vhost
            )));
        }
        let tag: Arc<str> = if msg.options.tag.is_empty() {
            self.tag_seq += 1;
            Arc::from(format!("amq.ctag-{}-{}", self.incarnation, self.tag_seq))
        } else {
            Arc::from(msg.options.tag.as_str())
        };
        if self
            .state
            .consumers()
            .iter()
            .any(|c| c.owner == msg.owner && c.tag == tag)
        {
            return Err(BrokerError::not_allowed(format!(
                "consumer tag '{tag}' is already in use on queue '{}'",
                self.name
            )));
        }
        let handle = ConsumerHandle {
            deliver: msg.deliver,
            cancelled: msg.cancelled,
        };
        let id = self.state.add_consumer(
            tag.clone(),
            msg.owner,
            handle,
            msg.options.prefetch,
            msg.options.auto_ack,
            msg.window,
        );
        if msg.options.exclusive {
            self.exclusive_consumer = Some(id);
        }
        self.dispatch(ctx);
        Ok(tag)
    }
}

impl Handler<Cancel> for QueueActor {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        self.drain_inbox(ctx);
        let id = self
            .state
            .consumers()
            .iter()
            .find(|c| c.owner == msg.owner && *c.tag == *msg.tag)
            .map(|c| c.id);
        // Cancelling an unknown tag is not an error (AMQP basic.cancel).
        if let Some(id) = id {
            self.state.remove_consumer(id);
            self.maybe_auto_delete(ctx);
        }
        Ok(())
    }
}

impl Handler<Settle> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, ctx: &mut Self::Context) {
        self.drain_inbox(ctx);
        let requeue = msg.settlement == Settlement::Requeue;
        match self.state.settle(msg.owner, &msg.ids, requeue) {
            Ok(released) => self.gauge.sub(released),
            Err(unknown) => {
                tracing::warn!(queue = %self.name, ids = ?unknown.0, "settlement names deliveries this owner does not hold");
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<Get> for QueueActor {
    type Result = Result<Option<(Delivery, u64)>, BrokerError>;

    fn handle(&mut self, msg: Get, ctx: &mut Self::Context) -> Self::Result {
        if self.drain_inbox(ctx) {
            self.dispatch(ctx);
        }
        if self.deleted {
            return Err(self.not_found());
        }
        let got = self.state.get(msg.owner, msg.auto_ack);
        if msg.auto_ack {
            if let Some((d, _)) = &got {
                self.gauge.sub(d.message.accounted_size());
            }
        }
        Ok(got)
    }
}

impl Handler<Release> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) {
        self.drain_inbox(ctx);
        let removed = self.state.release(msg.0);
        if !removed.is_empty() && self.maybe_auto_delete(ctx) {
            return;
        }
        self.dispatch(ctx);
    }
}

impl Handler<ReturnCredit> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ReturnCredit, ctx: &mut Self::Context) {
        self.drain_inbox(ctx);
        self.state.return_credit(msg.consumer, msg.amount);
        self.dispatch(ctx);
    }
}

impl Handler<GetStats> for QueueActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _msg: GetStats, ctx: &mut Self::Context) -> Self::Result {
        if self.drain_inbox(ctx) {
            self.dispatch(ctx);
        }
        MessageResult(QueueStats {
            ready: self.state.ready_len() as u64,
            unacked: self.state.unacked_len() as u64,
            consumers: self.state.consumers().len() as u32,
            bytes: self.state.bytes() as u64,
        })
    }
}

/// Removes every ready message of the queue (sent by the registry).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct Purge;

impl Handler<Purge> for QueueActor {
    type Result = Result<u64, BrokerError>;

    fn handle(&mut self, _msg: Purge, ctx: &mut Self::Context) -> Self::Result {
        if self.drain_inbox(ctx) {
            self.dispatch(ctx);
        }
        if self.deleted {
            return Err(self.not_found());
        }
        let (n, bytes) = self.state.purge();
        self.gauge.sub(bytes);
        Ok(n)
    }
}

/// Deletes the queue if the conditions hold (sent by the registry); answers the number
/// of messages it held.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct DeleteSelf {
    /// Refuse while consumers are attached.
    pub if_unused: bool,
    /// Refuse while messages are held.
    pub if_empty: bool,
}

impl Handler<DeleteSelf> for QueueActor {
    type Result = Result<u64, BrokerError>;

    fn handle(&mut self, msg: DeleteSelf, ctx: &mut Self::Context) -> Self::Result {
        self.drain_inbox(ctx);
        if self.deleted {
            return Err(self.not_found());
        }
        if msg.if_unused && !self.state.consumers().is_empty() {
            return Err(BrokerError::precondition(format!(
                "queue '{}' in vhost '{}' in use: it has {} consumer(s)",
                self.name,
                self.vhost,
                self.state.consumers().len()
            )));
        }
        if msg.if_empty && (self.state.ready_len() > 0 || self.state.unacked_len() > 0) {
            return Err(BrokerError::precondition(format!(
                "queue '{}' in vhost '{}' not empty: it holds {} message(s)",
                self.name,
                self.vhost,
                self.state.ready_len() + self.state.unacked_len()
            )));
        }
        Ok(self.delete(ctx, "deleted"))
    }
}

/// Stops the queue without deleting anything durable (broker shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopQueue;

impl Handler<StopQueue> for QueueActor {
    type Result = ();

    fn handle(&mut self, _msg: StopQueue, ctx: &mut Self::Context) {
        self.drain_inbox(ctx);
        ctx.stop();
    }
}

/// The owner of `OwnerId` as seen in logs.
impl std::fmt::Display for OwnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "owner#{}", self.0)
    }
}

impl Handler<Wake> for QueueActor {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Self::Context) {
        if self.drain_inbox(ctx) {
            self.dispatch(ctx);
        }
    }
}
