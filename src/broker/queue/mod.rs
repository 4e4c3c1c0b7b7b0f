//! Queues: one actor per queue holding its messages, consumers and unacked deliveries.
//!
//! The pure bookkeeping lives in [`state`] and the helpers beside it, all plain Rust
//! tested without actix: [`ready`] (per-priority FIFOs), [`timers`] (deadline heaps and
//! the delay queue), [`consumers`] (priorities, round-robin, single active consumer),
//! [`dead_letter`] (`x-death`, cycles) and [`dedup`]. [`actor`] wires it to actix: it
//! accounts memory, sends deliveries to consumers' `Recipient<Deliver>`, arms one timer
//! for the earliest deadline, republishes dead letters through [`outbox`], and tells
//! the registry when it deletes itself (auto-delete, `x-expires`). A stream queue
//! (`x-queue-type = "stream"`) runs in the same actor with a
//! [`StreamState`](crate::broker::stream::StreamState) body instead (see
//! [`crate::broker::stream`]). A quorum queue (`x-queue-type = "quorum"`) is a
//! classic body that stores every message and marks redeliveries (see [`quorum`]).
//!
//! Where each queue argument is acted on:
//!
//! | argument | where |
//! |---|---|
//! | `x-message-ttl`, `expiration` property | [`state`] (deadline per message, expiry heap) |
//! | `x-expires` | [`actor`] (a timer while no consumer is attached) |
//! | `x-max-length(-bytes)`, `x-overflow` | [`state`]; refusals answered in [`Enqueued`](crate::broker::messages::Enqueued) |
//! | `x-dead-letter-exchange` / `-routing-key` | [`state`] collects, [`outbox`] republishes |
//! | `x-delivery-limit` | [`state`] (on every requeue) |
//! | `x-max-priority` | [`ready`] |
//! | `x-delivery-delay`, `x-delay` header | [`state`] / [`timers`]: delayed messages wait *in the queue* |
//! | `x-consumer-timeout` | [`state`] (requeue as redelivered, fresh delivery ids) |
//! | `x-dedup-window` | [`dedup`] |
//! | `x-single-active-consumer`, consumer `x-priority` | [`consumers`] |

pub mod actor;
pub mod backlog;
pub mod consumers;
pub mod dead_letter;
pub mod dedup;
pub mod durable;
pub mod inbox;
pub mod outbox;
pub mod packed;
pub mod quorum;
pub mod ready;
pub mod state;
pub mod timers;

pub use actor::QueueActor;

use crate::broker::messages::{Enqueue, OwnerId, Settlement};
use crate::message::{FieldTable, Message};
use actix::prelude::*;
use inbox::{Control, Inbox};
use std::sync::Arc;

/// The name and settings of a queue, as declared.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueSpec {
    /// The queue's name; empty asks the broker to generate one.
    pub name: String,
    /// Survives a broker restart.
    pub durable: bool,
    /// Owned by the declaring connection, deleted when it goes, refused to others.
    pub exclusive: bool,
    /// Deleted when its last consumer leaves (after having had one).
    pub auto_delete: bool,
    /// Declare arguments (`x-message-ttl`, `x-max-length`, ...).
    pub arguments: FieldTable,
}

impl QueueSpec {
    /// A transient queue named `name` with no arguments.
    pub fn new(name: &str) -> Self {
        QueueSpec {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Names the first setting in which `self` differs from `other`, for
    /// PRECONDITION_FAILED on redeclare.
    pub fn difference(&self, other: &QueueSpec) -> Option<String> {
        let flag = |what: &str, cur: bool, new: bool| {
            (cur != new).then(|| {
                format!(
                    "inequivalent arg '{what}' for queue '{}': received '{new}' but current is '{cur}'",
                    self.name
                )
            })
        };
        flag("durable", self.durable, other.durable)
            .or_else(|| flag("exclusive", self.exclusive, other.exclusive))
            .or_else(|| flag("auto_delete", self.auto_delete, other.auto_delete))
            .or_else(|| {
                crate::broker::args::table_difference(&self.arguments, &other.arguments).map(|k| {
                    let show = |t: &FieldTable| {
                        t.get(&k)
                            .map_or_else(|| "none".to_string(), |v| v.to_string())
                    };
                    format!(
                        "inequivalent arg '{k}' for queue '{}': received '{}' but current is '{}'",
                        self.name,
                        show(&other.arguments),
                        show(&self.arguments)
                    )
                })
            })
    }
}

/// A cheap, cloneable reference to a queue actor.
#[derive(Clone)]
pub struct QueueHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    name: Arc<str>,
    addr: Addr<QueueActor>,
    /// Acks and credit, served ahead of the mailbox.
    inbox: Arc<Inbox>,
}

/// Whether a queue was deleted ([`QueueHandle::deletion`]). A batch its actor dropped
/// unhandled was routed nowhere when the queue was deleted (RabbitMQ confirms a
/// publish to a queue deleted meanwhile, or returns it if mandatory), and refused when
/// the actor stopped without a delete (a broker shutdown): it may have been meant to
/// be stored, so it is never confirmed as if it were.
#[derive(Clone, Default)]
pub struct Deletion(Arc<Inbox>);

impl Deletion {
    /// True once the queue was deleted.
    pub fn happened(&self) -> bool {
        self.0.was_deleted()
    }

