//! Stream queues (`x-queue-type = "stream"`): an append-only log read without removing,
//! each consumer at its own offset. See docs/STREAMS.md.
//!
//! A stream runs inside the ordinary queue actor (same [`QueueHandle`], so exchanges,
//! bindings and every front end reach it unchanged): the actor hands publish, consume,
//! settle and credit to a [`StreamState`] when it has one. [`StreamState`] is the pure
//! bookkeeping (consumers, their offsets and credit, named consumers' stored offsets,
//! retention) over a [`crate::storage::stream::StreamLog`], tested without
//! actix; [`args`] parses the arguments.
//!
//! [`QueueHandle`]: crate::broker::queue::QueueHandle

pub mod args;
pub mod group;
mod reads;
mod runs;
mod unacked;

pub use reads::Damage;

use crate::broker::messages::{OwnerId, Settlement};
use crate::error::BrokerError;
use crate::storage::stream::reader::{Cursor, ReadRequest};
use crate::storage::stream::span::Span;
use crate::storage::stream::{now_millis, StreamLog};
use crate::storage::{Completer, Completion};
use args::{StartAt, StreamConfig};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// What the actor gives a new stream: its log (opened and recovered) and settings.
pub struct StreamInit {
    /// The log.
    pub log: StreamLog,
    /// Retention and segment size.
    pub config: StreamConfig,
    /// The partition index of a super stream's partition (queue argument
    /// `x-stream-partition-order`): picks the active member of each consumer group.
    pub partition: Option<u32>,
}

/// A consumer's options, as the stream needs them.
pub struct NewStreamConsumer<H> {
    /// Its tag.
    pub tag: Arc<str>,
    /// Who consumes.
    pub owner: OwnerId,
    /// How the actor reaches it.
    pub handle: H,
    /// Most unacked deliveries (> 0).
    pub prefetch: u32,
    /// Most deliveries in transit.
    pub window: u32,
    /// Where it starts (`None`: its stored offset if named, else `next`).
    pub start: Option<StartAt>,
    /// `x-stream-consumer-name`.
    pub name: Option<String>,
    /// It takes records read from the files as stored ([`crate::broker::messages::Consume::accepts_stored`]).
    pub accepts_stored: bool,
    /// It takes runs of at most this many bytes of records (0: none;
    /// [`crate::broker::messages::Consume::run_bytes`]).
    pub run_bytes: usize,
}

/// One consumer of a stream.
pub struct StreamConsumer<H> {
    /// The stream's id of the consumer (for transport credit).
    pub id: u64,
    /// Its tag.
    pub tag: Arc<str>,
    /// Who consumes.
    pub owner: OwnerId,
    /// How the actor reaches it.
    pub handle: H,
    prefetch: u32,
    window: u32,
    in_flight: u32,
    /// Delivery id -> offset, of deliveries not yet settled (a run is one span).
    unacked: unacked::Unacked,
    /// The next offset to deliver.
    next: u64,
    name: Option<String>,
    /// A member of the consumer group `name` (`x-single-active-consumer`).
    single_active: bool,
    /// False for a waiting member of a group: it is given nothing.
    active: bool,
    /// Offsets below this went to the group's previous holder: delivered as redelivered.
    redeliver_below: u64,
    /// Records read from the files, from `next` on (read-ahead within the prefetch), as
    /// ranges of the stream's shared blocks.
    ahead: VecDeque<Span>,
    /// Accounted bytes of `ahead`.
    ahead_bytes: u64,
    /// A read of the files from this offset is in flight for this consumer.
    reading: Option<u64>,
    /// A read failed: no other until the next tick.
    read_failed: bool,
    /// Where the last read stopped, to go on without the index.
    cursor: Option<Cursor>,
    /// A timestamp start not reached yet: older records are skipped.
    min_timestamp: Option<i64>,
    /// Takes records as stored (else its reads decode them).
    accepts_stored: bool,
    /// Takes runs of at most this many bytes of records, as one delivery each (0:
    /// a delivery per record).
    run_bytes: usize,
}

