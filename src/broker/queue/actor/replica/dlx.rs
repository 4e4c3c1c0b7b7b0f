//! At-least-once dead-lettering of a replicated quorum queue: the leader's
//! republisher (`x-dead-letter-strategy = at-least-once` with `x-overflow =
//! reject-publish`, as in RabbitMQ 3.10+).
//!
//! The group's machine keeps what died, in death order, until a `DeadSettled` entry
//! commits (`cluster/quorum/machine/dead.rs`). While this node leads and serves (its
//! takeover's `Return` committed) it republishes the kept messages, oldest first,
//! through the queue's dead-letter exchange on this node with a reply
//! ([`DeadLetterOutbox::publish_confirmed`](crate::broker::queue::outbox::DeadLetterOutbox::publish_confirmed):
//! the path any publish takes, to classic or quorum queues on any node), at most
//! [`MAX_IN_FLIGHT`] at once. Then, per message:
//! - every queue it routed to took it (a quorum target: committed): confirmed, and its
//!   `DeadSettled` goes with the leader's next entry;
//! - it would only close a dead-letter cycle (the exchange drops it there, and
//!   RabbitMQ drops it too), or the queue has no dead-letter exchange configured at
//!   all: settled, dropped (logged);
//! - refused by a queue, routed to no queue, its exchange missing, or no answer within
//!   [`CONFIRM_TIMEOUT`]: kept, and tried again after a backoff doubling from
//!   [`RETRY_FIRST`] to [`RETRY_MOST`] (the whole message again: a target that took it
//!   may get it twice).
//!
//! Losing the leadership, or taking it over, starts a new round: answers of the old
//! one are ignored, and whatever is not settled is republished by whoever leads next.
//! So a dead letter may arrive twice (a confirm the old leader got but did not settle
//! in time), never be lost.

use super::*;
use crate::broker::messages::Routed;
use crate::broker::queue::dead_letter::Reason;
use std::collections::BTreeMap;

/// Most dead letters published and not answered at once.
const MAX_IN_FLIGHT: usize = 256;

/// Dead letters per published batch.
const BATCH: usize = 64;

/// How long a published batch waits for its answer before it counts as failed (a
/// target whose group has lost its majority answers only when it commits).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The first pause before a failed dead letter is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(250);

/// The longest pause between tries.
const RETRY_MOST: Duration = Duration::from_secs(15);

/// What became of one republished dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Every queue it routed to took it.
    Confirmed,
    /// It can go nowhere for good (a dead-letter cycle, no dead-letter exchange).
    Dropped,
    /// Not confirmed: to be tried again.
    Failed,
}

/// The outcome of a dead letter from the exchange's answer for it.
fn outcome(r: &Routed) -> Outcome {
    match (&r.refused, r.queues, r.cycle) {
        (None, 0, true) => Outcome::Dropped,
        (None, q, _) if q > 0 => Outcome::Confirmed,
        _ => Outcome::Failed,
    }
}

/// Why a dead letter was not confirmed, for the log.
fn failure(r: &Routed) -> String {
    match &r.refused {
        Some(e) => format!("refused: {e}"),
        None => "routed to no queue".to_string(),
    }
}

/// A dead letter that failed: its tries so far and when it may go again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    tries: u32,
    at: Instant,
}

/// The pause after `tries` failed tries.
fn backoff(tries: u32) -> Duration {
    let doublings = tries.saturating_sub(1).min(16);
    (RETRY_FIRST * (1u32 << doublings)).min(RETRY_MOST)
}

/// The leader's bookkeeping of its republishes, by death number (pure: the actor
/// reads the machine and publishes; this says what to send and what to settle).
#[derive(Default)]
pub(super) struct Republisher {
    /// Bumped at every reset: an answer of an earlier round is ignored.
    round: u64,
    /// Published, not answered yet.
    inflight: BTreeSet<u64>,
    /// Confirmed (or dropped): their `DeadSettled` is written and not applied yet.
    settling: BTreeSet<u64>,
    /// Failed ones, until they leave the queue.
    retry: BTreeMap<u64, Retry>,
    /// The machine's last death number at the last scan: a new death asks for one.
    seen: u64,
    /// Something freed room or became due since the last scan: scan again.
    due: bool,
    /// The failures were logged; not again until a confirm.
    warned: bool,
    /// This round has begun (this node served since the last reset): a node that
    /// stops serving resets it once.
    active: bool,
    /// The retry timer, armed for the earliest retry to come.
    pub(super) timer: Option<(Instant, SpawnHandle)>,
}

impl Republisher {
    /// Whether this round has begun (see [`reset`](Self::reset)).
    pub(super) fn is_active(&self) -> bool {
        self.active
    }

