//! The durable side of one queue: what a durable queue appends to the
//! [`MessageStore`] as its persistent messages come and go. The queue actor owns one
//! [`Durable`] and calls a few hooks; for a transient queue (or a broker without
//! storage) every hook is a no-op, so transient queues never touch the disk, and
//! transient messages (`delivery_mode` other than 2) never do either, even in a durable
//! queue, but for a quorum queue, which stores them all ([`Durable::keeping_all`]).
//!
//! What is appended (see [`crate::storage::Record`]):
//! - a persistent message entering the queue ([`Durable::push`]): `Publish`, with
//!   `sync`; the `Enqueue` answer (and with it the publisher's confirm) waits for the
//!   [`Stored`] completion, the queue itself does not wait: the message is in the queue
//!   (and may be delivered) at once;
//! - a persistent message leaving the queue for good: `Ack`. The queue state reports
//!   every such message (ack, reject / nack without requeue, expiry, length limit,
//!   delivery limit: see [`QueueState::track_gone`]); deliveries that count as acked on
//!   sending (auto-ack consumers and gets) are reported by [`Durable::on_delivered`];
//! - the highest stored id handed out so far: `Delivered`, so that after a restart what
//!   may have been delivered comes back marked redelivered, delivered once;
//! - the delivery count of every redelivery (a requeued message delivered again):
//!   `DeliveryCounts`, so that `delivery_count` (and with it `x-delivery-limit`) goes on
//!   across a restart instead of starting again, as in RabbitMQ's quorum queues. First
//!   deliveries, the usual case, need no record: the watermark counts them;
//! - a purge: `Purge`; the queue deleted: `DeleteQueue`.
//!
//! Everything a handler noted is appended in one batch by [`Durable::commit`], which the
//! actor calls at the end of every handler: `Publish` records first, then the acks and
//! the watermark. The batch is synced when it holds a `Publish` (its confirm waits for
//! the fsync), else only written: acks and watermarks are covered by the next fsync of
//! the log, and in particular by the confirm of any later publish to this queue (the log
//! is written in order), which is what the crash tests rely on.
//!
//! A long queue keeps only its head in memory (`storage.queue_ram_messages`): the
//! persistent messages behind it let go of their bodies once noted for the store
//! ([`Durable::commit`] pages them out) and are read back as the head drains
//! ([`Durable::read`], [`Durable::paged_in`]; see [`super::backlog`]).
//!
//! The store names a message by an id of its own, increasing in publish order, so
//! recovery gives the messages back in their queue order. The queue state names
//! messages by sequence numbers it assigns when a message becomes ready (a delayed
//! message has none yet), so the two are linked by the message itself: a map from the
//! message's allocation (`Arc` pointer, unique while the queue holds it) to its store id.

use super::backlog::ReadRequest;
use super::state::{Pushed, QueueState};
use super::timers::Millis;
use crate::broker::messages::{Delivery, Enqueued};
use crate::error::{BrokerError, ErrorCode};
use crate::message::Message;
use crate::storage::{
    Completion, MessageStore, Pages, QueueId, Record, RecoveredQueue, StorageError,
};
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Hands a queue just started its durable side and what recovery found for it (sent by
/// the registry before anyone else knows the queue).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachStorage {
    /// The durable side.
    pub durable: Durable,
    /// The messages that survived, if the queue existed before the restart.
    pub recovered: Option<RecoveredQueue>,
}

/// The store and this queue's name in it.
struct Target {
    store: Arc<dyn MessageStore>,
    queue: QueueId,
}

/// The durable side of a queue (inert for a transient queue).
#[derive(Default)]
pub struct Durable {
    /// Where to append; `None` for a transient queue.
    target: Option<Target>,
    /// The store id of the next persistent message.
    next_id: u64,
    /// Store ids of the persistent messages the queue holds, by message allocation.
    ids: HashMap<usize, u64>,
    /// Further store ids of an allocation pushed more than once (rare), oldest first.
    more_ids: HashMap<usize, VecDeque<u64>>,
    /// `Publish` records noted since the last commit.
    publishes: Vec<Record>,
    /// Their positions in the `Enqueue` batch (for refusals on a storage error).
    positions: Vec<u32>,
    /// Store ids that left the queue, not yet appended.
    acks: Vec<u64>,
    /// Highest store id delivered so far.
    delivered: u64,
    /// (store id, deliveries so far) of the redeliveries since the last commit.
    counts: Vec<(u64, u32)>,
    /// The highest id appended as `Delivered`.
    delivered_stored: u64,
    /// Completions of `Publish` batches not yet taken by the `Enqueue` answer.
    stored: Option<Stored>,
    /// `storage.queue_ram_messages`: the head the queue keeps in memory.
    ram_messages: usize,
    /// Store transient messages too (a quorum queue: see [`Durable::keeping_all`]).
    all: bool,
}

