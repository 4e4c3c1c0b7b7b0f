//! The broker-wide memory high watermark.
//!
//! Counts the bytes of message bodies held by queues (each queue's copy counted, so a
//! fanout to four queues counts four times: conservative) plus the bytes publishers have
//! reserved for batches still in flight. Above the watermark publishers are blocked
//! until the level falls; consumers keep draining. Reserving before sending is what keeps
//! the held bytes under the watermark plus one batch per publisher.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::watch;

/// Shared gauge of bytes held, with the blocked / unblocked state derived from it.
#[derive(Debug)]
pub struct MemoryGauge {
    /// Bytes currently accounted (held in queues + reserved by in-flight publishes).
    used: AtomicUsize,
    /// The high watermark in bytes (`broker.memory_high_watermark`); 0 = unlimited.
    watermark: usize,
    /// Fast-path copy of the blocked state, read by every publish.
    blocked: AtomicBool,
    /// Broadcasts state changes to publishers waiting to be unblocked and to connections
    /// that tell their clients (Blocked / Unblocked notices).
    state: watch::Sender<bool>,
}

impl MemoryGauge {
    /// A gauge with the given watermark in bytes (0 disables blocking).
    pub fn new(watermark: usize) -> Self {
        let (state, _) = watch::channel(false);
        MemoryGauge {
            used: AtomicUsize::new(0),
            watermark,
            blocked: AtomicBool::new(false),
            state,
        }
    }

    /// Bytes accounted right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The configured watermark (0 = unlimited).
    pub fn watermark(&self) -> usize {
        self.watermark
    }

    /// True while publishers are blocked.
    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Acquire)
    }

    /// A receiver that sees every blocked / unblocked transition.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// Accounts `bytes` more.
    pub fn add(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let now = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.update(now);
    }

    /// Accounts `bytes` fewer.
    pub fn sub(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let now = self.used.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.update(now);
    }

    fn update(&self, now: usize) {
        if self.watermark == 0 {
            return;
        }
        let should_block = now >= self.watermark;
        if should_block != self.blocked.load(Ordering::Acquire)
            && self
                .blocked
                .compare_exchange(
                    !should_block,
                    should_block,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            if should_block {
                tracing::warn!(
                    used = now,
                    watermark = self.watermark,
                    "memory high watermark reached: blocking publishers"
                );
            } else {
                tracing::info!(
                    used = now,
                    "memory below the watermark: unblocking publishers"
                );
            }
            self.state.send_replace(should_block);
        }
    }

    /// Waits until publishers are not blocked.
    pub async fn wait_unblocked(&self) {
        if !self.is_blocked() {
            return;
        }
        let mut rx = self.state.subscribe();
        // `wait_for` checks the current value first, so a transition between the
        // fast-path check and the subscription is not missed.
        let _ = rx.wait_for(|blocked| !*blocked).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_at_the_watermark_and_unblocks_below_it() {
        let g = MemoryGauge::new(100);
        let rx = g.subscribe();
        g.add(99);
        assert!(!g.is_blocked());
        g.add(1);
        assert!(g.is_blocked());
        assert!(*rx.borrow());
        g.sub(1);
        assert!(!g.is_blocked());
        assert!(!*rx.borrow());
        assert_eq!(g.used(), 99);
    }

    #[test]
    fn zero_watermark_never_blocks() {
        let g = MemoryGauge::new(0);
        g.add(usize::MAX / 2);
        assert!(!g.is_blocked());
    }
}
