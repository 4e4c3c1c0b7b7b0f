//! The state a sequence of records leaves behind: per queue, the live messages by id,
//! the delivered watermark and the next id. Pure bookkeeping, shared by every store so
//! they cannot disagree: the memory store applies records to it directly (bodies kept);
//! the disk store replays its log through it at open and on recovery, and its writer
//! keeps one, all without bodies: they know where each live message is, and read back
//! the bodies they need.
//!
//! `L` is where a message lives: `()` in memory, segment, offset and length on disk.
//! Whenever a record removes a live message, the caller's `killed` callback hears its
//! location.

use super::record::{QueueId, Record, Recovered, RecoveredMessage, RecoveredQueue};
use crate::message::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The id a recovered queue gives its next message: above every id seen and the
/// delivered watermark, so ids are never reused across restarts.
pub(crate) fn resume_id(next_id: u64, delivered: u64) -> u64 {
    next_id.max(delivered.saturating_add(1)).max(1)
}

/// A live message.
#[derive(Debug, Clone)]
struct Slot<L> {
    /// Where it is stored.
    loc: L,
    /// Its content, when the replay keeps bodies (recovery, the memory store).
    message: Option<Arc<Message>>,
}

/// The replayed state of one queue.
#[derive(Debug, Clone)]
struct QueueLog<L> {
    /// Live messages by id.
    live: BTreeMap<u64, Slot<L>>,
    /// The highest id reported delivered.
    delivered: u64,
    /// Above every id seen for the queue.
    next_id: u64,
    /// Deliveries so far of the messages delivered more than once (see
    /// [`Record::DeliveryCounts`]). An id leaves it when it is acked, purged or deleted;
    /// one whose ack was in a reclaimed segment may linger, so readers look at live ids
    /// only.
    counts: HashMap<u64, u32>,
}

impl<L> Default for QueueLog<L> {
    fn default() -> Self {
        QueueLog {
            live: BTreeMap::new(),
            delivered: 0,
            next_id: 1,
            counts: HashMap::new(),
        }
    }
}

impl<L> QueueLog<L> {
    /// How many times message `id` may have been delivered: its recorded count, or 1
    /// when it is at or below the delivered watermark, else 0.
    fn deliveries(&self, id: u64) -> u32 {
        let watermark = u32::from(id <= self.delivered);
        self.counts.get(&id).copied().unwrap_or(0).max(watermark)
    }
}

/// The state left by the records applied so far.
#[derive(Debug, Clone)]
pub(crate) struct Replay<L> {
    /// Every queue with a record since its last delete.
    queues: HashMap<QueueId, QueueLog<L>>,
}

impl<L> Default for Replay<L> {
    fn default() -> Self {
        Replay {
            queues: HashMap::new(),
        }
    }
}

impl<L: Copy> Replay<L> {
    /// Applies one record stored at `loc`. `message` is the body to keep for a publish
    /// (`None` to keep only its location); `killed` hears the location of every live
    /// message the record removes (a publish over a live id removes the older one).
    pub fn apply(
        &mut self,
        record: &Record,
        loc: L,
        message: Option<Arc<Message>>,
        killed: &mut dyn FnMut(L),
    ) {
        match record {
            Record::Publish { queue, id, .. } => {
                let q = self.queues.entry(queue.clone()).or_default();
                q.next_id = q.next_id.max(id.saturating_add(1));
                if let Some(old) = q.live.insert(*id, Slot { loc, message }) {
                    killed(old.loc);
                }
            }
            Record::Ack { queue, ids } => {
                if let Some(q) = self.queues.get_mut(queue) {
                    for id in ids {
                        if let Some(old) = q.live.remove(id) {
                            killed(old.loc);
                        }
                        q.counts.remove(id);
                    }
                }
            }
            Record::Delivered { queue, up_to } => {
                let q = self.queues.entry(queue.clone()).or_default();
                q.delivered = q.delivered.max(*up_to);
            }
            Record::DeliveryCounts { queue, counts } => {
                let q = self.queues.entry(queue.clone()).or_default();
                for &(id, n) in counts {
                    let c = q.counts.entry(id).or_default();
                    *c = (*c).max(n);
                }
            }
            Record::Purge {
                queue,
                below,
                except,
            } => {
                if let Some(q) = self.queues.get_mut(queue) {
                    let mut keep = except.clone();
                    keep.sort_unstable();
                    let doomed: Vec<u64> = q
                        .live
                        .range(..*below)
                        .map(|(id, _)| *id)
                        .filter(|id| keep.binary_search(id).is_err())
                        .collect();
                    for id in doomed {
                        if let Some(old) = q.live.remove(&id) {
                            killed(old.loc);
                        }
                        q.counts.remove(&id);
                    }
                    q.next_id = q.next_id.max(*below);
                }
            }
            Record::DeleteQueue { queue } => {
                if let Some(q) = self.queues.remove(queue) {
                    for slot in q.live.into_values() {
                        killed(slot.loc);
                    }
                }
            }
        }
    }

