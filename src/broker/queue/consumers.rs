//! The consumers of one queue and the choice of who gets the next message.
//!
//! Consumers are kept by priority (`x-priority` consume argument, highest first), then
//! attach order. A message goes to the highest-priority consumer that has room
//! (credit); consumers of equal priority take turns (round-robin). With
//! `x-single-active-consumer` only one consumer receives: the first attached, then, when
//! it leaves, the highest-priority earliest-attached of those left.

use crate::broker::messages::OwnerId;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// `x-priority`: higher is served first.
    pub priority: i64,
}

impl<C> ConsumerSlot<C> {
    /// How many more deliveries this consumer can take now.
    pub fn capacity(&self) -> u32 {
        let transport = self.window.saturating_sub(self.in_transit);
        if self.auto_ack || self.prefetch == 0 {
            transport
        } else {
            transport.min(self.prefetch.saturating_sub(self.unacked))
        }
    }
}

/// What a new consumer asks for.
#[derive(Debug)]
pub struct NewConsumer<C> {
    /// Its tag.
    pub tag: Arc<str>,
    /// Its owner.
    pub owner: OwnerId,
    /// How to reach it.
    pub handle: C,
    /// Maximum unacked deliveries, 0 = unlimited.
    pub prefetch: u32,
    /// Deliveries count as settled when sent.
    pub auto_ack: bool,
    /// Maximum deliveries in transit.
    pub window: u32,
    /// `x-priority`.
    pub priority: i64,
}

/// The consumers of a queue.
#[derive(Debug)]
pub struct Consumers<C> {
    /// By priority (highest first), then attach order.
    slots: Vec<ConsumerSlot<C>>,
    /// Round-robin position within each priority group, by priority.
    cursors: HashMap<i64, usize>,
    /// `x-single-active-consumer`.
    single_active: bool,
    /// The single active consumer, while there is one.
    active: Option<u64>,
    /// Next consumer id.
    next_id: u64,
    /// True once any consumer attached (auto-delete waits for the first one).
    had_consumer: bool,
    /// The buffers of the last [`Picker`], reused (dispatch runs for every batch).
    scratch: (Vec<u32>, Vec<Group>),
}

impl<C> Consumers<C> {
    /// No consumers yet.
    pub fn new(single_active: bool) -> Self {
        Consumers {
            slots: Vec::new(),
            cursors: HashMap::new(),
            single_active,
            active: None,
            next_id: 1,
            had_consumer: false,
            scratch: (Vec::new(), Vec::new()),
        }
    }

    /// The consumers, highest priority first.
    pub fn slots(&self) -> &[ConsumerSlot<C>] {
        &self.slots
    }

    /// The consumer at `index` of [`slots`](Self::slots).
    pub fn at_mut(&mut self, index: usize) -> &mut ConsumerSlot<C> {
        &mut self.slots[index]
    }

    /// The consumer `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut ConsumerSlot<C>> {
        self.slots.iter_mut().find(|c| c.id == id)
    }

    /// True when none is attached.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// True once a consumer has ever attached.
    pub fn had_consumer(&self) -> bool {
        self.had_consumer
    }

    /// The single active consumer's id, when the queue has one.
    pub fn active(&self) -> Option<u64> {
        self.active
    }

    /// Attaches a consumer; answers its id.
    pub fn add(&mut self, c: NewConsumer<C>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let pos = self.slots.partition_point(|s| s.priority >= c.priority);
        self.slots.insert(
            pos,
            ConsumerSlot {
                id,
                tag: c.tag,
                owner: c.owner,
                handle: c.handle,
                prefetch: c.prefetch,
                auto_ack: c.auto_ack,
                unacked: 0,
                in_transit: 0,
                window: c.window.max(1),
                priority: c.priority,
            },
        );
        self.had_consumer = true;
        if self.single_active && self.active.is_none() {
            self.active = Some(id);
        }
        id
    }

    /// Detaches consumer `id`; with a single active consumer, the next one takes over.
    pub fn remove(&mut self, id: u64) -> Option<ConsumerSlot<C>> {
        let pos = self.slots.iter().position(|c| c.id == id)?;
        let slot = self.slots.remove(pos);
        if !self.slots.iter().any(|c| c.priority == slot.priority) {
            self.cursors.remove(&slot.priority);
        }
        if self.active == Some(id) {
            self.active = self.slots.first().map(|c| c.id);
        }
        Some(slot)
    }

    /// Starts a dispatch pass: who may receive, with how much room.
    pub fn picker(&mut self) -> Picker {
        let (mut caps, mut groups) = std::mem::take(&mut self.scratch);
        caps.clear();
        groups.clear();
        caps.extend(self.slots.iter().map(|c| c.capacity()));
        if self.single_active {
            if let Some(i) = self
                .active
                .and_then(|a| self.slots.iter().position(|c| c.id == a))
            {
                groups.push(Group {
                    priority: self.slots[i].priority,
                    start: i,
                    end: i + 1,
                    cursor: 0,
                });
            }
        } else {
            let mut start = 0;
            while start < self.slots.len() {
                let priority = self.slots[start].priority;
                let end = start
                    + self.slots[start..]
                        .iter()
                        .take_while(|c| c.priority == priority)
                        .count();
                let len = end - start;
                let cursor = self.cursors.get(&priority).copied().unwrap_or(0) % len;
                groups.push(Group {
                    priority,
                    start,
                    end,
                    cursor,
                });
                start = end;
            }
        }
        Picker {
            caps,
            groups,
            open: 0,
        }
    }

    /// Ends a dispatch pass: keeps the round-robin positions for the next one.
    pub fn finish(&mut self, picker: Picker) {
        if !self.single_active {
            for g in &picker.groups {
                self.cursors.insert(g.priority, g.cursor);
            }
        }
        self.scratch = (picker.caps, picker.groups);
    }
}

