//! When a consumer's extra credit goes back (the hysteresis of `credit`): the leader
//! gives it back only once the consumer has been idle for `credit::GIVE_BACK_AFTER`
//! since its client's last settlement (one timer per queue, for the earliest such
//! consumer), or at once when someone wants messages the queue has none ready for:
//! another consumer of the queue with room (seen as this actor sends), or a
//! `basic.get` (which then looks again once the give-back is committed). Also the
//! stale deliveries of an earlier leader's session that a follower's client settles.

use super::*;

/// What consumer `c` gives back now, if anything (`None`: nothing; an empty list:
/// only its credit was lowered). An idle consumer registered with the extra gives it
/// back when `credit::give_back` says so: its credit goes back to the prefetch (a
/// `Consume` queued first, else the machine would check the messages out to it
/// again) and what waits beyond that credit returns unsent (the latest first kept
/// back, so it keeps the earliest). One without the extra whose waiting checkouts
/// exceed its credit (a prefetch lowered) gives the excess back at once.
pub(super) fn give_back(
    c: &mut Consumer,
    cmds: &mut VecDeque<Cmd>,
    now: Instant,
    wanted: bool,
) -> Option<Vec<u64>> {
    // Wanted: a settlement of its on the way changes nothing (it frees the slot of
    // a message its client had; the extra would still wait).
    let settling = if wanted { 0 } else { c.settling };
    if !credit::idle(c.prefetch, c.auto_ack, c.unacked, settling) {
        return None;
    }
    let held = c.unacked.saturating_sub(c.stale);
    let keep = credit::kept(c.prefetch, held, c.waiting.len());
    if c.boosted {
        let idle_for = now.saturating_duration_since(c.settled_at);
        if !credit::give_back(true, idle_for, wanted) {
            return None;
        }
        c.boosted = false;
        cmds.push_back(Cmd::Consume {
            consumer: c.id,
            credit: credit::registered(c.prefetch, false),
            origin: c.origin,
            first: false,
        });
    } else if keep == c.waiting.len() {
        return None;
    }
    Some(c.waiting.drain(keep..).map(|p| p.0).collect())
}

impl Replica {
    /// Whether a consumer of the queue would take a message now and the queue has
    /// none ready for it (with a single active consumer, only the active one counts).
    pub(super) fn wanted(&self) -> bool {
        let Some((ready, active)) = self.group.read(|q| (q.ready_len(), q.active_consumer()))
        else {
            return false;
        };
        ready == 0
            && self.consumers.iter().any(|c| {
                credit::wants(c.prefetch, c.auto_ack, c.unacked, c.window, c.waiting.len())
                    && active.is_none_or(|a| a == self.key(c.id))
            })
    }

    /// A `basic.get` found nothing ready: every idle consumer's extra goes back now.
    /// Answers a receiver told once that is committed, or `None` if nothing went back.
    pub(super) fn give_back_for_get(&mut self) -> Option<oneshot::Receiver<()>> {
        let now = Instant::now();
        let mut last = None;
        for c in self.consumers.iter_mut() {
            let Some(ids) = give_back(c, &mut self.cmds, now, true) else {
                continue;
            };
            if !ids.is_empty() {
                self.cmds.push_back(Cmd::GiveBack {
                    ids,
                    then: Vec::new(),
                });
                last = Some(self.cmds.len() - 1);
            }
        }
        let (tx, rx) = oneshot::channel();
        // Commands commit in the order written: the last give-back's commit is the
        // end of them all.
        match self.cmds.get_mut(last?) {
            Some(Cmd::GiveBack { then, .. }) => then.push(tx),
            _ => return None,
        }
        Some(rx)
    }

    /// The follower's client of `owner`'s consumer `tag` settled `n` deliveries of an
    /// earlier leader's session: they no longer count against its prefetch (they name
    /// no checkout here; the takeover returned their messages).
    pub(super) fn unhold(&mut self, owner: OwnerId, tag: &str, n: u32) {
        if let Some(c) = self
            .consumers
            .iter_mut()
            .find(|c| c.owner == owner && *c.tag == *tag)
        {
            let n = (n as usize).min(c.stale);
            c.stale -= n;
            c.unacked = c.unacked.saturating_sub(n);
        }
    }
}

impl QueueActor {
    /// Arms the timer for the earliest give-back due (an idle consumer with the
    /// extra and something waiting), while this node serves; disarms it otherwise.
    pub(super) fn replica_arm_give_back(&mut self, ctx: &mut Context<Self>) {
        let r = self.replica();
        let due = r
            .consumers
            .iter()
            .filter(|c| {
                r.serving
                    && c.boosted
                    && !c.waiting.is_empty()
                    && credit::idle(c.prefetch, c.auto_ack, c.unacked, c.settling)
            })
            .map(|c| c.settled_at + credit::GIVE_BACK_AFTER)
            .min();
        match (due, &r.give_back) {
            (Some(d), Some((at, _))) if d == *at => return,
            (None, None) => return,
            _ => {}
        }
        if let Some((_, h)) = r.give_back.take() {
            ctx.cancel_future(h);
        }
        let Some(at) = due else {
            return;
        };
        let wait = at.saturating_duration_since(Instant::now());
        let h = ctx.run_later(wait, |act, ctx| {
            if act.deleted {
                return;
            }
            act.replica().give_back = None;
            act.replica_dispatch(ctx);
        });
        r.give_back = Some((at, h));
    }
}
