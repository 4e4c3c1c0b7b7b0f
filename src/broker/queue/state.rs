//! The pure bookkeeping of one queue: ready messages (by priority), delayed messages,
//! unacked deliveries by owner, consumers with their credit, and every deadline (TTL,
//! delay, consumer timeout). No actix and no clock here: time comes in as [`Millis`]
//! arguments, so every transition is unit-tested directly; the queue actor wraps it
//! and arms one timer for [`QueueState::next_deadline`].
//!
//! Ordering rule (RabbitMQ's): messages carry increasing sequence numbers; a requeued
//! message goes back to its place among the ready ones, so it lands as near the head as
//! it was. Each delivery gets a fresh id (what settlements name), so a settlement of a
//! delivery that timed out (`x-consumer-timeout`) and went to someone else since can
//! never settle the new delivery: its id is simply unknown.
//!
//! Messages leave the queue for good on ack, reject / nack without requeue, expiry,
//! length limits and the delivery limit; when the queue has a dead-letter exchange the
//! last four are collected (see [`QueueState::take_dead`]) for the actor to republish.
//!
//! The impl is split by concern: this file (publish, dispatch, settle), `deadlines`
//! (delays, TTL, consumer timeouts, drop-head), `paging` (the backlog behind the head)
//! and `durable_side` (what the durable side needs: departures, recovery).

use super::backlog::Backlog;
use super::consumers::{ConsumerSlot, Consumers, NewConsumer};
use super::dead_letter::Reason;
use super::dedup::DedupWindow;
use super::ready::{Ready, ReadyStore};
use super::timers::{DeadlineHeap, DelayQueue, Millis, NEVER};
use crate::broker::messages::{Delivery, MessageCounts, OwnerId, Settlement};
use crate::broker::queue_args::{message_delay, message_ttl, Overflow, QueueConfig};
use crate::message::Message;
use std::collections::HashMap;
use std::sync::Arc;

mod deadlines;
mod durable_side;
mod paging;

/// A delivered message not yet settled.
#[derive(Debug)]
struct Unacked {
    /// Its place in the queue, should it come back.
    seq: u64,
    /// Who may settle it.
    owner: OwnerId,
    /// The consumer it went to (None for a `get`), to return its prefetch credit.
    consumer: Option<u64>,
    message: Arc<Message>,
    delivery_count: u32,
    /// Its TTL deadline (applies again if it is requeued).
    expires: Millis,
    /// When it goes back to the queue unless settled (`x-consumer-timeout`).
    timeout_at: Millis,
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Ready for delivery.
    Ready,
    /// Waiting for its delay to pass.
    Delayed,
    /// Its `message_id` was seen within the dedup window: accepted, not enqueued.
    Duplicate,
    /// Refused: the queue is full and its overflow is reject-publish(-dlx).
    Refused,
}

/// A message that left the queue and is to be dead-lettered.
#[derive(Debug)]
pub struct Dead {
    /// The message as it was in the queue.
    pub message: Arc<Message>,
    /// Why.
    pub reason: Reason,
}

/// The state of one queue.
#[derive(Debug)]
pub struct QueueState<C> {
    /// The queue's settings.
    config: QueueConfig,
    /// Ready messages: the head, the messages consumers can get.
    ready: ReadyStore,
    /// Ready messages behind the head of a durable queue, mostly paged out to the
    /// store (see [`super::backlog`]); empty otherwise.
    backlog: Backlog,
    /// Messages waiting for their delay.
    delayed: DelayQueue,
    /// Delivered, unsettled messages by delivery id.
    unacked: HashMap<u64, Unacked>,
    /// Bytes of memory the unacked messages are accounted for.
    unacked_bytes: usize,
    /// Attached consumers.
    consumers: Consumers<C>,
    /// TTL deadlines of ready messages: (seq, priority level).
    expiry: DeadlineHeap<(u64, u8)>,
    /// Consumer-timeout deadlines of unacked deliveries, by delivery id.
    timeouts: DeadlineHeap<u64>,
    /// Message ids seen lately (`x-dedup-window`).
    dedup: Option<DedupWindow>,
    /// Next message sequence number.
    next_seq: u64,
    /// Next delivery id.
    next_delivery: u64,
    /// Messages to dead-letter, until the actor takes them.
    dead: Vec<Dead>,
    /// Messages that left the queue for good, until the durable side takes them
    /// (tracked for durable queues only: see [`QueueState::track_gone`]).
    gone: Option<Vec<Arc<Message>>>,
    /// What the queue did so far (read by `GetStats`, for rates).
    counts: MessageCounts,
}

