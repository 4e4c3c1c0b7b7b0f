//! The pure bookkeeping of one queue: ready messages in order, unacked deliveries by
//! owner, consumers with their credit, round-robin dispatch. No actix here, so every
//! transition is unit-tested directly; the queue actor wraps it.
//!
//! Ordering rule (RabbitMQ's): messages carry increasing ids; a requeued message goes
//! back to its id's place among the ready ones, so it lands as near the head as it was.

use crate::broker::messages::{Delivery, OwnerId};
use crate::message::Message;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A message waiting for delivery.
#[derive(Debug, Clone)]
struct Ready {
    id: u64,
    message: Arc<Message>,
    redelivered: bool,
    delivery_count: u32,
}

/// A delivered message not yet settled.
#[derive(Debug, Clone)]
struct Unacked {
    /// Who may settle it.
    owner: OwnerId,
    /// The consumer it went to (None for a `get`), to return its prefetch credit.
    consumer: Option<u64>,
    message: Arc<Message>,
    delivery_count: u32,
}

/// A consumer as the queue sees it.
#[derive(Debug)]
pub struct ConsumerSlot<C> {
    /// The queue's id for it (credit and settlements name it).
    pub id: u64,
    /// The tag the consumer is known by to its owner.
    pub tag: Arc<str>,
    /// The connection or session it belongs to.
    pub owner: OwnerId,
    /// How to reach it (a `Recipient` in the actor; anything in tests).
    pub handle: C,
    /// Maximum unacked deliveries, 0 = unlimited.
    pub prefetch: u32,
    /// Deliveries count as settled when sent.
    pub auto_ack: bool,
    /// Deliveries not yet acked.
    pub unacked: u32,
    /// Deliveries whose transport credit has not come back.
    pub in_transit: u32,
    /// Maximum deliveries in transit.
    pub window: u32,
}

impl<C> ConsumerSlot<C> {
    /// How many more deliveries this consumer can take now.
    fn capacity(&self) -> u32 {
        let transport = self.window.saturating_sub(self.in_transit);
        if self.auto_ack || self.prefetch == 0 {
            transport
        } else {
            transport.min(self.prefetch.saturating_sub(self.unacked))
        }
    }
}

/// An error of a settlement: the ids that were not delivered to this owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownIds(pub Vec<u64>);

/// The state of one queue.
#[derive(Debug)]
pub struct QueueState<C> {
    /// Ready messages, ids increasing.
    ready: VecDeque<Ready>,
    /// Delivered, unsettled messages by id.
    unacked: HashMap<u64, Unacked>,
    /// Attached consumers, in attach order.
    consumers: Vec<ConsumerSlot<C>>,
    /// Next message id.
    next_id: u64,
    /// Next consumer id.
    next_consumer_id: u64,
    /// Round-robin position among consumers.
    cursor: usize,
    /// Bytes of bodies held, ready and unacked (memory watermark accounting).
    bytes: usize,
    /// True once any consumer attached (auto-delete waits for the first one).
    had_consumer: bool,
}

impl<C> Default for QueueState<C> {
    fn default() -> Self {
        QueueState {
            ready: VecDeque::new(),
            unacked: HashMap::new(),
            consumers: Vec::new(),
            next_id: 1,
            next_consumer_id: 1,
            cursor: 0,
            bytes: 0,
            had_consumer: false,
        }
    }
}

