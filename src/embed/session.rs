//! [`Session`]: one channel of the channel core ([`crate::channel`]) used in-process:
//! owner of exclusive queues and unacked deliveries, with a publish window; dropped, it
//! releases them like a closed connection.
//!
//! The channel holds the exchange cache, sends the publish batches (memory reservation,
//! window slot, settlements first) and decides each message's fate; the session turns
//! fates into one [`Confirm`] per message. Its consumers hand [`Received`] values to
//! the application, which settle by queue id, so the channel's delivery tags are not
//! used here.

use super::consumer::{Consumer, Received};
use crate::broker::exchange::ExchangeHandle;
use crate::broker::messages::*;
use crate::broker::queue::QueueHandle;
use crate::broker::registry::Registry;
use crate::broker::BrokerHandle;
use crate::channel::{fates, lookup_exchange, Channel, Fate, Outbound};
use crate::error::BrokerError;
use crate::message::Message;
use crate::options::ConsumeOptions;
use actix::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use tokio::sync::{oneshot, Semaphore};

mod topology;

/// A message that could not be routed, given back to a `mandatory` publisher.
#[derive(Debug, Clone)]
pub struct Returned {
    /// AMQP reply code: 312 NO_ROUTE.
    pub code: u16,
    /// Why it came back.
    pub reason: String,
    /// The message.
    pub message: Arc<Message>,
}

/// The broker's answer to one publish.
#[derive(Debug, Clone)]
pub struct Confirmation {
    /// How many queues the message was enqueued in.
    pub queues: u32,
    /// For a `mandatory` publish that reached no queue: the message, back.
    pub returned: Option<Returned>,
}

/// Resolves when the broker has the message in every queue it routes to: `Ok` with the
/// [`Confirmation`], or `Err` when the broker refused it (a nack) — RESOURCE_ERROR from
/// a full queue with `x-overflow` `reject-publish` (naming the queue and its limit),
/// PRECONDITION_FAILED for an `expiration` or `x-delay` it cannot read, NOT_FOUND when
/// the exchange went away.
pub struct Confirm {
    rx: oneshot::Receiver<Result<Confirmation, BrokerError>>,
}

impl Future for Confirm {
    type Output = Result<Confirmation, BrokerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(BrokerError::shutting_down())))
    }
}

/// An in-process client of the broker.
///
/// Publishing is pipelined: [`Session::publish`] returns once the message is sent
/// (waiting only while the publish window is full or the memory watermark is reached)
/// and hands back a [`Confirm`] to await when the application wants the confirmation.
pub struct Session {
    broker: BrokerHandle,
    registry: Addr<Registry>,
    /// The virtual host's name (errors).
    vhost: String,
    owner: OwnerId,
    /// The session's channel: exchange cache, publish path, queues touched. Locked
    /// once per publish batch, consume or get, never across an await.
    channel: Mutex<Channel>,
    /// Publish batches in flight: a permit is the window slot of one batch (callers on
    /// many tasks share one session, so the window is a semaphore, not a counter).
    window: Arc<Semaphore>,
}

impl Session {
    pub(crate) fn new(
        broker: BrokerHandle,
        registry: Addr<Registry>,
        vhost: &str,
        owner: OwnerId,
    ) -> Self {
        let window = Arc::new(Semaphore::new(broker.context().publish_window));
        Session {
            broker,
            registry,
            vhost: vhost.to_string(),
            owner,
            channel: Mutex::new(Channel::new(owner)),
            window,
        }
    }

    /// This session checks the permissions of `access` on every operation, as a
    /// client connection of that user would (the management API acts so).
    pub(crate) fn with_access(self, access: crate::channel::Access) -> Self {
        self.channel().set_access(access);
        self
    }

    /// The session's owner id (owner of its exclusive queues and unacked deliveries).
    pub fn owner(&self) -> OwnerId {
        self.owner
    }

    fn channel(&self) -> MutexGuard<'_, Channel> {
        // The channel's state stays consistent across a panic elsewhere: go on with it.
        self.channel.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn lookup_queue(&self, name: &str) -> Result<QueueHandle, BrokerError> {
        self.registry
            .send(LookupQueue {
                name: name.to_string(),
                owner: self.owner,
            })
            .await?
    }

    async fn exchange(&self, name: &str) -> Result<ExchangeHandle, BrokerError> {
        if let Some(x) = self.channel().cached_exchange(name) {
            return Ok(x);
        }
        // Permission first, as RabbitMQ: refused before "no such exchange".
        self.channel().may_write_exchange(name)?;
        let x = lookup_exchange(&self.registry, name, &self.vhost).await?;
        self.channel().cache_exchange(x.clone());
        Ok(x)
    }

    /// Publishes one message to `message.exchange` with `message.routing_key`.
    pub async fn publish(&self, message: Message) -> Result<Confirm, BrokerError> {
        let mut confirms = self.publish_batch(vec![message], false).await?;
        Ok(confirms.pop().expect("one confirm per message"))
    }

