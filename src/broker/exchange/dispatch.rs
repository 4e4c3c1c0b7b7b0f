//! [`Dispatch`]: the fan-out of one published batch to the destinations chosen for each
//! of its messages, shared by the built-in exchange actor and custom exchange actors.
//!
//! Choosing destinations is the exchange's business; everything after it is the same
//! for every exchange and easy to get subtly wrong, so it lives here once: following
//! bound exchanges with the loop guard (`hops`), delivering a message once to a queue
//! reached by two paths, dropping what would close a dead-letter cycle, refusing a
//! message whose `expiration` / `x-delay` cannot be read, sending each queue one batch
//! in publish order, forwarding messages routed nowhere to an alternate exchange, and
//! answering the publisher once every destination answered, with a queue's refusal
//! (`x-overflow` `reject-publish`) turned into a refusal of the message (a nack).

use super::answer::{fold, BatchAnswer, Reply};
use super::router::{follow, resolve_pending, RouteScratch};
use super::{Destination, ExchangeHandle};
use crate::broker::messages::{OwnerId, Publish, Routed};
use crate::broker::queue::dead_letter::is_cycle;
use crate::broker::queue::QueueHandle;
use crate::broker::queue_args::validate_message;
use crate::error::{BrokerError, ErrorCode};
use crate::message::Message;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// One published batch on its way out of an exchange.
///
/// Make one from the [`Publish`] the exchange received, give each message its
/// destinations with [`Dispatch::to`] (or refuse it with [`Dispatch::refuse`]), then
/// call [`Dispatch::send`] before `handle` returns, so that batches reach each queue in
/// the order they reached the exchange. A custom exchange actor's `Publish` handler:
///
/// ```
/// use actix::prelude::*;
/// use actormq::broker::exchange::{Dispatch, Destination};
/// use actormq::broker::messages::Publish;
///
/// /// Sends every message to every destination bound to it.
/// struct Broadcast {
///     /// The exchange's name.
///     name: String,
///     /// What is bound to it (kept by its `AddBinding` / `RemoveBinding` handlers).
///     bound: Vec<Destination>,
/// }
///
/// impl Actor for Broadcast {
///     type Context = Context<Self>;
/// }
///
/// impl Handler<Publish> for Broadcast {
///     type Result = ();
///
///     fn handle(&mut self, msg: Publish, _ctx: &mut Context<Self>) {
///         let mut dispatch = Dispatch::new(&self.name, msg);
///         for i in 0..dispatch.len() {
///             dispatch.to(i, &self.bound);
///         }
///         // No alternate exchange: messages routed nowhere are unroutable.
///         dispatch.send(None);
///     }
/// }
/// ```
pub struct Dispatch {
    /// The batch, in publish order.
    messages: Vec<Arc<Message>>,
    /// The exchanges passed through, this one last.
    hops: Vec<Arc<str>>,
    /// True when a queue is dead-lettering the batch (cycle check).
    dead_letter: bool,
    /// Who published the batch ([`Publish::publisher`]), passed on to queues and hops.
    publisher: Option<OwnerId>,
    /// Where the outcome goes.
    reply: Option<Reply>,
    /// The outcome per message so far.
    routed: Vec<Routed>,
    /// Whether each message was given its destinations (or refused).
    decided: Vec<bool>,
    /// One group per queue reached: the queue, its messages and their batch positions.
    queues: Vec<(QueueHandle, Vec<Arc<Message>>, Vec<u32>)>,
    /// Position in `queues` by queue.
    queue_index: HashMap<usize, usize>,
    /// Same for custom exchange actors reached.
    actors: Vec<(ExchangeHandle, Vec<Arc<Message>>, Vec<u32>)>,
    /// Position in `actors` by exchange.
    actor_index: HashMap<usize, usize>,
    /// Positions of the messages routed nowhere.
    unroutable: Vec<u32>,
    /// Buffers reused for every message of the batch.
    work: Work,
}

/// Buffers of one message's resolution, reused across the batch.
#[derive(Default)]
pub(super) struct Work {
    /// The exchanges passed through: the batch's hops, then those this message followed.
    pub(super) hops: Vec<Arc<str>>,
    /// The queues reached, each once.
    pub(super) queues: Vec<QueueHandle>,
    /// The custom exchange actors reached, each once.
    pub(super) actors: Vec<ExchangeHandle>,
    /// The router's buffers.
    pub(super) scratch: RouteScratch,
}

impl Dispatch {
    /// Starts delivering the batch `publish`, received by the exchange named `exchange`.
    pub fn new(exchange: &str, publish: Publish) -> Self {
        Self::from_arc(Arc::from(exchange), publish)
    }

