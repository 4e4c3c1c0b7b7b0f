//! Where a stream consumer's records come from: its read-ahead (records read from the
//! segment files off the actor), the log's tail cache (consumers at the head), or a new
//! read of the files, queued for the actor to run on a blocking thread
//! ([`StreamState::take_reads`], answered with [`StreamState::read_done`]). The actor
//! never touches the files itself.

use super::runs::Gather;
use super::{StreamConsumer, StreamState};
use crate::broker::messages::Delivery;
use crate::message::Message;
use crate::storage::stream::reader::{ReadBatch, ReadError};
use crate::storage::stream::RecordMessage;
use crate::storage::StorageError;
use std::sync::{Arc, OnceLock};

/// The `message` of a delivery that carries its record as stored: one shared empty
/// message, no allocation per delivery.
pub(super) fn empty_message() -> Arc<Message> {
    static EMPTY: OnceLock<Arc<Message>> = OnceLock::new();
    EMPTY
        .get_or_init(|| Arc::new(Message::new("", "", "")))
        .clone()
}

/// Records a consumer's read found damaged on disk ([`StreamState::read_done`]).
#[derive(Debug)]
pub struct Damage {
    /// The first record the consumer wanted that cannot be read.
    pub offset: u64,
    /// Where reading goes on after it (`offset + 1` when only that record is lost);
    /// `None` when nothing later in its segment could be found.
    pub resume: Option<u64>,
    /// What is wrong, and where.
    pub error: StorageError,
}

/// At most this many bytes of bodies per read (the read-ahead of one consumer).
const READ_AHEAD_BYTES: usize = 4 * 1024 * 1024;

impl<H> StreamConsumer<H> {
    /// Moves the consumer on to `first` if it is behind (retention removed its records).
    pub(super) fn skip_to(&mut self, first: u64) {
        if self.next >= first {
            return;
        }
        self.next = first;
        self.ahead.clear();
        self.ahead_bytes = 0;
        self.cursor = None;
    }

    /// Moves the consumer to `offset` (a group member taking over), forgetting what it
    /// read ahead.
    pub(super) fn reset_to(&mut self, offset: u64) {
        self.next = offset;
        self.ahead.clear();
        self.ahead_bytes = 0;
        self.cursor = None;
    }

    fn credit(&self) -> u64 {
        let by_prefetch = self.prefetch.saturating_sub(self.unacked.len() as u32);
        let by_window = self.window.saturating_sub(self.in_flight);
        by_prefetch.min(by_window) as u64
    }
}

impl<H> StreamState<H> {
    /// Hands each consumer with credit the records it has not had, up to `max` records
    /// in all; answers (consumer index, deliveries), a run of records being one
    /// delivery for a consumer of runs ([`Delivery::records`] counts them). Consumers behind the tail cache get a read
    /// of the files queued instead (see [`Self::take_reads`]).
    pub fn dispatch(&mut self, max: usize) -> Vec<(usize, Vec<Delivery>)> {
        self.log.evict();
        let end = self.log.next_offset();
        let first = self.log.first_offset();
        let tail_first = self.log.tail_first();
        let mut out = Vec::new();
        let mut budget = max as u64;
        for (i, c) in self.consumers.iter_mut().enumerate() {
            if budget == 0 {
                break;
            }
            if !c.active {
                continue;
            }
            c.skip_to(first);
            let credit = c.credit().min(budget);
            if credit == 0 || c.next >= end {
                continue;
            }
            let mut batch = Vec::new();
            // A consumer of runs gets adjacent stored records as one delivery.
            let mut gather = (c.run_bytes > 0).then(|| Gather::new(c.run_bytes));
            let mut handed = 0u64;
            while handed < credit {
                let offset = c.next;
                let again = offset < c.redeliver_below;
                let record = if let Some(span) = c.ahead.front_mut() {
                    // The read-ahead: a run is cut out of a span whole; a record goes
                    // alone only to a consumer without runs, or when its frame is larger
                    // than a run may be.
                    if let Some(g) = &mut gather {
                        let mut n = (credit - handed).min(span.len() as u64);
                        if again {
                            n = n.min(c.redeliver_below - offset);
                        }
                        let mut took = g.take_span(span, n as usize, offset, again);
                        if took == 0 {
                            batch.extend(g.finish(&mut self.next_delivery, &mut c.unacked));
                            took = g.take_span(span, n as usize, offset, again);
                        }
                        if took > 0 {
                            c.ahead_bytes -= span.advance(took);
                            if span.is_empty() {
                                c.ahead.pop_front();
                            }
                            c.next += took as u64;
                            handed += took as u64;
                            continue;
                        }
                    }
                    let record = span.record(0).clone();
                    c.ahead_bytes -= span.advance(1);
                    if span.is_empty() {
                        c.ahead.pop_front();
                    }
                    c.next += 1;
                    record
                } else if c.next >= tail_first && c.next < end {
                    // The tail cache: taken (a clone of its handles) only when it goes
                    // as a delivery of its own.
                    let record = self.log.get(c.next).expect("in the tail cache");
                    let skipped = c.min_timestamp.is_some_and(|t| record.timestamp < t);
                    c.next += 1;
                    if skipped {
                        continue;
                    }
                    c.min_timestamp = None;
                    if let Some(g) = &mut gather {
                        if g.take(record, offset, again) {
                            handed += 1;
                            continue;
                        }
                        // It cannot extend the run: the run goes first, then it starts
                        // the next one or (no frame at hand) goes alone.
                        batch.extend(g.finish(&mut self.next_delivery, &mut c.unacked));
                        if g.take(record, offset, again) {
                            handed += 1;
                            continue;
                        }
                    }
                    record.clone()
                } else {
                    break;
                };
                let (message, stored) = match record.message {
                    RecordMessage::Decoded(m) => (m, None),
                    RecordMessage::Stored(s) if c.accepts_stored => (empty_message(), Some(s)),
                    RecordMessage::Stored(s) => match s.message(&mut None) {
                        // Decoded by the consumer's own read: at hand.
                        Ok(m) => (m.clone(), None),
                        Err(e) => {
                            tracing::error!(consumer = c.id, offset, error = %e, "stream record undecodable: skipped");
                            continue;
                        }
                    },
                };
                if let Some(g) = &mut gather {
                    batch.extend(g.finish(&mut self.next_delivery, &mut c.unacked));
                }
                handed += 1;
                self.next_delivery += 1;
                c.unacked.insert_run(self.next_delivery, offset, 1);
                batch.push(Delivery {
                    id: self.next_delivery,
                    redelivered: again,
                    delivery_count: 1 + u32::from(again),
                    message,
                    stored,
                    run: None,
                });
            }
            if let Some(g) = &mut gather {
                batch.extend(g.finish(&mut self.next_delivery, &mut c.unacked));
            }
            if c.ahead.is_empty() && c.next < tail_first && c.reading.is_none() && !c.read_failed {
                if let Some(mut req) = self.log.read_from(c.next, c.cursor.take()) {
                    // Read ahead up to the consumer's prefetch, within a byte bound.
                    req.max_records = c.prefetch.min(c.window).max(1) as usize;
                    req.max_bytes = READ_AHEAD_BYTES;
                    req.min_timestamp = c.min_timestamp;
                    req.decode = !c.accepts_stored;
                    c.reading = Some(c.next);
                    self.reads.push((c.id, req));
                }
            }
            if batch.is_empty() {
                continue;
            }
            c.in_flight += handed as u32;
            budget -= handed;
            out.push((i, batch));
        }
        out
    }

