//! The broker-wide memory high watermark, and the resource alarms that block publishers.
//!
//! Counts the bytes of messages held by queues, as [`crate::Message::accounted_size`]
//! gives them: bodies, properties and decoded headers (a header table of tiny values
//! takes tens of times its encoded size, and counting bodies alone let empty-bodied
//! messages with large headers fill the machine unseen). Each queue's copy is counted,
//! so a fanout to four queues counts four times: conservative. A stream queue counts
//! what it keeps in memory (its tail cache of the newest records, its sparse index and
//! its consumers' read-ahead), not the records that are only in its files. Plus the bytes
//! publishers have reserved for batches still in flight. Above the watermark publishers are blocked
//! until the level falls; consumers keep draining. Reserving before sending is what keeps
//! the held bytes under the watermark plus one batch per publisher.
//!
//! The disk alarm (free space of the data directory below `storage.disk_free_limit`,
//! or a failed message store) blocks publishers the same way: the blocked flag and its
//! watch channel are "either alarm is raised", so publishers and the Blocked / Unblocked
//! notices need not know which one it is ([`MemoryGauge::blocked_reason`] says).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
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
    /// Serialises flag transitions, so the flag and `state` change together, in order.
    transition: Mutex<()>,
    /// The disk alarm is raised (set by the broker's disk monitor).
    disk_alarm: AtomicBool,
    /// Why the disk alarm is raised, for the Blocked notice and logs.
    disk_reason: Mutex<String>,
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
            transition: Mutex::new(()),
            disk_alarm: AtomicBool::new(false),
            disk_reason: Mutex::new(String::new()),
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
        self.used.fetch_add(bytes, Ordering::SeqCst);
        self.update();
    }

    /// Accounts `bytes` fewer.
    pub fn sub(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        self.update();
    }

    /// Brings the blocked flag (and the watch channel) in line with the level.
    ///
    /// The flag is derived from a fresh read of `used`, never from the value the caller's
    /// own `add` / `sub` produced: that value may be stale by the time the flag is set (an
    /// add crossing the watermark overtaken by a sub on another thread would leave
    /// publishers blocked below it, with nothing left to unblock them). Transitions are
    /// rare, so they are serialised by `transition`, and whoever changes the flag reads
    /// the level again afterwards: a change that raced with it is either seen by that
    /// re-read or makes its own caller find the flag wrong and fix it.
    fn update(&self) {
        if self.watermark == 0 {
            // The memory level never changes the flag; only the disk alarm does.
            return;
        }
        self.transition_loop();
    }

    /// True when the memory level or the disk alarm says publishers must wait.
    fn should_block(&self, used: usize) -> bool {
        (self.watermark > 0 && used >= self.watermark) || self.disk_alarm.load(Ordering::SeqCst)
    }

    fn transition_loop(&self) {
        loop {
            let should_block = self.should_block(self.used.load(Ordering::SeqCst));
            if should_block == self.blocked.load(Ordering::SeqCst) {
                return;
            }
            let _transition = self.transition.lock().unwrap_or_else(|e| e.into_inner());
            let now = self.used.load(Ordering::SeqCst);
            let should_block = self.should_block(now);
            if should_block == self.blocked.load(Ordering::SeqCst) {
                continue;
            }
            self.blocked.store(should_block, Ordering::SeqCst);
            self.state.send_replace(should_block);
            if should_block {
                tracing::warn!(
                    used = now,
                    watermark = self.watermark,
                    reason = %self.blocked_reason(),
                    "blocking publishers"
                );
            } else {
                tracing::info!(used = now, "resource alarms cleared: unblocking publishers");
            }
        }
    }

    /// Raises (`Some(reason)`) or clears (`None`) the disk alarm; while raised,
    /// publishers are blocked whatever the memory level.
    pub fn set_disk_alarm(&self, reason: Option<String>) {
        let on = reason.is_some();
        if let Some(r) = reason {
            *self.disk_reason.lock().unwrap_or_else(|e| e.into_inner()) = r;
        }
        if self.disk_alarm.swap(on, Ordering::SeqCst) != on {
            self.transition_loop();
        }
    }

    /// True while the disk alarm is raised.
    pub fn disk_alarm(&self) -> bool {
        self.disk_alarm.load(Ordering::SeqCst)
    }

    /// Why publishers are blocked (for the Blocked notice): the disk alarm's reason
    /// when it is raised, else the memory watermark.
    pub fn blocked_reason(&self) -> String {
        if self.disk_alarm() {
            self.disk_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        } else {
            "memory high watermark reached".to_string()
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

    /// Regression: `update` used to decide from the value its own `add` / `sub` saw, so a
    /// publisher's add crossing the watermark, overtaken by the matching sub on another
    /// thread, could leave the flag set with the level below it: publishers blocked for
    /// good, with nothing left to unblock them.
    #[test]
    fn racing_add_and_sub_leave_the_flag_matching_the_level() {
        use std::sync::{Arc, Barrier};
        const ROUNDS: usize = 5_000;
        let g = Arc::new(MemoryGauge::new(100));
        g.add(99);
        let start = Arc::new(Barrier::new(3));
        let end = Arc::new(Barrier::new(3));
        let adder = {
            let (g, start, end) = (g.clone(), start.clone(), end.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    start.wait();
                    g.add(2);
                    end.wait();
                }
            })
        };
        let subber = {
            let (g, start, end) = (g.clone(), start.clone(), end.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    start.wait();
                    // Release the bytes as soon as they are accounted, as an exchange's
                    // answer releases a publisher's reservation.
                    while g.used() < 101 {
                        std::hint::spin_loop();
                    }
                    g.sub(2);
                    end.wait();
                }
            })
        };
        for round in 0..ROUNDS {
            start.wait();
            end.wait();
            assert_eq!(g.used(), 99);
            assert!(
                !g.is_blocked() && !*g.subscribe().borrow(),
                "round {round}: blocked at 99 bytes of a 100-byte watermark"
            );
        }
        adder.join().unwrap();
        subber.join().unwrap();
    }

    #[test]
    fn the_disk_alarm_blocks_whatever_the_memory_level() {
        let g = MemoryGauge::new(0);
        let rx = g.subscribe();
        g.set_disk_alarm(Some("disk free space low".into()));
        assert!(g.is_blocked() && *rx.borrow());
        assert_eq!(g.blocked_reason(), "disk free space low");
        g.set_disk_alarm(None);
        assert!(!g.is_blocked() && !*rx.borrow());

        let g = MemoryGauge::new(100);
        g.add(100);
        g.set_disk_alarm(Some("disk".into()));
        g.sub(100);
        assert!(g.is_blocked(), "the disk alarm still holds");
        g.set_disk_alarm(None);
        assert!(!g.is_blocked());
        g.add(100);
        assert!(g.is_blocked());
        assert_eq!(g.blocked_reason(), "memory high watermark reached");
    }

    #[test]
    fn zero_watermark_never_blocks() {
        let g = MemoryGauge::new(0);
        g.add(usize::MAX / 2);
        assert!(!g.is_blocked());
    }
}
