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
//!
//! In a cluster the alarms are cluster-wide, as RabbitMQ's: the other nodes' alarms,
//! as the cluster reports them ([`MemoryGauge::set_remote_alarms`]), block this node's
//! publishers too, since a publisher here may route to a queue there (a classic queue's
//! home, a quorum queue's member). They never enter [`MemoryGauge::local_alarms`],
//! which is what this node reports to the others and what holds a batch forwarded to
//! it: a node's alarm is its own, and is not passed on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::watch;

/// The reason of this node's memory alarm.
pub const MEMORY_REASON: &str = "memory high watermark reached";

/// This node's own resource alarms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alarms {
    /// The memory high watermark is reached.
    pub memory: bool,
    /// Free disk space is below `storage.disk_free_limit` (or the store failed).
    pub disk: bool,
}

impl Alarms {
    /// True when either is raised.
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    fn code(self) -> u8 {
        u8::from(self.memory) | (u8::from(self.disk) << 1)
    }
}

/// Another node's alarms, as the cluster last heard them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAlarm {
    /// The node's id (reasons name it `node 2`).
    pub id: u64,
    /// Its name in the management API (`/api/nodes`).
    pub name: String,
    /// Its alarms (at least one raised).
    pub alarms: Alarms,
}

/// Shared gauge of bytes held, with the blocked / unblocked state derived from it.
#[derive(Debug)]
pub struct MemoryGauge {
    /// Bytes currently accounted (held in queues + reserved by in-flight publishes).
    used: AtomicUsize,
    /// The high watermark in bytes (`broker.memory_high_watermark`); 0 = unlimited.
    watermark: usize,
    /// Fast-path copy of the blocked state, read by every publish: a local alarm or
    /// another node's.
    blocked: AtomicBool,
    /// The memory alarm as last derived from the level (`used >= watermark`).
    memory_alarm: AtomicBool,
    /// [`Alarms::code`] of what `local` last sent.
    local_code: std::sync::atomic::AtomicU8,
    /// This node's own alarms, for the cluster (which reports them to the others) and
    /// for batches forwarded to this node, which wait while they are raised.
    local: watch::Sender<Alarms>,
    /// Another node of the cluster is in alarm (`remote` is not empty).
    remote_alarm: AtomicBool,
    /// The other nodes in alarm, as the cluster last reported them.
    remote: Mutex<Vec<RemoteAlarm>>,
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
        let (local, _) = watch::channel(Alarms::default());
        MemoryGauge {
            used: AtomicUsize::new(0),
            watermark,
            blocked: AtomicBool::new(false),
            memory_alarm: AtomicBool::new(false),
            local_code: Default::default(),
            local,
            remote_alarm: AtomicBool::new(false),
            remote: Mutex::new(Vec::new()),
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
        // The fast path of every publish, enqueue and ack: only a change of the memory
        // alarm is this caller's to handle (the disk alarm and the other nodes' run
        // the transition loop themselves when they change). Two loads, as before the
        // cluster's alarms; the loop below re-reads after any change it makes.
        let used = self.used.load(Ordering::SeqCst);
        if (used >= self.watermark) == self.memory_alarm.load(Ordering::SeqCst) {
            return;
        }
        self.transition_loop();
    }

    /// This node's alarms at memory level `used`.
    fn alarms_at(&self, used: usize) -> Alarms {
        Alarms {
            memory: self.watermark > 0 && used >= self.watermark,
            disk: self.disk_alarm.load(Ordering::SeqCst),
        }
    }

    /// True when the flags and watch channels say what the level and the alarms do.
    fn in_step(&self, used: usize) -> bool {
        let local = self.alarms_at(used);
        let block = local.any() || self.remote_alarm.load(Ordering::SeqCst);
        local.memory == self.memory_alarm.load(Ordering::SeqCst)
            && local.code() == self.local_code.load(Ordering::SeqCst)
            && block == self.blocked.load(Ordering::SeqCst)
    }

