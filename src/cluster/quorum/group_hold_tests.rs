//! A group's commits while a member's snapshot is being written. Writing a snapshot
//! encodes the whole queue: seconds with hundreds of megabytes queued. A test [`Hold`]
//! stands for that: while engaged, every snapshot write waits where the encoding
//! would run (inside the directory guard), so a commit that waits for a snapshot
//! never completes, whatever the machine's speed. Two members of three are up, as
//! after a failover: each commit needs both. A write held where it blocks a runtime
//! thread may stall the runtime's timers: the test waits for its commits on a channel
//! of its own, and a hold gives up after [`HOLD_AT_MOST`], so a test that fails ends.

use super::tests::{applied, initialize_three, leader, msg, raft, ready, Router};
use super::*;
use crate::cluster::log_store::LogStore;
use openraft::Raft;
use std::collections::BTreeMap;
use std::sync::Condvar;
use std::time::{Duration, Instant};

/// The suite's generous deadline for a commit (none takes a second unheld).
const DEADLINE: Duration = Duration::from_secs(20);

/// Longest a snapshot write is held: past the deadline, so that a commit waiting for
/// it fails first, and the test still ends.
const HOLD_AT_MOST: Duration = Duration::from_secs(40);

/// Holds snapshot writes back while engaged; counts those waiting, and those that
/// gave up waiting.
#[derive(Default)]
pub(super) struct Hold {
    /// Engaged, writes waiting, writes that waited [`HOLD_AT_MOST`] and went on.
    state: Mutex<(bool, usize, usize)>,
    released: Condvar,
}

impl Hold {
    /// A snapshot write passes, after waiting while the hold is engaged.
    pub(super) fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        if !s.0 {
            return;
        }
        s.1 += 1;
        let end = Instant::now() + HOLD_AT_MOST;
        while s.0 && Instant::now() < end {
            s = self.released.wait_timeout(s, HOLD_AT_MOST).unwrap().0;
        }
        s.1 -= 1;
        if s.0 {
            s.2 += 1;
        }
    }

    fn engage(&self) {
        self.state.lock().unwrap().0 = true;
    }

    fn release(&self) {
        self.state.lock().unwrap().0 = false;
        self.released.notify_all();
    }

    fn waiting(&self) -> usize {
        self.state.lock().unwrap().1
    }

    /// Writes that waited [`HOLD_AT_MOST`] and went on while the hold was engaged: a
    /// commit that waited for one got through only then.
    fn gave_up(&self) -> usize {
        self.state.lock().unwrap().2
    }
}

/// Member `id` as a node runs it (its log and snapshot writing through one directory
/// guard), snapshotting every 5 entries with no entry kept behind the snapshot, its
/// snapshot writes under `hold`.
async fn start_held(
    root: &std::path::Path,
    id: NodeId,
    router: &Router,
    hold: &Arc<Hold>,
) -> GroupStateMachine {
    let dir = root.join(id.to_string());
    let guard = Arc::new(DirGuard::default());
    let log: LogStore<QueueTypes> = LogStore::open(&dir).unwrap().guarded(guard.clone());
    let sm = GroupStateMachine::open(Limits::default(), &dir)
        .unwrap()
        .guarded(guard)
        .held_by(hold.clone());
    let mut c = (*super::tests::config()).clone();
    c.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(5);
    c.max_in_snapshot_log_to_keep = 0;
    let raft = Raft::new(
        id,
        Arc::new(c.validate().unwrap()),
        router.clone(),
        log,
        sm.clone(),
    )
    .await
    .unwrap();
    router.members.lock().unwrap().insert(id, raft);
    sm
}

/// Three members started and initialized; answers their machines and the leader.
async fn three(
    root: &std::path::Path,
    router: &Router,
    hold: &Arc<Hold>,
) -> (BTreeMap<NodeId, GroupStateMachine>, NodeId) {
    let mut machines = BTreeMap::new();
    for id in 1..=3 {
        machines.insert(id, start_held(root, id, router, hold).await);
    }
    initialize_three(router).await;
    let first = leader(router, &[1, 2, 3]).await;
    (machines, first)
}

