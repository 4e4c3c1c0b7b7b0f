//! A client's cancel of one of its consumers, between the cancel and its answer.
//!
//! RabbitMQ writes what reaches a channel for a consumer between the client's
//! `basic.cancel` and its `basic.cancel-ok`: those deliveries were sent by the queue
//! before it saw the cancel, and an auto-acked one has already left the queue, so
//! dropping it would lose it. A front end that answers the cancel only once the
//! queue has it calls [`Channel::begin_cancel`] when the cancel is read and
//! [`Channel::end_cancel`] when it answers; meanwhile [`Channel::accept_delivery`]
//! writes that consumer's deliveries as usual (tracked unless auto-acked).

use super::{Channel, ConsumerEntry, RECENTLY_CANCELLED};

impl Channel {
    /// The client cancels consumer `tag`: it is no consumer of this channel any more,
    /// but its deliveries still on their way are written until [`end_cancel`].
    /// Answers its entry (its queue, to send the cancel to), if it had one.
    ///
    /// [`end_cancel`]: Channel::end_cancel
    pub fn begin_cancel(&mut self, tag: &str) -> Option<ConsumerEntry> {
        let c = self.consumers.remove(tag)?;
        self.cancelling.push((tag.to_string(), c.no_ack));
        Some(c)
    }

    /// The cancel of `tag` is answered (the queue has it): what still comes for it is
    /// handled as for any cancelled consumer (auto-acked written, others requeued).
    pub fn end_cancel(&mut self, tag: &str) {
        let Some(i) = self.cancelling.iter().position(|(t, _)| t == tag) else {
            return;
        };
        let entry = self.cancelling.swap_remove(i);
        if self.recently_cancelled.len() == RECENTLY_CANCELLED {
            self.recently_cancelled.pop_front();
        }
        self.recently_cancelled.push_back(entry);
    }

    /// True while the client's cancel of `tag` is unanswered.
    pub fn is_cancelling(&self, tag: &str) -> bool {
        self.cancelling_no_ack(tag).is_some()
    }

    /// The `no_ack` flag of `tag` while its cancel is unanswered, else `None`.
    pub(super) fn cancelling_no_ack(&self, tag: &str) -> Option<bool> {
        self.cancelling
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, no_ack)| *no_ack)
    }

    /// True when `tag` was a consumer of this channel, cancelled lately or now.
    pub fn was_cancelled(&self, tag: &str) -> bool {
        self.is_cancelling(tag) || self.recently_cancelled.iter().any(|(t, _)| t == tag)
    }
}