impl<C> Default for QueueState<C> {
    fn default() -> Self {
        Self::new(QueueConfig::default())
    }
}

impl<C> QueueState<C> {
    /// An empty queue with `config`.
    pub fn new(config: QueueConfig) -> Self {
        QueueState {
            ready: ReadyStore::new(config.max_priority),
            backlog: Backlog::default(),
            delayed: DelayQueue::default(),
            unacked: HashMap::new(),
            unacked_bytes: 0,
            consumers: Consumers::new(config.single_active_consumer),
            expiry: DeadlineHeap::default(),
            timeouts: DeadlineHeap::default(),
            dedup: config.dedup_window.map(DedupWindow::new),
            next_seq: 1,
            next_delivery: 1,
            dead: Vec::new(),
            gone: None,
            counts: MessageCounts::default(),
            config,
        }
    }

    /// The single active consumer's id, when the queue has one.
    pub fn active_consumer(&self) -> Option<u64> {
        self.consumers.active()
    }

    /// What the queue did since it started.
    pub fn counts(&self) -> MessageCounts {
        self.counts
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Messages ready for delivery.
    pub fn ready_len(&self) -> usize {
        self.ready.len() + self.backlog.len()
    }

    /// Delivered, unsettled messages.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Messages waiting for their delay.
    pub fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    /// Bytes of memory held (bodies, properties and headers: see
    /// [`Message::accounted_size`]): ready, delayed and unacked.
    pub fn bytes(&self) -> usize {
        self.ready.bytes() + self.backlog.ram_bytes() + self.delayed.bytes() + self.unacked_bytes
    }

    /// The attached consumers, highest priority first.
    pub fn consumers(&self) -> &[ConsumerSlot<C>] {
        self.consumers.slots()
    }

    /// The consumer at `index` (as answered by `dispatch`).
    pub fn consumer_at(&self, index: usize) -> &ConsumerSlot<C> {
        &self.consumers.slots()[index]
    }

    /// True once a consumer has ever attached (for auto-delete).
    pub fn had_consumer(&self) -> bool {
        self.consumers.had_consumer()
    }

    /// Takes the messages waiting to be dead-lettered.
    pub fn take_dead(&mut self) -> Vec<Dead> {
        std::mem::take(&mut self.dead)
    }

    /// A message leaves the queue for `reason`: kept for dead-lettering if configured.
    fn kill(&mut self, message: Arc<Message>, reason: Reason) {
        if let Some(gone) = &mut self.gone {
            gone.push(message.clone());
        }
        if self.config.dead_letter_exchange.is_some() {
            self.dead.push(Dead { message, reason });
        }
    }

    fn ttl_deadline(&self, m: &Message, from: Millis) -> Millis {
        let ttl = match (self.config.message_ttl, message_ttl(m)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ttl.map_or(NEVER, |t| from.saturating_add(t))
    }

    /// At (or over) a length limit, counting delayed messages too (reject-publish).
    fn is_full(&self) -> bool {
        let len = (self.ready_len() + self.delayed.len()) as u64;
        let bytes = (self.ready_bytes() + self.delayed.body_bytes()) as u64;
        self.config.max_length.is_some_and(|m| len >= m)
            || self.config.max_length_bytes.is_some_and(|m| bytes >= m)
    }

    /// Enqueues a published message at `now`.
    pub fn push(&mut self, message: Arc<Message>, now: Millis) -> Pushed {
        let dedup_id = match &self.dedup {
            Some(_) => message.properties.message_id.clone(),
            None => None,
        };
        if let (Some(w), Some(id)) = (&mut self.dedup, &dedup_id) {
            if w.is_duplicate(id, now) {
                return Pushed::Duplicate;
            }
        }
        if self.config.overflow != Overflow::DropHead && self.is_full() {
            if self.config.overflow == Overflow::RejectPublishDlx {
                self.kill(message, Reason::MaxLen);
            }
            return Pushed::Refused;
        }
        if let (Some(w), Some(id)) = (&mut self.dedup, &dedup_id) {
            w.record(id, now);
        }
        self.counts.publish += 1;
        let delay = message_delay(&message).unwrap_or(self.config.delivery_delay);
        if delay > 0 {
            self.delayed.push(now.saturating_add(delay), message);
            return Pushed::Delayed;
        }
        self.push_ready(message, now);
        Pushed::Ready
    }

    /// Appends a message at the tail; its TTL counts from `since`.
    fn push_ready(&mut self, message: Arc<Message>, since: Millis) {
        let expires = self.ttl_deadline(&message, since);
        self.push_tail(message, expires, 0);
    }

    /// Appends a message delivered `deliveries` times before (0 but for a recovered
    /// one) at the tail: to the head, or behind it when the backlog takes it.
    fn push_tail(&mut self, message: Arc<Message>, expires: Millis, deliveries: u32) {
        if self.backlog.takes(self.ready.len()) {
            // A persistent message of a durable queue is paged out to the store
            // instead of being packed.
            // A quorum queue stores every message.
            let packable =
                self.gone.is_none() || !(self.config.quorum || message.properties.is_persistent());
            self.backlog.push(message, expires, deliveries, packable);
        } else {
            self.push_head(message, expires, deliveries);
        }
    }

    /// Appends a message delivered `deliveries` times before to the head, where
    /// consumers get it.
    fn push_head(&mut self, message: Arc<Message>, expires: Millis, deliveries: u32) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let level = self.ready.level_of(&message);
        self.ready.push_back(Ready {
            seq,
            message,
            redelivered: deliveries > 0,
            delivery_count: deliveries,
            expires,
        });
        if expires != NEVER {
            self.track_expiry(expires, seq, level);
        }
    }

    fn track_expiry(&mut self, at: Millis, seq: u64, level: u8) {
        self.expiry.push(at, (seq, level));
        if self.expiry.needs_compaction(self.ready.len()) {
            self.expiry.rebuild(self.ready.deadlines());
        }
    }

    /// Attaches a consumer; answers its id.
    pub fn add_consumer(&mut self, c: NewConsumer<C>) -> u64 {
        self.consumers.add(c)
    }

    /// The consumer with `tag`, if any.
    pub fn consumer_by_tag(&self, tag: &str) -> Option<&ConsumerSlot<C>> {
        self.consumers.slots().iter().find(|c| &*c.tag == tag)
    }

    /// Detaches a consumer by id; its unacked deliveries stay with its owner.
    pub fn remove_consumer(&mut self, id: u64) -> Option<ConsumerSlot<C>> {
        let slot = self.consumers.remove(id)?;
        // Unacked deliveries of a cancelled consumer no longer count against any credit.
        for u in self.unacked.values_mut() {
            if u.consumer == Some(id) {
                u.consumer = None;
            }
        }
        Some(slot)
    }

    /// Sets the prefetch of every consumer of `owner` (a later `basic.qos` on an AMQP
    /// channel reaches the consumers it already has).
    pub fn set_prefetch(&mut self, owner: OwnerId, prefetch: u32) {
        let ids: Vec<u64> = self
            .consumers
            .slots()
            .iter()
            .filter(|c| c.owner == owner)
            .map(|c| c.id)
            .collect();
        for id in ids {
            if let Some(c) = self.consumers.get_mut(id) {
                c.prefetch = prefetch;
            }
        }
    }

    /// Returns transport credit to a consumer.
    pub fn return_credit(&mut self, consumer: u64, amount: u32) {
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.in_transit = c.in_transit.saturating_sub(amount);
        }
    }