/// A stream's consumers and offsets over its log.
pub struct StreamState<H> {
    log: StreamLog,
    config: StreamConfig,
    consumers: Vec<StreamConsumer<H>>,
    next_consumer: u64,
    next_delivery: u64,
    /// Named consumers' stored offsets: the next offset each is to read.
    offsets: BTreeMap<String, u64>,
    offsets_dirty: bool,
    /// Deliveries of consumers cancelled while unacked: id -> (owner, name, offset),
    /// so a late ack still advances a named consumer's offset.
    orphans: HashMap<u64, (OwnerId, Option<String>, u64)>,
    /// Consumer groups (single active consumer per group).
    groups: group::Groups,
    /// Reads of the files to run off the actor: (consumer id, request).
    reads: Vec<(u64, ReadRequest)>,
}

impl<H> StreamState<H> {
    /// A stream over `init.log`, with the named consumers' offsets the log recovered.
    pub fn new(init: StreamInit) -> Self {
        let offsets = init.log.recovered_offsets().clone();
        StreamState {
            log: init.log,
            config: init.config,
            consumers: Vec::new(),
            next_consumer: 0,
            next_delivery: 0,
            offsets,
            offsets_dirty: false,
            orphans: HashMap::new(),
            groups: group::Groups::new(init.partition),
            reads: Vec::new(),
        }
    }

    /// The log.
    pub fn log(&self) -> &StreamLog {
        &self.log
    }

    /// The log, to close or delete it.
    pub fn log_mut(&mut self) -> &mut StreamLog {
        &mut self.log
    }

    /// The consumers.
    pub fn consumers(&self) -> &[StreamConsumer<H>] {
        &self.consumers
    }

    /// Deliveries not yet settled, across consumers.
    pub fn unacked_len(&self) -> usize {
        self.consumers
            .iter()
            .map(|c| c.unacked.len())
            .sum::<usize>()
            + self.orphans.len()
    }

    /// Appends a chunk; the completion resolves once it is on disk.
    pub fn append(&mut self, messages: Vec<Arc<crate::message::Message>>) -> Completion {
        let c = self.log.append(messages);
        self.enforce_retention(now_millis());
        c
    }

    /// Appends a chunk; `done` is resolved once it is on disk, on the writer thread
    /// ([`StreamLog::append_then`]).
    pub fn append_then(&mut self, messages: Vec<Arc<crate::message::Message>>, done: Completer) {
        self.log.append_then(messages, done);
        self.enforce_retention(now_millis());
    }

    /// Removes segments outside retention; consumers behind the new first offset move
    /// on to it.
    pub fn enforce_retention(&mut self, now: i64) {
        if self
            .log
            .trim(self.config.max_bytes, self.config.max_age_ms, now)
            > 0
        {
            let first = self.log.first_offset();
            for c in &mut self.consumers {
                c.skip_to(first);
            }
        }
    }

    /// The offset a start resolves to, and the timestamp older records are skipped
    /// by (a timestamp start between two index entries).
    fn resolve(&self, start: StartAt) -> (u64, Option<i64>) {
        let first = self.log.first_offset();
        let next = self.log.next_offset();
        match start {
            StartAt::First => (first, None),
            StartAt::Last => (self.log.last_chunk(), None),
            StartAt::Next => (next, None),
            StartAt::Offset(o) => (o.clamp(first, next), None),
            StartAt::Timestamp(t) => match self.log.offset_at(t) {
                (o, true) => (o, Some(t)),
                (o, false) => (o, None),
            },
        }
    }