/// The completion of the `Publish` records of one `Enqueue`: what its answer waits for.
#[must_use = "the publisher's confirm must wait for it"]
pub struct Stored {
    completions: Vec<Completion>,
    /// Positions in the batch of the messages stored.
    positions: Vec<u32>,
    queue: QueueId,
}

impl Stored {
    /// Waits until the messages are stored (fsynced per `storage.fsync`) and answers
    /// `answer`, with the stored messages added to its refusals if they could not be
    /// stored: the publisher gets a nack naming the queue, never a confirm.
    pub async fn settle(self, mut answer: Enqueued) -> Enqueued {
        let mut failed = None;
        for c in self.completions {
            if let Err(e) = c.await {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            tracing::error!(queue = %self.queue, error = %e, "persistent messages could not be stored: publishes refused");
            answer.refused.extend(self.positions);
            answer.refused.sort_unstable();
            answer.refused.dedup();
            answer.reason = Some(store_error(&self.queue, &e));
        }
        answer
    }
}

/// Answers `answer` once `stored` (if any) is settled: see [`Stored::settle`].
pub async fn confirm(stored: Option<Stored>, answer: Enqueued) -> Enqueued {
    match stored {
        Some(s) => s.settle(answer).await,
        None => answer,
    }
}

/// The publisher-facing error for messages that could not be stored: RESOURCE_ERROR on
/// a full disk, INTERNAL_ERROR otherwise, naming the queue and the storage error.
pub fn store_error(queue: &QueueId, e: &StorageError) -> BrokerError {
    let code = if e.is_disk_full() {
        ErrorCode::ResourceError
    } else {
        ErrorCode::InternalError
    };
    BrokerError::new(
        code,
        format!("cannot store persistent messages of {queue}: {e}"),
    )
}

fn is_persistent(m: &Message) -> bool {
    m.properties.is_persistent()
}

/// True when a queue that stores `all` messages or only persistent ones stores `m`.
fn kept(all: bool, m: &Message) -> bool {
    all || is_persistent(m)
}

fn key(m: &Arc<Message>) -> usize {
    Arc::as_ptr(m) as usize
}

impl Durable {
    /// The durable side of queue `queue` in `store`.
    pub fn new(store: Arc<dyn MessageStore>, queue: QueueId) -> Self {
        Durable {
            target: Some(Target { store, queue }),
            next_id: 1,
            ..Default::default()
        }
    }

    /// Keeps at most `n` ready messages of the queue in memory (0 = all): see
    /// `storage.queue_ram_messages`.
    pub fn with_ram_messages(mut self, n: usize) -> Self {
        self.ram_messages = n;
        self
    }

    /// Stores every message, whatever its `delivery_mode`: a quorum queue's confirm
    /// always means "on disk" (RabbitMQ's quorum queues ignore the flag likewise).
    pub fn keeping_all(mut self) -> Self {
        self.all = true;
        self
    }

    /// True for a durable queue of a broker with storage.
    pub fn is_on(&self) -> bool {
        self.target.is_some()
    }

    /// Persistent messages the queue holds, as far as the store knows.
    pub fn stored_len(&self) -> usize {
        self.ids.len() + self.more_ids.values().map(VecDeque::len).sum::<usize>()
    }

