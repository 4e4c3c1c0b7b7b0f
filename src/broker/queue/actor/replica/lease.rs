//! `x-expires` of a replicated quorum queue: the group's leader deletes the queue once
//! it has been unused for that long. Unused is RabbitMQ's definition (its TTL guide,
//! "Queue TTL"): no consumer, no `basic.get` and no redeclare for at least the period.
//!
//! The leader decides on its own clock (the machine has none), from what it sees of
//! the queue's use:
//! - consumers: those the machine has registered (every consumer, on any node, is
//!   registered there through the leader) and this node's own; the countdown starts
//!   again when the last one goes;
//! - gets: every `basic.get` is answered by the leader's queue actor (a follower
//!   forwards it there);
//! - redeclares: each node answers its own, so a node that does not lead commits a
//!   `Touch`, which the machine counts and the leader sees; the leader renews at once.
//!
//! A new leader starts the countdown afresh at its takeover: it cannot know how long
//! the queue was unused under the old one, so a leader change only ever delays an
//! expiry (by at most one period), never brings one forward. The delete is proposed to
//! the definitions log ([`QueueUnused`]), as a client's `queue.delete` is, so every
//! node deletes the queue and its group once it commits; a proposal that fails leaves
//! the queue everywhere and is made again after [`RETRY`]. A consumer that attaches
//! between the decision and the commit is cancelled by the delete (as RabbitMQ's own
//! deleter races it).

use super::*;
use crate::broker::messages::QueueUnused;
use std::time::Instant;

/// How long after a failed (or answered but not applied) delete proposal the leader
/// proposes it again, if the queue is still unused.
const RETRY: Duration = Duration::from_secs(1);

/// What the leader sees of the queue's use at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    /// This node leads the group and serves it (its takeover done).
    pub serving: bool,
    /// Consumers are registered (in the machine, or here).
    pub attached: bool,
    /// The machine's count of committed `Touch`es.
    pub touches: u64,
}

/// The countdown of one queue with `x-expires`, kept by whichever node leads it.
pub(super) struct Lease {
    /// `x-expires`.
    period: Duration,
    /// Counting: this node served the group when last seen (a change restarts).
    leading: bool,
    /// The last use seen while leading (or the takeover).
    last_used: Instant,
    /// The machine's `Touch` count last seen: a higher one is a redeclare.
    touches: u64,
    /// Consumers were attached when last seen: their going is a use.
    attached: bool,
    /// Not before this instant again, after a proposal that did not delete the queue.
    retry_at: Option<Instant>,
    /// The timer armed for the due instant, and its handle to cancel it.
    timer: Option<(Instant, SpawnHandle)>,
    /// A delete proposal is on its way.
    proposing: bool,
}

impl Lease {
    /// The lease of a queue with `x-expires = period_ms`, not counting yet.
    pub(super) fn new(period_ms: u64, now: Instant) -> Lease {
        Lease {
            period: Duration::from_millis(period_ms),
            leading: false,
            last_used: now,
            touches: 0,
            attached: false,
            retry_at: None,
            timer: None,
            proposing: false,
        }
    }

    /// The queue was used now (a get, a redeclare answered here).
    pub(super) fn used(&mut self, now: Instant) {
        self.last_used = now;
    }

    /// Takes in what the leader sees now; answers when the queue is due to be
    /// deleted, while it counts down (this node serves, and no consumer is attached).
    pub(super) fn observe(&mut self, now: Instant, seen: Seen) -> Option<Instant> {
        if !seen.serving {
            self.leading = false;
            return None;
        }
        if !self.leading {
            // A takeover: the countdown starts here, whatever it was elsewhere.
            self.leading = true;
            self.last_used = now;
            self.touches = seen.touches;
            self.attached = seen.attached;
            self.retry_at = None;
        }
        if seen.touches != self.touches || (self.attached && !seen.attached) {
            self.touches = seen.touches;
            self.last_used = now;
        }
        self.attached = seen.attached;
        if self.attached {
            return None;
        }
        let due = self.last_used + self.period;
        Some(self.retry_at.map_or(due, |r| r.max(due)))
    }
}

impl QueueActor {
    /// Follows `x-expires` as the group's limits have it now (a policy may change it
    /// after the declare): a new period counts from the last use seen; a lease is
    /// made when the queue gets one, dropped (its timer cancelled) when it loses it.
    pub(super) fn replica_follow_expires(&mut self, expires: Option<u64>, ctx: &mut Context<Self>) {
        let r = self.replica();
        match (expires, r.lease.as_mut()) {
            (Some(ms), Some(l)) => l.period = Duration::from_millis(ms),
            (Some(ms), None) => r.lease = Some(Lease::new(ms, Instant::now())),
            (None, Some(l)) => {
                if let Some((_, h)) = l.timer.take() {
                    ctx.cancel_future(h);
                }
                r.lease = None;
            }
            (None, None) => {}
        }
    }

    /// What the leader sees of the queue's use now.
    fn lease_seen(&mut self) -> Seen {
        let r = self.replica();
        let (machine_consumers, touches) = r
            .group
            .read(|q| (q.consumer_count(), q.touches()))
            .unwrap_or((0, 0));
        Seen {
            serving: r.serving && r.leads(),
            attached: machine_consumers > 0 || !r.consumers.is_empty(),
            touches,
        }
    }

