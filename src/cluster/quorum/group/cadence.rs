//! When a group's member snapshots its queue. openraft's own policy counts entries
//! only (`LogsSinceLast`): every 500 entries it serialized and wrote the whole queue,
//! so a queue with a backlog of hundreds of megabytes was rewritten every second or two
//! on every member, taking the CPU that publishing and consuming needed and pausing
//! both. A snapshot is due instead once at least [`SNAPSHOT_EVERY`] entries **and** at
//! least as many bytes of messages as the queue holds have been applied since the last
//! one, and bytes of messages as the queue held at the last snapshot or holds now,
//! whichever is less: the snapshot's cost, proportional to the queue, is paid once per
//! queue's worth of log (a growing queue's snapshots double in size, so writing them
//! costs about one byte per byte published), while the log since the snapshot (on
//! disk, and in memory for replication, where it shares the machine's messages) stays
//! within about the queue's size; a queue being drained (acks publish nothing) is
//! snapshotted every 500 entries once it is small again, releasing what its log held.
//!
//! The group's openraft config says `SnapshotPolicy::Never`; [`Cadence`] counts what
//! is applied, and [`run_snapshots`] asks the member's Raft for a snapshot when one is due.

use super::super::machine::Command;
use super::StoredMessage;
use crate::cluster::quorum::machine::Weighed;
use tokio::sync::mpsc;

/// Fewest entries between two snapshots of a group's queue (an empty queue's
/// snapshot is cheap: this bounds how often it is taken).
pub const SNAPSHOT_EVERY: u64 = 500;

/// Most entries between two snapshots whatever the bytes: a queue that holds messages
/// and takes no publishes (consumers nacking with requeue in a loop, a poison message
/// under a single active consumer) applies entries forever without publishing a
/// byte, and its log must not grow without bound.
pub const SNAPSHOT_AT_MOST_EVERY: u64 = 20 * SNAPSHOT_EVERY;

/// What was applied since the last snapshot, and whom to tell that one is due.
#[derive(Debug)]
pub(super) struct Cadence {
    entries: u64,
    /// [`Weighed::accounted_len`] of the messages published by those entries.
    bytes: u64,
    /// What the queue held at the last snapshot ([`Weighed::accounted_len`]).
    last: u64,
    /// The member's snapshot trigger ([`run_snapshots`]), once started.
    due: Option<mpsc::Sender<()>>,
    /// The trigger was told since the last snapshot (once is enough: openraft builds
    /// one snapshot at a time, and nothing else asks it for one).
    told: bool,
}

impl Cadence {
    pub(super) fn new() -> Self {
        Cadence {
            entries: 0,
            bytes: 0,
            last: 0,
            due: None,
            told: false,
        }
    }

    /// One entry applied (`command` if it was a normal one).
    pub(super) fn applied(&mut self, command: Option<&Command<StoredMessage>>) {
        self.entries += 1;
        if let Some(c) = command {
            self.bytes += published(c);
        }
    }

    /// A snapshot was taken (or installed) of the queue as applied so far, holding
    /// `held` bytes.
    pub(super) fn reset(&mut self, held: u64) {
        self.last = held;
        self.entries = 0;
        self.bytes = 0;
        self.told = false;
    }

    /// True when a snapshot of a queue holding `held` bytes is due.
    pub(super) fn is_due(&self, held: u64) -> bool {
        self.entries >= SNAPSHOT_AT_MOST_EVERY
            || (self.entries >= SNAPSHOT_EVERY && self.bytes >= held.min(self.last))
    }

    /// Tells the trigger, if any, when a snapshot of a queue holding `held` bytes is
    /// due and it was not told yet.
    pub(super) fn check(&mut self, held: u64) {
        if self.told || !self.is_due(held) {
            return;
        }
        if let Some(tx) = &self.due {
            self.told = tx.try_send(()).is_ok();
        }
    }

    /// The trigger's end of a new channel (replacing any earlier one).
    pub(super) fn subscribe(&mut self) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel(1);
        self.due = Some(tx);
        rx
    }
}

/// Bytes of messages `command` publishes.
fn published(command: &Command<StoredMessage>) -> u64 {
    if let Some(ms) = command.publishes() {
        return ms.iter().map(|m| m.accounted_len() as u64).sum();
    }
    match command {
        Command::Batch(cs) => cs.iter().map(published).sum(),
        _ => 0,
    }
}

/// Asks for a snapshot each time `due` says one is due, through `snapshot` (the
/// member's `raft.trigger().snapshot()`); ends when the state machine is gone (its
/// sender dropped) or `snapshot` fails (the member shut down).
pub async fn run_snapshots<F, Fut, E>(mut due: mpsc::Receiver<()>, mut snapshot: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    while due.recv().await.is_some() {
        if snapshot().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn enqueue(n: usize, size: usize) -> Command<StoredMessage> {
        let m = StoredMessage::from(&Message::new("", "q", vec![0u8; size]));
        Command::Enqueue(vec![m; n])
    }

    /// Applies entries of one 1 KiB message until a snapshot is due (the queue grows
    /// by each, nothing is consumed); answers how many.
    fn grow_until_due(c: &mut Cadence, held: &mut u64) -> u64 {
        let e = enqueue(1, 1024);
        let one = published(&e);
        for n in 1..=1_000_000 {
            c.applied(Some(&e));
            *held += one;
            if c.is_due(*held) {
                return n;
            }
        }
        panic!("never due");
    }

    #[test]
    fn a_growing_queue_is_snapshotted_each_time_it_doubles() {
        let mut c = Cadence::new();
        let mut held = 0;
        // An empty queue at the last snapshot: every SNAPSHOT_EVERY entries.
        assert_eq!(grow_until_due(&mut c, &mut held), SNAPSHOT_EVERY);
        c.reset(held);
        // Then once as much again was published as the queue held.
        assert_eq!(grow_until_due(&mut c, &mut held), 500);
        c.reset(held);
        assert_eq!(grow_until_due(&mut c, &mut held), 1000);
        c.reset(held);
        assert_eq!(grow_until_due(&mut c, &mut held), 2000);
    }

    #[test]
    fn a_queue_drained_by_acks_is_snapshotted_once_small_again() {
        let mut c = Cadence::new();
        c.reset(100 << 20);
        // Acks publish nothing: not due while the queue is large...
        for _ in 0..SNAPSHOT_EVERY {
            c.applied(None);
        }
        assert!(!c.is_due(50 << 20));
        // ...due once it is empty.
        assert!(c.is_due(0));
    }

    #[test]
    fn a_large_queue_that_takes_no_publishes_is_still_snapshotted() {
        let mut c = Cadence::new();
        c.reset(100 << 20);
        // Requeues in a loop: entries, no bytes published, the queue as large.
        for _ in 1..SNAPSHOT_AT_MOST_EVERY {
            c.applied(None);
        }
        assert!(!c.is_due(100 << 20));
        c.applied(None);
        assert!(c.is_due(100 << 20), "bounded by entries alone");
    }

    #[test]
    fn the_trigger_is_told_once_per_snapshot() {
        let mut c = Cadence::new();
        let mut rx = c.subscribe();
        for _ in 0..SNAPSHOT_EVERY {
            c.applied(None);
        }
        c.check(0);
        c.check(0);
        assert!(rx.try_recv().is_ok());
        c.check(0);
        assert!(rx.try_recv().is_err(), "told twice before a snapshot");
        c.reset(0);
        for _ in 0..SNAPSHOT_EVERY {
            c.applied(None);
        }
        c.check(0);
        assert!(rx.try_recv().is_ok());
    }
}
