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
}

impl<L> Default for QueueLog<L> {
    fn default() -> Self {
        QueueLog {
            live: BTreeMap::new(),
            delivered: 0,
            next_id: 1,
        }
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
                    }
                }
            }
            Record::Delivered { queue, up_to } => {
                let q = self.queues.entry(queue.clone()).or_default();
                q.delivered = q.delivered.max(*up_to);
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
    /// order, with the redelivered flag from the watermark.
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