    /// Applies a mark (written when the disk log rolls to a new segment, so the newest
    /// segment always knows every queue's watermark and next id).
    pub fn mark(&mut self, queue: &QueueId, next_id: u64, delivered: u64) {
        let q = self.queues.entry(queue.clone()).or_default();
        q.next_id = q.next_id.max(next_id);
        q.delivered = q.delivered.max(delivered);
    }

    /// Every queue's (next id, delivered watermark), for the marks of a new segment.
    pub fn marks(&self) -> Vec<(QueueId, u64, u64)> {
        let mut v: Vec<_> = self
            .queues
            .iter()
            .map(|(id, q)| (id.clone(), q.next_id, q.delivered))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every queue's delivery counts of its live messages (ids increasing), for the
    /// start of a new segment; queues without any are left out.
    pub fn counts(&self) -> Vec<(QueueId, Vec<(u64, u32)>)> {
        let mut v: Vec<_> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.counts.is_empty())
            .map(|(id, q)| {
                let mut counts: Vec<(u64, u32)> = q
                    .counts
                    .iter()
                    .filter(|(mid, _)| q.live.contains_key(mid))
                    .map(|(mid, n)| (*mid, *n))
                    .collect();
                counts.sort_unstable();
                (id.clone(), counts)
            })
            .filter(|(_, counts)| !counts.is_empty())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// How many times message `id` of `queue` may have been delivered (see
    /// [`RecoveredMessage::deliveries`]).
    pub fn deliveries(&self, queue: &QueueId, id: u64) -> u32 {
        self.queues.get(queue).map_or(0, |q| q.deliveries(id))
    }

    /// Where the live message `id` of `queue` is stored, if it is live.
    pub fn location(&self, queue: &QueueId, id: u64) -> Option<L> {
        self.queues.get(queue)?.live.get(&id).map(|s| s.loc)
    }

    /// The kept body of the live message `id` of `queue`, if any.
    pub fn message(&self, queue: &QueueId, id: u64) -> Option<Arc<Message>> {
        self.queues.get(queue)?.live.get(&id)?.message.clone()
    }

    /// Every queue's live messages (id and location, ids increasing), delivered
    /// watermark and next id: what a recovery that reads the bodies itself needs.
    pub fn queues(&self) -> impl Iterator<Item = (&QueueId, Vec<(u64, L)>, u64, u64)> + '_ {
        self.queues.iter().map(|(id, q)| {
            let live = q.live.iter().map(|(mid, slot)| (*mid, slot.loc)).collect();
            (id, live, q.delivered, q.next_id)
        })
    }

    /// Live messages in all queues.
    #[cfg(test)]
    pub fn live_count(&self) -> usize {
        self.queues.values().map(|q| q.live.len()).sum()
    }

