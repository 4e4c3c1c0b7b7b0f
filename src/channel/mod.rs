//! The protocol-neutral channel core: every rule of a client channel that does not
//! depend on the wire, kept once, for every front end.
//!
//! A [`Channel`] is a plain struct owned by a connection actor: one per AMQP channel;
//! the native connection is codec + socket + one channel whose owner is the
//! connection's; an `embed::Session` is one channel. It owns:
//! - its own [`OwnerId`]: the owner of its consumers and unacked deliveries at the
//!   queues, so closing one AMQP channel requeues that channel's deliveries only and
//!   leaves the connection's other channels alone. Exclusive queues belong to the
//!   *connection* (AMQP scopes them so), so declares and lookups name the connection's
//!   owner; consume, get, settle and release name the channel's;
//! - the exchange cache and the lookup for publishing (an internal exchange refused),
//!   the publish window slot and memory reservation of each batch, confirm sequence
//!   numbers (chosen by the channel, or by the client through
//!   [`Channel::register_seq`]) and the mapping of each message's [`Fate`] to confirm /
//!   nack / return ([`publish`]);
//! - delivery tags and unacked deliveries, ack coalescing per queue with "settlements
//!   take effect before later publishes" (a batch is sent only after the settlements
//!   read before it), consumers, recently cancelled consumers, the prefetch given to
//!   new consumers;
//! - the release of everything when it closes ([`Channel::release`]; with the owner's
//!   exclusive queues, [`Channel::close_connection`]).
//!
//! What each front end keeps is its wire: decoding publishes into [`Outbound`]s and
//! batching them per exchange, writing the [`PublishOutcome`]s of
//! [`Channel::on_published`], writing the deliveries [`Channel::accept_delivery`]
//! accepts with the tags of [`Channel::track`], handing acks to [`Channel::settle`] and
//! calling [`Channel::flush_settles`] before any request. `embed::Session` publishes
//! through [`Channel::send_batch_with`] (its window is a semaphore shared by the tasks
//! that use it) and resolves one confirm per message from [`fates`]; its consumers are
//! streams whose messages settle by queue id, so it uses no delivery tags.
//!
//! Deliveries reach a connection as `Deliver` messages naming the consumer tag; consumer
//! tags are unique per connection, so the connection keeps a tag → channel map (the
//! native connection's one channel has them all) and hands each `Deliver` to the
//! channel's [`Channel::accept_delivery`]. No actor per channel: one hop less per
//! delivery, and the queues keep holding a plain `Recipient<Deliver>`.

pub mod access;
mod cancel;
pub mod publish;
pub mod tracking;

use crate::broker::exchange::ExchangeHandle;
use crate::broker::messages::{Deliver, OwnerGone, OwnerId, Settlement};
use crate::broker::queue::QueueHandle;
use crate::broker::registry::Registry;
use crate::error::BrokerError;
use actix::Addr;
use std::collections::{HashMap, VecDeque};
use tracking::{by_queue, Confirms, QueueIds, Unacked, UnackedTags};

pub use access::{Access, TopicGate};
pub use publish::{fates, lookup_exchange, Fate, FlowSlot, Outbound, PublishOutcome};

/// How many cancelled consumer tags a channel remembers.
const RECENTLY_CANCELLED: usize = 64;

/// A consumer of a channel.
pub struct ConsumerEntry {
    /// The queue it consumes from; None while the consume is on its way.
    pub queue: Option<QueueHandle>,
    /// Deliveries count as acked when sent.
    pub no_ack: bool,
    /// Deliveries that arrived before the queue answered the consume (written after
    /// the consume-ok, which the client must see first).
    pub early: Vec<Deliver>,
}

/// What a front end does with one arriving `Deliver`.
#[derive(Debug, PartialEq, Eq)]
pub enum DeliveryAction {
    /// Write the deliveries; `no_ack` says whether to track them for acks.
    Write {
        /// Auto-acked: do not track.
        no_ack: bool,
    },
    /// Held until the consume is answered (see [`ConsumerEntry::early`]).
    Held,
    /// The consumer is gone: already requeued to the queue.
    Requeued,
}

