//! The queue actor's hold on a follower session: its orders go to the session's task
//! through a bounded channel ([`ORDERS`]). The queue actor cannot await, so an order
//! that finds the channel full is held, in order, and the actor then waits (stops
//! handling messages) until the task has taken every held order ([`Held::send`],
//! run under `ctx.wait`): nothing is dropped, and nothing piles up without bound on
//! this hop; the actor's own producers (channels, connections) are bounded by their
//! windows in turn. While held orders are on their way, later ones are held behind
//! them (the session's task sees them in the order the actor gave them). The task takes orders at all times (while a session opens too), so
//! the channel is full only while it writes to a leader that does not read (given up
//! after `WRITE_LIMIT`).

use super::*;
use crate::broker::messages::Settlement;
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use tokio::sync::mpsc::error::TrySendError;

/// Orders queued for a session's task at most.
pub(super) const ORDERS: usize = 256;

pub(super) enum Order {
    Consume(LocalConsumer),
    /// A consumer's cancel, and who is told once the session took it: from then on
    /// it hands its client nothing more, so an answer sent after `done` comes behind
    /// every delivery made to it (its cancel-ok, in the connection's mailbox).
    Cancel(Arc<str>, Option<CancelDone>),
    Settle(Vec<u64>, How),
    Credit(u64, u32),
    Prefetch(u32),
    Get(bool, GetAnswer),
}

/// The owner's session, as the queue actor holds it: dropping it ends the session
/// (what the leader holds for it comes back).
pub struct FollowerSession {
    orders: mpsc::Sender<Order>,
    /// Orders that found the channel full, oldest first (sent before any later one).
    held: VecDeque<Order>,
    /// [`Held`] batches taken and not all sent yet.
    sending: Arc<AtomicUsize>,
}

/// Orders a session's channel had no room for, to be sent before the queue actor
/// handles anything else.
pub struct Held {
    orders: mpsc::Sender<Order>,
    held: VecDeque<Order>,
    sending: Arc<AtomicUsize>,
}

impl Held {
    /// Sends the held orders, each as soon as the channel has room.
    pub async fn send(self) {
        for o in self.held {
            if let Err(mpsc::error::SendError(o)) = self.orders.send(o).await {
                stopped(o);
            }
        }
        self.sending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An order for a task that ended: a get is answered; the rest concerned a session
/// whose leader gives back what it held.
fn stopped(o: Order) {
    if let Order::Get(_, answer) = o {
        let _ = answer.send(Err(BrokerError::internal(
            "quorum queue: the consume session stopped",
        )));
    }
}

impl FollowerSession {
    /// Starts the task (on the cluster's runtime) serving `owner`'s consumers and gets
    /// of `queue` of `vhost` through `served` (a group's leader, a classic queue's
    /// home); deliveries name `handle` for
    /// their settlements and credit.
    pub fn start(
        served: Served,
        vhost: &str,
        queue: &str,
        handle: QueueHandle,
        owner: OwnerId,
    ) -> FollowerSession {
        let (orders, rx) = mpsc::channel(ORDERS);
        let open = Open {
            group: served.group_id(),
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            from: served.node_id(),
            classic: served.is_home(),
        };
        let runtime = served.runtime();
        let task = Task {
            served,
            open,
            handle,
            owner,
            consumers: BTreeMap::new(),
            map: HashMap::new(),
            stale: Default::default(),
            gets: HashMap::new(),
            written: Default::default(),
            waiting: Vec::new(),
            next_req: 1,
            turn: 0,
        };
        runtime.spawn(task.run(rx));
        FollowerSession::over(orders)
    }

    fn over(orders: mpsc::Sender<Order>) -> FollowerSession {
        FollowerSession {
            orders,
            held: VecDeque::new(),
            sending: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn push(&mut self, o: Order) {
        if !self.held.is_empty() || self.sending.load(Ordering::Acquire) > 0 {
            self.held.push_back(o);
            return;
        }
        match self.orders.try_send(o) {
            Ok(()) => {}
            Err(TrySendError::Full(o)) => self.held.push_back(o),
            Err(TrySendError::Closed(o)) => stopped(o),
        }
    }

    /// The orders waiting for room, if any: the queue actor sends them (one batch
    /// after the other) before it handles anything else.
    pub fn take_held(&mut self) -> Option<Held> {
        if self.held.is_empty() {
            return None;
        }
        self.sending.fetch_add(1, Ordering::AcqRel);
        Some(Held {
            orders: self.orders.clone(),
            held: std::mem::take(&mut self.held),
            sending: self.sending.clone(),
        })
    }

    /// Attaches a consumer (opened at the leader at once, or when a session opens).
    pub fn consume(&mut self, c: LocalConsumer) {
        self.push(Order::Consume(c));
    }

    /// Detaches consumer `tag`; its deliveries can still be settled. `done` is told
    /// once the session hands it nothing more (see [`Order::Cancel`]).
    pub fn cancel(&mut self, tag: Arc<str>, done: Option<CancelDone>) {
        self.push(Order::Cancel(tag, done));
    }

    /// Settles deliveries by the ids the client knows: this node's (of a session), or
    /// the queue's, of deliveries this node made while it led (stale ones; the task
    /// skips the others).
    pub fn settle(&mut self, ids: &[u64], s: Settlement) {
        if ids.is_empty() {
            return;
        }
        let ids = ids.to_vec();
        let how = match s {
            Settlement::Ack => How::Ack,
            Settlement::Requeue => How::Requeue,
            Settlement::Discard => How::Discard,
            Settlement::Unsent => How::Unsent,
        };
        self.push(Order::Settle(ids, how));
    }

    /// Transport credit returned to consumer `id` (the queue actor's id).
    pub fn credit(&mut self, id: u64, amount: u32) {
        self.push(Order::Credit(id, amount));
    }

    /// The owner's prefetch changed: every consumer of the session takes it.
    pub fn prefetch(&mut self, prefetch: u32) {
        self.push(Order::Prefetch(prefetch));
    }

    /// Pulls one message at the leader.
    pub fn get(&mut self, auto_ack: bool, answer: GetAnswer) {
        self.push(Order::Get(auto_ack, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit_of(o: Order) -> u32 {
        match o {
            Order::Credit(_, n) => n,
            _ => panic!("a credit order"),
        }
    }

    #[tokio::test]
    async fn a_full_channel_holds_orders_in_order_until_sent_and_drops_none() {
        let (tx, mut rx) = mpsc::channel(ORDERS);
        let mut s = FollowerSession::over(tx);
        let total = ORDERS as u32 + 10;
        for n in 0..total {
            s.credit(1, n);
        }
        let held = s.take_held().expect("ten orders found the channel full");
        // While they are on their way, a later order queues behind them, though the
        // channel has room for it now.
        assert_eq!(credit_of(rx.try_recv().unwrap()), 0);
        s.credit(1, total);
        let behind = s.take_held().expect("held behind the batch being sent");
        let reader = tokio::spawn(async move {
            let mut got = vec![0];
            while got.len() < total as usize + 2 {
                got.push(credit_of(rx.recv().await.expect("an order")));
            }
            got
        });
        held.send().await;
        behind.send().await;
        assert!(s.take_held().is_none());
        assert_eq!(s.sending.load(Ordering::Acquire), 0);
        // Room again: sent at once.
        s.credit(1, total + 1);
        assert!(s.take_held().is_none());
        let got = reader.await.unwrap();
        assert_eq!(got.len(), total as usize + 2, "none dropped");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    }
}
