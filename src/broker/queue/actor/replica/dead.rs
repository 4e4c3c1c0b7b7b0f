//! Dead-lettering of a replicated quorum queue, at most once (RabbitMQ's default
//! `x-dead-letter-strategy` for quorum queues; at-least-once is `dlx`, and its
//! machine hands nothing to this path).
//!
//! Every member applies the same entries, so every member's machine sees the same
//! messages die (`rejected`, `maxlen`, `delivery_limit`, `expired`). Only one node may
//! republish them: the one whose leadership wrote the entry. Each member records its
//! dead with the term of the entry they died in; this node dead-letters those of the
//! term it leads in and drops the rest. A follower never republishes, nor does a
//! later leader that applies an entry written in an earlier term, nor a restarted node
//! replaying its log (it leads again only in a later term).
//!
//! At most once: a leader that dies (or stops leading) between the commit of an entry
//! and the republish of what died in it loses that dead-lettering; the message is gone
//! from the queue either way, and nothing dead-letters it twice. The republish goes
//! through the queue's outbox to the dead-letter exchange on this node (exchanges run
//! on every node), with `x-death` as a classic queue writes it and the cycle rule.

use super::*;
use crate::broker::queue::dead_letter::Reason;
use crate::broker::queue::state::Dead;
use crate::cluster::quorum::machine::DeadReason;

/// `x-death`'s reason for a message the machine declared dead.
pub(super) fn reason_of(why: DeadReason) -> Reason {
    match why {
        DeadReason::Rejected => Reason::Rejected,
        DeadReason::MaxLen => Reason::MaxLen,
        DeadReason::DeliveryLimit => Reason::DeliveryLimit,
        DeadReason::Expired => Reason::Expired,
    }
}

impl QueueActor {
    /// Takes what died in the entries applied here since the last call and
    /// dead-letters what this node's leadership wrote (see the module docs); sends
    /// what waits in the outbox.
    pub(in crate::broker::queue::actor) fn replica_dead_letters(
        &mut self,
        ctx: &mut Context<Self>,
    ) {
        let r = self.replica();
        let dead = r.group.take_dead().unwrap_or_default();
        let term = r.group.term();
        let leads = r.leads();
        let mut mine = Vec::new();
        let mut others = 0usize;
        for (written_in, m, why) in dead {
            if leads && written_in == term {
                mine.push(Dead {
                    message: Arc::new(m.to_message()),
                    reason: reason_of(why),
                });
            } else {
                others += 1;
            }
        }
        if others > 0 {
            tracing::trace!(queue = %self.name, others, "quorum queue: dead messages of entries another leadership wrote (theirs to dead-letter)");
        }
        if !mine.is_empty() && self.outbox.is_none() {
            // As a classic queue without a dead-letter exchange: dropped.
            tracing::debug!(queue = %self.name, dropped = mine.len(), "quorum queue: dead messages dropped (no dead-letter exchange)");
            return;
        }
        self.dead_letter(mine, ctx);
        self.replica_account();
    }
}