    /// Attaches a consumer; answers its id and the offset it starts at.
    pub fn add_consumer(&mut self, c: NewStreamConsumer<H>) -> Result<(u64, u64), BrokerError> {
        let (start, min_timestamp) = match (c.start, &c.name) {
            (Some(s), _) => self.resolve(s),
            (None, Some(name)) => match self.offsets.get(name) {
                Some(o) => (
                    (*o).clamp(self.log.first_offset(), self.log.next_offset()),
                    None,
                ),
                None => self.resolve(StartAt::Next),
            },
            (None, None) => self.resolve(StartAt::Next),
        };
        if let Some(name) = c.name.as_ref().filter(|n| !self.offsets.contains_key(*n)) {
            // A name seen for the first time stores where it starts, so a crash before
            // its first ack is stored resumes it there, not at `next` past what it
            // never read (at least once).
            self.offsets.insert(name.clone(), start);
            self.offsets_dirty = true;
        }
        self.next_consumer += 1;
        let id = self.next_consumer;
        self.consumers.push(StreamConsumer {
            id,
            tag: c.tag,
            owner: c.owner,
            handle: c.handle,
            prefetch: c.prefetch,
            window: c.window.max(1),
            in_flight: 0,
            unacked: unacked::Unacked::default(),
            next: start,
            name: c.name,
            single_active: false,
            active: true,
            redeliver_below: 0,
            ahead: VecDeque::new(),
            ahead_bytes: 0,
            reading: None,
            read_failed: false,
            cursor: None,
            min_timestamp,
            accepts_stored: c.accepts_stored,
            run_bytes: if c.accepts_stored { c.run_bytes } else { 0 },
        });
        Ok((id, start))
    }

    /// The consumer at `idx` (as answered by [`Self::dispatch`]).
    pub fn consumer_at(&self, idx: usize) -> &StreamConsumer<H> {
        &self.consumers[idx]
    }

    /// Settles deliveries of `owner`: every settlement returns prefetch credit; an ack
    /// of a named consumer's delivery advances its stored offset. Nothing is removed
    /// (nack and reject, with requeue or not, are credit only). Answers the ids this
    /// owner does not hold.
    pub fn settle(&mut self, owner: OwnerId, ids: &[u64], settlement: Settlement) -> Vec<u64> {
        let mut unknown = Vec::new();
        for id in ids {
            if self.settle_range(owner, *id, 1, settlement) > 0 {
                unknown.push(*id);
            }
        }
        self.commit_groups(owner);
        unknown
    }

    /// Settles runs of deliveries of `owner`, each `(first id, count)` (a run, or the
    /// part of one a client settled), as [`Self::settle`] settles single ones: by range,
    /// not per record. Answers how many of the ids this owner does not hold.
    pub fn settle_runs(
        &mut self,
        owner: OwnerId,
        runs: &[(u64, u32)],
        settlement: Settlement,
    ) -> u64 {
        let mut unknown = 0;
        for (id, count) in runs {
            unknown += self.settle_range(owner, *id, u64::from(*count), settlement);
        }
        self.commit_groups(owner);
        unknown
    }

    /// Settles deliveries `id .. id + count` of `owner`; answers how many it does not
    /// hold.
    fn settle_range(&mut self, owner: OwnerId, id: u64, count: u64, settlement: Settlement) -> u64 {
        let ack = settlement == Settlement::Ack;
        let mut left = count;
        for c in self.consumers.iter_mut().filter(|c| c.owner == owner) {
            let removed = c.unacked.remove_run(id, count);
            if let (true, Some(last)) = (ack, removed.last_offset) {
                note_acked(&mut self.offsets, &mut self.offsets_dirty, &c.name, last);
            }
            left -= removed.count;
            if left == 0 {
                return 0;
            }
        }
        if self.orphans.is_empty() {
            return left;
        }
        // Deliveries of consumers cancelled since (rare): one by one.
        for k in id..id.saturating_add(count) {
            match self.orphans.get(&k) {
                Some((o, ..)) if *o == owner => {}
                _ => continue,
            }
            if let Some((_, name, offset)) = self.orphans.remove(&k) {
                left -= 1;
                if ack {
                    note_acked(&mut self.offsets, &mut self.offsets_dirty, &name, offset);
                }
            }
        }
        left
    }

