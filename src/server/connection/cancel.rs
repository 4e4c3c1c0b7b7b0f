//! A client's `cancel` of one of its consumers, answered after the deliveries the
//! queue sent before it had the cancel.
//!
//! A request holds the connection (`ctx.wait`), mailbox included, so those deliveries
//! wait in the mailbox while the cancel goes to the queue. Answered at once, they came
//! after the `ok`, for a consumer the client had forgotten (it drops such deliveries):
//! auto-acked ones, which have left the queue, were lost. So the `ok` is itself a
//! message to this actor, behind them in the mailbox, and the channel core keeps
//! writing the consumer's deliveries until then (`Channel::begin_cancel`, as the AMQP
//! front end does). Frames read meanwhile wait ([`Held`]): replies come in request
//! order and frames take effect in the order they were sent (PROTOCOL.md 8.1).

use super::bounded::bounded;
use super::Connection;
use crate::protocol::wire::ReplyBody;
use actix::fut::{wrap_future, LocalBoxActorFuture};
use actix::prelude::*;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Frame batches waiting for a cancel's answer.
#[derive(Default)]
pub(super) struct Held {
    /// A cancel's answer is on its way ([`CancelAnswered`]): no frame is handled.
    holding: bool,
    /// Batches to handle in order once nothing holds them: (frames, first to handle).
    batches: VecDeque<(Vec<Bytes>, usize)>,
    /// [`Connection::next_batch`] is handling held batches (a batch handled from there
    /// ends by calling it again: that call leaves the next to its loop, so that many
    /// held batches do not nest as deep on the stack).
    draining: bool,
}

/// The queue has the cancel of `tag`, asked by request `id`; what it sent before is
/// ahead of this in the mailbox.
#[derive(Message)]
#[rtype(result = "()")]
struct CancelAnswered {
    id: u64,
    tag: String,
}

impl Connection {
    /// The `cancel` request `id` of consumer `tag` (an unknown tag is not an error).
    pub(super) fn cancel_consumer(
        &mut self,
        id: u64,
        tag: String,
        limit: Duration,
    ) -> LocalBoxActorFuture<Self, ()> {
        let Some(queue) = self.channel.begin_cancel(&tag).and_then(|c| c.queue) else {
            self.channel.end_cancel(&tag);
            return Box::pin(
                actix::fut::ready(()).map(move |_, act: &mut Self, _| act.reply(id, ReplyBody::Ok)),
            );
        };
        // Sent now, through the queue's fast lane: in order with this connection's acks.
        let done = queue.cancel(self.owner, &tag);
        let answered = bounded("cancel", limit, async move {
            let _ = done.await;
            Ok(())
        });
        Box::pin(
            wrap_future::<_, Self>(answered).map(move |res, act, ctx| match res {
                Ok(()) => {
                    act.held.holding = true;
                    // Through the mailbox: behind every delivery sent before the
                    // queue had the cancel.
                    ctx.address().do_send(CancelAnswered { id, tag });
                }
                Err(e) => {
                    act.channel.end_cancel(&tag);
                    act.error(Some(id), &e);
                }
            }),
        )
    }

    /// Handles `frames[from..]` now, or after the batches held before them.
    pub(super) fn frames_in_order(
        &mut self,
        frames: Vec<Bytes>,
        from: usize,
        ctx: &mut Context<Self>,
    ) {
        if !self.held.holding && self.held.batches.is_empty() {
            self.on_frames(frames, from, ctx);
            return;
        }
        self.held.batches.push_back((frames, from));
        self.next_batch(ctx);
    }

    /// Handles `frames[from..]`, the rest of a batch whose request was just answered:
    /// first of what is held when a cancel's answer now holds the frames.
    pub(super) fn rest_of_batch(
        &mut self,
        frames: Vec<Bytes>,
        from: usize,
        ctx: &mut Context<Self>,
    ) {
        if self.held.holding {
            self.held.batches.push_front((frames, from));
        } else {
            self.on_frames(frames, from, ctx);
        }
    }

    /// After a batch: the next one held, unless a request or a cancel's answer holds
    /// the frames (its end comes back here).
    pub(super) fn next_batch(&mut self, ctx: &mut Context<Self>) {
        if self.held.draining {
            return;
        }
        self.held.draining = true;
        while !self.held.holding && !ctx.waiting() {
            let Some((frames, from)) = self.held.batches.pop_front() else {
                break;
            };
            self.on_frames(frames, from, ctx);
        }
        self.held.draining = false;
    }
}

impl Handler<CancelAnswered> for Connection {
    type Result = ();

    fn handle(&mut self, msg: CancelAnswered, ctx: &mut Self::Context) {
        self.channel.end_cancel(&msg.tag);
        self.held.holding = false;
        if self.closing {
            return;
        }
        self.reply(msg.id, ReplyBody::Ok);
        self.next_batch(ctx);
        self.channel.flush_settles();
        self.flush();
    }
}
