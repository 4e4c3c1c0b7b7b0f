//! Deliveries and consumers: [`Delivery`] (a message with the means to settle it) and
//! [`Consumer`] (a queue's deliveries as a `Stream`).

use super::connection::{ConsumerEvent, OnReply, Shared};
use super::error::ClientError;
use super::Client;
use crate::message::Properties;
use crate::protocol::PropertiesRef;
use crate::protocol::{body_bytes, ClientFrame, DeliverFrame, DeliverParts, Op, RunRecord};
use bytes::Bytes;
use futures_core::Stream;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A message delivered to a consumer or answered to a get.
///
/// Unless it was consumed or got with `no_ack`, settle it once with [`ack`](Self::ack),
/// [`nack`](Self::nack) or [`reject`](Self::reject) (or several at once with
/// [`Client::ack_multiple`]); until then it counts against the consumer's prefetch, and
/// the broker requeues it if the connection closes.
pub struct Delivery {
    /// The consumer it went to (empty for a get).
    pub consumer_tag: Arc<str>,
    /// Its tag on this connection, to settle it with.
    pub delivery_tag: u64,
    /// Delivered before (requeued, or recovered after a restart).
    pub redelivered: bool,
    /// Deliveries of this message so far, this one included.
    pub delivery_count: u32,
    /// The exchange it was published to (`""` = the default exchange).
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body: a slice of the connection's read buffer, not a copy.
    pub body: Bytes,
    /// The connection to settle through; `None` when no ack is needed.
    acker: Option<Arc<Shared>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("consumer_tag", &self.consumer_tag)
            .field("delivery_tag", &self.delivery_tag)
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("properties", &self.properties)
            .field("body", &self.body)
            .field("needs_ack", &self.acker.is_some())
            .finish()
    }
}

impl Delivery {
    pub(crate) fn from_frame(
        frame: &Bytes,
        d: DeliverFrame<'_>,
        consumer_tag: Arc<str>,
        acker: Option<Arc<Shared>>,
    ) -> Self {
        Delivery {
            consumer_tag,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            delivery_count: d.delivery_count,
            exchange: d.exchange.into_owned(),
            routing_key: d.routing_key.into_owned(),
            properties: d
                .properties
                .map(PropertiesRef::into_owned)
                .unwrap_or_default(),
            body: body_bytes(frame, d.body),
            acker,
        }
    }

    /// From a deliver frame decoded by hand (the common case).
    pub(crate) fn from_parts(
        frame: &Bytes,
        d: DeliverParts<'_>,
        consumer_tag: Arc<str>,
        acker: Option<Arc<Shared>>,
    ) -> Self {
        Delivery {
            consumer_tag,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            delivery_count: d.delivery_count,
            exchange: d.exchange.to_owned(),
            routing_key: d.routing_key.to_owned(),
            properties: d.properties.unwrap_or_default(),
            body: body_bytes(frame, d.body),
            acker,
        }
    }

    /// From one record of a `deliver_run` frame.
    pub(crate) fn from_record(
        frame: &Bytes,
        r: RunRecord<'_>,
        delivery_tag: u64,
        run: (bool, u32),
        consumer_tag: Arc<str>,
        acker: Option<Arc<Shared>>,
    ) -> Self {
        Delivery {
            consumer_tag,
            delivery_tag,
            redelivered: run.0,
            delivery_count: run.1,
            exchange: r.exchange.into_owned(),
            routing_key: r.routing_key.into_owned(),
            properties: r.properties,
            body: body_bytes(frame, r.body),
            acker,
        }
    }

    /// True unless it was delivered with `no_ack`.
    pub fn needs_ack(&self) -> bool {
        self.acker.is_some()
    }

    fn settle(&self, frame: ClientFrame<'_>) -> Result<(), ClientError> {
        match &self.acker {
            Some(shared) => shared.send(&frame),
            None => Ok(()),
        }
    }

    /// Acknowledges it: the broker forgets the message. A no-op for a `no_ack` delivery.
    /// Queues the ack and returns at once (it never waits for the socket).
    pub fn ack(&self) -> Result<(), ClientError> {
        self.settle(ClientFrame::Ack {
            tag: self.delivery_tag,
            multiple: false,
        })
    }