/// Consumers of one priority: `slots[start..end]`.
#[derive(Debug)]
struct Group {
    priority: i64,
    start: usize,
    end: usize,
    /// Offset within the group of the next consumer in turn.
    cursor: usize,
}

/// One dispatch pass's view of the consumers' room.
#[derive(Debug)]
pub struct Picker {
    /// Room per slot, decremented as messages are handed out.
    caps: Vec<u32>,
    /// Priority groups, highest first.
    groups: Vec<Group>,
    /// Groups before this one have no room left in this pass.
    open: usize,
}

impl Picker {
    /// The slot index of the consumer in turn for the next message, if any has room.
    pub fn peek(&mut self) -> Option<usize> {
        while let Some(g) = self.groups.get(self.open) {
            let len = g.end - g.start;
            if let Some(k) = (0..len).find(|k| self.caps[g.start + (g.cursor + k) % len] > 0) {
                return Some(g.start + (g.cursor + k) % len);
            }
            self.open += 1;
        }
        None
    }

    /// Hands one message to slot `index` (as answered by [`peek`](Self::peek)).
    pub fn take(&mut self, index: usize) {
        self.caps[index] -= 1;
        let g = &mut self.groups[self.open];
        g.cursor = (index - g.start + 1) % (g.end - g.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(tag: &str, priority: i64, prefetch: u32) -> NewConsumer<()> {
        NewConsumer {
            tag: tag.into(),
            owner: OwnerId(1),
            handle: (),
            prefetch,
            auto_ack: false,
            window: 100,
            priority,
        }
    }

    /// Hands out `n` messages, charging prefetch; answers who got each.
    fn serve(cs: &mut Consumers<()>, n: usize) -> Vec<String> {
        let mut p = cs.picker();
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(i) = p.peek() else { break };
            p.take(i);
            cs.at_mut(i).unacked += 1;
            out.push(cs.slots()[i].tag.to_string());
        }
        cs.finish(p);
        out
    }

    #[test]
    fn equal_priorities_take_turns_across_passes() {
        let mut cs = Consumers::new(false);
        cs.add(consumer("a", 0, 0));
        cs.add(consumer("b", 0, 0));
        assert_eq!(serve(&mut cs, 3), ["a", "b", "a"]);
        assert_eq!(serve(&mut cs, 1), ["b"], "the turn carries over");
    }

    #[test]
    fn higher_priority_consumers_are_served_while_they_have_room() {
        let mut cs = Consumers::new(false);
        cs.add(consumer("low", 0, 0));
        cs.add(consumer("high1", 5, 2));
        cs.add(consumer("high2", 5, 1));
        assert_eq!(serve(&mut cs, 5), ["high1", "high2", "high1", "low", "low"]);
    }

    #[test]
    fn a_single_active_consumer_receives_until_it_leaves() {
        let mut cs = Consumers::new(true);
        let first = cs.add(consumer("first", 0, 0));
        cs.add(consumer("second", 0, 0));
        cs.add(consumer("urgent", 9, 0));
        assert_eq!(cs.active(), Some(first));
        assert_eq!(serve(&mut cs, 2), ["first", "first"]);
        cs.remove(first);
        assert_eq!(serve(&mut cs, 1), ["urgent"], "the best of those left");
    }

    #[test]
    fn no_room_means_no_pick() {
        let mut cs = Consumers::new(false);
        cs.add(consumer("a", 0, 1));
        assert_eq!(serve(&mut cs, 3), ["a"]);
        assert!(serve(&mut cs, 1).is_empty());
    }
}