/// One client channel. See the module documentation.
pub struct Channel {
    /// Owner of this channel's consumers and unacked deliveries.
    owner: OwnerId,
    /// Exchanges published to, by name.
    exchanges: HashMap<String, ExchangeHandle>,
    /// Publish sequence numbers awaiting confirms.
    confirms: Confirms,
    /// Publisher confirms are on (AMQP `confirm.select`).
    confirm_mode: bool,
    /// The last sequence number given to a publish in confirm mode.
    last_seq: u64,
    /// Next delivery tag (AMQP tags are per channel and start at 1).
    next_tag: u64,
    /// Unacked deliveries by tag.
    unacked: UnackedTags,
    /// Consumers by tag.
    consumers: HashMap<String, ConsumerEntry>,
    /// Consumers cancelled lately, with their `no_ack` flag: deliveries already on their
    /// way when the cancel happened are still handled right (requeued, or written when
    /// auto-acked).
    recently_cancelled: VecDeque<(String, bool)>,
    /// Consumers whose client cancel is on its way to the queue, with their `no_ack`
    /// flag (see [`Channel::begin_cancel`]).
    cancelling: Vec<(String, bool)>,
    /// Settlements not yet sent: (queue, kind, ids), coalesced per queue and kind.
    pending_settles: Vec<(QueueHandle, Settlement, QueueIds)>,
    /// Queues this channel consumed or got from (released when it closes).
    touched: Vec<QueueHandle>,
    /// Prefetch given to consumers started from now on (AMQP `basic.qos`).
    prefetch: u32,
    /// In a transaction (AMQP `tx.select`): settlements wait here for the commit.
    tx: Option<Vec<(Settlement, Vec<Unacked>)>>,
    /// The user's permissions, checked on every operation (None: trusted).
    access: Option<access::Access>,
}

impl Channel {
    /// A channel whose consumers and deliveries belong to `owner`.
    pub fn new(owner: OwnerId) -> Self {
        Channel {
            owner,
            exchanges: HashMap::new(),
            confirms: Confirms::default(),
            confirm_mode: false,
            last_seq: 0,
            next_tag: 1,
            unacked: UnackedTags::default(),
            consumers: HashMap::new(),
            recently_cancelled: VecDeque::new(),
            cancelling: Vec::new(),
            pending_settles: Vec::new(),
            touched: Vec::new(),
            prefetch: 0,
            tx: None,
            access: None,
        }
    }

    /// The owner of this channel's consumers and deliveries.
    pub fn owner(&self) -> OwnerId {
        self.owner
    }

    // ------------------------------------------------------------ exchanges

    /// The exchange `name` if it was looked up before and is still alive.
    pub fn cached_exchange(&mut self, name: &str) -> Option<ExchangeHandle> {
        match self.exchanges.get(name) {
            Some(x) if x.is_alive() => Some(x.clone()),
            Some(_) => {
                self.exchanges.remove(name);
                None
            }
            None => None,
        }
    }

    /// Remembers an exchange looked up for publishing.
    pub fn cache_exchange(&mut self, x: ExchangeHandle) {
        self.exchanges.insert(x.name().to_string(), x);
    }

    /// Forgets an exchange (deleted, or its actor stopped).
    pub fn forget_exchange(&mut self, name: &str) {
        self.exchanges.remove(name);
    }

    // ------------------------------------------------------------ deliveries