    fn transition_loop(&self) {
        loop {
            if self.in_step(self.used.load(Ordering::SeqCst)) {
                return;
            }
            let _transition = self.transition.lock().unwrap_or_else(|e| e.into_inner());
            let now = self.used.load(Ordering::SeqCst);
            if self.in_step(now) {
                continue;
            }
            let local = self.alarms_at(now);
            self.memory_alarm.store(local.memory, Ordering::SeqCst);
            if self.local_code.swap(local.code(), Ordering::SeqCst) != local.code() {
                self.local.send_replace(local);
            }
            let should_block = local.any() || self.remote_alarm.load(Ordering::SeqCst);
            if should_block == self.blocked.swap(should_block, Ordering::SeqCst) {
                continue;
            }
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

    /// The disk alarm's reason while it is raised.
    pub fn disk_reason(&self) -> Option<String> {
        self.disk_alarm().then(|| {
            self.disk_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// True while this node's memory alarm is raised (its level at the watermark).
    pub fn memory_alarm(&self) -> bool {
        self.memory_alarm.load(Ordering::SeqCst)
    }

    /// This node's own alarms (not the other nodes').
    pub fn local_alarms(&self) -> Alarms {
        *self.local.borrow()
    }

    /// A receiver that sees every change of this node's own alarms.
    pub fn subscribe_local(&self) -> watch::Receiver<Alarms> {
        self.local.subscribe()
    }

    /// Sets the other nodes of the cluster in alarm (replacing what was set before):
    /// while any is, publishers here are blocked as by a local alarm.
    pub fn set_remote_alarms(&self, mut nodes: Vec<RemoteAlarm>) {
        nodes.retain(|n| n.alarms.any());
        let on = !nodes.is_empty();
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        if *remote == nodes {
            return;
        }
        for n in nodes.iter().filter(|n| !remote.contains(n)) {
            tracing::warn!(node = n.id, reason = %remote_reason(n), "another node of the cluster is in alarm: publishers here are blocked too");
        }
        *remote = nodes;
        // Under the lock: the flag is the last list's, whichever call set it last.
        self.remote_alarm.store(on, Ordering::SeqCst);
        drop(remote);
        self.transition_loop();
    }

    /// The other nodes in alarm, as last set.
    pub fn remote_alarms(&self) -> Vec<RemoteAlarm> {
        self.remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why publishers are blocked (for the Blocked notice): this node's alarm (the
    /// disk alarm's reason when it is raised, else the memory watermark), then each
    /// other node's in alarm, in RabbitMQ's words ("low on memory", "low on disk")
    /// with the node named, joined with " & " as RabbitMQ joins its reasons.
    pub fn blocked_reason(&self) -> String {
        let mut parts = Vec::new();
        if let Some(disk) = self.disk_reason() {
            parts.push(disk);
        } else if self.memory_alarm() {
            parts.push(MEMORY_REASON.to_string());
        }
        parts.extend(self.remote_alarms().iter().map(remote_reason));
        if parts.is_empty() {
            // Raced with the clearing: the last reason there was is not known.
            return MEMORY_REASON.to_string();
        }
        parts.join(" & ")
    }

    /// Waits until this node's own alarms are clear (the other nodes' do not count).
    pub async fn wait_local_clear(&self) {
        let mut rx = self.local.subscribe();
        let _ = rx.wait_for(|a| !a.any()).await;
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

/// Another node's alarms in RabbitMQ's words, naming the node: `low on memory (node
/// 2)`, `low on memory & low on disk (node 3)`.
fn remote_reason(n: &RemoteAlarm) -> String {
    let mut what = Vec::new();
    if n.alarms.memory {
        what.push("low on memory");
    }
    if n.alarms.disk {
        what.push("low on disk");
    }
    format!("{} (node {})", what.join(" & "), n.id)
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

    fn remote(id: u64, memory: bool, disk: bool) -> RemoteAlarm {
        RemoteAlarm {
            id,
            name: format!("node{id}@127.0.0.1:1"),
            alarms: Alarms { memory, disk },
        }
    }

    #[test]
    fn another_node_s_alarm_blocks_publishers_but_is_not_this_node_s() {
        let g = MemoryGauge::new(100);
        let rx = g.subscribe();
        let local = g.subscribe_local();
        g.set_remote_alarms(vec![remote(2, true, false)]);
        assert!(g.is_blocked() && *rx.borrow());
        assert_eq!(g.blocked_reason(), "low on memory (node 2)");
        assert_eq!(g.local_alarms(), Alarms::default());
        assert!(!local.has_changed().unwrap(), "not this node's alarm");

        // This node's own alarm comes and goes under it: publishers stay blocked.
        g.add(100);
        assert!(g.local_alarms().memory && g.memory_alarm());
        g.set_remote_alarms(vec![remote(2, true, false), remote(3, true, true)]);
        assert_eq!(
            g.blocked_reason(),
            "memory high watermark reached & low on memory (node 2) & low on memory & low on disk (node 3)"
        );
        g.sub(100);
        assert!(!g.local_alarms().any() && g.is_blocked());

        // Nodes with nothing raised are not in alarm.
        g.set_remote_alarms(vec![remote(2, false, false)]);
        assert!(!g.is_blocked() && !*rx.borrow());
        assert!(g.remote_alarms().is_empty());
    }

    #[tokio::test]
    async fn a_forwarded_batch_waits_for_this_node_s_alarms_only() {
        let g = MemoryGauge::new(100);
        g.set_remote_alarms(vec![remote(2, false, true)]);
        tokio::time::timeout(std::time::Duration::from_secs(5), g.wait_local_clear())
            .await
            .expect("another node's alarm does not hold it");
        g.set_disk_alarm(Some("disk".into()));
        let held = tokio::time::timeout(std::time::Duration::from_millis(50), g.wait_local_clear());
        assert!(held.await.is_err(), "this node's alarm holds it");
    }

    #[test]
    fn zero_watermark_never_blocks() {
        let g = MemoryGauge::new(0);
        g.add(usize::MAX / 2);
        assert!(!g.is_blocked());
    }
}
