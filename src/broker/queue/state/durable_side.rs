//! What the durable side of a queue ([`crate::broker::queue::durable`]) needs of the
//! queue state: messages that left for good, and messages recovered after a restart.

use super::QueueState;
use crate::broker::queue::timers::Millis;
use crate::broker::queue_args::message_delay;
use crate::message::Message;
use std::sync::Arc;

impl<C> QueueState<C> {
    /// From now on, reports every message that leaves the queue for good (acked,
    /// rejected, expired, dropped by a length or delivery limit) to
    /// [`QueueState::take_gone`]. Auto-acked deliveries and purges are not reported:
    /// the caller sees those itself.
    pub fn track_gone(&mut self) {
        self.gone.get_or_insert_with(Vec::new);
    }

    /// The messages that left for good since the last call (when tracked).
    pub fn take_gone(&mut self) -> Vec<Arc<Message>> {
        self.gone.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Puts back a message recovered after a restart, at the tail, with the number of
    /// times it may have been delivered before (marked redelivered when not 0; its next
    /// delivery counts one more). Its TTL counts from `now`;
    /// one with a delay that was never delivered waits its delay again (late rather
    /// than early). No length limit or dedup applies: it was accepted already.
    pub fn push_recovered(&mut self, message: Arc<Message>, deliveries: u32, now: Millis) {
        if let Some((message, expires)) = self.recovered_ready(message, deliveries, now) {
            self.push_tail(message, expires, deliveries);
        }
    }

    /// A recovered message that is ready now, with its TTL deadline; one that must
    /// wait its delay again goes to the delayed messages instead.
    pub(super) fn recovered_ready(
        &mut self,
        message: Arc<Message>,
        deliveries: u32,
        now: Millis,
    ) -> Option<(Arc<Message>, Millis)> {
        let delay = message_delay(&message).unwrap_or(self.config.delivery_delay);
        if delay > 0 && deliveries == 0 {
            self.delayed.push(now.saturating_add(delay), message);
            return None;
        }
        let expires = self.ttl_deadline(&message, now);
        Some((message, expires))
    }

    /// The messages of the unacked deliveries.
    pub fn unacked_messages(&self) -> impl Iterator<Item = &Arc<Message>> + '_ {
        self.unacked.values().map(|u| &u.message)
    }
}
