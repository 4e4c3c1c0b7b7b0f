//! Consumer credit on the leader's node: two counts, kept apart on purpose.
//!
//! - **The client's prefetch** (`basic.qos`): deliveries sent to the consumer and not
//!   acked *by its client*. An ack, nack or reject frees its slot the moment it
//!   reaches this actor, as RabbitMQ's prefetch does, so the next message goes out
//!   at once ([`sendable`]). After a leader change the deliveries of the dead
//!   leader's session that the client still holds count here too (`stale`, told by
//!   the follower's session), so the client never holds more than its prefetch.
//! - **The machine's credit**: checkouts the group's machine may hold for the
//!   consumer, unsettled in the *committed* state. A settlement frees it only once
//!   its `Settle` commits, a round trip to a majority later. A client that could run
//!   dry before that commit ([`starved`]: it holds, with what waits for it, less
//!   than half its prefetch as it settles) is registered with the prefetch plus
//!   [`EXTRA_TIMES`] as much, at most [`MAX_EXTRA`] more ([`machine_credit`]), in the same entry
//!   as that settlement: the extra is checked out ahead, committed, waiting on this
//!   node, so that an ack finds the next message already checked out instead of
//!   waiting for its own commit. A client slower than a commit never gets there (each
//!   commit refills what it settled long before it runs dry) and takes no extra.
//!
//! **Hysteresis.** The extra goes back (the credit is the prefetch again, what waited
//! returns unsent, unmarked) only once the client has held its whole prefetch with
//! none of its settlements on the way ([`idle`]) for [`GIVE_BACK_AFTER`] since its
//! last settlement, or at once when someone wants messages the queue has none ready
//! for: a `basic.get`, or another consumer of the queue with room ([`wants`]);
//! see [`give_back`]. Before, it went back the moment the client was idle and was
//! taken again with its next settlement: a consumer acking one message per few
//! commits wrote two entries per ack, each carrying about a prefetch of ids.
//! RabbitMQ's quorum queues give a consumer its prefetch as credit and no extra at
//! all (a delivery after an ack waits for the ack's commit); the extra is kept here
//! for fast consumers, and the demand rule keeps it from holding messages back from
//! others.
//!
//! What the group holds for a consumer is therefore what its client holds (at most
//! the prefetch), plus what it acked whose `Settle` has not committed, plus what waits
//! here to be sent: bounded by [`machine_credit`]. A leader that dies before a
//! `Settle` commits leaves those messages checked out: the next leader returns them
//! and they are redelivered, marked, as any unsettled delivery is (at least once).

use crate::cluster::quorum::machine::UNLIMITED_CREDIT;
use std::time::Duration;

/// How long a consumer registered with the extra may sit idle ([`idle`]) before the
/// extra goes back when nobody else wants messages: long against a commit round trip
/// (milliseconds), so a slow consumer keeps it between two acks, short enough that a
/// consumer that stopped does not keep messages out of the ready set (where TTLs and
/// `x-max-length` count them) for long.
pub(super) const GIVE_BACK_AFTER: Duration = Duration::from_secs(1);

/// Most checkouts a consumer is registered with beyond its prefetch: bounds the
/// messages the group holds for one consumer ahead of its client (a prefetch of
/// 100 gets 800 more; one of 5000 gets 2000 more).
pub(super) const MAX_EXTRA: u32 = UNLIMITED_CREDIT;

/// The extra as a multiple of the prefetch. A consumer settling faster than a commit
/// takes at most its credit per round trip of its `Settle` (the round it waits for,
/// then its own, behind the publishes in the log), so the extra is sized to what it
/// settles in that time. As much again as the prefetch bounded a 3-node group's
/// consumer with prefetch 100 to about 200 messages per such cycle (issue 17, 2026-12-07:
/// the queue backed up to the flow threshold and the publisher was held there, the
/// consumer's end-to-end latency 0.6 s against a confirm's 20 ms); a prefetch of 400
/// (800 of credit) kept up. Eight times fills a cycle of several milliseconds at the
/// rates a group commits.
pub(super) const EXTRA_TIMES: u32 = 8;

/// The credit a consumer of `prefetch` is registered with in the group's machine: its
/// prefetch and [`EXTRA_TIMES`] as much again (at most [`MAX_EXTRA`] more); prefetch 0
/// (no limit) is [`UNLIMITED_CREDIT`], as RabbitMQ's quorum queues bound it.
pub(super) fn machine_credit(prefetch: u32) -> u32 {
    match prefetch {
        0 => UNLIMITED_CREDIT,
        p => p.saturating_add(p.saturating_mul(EXTRA_TIMES).min(MAX_EXTRA)),
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

/// A consumer whose client holds its whole prefetch (`unacked`, stale deliveries of
/// an earlier leader included) with no settlement of it on its way to commit
/// (`settling`): nothing it has checked out beyond that can be sent before its client
/// settles, so the extra may go back ([`give_back`]).
pub(super) fn idle(prefetch: u32, auto_ack: bool, unacked: usize, settling: usize) -> bool {
    !auto_ack && prefetch > 0 && settling == 0 && unacked >= prefetch as usize
}

/// A client that, with what waits for it (`waiting`), holds less than half its
/// prefetch as it settles: it may run dry before the commit of its settlement frees
/// the next message, so it takes the extra. One settling a message at a time, slower
/// than a commit, is refilled long before (prefetch 1 excepted: every ack leaves it
/// nothing). Auto-ack and unlimited consumers have no prefetch to fill.
pub(super) fn starved(prefetch: u32, auto_ack: bool, unacked: usize, waiting: usize) -> bool {
    !auto_ack && prefetch > 0 && 2 * (unacked + waiting) < prefetch as usize
}

/// A consumer that would take a message now and has none waiting (transport window
/// open; free prefetch slots, at least half of them, as in [`starved`]): with nothing
/// ready in the queue, what another consumer holds idle should go back for it.
pub(super) fn wants(
    prefetch: u32,
    auto_ack: bool,
    unacked: usize,
    window: u32,
    waiting: usize,
) -> bool {
    waiting == 0 && window > 0 && (auto_ack || prefetch == 0 || 2 * unacked < prefetch as usize)
}

/// Whether a consumer registered with the extra gives it back now: [`idle`], and
/// either `idle_for` (since its client's last settlement) reached
/// [`GIVE_BACK_AFTER`] or someone `wanted` messages the queue had none ready for.
pub(super) fn give_back(idle: bool, idle_for: Duration, wanted: bool) -> bool {
    idle && (wanted || idle_for >= GIVE_BACK_AFTER)
}

/// Of `waiting` checkouts, how many a consumer keeps when its credit is the prefetch
/// alone: what that credit covers beyond the deliveries of this leader its client
/// holds (`held`; a prefetch lowered below them keeps none). The rest go back.
pub(super) fn kept(prefetch: u32, held: usize, waiting: usize) -> usize {
    (registered(prefetch, false) as usize)
        .saturating_sub(held)
        .min(waiting)
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

#[cfg(test)]
#[path = "credit_hyst_tests.rs"]
mod hyst_tests;
