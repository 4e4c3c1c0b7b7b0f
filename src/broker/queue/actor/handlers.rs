//! The queue actor's message handlers: each turns one actor message into a
//! [`QueueState`](super::super::state::QueueState) change, then lets the actor deliver,
//! arm timers and account memory (see the parent module).

use super::*;

impl Handler<Enqueue> for QueueActor {
    type Result = Response<Result<Enqueued, BrokerError>>;

    fn handle(&mut self, mut msg: Enqueue, ctx: &mut Self::Context) -> Self::Result {
        self.drain_inbox(ctx);
        let answer = msg.answer.take();
        if self.stream.is_some() && !self.deleted {
            if let Some(answer) = answer {
                // The writer thread answers the publisher after its fsync.
                self.stream_enqueue_answering(msg, answer, ctx);
                return Response::reply(Ok(Enqueued::default()));
            }
        }
        let stored = self.enqueue(msg, ctx);
        match answer {
            None => Response::fut(stored),
            // This queue answers the publisher (the batch's one destination).
            Some(answer) => Response::fut(async move {
                let r = stored.await;
                answer.finish(&r);
                r
            }),
        }
    }
}

impl QueueActor {
    /// Takes the batch; the future answers once it is stored (the publisher's confirm).
    fn enqueue(
        &mut self,
        msg: Enqueue,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Enqueued, BrokerError>> {
        if self.deleted {
            let e = self.not_found();
            return Box::pin(async move { Err(e) });
        }
        if self.stream.is_some() {
            return self.stream_enqueue(msg, ctx);
        }
        if self.replica.is_some() {
            return self.replica_enqueue(msg);
        }
        if let Some(home) = &self.remote {
            // The answer (the publisher's confirm) is the home queue's; the home's flow
            // control must know a publisher whose acks go there through its session.
            let own_acks = self.standin.acks_from(msg.publisher);
            return Box::pin(home.publish(msg.messages, own_acks));
        }
        let now = self.stamp();
        let publisher = msg.publisher;
        let mut refused = Vec::new();
        for (i, m) in msg.messages.into_iter().enumerate() {
            if self.durable.push(&mut self.state, i as u32, m, now) == Pushed::Refused {
                refused.push(i as u32);
            }
        }
        // Dispatch first: a message a consumer takes at once does not count against a
        // length limit (nor expire with a TTL of 0).
        self.dispatch_ready(ctx);
        self.state.enforce_limits();
        self.after(ctx);
        // The answer (the publisher's confirm) waits for the persistent messages to be
        // stored; the queue does not.
        let stored = self.durable.take_stored();
        let answer = Enqueued {
            reason: (!refused.is_empty()).then(|| self.full_error()),
            refused,
        };
        if self.flow_should_close() {
            // The answer (and with it the publisher's window) waits until the
            // consumers have brought the depth down to half the threshold: a fast
            // producer is held to what the consumers take (nothing, if they never ack),
            // instead of the broker filling up.
            let rx = close_flow(&self.flow);
            // Except for a publisher that also consumes here with acks: it cannot
            // send its acks while its publish window is full, so an unbounded wait
            // could lock it for good. Held at most FLOW_MAX_HOLD, it is slowed, never
            // stuck (the one case the threshold does not bound: Settings.toml).
            let own_acks = msg.own_acks || self.acks_from(publisher);
            return Box::pin(async move {
                let answer = durable::confirm(stored, answer).await;
                hold_until_reopened(rx, own_acks).await;
                Ok(answer)
            });
        }
        Box::pin(async move { Ok(durable::confirm(stored, answer).await) })
    }
}

impl Handler<Consume> for QueueActor {
    /// At once, but for a stream's stand-in: answered once the home attached it.
    type Result = Response<Result<Arc<str>, BrokerError>>;