impl<C> QueueState<C> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages ready for delivery.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Delivered, unsettled messages.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of bodies held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The attached consumers.
    pub fn consumers(&self) -> &[ConsumerSlot<C>] {
        &self.consumers
    }

    /// True once a consumer has ever attached (for auto-delete).
    pub fn had_consumer(&self) -> bool {
        self.had_consumer
    }

    /// Appends a message at the tail; answers the bytes added.
    pub fn push(&mut self, message: Arc<Message>) -> usize {
        let size = message.accounted_size();
        let id = self.next_id;
        self.next_id += 1;
        self.ready.push_back(Ready {
            id,
            message,
            redelivered: false,
            delivery_count: 0,
        });
        self.bytes += size;
        size
    }

    /// Attaches a consumer; answers its id.
    pub fn add_consumer(
        &mut self,
        tag: Arc<str>,
        owner: OwnerId,
        handle: C,
        prefetch: u32,
        auto_ack: bool,
        window: u32,
    ) -> u64 {
        let id = self.next_consumer_id;
        self.next_consumer_id += 1;
        self.consumers.push(ConsumerSlot {
            id,
            tag,
            owner,
            handle,
            prefetch,
            auto_ack,
            unacked: 0,
            in_transit: 0,
            window: window.max(1),
        });
        self.had_consumer = true;
        id
    }

    /// The consumer with `tag` owned by `owner`, if any.
    pub fn consumer_by_tag(&self, tag: &str) -> Option<&ConsumerSlot<C>> {
        self.consumers.iter().find(|c| &*c.tag == tag)
    }

    /// Detaches a consumer by id; its unacked deliveries stay with its owner.
    pub fn remove_consumer(&mut self, id: u64) -> Option<ConsumerSlot<C>> {
        let pos = self.consumers.iter().position(|c| c.id == id)?;
        let slot = self.consumers.remove(pos);
        if self.cursor > pos {
            self.cursor -= 1;
        }
        // Unacked deliveries of a cancelled consumer no longer count against any credit.
        for u in self.unacked.values_mut() {
            if u.consumer == Some(id) {
                u.consumer = None;
            }
        }
        Some(slot)
    }

    /// Returns transport credit to a consumer.
    pub fn return_credit(&mut self, consumer: u64, amount: u32) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) {
            c.in_transit = c.in_transit.saturating_sub(amount);
        }
    }

    /// Hands ready messages to consumers with capacity, one message per consumer in
    /// turn (round-robin), at most `limit` in all. Answers, per consumer index, the
    /// deliveries for it (batched: one entry per consumer served).
    pub fn dispatch(&mut self, limit: usize) -> Vec<(usize, Vec<Delivery>)> {
        let mut out: Vec<(usize, Vec<Delivery>)> = Vec::new();
        if self.consumers.is_empty() || self.ready.is_empty() {
            return out;
        }
        let n = self.consumers.len();
        let mut caps: Vec<u32> = self.consumers.iter().map(|c| c.capacity()).collect();
        let mut slot_of: Vec<Option<usize>> = vec![None; n];
        let mut remaining = limit;
        let mut idle_rounds = 0;
        if self.cursor >= n {
            self.cursor = 0;
        }
        while remaining > 0 && !self.ready.is_empty() && idle_rounds < n {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            if caps[i] == 0 {
                idle_rounds += 1;
                continue;
            }
            idle_rounds = 0;
            let Some(r) = self.ready.pop_front() else {
                break;
            };
            caps[i] -= 1;
            remaining -= 1;
            let c = &mut self.consumers[i];
            c.in_transit += 1;
            let delivery_count = r.delivery_count + 1;
            if c.auto_ack {
                self.bytes -= r.message.accounted_size();
            } else {
                c.unacked += 1;
                self.unacked.insert(
                    r.id,
                    Unacked {
                        owner: c.owner,
                        consumer: Some(c.id),
                        message: r.message.clone(),
                        delivery_count,
                    },
                );
            }
            let d = Delivery {
                id: r.id,
                redelivered: r.redelivered,
                delivery_count,
                message: r.message,
            };
            match slot_of[i] {
                Some(s) => out[s].1.push(d),
                None => {
                    slot_of[i] = Some(out.len());
                    out.push((i, vec![d]));
                }
            }
        }
        out
    }

    /// The consumer at `index` (as answered by `dispatch`).
    pub fn consumer_at(&self, index: usize) -> &ConsumerSlot<C> {
        &self.consumers[index]
    }

    /// Takes the head message for a `get`; answers it with the count left.
    pub fn get(&mut self, owner: OwnerId, auto_ack: bool) -> Option<(Delivery, u64)> {
        let r = self.ready.pop_front()?;
        let delivery_count = r.delivery_count + 1;
        if auto_ack {
            self.bytes -= r.message.accounted_size();
        } else {
            self.unacked.insert(
                r.id,
                Unacked {
                    owner,
                    consumer: None,
                    message: r.message.clone(),
                    delivery_count,
                },
            );
        }
        Some((
            Delivery {
                id: r.id,
                redelivered: r.redelivered,
                delivery_count,
                message: r.message,
            },
            self.ready.len() as u64,
        ))
    }

    /// Settles deliveries of `owner`: all or nothing (an unknown id changes nothing).
    /// Answers the bytes released.
    pub fn settle(
        &mut self,
        owner: OwnerId,
        ids: &[u64],
        requeue: bool,
    ) -> Result<usize, UnknownIds> {
        let unknown: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.unacked.get(id).is_none_or(|u| u.owner != owner))
            .collect();
        if !unknown.is_empty() {
            return Err(UnknownIds(unknown));
        }
        let mut released = 0;
        for id in ids {
            if let Some(u) = self.unacked.remove(id) {
                released += self.finish(*id, u, requeue);
            }
        }
        Ok(released)
    }

    /// Requeues every unacked delivery of `owner` and drops its consumers; answers the
    /// consumers removed.
    pub fn release(&mut self, owner: OwnerId) -> Vec<ConsumerSlot<C>> {
        let mut ids: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(u) = self.unacked.remove(&id) {
                self.finish(id, u, true);
            }
        }
        let mut removed = Vec::new();
        while let Some(pos) = self.consumers.iter().position(|c| c.owner == owner) {
            let id = self.consumers[pos].id;
            if let Some(slot) = self.remove_consumer(id) {
                removed.push(slot);
            }
        }
        removed
    }

    /// Requeues every unacked delivery that went to consumer `id` and detaches it (its
    /// recipient is gone).
    pub fn drop_consumer(&mut self, id: u64) -> Option<ConsumerSlot<C>> {
        let mut ids: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer == Some(id))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for mid in ids {
            if let Some(u) = self.unacked.remove(&mid) {
                self.finish(mid, u, true);
            }
        }
        self.remove_consumer(id)
    }

    /// Removes every ready message; answers how many and the bytes released.
    pub fn purge(&mut self) -> (u64, usize) {
        let n = self.ready.len() as u64;
        let bytes: usize = self.ready.iter().map(|r| r.message.accounted_size()).sum();
        self.ready.clear();
        self.bytes -= bytes;
        (n, bytes)
    }

    /// Settles one unacked entry (already removed from the map); answers bytes released.
    fn finish(&mut self, id: u64, u: Unacked, requeue: bool) -> usize {
        if let Some(cid) = u.consumer {
            if let Some(c) = self.consumers.iter_mut().find(|c| c.id == cid) {
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
        if requeue {
            let entry = Ready {
                id,
                message: u.message,
                redelivered: true,
                delivery_count: u.delivery_count,
            };
            let pos = self.ready.partition_point(|r| r.id < id);
            self.ready.insert(pos, entry);
            0
        } else {
            let size = u.message.accounted_size();
            self.bytes -= size;
            size
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: OwnerId = OwnerId(1);
    const B: OwnerId = OwnerId(2);

    fn msg(body: &str) -> Arc<Message> {
        Arc::new(Message::new("", "q", body.to_string()))
    }

    fn bodies(ds: &[Delivery]) -> Vec<String> {
        ds.iter()
            .map(|d| String::from_utf8(d.message.body.to_vec()).unwrap())
            .collect()
    }

    fn filled(n: usize) -> QueueState<()> {
        let mut q = QueueState::new();
        for i in 0..n {
            q.push(msg(&format!("m{i}")));
        }
        q
    }

    #[test]
    fn messages_are_delivered_in_fifo_order() {
        let mut q = filled(3);
        q.add_consumer("c".into(), A, (), 0, false, 100);
        let out = q.dispatch(100);
        assert_eq!(out.len(), 1);
        assert_eq!(bodies(&out[0].1), ["m0", "m1", "m2"]);
        assert_eq!(q.ready_len(), 0);
        assert_eq!(q.unacked_len(), 3);
    }

    #[test]
    fn consumers_are_served_round_robin() {
        let mut q = filled(4);
        q.add_consumer("a".into(), A, (), 0, false, 100);
        q.add_consumer("b".into(), A, (), 0, false, 100);
        let out = q.dispatch(100);
        assert_eq!(bodies(&out[0].1), ["m0", "m2"]);
        assert_eq!(bodies(&out[1].1), ["m1", "m3"]);
    }

    #[test]
    fn prefetch_limits_unacked_deliveries_and_acks_return_credit() {
        let mut q = filled(5);
        let c = q.add_consumer("c".into(), A, (), 2, false, 100);
        let out = q.dispatch(100);
        assert_eq!(bodies(&out[0].1), ["m0", "m1"]);
        assert!(q.dispatch(100).is_empty());
        q.return_credit(c, 2);
        assert!(
            q.dispatch(100).is_empty(),
            "transport credit alone is not prefetch"
        );
        q.settle(A, &[out[0].1[0].id], false).unwrap();
        assert_eq!(bodies(&q.dispatch(100)[0].1), ["m2"]);
    }

    #[test]
    fn transport_window_bounds_auto_ack_consumers() {
        let mut q = filled(10);
        let c = q.add_consumer("c".into(), A, (), 0, true, 3);
        assert_eq!(q.dispatch(100)[0].1.len(), 3);
        assert!(q.dispatch(100).is_empty());
        q.return_credit(c, 3);
        assert_eq!(q.dispatch(100)[0].1.len(), 3);
        assert_eq!(q.unacked_len(), 0);
    }

    #[test]
    fn requeued_message_returns_to_its_place_marked_redelivered() {
        let mut q = filled(4);
        q.add_consumer("c".into(), A, (), 2, false, 100);
        let out = q.dispatch(100);
        let ids: Vec<u64> = out[0].1.iter().map(|d| d.id).collect();
        // Requeue the second, then the first: order must be m0, m1, m2, m3 again.
        q.settle(A, &[ids[1]], true).unwrap();
        q.settle(A, &[ids[0]], true).unwrap();
        let c = q.consumers()[0].id;
        q.return_credit(c, 2);
        let again = q.dispatch(100);
        assert_eq!(bodies(&again[0].1), ["m0", "m1"]);
        assert!(again[0]
            .1
            .iter()
            .all(|d| d.redelivered && d.delivery_count == 2));
    }

    #[test]
    fn settle_with_an_unknown_id_changes_nothing() {
        let mut q = filled(2);
        q.add_consumer("c".into(), A, (), 0, false, 100);
        let out = q.dispatch(100);
        let good = out[0].1[0].id;
        assert_eq!(q.settle(A, &[good, 999], false), Err(UnknownIds(vec![999])));
        assert_eq!(q.unacked_len(), 2);
        assert_eq!(q.settle(B, &[good], false), Err(UnknownIds(vec![good])));
    }

    #[test]
    fn release_requeues_everything_of_the_owner_in_order() {
        let mut q = filled(3);
        q.add_consumer("c".into(), A, (), 0, false, 100);
        q.dispatch(100);
        let removed = q.release(A);
        assert_eq!(removed.len(), 1);
        assert_eq!(q.ready_len(), 3);
        assert!(q.consumers().is_empty());
        q.add_consumer("d".into(), B, (), 0, false, 100);
        let out = q.dispatch(100);
        assert_eq!(bodies(&out[0].1), ["m0", "m1", "m2"]);
        assert!(out[0].1.iter().all(|d| d.redelivered));
    }

    #[test]
    fn cancelled_consumer_unacked_stay_with_the_owner() {
        let mut q = filled(2);
        let c = q.add_consumer("c".into(), A, (), 0, false, 100);
        let out = q.dispatch(100);
        q.remove_consumer(c);
        assert_eq!(q.unacked_len(), 2);
        q.settle(A, &[out[0].1[0].id, out[0].1[1].id], false)
            .unwrap();
        assert_eq!(q.unacked_len(), 0);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn dropped_consumer_gives_back_its_deliveries() {
        let mut q = filled(3);
        let c = q.add_consumer("c".into(), A, (), 0, false, 100);
        q.dispatch(100);
        q.drop_consumer(c);
        assert_eq!(q.ready_len(), 3);
    }

    #[test]
    fn get_takes_the_head_and_counts_the_rest() {
        let mut q = filled(3);
        let (d, left) = q.get(A, false).unwrap();
        assert_eq!(&d.message.body[..], b"m0");
        assert_eq!(left, 2);
        q.settle(A, &[d.id], true).unwrap();
        let (d, _) = q.get(A, true).unwrap();
        assert!(d.redelivered);
        assert_eq!(q.unacked_len(), 0);
    }

    #[test]
    fn purge_drops_ready_messages_only() {
        let mut q = filled(3);
        q.add_consumer("c".into(), A, (), 1, false, 100);
        q.dispatch(100);
        let (n, bytes) = q.purge();
        assert_eq!(n, 2);
        assert_eq!(bytes, 4);
        assert_eq!(q.unacked_len(), 1);
        assert_eq!(q.bytes(), 2);
    }

    #[test]
    fn bytes_follow_what_is_held() {
        let mut q = filled(2);
        assert_eq!(q.bytes(), 4);
        let (d, _) = q.get(A, false).unwrap();
        assert_eq!(q.bytes(), 4);
        q.settle(A, &[d.id], false).unwrap();
        assert_eq!(q.bytes(), 2);
    }

    #[test]
    fn dispatch_respects_the_limit() {
        let mut q = filled(10);
        q.add_consumer("c".into(), A, (), 0, true, 100);
        assert_eq!(q.dispatch(4)[0].1.len(), 4);
        assert_eq!(q.ready_len(), 6);
    }
}
