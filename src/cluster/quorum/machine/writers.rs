//! Publish entries numbered by their writer ([`Command::EnqueueFrom`]), so that an
//! entry committed twice is enqueued once.
//!
//! Why: a node's publisher writes an entry again when it cannot tell whether the
//! first try committed (the link to the leader failed, or its answer was lost, and a
//! member that lost the lead may still have its entry committed by the next leader).
//! Without a number, the second try was a second copy of every message in the entry,
//! the broker's own duplicate with no retry by the client. As RabbitMQ's quorum queues
//! do for each enqueuer (`rabbit_fifo`'s enqueuer sequence numbers), the machine keeps
//! per writer the highest number it applied and skips an entry at or below it,
//! answering it as its first application was answered (the same ids, the same
//! refusals) when that is among the last [`KEEP_ANSWERS`] of the writer, else each
//! message as refused: nobody waits for such an answer (the writer only writes an
//! entry again while it waits for that entry, and it has at most
//! `publisher::IN_FLIGHT` in flight), and a refusal confirms nothing by mistake.
//!
//! Why "at or below" skips nothing wrongly: a writer numbers its entries in the order
//! it proposes them and writes an entry again only while nothing newer of its own
//! can commit ahead of it (one forwarded write at a time; entries pipelined on the
//! leader's node that come back refused are nacked, not written again, when a later
//! one committed: `publisher/flight.rs`). An older number that arrives late is a try
//! of an entry the writer has answered already: applied (a duplicate) or nacked
//! (then leaving it out is what the nack said).
//!
//! Bounded: a writer is a publisher's run (a random id drawn when it starts, so a
//! node restarted, or a queue's publisher started again, is a new writer numbering
//! from 1), and writers idle for [`IDLE_MS`] on the machine's clock are forgotten
//! when a new one comes, the longest idle first past [`MAX_WRITERS`]. A writer writes
//! an entry again for at most its write timeout (10 s), far less than [`IDLE_MS`].

use super::*;

/// How long (on the machine's clock, the leader's `Clock` entries) a writer that
/// applied nothing is remembered: rabbit_fifo forgets an enqueuer when its process
/// goes; ours have no process the machine could watch, so idleness stands for it.
pub const IDLE_MS: u64 = 15 * 60 * 1000;

/// Most writers remembered at once (each costs its last answers in every snapshot).
pub const MAX_WRITERS: usize = 1024;

/// Answers remembered per writer: as many entries as its publisher may have in
/// flight at once (`publisher::IN_FLIGHT`), the ones it may write again.
pub const KEEP_ANSWERS: usize = 2;

/// What the machine remembers of one writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Writer {
    /// The highest entry number applied.
    last: u64,
    /// The machine's clock when it last applied an entry (for [`IDLE_MS`]).
    at_ms: u64,
    /// The answers of its last entries applied (number, ids), oldest first.
    answers: VecDeque<(u64, Vec<Option<u64>>)>,
}

impl<M: Clone + Weighed> QueueMachine<M> {
    /// [`Command::EnqueueFrom`]: `messages` enqueued unless entry `seq` of `writer`
    /// was applied already; either way `out.enqueued` gets one answer per message.
    pub(super) fn enqueue_from(
        &mut self,
        writer: u64,
        seq: u64,
        messages: Vec<M>,
        out: &mut Applied<M>,
    ) {
        if let Some(w) = self.writers.get(&writer).filter(|w| seq <= w.last) {
            match w.answers.iter().find(|(s, _)| *s == seq) {
                Some((_, ids)) if ids.len() == messages.len() => {
                    out.enqueued.extend_from_slice(ids)
                }
                _ => out.enqueued.extend(messages.iter().map(|_| None)),
            }
            return;
        }
        let from = out.enqueued.len();
        for m in messages {
            let id = self.enqueue(m, out);
            out.enqueued.push(id);
        }
        if !self.writers.contains_key(&writer) {
            self.forget_idle_writers();
        }
        let now = self.clock_ms;
        let w = self.writers.entry(writer).or_insert_with(|| Writer {
            last: 0,
            at_ms: now,
            answers: VecDeque::new(),
        });
        w.last = seq;
        w.at_ms = now;
        if w.answers.len() == KEEP_ANSWERS {
            w.answers.pop_front();
        }
        w.answers.push_back((seq, out.enqueued[from..].to_vec()));
    }

    /// Before a new writer is remembered: those idle past [`IDLE_MS`] go, and the
    /// longest idle while [`MAX_WRITERS`] are kept.
    fn forget_idle_writers(&mut self) {
        let now = self.clock_ms;
        self.writers
            .retain(|_, w| now.saturating_sub(w.at_ms) <= IDLE_MS);
        while self.writers.len() >= MAX_WRITERS {
            let oldest = self
                .writers
                .iter()
                .min_by_key(|(_, w)| w.at_ms)
                .map(|(id, _)| *id)
                .expect("not empty");
            self.writers.remove(&oldest);
        }
    }

    /// The highest entry number of `writer` applied, if it is remembered.
    pub fn writer_last(&self, writer: u64) -> Option<u64> {
        self.writers.get(&writer).map(|w| w.last)
    }

    /// Writers remembered.
    pub fn writers_len(&self) -> usize {
        self.writers.len()
    }
}
