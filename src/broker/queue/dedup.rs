//! The deduplication window of a queue (`x-dedup-window`, SQS FIFO / NATS `Nats-Msg-Id`
//! behaviour): a `message_id` enqueued within the last window is not enqueued again.
//!
//! Ids are remembered in arrival order; since the window is the same for all, the oldest
//! is always the first to leave, so forgetting is a pop from the front. Memory is bounded
//! by the ids published within one window.

use super::timers::Millis;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Message ids seen within the window.
#[derive(Debug)]
pub struct DedupWindow {
    /// The window in milliseconds.
    window: Millis,
    /// Ids seen, for lookup.
    seen: HashSet<Arc<str>>,
    /// The same ids in arrival order, with when they were seen.
    order: VecDeque<(Millis, Arc<str>)>,
}

impl DedupWindow {
    /// An empty window of `window` milliseconds.
    pub fn new(window: Millis) -> Self {
        DedupWindow {
            window,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Forgets ids seen a window or more before `now`.
    fn forget_old(&mut self, now: Millis) {
        while let Some((at, _)) = self.order.front() {
            if at.saturating_add(self.window) > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }

    /// True when `id` was recorded within the window before `now`.
    pub fn is_duplicate(&mut self, id: &str, now: Millis) -> bool {
        self.forget_old(now);
        self.seen.contains(id)
    }

    /// Remembers `id` as enqueued at `now`.
    pub fn record(&mut self, id: &str, now: Millis) {
        let id: Arc<str> = Arc::from(id);
        if self.seen.insert(id.clone()) {
            self.order.push_back((now, id));
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_duplicate_within_the_window_only() {
        let mut w = DedupWindow::new(100);
        assert!(!w.is_duplicate("a", 0));
        w.record("a", 0);
        assert!(w.is_duplicate("a", 99));
        assert!(!w.is_duplicate("b", 99));
        w.record("b", 50);
        assert!(!w.is_duplicate("a", 100), "the window has passed");
        assert_eq!(w.len(), 1, "a was forgotten");
        assert!(w.is_duplicate("b", 149));
        assert!(!w.is_duplicate("b", 150));
        assert!(w.is_empty());
    }
}
