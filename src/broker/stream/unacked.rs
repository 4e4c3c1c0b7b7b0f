//! A stream consumer's unacknowledged deliveries: (delivery id, offset) pairs in the
//! order of their ids. Ids only grow, so a delivery is appended at the back, and acks
//! mostly come in order, so it leaves from the front: a ring buffer where a
//! `BTreeMap` spent ~4% of a replay's broker CPU on its nodes. An ack out of order
//! finds its entry by binary search and shifts the ones after it (at most a prefetch).

use std::collections::VecDeque;

/// Unacked deliveries of one consumer, by increasing delivery id.
#[derive(Debug, Default)]
pub(super) struct Unacked {
    entries: VecDeque<(u64, u64)>,
}

impl Unacked {
    /// Notes delivery `id` of `offset`.
    pub(super) fn insert(&mut self, id: u64, offset: u64) {
        match self.entries.back() {
            Some((last, _)) if *last >= id => {
                // Not reached: ids come from one counter. Kept sorted regardless.
                if let Err(i) = self.entries.binary_search_by_key(&id, |e| e.0) {
                    self.entries.insert(i, (id, offset));
                }
            }
            _ => self.entries.push_back((id, offset)),
        }
    }

    /// Takes delivery `id` out; answers its offset.
    pub(super) fn remove(&mut self, id: u64) -> Option<u64> {
        if self.entries.front().is_some_and(|e| e.0 == id) {
            return self.entries.pop_front().map(|e| e.1);
        }
        let i = self.entries.binary_search_by_key(&id, |e| e.0).ok()?;
        self.entries.remove(i).map(|e| e.1)
    }

    /// How many.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Their offsets.
    pub(super) fn values(&self) -> impl Iterator<Item = &u64> {
        self.entries.iter().map(|e| &e.1)
    }
}

impl IntoIterator for Unacked {
    type Item = (u64, u64);
    type IntoIter = std::collections::vec_deque::IntoIter<(u64, u64)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_in_any_order_find_their_delivery() {
        let mut u = Unacked::default();
        for (id, offset) in [(3, 30), (5, 50), (9, 10), (12, 11)] {
            u.insert(id, offset);
        }
        assert_eq!(u.values().min(), Some(&10));
        assert_eq!(u.remove(5), Some(50), "out of order");
        assert_eq!(u.remove(5), None, "once");
        assert_eq!(u.remove(3), Some(30), "the front");
        assert_eq!(u.remove(4), None);
        u.insert(7, 70);
        assert_eq!(u.len(), 3);
        assert_eq!(
            u.into_iter().collect::<Vec<_>>(),
            vec![(7, 70), (9, 10), (12, 11)]
        );
    }
}