    /// A new round (this node stopped leading or serving): nothing in flight, all
    /// free to go again, and the next scan (when it serves again) takes everything
    /// kept; the armed timer, if any, to cancel.
    pub(super) fn reset(&mut self) -> Option<SpawnHandle> {
        let round = self.round + 1;
        let timer = self.timer.take().map(|(_, h)| h);
        *self = Republisher {
            round,
            due: true,
            ..Republisher::default()
        };
        timer
    }

    /// Whether a scan of the kept dead is worth it (room in flight, and a new death
    /// or something freed or due since the last); `last_dead` is the machine's.
    pub(super) fn should_scan(&mut self, last_dead: u64) -> bool {
        self.active = true;
        if self.room() == 0 {
            return false;
        }
        let scan = self.due || last_dead != self.seen;
        self.due = false;
        self.seen = last_dead;
        scan
    }

    /// Scan again at the next chance (the retry timer fired).
    pub(super) fn wake(&mut self) {
        self.due = true;
    }

    /// How many more may be published now.
    pub(super) fn room(&self) -> usize {
        MAX_IN_FLIGHT.saturating_sub(self.inflight.len())
    }

    /// Whether dead letter `id` may be published now: not in flight, not being
    /// settled, and past its retry pause if it failed.
    pub(super) fn is_free(&self, id: u64, now: Instant) -> bool {
        !self.inflight.contains(&id)
            && !self.settling.contains(&id)
            && self.retry.get(&id).is_none_or(|r| r.at <= now)
    }

    /// `ids` were published: the round their answer must belong to.
    pub(super) fn sent(&mut self, ids: &[u64]) -> u64 {
        self.inflight.extend(ids.iter().copied());
        self.round
    }

    /// The answers of round `round`: the dead letters to settle, in order. Failed ones
    /// wait their backoff.
    pub(super) fn answered(
        &mut self,
        round: u64,
        outcomes: impl IntoIterator<Item = (u64, Outcome)>,
        now: Instant,
    ) -> Vec<u64> {
        if round != self.round {
            return Vec::new();
        }
        self.due = true;
        let mut settle = Vec::new();
        for (id, o) in outcomes {
            self.inflight.remove(&id);
            match o {
                Outcome::Confirmed | Outcome::Dropped => {
                    self.retry.remove(&id);
                    self.settling.insert(id);
                    settle.push(id);
                }
                Outcome::Failed => {
                    let tries = self.retry.get(&id).map_or(0, |r| r.tries) + 1;
                    let at = now + backoff(tries);
                    self.retry.insert(id, Retry { tries, at });
                }
            }
        }
        if !settle.is_empty() && self.retry.is_empty() {
            self.warned = false;
        }
        settle
    }

    /// True the first time failures are to be logged (again after all went well).
    pub(super) fn warn_once(&mut self) -> bool {
        !std::mem::replace(&mut self.warned, true)
    }

    /// The `DeadSettled` of `ids` committed (`ok`) or not: not committed, they are
    /// free to go again (a duplicate at worst); committed, they leave with the
    /// machine's next read ([`forget_gone`](Self::forget_gone)).
    pub(super) fn settle_done(&mut self, ids: &[u64], ok: bool) {
        if !ok {
            for id in ids {
                self.settling.remove(id);
            }
            self.due = true;
        }
    }

    /// Forgets the dead letters the machine no longer keeps (`kept` says which it
    /// does).
    pub(super) fn forget_gone(&mut self, kept: impl Fn(u64) -> bool) {
        self.settling.retain(|id| kept(*id));
        let inflight = &self.inflight;
        self.retry
            .retain(|id, _| kept(*id) || inflight.contains(id));
    }

    /// The earliest retry still to come (after `now`) of a dead letter not in flight:
    /// when the timer is to wake the republisher.
    pub(super) fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.retry
            .iter()
            .filter(|(id, r)| r.at > now && !self.inflight.contains(id))
            .map(|(_, r)| r.at)
            .min()
    }
}

/// One kept dead message picked to go: death number, message, reason, death time.
type Going = (u64, Arc<Message>, Reason, Option<u64>);