    /// Publishes one message; if it reaches no queue, the confirmation carries it back
    /// (`mandatory`).
    pub async fn publish_mandatory(&self, message: Message) -> Result<Confirm, BrokerError> {
        let mut confirms = self.publish_batch(vec![message], true).await?;
        Ok(confirms.pop().expect("one confirm per message"))
    }

    /// Publishes a batch of messages, all to the exchange of the first one (one actor
    /// message for the whole batch); answers one [`Confirm`] per message, in order.
    pub async fn publish_batch(
        &self,
        messages: Vec<Message>,
        mandatory: bool,
    ) -> Result<Vec<Confirm>, BrokerError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let exchange_name = messages[0].exchange.clone();
        if messages.iter().any(|m| m.exchange != exchange_name) {
            return Err(BrokerError::precondition("a batch goes to one exchange"));
        }
        let exchange = self.exchange(&exchange_name).await?;
        {
            let mut channel = self.channel();
            for m in &messages {
                channel.may_publish(&exchange, &m.routing_key)?;
            }
        }
        let gauge = self.broker.memory();
        gauge.wait_unblocked().await;
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BrokerError::shutting_down())?;
        let items: Vec<Outbound> = messages
            .into_iter()
            .map(|m| Outbound {
                seq: 0,
                mandatory,
                message: Arc::new(m),
            })
            .collect();
        let answer = self
            .channel()
            .send_batch_with(&exchange, &items, gauge, permit);
        let mut senders = Vec::with_capacity(items.len());
        let mut confirms = Vec::with_capacity(items.len());
        for _ in 0..items.len() {
            let (t, r) = oneshot::channel();
            senders.push(t);
            confirms.push(Confirm { rx: r });
        }
        // The answer is awaited on a broker thread, not in the caller's future: the
        // window and the memory reservation are released when the exchange answers,
        // whether or not the application ever awaits its confirms.
        self.broker.context().next_arbiter().spawn(async move {
            let routed = answer.await;
            for ((s, o), fate) in senders.into_iter().zip(&items).zip(fates(&items, routed)) {
                let _ = s.send(match fate {
                    // A nack: a queue refused it (x-overflow reject-publish), or the
                    // batch failed.
                    Fate::Refused(e) => Err(e),
                    Fate::Taken { queues, returned } => Ok(Confirmation {
                        queues,
                        returned: returned.then(|| Returned {
                            code: 312,
                            reason: "NO_ROUTE".into(),
                            message: o.message.clone(),
                        }),
                    }),
                });
            }
        });
        Ok(confirms)
    }

    /// Consumes from `queue`: a `Stream` of [`Received`] messages.
    pub async fn consume(
        &self,
        queue: &str,
        options: &ConsumeOptions,
    ) -> Result<Consumer, BrokerError> {
        self.channel().may_read_queue(queue)?;
        let q = self.lookup_queue(queue).await?;
        self.channel().touch(&q);
        Consumer::start(
            q,
            options.into(),
            self.owner,
            self.broker.context().consumer_window,
            &self.broker.context().next_arbiter(),
        )
        .await
    }

    /// Subscribes an application actor as a consumer: it receives [`Deliver`] batches
    /// (and optionally [`ConsumerCancelled`]). Answers the consumer tag.
    pub async fn subscribe(
        &self,
        queue: &str,
        options: &ConsumeOptions,
        deliver: Recipient<Deliver>,
        cancelled: Option<Recipient<ConsumerCancelled>>,
    ) -> Result<Arc<str>, BrokerError> {
        self.channel().may_read_queue(queue)?;
        let q = self.lookup_queue(queue).await?;
        self.channel().touch(&q);
        q.addr()
            .send(Consume {
                options: options.into(),
                owner: self.owner,
                deliver,
                cancelled,
                window: self.broker.context().consumer_window,
                accepts_stored: false,
                run_bytes: 0,
            })
            .await?
    }

    /// Cancels a consumer made by [`Session::subscribe`].
    pub async fn cancel(&self, queue: &str, tag: &str) -> Result<(), BrokerError> {
        let q = self.lookup_queue(queue).await?;
        // In order with this session's settlements (the queue's fast lane).
        let _ = q.cancel(self.owner, tag).await;
        Ok(())
    }

    /// Settles deliveries received by an application actor through [`Session::subscribe`].
    pub fn settle(&self, queue: &QueueHandle, ids: Vec<u64>, settlement: Settlement) {
        queue.settle(self.owner, ids, settlement);
    }

    /// Pulls one message from `queue`, if there is one.
    pub async fn get(&self, queue: &str, auto_ack: bool) -> Result<Option<Received>, BrokerError> {
        self.channel().may_read_queue(queue)?;
        let q = self.lookup_queue(queue).await?;
        self.channel().touch(&q);
        let got = q
            .addr()
            .send(Get {
                owner: self.owner,
                auto_ack,
            })
            .await??;
        Ok(got.map(|(d, _)| Received::new(d, q, self.owner, auto_ack)))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.channel().close_connection(&self.registry);
    }
}
