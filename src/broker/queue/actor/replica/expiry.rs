//! Message TTLs of a replicated quorum queue: the leader's timer for the head.
//!
//! The group's machine has no clock: time reaches it in committed `Clock` entries only
//! (the leader writes one before each publish batch, so TTLs count from the leader's
//! time of the write). Only the head of the queue expires (as in RabbitMQ's quorum
//! queues), so the leader arms one timer for the head's deadline and, when it passes,
//! writes a `Clock` of its wall clock: applying it, every member finds the same
//! messages dead (`expired`), which this node then dead-letters (see `dead`). A
//! message may so be checked out to a consumer in the few milliseconds between its
//! deadline and the commit of that `Clock`; a `basic.get` passes it over instead, and
//! writes its own `Clock` (`Replica::pick_for_get`, the `Cmd::Get` entry).

use super::*;
use crate::cluster::quorum::group::wall_ms;

impl QueueActor {
    /// Arms the expiry timer for the head's deadline while this node serves the
    /// queue; disarms it otherwise.
    pub(super) fn replica_arm_expiry(&mut self, ctx: &mut Context<Self>) {
        let r = self.replica();
        let due = match r.serving {
            true => r.group.read(|q| q.head_deadline()).flatten(),
            false => None,
        };
        match (due, r.expiry) {
            // Armed for it, or fired and its `Clock` not answered yet.
            (Some(d), Some((at, _))) if d == at => return,
            (None, None) => return,
            _ => {}
        }
        if let Some((_, Some(h))) = r.expiry.take() {
            ctx.cancel_future(h);
        }
        let Some(deadline) = due else {
            return;
        };
        // Alive through its deadline's millisecond: due once the clock is past it.
        let wait = deadline.saturating_add(1).saturating_sub(wall_ms());
        let h = ctx.run_later(Duration::from_millis(wait), move |act, ctx| {
            if act.deleted {
                return;
            }
            let r = act.replica();
            if r.expiry.is_some_and(|(at, _)| at == deadline) && r.serving {
                r.expiry = Some((deadline, None));
                r.cmds.push_back(Cmd::Clock(wall_ms()));
                act.replica_pump(ctx);
            }
        });
        r.expiry = Some((deadline, Some(h)));
    }
}