    /// The next ready message that has not expired by `now` (expired ones met on the
    /// way leave the queue).
    fn pop_live(&mut self, now: Millis) -> Option<Ready> {
        while let Some(r) = self.ready.pop_front() {
            if r.expires < now {
                self.kill(r.message, Reason::Expired);
                continue;
            }
            return Some(r);
        }
        None
    }

    /// Records a delivery of `r` and answers it.
    fn deliver(
        &mut self,
        r: Ready,
        owner: OwnerId,
        consumer: Option<u64>,
        auto_ack: bool,
        now: Millis,
    ) -> Delivery {
        let id = self.next_delivery;
        self.next_delivery += 1;
        let delivery_count = r.delivery_count.saturating_add(1);
        let c = &mut self.counts;
        match (consumer.is_some(), auto_ack) {
            (true, false) => c.deliver += 1,
            (true, true) => c.deliver_no_ack += 1,
            (false, false) => c.get += 1,
            (false, true) => c.get_no_ack += 1,
        }
        if r.redelivered {
            c.redeliver += 1;
        }
        if !auto_ack {
            let timeout_at = self
                .config
                .consumer_timeout
                .map_or(NEVER, |t| now.saturating_add(t));
            self.unacked_bytes += r.message.accounted_size();
            self.unacked.insert(
                id,
                Unacked {
                    seq: r.seq,
                    owner,
                    consumer,
                    message: r.message.clone(),
                    delivery_count,
                    expires: r.expires,
                    timeout_at,
                },
            );
            if timeout_at != NEVER {
                // After the insert: a rebuild must see this delivery too.
                self.timeouts.push(timeout_at, id);
                if self.timeouts.needs_compaction(self.unacked.len()) {
                    self.timeouts.rebuild(
                        self.unacked
                            .iter()
                            .filter(|(_, u)| u.timeout_at != NEVER)
                            .map(|(id, u)| (u.timeout_at, *id)),
                    );
                }
            }
        }
        Delivery {
            id,
            redelivered: r.redelivered,
            delivery_count,
            message: r.message,
            stored: None,
            run: None,
        }
    }

