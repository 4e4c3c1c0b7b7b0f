//! What the queue's leader (and its node's queue actor) reads of the machine: the
//! active consumer, the head's deadline, counts, and the ready messages it may hand
//! out. Nothing here changes the queue.

use super::*;

impl<M: Clone + Weighed> QueueMachine<M> {
    /// With `x-single-active-consumer`, the consumer given messages: the earliest
    /// registered one still registered (`None` without the argument).
    pub fn active_consumer(&self) -> Option<ConsumerKey> {
        if !self.limits.single_active {
            return None;
        }
        self.consumers
            .iter()
            .min_by_key(|(k, c)| (c.seq, **k))
            .map(|(k, _)| *k)
    }

    /// Whether the consumer of another node `origin` (made here through a consume
    /// session: see [`Command::Consume`]) is given messages: true without
    /// `x-single-active-consumer`, else only if it is the active one's origin.
    pub fn origin_is_active(&self, origin: ConsumerKey) -> bool {
        match self.active_consumer() {
            None => true,
            Some(k) => self.consumers.get(&k).and_then(|c| c.origin) == Some(origin),
        }
    }

    /// The deadline of the head (the first ready message), if it has a TTL: when the
    /// leader's clock passes it, a [`Command::Clock`] expires it.
    pub fn head_deadline(&self) -> Option<u64> {
        self.ready.values().next()?.expires_at
    }

    /// The [`Command::Touch`]es applied so far (redeclares of the queue on any node).
    pub fn touches(&self) -> u64 {
        self.touches
    }

    /// Registered consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Bytes the memory watermark counts for the messages held (ready or checked out)
    /// on every member.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Checked-out message `id`, if `holder` holds it: what the leader sends.
    pub fn checked_out_to(&self, id: u64, holder: ConsumerKey) -> Option<Ready<'_, M>> {
        match self.checked_out.get(&id) {
            Some((c, h)) if *c == holder => Some(Ready {
                id,
                message: &h.message,
                // The checkout counted this delivery: the earlier ones.
                deliveries: h.deliveries.saturating_sub(1),
                deadline: h.expires_at,
            }),
            _ => None,
        }
    }

    /// Ready messages.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Checked-out (delivered, unsettled) messages.
    pub fn checked_out_len(&self) -> usize {
        self.checked_out.len()
    }

    /// Who holds checked-out message `id` (the leader checks a committed `Deliver`
    /// took effect before it sends the message).
    pub fn holder(&self, id: u64) -> Option<ConsumerKey> {
        self.checked_out.get(&id).map(|(c, _)| *c)
    }

    /// The first `n` ready messages, in queue order: what the leader may hand out next.
    pub fn peek(&self, n: usize) -> impl Iterator<Item = Ready<'_, M>> {
        self.ready.iter().take(n).map(|(id, h)| Ready {
            id: *id,
            message: &h.message,
            deliveries: h.deliveries,
            deadline: h.expires_at,
        })
    }
}
