//! Time and limits: delayed messages becoming visible, TTL expiry, consumer timeouts,
//! drop-head length limits, and the next moment anything is due (the actor's one timer).

use super::QueueState;
use crate::broker::messages::Settlement;
use crate::broker::queue::dead_letter::Reason;
use crate::broker::queue::timers::Millis;
use crate::broker::queue_args::{Overflow, QueueConfig};

impl<C> QueueState<C> {
    /// Takes new settings while the queue runs (a policy changed what applies to it).
    /// What the queue's structures were built for stays: priorities, single active
    /// consumer, the dedup window (no policy key sets them). A lower length limit
    /// applies at once (drop-head drops the oldest, as RabbitMQ does on a policy
    /// change); a new TTL applies to messages enqueued from now on.
    pub fn reconfigure(&mut self, mut config: QueueConfig) {
        config.max_priority = self.config.max_priority;
        config.single_active_consumer = self.config.single_active_consumer;
        config.dedup_window = self.config.dedup_window;
        self.config = config;
        self.enforce_limits();
    }

    /// Makes visible at most `limit` delayed messages due at `now`; answers how many.
    /// Their TTL counts from when they were due.
    pub fn promote_due(&mut self, now: Millis, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            let Some((due, m)) = self.delayed.pop_due(now) else {
                break;
            };
            self.push_ready(m, due);
            n += 1;
        }
        n
    }

    /// Drops (or dead-letters) ready messages from the head while a length limit is
    /// exceeded, if the overflow is drop-head; answers how many.
    pub fn enforce_limits(&mut self) -> usize {
        if self.config.overflow != Overflow::DropHead {
            return 0;
        }
        let mut n = 0;
        while self
            .config
            .max_length
            .is_some_and(|m| self.ready_len() as u64 > m)
            || self
                .config
                .max_length_bytes
                .is_some_and(|m| self.ready_bytes() as u64 > m)
        {
            let message = match self.ready.pop_front() {
                Some(r) => r.message,
                // The head is empty: the oldest of the backlog if its body is in memory
                // (one on disk goes once it is read back).
                None => match self.backlog.promote(0) {
                    Some(p) => p.message,
                    None => break,
                },
            };
            self.kill(message, Reason::MaxLen);
            n += 1;
        }
        n
    }

    /// Removes at most `limit` ready messages whose TTL ran out before `now`, wherever
    /// they are in the queue; answers how many.
    pub fn expire_due(&mut self, now: Millis, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            let Some((at, (seq, level))) = self.expiry.peek() else {
                break;
            };
            if at >= now {
                break;
            }
            self.expiry.pop();
            if let Some(r) = self.ready.remove(level, seq) {
                self.kill(r.message, Reason::Expired);
                n += 1;
            }
        }
        n
    }

    /// Requeues at most `limit` deliveries unsettled past the consumer timeout at `now`
    /// (marked redelivered, their consumer's prefetch slot freed); answers how many.
    pub fn timeout_due(&mut self, now: Millis, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            let Some((at, id)) = self.timeouts.peek() else {
                break;
            };
            if at > now {
                break;
            }
            self.timeouts.pop();
            if let Some(u) = self.unacked.remove(&id) {
                self.finish(u, Settlement::Requeue, now);
                n += 1;
            }
        }
        n
    }

    /// The earliest moment something is due: a TTL, a delay or a consumer timeout.
    /// Drops stale deadlines on the way, so nothing wakes the queue for nothing.
    pub fn next_deadline(&mut self) -> Option<Millis> {
        while let Some((_, (seq, level))) = self.expiry.peek() {
            if self.ready.contains(level, seq) {
                break;
            }
            self.expiry.pop();
        }
        while let Some((_, id)) = self.timeouts.peek() {
            if self.unacked.contains_key(&id) {
                break;
            }
            self.timeouts.pop();
        }
        // A message expires once its deadline has passed (see `expire_due`).
        [
            self.expiry.peek().map(|(at, _)| at.saturating_add(1)),
            self.timeouts.peek().map(|(at, _)| at),
            self.delayed.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
