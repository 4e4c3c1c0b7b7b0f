//! Consumer groups on streams: RabbitMQ's *single active consumer* for streams. Consumers
//! of one stream that give `x-single-active-consumer = true` and the same
//! `x-stream-consumer-name` form a group; exactly one member, the active one, is given
//! records, the others wait. On a super stream partition the active member is the
//! member at index `partition % members` (RabbitMQ's rule), members ordered by owner
//! (channel or connection) and then by arrival, so a consumer that joins every
//! partition on one channel holds the same place in every partition's group and M
//! members share N partitions floor(N/M) or ceil(N/M) each.
//!
//! When the active member changes (a member joins or leaves), the group's offset (the
//! stored offset of its name) is set to the outgoing member's first unacknowledged
//! offset (or, with none, the next one it would have read), and the new holder starts
//! there: what the outgoing member had not acknowledged is delivered again, marked
//! redelivered. The outgoing member may still ack what it held (credit only: the group's
//! offset follows the holder). While a member is active its group's stored offset is
//! the first offset it has not acknowledged, so after a crash too the group resumes at
//! or before the first unacknowledged record: at least once.

use super::StreamState;
use crate::broker::messages::OwnerId;
use crate::error::BrokerError;
use crate::message::{FieldTable, FieldValue};
use std::collections::HashMap;

/// The consumer argument that makes a consumer a group member (RabbitMQ's name).
pub const SINGLE_ACTIVE: &str = "x-single-active-consumer";
/// The consumer argument naming the super stream (accepted for RabbitMQ's stream
/// clients, which send it; the partition index comes from the queue).
pub const SUPER_STREAM: &str = "x-super-stream";

/// A stream's group bookkeeping.
#[derive(Debug, Default)]
pub struct Groups {
    /// This stream's partition index, when it is a super stream partition.
    partition: Option<u32>,
    /// Per group: offsets below this were delivered to a previous holder.
    delivered_below: HashMap<String, u64>,
}

impl Groups {
    /// The groups of a stream that is partition `partition` (or no partition).
    pub fn new(partition: Option<u32>) -> Self {
        Groups {
            partition,
            delivered_below: HashMap::new(),
        }
    }
}

/// The partition index a queue's arguments give (`x-stream-partition-order`).
pub fn partition_of_queue(arguments: &FieldTable) -> Option<u32> {
    arguments
        .get(crate::broker::superstream::PARTITION_ORDER)
        .and_then(FieldValue::as_int)
        .and_then(|i| u32::try_from(i).ok())
}

/// Whether consumer arguments ask for a group member; a member must be named (the
/// name is the group), as RabbitMQ requires.
pub fn single_active(
    args: &FieldTable,
    name: Option<&str>,
    queue: &str,
) -> Result<bool, BrokerError> {
    if let Some(v) = args.get(SUPER_STREAM) {
        if !matches!(v, FieldValue::Str(s) if !s.is_empty()) {
            return Err(BrokerError::precondition(format!(
                "invalid arg '{SUPER_STREAM}' for a consumer of queue '{queue}': expected a non-empty string, got {} {v}",
                v.type_name()
            )));
        }
    }
    match args.get(SINGLE_ACTIVE) {
        None | Some(FieldValue::Bool(false)) => Ok(false),
        Some(FieldValue::Bool(true)) if name.is_some() => Ok(true),
        Some(FieldValue::Bool(true)) => Err(BrokerError::precondition(format!(
            "single active consumer on stream '{queue}' needs a consumer name ('x-stream-consumer-name'): the name is the group"
        ))),
        Some(v) => Err(BrokerError::precondition(format!(
            "invalid arg '{SINGLE_ACTIVE}' for a consumer of queue '{queue}': expected a boolean, got {} {v}",
            v.type_name()
        ))),
    }
}

impl<H> super::StreamConsumer<H> {
    /// False for a waiting member of a consumer group.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Its prefetch.
    pub fn prefetch(&self) -> u32 {
        self.prefetch
    }
}