/// [`three`], then one member that does not lead stopped: answers the machines of the
/// two left, the leader and the member down.
async fn three_one_down(
    root: &std::path::Path,
    router: &Router,
    hold: &Arc<Hold>,
) -> (BTreeMap<NodeId, GroupStateMachine>, NodeId, NodeId) {
    let (mut machines, first) = three(root, router, hold).await;
    let down = (1..=3).find(|id| *id != first).unwrap();
    stop(router, down).await;
    machines.remove(&down);
    (machines, first, down)
}

/// Stops member `id` (it becomes unreachable).
async fn stop(router: &Router, id: NodeId) {
    let gone = router.members.lock().unwrap().remove(&id).unwrap();
    gone.shutdown().await.unwrap();
}

/// Publishes message `i` through `leader`; answers the entry's index. Panics when the
/// commit does not come within the deadline (waited for on the test's own thread).
async fn publish(router: &Router, leader: NodeId, i: u64) -> u64 {
    let raft = raft(router, leader);
    let (tx, rx) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        let r = raft.client_write(Command::Enqueue(vec![msg(i)])).await;
        let _ = tx.send(r.map(|r| r.log_id.index).map_err(|e| e.to_string()));
    });
    let committed = tokio::task::spawn_blocking(move || rx.recv_timeout(DEADLINE));
    match committed.await.unwrap() {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("publish {i} not committed within {DEADLINE:?}"),
    }
}

/// Waits until `n` snapshot writes are held.
async fn held(hold: &Hold, n: usize) {
    let end = Instant::now() + DEADLINE;
    while hold.waiting() < n {
        assert!(Instant::now() < end, "{n} snapshot writes never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every member of `machines` applied `index` and holds messages 1..=`last`.
async fn all_hold(
    router: &Router,
    machines: &BTreeMap<NodeId, GroupStateMachine>,
    index: u64,
    last: u64,
) {
    for (id, sm) in machines {
        applied(router, *id, index).await;
        let got: Vec<u64> = ready(sm).into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, (1..=last).collect::<Vec<u64>>(), "member {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_commit_while_both_write_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let hold = Arc::new(Hold::default());
    let (mut machines, first, down) = three_one_down(dir.path(), &router, &hold).await;

    // Snapshots fall due every 5 entries on both members; their writes are held (as
    // the encoding of a large queue holds them), and the publishes go on.
    hold.engage();
    let mut i = 0;
    let mut after_both = 0;
    while after_both < 20 {
        i += 1;
        publish(&router, first, i).await;
        if hold.waiting() == 2 {
            after_both += 1;
        }
        assert!(
            i < 500,
            "the snapshot writes were never held on both members"
        );
    }
    assert_eq!(hold.gave_up(), 0, "the commits waited for a snapshot write");
    hold.release();
    let index = publish(&router, first, i + 1).await;
    // The member that was down comes back and catches up.
    machines.insert(down, start_held(dir.path(), down, &router, &hold).await);
    all_hold(&router, &machines, index, i + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_commits_while_it_sends_a_snapshot_to_a_member_behind_its_purged_log() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let hold = Arc::new(Hold::default());
    let (mut machines, first, down) = three_one_down(dir.path(), &router, &hold).await;
    // The two left snapshot and purge their logs past what the member down holds. A
    // snapshot falls due only with new entries, so the publishes go on until the purge
    // has passed the 30th: waiting without them could wait for ever on a loaded
    // machine, where the last snapshot due may not have started before they stopped.
    let mut i = 0;
    let mut thirtieth = u64::MAX;
    let end = Instant::now() + DEADLINE;
    loop {
        i += 1;
        let index = publish(&router, first, i).await;
        if i == 30 {
            thirtieth = index;
        }
        let purged = raft(&router, first).metrics().borrow().purged;
        if purged.is_some_and(|p| p.index + 5 >= thirtieth) {
            break;
        }
        assert!(Instant::now() < end, "the leader never purged its log");
    }

    // It comes back: the leader has only a snapshot to send it, and a snapshot write
    // (the leader's, or the member's install) is held.
    hold.engage();
    machines.insert(down, start_held(dir.path(), down, &router, &hold).await);
    held(&hold, 1).await;
    for _ in 0..20 {
        i += 1;
        publish(&router, first, i).await;
    }
    // No held write had to give up for them: the commits did not wait for one.
    assert_eq!(hold.gave_up(), 0, "the commits waited for a snapshot write");
    hold.release();
    let index = publish(&router, first, i + 1).await;
    all_hold(&router, &machines, index, i + 1).await;
}