    /// [`Dispatch::new`] with the name already shared.
    pub(super) fn from_arc(exchange: Arc<str>, publish: Publish) -> Self {
        let n = publish.messages.len();
        let mut hops = publish.hops;
        hops.push(exchange);
        Dispatch {
            messages: publish.messages,
            dead_letter: publish.dead_letter,
            publisher: publish.publisher,
            reply: publish.reply,
            routed: vec![Routed::default(); n],
            decided: vec![false; n],
            queues: Vec::new(),
            queue_index: HashMap::new(),
            actors: Vec::new(),
            actor_index: HashMap::new(),
            unroutable: Vec::new(),
            work: Work {
                hops: hops.clone(),
                ..Work::default()
            },
            hops,
        }
    }

    /// The number of messages in the batch.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The message at position `i` of the batch.
    pub fn message(&self, i: usize) -> &Arc<Message> {
        &self.messages[i]
    }

    /// The exchanges the batch passed through, this one last.
    pub fn hops(&self) -> &[Arc<str>] {
        &self.hops
    }

    /// Sends message `i` to `destinations`: queues directly, exchanges by following
    /// their own bindings (an exchange already passed through is skipped). A queue
    /// reached several times gets the message once. No destination, or none reached,
    /// makes the message unroutable. Call it once per message.
    pub fn to<'a, I>(&mut self, i: usize, destinations: I)
    where
        I: IntoIterator<Item = &'a Destination>,
    {
        self.resolve(i, |m, w| {
            for d in destinations {
                match d {
                    Destination::Queue(q) => {
                        if !w.queues.iter().any(|x| x.same(q)) {
                            w.queues.push(q.clone());
                        }
                    }
                    Destination::Exchange(x) => {
                        follow(x, &mut w.hops, &mut w.actors, &mut w.scratch.pending)
                    }
                }
            }
            resolve_pending(m, &mut w.hops, &mut w.queues, &mut w.actors, &mut w.scratch)
        });
    }

    /// Refuses message `i` with `error` (the publisher gets a nack with it); it goes
    /// nowhere.
    pub fn refuse(&mut self, i: usize, error: BrokerError) {
        self.decided[i] = true;
        self.routed[i].refused = Some(error);
    }

    /// True when some message is routed nowhere (so far): only then is an alternate
    /// exchange worth looking up for [`Dispatch::send`].
    pub fn has_unroutable(&self) -> bool {
        !self.unroutable.is_empty() || self.decided.iter().any(|d| !d)
    }

    /// How many messages of the batch were routed to some queue or exchange (so far):
    /// decided, not refused, not unroutable.
    pub(super) fn routed_len(&self) -> usize {
        let refused = self.routed.iter().filter(|r| r.refused.is_some()).count();
        let undecided = self.decided.iter().filter(|d| !**d).count();
        self.len()
            .saturating_sub(refused + undecided + self.unroutable.len())
    }

    /// Resolves message `i` with `resolve`, which fills the work buffers (or fails, which
    /// refuses the message), then files it under every destination reached.
    pub(super) fn resolve<F>(&mut self, i: usize, resolve: F)
    where
        F: FnOnce(&Message, &mut Work) -> Result<(), BrokerError>,
    {
        self.decided[i] = true;
        let m = self.messages[i].clone();
        if let Err(e) = validate_message(&m) {
            self.routed[i].refused = Some(e);
            return;
        }
        let w = &mut self.work;
        w.queues.clear();
        w.actors.clear();
        // Resolution only pushes onto the batch's hops.
        w.hops.truncate(self.hops.len());
        if let Err(e) = resolve(&m, w) {
            self.routed[i].refused = Some(e);
            return;
        }
        if self.dead_letter && !w.queues.is_empty() {
            let before = w.queues.len();
            w.queues.retain(|q| !is_cycle(&m, q.name()));
            if w.queues.len() < before {
                let exchange = self.hops.last().map(|h| &**h).unwrap_or("");
                tracing::warn!(exchange, "dead-letter cycle detected: a message that died in a queue without being rejected would go back to it; it is dropped there");
                self.routed[i].cycle = true;
                if w.queues.is_empty() && w.actors.is_empty() {
                    return;
                }
            }
        }
        if w.queues.is_empty() && w.actors.is_empty() {
            self.unroutable.push(i as u32);
            return;
        }
        for q in w.queues.drain(..) {
            let slot = *self.queue_index.entry(q.key()).or_insert_with(|| {
                self.queues.push((q.clone(), Vec::new(), Vec::new()));
                self.queues.len() - 1
            });
            self.queues[slot].1.push(m.clone());
            self.queues[slot].2.push(i as u32);
        }
        for x in w.actors.drain(..) {
            let slot = *self.actor_index.entry(x.key()).or_insert_with(|| {
                self.actors.push((x.clone(), Vec::new(), Vec::new()));
                self.actors.len() - 1
            });
            self.actors[slot].1.push(m.clone());
            self.actors[slot].2.push(i as u32);
        }
    }