    /// The surviving state: every queue's live messages that have a body kept, in id
    /// order, with the redelivered flag from the watermark and their delivery counts.
    pub fn recovered(&self) -> Recovered {
        let mut out = Recovered::new();
        for (id, q) in &self.queues {
            let messages = q
                .live
                .iter()
                .filter_map(|(mid, slot)| {
                    slot.message.as_ref().map(|m| RecoveredMessage {
                        id: *mid,
                        redelivered: *mid <= q.delivered,
                        deliveries: q.deliveries(*mid),
                        message: m.clone(),
                    })
                })
                .collect();
            let next_id = resume_id(q.next_id, q.delivered);
            out.insert(
                id.clone(),
                RecoveredQueue {
                    messages,
                    paged: Vec::new(),
                    next_id,
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> QueueId {
        QueueId::new("/", "q")
    }

    fn publish(r: &mut Replay<u32>, id: u64, loc: u32, killed: &mut Vec<u32>) {
        let m = Arc::new(Message::new("", "q", format!("m{id}")));
        let rec = Record::Publish {
            queue: q(),
            id,
            message: m.clone(),
        };
        r.apply(&rec, loc, Some(m), &mut |l| killed.push(l));
    }

    #[test]
    fn kills_report_where_the_removed_messages_lived() {
        let mut r = Replay::default();
        let mut killed = Vec::new();
        for id in 1..=4 {
            publish(&mut r, id, id as u32 * 10, &mut killed);
        }
        let ack = Record::Ack {
            queue: q(),
            ids: vec![2, 99],
        };
        r.apply(&ack, 0, None, &mut |l| killed.push(l));
        assert_eq!(killed, vec![20]);
        let purge = Record::Purge {
            queue: q(),
            below: 5,
            except: vec![3],
        };
        r.apply(&purge, 0, None, &mut |l| killed.push(l));
        assert_eq!(killed, vec![20, 10, 40]);
        let del = Record::DeleteQueue { queue: q() };
        r.apply(&del, 0, None, &mut |l| killed.push(l));
        assert_eq!(killed, vec![20, 10, 40, 30]);
        assert_eq!(r.live_count(), 0);
    }

    fn apply(r: &mut Replay<u32>, rec: Record) {
        r.apply(&rec, 0, None, &mut |_| {});
    }

    #[test]
    fn delivery_counts_take_the_highest_and_leave_with_their_message() {
        let mut r = Replay::default();
        let mut killed = Vec::new();
        for id in 1..=5 {
            publish(&mut r, id, 0, &mut killed);
        }
        let counts = |counts: &[(u64, u32)]| Record::DeliveryCounts {
            queue: q(),
            counts: counts.to_vec(),
        };
        apply(
            &mut r,
            Record::Delivered {
                queue: q(),
                up_to: 3,
            },
        );
        apply(&mut r, counts(&[(2, 3), (3, 2), (4, 2)]));
        apply(&mut r, counts(&[(2, 2)]));
        let got = |r: &Replay<u32>| -> Vec<u32> {
            r.recovered()[&q()]
                .messages
                .iter()
                .map(|m| m.deliveries)
                .collect()
        };
        // 1: under the watermark; 2: the highest count; 5: never delivered.
        assert_eq!(got(&r), vec![1, 3, 2, 2, 0]);
        assert_eq!(r.deliveries(&q(), 4), 2);
        // Acked, purged: the counts go with the messages.
        apply(
            &mut r,
            Record::Ack {
                queue: q(),
                ids: vec![2],
            },
        );
        apply(
            &mut r,
            Record::Purge {
                queue: q(),
                below: 4,
                except: vec![],
            },
        );
        assert_eq!(got(&r), vec![2, 0]);
        assert_eq!(r.counts(), vec![(q(), vec![(4, 2)])]);
        // A compaction copy of a live message (a publish over its id) keeps its count.
        publish(&mut r, 4, 9, &mut killed);
        assert_eq!(r.deliveries(&q(), 4), 2);
        apply(&mut r, Record::DeleteQueue { queue: q() });
        assert!(r.counts().is_empty());
    }

    #[test]
    fn next_id_stays_above_every_id_and_watermark() {
        let mut r = Replay::default();
        let mut killed = Vec::new();
        publish(&mut r, 7, 0, &mut killed);
        r.apply(
            &Record::Delivered {
                queue: q(),
                up_to: 9,
            },
            0,
            None,
            &mut |_| {},
        );
        let rec = r.recovered();
        assert_eq!(rec[&q()].next_id, 10);
        assert!(rec[&q()].messages[0].redelivered);
    }
}
