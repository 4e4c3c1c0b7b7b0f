//! [`Consumer`]: a queue's deliveries as a `Stream`, through a small bridge actor (a
//! queue needs a `Recipient`; the application needs a `Stream`).

use crate::broker::messages::{
    Consume, ConsumerCancelled, ConsumerSpec, Credit, Deliver, Delivery, OwnerId, Settlement,
};
use crate::broker::queue::QueueHandle;
use crate::error::BrokerError;
use crate::message::Message;
use actix::prelude::*;
use futures_core::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::sync::mpsc;

/// A delivered message, with the means to settle it.
#[derive(Debug)]
pub struct Received {
    /// The message.
    pub message: Arc<Message>,
    /// Delivered before (requeued or recovered).
    pub redelivered: bool,
    /// Deliveries of this message so far, this one included.
    pub delivery_count: u32,
    /// The queue's id of the delivery.
    pub id: u64,
    queue: QueueHandle,
    owner: OwnerId,
    auto_ack: bool,
}

impl Received {
    pub(crate) fn new(d: Delivery, queue: QueueHandle, owner: OwnerId, auto_ack: bool) -> Self {
        Received {
            message: d.message,
            redelivered: d.redelivered,
            delivery_count: d.delivery_count,
            id: d.id,
            queue,
            owner,
            auto_ack,
        }
    }

    /// The queue it came from.
    pub fn queue(&self) -> &str {
        self.queue.name()
    }

    fn settle(self, settlement: Settlement) {
        if !self.auto_ack {
            // do_send: a settlement only frees credit; nothing to wait for.
            self.queue.settle(self.owner, vec![self.id], settlement);
        }
    }

    /// Acknowledges: the queue forgets the message.
    pub fn ack(self) {
        self.settle(Settlement::Ack)
    }

    /// Negative acknowledgement: requeue it (marked redelivered) or drop it.
    pub fn nack(self, requeue: bool) {
        self.settle(if requeue {
            Settlement::Requeue
        } else {
            Settlement::Discard
        })
    }

    /// Rejects: same as `nack` for one message.
    pub fn reject(self, requeue: bool) {
        self.nack(requeue)
    }
}

enum Event {
    Batch(Deliver),
    Cancelled(ConsumerCancelled),
}

/// Requeues deliveries the application never saw (marked redelivered, back in their
/// place), unless they were auto-acked; as unsent (unmarked, no attempt counted
/// toward `x-delivery-limit`) with `unsent`: a consume session's leader side, whose
/// unread deliveries never reached its follower ([`Consumer::unread_unsent`]).
fn requeue(
    queue: &QueueHandle,
    owner: OwnerId,
    (auto_ack, unsent): (bool, &AtomicBool),
    deliveries: Vec<Delivery>,
) {
    if auto_ack || deliveries.is_empty() {
        return;
    }
    let how = match unsent.load(Ordering::Relaxed) {
        true => Settlement::Unsent,
        false => Settlement::Requeue,
    };
    // do_send: a settlement only frees credit; nothing to wait for.
    queue.settle(owner, deliveries.iter().map(|d| d.id).collect(), how);
}

/// Forwards deliveries from the queue into the consumer's channel.
struct Bridge {
    tx: mpsc::UnboundedSender<Event>,
    /// Owner of the deliveries, to requeue those that arrive after the [`Consumer`] went.
    owner: OwnerId,
    /// Auto-ack deliveries are already settled: nothing to requeue.
    auto_ack: bool,
    /// Given back as unsent rather than requeued ([`Consumer::unread_unsent`]).
    unsent: Arc<AtomicBool>,
}

impl Actor for Bridge {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        // Unbounded is safe: the queue's credit bounds what is in flight.
        if let Err(mpsc::error::SendError(Event::Batch(lost))) = self.tx.send(Event::Batch(msg)) {
            // The Consumer was dropped, and the queue dispatched this batch before it
            // saw the Cancel. Nobody will ever see these deliveries: give them back
            // rather than leave them unacked until the session goes. The bridge keeps
            // running (it stops by itself once the queue drops its recipients), so a
            // later batch dispatched before the Cancel is given back as well.
            let how = (self.auto_ack, &*self.unsent);
            requeue(&lost.queue, self.owner, how, lost.deliveries);
        }
    }
}

impl Handler<ConsumerCancelled> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: ConsumerCancelled, ctx: &mut Self::Context) {
        let _ = self.tx.send(Event::Cancelled(msg));
        ctx.stop();
    }
}