    /// Sends every group now (call it from `handle`, to keep the order of batches into
    /// each queue), the messages routed nowhere to `alternate` (unless the batch already
    /// passed through it), and answers the publisher once every destination answered.
    /// A batch that went to one queue only carries its answer there
    /// ([`BatchAnswer`]): the queue (a stream: its writer thread) replies to the
    /// publisher itself. Must be called from within an actix system (it may spawn the
    /// wait).
    pub fn send(mut self, alternate: Option<ExchangeHandle>) {
        for (i, decided) in self.decided.iter().enumerate() {
            if !decided {
                self.unroutable.push(i as u32);
            }
        }
        let alternate = alternate
            .filter(|alt| !self.hops.iter().any(|h| **h == *alt.name()))
            .filter(|_| !self.unroutable.is_empty());
        if self.actors.is_empty() && alternate.is_none() && self.queues.len() <= 1 {
            return self.send_direct();
        }
        let enqueues: Vec<_> = self
            .queues
            .drain(..)
            .map(|(q, messages, idx)| (q.enqueue_from(messages, self.publisher), idx))
            .collect();
        let mut forwards: Vec<_> = self
            .actors
            .drain(..)
            .map(|(x, messages, idx)| {
                let (tx, rx) = oneshot::channel();
                x.publish_recipient().do_send(Publish {
                    messages,
                    hops: self.hops.clone(),
                    reply: Some(tx),
                    dead_letter: self.dead_letter,
                    publisher: self.publisher,
                });
                (rx, idx)
            })
            .collect();
        if let Some(alt) = alternate {
            self.unroutable.sort_unstable();
            let (tx, rx) = oneshot::channel();
            alt.publish_recipient().do_send(Publish {
                messages: self
                    .unroutable
                    .iter()
                    .map(|&i| self.messages[i as usize].clone())
                    .collect(),
                hops: self.hops,
                reply: Some(tx),
                dead_letter: self.dead_letter,
                publisher: self.publisher,
            });
            forwards.push((rx, self.unroutable));
        }
        let (reply, mut routed) = (self.reply, self.routed);
        // Awaiting the answers off the actor: the exchange keeps routing other batches
        // meanwhile; the publisher's window bounds how many are in flight.
        actix_rt::spawn(async move {
            let (qs, idxs): (Vec<_>, Vec<_>) = enqueues.into_iter().unzip();
            for (res, idx) in join_all(qs).await.into_iter().zip(idxs) {
                fold(&mut routed, &idx, res.as_ref().ok());
            }
            for (rx, idx) in forwards {
                // An exchange that failed, stopped or answered short never confirms
                // what it did not take: those messages are refused.
                let (answers, failure) = match rx.await {
                    Ok(Ok(answers)) => (
                        answers,
                        BrokerError::internal(
                            "a bound exchange answered for fewer messages than it was sent",
                        ),
                    ),
                    // Deleted while the batch was on its way: routed nowhere through
                    // it, as for a queue deleted meanwhile.
                    Ok(Err(e)) if e.code() == ErrorCode::NotFound => continue,
                    Ok(Err(e)) => (Vec::new(), e),
                    Err(_) => (
                        Vec::new(),
                        BrokerError::internal(
                            "a bound exchange stopped before it answered for the message",
                        ),
                    ),
                };
                let mut answers = answers.into_iter();
                for i in idx {
                    let r = answers
                        .next()
                        .unwrap_or_else(|| Routed::refused(failure.clone()));
                    routed[i as usize].merge(r);
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(Ok(routed));
            }
        });
    }

    /// [`Dispatch::send`] of a batch with at most one destination, a queue: nothing to
    /// merge, so nothing waits here. The queue gets the publisher's answer with its
    /// share; a batch that reached no queue is answered now.
    fn send_direct(mut self) {
        let Some((q, messages, idx)) = self.queues.pop() else {
            if let Some(reply) = self.reply {
                let _ = reply.send(Ok(self.routed));
            }
            return;
        };
        let answer = self
            .reply
            .map(|reply| BatchAnswer::new(reply, self.routed, idx));
        q.enqueue_answering(messages, self.publisher, answer);
    }
}