    /// A deletion that already happened (for tests of what reads it).
    #[cfg(test)]
    pub(crate) fn done() -> Self {
        let inbox = Inbox::default();
        inbox.mark_deleted();
        Deletion(Arc::new(inbox))
    }
}

impl QueueHandle {
    pub(crate) fn new(name: Arc<str>, addr: Addr<QueueActor>, inbox: Arc<Inbox>) -> Self {
        QueueHandle {
            inner: Arc::new(HandleInner { name, addr, inbox }),
        }
    }

    fn control(&self, item: Control) {
        if self.inner.inbox.push(item) {
            // do_send: a wake-up with no payload; the inbox holds the work.
            self.inner.addr.do_send(actor::Wake);
        }
    }

    /// Settles deliveries (ack, nack / reject with or without requeue) through the fast
    /// lane: handled before anything already waiting in the queue's mailbox.
    pub fn settle(&self, owner: OwnerId, ids: Vec<u64>, settlement: Settlement) {
        self.control(Control::Settle {
            owner,
            ids,
            settlement,
        });
    }

    /// Settles runs of deliveries, each (first id, count), through the fast lane as
    /// [`Self::settle`] does: a stream settles each by range.
    pub fn settle_runs(&self, owner: OwnerId, runs: Vec<(u64, u32)>, settlement: Settlement) {
        self.control(Control::SettleRuns {
            owner,
            runs,
            settlement,
        });
    }

    /// Detaches consumer `tag` of `owner` (in order with the owner's settlements);
    /// resolves once done (an unknown tag is not an error, as in AMQP).
    pub fn cancel(&self, owner: OwnerId, tag: &str) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.control(Control::Cancel {
            owner,
            tag: tag.to_string(),
            done: Some(tx),
        });
        rx
    }

    /// The owner went: its consumers are dropped and its unacked deliveries requeued.
    pub fn release(&self, owner: OwnerId) {
        self.control(Control::Release(owner));
    }

    /// Sets the prefetch of every consumer of `owner` (in order with its settlements);
    /// a raise lets the queue deliver more at once.
    pub fn set_prefetch(&self, owner: OwnerId, prefetch: u32) {
        self.control(Control::Prefetch { owner, prefetch });
    }

    /// Consumer `tag` of `owner` no longer holds `n` deliveries of an earlier
    /// leader's consume session (a replicated quorum queue's follower session says
    /// so as its client settles them): they stop counting against its prefetch.
    pub fn unhold(&self, owner: OwnerId, tag: &str, n: u32) {
        self.control(Control::Unhold {
            owner,
            tag: tag.to_string(),
            n,
        });
    }

    /// Returns transport credit to consumer `consumer` through the fast lane.
    pub fn return_credit(&self, consumer: u64, amount: u32) {
        self.control(Control::Credit { consumer, amount });
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the queue gets deleted, readable after its actor stopped: what a batch
    /// its actor dropped unhandled stands for (see [`Deletion`]).
    pub fn deletion(&self) -> Deletion {
        Deletion(self.inner.inbox.clone())
    }

    /// The queue actor's address: send it the consume / settle / get messages of
    /// [`crate::broker::messages`].
    pub fn addr(&self) -> &Addr<QueueActor> {
        &self.inner.addr
    }

    /// Sends a batch to the queue; resolves once it is enqueued, naming the messages the
    /// queue refused (a full `x-overflow` reject-publish queue).
    pub fn enqueue(&self, messages: Vec<Arc<Message>>) -> actix::dev::Request<QueueActor, Enqueue> {
        self.enqueue_from(messages, None)
    }

    /// [`enqueue`](Self::enqueue), naming the connection or session that published the
    /// batch (the queue's flow control treats a publisher that also consumes from it
    /// with acks apart).
    pub fn enqueue_from(
        &self,
        messages: Vec<Arc<Message>>,
        publisher: Option<OwnerId>,
    ) -> actix::dev::Request<QueueActor, Enqueue> {
        self.inner.addr.send(Enqueue {
            messages,
            publisher,
            own_acks: false,
            answer: None,
        })
    }

    /// Hands the queue a batch whose publisher it answers itself (`answer`, see
    /// [`crate::broker::exchange::BatchAnswer`]); nothing waits here.
    pub fn enqueue_answering(
        &self,
        messages: Vec<Arc<Message>>,
        publisher: Option<OwnerId>,
        answer: Option<crate::broker::exchange::BatchAnswer>,
    ) {
        // do_send: the publisher's window bounds what is in flight; a queue that
        // stopped drops the message, and the dropped answer still replies.
        self.inner.addr.do_send(Enqueue {
            messages,
            publisher,
            own_acks: false,
            answer,
        })
    }

    /// [`enqueue`](Self::enqueue) of a batch a stand-in forwarded to this home node:
    /// `own_acks` when one of its publishers consumes from the queue with acks there
    /// (see [`Enqueue::own_acks`]).
    pub fn enqueue_forwarded(
        &self,
        messages: Vec<Arc<Message>>,
        own_acks: bool,
    ) -> actix::dev::Request<QueueActor, Enqueue> {
        self.inner.addr.send(Enqueue {
            messages,
            publisher: None,
            own_acks,
            answer: None,
        })
    }

    /// True when both handles are the same queue actor.
    pub fn same(&self, other: &QueueHandle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.addr == other.inner.addr
    }

    /// True while the queue actor is alive.
    pub fn is_alive(&self) -> bool {
        self.inner.addr.connected()
    }

    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const u8 as usize
    }
}

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueHandle({})", self.inner.name)
    }
}
