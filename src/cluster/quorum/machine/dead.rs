//! At-least-once dead-lettering in the machine: what died stays in the replicated
//! queue until the leader's republish of it is confirmed.
//!
//! With [`Limits::at_least_once`] a message that dies (rejected, expired, past
//! `x-delivery-limit`) is kept here, in death order, with its reason and the
//! machine's clock at its death (the `x-death` time), instead of being handed to the
//! leader in [`Applied::dead`]. Kept messages are never delivered, count against
//! `x-max-length` / `x-max-length-bytes` (so with reject-publish a queue whose dead
//! letters cannot leave refuses publishes), and stay in the memory the queue holds.
//! The group's leader republishes them with confirms and commits
//! [`Command::DeadSettled`]; a new leader republishes whatever is still kept, so a
//! dead letter may reach its target twice but is never lost. Every member, and a
//! snapshot, holds the same kept messages.

use super::*;

/// A dead message kept for at-least-once dead-lettering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Kept<M> {
    message: M,
    /// Why it died (`x-death`'s reason).
    reason: DeadReason,
    /// The machine's clock (ms since the Unix epoch, the leader's) when it died; 0
    /// when no `Clock` had been applied yet.
    at_ms: u64,
}

impl<M> Kept<M> {
    /// The message and why it died.
    pub(super) fn into_parts(self) -> (M, DeadReason) {
        (self.message, self.reason)
    }
}

/// A kept dead message as the leader republishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter<'a, M> {
    /// Its death number (what [`Command::DeadSettled`] names).
    pub id: u64,
    /// The message as it died.
    pub message: &'a M,
    /// Why it died.
    pub reason: DeadReason,
    /// When it died, on the machine's clock (ms since the Unix epoch), if known.
    pub died_at_ms: Option<u64>,
}

impl<M: Clone + Weighed> QueueMachine<M> {
    /// `message` died for `why`: kept until dead-lettered (at-least-once), else out
    /// of the queue and into `dead` for the leader's at-most-once republish.
    pub(super) fn died(&mut self, message: M, why: DeadReason, dead: &mut Vec<(M, DeadReason)>) {
        if !self.limits.at_least_once {
            self.gone(&message);
            dead.push((message, why));
            return;
        }
        self.last_dead += 1;
        self.dead_bytes += message.body_len() as u64;
        let kept = Kept {
            message,
            reason: why,
            at_ms: self.clock_ms,
        };
        self.dead.insert(self.last_dead, kept);
    }

    /// [`Command::DeadSettled`]: the kept dead messages `ids` leave the queue.
    pub(super) fn settle_dead(&mut self, ids: Vec<u64>) {
        for id in ids {
            if let Some(k) = self.dead.remove(&id) {
                self.dead_bytes -= k.message.body_len() as u64;
                self.gone(&k.message);
            }
        }
    }

    /// The kept dead messages, in the order they died.
    pub fn dead_letters(&self) -> impl Iterator<Item = DeadLetter<'_, M>> {
        self.dead.iter().map(|(id, k)| DeadLetter {
            id: *id,
            message: &k.message,
            reason: k.reason,
            died_at_ms: (k.at_ms > 0).then_some(k.at_ms),
        })
    }

    /// Whether dead message `id` is still kept.
    pub fn is_kept_dead(&self, id: u64) -> bool {
        self.dead.contains_key(&id)
    }

    /// Dead messages kept (RabbitMQ's `messages_dlx`).
    pub fn dead_len(&self) -> usize {
        self.dead.len()
    }

    /// Their body bytes (RabbitMQ's `message_bytes_dlx`).
    pub fn dead_bytes(&self) -> u64 {
        self.dead_bytes
    }

    /// The death number given last: it moves whenever a message is kept dead.
    pub fn last_dead(&self) -> u64 {
        self.last_dead
    }
}
