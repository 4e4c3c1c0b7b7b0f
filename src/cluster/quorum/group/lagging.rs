//! The snapshot a group's leader sends to a member behind its purged log. openraft
//! asks the state machine for it (`get_current_snapshot`) on the task that applies
//! entries, each time it tries to send one: about once a second while the member is
//! down. Capturing the queue anew each time cloned its maps under the machine's lock
//! (417 ms at about 600k messages), holding back every apply of the leader, again and
//! again for a member that could not take it anyway. [`Lagging`] keeps the last
//! capture (the messages shared with the queue) and serves the repeated requests from
//! it while it is still good: it covers at least the last snapshot built (the log is
//! purged only behind a built one, so the entries after it are still in the log), and
//! it was asked for within [`KEEP_UNASKED`]. A snapshot built meanwhile replaces it
//! (the built capture costs nothing more), so a member down for long is sent one no
//! older than the group's cadence.
//!
//! A capture shares its messages with the queue, so one kept holds the messages
//! acked since: it is dropped once nobody asked for it within [`KEEP_UNASKED`], and
//! always outside the machine's lock (freeing a large queue's maps takes time too).

use super::super::machine::QueueMachine;
use super::StoredMessage;
use crate::cluster::NodeId;
use openraft::{BasicNode, SnapshotMeta};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a capture is kept without a request for it: openraft asks about once a
/// second while a member is down, so a capture nobody asked for that long is no longer
/// needed (the member caught up, or left the group).
pub const KEEP_UNASKED: Duration = Duration::from_secs(10);

/// A captured queue, shared: what a snapshot to send is made of.
pub(super) type Shared = Arc<QueueMachine<StoredMessage>>;

/// One capture, and when it was last asked for.
#[derive(Debug)]
struct Kept {
    meta: SnapshotMeta<NodeId, BasicNode>,
    machine: Shared,
    asked: Instant,
}

/// The capture served to members behind the purged log, and what decides if it is
/// still good.
#[derive(Debug, Default)]
pub(super) struct Lagging {
    kept: Option<Kept>,
    /// The last entry the last built snapshot covers (the log may be purged up to it).
    built: Option<u64>,
    /// Requests served.
    asked: u64,
    /// Captures made to serve a request (a kept one served counts nothing).
    captures: u64,
}

fn index(meta: &SnapshotMeta<NodeId, BasicNode>) -> Option<u64> {
    meta.last_log_id.map(|l| l.index)
}

impl Lagging {
    /// The kept capture, if still good at `now` (counted as asked for). Called once
    /// per request (a miss is followed by [`Self::captured`]).
    pub(super) fn reuse(
        &mut self,
        now: Instant,
    ) -> Option<(SnapshotMeta<NodeId, BasicNode>, Shared)> {
        self.asked += 1;
        let k = self.kept.as_mut()?;
        if index(&k.meta) < self.built {
            return None;
        }
        k.asked = now;
        Some((k.meta.clone(), k.machine.clone()))
    }

    /// Keeps a capture just made to serve a request at `now`; answers the one it
    /// replaces, to drop outside the lock.
    pub(super) fn captured(
        &mut self,
        meta: SnapshotMeta<NodeId, BasicNode>,
        machine: Shared,
        now: Instant,
    ) -> Option<Shared> {
        self.captures += 1;
        let old = self.kept.replace(Kept {
            meta,
            machine,
            asked: now,
        });
        old.map(|k| k.machine)
    }

    /// A snapshot was built (or installed) from this capture: the log may be purged
    /// up to it, so no older capture is served; a capture being kept (a member is
    /// behind) is replaced by this one. Answers the one replaced, to drop outside the
    /// lock.
    pub(super) fn built(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        machine: &Shared,
    ) -> Option<Shared> {
        self.built = self.built.max(index(meta));
        let k = self.kept.as_mut()?;
        let old = std::mem::replace(&mut k.machine, machine.clone());
        k.meta = meta.clone();
        Some(old)
    }

    /// Drops the kept capture (a snapshot installed replaced the queue); answers it,
    /// to drop outside the lock.
    pub(super) fn forget(&mut self) -> Option<Shared> {
        self.kept.take().map(|k| k.machine)
    }

    /// The kept capture when nobody asked for it within [`KEEP_UNASKED`] of `now`,
    /// taken out, to drop outside the lock.
    pub(super) fn expire(&mut self, now: Instant) -> Option<Shared> {
        let k = self.kept.as_ref()?;
        if now.duration_since(k.asked) < KEEP_UNASKED {
            return None;
        }
        self.forget()
    }

    /// True while a capture is kept.
    pub(super) fn keeps(&self) -> bool {
        self.kept.is_some()
    }

    /// Requests so far, and the captures made to serve them.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.asked, self.captures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::machine::Limits;
    use openraft::{CommittedLeaderId, LogId};

    fn meta(at: u64) -> SnapshotMeta<NodeId, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), at)),
            last_membership: Default::default(),
            snapshot_id: format!("q-{at}"),
        }
    }

    fn queue() -> Shared {
        Arc::new(QueueMachine::new(Limits::default()))
    }

    #[test]
    fn a_capture_is_served_again_until_a_later_snapshot_is_built() {
        let mut l = Lagging::default();
        let t0 = Instant::now();
        assert!(l.reuse(t0).is_none());
        let q = queue();
        assert!(l.captured(meta(700), q.clone(), t0).is_none());
        for s in 1..5 {
            let (m, again) = l.reuse(t0 + Duration::from_secs(s)).unwrap();
            assert_eq!(m.snapshot_id, "q-700");
            assert!(Arc::ptr_eq(&again, &q), "the same capture, not a new one");
        }
        assert_eq!(l.counts(), (5, 1), "asked 5 times, captured once");
        // A snapshot built later replaces it (the log is purged behind that one).
        let b = queue();
        assert!(l.built(&meta(900), &b).is_some());
        let (m, again) = l.reuse(t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(m.snapshot_id, "q-900");
        assert!(Arc::ptr_eq(&again, &b));
    }

    #[test]
    fn a_capture_older_than_the_last_built_snapshot_is_not_served() {
        let mut l = Lagging::default();
        let t0 = Instant::now();
        // Built at 900 while nobody was behind: nothing kept, nothing replaced...
        assert!(l.built(&meta(900), &queue()).is_none());
        assert!(!l.keeps());
        // ...and a capture older than it (made before it, kept after) is not served.
        l.captured(meta(800), queue(), t0);
        assert!(l.reuse(t0).is_none());
    }

    #[test]
    fn a_capture_nobody_asks_for_is_dropped() {
        let mut l = Lagging::default();
        let t0 = Instant::now();
        l.captured(meta(10), queue(), t0);
        assert!(l.expire(t0 + KEEP_UNASKED / 2).is_none());
        l.reuse(t0 + KEEP_UNASKED / 2).unwrap();
        // Asked for again: its time counts from then.
        assert!(l.expire(t0 + KEEP_UNASKED).is_none());
        assert!(l.expire(t0 + KEEP_UNASKED * 2).is_some());
        assert!(!l.keeps());
        assert!(l.reuse(t0 + KEEP_UNASKED * 2).is_none());
    }
}
