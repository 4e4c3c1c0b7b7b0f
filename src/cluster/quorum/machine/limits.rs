//! The queue's length limits, and their change by a policy after the declare
//! ([`Command::SetLimits`]).
//!
//! What a change does, as RabbitMQ's quorum queues do on a configuration update
//! (`rabbit_fifo`'s `update_config`, then its limit check):
//! - a lower `x-max-length(-bytes)` with drop-head drops the oldest ready messages at
//!   once, in the entry of the change (dead: `maxlen`); with reject-publish the
//!   messages held stay and the next publishes are refused while the queue is full;
//! - a new `message-ttl` counts for the messages published from the change on: a
//!   message's deadline is fixed at its publish (RabbitMQ keeps the expiry in its
//!   header from the enqueue), and only the head expires, so a shorter TTL reaches
//!   the older messages behind it only as they come to the head;
//! - `x-delivery-limit` is checked at the next return of each message;
//! - from at-least-once to at-most-once dead-lettering, the dead messages kept go to
//!   the leader's at-most-once republish in the same entry (nothing stays kept with
//!   no one to settle it); the other way, what dies from then on is kept;
//! - `x-single-active-consumer` is no policy key: it stays the declare's.
//!
//! A change is numbered by the definitions entry that made it: the machine skips one
//! not newer than its own, so a leader whose node lagged behind the definitions
//! cannot take the queue back to older limits.

use super::*;

impl<M: Clone + Weighed> QueueMachine<M> {
    /// [`Command::SetLimits`]: `limits` from definitions entry `at` on, unless the
    /// machine already has as new a change.
    pub(super) fn set_limits(
        &mut self,
        at: u64,
        mut limits: Limits,
        dead: &mut Vec<(M, DeadReason)>,
    ) {
        if at <= self.limits_at {
            return;
        }
        limits.single_active = self.limits.single_active;
        let was_at_least_once = self.limits.at_least_once;
        self.limits = limits;
        self.limits_at = at;
        if was_at_least_once && !self.limits.at_least_once {
            for (_, k) in std::mem::take(&mut self.dead) {
                let (message, reason) = k.into_parts();
                self.gone(&message);
                dead.push((message, reason));
            }
            self.dead_bytes = 0;
        }
        self.drop_head_over(dead);
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The definitions entry that set the limits in force (0: the declare's).
    pub fn limits_at(&self) -> u64 {
        self.limits_at
    }

    /// With drop-head, the oldest ready messages go (dead: `maxlen`) while the queue
    /// is over a length limit.
    pub(super) fn drop_head_over(&mut self, dead: &mut Vec<(M, DeadReason)>) {
        if self.limits.reject_publish {
            return;
        }
        while self.is_over() {
            let Some((&head, _)) = self.ready.iter().next() else {
                break;
            };
            let h = self.take_ready(head).expect("the head");
            self.died(h.message, DeadReason::MaxLen, dead);
        }
    }

    /// At or over a limit (before adding `len` messages of `bytes`). The dead kept
    /// for at-least-once dead-lettering count with the ready ones (as in RabbitMQ),
    /// so a queue whose dead letters cannot leave stops taking publishes.
    pub(super) fn is_full(&self, len: u64, bytes: u64) -> bool {
        let n = self.ready.len() as u64 + self.dead.len() as u64 + len;
        let b = self.ready_bytes + self.dead_bytes + bytes;
        self.limits.max_length.is_some_and(|m| n >= m)
            || self.limits.max_length_bytes.is_some_and(|m| b >= m)
    }

    /// Over a limit.
    fn is_over(&self) -> bool {
        self.limits
            .max_length
            .is_some_and(|m| self.ready.len() as u64 > m)
            || self
                .limits
                .max_length_bytes
                .is_some_and(|m| self.ready_bytes > m)
    }
}