/// Stops the bridge.
#[derive(Message)]
#[rtype(result = "()")]
struct StopBridge;

impl Handler<StopBridge> for Bridge {
    type Result = ();

    fn handle(&mut self, _msg: StopBridge, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A stream of deliveries from one queue. Dropping it cancels the consumer: deliveries
/// already handed out as [`Received`] stay with the session until settled or the session
/// drops (AMQP semantics); deliveries the stream had not yet handed out are requeued.
pub struct Consumer {
    tag: Arc<str>,
    queue: QueueHandle,
    owner: OwnerId,
    auto_ack: bool,
    rx: mpsc::UnboundedReceiver<Event>,
    /// The batch being handed out, and its transport credit (dropped once it is empty).
    current: VecDeque<Delivery>,
    credit: Option<Credit>,
    /// Set when the broker cancelled the consumer.
    cancelled: Option<String>,
    /// Shared with the bridge: unread deliveries go back as unsent.
    unsent: Arc<AtomicBool>,
}

impl Consumer {
    pub(crate) async fn start(
        queue: QueueHandle,
        options: ConsumerSpec,
        owner: OwnerId,
        window: u32,
        arbiter: &ArbiterHandle,
    ) -> Result<Consumer, BrokerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let auto_ack = options.auto_ack;
        let unsent = Arc::new(AtomicBool::new(false));
        let shared = unsent.clone();
        let bridge = Bridge::start_in_arbiter(arbiter, move |_| Bridge {
            tx,
            owner,
            auto_ack,
            unsent: shared,
        });
        let tag = queue
            .addr()
            .send(Consume {
                options,
                owner,
                deliver: bridge.clone().recipient(),
                cancelled: Some(bridge.clone().recipient()),
                window,
                accepts_stored: false,
                run_bytes: 0,
            })
            .await;
        let tag = match tag {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                bridge.do_send(StopBridge);
                return Err(e);
            }
            Err(e) => {
                bridge.do_send(StopBridge);
                return Err(e.into());
            }
        };
        Ok(Consumer {
            tag,
            queue,
            owner,
            auto_ack,
            rx,
            current: VecDeque::new(),
            credit: None,
            cancelled: None,
            unsent,
        })
    }

    /// Deliveries this consumer has not handed out when it is dropped go back as
    /// unsent (not marked redelivered, no attempt toward `x-delivery-limit`) instead
    /// of requeued: for a consume session's leader side, whose unread deliveries
    /// never reached its follower's client.
    pub(crate) fn unread_unsent(&mut self) {
        self.unsent.store(true, Ordering::Relaxed);
    }

    /// The consumer tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Why the broker cancelled this consumer, once it has.
    pub fn cancelled(&self) -> Option<&str> {
        self.cancelled.as_deref()
    }

    /// The next delivery, or None once the consumer was cancelled by the broker.
    pub async fn next(&mut self) -> Option<Received> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Consumer {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Received>> {
        loop {
            if let Some(d) = self.current.pop_front() {
                if self.current.is_empty() {
                    self.credit = None;
                }
                let r = Received::new(d, self.queue.clone(), self.owner, self.auto_ack);
                return Poll::Ready(Some(r));
            }
            if self.cancelled.is_some() {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Event::Batch(b))) => {
                    self.current = b.deliveries.into();
                    self.credit = Some(b.credit);
                }
                Poll::Ready(Some(Event::Cancelled(c))) => {
                    self.cancelled = Some(c.reason);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Cancel first: the queue then dispatches nothing more to this consumer, and the
        // requeues below (sent after it, from this thread) cannot bounce back here.
        drop(self.queue.cancel(self.owner, &self.tag));
        // Deliveries received but never handed out would otherwise stay unacked, with
        // nobody able to settle them, until the session drops. Closing the channel first
        // makes the bridge requeue whatever arrives from now on itself; the bridge is not
        // stopped here, since a batch dispatched before the Cancel may still be on its
        // way (it stops by itself once the queue has dropped its recipients).
        self.rx.close();
        let mut pending: Vec<Delivery> = self.current.drain(..).collect();
        while let Ok(event) = self.rx.try_recv() {
            if let Event::Batch(b) = event {
                pending.extend(b.deliveries);
            }
        }
        let how = (self.auto_ack, &*self.unsent);
        requeue(&self.queue, self.owner, how, pending);
    }
}