    fn handle(&mut self, msg: Consume, ctx: &mut Self::Context) -> Self::Result {
        self.drain_inbox(ctx);
        if self.deleted {
            return Response::reply(Err(self.not_found()));
        }
        if self.remote.is_some() && self.remote_stream {
            return self.standin_stream_consume(msg, ctx);
        }
        Response::reply(self.consume(msg, ctx))
    }
}

impl QueueActor {
    /// Attaches a consumer here (or, on a node that does not serve the queue, routes
    /// it to its session) and answers its tag.
    fn consume(&mut self, msg: Consume, ctx: &mut Context<Self>) -> Result<Arc<str>, BrokerError> {
        if self.stream.is_some() {
            return self.stream_consume(msg, ctx);
        }
        if self.replica.is_some() {
            return self.replica_consume(msg, ctx);
        }
        if self.remote.is_some() {
            let consumed = self.remote_consume(msg, None);
            self.remote_wait(ctx);
            return consumed;
        }
        let priority = consumer_priority(&msg.options.arguments, &self.name)?;
        let exclusive_attached = self
            .exclusive_consumer
            .is_some_and(|id| self.state.consumers().iter().any(|c| c.id == id));
        if exclusive_attached {
            return Err(BrokerError::locked(format!(
                "queue '{}' in vhost '{}' has an exclusive consumer",
                self.name, self.vhost
            )));
        }
        if msg.options.exclusive && !self.state.consumers().is_empty() {
            return Err(BrokerError::locked(format!(
                "queue '{}' in vhost '{}' already has consumers: exclusive consume refused",
                self.name, self.vhost
            )));
        }
        let tag: Arc<str> = if msg.options.tag.is_empty() {
            self.tag_seq += 1;
            Arc::from(format!("amq.ctag-{}-{}", self.incarnation, self.tag_seq))
        } else {
            Arc::from(msg.options.tag.as_str())
        };
        if self
            .state
            .consumers()
            .iter()
            .any(|c| c.owner == msg.owner && c.tag == tag)
        {
            return Err(BrokerError::not_allowed(format!(
                "consumer tag '{tag}' is already in use on queue '{}'",
                self.name
            )));
        }
        let id = self.state.add_consumer(NewConsumer {
            tag: tag.clone(),
            owner: msg.owner,
            handle: ConsumerHandle {
                deliver: msg.deliver,
                cancelled: msg.cancelled,
            },
            prefetch: msg.options.prefetch,
            auto_ack: msg.options.auto_ack,
            window: msg.window,
            priority,
        });
        if msg.options.exclusive {
            self.exclusive_consumer = Some(id);
        }
        self.dispatch(ctx);
        Ok(tag)
    }
}

impl Handler<Cancel> for QueueActor {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        self.drain_inbox(ctx);
        if let Some(s) = self.stream.as_mut() {
            if s.cancel(msg.owner, &msg.tag) {
                s.flush_offsets();
                // A consumer group's next member may have taken over.
                self.stream_dispatch(ctx);
            }
            return Ok(());
        }
        if self.replica.is_some() {
            self.replica_cancel(msg.owner, &msg.tag);
            self.replica_dispatch(ctx);
            return Ok(());
        }
        if self.remote.is_some() {
            drop(self.remotes().cancel(msg.owner, &msg.tag, None));
            self.remote_wait(ctx);
            return Ok(());
        }
        let id = self
            .state
            .consumers()
            .iter()
            .find(|c| c.owner == msg.owner && *c.tag == *msg.tag)
            .map(|c| c.id);
        // Cancelling an unknown tag is not an error (AMQP basic.cancel).
        if let Some(id) = id {
            self.state.remove_consumer(id);
            if self.maybe_auto_delete(ctx) {
                return Ok(());
            }
        }
        // With a single active consumer, the next one may take over now.
        self.dispatch(ctx);
        Ok(())
    }
}

impl Handler<Settle> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, ctx: &mut Self::Context) {
        self.drain_inbox(ctx);
        if let Some(s) = self.stream.as_mut() {
            s.settle(msg.owner, &msg.ids, msg.settlement);
            return self.stream_dispatch(ctx);
        }
        if self.replica.is_some() {
            self.replica_settle(msg.owner, &msg.ids, msg.settlement);
            return self.replica_dispatch(ctx);
        }
        if self.remote.is_some() {
            self.remotes().settle(msg.owner, &msg.ids, msg.settlement);
            return self.remote_wait(ctx);
        }
        let now = self.now();
        let unknown = self.state.settle(msg.owner, &msg.ids, msg.settlement, now);
        self.unknown_ids(unknown);
        self.dispatch(ctx);
    }
}

impl QueueActor {
    /// `owner` is released: its waiting `get`s, if any, will answer empty.
    pub(super) fn note_release(&mut self, owner: OwnerId) {
        if self.waiting_gets.contains_key(&owner) {
            self.released_waiters.insert(owner);
        }
    }

