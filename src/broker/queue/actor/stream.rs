//! The queue actor's stream side: when the queue is a stream, its handlers hand their
//! work to the [`StreamState`] here instead of the classic [`QueueState`] (one branch
//! per actor message; the classic path is unchanged). Deliveries go out as they do for
//! a classic queue ([`Deliver`] with transport [`Credit`]), so every front end consumes
//! from a stream unchanged.

use super::*;
use crate::broker::stream::args::{self as stream_args};
use crate::broker::stream::group;
use crate::broker::stream::{NewStreamConsumer, StreamState};

/// How often a stream applies `x-max-age` and stores changed consumer offsets.
const STREAM_TICK: Duration = Duration::from_secs(1);

/// The stream body of a queue actor.
pub(crate) type Stream = Box<StreamState<ConsumerHandle>>;

/// A stream consumer's options checked (a stand-in checks them too, so that a consume
/// through another node is refused as at the home): its start (`x-stream-offset`),
/// its name, and whether it joins a single-active group.
pub(super) fn stream_consumer(
    options: &crate::broker::messages::ConsumerSpec,
    q: &str,
) -> Result<(Option<stream_args::StartAt>, Option<String>, bool), BrokerError> {
    if options.auto_ack {
        return Err(BrokerError::precondition(format!(
            "no-ack consume is not supported by stream queue '{q}': consumers acknowledge (acks are flow credit)"
        )));
    }
    if options.prefetch == 0 {
        return Err(BrokerError::precondition(format!(
            "consumer prefetch count is not set for stream queue '{q}': a stream consumer needs a prefetch (basic.qos)"
        )));
    }
    let start = stream_args::start_at(&options.arguments, q, crate::storage::stream::now_millis())?;
    let name = stream_args::consumer_name(&options.arguments, q)?;
    let grouped = group::single_active(&options.arguments, name.as_deref(), q)?;
    Ok((start, name, grouped))
}

impl QueueActor {
    fn stream(&mut self) -> &mut StreamState<ConsumerHandle> {
        self.stream.as_mut().expect("a stream queue")
    }

    /// Started: the retention and offset-store tick.
    pub(super) fn start_stream(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(STREAM_TICK, |act, ctx| {
            if act.deleted {
                return;
            }
            let s = act.stream();
            s.enforce_retention(crate::storage::stream::now_millis());
            s.flush_offsets();
            s.retry_failed_reads();
            act.stream_dispatch(ctx);
        });
    }