    /// Negative acknowledgement: the broker requeues it (marked redelivered) or drops
    /// it (dead-lettering it where the queue says so).
    pub fn nack(&self, requeue: bool) -> Result<(), ClientError> {
        self.settle(ClientFrame::Nack {
            tag: self.delivery_tag,
            multiple: false,
            requeue,
        })
    }

    /// Rejects it: as [`nack`](Self::nack) for one message.
    pub fn reject(&self, requeue: bool) -> Result<(), ClientError> {
        self.settle(ClientFrame::Reject {
            tag: self.delivery_tag,
            requeue,
        })
    }
}

/// The answer to a get that found a message.
#[derive(Debug)]
pub struct GetOk {
    /// The message.
    pub delivery: Delivery,
    /// Messages left in the queue.
    pub message_count: u64,
}

/// A queue's deliveries as a `Stream` of `Result<Delivery, ClientError>`.
///
/// The stream ends after [`cancel`](Self::cancel) (once the deliveries already received
/// are taken). It yields one error and ends if the broker cancels the consumer
/// ([`ClientError::ConsumerCancelled`]) or the connection fails. Dropping it cancels the
/// consumer and requeues the deliveries it received but never handed out.
///
/// The consumer keeps its connection open while it lives.
pub struct Consumer {
    /// The connection.
    client: Client,
    /// The tag the broker confirmed.
    tag: String,
    /// Deliveries need no settling.
    no_ack: bool,
    /// Deliveries and events, from the reader task.
    rx: mpsc::UnboundedReceiver<ConsumerEvent>,
    /// Deliveries received (a batch of one socket read) and not yet yielded.
    ready: VecDeque<Delivery>,
    /// A cancel was sent (or the broker cancelled it): nothing to cancel on drop.
    cancelled: bool,
    /// The stream has ended.
    done: bool,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .field("no_ack", &self.no_ack)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(
        client: Client,
        tag: String,
        no_ack: bool,
        rx: mpsc::UnboundedReceiver<ConsumerEvent>,
    ) -> Self {
        Consumer {
            client,
            tag,
            no_ack,
            rx,
            ready: VecDeque::new(),
            cancelled: false,
            done: false,
        }
    }

    /// The consumer tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Stops the consumer. Deliveries already received are still yielded, then the
    /// stream ends.
    pub async fn cancel(&mut self) -> Result<(), ClientError> {
        if self.cancelled {
            return Ok(());
        }
        self.cancelled = true;
        self.client.cancel(&self.tag).await
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(d) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(d)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let event = match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(event) => event,
            };
            // The events after a batch stay in the channel until it is yielded.
            let last = match event {
                Some(ConsumerEvent::Deliveries(batch)) => {
                    self.ready = VecDeque::from(batch);
                    continue;
                }
                Some(ConsumerEvent::Cancelled(reason)) => Err(ClientError::ConsumerCancelled {
                    consumer_tag: self.tag.clone(),
                    reason,
                }),
                Some(ConsumerEvent::Failed(e)) => Err(e),
                None => {
                    self.done = true;
                    return Poll::Ready(None);
                }
            };
            self.done = true;
            self.cancelled = true;
            return Poll::Ready(Some(last));
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let shared = &self.client.inner.shared;
        if !self.cancelled {
            // Detached: the reply stops the routing of this tag; nobody waits for it.
            let _ = shared.start_request(
                Op::Cancel {
                    consumer_tag: self.tag.clone(),
                },
                OnReply::RemoveConsumer(self.tag.clone()),
            );
        }
        // From here on the reader requeues what arrives for this consumer; requeue what
        // already arrived.
        self.rx.close();
        let mut received = std::mem::take(&mut self.ready);
        while let Ok(event) = self.rx.try_recv() {
            if let ConsumerEvent::Deliveries(batch) = event {
                received.extend(batch);
            }
        }
        if !self.no_ack {
            for d in received {
                let _ = d.reject(true);
            }
        }
    }
}