    /// Hands ready messages to consumers with room, highest priority first and in turn
    /// among equals, at most `limit` in all. Answers, per consumer index, the
    /// deliveries for it (one entry per consumer served).
    pub fn dispatch(&mut self, limit: usize, now: Millis) -> Vec<(usize, Vec<Delivery>)> {
        let mut out: Vec<(usize, Vec<Delivery>)> = Vec::new();
        if self.consumers.is_empty() || self.ready.is_empty() {
            return out;
        }
        let mut picker = self.consumers.picker();
        let mut slot_of: Vec<Option<usize>> = vec![None; self.consumers.slots().len()];
        let mut remaining = limit;
        while remaining > 0 {
            let Some(i) = picker.peek() else {
                break;
            };
            let Some(r) = self.pop_live(now) else {
                break;
            };
            picker.take(i);
            remaining -= 1;
            let c = self.consumers.at_mut(i);
            c.in_transit += 1;
            if !c.auto_ack {
                c.unacked += 1;
            }
            let (owner, id, auto_ack) = (c.owner, c.id, c.auto_ack);
            let d = self.deliver(r, owner, Some(id), auto_ack, now);
            match slot_of[i] {
                Some(s) => out[s].1.push(d),
                None => {
                    slot_of[i] = Some(out.len());
                    out.push((i, vec![d]));
                }
            }
        }
        self.consumers.finish(picker);
        out
    }

    /// Takes the next message for a `get`; answers it with the count left.
    pub fn get(&mut self, owner: OwnerId, auto_ack: bool, now: Millis) -> Option<(Delivery, u64)> {
        let r = self.pop_live(now)?;
        let d = self.deliver(r, owner, None, auto_ack, now);
        Some((d, self.ready_len() as u64))
    }