    /// Brings the `x-expires` countdown up to date (after every change of the group or
    /// of its consumers): arms its timer for the due instant, or proposes the delete
    /// once it has passed.
    pub(super) fn replica_watch_lease(&mut self, ctx: &mut Context<Self>) {
        if self.deleted || self.replica().lease.is_none() {
            return;
        }
        let seen = self.lease_seen();
        let now = Instant::now();
        let (name, incarnation) = (self.name.clone(), self.incarnation);
        let r = self.replica();
        let unused = r.unused.clone();
        let lease = r.lease.as_mut().expect("checked");
        let due = lease.observe(now, seen);
        let armed_for = lease.timer.as_ref().map(|(at, _)| *at);
        if armed_for.is_some() && armed_for != due {
            if let Some((_, h)) = lease.timer.take() {
                ctx.cancel_future(h);
            }
        }
        let Some(due) = due else {
            return;
        };
        if lease.proposing {
            return;
        }
        if due > now {
            if lease.timer.is_none() {
                let h = ctx.run_later(due - now, |act, ctx| {
                    if let Some(l) = act.replica.as_mut().and_then(|r| r.lease.as_mut()) {
                        l.timer = None;
                    }
                    act.replica_watch_lease(ctx);
                });
                lease.timer = Some((due, h));
            }
            return;
        }
        lease.proposing = true;
        tracing::info!(queue = %name, unused_for = ?lease.period, "x-expires: the quorum queue is unused; proposing its delete");
        let asked = unused.send(QueueUnused { name, incarnation });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(asked).map(move |answer, act, ctx| {
                if act.deleted {
                    return;
                }
                let failed = match answer {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(e) => Some(BrokerError::from(e)),
                };
                if let Some(e) = failed {
                    tracing::warn!(queue = %act.name, error = %e, "x-expires: the delete of the unused quorum queue was not committed; asking again later");
                }
                if let Some(l) = act.replica.as_mut().and_then(|r| r.lease.as_mut()) {
                    l.proposing = false;
                    // Committed, the delete reaches this actor shortly; if it does not
                    // (refused, or the registry gone), the next try waits.
                    l.retry_at = Some(Instant::now() + RETRY);
                }
                act.replica_watch_lease(ctx);
            }),
        );
    }

    /// A redeclare answered on this node: a use. The leader renews its countdown at
    /// once; another node commits a `Touch` for the leader to see (not awaited: one that
    /// fails is logged, and the queue expires as if that redeclare had not been made).
    pub(in crate::broker::queue::actor) fn replica_touch(&mut self) {
        let r = self.replica();
        let Some(lease) = r.lease.as_mut() else {
            return;
        };
        lease.used(Instant::now());
        if r.leads() {
            return;
        }
        let written = r.group.write_anywhere(Command::Touch);
        let name = self.name.clone();
        actix::spawn(async move {
            if let Err(e) = written.await {
                tracing::warn!(queue = %name, error = %e, "x-expires: a redeclare of the quorum queue was not committed as a use");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(serving: bool, attached: bool, touches: u64) -> Seen {
        Seen {
            serving,
            attached,
            touches,
        }
    }

    #[test]
    fn only_a_serving_leader_counts_and_a_takeover_starts_afresh() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = Lease::new(100, t0);
        assert_eq!(l.observe(ms(0), seen(false, false, 0)), None);
        // Taking over at 50: due 100 later, whatever happened before.
        assert_eq!(l.observe(ms(50), seen(true, false, 7)), Some(ms(150)));
        assert_eq!(l.observe(ms(120), seen(true, false, 7)), Some(ms(150)));
        // Leading lost, then won again at 400: afresh.
        assert_eq!(l.observe(ms(200), seen(false, false, 7)), None);
        assert_eq!(l.observe(ms(400), seen(true, false, 7)), Some(ms(500)));
    }

    #[test]
    fn gets_redeclares_and_the_last_consumer_leaving_are_uses() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = Lease::new(100, t0);
        assert_eq!(l.observe(ms(0), seen(true, false, 0)), Some(ms(100)));
        // A get (or a redeclare on this node).
        l.used(ms(30));
        assert_eq!(l.observe(ms(30), seen(true, false, 0)), Some(ms(130)));
        // A redeclare on another node: a committed Touch.
        assert_eq!(l.observe(ms(60), seen(true, false, 1)), Some(ms(160)));
        // Consumers attached: no countdown, however long.
        assert_eq!(l.observe(ms(70), seen(true, true, 1)), None);
        assert_eq!(l.observe(ms(900), seen(true, true, 1)), None);
        // The last one leaves at 1000: due a period later.
        assert_eq!(l.observe(ms(1000), seen(true, false, 1)), Some(ms(1100)));
    }

    #[test]
    fn a_failed_proposal_is_made_again_only_after_the_retry_pause() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = Lease::new(100, t0);
        assert_eq!(l.observe(ms(0), seen(true, false, 0)), Some(ms(100)));
        l.retry_at = Some(ms(1100));
        assert_eq!(l.observe(ms(150), seen(true, false, 0)), Some(ms(1100)));
        // A use after it: the period counts again.
        l.used(ms(1050));
        assert_eq!(l.observe(ms(1050), seen(true, false, 0)), Some(ms(1150)));
    }
}
