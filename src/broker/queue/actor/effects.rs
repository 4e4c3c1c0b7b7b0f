//! What every handler of the queue actor ends with ([`QueueActor::after`]): the backlog
//! refilling the head, dead letters out, the memory gauge level with what the queue holds, the storage side committed,
//! and the timers armed: one deadline timer for the state's earliest deadline (TTL,
//! delay, consumer timeout), and the `x-expires` check while no consumer is attached.
//! Also the queue's clock.

use super::*;
use crate::broker::queue::state::Dead;

impl QueueActor {
    /// Milliseconds on the queue's clock.
    pub(super) fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Milliseconds on the queue's clock, rounded up: what a message's deadlines count
    /// from, so that truncation never makes a delay or a TTL end early.
    pub(super) fn stamp(&self) -> Millis {
        let e = self.epoch.elapsed();
        e.as_millis() as Millis + Millis::from(e.subsec_nanos() % 1_000_000 != 0)
    }

    /// What every handler ends with: dead letters out, gauge level, timers armed, flow.
    pub(super) fn after(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        self.refill(ctx);
        if self.deleted {
            return;
        }
        self.durable.commit(&mut self.state);
        self.send_dead_letters(ctx);
        self.reconcile_gauge();
        self.arm_timer(ctx);
        self.watch_expires(ctx);
        self.update_flow();
    }

    /// A durable queue with a backlog (see [`super::super::backlog`]): moves its front
    /// into the head as the head drains, delivering what moved, and reads the bodies
    /// left on disk; their arrival is handled like any other event.
    pub(super) fn refill(&mut self, ctx: &mut Context<Self>) {
        let waiting = self.state.backlog_len();
        if waiting == 0 {
            return;
        }
        let now = self.now();
        let request = self.state.refill(now);
        if self.state.backlog_len() < waiting {
            self.dispatch_ready(ctx);
        }
        let Some(request) = request else {
            return;
        };
        let Some(read) = self.durable.read(&request) else {
            self.state.read_failed(request.epoch);
            return;
        };
        let epoch = request.epoch;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(read).map(move |result, act, ctx| {
                if act.deleted {
                    return;
                }
                match result {
                    Ok(pages) => {
                        act.durable.paged_in(&mut act.state, epoch, pages);
                        act.refill(ctx);
                        act.paged_in.notify_waiters();
                    }
                    Err(e) => {
                        // The store has failed (and raised its alarm): try again later.
                        tracing::error!(queue = %act.name, error = %e, "cannot read the backlog back from the store; retrying in 1 s");
                        act.state.read_failed(epoch);
                        ctx.run_later(Duration::from_secs(1), |act, ctx| act.after(ctx));
                        return;
                    }
                }
                act.after(ctx);
            }),
        );
    }

    /// Brings the gauge level with what the queue holds.
    pub(super) fn reconcile_gauge(&mut self) {
        let held = self.state.bytes()
            + self.outbox.as_ref().map_or(0, |o| o.held_bytes())
            + self.stream.as_ref().map_or(0, |s| s.ram_bytes() as usize);
        if held > self.accounted {
            self.gauge.add(held - self.accounted);
        } else {
            self.gauge.sub(self.accounted - held);
        }
        self.accounted = held;
    }

    /// Republishes the messages the state dead-lettered; each batch's answer is awaited
    /// off the handler.
    pub(super) fn send_dead_letters(&mut self, ctx: &mut Context<Self>) {
        let dead = self.state.take_dead();
        self.dead_letter(dead, ctx);
    }

    /// Republishes `dead` (and what waits in the outbox) to the dead-letter exchange,
    /// if the queue has one; each batch's answer is awaited off the handler.
    pub(super) fn dead_letter(&mut self, dead: Vec<Dead>, ctx: &mut Context<Self>) {
        let Some(outbox) = &mut self.outbox else {
            return;
        };
        if !dead.is_empty() {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            outbox.add(dead, secs);
        }
        for (answer, bytes) in outbox.send() {
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(answer).map(move |_, act, ctx| {
                    if let Some(o) = &mut act.outbox {
                        o.done(bytes);
                    }
                    if act.replica.is_some() {
                        act.replica_dead_letters(ctx);
                    } else {
                        act.after(ctx);
                    }
                }),
            );
        }
    }

    /// Arms the one deadline timer for the state's earliest deadline, unless it is
    /// armed for that or earlier already.
    pub(super) fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.state.next_deadline() else {
            if let Some((_, h)) = self.timer.take() {
                ctx.cancel_future(h);
            }
            return;
        };
        if self.timer.is_some_and(|(armed, _)| armed <= at) {
            return;
        }
        if let Some((_, h)) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let wait = at.saturating_sub(self.now());
        let h = if wait == 0 {
            // Due already (more work than one chunk): go on after a yield.
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(tokio::task::yield_now())
                    .map(|_, act, ctx| act.on_timer(ctx)),
            )
        } else {
            ctx.run_later(Duration::from_millis(wait), |act, ctx| act.on_timer(ctx))
        };
        self.timer = Some((at, h));
    }

    /// The deadline timer fired: delayed messages become visible, expired ones leave,
    /// timed-out deliveries come back.
    pub(super) fn on_timer(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        if self.deleted {
            return;
        }
        self.drain_inbox(ctx);
        let now = self.now();
        self.state.promote_due(now, TIMER_CHUNK);
        self.state.expire_due(now, TIMER_CHUNK);
        let timed_out = self.state.timeout_due(now, TIMER_CHUNK);
        if timed_out > 0 {
            tracing::debug!(queue = %self.name, timed_out, "unacked deliveries past x-consumer-timeout requeued");
        }
        self.dispatch_ready(ctx);
        self.state.enforce_limits();
        self.after(ctx);
    }

    /// `x-expires`: arms the unused-queue check while no consumer is attached.
    pub(super) fn watch_expires(&mut self, ctx: &mut Context<Self>) {
        let Some(ms) = self.state.config().expires else {
            return;
        };
        let attached = !self.state.consumers().is_empty();
        if self.had_consumers && !attached {
            // The last consumer just left: that was a use.
            self.last_used = Instant::now();
        }
        self.had_consumers = attached;
        if attached || self.expires_check.is_some() {
            return;
        }
        let wait =
            (self.last_used + Duration::from_millis(ms)).saturating_duration_since(Instant::now());
        self.expires_check = Some(ctx.run_later(wait, move |act, ctx| {
            act.expires_check = None;
            if act.deleted || !act.state.consumers().is_empty() {
                return;
            }
            let unused = act.last_used.elapsed();
            if unused >= Duration::from_millis(ms) {
                tracing::debug!(queue = %act.name, ?unused, "x-expires: queue unused");
                act.delete(ctx, "unused for its x-expires period");
            } else {
                act.watch_expires(ctx);
            }
        }));
    }
}