    /// Gives the next delivery tag to a delivery of `id` from `queue`, tracking it for
    /// settlement unless it is auto-acked.
    pub fn track(&mut self, queue: &QueueHandle, id: u64, no_ack: bool) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        if !no_ack {
            self.unacked.push(tag, queue.clone(), id);
        }
        tag
    }

    /// Gives a run of `count` records (queue ids `id ..`) the next `count` delivery
    /// tags, tracked as one range unless auto-acked; answers the first. The client
    /// sees a tag per record and may settle any of them, or a `multiple` up to one
    /// inside the run: the range is cut there (see [`UnackedTags::take`]).
    pub fn track_run(&mut self, queue: &QueueHandle, id: u64, count: u32, no_ack: bool) -> u64 {
        let tag = self.next_tag;
        self.next_tag += u64::from(count);
        if !no_ack {
            self.unacked
                .push_run(tag, queue.clone(), id, u64::from(count));
        }
        tag
    }

    /// The next delivery tag for a delivery that is not a queue's (AMQP direct
    /// reply-to): never tracked.
    pub fn untracked_tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    /// Unacked deliveries outstanding.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Settles delivery `tag` (or every one up to it with `multiple`; tag 0 with
    /// `multiple` = all). The settlement is held until [`flush_settles`]
    /// (coalesced with the others of the same read). An unknown tag is
    /// PRECONDITION_FAILED, as in AMQP.
    ///
    /// [`flush_settles`]: Channel::flush_settles
    pub fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        settlement: Settlement,
    ) -> Result<(), BrokerError> {
        let Some(entries) = self.unacked.take(tag, multiple) else {
            return Err(BrokerError::precondition(format!(
                "unknown delivery tag {tag}"
            )));
        };
        if let Some(held) = &mut self.tx {
            held.push((settlement, entries));
            return Ok(());
        }
        self.hold(settlement, entries);
        Ok(())
    }

    /// Queues settlements for the next flush, coalesced per queue and kind.
    fn hold(&mut self, settlement: Settlement, entries: Vec<Unacked>) {
        for (queue, ids) in by_queue(entries) {
            match self.pending_settles.last_mut() {
                Some((q, s, pending)) if q.same(&queue) && *s == settlement => pending.extend(ids),
                _ => self.pending_settles.push((queue, settlement, ids)),
            }
        }
    }

    /// Starts transactions (AMQP `tx.select`): settlements wait for the commit.
    pub fn select_tx(&mut self) {
        if self.tx.is_none() {
            self.tx = Some(Vec::new());
        }
    }

    /// True once transactions are on.
    pub fn transactional(&self) -> bool {
        self.tx.is_some()
    }

    /// Commits the transaction's settlements (sent with the next flush); the channel
    /// stays transactional.
    pub fn commit_settles(&mut self) {
        let held = self.tx.replace(Vec::new()).unwrap_or_default();
        for (settlement, entries) in held {
            self.hold(settlement, entries);
        }
    }

    /// Rolls the transaction's settlements back: those deliveries are unacked again.
    pub fn rollback_settles(&mut self) {
        let held = self.tx.replace(Vec::new()).unwrap_or_default();
        for (_, entries) in held {
            self.unacked.restore(entries);
        }
    }

    /// Requeues every unacked delivery (AMQP `basic.recover`; RabbitMQ requeues for
    /// `requeue=false` too).
    pub fn recover(&mut self) {
        if !self.unacked.is_empty() {
            let _ = self.settle(0, true, Settlement::Requeue);
        }
        self.flush_settles();
    }

    /// Hands the held settlements to their queues, one message per queue and kind: a
    /// consumer acking each delivery of a read frees its credit in one step, and the
    /// queue refills it with one batch rather than one message at a time. Called before
    /// a publish batch is sent and before any request, so settlements take effect
    /// before whatever the client sent after them.
    pub fn flush_settles(&mut self) {
        for (queue, settlement, QueueIds { ids, runs }) in self.pending_settles.drain(..) {
            if !ids.is_empty() {
                queue.settle(self.owner, ids, settlement);
            }
            if !runs.is_empty() {
                queue.settle_runs(self.owner, runs, settlement);
            }
        }
    }

    /// Decides what to do with a `Deliver` for consumer tag `msg.consumer_tag`.
    pub fn accept_delivery(&mut self, msg: Deliver) -> (DeliveryAction, Option<Deliver>) {
        if !self.cancelling.is_empty() && !self.consumers.contains_key(&*msg.consumer_tag) {
            if let Some(no_ack) = self.cancelling_no_ack(&msg.consumer_tag) {
                return (DeliveryAction::Write { no_ack }, Some(msg));
            }
        }
        match self.consumers.get_mut(&*msg.consumer_tag) {
            Some(c) if c.queue.is_none() => {
                c.early.push(msg);
                (DeliveryAction::Held, None)
            }
            Some(c) => (DeliveryAction::Write { no_ack: c.no_ack }, Some(msg)),
            None => {
                let auto_acked = self
                    .recently_cancelled
                    .iter()
                    .any(|(t, no_ack)| **t == *msg.consumer_tag && *no_ack);
                if auto_acked {
                    // Auto-acked ones already left the queue: they are the client's.
                    return (DeliveryAction::Write { no_ack: true }, Some(msg));
                }
                let (mut ids, mut runs) = (Vec::new(), Vec::new());
                for d in &msg.deliveries {
                    match &d.run {
                        Some(r) => runs.push((d.id, r.count)),
                        None => ids.push(d.id),
                    }
                }
                // Never written: back as unsent (no attempt counted, not marked).
                if !runs.is_empty() {
                    msg.queue.settle_runs(self.owner, runs, Settlement::Unsent);
                }
                if !ids.is_empty() {
                    msg.queue.settle(self.owner, ids, Settlement::Unsent);
                }
                (DeliveryAction::Requeued, None)
            }
        }
    }

    // ------------------------------------------------------------ consumers

    /// Consumers of this channel now (starting ones included).
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// True when `tag` names a consumer of this channel.
    pub fn has_consumer(&self, tag: &str) -> bool {
        self.consumers.contains_key(tag)
    }

    /// Registers consumer `tag` before its consume is sent, so deliveries that beat the
    /// queue's answer are held, not requeued.
    pub fn consumer_starting(&mut self, tag: &str, no_ack: bool) {
        self.consumers.insert(
            tag.to_string(),
            ConsumerEntry {
                queue: None,
                no_ack,
                early: Vec::new(),
            },
        );
    }

    /// The queue took consumer `tag`: answers the deliveries held meanwhile.
    pub fn consumer_started(&mut self, tag: &str, queue: QueueHandle) -> Vec<Deliver> {
        self.touch(&queue);
        match self.consumers.get_mut(tag) {
            Some(c) => {
                c.queue = Some(queue);
                std::mem::take(&mut c.early)
            }
            None => Vec::new(),
        }
    }

    /// The consume failed: forget the consumer.
    pub fn consumer_failed(&mut self, tag: &str) {
        self.consumers.remove(tag);
    }

    /// Removes consumer `tag` (cancelled by the client or the broker); its queue, if it
    /// had one. Deliveries still on their way are handled by [`accept_delivery`].
    ///
    /// [`accept_delivery`]: Channel::accept_delivery
    pub fn remove_consumer(&mut self, tag: &str) -> Option<ConsumerEntry> {
        let c = self.consumers.remove(tag)?;
        if self.recently_cancelled.len() == RECENTLY_CANCELLED {
            self.recently_cancelled.pop_front();
        }
        self.recently_cancelled
            .push_back((tag.to_string(), c.no_ack));
        Some(c)
    }

    /// Consumer tags of this channel.
    pub fn consumer_tags(&self) -> impl Iterator<Item = &String> {
        self.consumers.keys()
    }

    /// Consumers with their queue (for applying a new prefetch).
    pub fn consumers(&self) -> impl Iterator<Item = (&String, &ConsumerEntry)> {
        self.consumers.iter()
    }

    /// Remembers a queue this channel consumed or got from, for [`release`].
    ///
    /// [`release`]: Channel::release
    pub fn touch(&mut self, q: &QueueHandle) {
        if !self.touched.iter().any(|t| t.same(q)) {
            self.touched.push(q.clone());
        }
    }

    /// The prefetch new consumers get.
    pub fn prefetch(&self) -> u32 {
        self.prefetch
    }

    /// Sets the prefetch of consumers started from now on *and* of the ones this
    /// channel already has (each of their queues is told, in order with this channel's
    /// settlements). AMQP `basic.qos`: RabbitMQ's per-consumer reading for new
    /// consumers, and the spec's "whole channel" for the existing ones, which kombu
    /// relies on when Celery raises the prefetch while it holds ETA tasks.
    pub fn set_prefetch(&mut self, prefetch: u32) {
        self.prefetch = prefetch;
        let mut told: Vec<&QueueHandle> = Vec::new();
        for q in self.consumers.values().filter_map(|c| c.queue.as_ref()) {
            if !told.iter().any(|t| t.same(q)) {
                q.set_prefetch(self.owner, prefetch);
                told.push(q);
            }
        }
    }

    // ------------------------------------------------------------ close

    /// Releases everything: settlements read before the close count, then every queue
    /// this channel touched drops its consumers and requeues its unacked deliveries.
    /// Answers the consumer tags it had (for the connection's tag → channel map).
    pub fn release(&mut self) -> Vec<String> {
        self.flush_settles();
        for q in self.touched.drain(..) {
            q.release(self.owner);
        }
        self.unacked.drain();
        let cancelling = self.cancelling.drain(..).map(|(t, _)| t);
        self.consumers
            .drain()
            .map(|(t, _)| t)
            .chain(cancelling)
            .collect()
    }

    /// Closes a channel that is all of its connection (the native connection, an
    /// `embed::Session`): [`release`](Channel::release), then the registry deletes the
    /// exclusive queues of its owner. (An AMQP connection releases each channel and
    /// sends this for its own owner, which its channels' owners are not.)
    pub fn close_connection(&mut self, registry: &Addr<Registry>) {
        self.release();
        registry.do_send(OwnerGone(self.owner));
    }
}

#[cfg(test)]
mod tests;