    /// The reads of the files queued by [`Self::dispatch`]: (consumer id, request).
    pub fn take_reads(&mut self) -> Vec<(u64, crate::storage::stream::reader::ReadRequest)> {
        std::mem::take(&mut self.reads)
    }

    /// A read for consumer `id` finished: its records become the consumer's read-ahead.
    /// Answers the damage found when the files hold a record that cannot be read
    /// (checksum, structure, or not found after a damaged one): the offset, where
    /// reading goes on after it, and what is wrong. The actor then cancels the
    /// consumer, which has been given every record before that one: reading on would
    /// skip a record silently, and retrying finds the same bytes.
    pub fn read_done(&mut self, id: u64, result: Result<ReadBatch, ReadError>) -> Option<Damage> {
        let first = self.log.first_offset();
        let c = self.consumers.iter_mut().find(|c| c.id == id)?;
        let from = c.reading.take();
        c.skip_to(first);
        if from != Some(c.next) {
            // Retention or a group handover moved the consumer while it read.
            c.cursor = None;
            return None;
        }
        match result {
            Ok(batch) => {
                if batch.first > c.next {
                    // Records before a timestamp start were skipped.
                    c.next = batch.first;
                }
                if !batch.is_empty() {
                    c.min_timestamp = None;
                }
                c.ahead_bytes += batch.bytes();
                c.cursor = Some(batch.cursor);
                c.ahead.extend(batch.spans);
            }
            Err(ReadError::Gone(segment)) => {
                // Retention removed the segment: go on from the new first offset.
                tracing::debug!(consumer = id, segment, "stream segment gone while read");
                c.cursor = None;
            }
            Err(ReadError::Damaged {
                offset,
                resume,
                error,
            }) => {
                c.cursor = None;
                c.read_failed = true;
                return Some(Damage {
                    offset,
                    resume,
                    error,
                });
            }
            Err(e) => {
                tracing::error!(consumer = id, offset = c.next, error = %e, "cannot read the stream's files; retrying in a second");
                c.cursor = None;
                c.read_failed = true;
            }
        }
        None
    }

    /// Lets consumers whose read failed try again (the actor's tick).
    pub fn retry_failed_reads(&mut self) {
        for c in &mut self.consumers {
            c.read_failed = false;
        }
    }

    /// Bytes the stream holds in memory: the log's tail cache and index, and the
    /// consumers' read-ahead (what the memory watermark counts).
    pub fn ram_bytes(&self) -> u64 {
        self.log.ram_bytes() + self.consumers.iter().map(|c| c.ahead_bytes).sum::<u64>()
    }

    /// Runs every queued read here, blocking (tests without an actor).
    #[cfg(test)]
    pub fn run_reads(&mut self) -> usize {
        let reads = self.take_reads();
        let n = reads.len();
        for (id, req) in reads {
            let r = crate::storage::stream::reader::read(req);
            if let Some(d) = self.read_done(id, r) {
                panic!("consumer {id}: record {} damaged: {}", d.offset, d.error);
            }
        }
        n
    }
}
