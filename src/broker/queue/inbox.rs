//! The fast lane into a queue: settlements and returned credit skip the mailbox.
//!
//! actix serves a mailbox in order, so under a flood of publishes an ack would wait
//! behind every `Enqueue` batch ahead of it, and a consumer with a small prefetch would
//! starve (measured: 13.7k msg/s consumed with prefetch 100 against a flooding
//! publisher). Instead, acks and credit go into this inbox, which the queue drains
//! before handling *any* message; a `Wake` is sent only when the inbox was empty, so an
//! idle queue still hears about them. Cancels and releases travel the same lane, so an
//! owner's settlements never overtake its own cancel (or the reverse).
//!
//! When the queue actor stops (deleted, auto-deleted, expired, broker shutdown) it
//! closes its inbox: what is still queued is dropped, and later pushes are dropped at
//! once. Dropping a `Cancel` drops its `done` sender, so whoever waits for the cancel
//! hears at once instead of waiting forever on a queue that will never drain (issue 16:
//! a cancel pipelined after `delete_queue` held its connection for good).

use crate::broker::messages::{OwnerId, Settlement};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One control item.
#[derive(Debug)]
pub enum Control {
    /// Settle deliveries of `owner`.
    Settle {
        /// Who settles.
        owner: OwnerId,
        /// Queue ids.
        ids: Vec<u64>,
        /// Ack, requeue or discard.
        settlement: Settlement,
    },
    /// Settle runs of deliveries of `owner`, each (first id, count): the records of a
    /// stream run ([`crate::broker::messages::RecordRun`]), or the part of one the
    /// client settled, by range. Only streams hand out runs; any other queue settles
    /// the ids one by one ([`run_ids`]).
    SettleRuns {
        /// Who settles.
        owner: OwnerId,
        /// (first queue id, count) ranges.
        runs: Vec<(u64, u32)>,
        /// Ack, requeue or discard.
        settlement: Settlement,
    },
    /// Detach consumer `tag` of `owner` (its unacked deliveries stay with the owner);
    /// `done` is told once it is detached. In the inbox so that it keeps its order with
    /// the same owner's settlements.
    Cancel {
        /// Who asks.
        owner: OwnerId,
        /// The consumer tag.
        tag: String,
        /// Answered when done.
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// The owner went: drop its consumers, requeue its unacked deliveries.
    Release(OwnerId),
    /// A new prefetch for every consumer of `owner` (AMQP `basic.qos` on a channel
    /// that already has consumers).
    Prefetch {
        /// Whose consumers.
        owner: OwnerId,
        /// Maximum unacked deliveries, 0 = unlimited.
        prefetch: u32,
    },
    /// Consumer `tag` of `owner` (made by a follower's consume session) no longer
    /// holds `n` deliveries of an earlier leader's session: its follower's client
    /// settled them, so they stop counting against its prefetch. Replicated quorum
    /// queues only; the others have no such deliveries and ignore it.
    Unhold {
        /// Whose consumer.
        owner: OwnerId,
        /// The consumer tag.
        tag: String,
        /// How many.
        n: u32,
    },
    /// Transport credit back to consumer `consumer`.
    Credit {
        /// The queue's consumer id.
        consumer: u64,
        /// How many.
        amount: u32,
    },
}

/// The ids of `runs` ((first id, count) ranges), one by one.
pub fn run_ids(runs: &[(u64, u32)]) -> Vec<u64> {
    runs.iter()
        .flat_map(|(id, n)| (0..u64::from(*n)).map(move |k| id + k))
        .collect()
}

/// Items waiting for the queue actor.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The items, and whether the inbox is closed (one lock: a push cannot slip in
    /// between the close and the drop of what was queued).
    items: Mutex<Items>,
    /// Set when the queue was deleted (before its actor stops). It tells a batch the
    /// actor dropped unhandled apart from one dropped by a stop without a delete: the
    /// first was routed nowhere, as RabbitMQ counts a publish to a queue deleted
    /// meanwhile; the second may have been meant to be stored, so it is refused.
    deleted: AtomicBool,
}

/// The guarded part of an [`Inbox`].
#[derive(Debug, Default)]
struct Items {
    /// Queued for the actor, in push order.
    queued: Vec<Control>,
    /// Set when the queue actor stopped: nothing will drain the inbox any more.
    closed: bool,
}

impl Inbox {
    /// Adds an item; true when the inbox was empty (the caller then wakes the queue).
    /// On a closed inbox the item is dropped (a cancel's `done` resolves at once) and
    /// the answer is false: there is nobody to wake.
    pub fn push(&self, item: Control) -> bool {
        let mut items = self.items.lock().expect("inbox lock poisoned");
        if items.closed {
            drop(items);
            drop(item);
            return false;
        }
        items.queued.push(item);
        items.queued.len() == 1
    }

    /// Takes everything queued.
    pub fn take(&self) -> Vec<Control> {
        std::mem::take(&mut self.items.lock().expect("inbox lock poisoned").queued)
    }

    /// Marks the queue deleted (see [`Inbox::was_deleted`]).
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Whether the queue was deleted: what its handles' holders see once its actor
    /// has stopped.
    pub fn was_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Closes the inbox for good (the queue actor stopped): drops what is queued and
    /// every later push. Idempotent.
    pub fn close(&self) {
        let dropped = {
            let mut items = self.items.lock().expect("inbox lock poisoned");
            items.closed = true;
            std::mem::take(&mut items.queued)
        };
        // Dropped outside the lock: a waiter woken by a dropped `done` may push again.
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_push_after_a_take_asks_for_a_wake() {
        let inbox = Inbox::default();
        assert!(inbox.push(Control::Credit {
            consumer: 1,
            amount: 1
        }));
        assert!(!inbox.push(Control::Credit {
            consumer: 1,
            amount: 2
        }));
        assert_eq!(inbox.take().len(), 2);
        assert!(inbox.push(Control::Credit {
            consumer: 1,
            amount: 3
        }));
    }

    fn cancel(inbox: &Inbox) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        inbox.push(Control::Cancel {
            owner: OwnerId(7),
            tag: "c2".into(),
            done: Some(tx),
        });
        rx
    }

    #[test]
    fn closing_resolves_a_queued_cancel() {
        let inbox = Inbox::default();
        let mut rx = cancel(&inbox);
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ));
        inbox.close();
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
        assert!(inbox.take().is_empty());
    }

    #[test]
    fn a_push_after_close_is_dropped_at_once() {
        let inbox = Inbox::default();
        inbox.close();
        let mut rx = cancel(&inbox);
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
        assert!(!inbox.push(Control::Release(OwnerId(7))), "nobody to wake");
        assert!(inbox.take().is_empty());
        inbox.close();
    }
}
