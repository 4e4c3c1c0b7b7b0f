//! A `basic.get` on the leader: the first live ready message, handed out in a
//! committed `Deliver`. One that finds nothing ready while consumers hold messages
//! idle beyond their prefetch (their extra credit) has that given back at once, and
//! looks again once the give-back is committed (`extra`), as RabbitMQ's quorum
//! queues, which check nothing out beyond a consumer's prefetch, would find them.

use super::*;

/// How long a get waits, in pauses, for a takeover of the group's leadership to finish
/// (returning an earlier leader's checkouts) before it is refused: 10 s.
const GET_TAKEOVER_TRIES: u32 = 200;
const GET_TAKEOVER_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

impl QueueActor {
    /// A `basic.get` (a use of the queue, for `x-expires`) on the leader: the first
    /// live ready message, once its `Deliver` is committed.
    pub(in crate::broker::queue::actor) fn replica_get(
        &mut self,
        msg: Get,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Option<(Delivery, u64)>, BrokerError>> {
        if let Some(lease) = self.replica().lease.as_mut() {
            lease.used(std::time::Instant::now());
        }
        self.replica_get_after(msg, 0, ctx)
    }

    /// [`replica_get`](Self::replica_get), `tries` pauses into a takeover.
    fn replica_get_after(
        &mut self,
        msg: Get,
        tries: u32,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Option<(Delivery, u64)>, BrokerError>> {
        if !self.replica().leads() {
            return self.remote_get(msg, ctx);
        }
        if !self.replica().serving {
            // Leading, but still taking over (returning an earlier leader's checkouts):
            // the get waits for it, as a consumer does, within a bound.
            if tries < GET_TAKEOVER_TRIES {
                return Box::pin(
                    actix::fut::wrap_future(tokio::time::sleep(GET_TAKEOVER_PAUSE)).then(
                        move |_, act: &mut Self, ctx| act.replica_get_after(msg, tries + 1, ctx),
                    ),
                );
            }
            let e = self.not_leader();
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let r = self.replica();
        let Some(picked) = r.pick_for_get() else {
            // Looked once more at most, after the give-back (tries at the bound).
            let given = match tries < GET_TAKEOVER_TRIES {
                true => r.give_back_for_get(),
                false => None,
            };
            let Some(given) = given else {
                return Box::pin(actix::fut::ready(Ok(None)));
            };
            self.replica_pump(ctx);
            return Box::pin(
                actix::fut::wrap_future(given).then(move |_, act: &mut Self, ctx| {
                    act.replica_get_after(msg, GET_TAKEOVER_TRIES, ctx)
                }),
            );
        };
        let consumer = r.next_consumer;
        r.next_consumer += 1;
        r.pending.insert(picked.0);
        let (tx, rx) = oneshot::channel();
        r.cmds.push_back(Cmd::Get {
            consumer,
            owner: msg.owner,
            auto_ack: msg.auto_ack,
            picked,
            answer: tx,
            tries: 0,
        });
        self.replica_pump(ctx);
        Box::pin(actix::fut::wrap_future::<_, Self>(async move {
            rx.await.unwrap_or_else(|_| {
                Err(BrokerError::internal(
                    "quorum queue: the get was not committed",
                ))
            })
        }))
    }
}
