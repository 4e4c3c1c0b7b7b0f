//! Consumer credit on the leader's node: two counts, kept apart on purpose.
//!
//! - **The client's prefetch** (`basic.qos`): deliveries sent to the consumer and not
//!   acked *by its client*. An ack, nack or reject frees its slot the moment it
//!   reaches this actor, as RabbitMQ's prefetch does, so the next message goes out
//!   at once ([`sendable`]).
//! - **The machine's credit**: checkouts the group's machine may hold for the
//!   consumer, unsettled in the *committed* state. A settlement frees it only once
//!   its `Settle` commits, a round trip to a majority later. While its client
//!   settles, it is registered with the prefetch plus as much again, at most
//!   [`MAX_EXTRA`] more ([`machine_credit`]): the extra is checked out ahead,
//!   committed, waiting on this node, so that an ack finds the next message already
//!   checked out instead of waiting for its own commit. Before, with the machine's
//!   credit equal to the prefetch, a consumer got at most its prefetch per commit
//!   round trip. The extra is registered with the client's first settlement (in the
//!   same entry) and given back when the client holds its prefetch with none of its
//!   settlements on the way ([`idle`]): then the credit is the prefetch again and
//!   what waited goes back unsent, so a client that takes nothing keeps no message
//!   from other consumers or gets ([`registered`]).
//!
//! What the group holds for a consumer is therefore what its client holds (at most
//! the prefetch), plus what it acked whose `Settle` has not committed, plus what waits
//! here to be sent: bounded by [`machine_credit`]. A leader that dies before a
//! `Settle` commits leaves those messages checked out: the next leader returns them
//! and they are redelivered, marked, as any unsettled delivery is (at least once).

use crate::cluster::quorum::machine::UNLIMITED_CREDIT;

/// Most checkouts a consumer is registered with beyond its prefetch: bounds the
/// messages the group holds for one consumer ahead of its client (a prefetch of
/// 100 gets 100 more; one of 5000 gets 2000 more).
pub(super) const MAX_EXTRA: u32 = UNLIMITED_CREDIT;

/// The credit a consumer of `prefetch` is registered with in the group's machine: its
/// prefetch and as much again (at most [`MAX_EXTRA`]); prefetch 0 (no limit) is
/// [`UNLIMITED_CREDIT`], as RabbitMQ's quorum queues bound it.
pub(super) fn machine_credit(prefetch: u32) -> u32 {
    match prefetch {
        0 => UNLIMITED_CREDIT,
        p => p.saturating_add(p.min(MAX_EXTRA)),
    }
}

/// The credit a consumer is registered with: [`machine_credit`] while `boosted` (its
/// client settles, the next messages are checked out ahead of the commits), else its
/// prefetch (0: [`UNLIMITED_CREDIT`]), so that a client that holds its prefetch and
/// settles nothing holds no more in the group than its prefetch: the messages stay
/// ready for other consumers and gets, as in RabbitMQ.
pub(super) fn registered(prefetch: u32, boosted: bool) -> u32 {
    match (prefetch, boosted) {
        (0, _) => UNLIMITED_CREDIT,
        (p, false) => p,
        (p, true) => machine_credit(p),
    }
}

/// A consumer whose client holds its whole prefetch (`unacked`) with no settlement
/// of it on its way to commit (`settling`): nothing it has checked out beyond that
/// can be sent before its client settles, so the extra is given back.
pub(super) fn idle(prefetch: u32, auto_ack: bool, unacked: usize, settling: usize) -> bool {
    !auto_ack && prefetch > 0 && settling == 0 && unacked >= prefetch as usize
}

/// How many of `waiting` checkouts a consumer may be sent now: within its transport
/// `window`, and, for a consumer with acks and a prefetch, within the slots its
/// client has free (`unacked`: sent, not settled by the client). An auto-ack
/// consumer's deliveries count as settled once sent, so its prefetch does not apply
/// (as in AMQP); the machine's credit still bounds it.
pub(super) fn sendable(
    prefetch: u32,
    auto_ack: bool,
    unacked: usize,
    window: u32,
    waiting: usize,
) -> usize {
    let mut n = waiting.min(window as usize);
    if !auto_ack && prefetch > 0 {
        n = n.min((prefetch as usize).saturating_sub(unacked));
    }
    n
}

#[cfg(test)]
#[path = "credit_tests.rs"]
mod tests;
