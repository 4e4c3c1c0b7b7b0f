//! Deliveries a consumer's client holds that no open session maps: those of a
//! session that ended (its leader died, or stopped leading) and, for a consumer this
//! node served while it led, those it made then. Their settlements settle nothing at
//! the leader (its takeover returned the messages, which come again marked), but the
//! client holds them all the same: the leader is told how many with the consumer's
//! `Up::Consume` and counts them against its prefetch, and is told as the client
//! settles them (`Up::Released`), so the client never holds more than its prefetch
//! across a leader change.

use std::collections::{HashMap, HashSet};

/// The stale deliveries of each consumer, by the queue actor's consumer id.
#[derive(Default)]
pub(super) struct Stale {
    by: HashMap<u64, HashSet<u64>>,
}

impl Stale {
    /// `consumer`'s client holds deliveries `ids` (as it names them) no session maps.
    pub(super) fn add(&mut self, consumer: u64, ids: impl IntoIterator<Item = u64>) {
        let set = self.by.entry(consumer).or_default();
        set.extend(ids);
        if set.is_empty() {
            self.by.remove(&consumer);
        }
    }

    /// How many `consumer`'s client holds.
    pub(super) fn count(&self, consumer: u64) -> u32 {
        self.by.get(&consumer).map_or(0, |s| s.len() as u32)
    }

    /// The client settled `ids`: those that were stale are forgotten, and answered
    /// as how many of each consumer's.
    pub(super) fn settled(&mut self, ids: &[u64]) -> Vec<(u64, u32)> {
        let mut freed: Vec<(u64, u32)> = Vec::new();
        for id in ids {
            let Some((&consumer, set)) = self.by.iter_mut().find(|(_, s)| s.contains(id)) else {
                continue;
            };
            set.remove(id);
            if set.is_empty() {
                self.by.remove(&consumer);
            }
            match freed.iter_mut().find(|(c, _)| *c == consumer) {
                Some((_, n)) => *n += 1,
                None => freed.push((consumer, 1)),
            }
        }
        freed
    }

    /// `consumer` went: what its client holds no longer counts against anything.
    pub(super) fn forget(&mut self, consumer: u64) {
        self.by.remove(&consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_deliveries_are_counted_per_consumer_until_settled_once() {
        let mut s = Stale::default();
        s.add(1, [100, 101, 102]);
        s.add(2, [200]);
        s.add(3, []);
        assert_eq!((s.count(1), s.count(2), s.count(3)), (3, 1, 0));
        // Mixed: two of consumer 1, one of 2, one unknown (a live session's id).
        let mut freed = s.settled(&[100, 200, 999, 102]);
        freed.sort();
        assert_eq!(freed, vec![(1, 2), (2, 1)]);
        assert_eq!((s.count(1), s.count(2)), (1, 0));
        assert!(s.settled(&[100]).is_empty(), "settled twice frees once");
        s.forget(1);
        assert_eq!(s.count(1), 0);
        assert!(
            s.settled(&[101]).is_empty(),
            "a gone consumer's frees nothing"
        );
    }
}