    /// Returns transport credit to consumer `id`.
    pub fn return_credit(&mut self, id: u64, amount: u32) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == id) {
            c.in_flight = c.in_flight.saturating_sub(amount);
        }
    }

    /// Sets the prefetch of every consumer of `owner` (0 is kept as 1: a stream
    /// consumer always has a limit).
    pub fn set_prefetch(&mut self, owner: OwnerId, prefetch: u32) {
        for c in self.consumers.iter_mut().filter(|c| c.owner == owner) {
            c.prefetch = prefetch.max(1);
        }
    }

    /// Detaches consumer `tag` of `owner`; its unacked deliveries can still be acked.
    /// Answers whether it was attached.
    pub fn cancel(&mut self, owner: OwnerId, tag: &str) -> bool {
        let Some(i) = self
            .consumers
            .iter()
            .position(|c| c.owner == owner && *c.tag == *tag)
        else {
            return false;
        };
        let group = self.before_leave(i);
        let c = self.consumers.remove(i);
        for (id, o) in c.unacked {
            self.orphans.insert(id, (owner, c.name.clone(), o));
        }
        self.rebalance(group);
        true
    }

    /// Drops consumer `id` (its recipient is gone) with its unacked deliveries.
    pub fn drop_consumer(&mut self, id: u64) -> Option<StreamConsumer<H>> {
        let i = self.consumers.iter().position(|c| c.id == id)?;
        let group = self.before_leave(i);
        let c = self.consumers.remove(i);
        self.rebalance(group);
        Some(c)
    }

    /// The owner went: its consumers and unacked deliveries are dropped (nothing to
    /// requeue: a stream keeps every record). Answers how many consumers it had.
    pub fn release(&mut self, owner: OwnerId) -> usize {
        let before = self.consumers.len();
        let groups = self.before_release(owner);
        self.consumers.retain(|c| c.owner != owner);
        for g in groups {
            self.rebalance(Some(g));
        }
        self.orphans.retain(|_, (o, ..)| *o != owner);
        before - self.consumers.len()
    }

    /// Hands the log the named consumers' offsets if they changed since the last call
    /// (the actor calls it on a timer and when a consumer leaves: coalesced writes).
    pub fn flush_offsets(&mut self) {
        if std::mem::take(&mut self.offsets_dirty) {
            self.log.store_offsets(&self.offsets);
        }
    }

    /// The stored offset of the named consumer `name`.
    pub fn stored_offset(&self, name: &str) -> Option<u64> {
        self.offsets.get(name).copied()
    }
}

/// A named consumer acknowledged `offset`: its stored offset moves past it.
fn note_acked(
    offsets: &mut BTreeMap<String, u64>,
    dirty: &mut bool,
    name: &Option<String>,
    offset: u64,
) {
    if let Some(name) = name {
        let e = offsets.entry(name.clone()).or_insert(0);
        if offset + 1 > *e {
            *e = offset + 1;
            *dirty = true;
        }
    }
}

#[cfg(test)]
mod readahead_tests;
#[cfg(test)]
mod tests;

/// Opens the log of stream `spec` in `vhost`: on disk under
/// `data_dir/streams/<vhost>/<name>/` when the broker has storage, in memory otherwise.
pub fn open(
    durability: &crate::broker::durability::Durability,
    vhost: &str,
    spec: &crate::broker::queue::QueueSpec,
) -> Result<StreamInit, BrokerError> {
    use crate::storage::stream::dir_name;
    let config = StreamConfig::from_arguments(&spec.arguments);
    let log = match durability.options() {
        Some(o) => {
            let dir = o
                .data_dir
                .join("streams")
                .join(dir_name(vhost))
                .join(dir_name(&spec.name));
            StreamLog::open(&dir, config.max_segment_bytes).map_err(|e| {
                tracing::error!(vhost, stream = %spec.name, error = %e, "cannot open a stream log");
                BrokerError::new(
                    crate::error::ErrorCode::InternalError,
                    format!("cannot open the log of stream '{}': {e}", spec.name),
                )
            })?
        }
        None => StreamLog::memory(config.max_segment_bytes),
    };
    let partition = group::partition_of_queue(&spec.arguments);
    Ok(StreamInit {
        log,
        config,
        partition,
    })
}
