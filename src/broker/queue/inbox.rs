//! The fast lane into a queue: settlements and returned credit skip the mailbox.
//!
//! actix serves a mailbox in order, so under a flood of publishes an ack would wait
//! behind every `Enqueue` batch ahead of it, and a consumer with a small prefetch would
//! starve (measured: 13.7k msg/s consumed with prefetch 100 against a flooding
//! publisher). Instead, acks and credit go into this inbox, which the queue drains
//! before handling *any* message; a `Wake` is sent only when the inbox was empty, so an
//! idle queue still hears about them. Cancels and releases travel the same lane, so an
//! owner's settlements never overtake its own cancel (or the reverse).

use crate::broker::messages::{OwnerId, Settlement};
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
    /// Transport credit back to consumer `consumer`.
    Credit {
        /// The queue's consumer id.
        consumer: u64,
        /// How many.
        amount: u32,
    },
}

/// Items waiting for the queue actor.
#[derive(Debug, Default)]
pub struct Inbox {
    items: Mutex<Vec<Control>>,
}

impl Inbox {
    /// Adds an item; true when the inbox was empty (the caller then wakes the queue).
    pub fn push(&self, item: Control) -> bool {
        let mut items = self.items.lock().expect("inbox lock poisoned");
        items.push(item);
        items.len() == 1
    }

    /// Takes everything queued.
    pub fn take(&self) -> Vec<Control> {
        std::mem::take(&mut *self.items.lock().expect("inbox lock poisoned"))
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
}