    /// Settles deliveries of `owner`. Ids this owner does not hold (already settled,
    /// timed out and requeued, or never delivered) are skipped and answered.
    #[must_use = "unknown ids are worth a log line"]
    pub fn settle(
        &mut self,
        owner: OwnerId,
        ids: &[u64],
        settlement: Settlement,
        now: Millis,
    ) -> Vec<u64> {
        let mut unknown = Vec::new();
        for &id in ids {
            match self.unacked.get(&id) {
                Some(u) if u.owner == owner => {
                    if let Some(u) = self.unacked.remove(&id) {
                        self.finish(u, settlement, now);
                    }
                }
                _ => unknown.push(id),
            }
        }
        unknown
    }

    /// Requeues every unacked delivery of `owner` and drops its consumers; answers the
    /// consumers removed.
    pub fn release(&mut self, owner: OwnerId, now: Millis) -> Vec<ConsumerSlot<C>> {
        self.requeue_where(now, |u| u.owner == owner);
        let ids: Vec<u64> = self
            .consumers
            .slots()
            .iter()
            .filter(|c| c.owner == owner)
            .map(|c| c.id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.remove_consumer(id))
            .collect()
    }

    /// Requeues every unacked delivery that went to consumer `id` and detaches it (its
    /// recipient is gone).
    pub fn drop_consumer(&mut self, id: u64, now: Millis) -> Option<ConsumerSlot<C>> {
        self.requeue_where(now, |u| u.consumer == Some(id));
        self.remove_consumer(id)
    }

    fn requeue_where(&mut self, now: Millis, pred: impl Fn(&Unacked) -> bool) {
        let mut ids: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, u)| pred(u))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(u) = self.unacked.remove(&id) {
                self.finish(u, Settlement::Requeue, now);
            }
        }
    }

    /// Removes every ready and delayed message; answers how many.
    pub fn purge(&mut self) -> u64 {
        let n = self.ready.clear() + self.backlog.clear() + self.delayed.clear();
        self.expiry.clear();
        n as u64
    }

    /// Settles one unacked entry (already removed from the map).
    fn finish(&mut self, u: Unacked, settlement: Settlement, now: Millis) {
        self.unacked_bytes -= u.message.accounted_size();
        if let Some(c) = u.consumer.and_then(|id| self.consumers.get_mut(id)) {
            c.unacked = c.unacked.saturating_sub(1);
        }
        match settlement {
            Settlement::Ack => {
                self.counts.ack += 1;
                if let Some(gone) = &mut self.gone {
                    gone.push(u.message);
                }
            }
            Settlement::Discard => self.kill(u.message, Reason::Rejected),
            // Never written: back as it was before this delivery.
            Settlement::Unsent => {
                let delivery_count = u.delivery_count.saturating_sub(1);
                let level = self.ready.level_of(&u.message);
                let (seq, expires) = (u.seq, u.expires);
                let redelivered = delivery_count > 0;
                let message = u.message;
                self.ready.insert(Ready {
                    seq,
                    message,
                    redelivered,
                    delivery_count,
                    expires,
                });
                if expires != NEVER {
                    self.track_expiry(expires, seq, level);
                }
            }
            Settlement::Requeue => {
                if self
                    .config
                    .delivery_limit
                    .is_some_and(|n| u64::from(u.delivery_count) > n)
                {
                    self.kill(u.message, Reason::DeliveryLimit);
                } else if u.expires < now {
                    self.kill(u.message, Reason::Expired);
                } else {
                    let level = self.ready.level_of(&u.message);
                    self.ready.insert(Ready {
                        seq: u.seq,
                        message: u.message,
                        redelivered: true,
                        delivery_count: u.delivery_count,
                        expires: u.expires,
                    });
                    if u.expires != NEVER {
                        self.track_expiry(u.expires, u.seq, level);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "state_tests/mod.rs"]
mod tests;
