//! A real openraft group of three members in one process (an in-memory network, the
//! logs on disk): publishes batched into entries, deliveries and acks replicated, the
//! leader shut down, a new leader returns what the old one delivered and nobody acked,
//! and a member reopened from its disk log reaches the same queue.

use super::*;
use crate::cluster::log_store::LogStore;
use crate::cluster::quorum::machine::{ConsumerKey, Settle};
use crate::message::Message;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Raft, Vote};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

pub(super) type Members = Arc<Mutex<BTreeMap<NodeId, Raft<QueueTypes>>>>;

/// Routes each call to the member's Raft in this process; a member not in the map is
/// unreachable (shut down).
#[derive(Clone, Default)]
pub(super) struct Router {
    pub(super) members: Members,
    /// Entries carried by the appends that reached a member.
    pub(super) entries_sent: Arc<std::sync::atomic::AtomicUsize>,
}

pub(super) struct Client {
    target: NodeId,
    members: Members,
    entries_sent: Arc<std::sync::atomic::AtomicUsize>,
}

impl RaftNetworkFactory<QueueTypes> for Router {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Client {
        Client {
            target,
            members: self.members.clone(),
            entries_sent: self.entries_sent.clone(),
        }
    }
}

type RpcResult<T> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

impl Client {
    fn raft(&self) -> Option<Raft<QueueTypes>> {
        self.members.lock().unwrap().get(&self.target).cloned()
    }
}

fn down() -> Unreachable {
    Unreachable::new(&std::io::Error::other("member down"))
}

fn failed<E: std::error::Error>(e: impl std::fmt::Display) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
}

impl RaftNetwork<QueueTypes> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QueueTypes>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let raft = self.raft().ok_or_else(|| RPCError::Unreachable(down()))?;
        let n = rpc.entries.len();
        self.entries_sent
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        raft.append_entries(rpc).await.map_err(failed)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let raft = self.raft().ok_or_else(|| RPCError::Unreachable(down()))?;
        raft.vote(rpc).await.map_err(failed)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<QueueTypes>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<QueueTypes, Fatal<NodeId>>> {
        let raft = self
            .raft()
            .ok_or_else(|| StreamingError::Unreachable(down()))?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| {
                StreamingError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
            })
    }
}

/// Fast elections for tests; also used by the wire tests.
pub(in crate::cluster::quorum) fn config() -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            cluster_name: "q".into(),
            election_timeout_min: 300,
            election_timeout_max: 600,
            heartbeat_interval: 100,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    )
}

/// Starts member `id` on its log under `root/id`; answers its state machine.
async fn start(root: &std::path::Path, id: NodeId, router: &Router) -> GroupStateMachine {
    let log: LogStore<QueueTypes> = LogStore::open(&root.join(id.to_string())).unwrap();
    let sm = GroupStateMachine::new(Limits::default());
    let raft = Raft::new(id, config(), router.clone(), log, sm.clone())
        .await
        .unwrap();
    router.members.lock().unwrap().insert(id, raft);
    sm
}

pub(super) fn raft(router: &Router, id: NodeId) -> Raft<QueueTypes> {
    router.members.lock().unwrap()[&id].clone()
}

/// Waits (the suite's way: a condition and a generous deadline) for a leader among
/// `among`; answers it.
/// Makes members 1, 2 and 3 (started on `router`) one group, from member 1.
pub(super) async fn initialize_three(router: &Router) {
    let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("member-{id}"))))
        .collect();
    raft(router, 1).initialize(nodes).await.unwrap();
}