    /// A `get` of `owner` stops waiting; answers whether `owner` was released
    /// meanwhile.
    fn end_wait(&mut self, owner: OwnerId) -> bool {
        let Some(n) = self.waiting_gets.get_mut(&owner) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.waiting_gets.remove(&owner);
            return self.released_waiters.remove(&owner);
        }
        self.released_waiters.contains(&owner)
    }

    /// A `get`: the next ready message, if any.
    fn get(&mut self, msg: &Get, ctx: &mut Context<Self>) -> GetResult {
        if self.drain_inbox(ctx) {
            self.dispatch_ready(ctx);
        }
        if self.deleted {
            return Err(self.not_found());
        }
        self.last_used = Instant::now();
        let now = self.now();
        let mut got = self.state.get(msg.owner, msg.auto_ack, now);
        if got.is_none() && self.state.backlog_len() > 0 {
            // The head ran dry (or expired on the way): what the backlog holds in
            // memory moves in at once.
            self.refill(ctx);
            got = self.state.get(msg.owner, msg.auto_ack, now);
        }
        if let Some((d, _)) = &mut got {
            self.durable
                .on_delivered(std::slice::from_ref(d), msg.auto_ack);
            if self.state.config().quorum {
                crate::broker::queue::quorum::mark_redelivery(d);
            }
        }
        self.after(ctx);
        Ok(got)
    }
}

type GetResult = Result<Option<(Delivery, u64)>, BrokerError>;

impl Handler<Get> for QueueActor {
    type Result = ResponseActFuture<Self, GetResult>;

    fn handle(&mut self, msg: Get, ctx: &mut Self::Context) -> Self::Result {
        if self.remote.is_some() {
            self.drain_inbox(ctx);
            return self.remote_get(msg, ctx);
        }
        if self.replica.is_some() {
            self.drain_inbox(ctx);
            return self.replica_get(msg, ctx);
        }
        if self.stream.is_some() {
            // RabbitMQ refuses basic.get on a stream with NOT_IMPLEMENTED (540, which
            // UNKNOWN_OPERATION maps to): reading is by offset, with a consumer.
            return Box::pin(actix::fut::ready(Err(BrokerError::new(
                ErrorCode::UnknownOperation,
                format!(
                    "basic.get is not supported by stream queue '{}' in vhost '{}': consume with an x-stream-offset instead",
                    self.name, self.vhost
                ),
            ))));
        }
        let got = self.get(&msg, ctx);
        if !matches!(got, Ok(None)) || self.state.ready_len() == 0 {
            return Box::pin(actix::fut::ready(got));
        }
        // The head is empty while the backlog is being read back from the store: the
        // answer waits for the read (a while at most: the store may have failed) rather
        // than saying "empty" with messages queued. Registered now, so a read answered
        // before this future is first polled still wakes it.
        let paged_in = self.paged_in.clone().notified_owned();
        let wait = tokio::time::timeout(Duration::from_secs(5), paged_in);
        let owner = msg.owner;
        *self.waiting_gets.entry(owner).or_default() += 1;
        Box::pin(
            actix::fut::wrap_future::<_, Self>(wait).map(move |_, act, ctx| {
                if act.end_wait(owner) {
                    // Its connection closed meanwhile: a delivery now would be held
                    // for an owner that is gone.
                    return Ok(None);
                }
                act.get(&msg, ctx)
            }),
        )
    }
}

impl Handler<Release> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) {
        self.drain_inbox(ctx);
        if let Some(s) = self.stream.as_mut() {
            if s.release(msg.0) > 0 {
                s.flush_offsets();
            }
            return self.stream_dispatch(ctx);
        }
        if self.replica.is_some() {
            self.replica_release(msg.0);
            return self.replica_dispatch(ctx);
        }
        if self.remote.is_some() {
            return self.remotes().release(msg.0);
        }
        self.note_release(msg.0);
        let now = self.now();
        let removed = self.state.release(msg.0, now);
        if !removed.is_empty() && self.maybe_auto_delete(ctx) {
            return;
        }
        self.dispatch(ctx);
    }
}

impl Handler<ReturnCredit> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ReturnCredit, ctx: &mut Self::Context) {
        self.drain_inbox(ctx);
        if let Some(s) = self.stream.as_mut() {
            s.return_credit(msg.consumer, msg.amount);
            return self.stream_dispatch(ctx);
        }
        if self.replica.is_some() {
            self.replica_credit(msg.consumer, msg.amount);
            return self.replica_dispatch(ctx);
        }
        if self.remote.is_some() {
            self.remotes().credit(msg.consumer, msg.amount);
            return self.remote_wait(ctx);
        }
        self.state.return_credit(msg.consumer, msg.amount);
        self.dispatch(ctx);
    }
}

impl Handler<Wake> for QueueActor {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Self::Context) {
        if self.replica.is_some() {
            if self.drain_inbox(ctx) {
                self.replica_dispatch(ctx);
            }
            return;
        }
        if self.stream.is_some() {
            if self.drain_inbox(ctx) {
                self.stream_dispatch(ctx);
            }
            return;
        }
        if self.drain_inbox(ctx) {
            self.dispatch(ctx);
        }
    }
}