    /// Starts tracking `state` (a fresh queue) and refills it with what recovery found:
    /// the surviving messages in their order, each marked redelivered if it may have
    /// been delivered before; ids go on above every id the store has seen.
    pub fn attach<C>(
        &mut self,
        state: &mut QueueState<C>,
        recovered: Option<RecoveredQueue>,
        now: Millis,
    ) {
        if self.target.is_none() {
            return;
        }
        state.track_gone();
        let Some(recovered) = recovered else {
            state.enable_backlog(self.ram_messages);
            return;
        };
        // A store that left bodies on disk needs a backlog to read them into, even if
        // this queue was told to keep everything in memory (an embedder's own store).
        let head = match (self.ram_messages, recovered.paged.is_empty()) {
            (0, false) => recovered.messages.len().max(1024),
            (n, _) => n,
        };
        state.enable_backlog(head);
        for m in recovered.messages {
            self.remember(&m.message, m.id);
            self.next_id = self.next_id.max(m.id.saturating_add(1));
            // A store that predates delivery counts (an embedder's) sets only the flag.
            let deliveries = m.deliveries.max(u32::from(m.redelivered));
            state.push_recovered(m.message, deliveries, now);
        }
        for p in &recovered.paged {
            self.next_id = self.next_id.max(p.id.saturating_add(1));
            let deliveries = p.deliveries.max(u32::from(p.redelivered));
            state.push_recovered_stored(p.id, p.size, deliveries);
        }
        self.next_id = self.next_id.max(recovered.next_id);
        self.page_out(state);
    }

    /// Lets the persistent messages that entered the backlog drop their bodies: they
    /// are (or are being) stored, and are read back by id.
    fn page_out<C>(&mut self, state: &mut QueueState<C>) {
        let all = self.all;
        state.page_out(|m| if kept(all, m) { self.forget(m) } else { None });
    }

    /// The read that brings back the bodies the head needs next, if any.
    pub fn read(&self, request: &ReadRequest) -> Option<Completion<Pages>> {
        let t = self.target.as_ref()?;
        Some(t.store.read(&t.queue, request.ids.clone()))
    }

    /// Takes the answer to a read: the messages read move towards the head; ids the
    /// store could not give back (damaged records, logged by the store) are lost, and
    /// acked so the store lets go of them too.
    pub fn paged_in<C>(&mut self, state: &mut QueueState<C>, epoch: u64, pages: Pages) {
        let read = pages.clone();
        let Some(lost) = state.paged_in(epoch, pages) else {
            return;
        };
        for (id, m) in &read {
            self.remember(m, *id);
        }
        if !lost.is_empty() {
            let t = self.target.as_ref().map(|t| t.queue.clone());
            tracing::error!(queue = ?t, lost = lost.len(), "messages of the backlog could not be read back from the store");
            self.acks.extend(lost);
        }
    }

    fn remember(&mut self, m: &Arc<Message>, id: u64) {
        let k = key(m);
        match self.ids.entry(k) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more_ids.entry(k).or_default().push_back(id)
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
        }
    }

    fn forget(&mut self, m: &Arc<Message>) -> Option<u64> {
        let k = key(m);
        let id = self.ids.remove(&k)?;
        if let Some(more) = self.more_ids.get_mut(&k) {
            if let Some(next) = more.pop_front() {
                self.ids.insert(k, next);
            }
            if more.is_empty() {
                self.more_ids.remove(&k);
            }
        }
        Some(id)
    }

    /// Pushes `message` (at position `pos` of its `Enqueue` batch) into `state`, as
    /// [`QueueState::push`] does, and notes a `Publish` when it is persistent, the queue
    /// durable, and the state kept it (ready or delayed).
    pub fn push<C>(
        &mut self,
        state: &mut QueueState<C>,
        pos: u32,
        message: Arc<Message>,
        now: Millis,
    ) -> Pushed {
        if self.target.is_none() || !kept(self.all, &message) {
            return state.push(message, now);
        }
        let pushed = state.push(message.clone(), now);
        if let (Pushed::Ready | Pushed::Delayed, Some(t)) = (pushed, &self.target) {
            let id = self.next_id;
            self.next_id += 1;
            self.publishes.push(Record::Publish {
                queue: t.queue.clone(),
                id,
                message: message.clone(),
            });
            self.positions.push(pos);
            self.remember(&message, id);
        }
        pushed
    }

