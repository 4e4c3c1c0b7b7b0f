//! The head and the backlog of a durable queue (see [`crate::broker::queue::backlog`]):
//! what the queue state does with the backlog, kept apart from the rest of it.

use super::QueueState;
use crate::broker::queue::backlog::ReadRequest;
use crate::broker::queue::timers::Millis;
use crate::message::Message;
use std::sync::Arc;

impl<C> QueueState<C> {
    /// Keeps at most `head_limit` ready messages in the head; later ones wait in the
    /// backlog (0 = no backlog). In a queue with priorities only recovered messages
    /// start a backlog: its order is not FIFO, so a backlog of new messages would hold
    /// back one that should go first.
    pub fn enable_backlog(&mut self, head_limit: usize) {
        self.backlog
            .configure(head_limit, self.config.max_priority == 0);
    }

    /// Puts back a message recovered after a restart without its body (stored under
    /// `id`, about `size` bytes), behind every other: it is read back when it gets
    /// near the head, and its TTL and delay start then (see
    /// [`QueueState::push_recovered`]).
    pub fn push_recovered_stored(&mut self, id: u64, size: u32, deliveries: u32) {
        self.backlog.push_stored(id, size, deliveries);
    }

    /// Body bytes of every ready message, in memory or not (for `x-max-length-bytes`,
    /// which counts bodies alone, as RabbitMQ's does).
    pub(super) fn ready_bytes(&self) -> usize {
        self.ready.body_bytes() + self.backlog.bytes()
    }

    /// Messages waiting in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Lets the messages that entered the backlog since the last call drop their
    /// bodies when `stored_id` answers their store id (see [`crate::broker::queue::backlog::Backlog::page_out`]).
    pub fn page_out(&mut self, stored_id: impl FnMut(&Arc<Message>) -> Option<u64>) {
        self.backlog.page_out(stored_id);
    }

    /// Moves the front of the backlog into the head while it has room and the bodies
    /// are in memory; answers the read to ask of the store for the bodies that are not.
    pub fn refill(&mut self, now: Millis) -> Option<ReadRequest> {
        while let Some(p) = self.backlog.promote(self.ready.len()) {
            if !p.recovered {
                self.push_head(p.message, p.expires, p.deliveries);
            } else if let Some((m, expires)) = self.recovered_ready(p.message, p.deliveries, now) {
                self.push_head(m, expires, p.deliveries);
            }
        }
        self.backlog.read_request(self.ready.len())
    }

    /// Takes the answer to a [`ReadRequest`]; answers the ids lost, `None` when the
    /// answer is stale (see [`crate::broker::queue::backlog::Backlog::paged_in`]). Call [`QueueState::refill`] next.
    pub fn paged_in(&mut self, epoch: u64, pages: Vec<(u64, Arc<Message>)>) -> Option<Vec<u64>> {
        self.backlog.paged_in(epoch, pages)
    }

    /// A read asked by [`QueueState::refill`] failed; the next refill asks again.
    pub fn read_failed(&mut self, epoch: u64) {
        self.backlog.read_failed(epoch);
    }
}