pub(super) async fn leader(router: &Router, among: &[NodeId]) -> NodeId {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        for id in among {
            let m = raft(router, *id).metrics().borrow().clone();
            if m.current_leader == Some(*id) && among.contains(id) {
                return *id;
            }
        }
        assert!(Instant::now() < end, "no leader among {among:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `sm` has applied up to `index`.
pub(super) async fn applied(router: &Router, id: NodeId, index: u64) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let m = raft(router, id).metrics().borrow().clone();
        if m.last_applied.is_some_and(|l| l.index >= index) {
            return;
        }
        assert!(Instant::now() < end, "member {id} did not apply {index}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) fn msg(i: u64) -> StoredMessage {
    StoredMessage::from(&Message::new("", "q", i.to_be_bytes().to_vec()))
}

fn body(m: &StoredMessage) -> u64 {
    u64::from_be_bytes(m.body[..8].try_into().unwrap())
}

/// The ready queue of `sm`: (message number, earlier deliveries), in order.
pub(super) fn ready(sm: &GroupStateMachine) -> Vec<(u64, u32)> {
    sm.read(|q| {
        q.peek(usize::MAX)
            .map(|r| (body(r.message), r.deliveries))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_redelivers_what_was_not_acked_and_never_what_was() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let mut machines = BTreeMap::new();
    for id in 1..=3 {
        machines.insert(id, start(dir.path(), id, &router).await);
    }
    initialize_three(&router).await;
    let first = leader(&router, &[1, 2, 3]).await;

    // 50 publishes in 5 entries: ids in publish order.
    let mut ids = Vec::new();
    for batch in 0..5u64 {
        let messages = (1..=10).map(|i| msg(batch * 10 + i)).collect();
        let r = raft(&router, first)
            .client_write(Command::Enqueue(messages))
            .await
            .unwrap();
        ids.extend(r.data.enqueued.into_iter().map(Option::unwrap));
    }
    assert_eq!(ids, (1..=50).collect::<Vec<u64>>());
    // The leader hands out 1..=20 and 1..=10 are acked.
    let to = ConsumerKey {
        node: first,
        consumer: 1,
    };
    let w = |c| async { raft(&router, first).client_write(c).await.unwrap() };
    w(Command::Deliver {
        to,
        ids: (1..=20).collect(),
    })
    .await;
    let last = w(Command::Settle {
        ids: (1..=10).collect(),
        how: Settle::Ack,
    })
    .await
    .log_id
    .index;

    // The leader goes; the others elect a new one, which gives back what the old
    // leader's consumers held.
    let gone = router.members.lock().unwrap().remove(&first).unwrap();
    gone.shutdown().await.unwrap();
    let rest: Vec<NodeId> = (1..=3).filter(|id| *id != first).collect();
    let second = leader(&router, &rest).await;
    applied(&router, second, last).await;
    let r = raft(&router, second)
        .client_write(Command::Return {
            keep_node: Some(second),
            consumer: None,
        })
        .await
        .unwrap();
    let expected: Vec<(u64, u32)> = (11..=50).map(|i| (i, u32::from(i <= 20))).collect();
    assert_eq!(
        ready(&machines[&second]),
        expected,
        "order kept, 1..=10 gone"
    );
    for id in &rest {
        applied(&router, *id, r.log_id.index).await;
        assert_eq!(ready(&machines[id]), expected, "member {id}");
    }

    // The old leader comes back from its disk log and catches up to the same queue.
    let back = start(dir.path(), first, &router).await;
    applied(&router, first, r.log_id.index).await;
    assert_eq!(
        ready(&back),
        expected,
        "member {first} rebuilt from its log"
    );
    let members: BTreeSet<NodeId> = router.members.lock().unwrap().keys().copied().collect();
    for id in members {
        raft(&router, id).shutdown().await.unwrap();
    }
}

/// Member `id` keeping snapshots on disk, with a snapshot every 5 entries and no
/// entry kept behind it.
async fn start_snapshotting(
    root: &std::path::Path,
    id: NodeId,
    router: &Router,
) -> GroupStateMachine {
    let dir = root.join(id.to_string());
    let log: LogStore<QueueTypes> = LogStore::open(&dir).unwrap();
    let sm = GroupStateMachine::open(Limits::default(), &dir).unwrap();
    let mut c = (*config()).clone();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_purged_behind_a_snapshot_on_disk_and_a_restart_reads_both() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    for id in 1..=3 {
        start_snapshotting(dir.path(), id, &router).await;
    }
    initialize_three(&router).await;
    let first = leader(&router, &[1, 2, 3]).await;
    let mut last = 0;
    for i in 1..=30 {
        last = raft(&router, first)
            .client_write(Command::Enqueue(vec![msg(i)]))
            .await
            .unwrap()
            .log_id
            .index;
    }
    // Every member snapshots and purges behind it.
    let end = Instant::now() + Duration::from_secs(20);
    for id in 1..=3 {
        applied(&router, id, last).await;
        loop {
            let m = raft(&router, id).metrics().borrow().clone();
            if m.purged.is_some_and(|p| p.index >= 25) {
                break;
            }
            assert!(
                Instant::now() < end,
                "member {id} did not purge: {:?}",
                m.purged
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(dir.path().join(id.to_string()).join("snapshot").exists());
    }
    // All three stop and start again from their directories: the snapshot, then the
    // log after it, give the same queue.
    let all: Vec<Raft<QueueTypes>> = std::mem::take(&mut *router.members.lock().unwrap())
        .into_values()
        .collect();
    for r in all {
        r.shutdown().await.unwrap();
    }
    let mut machines = BTreeMap::new();
    for id in 1..=3 {
        machines.insert(id, start_snapshotting(dir.path(), id, &router).await);
    }
    let second = leader(&router, &[1, 2, 3]).await;
    let more = raft(&router, second)
        .client_write(Command::Enqueue(vec![msg(31)]))
        .await
        .unwrap()
        .log_id
        .index;
    for (id, sm) in &machines {
        applied(&router, *id, more).await;
        let got: Vec<u64> = ready(sm).into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, (1..=31).collect::<Vec<u64>>(), "member {id}");
    }
}

/// An entry of `index` publishing `n` messages.
fn publishes(index: u64, n: u64) -> Entry<QueueTypes> {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Enqueue((0..n).map(msg).collect())),
    }
}

/// A member's log and machine in `dir`, both writing through one directory guard.
async fn guarded_member(
    dir: &std::path::Path,
) -> (Arc<DirGuard>, LogStore<QueueTypes>, GroupStateMachine) {
    let guard = Arc::new(DirGuard::default());
    let log = LogStore::open(dir).unwrap().guarded(guard.clone());
    let mut sm = GroupStateMachine::open(Limits::default(), dir)
        .unwrap()
        .guarded(guard.clone());
    sm.apply((1..=20).map(|i| publishes(i, 50))).await.unwrap();
    (guard, log, sm)
}

#[tokio::test]
async fn a_snapshot_or_purge_after_the_groups_delete_writes_nothing_and_fails_nothing() {
    use openraft::storage::RaftLogStorage;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("7");
    let (guard, mut log, mut sm) = guarded_member(&dir).await;
    sm.build_snapshot().await.unwrap();
    assert!(dir.join("snapshot").exists());
    guard.remove(&dir).unwrap();
    // openraft's snapshot task, still running after the member's shutdown, keeps its
    // snapshot and purges the log behind it: nothing fails, nothing is written.
    sm.build_snapshot()
        .await
        .expect("a snapshot after the delete is no error");
    log.purge(publishes(20, 0).log_id)
        .await
        .expect("a purge after the delete is no error");
    log.save_vote(&Vote::new(2, 1)).await.unwrap();
    assert!(!dir.exists(), "no directory is left or made again");
    // Unguarded, the same write is the ENOENT the benchmark saw.
    let bare_dir = root.path().join("8");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let mut bare = GroupStateMachine::open(Limits::default(), &bare_dir).unwrap();
    std::fs::remove_dir_all(&bare_dir).unwrap();
    assert!(bare.build_snapshot().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_snapshots_and_purges_leaves_no_directory_and_no_error() {
    use openraft::storage::RaftLogStorage;
    use std::sync::atomic::{AtomicBool, Ordering};
    let root = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let dir = root.path().join(round.to_string());
        let (guard, mut log, mut sm) = guarded_member(&dir).await;
        let removed = Arc::new(AtomicBool::new(false));
        // Snapshots and purges, as a busy member makes them, until a few after the
        // delete.
        let writer = {
            let removed = removed.clone();
            tokio::spawn(async move {
                let mut after = 0;
                let mut index = 0;
                while after < 3 {
                    if removed.load(Ordering::Acquire) {
                        after += 1;
                    }
                    sm.build_snapshot().await.map_err(|e| e.to_string())?;
                    index = (index % 20) + 1;
                    log.save_vote(&Vote::new(index, 1))
                        .await
                        .map_err(|e| e.to_string())?;
                    log.purge(publishes(index, 0).log_id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        };
        // The delete, on another thread, at a moment that differs from round to round.
        let wait = Duration::from_micros(500 * round);
        let remover = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                std::thread::sleep(wait);
                let r = guard.remove(&dir);
                removed.store(true, Ordering::Release);
                r
            })
        };
        remover.await.unwrap().expect("the directory is removed");
        writer
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: a write racing the delete failed: {e}"));
        assert!(!dir.exists(), "round {round}: a stray directory");
    }
}

/// openraft's policy says never (as for a queue group in a cluster): a member
/// snapshots, and purges its log, when its state machine says a snapshot is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_snapshots_when_its_state_machine_says_one_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let log: LogStore<QueueTypes> = LogStore::open(dir.path()).unwrap();
    let sm = GroupStateMachine::open(Limits::default(), dir.path()).unwrap();
    let mut c = (*config()).clone();
    c.max_in_snapshot_log_to_keep = 0;
    let raft = Raft::new(1, Arc::new(c), router.clone(), log, sm.clone());
    let raft = raft.await.unwrap();
    router.members.lock().unwrap().insert(1, raft.clone());
    let r = raft.clone();
    tokio::spawn(run_snapshots(sm.snapshots_due(), move || {
        let r = r.clone();
        async move { r.trigger().snapshot().await }
    }));
    let one = BTreeMap::from([(1, BasicNode::new("member-1"))]);
    raft.initialize(one).await.unwrap();
    leader(&router, &[1]).await;
    for i in 1..=SNAPSHOT_EVERY {
        raft.client_write(Command::Enqueue(vec![msg(i)]))
            .await
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(20);
    while raft.metrics().borrow().purged.is_none() {
        assert!(
            Instant::now() < end,
            "no snapshot: {:?}",
            raft.metrics().borrow().purged
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dir.path().join("snapshot").exists());
    raft.shutdown().await.unwrap();
}