impl QueueActor {
    /// Republishes the kept dead messages that may go now (see the module docs); a
    /// node that does not lead and serve drops its round.
    pub(in crate::broker::queue::actor) fn replica_republish(&mut self, ctx: &mut Context<Self>) {
        let r = self.replica();
        if !r.limits.at_least_once {
            return;
        }
        if !(r.serving && r.leads()) {
            if r.dlx.is_active() {
                if let Some(h) = r.dlx.reset() {
                    ctx.cancel_future(h);
                }
            }
            return;
        }
        let now = Instant::now();
        let group = r.group.clone();
        let dlx = &mut r.dlx;
        let picked: Vec<Going> = group
            .read(|q| {
                dlx.forget_gone(|id| q.is_kept_dead(id));
                if !dlx.should_scan(q.last_dead()) {
                    return Vec::new();
                }
                let room = dlx.room();
                q.dead_letters()
                    .filter(|d| dlx.is_free(d.id, now))
                    .take(room)
                    .map(|d| {
                        (
                            d.id,
                            d.message.shared(),
                            dead::reason_of(d.reason),
                            d.died_at_ms,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !picked.is_empty() {
            self.republish(picked, ctx);
        }
        self.replica_arm_dead_retry(ctx);
    }

    /// Publishes `picked` in batches, each answer awaited off the handler.
    fn republish(&mut self, picked: Vec<Going>, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.outbox.is_none() {
            // As at most once without a dead-letter exchange: dropped.
            tracing::warn!(queue = %self.name, dropped = picked.len(), "quorum queue (at-least-once): no dead-letter exchange is configured; its dead messages are dropped");
            let ids: Vec<u64> = picked.iter().map(|p| p.0).collect();
            let r = self.replica();
            let round = r.dlx.sent(&ids);
            let settle =
                r.dlx
                    .answered(round, ids.into_iter().map(|id| (id, Outcome::Dropped)), now);
            r.cmds.push_back(Cmd::DeadSettled(settle));
            return;
        }
        let now_ms = wall_ms();
        for chunk in picked.chunks(BATCH) {
            let ids: Vec<u64> = chunk.iter().map(|p| p.0).collect();
            let dead: Vec<(Arc<Message>, Reason, i64)> = chunk
                .iter()
                .map(|(_, m, why, at)| (m.clone(), *why, (at.unwrap_or(now_ms) / 1000) as i64))
                .collect();
            let round = self.replica().dlx.sent(&ids);
            let outbox = self.outbox.as_mut().expect("checked above");
            let Some(rx) = outbox.publish_confirmed(&dead) else {
                self.dead_answered(round, ids, Err("the dead-letter exchange does not exist"));
                continue;
            };
            let waited = tokio::time::timeout(CONFIRM_TIMEOUT, rx);
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(waited).map(move |res, act, ctx| {
                    if act.deleted || act.replica.is_none() {
                        return;
                    }
                    let answer = match res {
                        Ok(Ok(Ok(routed))) => Ok(routed),
                        Ok(Ok(Err(_))) | Ok(Err(_)) => {
                            Err("the dead-letter exchange failed or stopped")
                        }
                        Err(_) => Err("no answer from the dead-letter targets in time"),
                    };
                    act.dead_answered(round, ids, answer);
                    act.replica_dispatch(ctx);
                }),
            );
        }
    }

    /// The answer for the dead letters `ids` of round `round`: the confirmed ones
    /// settled with the leader's next entry, the others kept for a retry.
    fn dead_answered(&mut self, round: u64, ids: Vec<u64>, answer: Result<Vec<Routed>, &str>) {
        let name = self.name.clone();
        let r = self.replica();
        let (outcomes, why): (Vec<Outcome>, Option<String>) = match &answer {
            Ok(routed) if routed.len() == ids.len() => (
                routed.iter().map(outcome).collect(),
                routed
                    .iter()
                    .find(|x| outcome(x) == Outcome::Failed)
                    .map(failure),
            ),
            Ok(_) => (
                vec![Outcome::Failed; ids.len()],
                Some("a short answer".into()),
            ),
            Err(e) => (vec![Outcome::Failed; ids.len()], Some(e.to_string())),
        };
        if let Some(why) = why {
            if r.dlx.warn_once() {
                tracing::warn!(queue = %name, why = %why, "quorum queue (at-least-once): dead letters not confirmed by their targets; kept, and tried again");
            }
        }
        let settle = r
            .dlx
            .answered(round, ids.into_iter().zip(outcomes), Instant::now());
        if !settle.is_empty() {
            r.cmds.push_back(Cmd::DeadSettled(settle));
        }
    }

    /// Arms the retry timer for the earliest retry to come, unless armed for it or
    /// earlier.
    fn replica_arm_dead_retry(&mut self, ctx: &mut Context<Self>) {
        let r = self.replica();
        let now = Instant::now();
        let Some(at) = r.dlx.next_retry(now) else {
            return;
        };
        if r.dlx
            .timer
            .as_ref()
            .is_some_and(|(armed, _)| *armed <= at && *armed > now)
        {
            return;
        }
        if let Some((_, h)) = r.dlx.timer.take() {
            ctx.cancel_future(h);
        }
        let h = ctx.run_later(at - now, |act, ctx| {
            if act.deleted || act.replica.is_none() {
                return;
            }
            let r = act.replica();
            r.dlx.timer = None;
            r.dlx.wake();
            act.replica_dispatch(ctx);
        });
        r.dlx.timer = Some((at, h));
    }
}

#[cfg(test)]
#[path = "dlx_tests.rs"]
mod tests;