    /// Notes deliveries handed out (to a consumer, or by a get): the watermark, the
    /// delivery count of each redelivery (a first delivery is covered by the
    /// watermark, so the usual path notes nothing more), and an ack for each when they
    /// count as acked on sending (`auto_ack`).
    pub fn on_delivered(&mut self, deliveries: &[Delivery], auto_ack: bool) {
        if self.target.is_none() {
            return;
        }
        let all = self.all;
        for d in deliveries.iter().filter(|d| kept(all, &d.message)) {
            let id = if auto_ack {
                self.forget(&d.message)
            } else {
                self.ids.get(&key(&d.message)).copied()
            };
            if let Some(id) = id {
                self.delivered = self.delivered.max(id);
                if auto_ack {
                    self.acks.push(id);
                } else if d.delivery_count > 1 {
                    self.counts.push((id, d.delivery_count));
                }
            }
        }
    }

    /// Appends what the handler noted (see the module docs). Call it at the end of every
    /// handler; the `Enqueue` handler then takes the completion with
    /// [`Durable::take_stored`].
    pub fn commit<C>(&mut self, state: &mut QueueState<C>) {
        if self.target.is_none() {
            return;
        }
        for m in state.take_gone() {
            if kept(self.all, &m) {
                if let Some(id) = self.forget(&m) {
                    self.acks.push(id);
                }
            }
        }
        // The records of the messages that entered the backlog are noted: their
        // bodies may go (the records hold their own reference until written).
        self.page_out(state);
        let sync = !self.publishes.is_empty();
        let mut batch = std::mem::take(&mut self.publishes);
        self.settled_records(&mut batch);
        let Some(t) = &self.target else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        let completion = t.store.append(batch, sync);
        if !sync {
            // Not awaited: a failure fails the store, which raises the disk alarm.
            drop(completion);
            return;
        }
        let positions = std::mem::take(&mut self.positions);
        match &mut self.stored {
            Some(s) => {
                s.completions.push(completion);
                s.positions.extend(positions);
            }
            None => {
                self.stored = Some(Stored {
                    completions: vec![completion],
                    positions,
                    queue: t.queue.clone(),
                })
            }
        }
    }

    /// The completion of the `Publish` records committed since the last call, for the
    /// `Enqueue` answer; `None` when nothing had to be stored.
    pub fn take_stored(&mut self) -> Option<Stored> {
        self.stored.take()
    }

    /// After a purge of `state`: every stored message goes but those `state` still
    /// holds (its unacked deliveries).
    pub fn on_purge<C>(&mut self, state: &mut QueueState<C>) {
        self.commit(state);
        let Some(t) = &self.target else {
            return;
        };
        let mut kept = HashMap::new();
        let mut except = Vec::new();
        for m in state.unacked_messages() {
            if let Some(id) = self.ids.get(&key(m)) {
                kept.insert(key(m), *id);
                except.push(*id);
            }
        }
        self.ids = kept;
        self.more_ids.clear();
        drop(t.store.append(
            vec![Record::Purge {
                queue: t.queue.clone(),
                below: self.next_id,
                except,
            }],
            false,
        ));
    }

    /// The queue is deleted: its stored messages go with it. Later hooks are no-ops.
    pub fn on_delete(&mut self) {
        if let Some(t) = self.target.take() {
            drop(t.store.append(
                vec![Record::DeleteQueue {
                    queue: t.queue.clone(),
                }],
                false,
            ));
        }
        self.publishes.clear();
        self.positions.clear();
        self.acks.clear();
        self.counts.clear();
        self.ids.clear();
        self.more_ids.clear();
    }

    /// Adds the buffered `DeliveryCounts`, `Ack` and `Delivered` records to `batch`
    /// (counts before acks: a count after the ack of its message would linger).
    fn settled_records(&mut self, batch: &mut Vec<Record>) {
        let Some(t) = &self.target else {
            return;
        };
        if !self.counts.is_empty() {
            batch.push(Record::DeliveryCounts {
                queue: t.queue.clone(),
                counts: std::mem::take(&mut self.counts),
            });
        }
        if !self.acks.is_empty() {
            batch.push(Record::Ack {
                queue: t.queue.clone(),
                ids: std::mem::take(&mut self.acks),
            });
        }
        if self.delivered > self.delivered_stored {
            self.delivered_stored = self.delivered;
            batch.push(Record::Delivered {
                queue: t.queue.clone(),
                up_to: self.delivered,
            });
        }
    }
}

#[cfg(test)]
mod tests;