    /// Appends the batch; the answer (the publisher's confirm) waits for the disk.
    pub(super) fn stream_enqueue(
        &mut self,
        msg: Enqueue,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Enqueued, BrokerError>> {
        let stored = self.stream().append(msg.messages);
        self.stream_dispatch(ctx);
        let name = self.name.clone();
        Box::pin(async move {
            stored.await.map_err(|e| stream_store_failed(&name, &e))?;
            Ok(Enqueued::default())
        })
    }

    /// Appends the batch of which this stream is the one destination: the writer
    /// thread answers the publisher after the fsync (or refuses the batch with the
    /// write's error, or with `Closed` once the writer stopped), without this actor.
    pub(super) fn stream_enqueue_answering(
        &mut self,
        msg: Enqueue,
        answer: crate::broker::exchange::BatchAnswer,
        ctx: &mut Context<Self>,
    ) {
        let name = self.name.clone();
        let done = crate::storage::Completer::calling(move |stored| {
            answer.finish(
                &stored
                    .map(|()| Enqueued::default())
                    .map_err(|e| stream_store_failed(&name, &e)),
            )
        });
        self.stream().append_then(msg.messages, done);
        self.stream_dispatch(ctx);
    }

    /// Attaches a consumer at its `x-stream-offset` (or its stored offset).
    pub(super) fn stream_consume(
        &mut self,
        msg: Consume,
        ctx: &mut Context<Self>,
    ) -> Result<Arc<str>, BrokerError> {
        let q = self.name.clone();
        let (start, name, grouped) = stream_consumer(&msg.options, &q)?;
        let tag: Arc<str> = if msg.options.tag.is_empty() {
            self.tag_seq += 1;
            Arc::from(format!("amq.ctag-{}-{}", self.incarnation, self.tag_seq))
        } else {
            Arc::from(msg.options.tag.as_str())
        };
        let s = self.stream();
        if s.consumers()
            .iter()
            .any(|c| c.owner == msg.owner && c.tag == tag)
        {
            return Err(BrokerError::not_allowed(format!(
                "consumer tag '{tag}' is already in use on queue '{q}'"
            )));
        }
        let (id, offset) = s.add_consumer(NewStreamConsumer {
            tag: tag.clone(),
            owner: msg.owner,
            handle: ConsumerHandle {
                deliver: msg.deliver,
                cancelled: msg.cancelled,
            },
            prefetch: msg.options.prefetch,
            window: msg.window,
            start,
            name,
            accepts_stored: msg.accepts_stored,
            run_bytes: msg.run_bytes,
        })?;
        if grouped {
            s.join_group(id);
        }
        // A new name's start is stored at once (written before later appends).
        s.flush_offsets();
        tracing::debug!(queue = %q, consumer = %tag, offset, grouped, "stream consumer attached");
        self.stream_dispatch(ctx);
        Ok(tag)
    }

    /// Hands consumers with credit what they have not read yet.
    pub(super) fn stream_dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        let handle = self.handle.clone();
        let s = self.stream.as_mut().expect("a stream queue");
        let batches = s.dispatch(DISPATCH_CHUNK);
        let mut handed = 0;
        let mut gone = Vec::new();
        for (idx, deliveries) in batches {
            // Records, not deliveries: a run is one delivery of many.
            let records: u32 = deliveries.iter().map(Delivery::records).sum();
            handed += records as usize;
            let c = s.consumer_at(idx);
            if !c.handle.deliver.connected() {
                gone.push(c.id);
                continue;
            }
            // do_send: prefetch and the transport window bound what is in flight.
            c.handle.deliver.do_send(Deliver {
                consumer_tag: c.tag.clone(),
                queue: handle.clone().expect("queue handle set in started"),
                credit: Credit {
                    queue: handle.clone(),
                    consumer: c.id,
                    amount: records,
                },
                deliveries,
            });
        }
        let dropped = !gone.is_empty();
        for id in gone {
            s.drop_consumer(id);
        }
        for (id, req) in s.take_reads() {
            // The files are read on a blocking thread; the actor goes on.
            let read =
                tokio::task::spawn_blocking(move || crate::storage::stream::reader::read(req));
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(read).map(move |result, act, ctx| {
                    if act.deleted {
                        return;
                    }
                    let result = result.unwrap_or_else(|e| {
                        Err(crate::storage::stream::reader::ReadError::Storage(
                            crate::storage::StorageError::Encode(format!(
                                "stream read task failed: {e}"
                            )),
                        ))
                    });
                    if let Some(damage) = act.stream().read_done(id, result) {
                        act.stream_damaged(id, &damage);
                    }
                    act.stream_dispatch(ctx);
                }),
            );
        }
        let again = dropped && s.consumers().iter().any(|c| c.is_active());
        self.reconcile_gauge();
        if again {
            // A group member that took over from a dropped one reads now (each pass
            // drops at least one consumer, so this ends).
            return self.stream_dispatch(ctx);
        }
        if handed >= DISPATCH_CHUNK && !self.dispatch_scheduled {
            // Yield to the other actors of the arbiter, then go on.
            self.dispatch_scheduled = true;
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(tokio::task::yield_now()).map(|_, act, ctx| {
                    act.dispatch_scheduled = false;
                    act.stream_dispatch(ctx);
                }),
            );
        }
    }

    /// Applies the inbox (settlements, credit, cancels, releases) to the stream.
    pub(super) fn stream_drain_inbox(&mut self) -> bool {
        let items = self.inbox.take();
        if items.is_empty() {
            return false;
        }
        let s = self.stream();
        let mut left = false;
        for item in items {
            match item {
                Control::Settle {
                    owner,
                    ids,
                    settlement,
                } => {
                    let unknown = s.settle(owner, &ids, settlement);
                    if !unknown.is_empty() {
                        tracing::debug!(ids = ?unknown, "stream settlement of deliveries not held");
                    }
                }
                Control::SettleRuns {
                    owner,
                    runs,
                    settlement,
                } => {
                    let unknown = s.settle_runs(owner, &runs, settlement);
                    if unknown > 0 {
                        tracing::debug!(unknown, "stream settlement of deliveries not held");
                    }
                }
                Control::Credit { consumer, amount } => s.return_credit(consumer, amount),
                Control::Prefetch { owner, prefetch } => s.set_prefetch(owner, prefetch),
                Control::Unhold { .. } => {}
                Control::Cancel { owner, tag, done } => {
                    left |= s.cancel(owner, &tag);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Control::Release(owner) => left |= s.release(owner) > 0,
            }
        }
        if left {
            // A consumer left: what it acked is stored now, not at the next tick.
            s.flush_offsets();
        }
        true
    }

    /// A stream's counts: `ready` is the log's length (what a consumer from `first`
    /// would read).
    pub(super) fn stream_stats(&mut self) -> QueueStats {
        let s = self.stream();
        QueueStats {
            ready: s.log().len(),
            unacked: s.unacked_len() as u64,
            consumers: s.consumers().len() as u32,
            bytes: s.log().bytes(),
            delayed: 0,
            // Streams keep no rate counters yet: their rates show as 0.
            counts: Default::default(),
            ..QueueStats::default()
        }
    }

    /// Consumer `id` reached record `offset`, which the files hold damaged (found by
    /// the first read of a frame that recovery trusted unread), or which cannot be
    /// found after a damaged one: the broker log says what and where, and the consumer
    /// is cancelled with the reason (a native or embedded consumer gets it; AMQP's
    /// basic.cancel carries none), rather than given the records after it as if that
    /// one had not existed. It has had every record before it; the reason says from
    /// which offset a new consumer reads on.
    fn stream_damaged(&mut self, id: u64, damage: &crate::broker::stream::Damage) {
        let (offset, e) = (damage.offset, &damage.error);
        let q = self.name.clone();
        let s = self.stream();
        let Some(c) = s.consumers().iter().find(|c| c.id == id) else {
            return;
        };
        let (owner, tag) = (c.owner, c.tag.clone());
        tracing::error!(queue = %q, consumer = %tag, offset, error = %e, "stream record damaged on disk: consumer cancelled");
        let what = match e {
            crate::storage::StorageError::Corrupt { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let reason = BrokerError::internal(match damage.resume {
            Some(resume) if resume == offset + 1 => format!(
                "record {offset} of stream '{q}' is damaged on disk and cannot be delivered \
                 ({what}); x-stream-offset = {resume} reads on after it"
            ),
            Some(resume) => format!(
                "records {offset}..{} of stream '{q}' are damaged on disk or cannot be found \
                 and cannot be delivered ({what}); x-stream-offset = {resume} reads on after \
                 them",
                resume - 1
            ),
            None => format!(
                "record {offset} of stream '{q}' is damaged on disk and cannot be delivered \
                 ({what}); no later record of its segment could be found: a later \
                 x-stream-offset may read on"
            ),
        });
        if let Some(r) = &c.handle.cancelled {
            r.do_send(ConsumerCancelled {
                consumer_tag: tag.clone(),
                reason: reason.to_string(),
            });
        }
        s.cancel(owner, &tag);
        s.flush_offsets();
    }

    /// The queue (a stream) is deleted: cancel its consumers, remove its directory.
    pub(super) fn stream_delete(&mut self, reason: &str) -> u64 {
        let name = self.name.clone();
        let s = self.stream();
        for c in s.consumers() {
            if let Some(r) = &c.handle.cancelled {
                r.do_send(ConsumerCancelled {
                    consumer_tag: c.tag.clone(),
                    reason: format!("queue '{name}' was deleted ({reason})"),
                });
            }
        }
        let n = s.log().len();
        s.log_mut().delete();
        n
    }

    /// Broker shutdown: store the offsets, let the writer finish.
    pub(super) fn stream_stop(&mut self) {
        if let Some(s) = self.stream.as_mut() {
            s.flush_offsets();
            s.log_mut().close();
        }
    }
}

/// The refusal of a batch stream `name` could not store (the publisher's nack), logged.
fn stream_store_failed(name: &str, e: &crate::storage::StorageError) -> BrokerError {
    let message = match e {
        // The writer stopped, or refused what was queued when the stream was deleted:
        // expected while a stream goes, not a fault of the disk.
        crate::storage::StorageError::Closed => {
            tracing::debug!(queue = %name, "stream append refused: the log is closed");
            format!("stream '{name}' was deleted or closed before the messages were stored")
        }
        e => {
            tracing::error!(queue = %name, error = %e, "stream append failed");
            format!("stream '{name}' could not store the messages: {e}")
        }
    };
    BrokerError::new(ErrorCode::InternalError, message)
}