impl<H> StreamState<H> {
    /// Makes consumer `id` (just added with [`StreamState::add_consumer`], its start
    /// resolved) a member of the group named by its consumer name, and rebalances.
    pub fn join_group(&mut self, id: u64) {
        let Some(c) = self.consumers.iter_mut().find(|c| c.id == id) else {
            return;
        };
        c.single_active = true;
        c.active = false;
        let group = c.name.clone();
        self.rebalance(group);
    }

    /// The stream's partition index, if it is one.
    pub fn partition(&self) -> Option<u32> {
        self.groups.partition
    }

    /// Consumer `i` is about to leave: an active member hands its group over first.
    /// Answers its group, to rebalance once it is gone.
    pub(super) fn before_leave(&mut self, i: usize) -> Option<String> {
        let c = &self.consumers[i];
        if !c.single_active {
            return None;
        }
        let group = c.name.clone();
        if c.active {
            self.hand_over(i);
        }
        group
    }

    /// `owner` goes: its active members hand over; answers the groups it was in.
    pub(super) fn before_release(&mut self, owner: OwnerId) -> Vec<String> {
        let mine: Vec<usize> = (0..self.consumers.len())
            .filter(|i| self.consumers[*i].owner == owner)
            .collect();
        let mut groups: Vec<String> = mine
            .into_iter()
            .filter_map(|i| self.before_leave(i))
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// The active member `i` stops: the group's offset becomes its first unacked
    /// offset (or its next), its unacked deliveries stay ackable (credit only).
    fn hand_over(&mut self, i: usize) {
        let c = &mut self.consumers[i];
        let resume = c.unacked.min_offset().unwrap_or(c.next).min(c.next);
        let delivered = c.next;
        c.active = false;
        for (id, _) in std::mem::take(&mut c.unacked) {
            self.orphans.insert(id, (c.owner, None, 0));
        }
        let Some(group) = c.name.clone() else {
            return;
        };
        tracing::debug!(group = %group, consumer = %c.tag, resume, "group member hands its partition over");
        self.offsets.insert(group.clone(), resume);
        self.offsets_dirty = true;
        let below = self.groups.delivered_below.entry(group).or_insert(0);
        *below = (*below).max(delivered);
    }

    /// Picks the active member of `group`: member `partition % members`, members by
    /// (owner, arrival). A member that becomes active starts at the group's stored
    /// offset (else where its own start put it).
    pub(super) fn rebalance(&mut self, group: Option<String>) {
        let Some(group) = group else { return };
        let mut members: Vec<usize> = (0..self.consumers.len())
            .filter(|i| {
                let c = &self.consumers[*i];
                c.single_active && c.name.as_deref() == Some(group.as_str())
            })
            .collect();
        if members.is_empty() {
            self.groups.delivered_below.remove(&group);
            return;
        }
        members.sort_by_key(|i| (self.consumers[*i].owner, self.consumers[*i].id));
        let index = self.groups.partition.unwrap_or(0) as usize % members.len();
        let chosen = members[index];
        for &i in &members {
            if i != chosen && self.consumers[i].active {
                self.hand_over(i);
            }
        }
        if self.consumers[chosen].active {
            return;
        }
        let (first, end) = (self.log.first_offset(), self.log.next_offset());
        let stored = self.offsets.get(&group).copied();
        let below = self
            .groups
            .delivered_below
            .get(&group)
            .copied()
            .unwrap_or(0);
        let c = &mut self.consumers[chosen];
        c.reset_to(stored.unwrap_or(c.next).clamp(first, end));
        c.redeliver_below = below;
        c.active = true;
        tracing::debug!(group = %group, consumer = %c.tag, offset = c.next, "group member is active");
    }

    /// After settlements of `owner`: the group offset of each of its active members is
    /// its first unacked offset (or its next), so a stored group offset never passes
    /// a record that is not acknowledged.
    pub(super) fn commit_groups(&mut self, owner: OwnerId) {
        for c in self
            .consumers
            .iter()
            .filter(|c| c.owner == owner && c.single_active && c.active)
        {
            let Some(group) = &c.name else { continue };
            let committed = c.unacked.min_offset().unwrap_or(c.next);
            if self.offsets.get(group) != Some(&committed) {
                self.offsets.insert(group.clone(), committed);
                self.offsets_dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
