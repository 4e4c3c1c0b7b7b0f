//! One quorum queue's Raft group: openraft's type configuration for a queue group
//! ([`QueueTypes`]), the message as the group's log carries it ([`StoredMessage`]),
//! and the group's state machine storage ([`GroupStateMachine`]): the pure
//! [`QueueMachine`] applied in log order, its snapshot the machine itself. The log of
//! a group is the definitions log's format (`src/cluster/log_store.rs`), one directory per group, so a queue's
//! entries are fsynced (one fsync per appended batch: many publishes per entry, many
//! entries per append) before openraft counts them.

use super::machine::{Command, ConsumerKey, DeadReason, Limits, QueueMachine};
use crate::cluster::log_store::DirGuard;
use crate::cluster::NodeId;
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

mod cadence;
mod lagging;
mod stored;
use cadence::Cadence;
pub use cadence::{run_snapshots, SNAPSHOT_EVERY};
use lagging::Lagging;
pub use lagging::KEEP_UNASKED;
pub use stored::StoredMessage;

/// Milliseconds since the Unix epoch on this node's wall clock: the time a leader
/// writes in a [`Command::Clock`].
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `command` as the group's leader writes it: a publish batch after a
/// [`Command::Clock`] of the leader's wall clock (in one entry), so its messages' TTLs
/// count from the time the leader wrote them; any other command as it is.
pub fn stamped(command: Command<StoredMessage>) -> Command<StoredMessage> {
    match command.publishes() {
        Some(_) => Command::Batch(vec![Command::Clock { now_ms: wall_ms() }, command]),
        None => command,
    }
}

/// What applying one entry answered, the same on every member: the proposer answers
/// its publishers (confirm, or nack for a refused one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupResponse {
    /// Per enqueued message: its id, `None` when refused (reject-publish).
    pub enqueued: Vec<Option<u64>>,
    /// Messages that died applying the entry. The leader dead-letters them from its
    /// member's own record ([`GroupStateMachine::take_dead`]), not from this answer:
    /// the answer reaches whoever proposed the entry, which may be another node or
    /// may have given up waiting.
    pub dead: Vec<(StoredMessage, DeadReason)>,
    /// Messages purged.
    pub purged: u64,
}

/// The snapshot of a group: the machine as of the last applied entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    /// The queue, shared: the capture a member behind the purged log is sent is kept
    /// and sent again (`group/lagging.rs`), and encoded on a blocking thread. Encoded
    /// as the machine itself (as the box it was: the same bytes).
    #[serde(serialize_with = "shared_out", deserialize_with = "shared_in")]
    pub machine: Arc<QueueMachine<StoredMessage>>,
}

fn shared_out<S: serde::Serializer>(
    m: &Arc<QueueMachine<StoredMessage>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    m.as_ref().serialize(s)
}

fn shared_in<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Arc<QueueMachine<StoredMessage>>, D::Error> {
    QueueMachine::deserialize(d).map(Arc::new)
}

impl GroupSnapshot {
    /// The queue, owned: moved out when nothing else shares it (a snapshot received
    /// or read from disk), else copied.
    pub fn into_machine(self) -> QueueMachine<StoredMessage> {
        Arc::try_unwrap(self.machine).unwrap_or_else(|m| (*m).clone())
    }
}

openraft::declare_raft_types!(
    /// A quorum queue group's Raft type configuration.
    pub QueueTypes:
        D = Command<StoredMessage>,
        R = GroupResponse,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = Entry<QueueTypes>,
        SnapshotData = GroupSnapshot,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What a group's member holds: the queue and what openraft must know of it.
#[derive(Debug)]
struct State {
    machine: QueueMachine<StoredMessage>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// This member's node: the checkouts to its consumers are kept in `checkouts`.
    node: Option<NodeId>,
    /// Checkouts to consumers of this node, as applied, not yet taken by the queue
    /// actor (which sends them when this node leads): the delivery effects of the
    /// applied entries.
    checkouts: Vec<(ConsumerKey, u64)>,
    /// Messages that died applying entries, with the term of the leader that wrote
    /// each entry, not yet taken by the queue actor: it dead-letters those of the term
    /// it leads in (the entry's writer) and drops the others, so exactly one node
    /// (the one that proposed the entry) republishes a dead message, never a follower
    /// nor a later leader replaying the same entry.
    dead: Vec<(u64, StoredMessage, DeadReason)>,
    /// What was applied since the last snapshot: when the next one is due.
    cadence: Cadence,
    /// The capture sent to members behind the purged log, kept for openraft's
    /// repeated requests.
    lagging: Lagging,
}

/// The state machine storage of one group member. Cheap to clone: the snapshot
/// builder and the member's reader (the leader's dispatch) share it.
#[derive(Clone)]
pub struct GroupStateMachine {
    state: Arc<Mutex<State>>,
    limits: Limits,
    /// Where a snapshot is kept (`<group dir>/snapshot`), when it is kept on disk.
    snapshot_path: Option<std::path::PathBuf>,
    /// Serializes the snapshot's write with the removal of the group's directory.
    guard: Option<Arc<DirGuard>>,
    /// A test's hold on this member's snapshot writes (a slow disk, a huge queue).
    #[cfg(test)]
    hold: Option<Arc<hold_tests::Hold>>,
}

/// A snapshot as kept on disk: what it covers, and the queue.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    meta: SnapshotMeta<NodeId, BasicNode>,
    snapshot: GroupSnapshot,
}

/// [`OnDisk`] to write, borrowing (the same encoding: a machine is not copied again).
#[derive(Serialize)]
struct OnDiskRef<'a> {
    meta: &'a SnapshotMeta<NodeId, BasicNode>,
    snapshot: &'a GroupSnapshot,
}

impl GroupStateMachine {
    /// An empty queue with `limits` (a member rebuilds it from its log or a snapshot).
    pub fn new(limits: Limits) -> Self {
        GroupStateMachine {
            state: Arc::new(Mutex::new(State {
                machine: QueueMachine::new(limits.clone()),
                last_applied: None,
                membership: StoredMembership::default(),
                node: None,
                checkouts: Vec::new(),
                dead: Vec::new(),
                cadence: Cadence::new(),
                lagging: Lagging::default(),
            })),
            limits,
            snapshot_path: None,
            guard: None,
            #[cfg(test)]
            hold: None,
        }
    }

    /// This machine with its snapshot writes serialized with `guard`'s removal of the
    /// group's directory: a snapshot built after the queue's delete (openraft builds
    /// them in a task that outlives the member) is then not written, instead of
    /// failing with ENOENT or leaving a stray directory.
    pub fn guarded(mut self, guard: Arc<DirGuard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// This machine with its snapshot writes waiting on `hold` while a test holds them.
    #[cfg(test)]
    fn held_by(mut self, hold: Arc<hold_tests::Hold>) -> Self {
        self.hold = Some(hold);
        self
    }

    /// The guard of the group's directory, if any.
    pub fn dir_guard(&self) -> Option<Arc<DirGuard>> {
        self.guard.clone()
    }

    /// The member's state machine keeping its snapshots in `dir` (the group's
    /// directory, beside its log), starting from the snapshot found there: the log
    /// is purged behind a snapshot only once it is on disk, so a restart reads the
    /// snapshot, then replays the log after it.
    pub fn open(limits: Limits, dir: &std::path::Path) -> std::io::Result<Self> {
        let mut sm = GroupStateMachine::new(limits);
        let path = dir.join("snapshot");
        match std::fs::read(&path) {
            Ok(b) => {
                let d: OnDisk = rmp_serde::from_slice(&b).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?;
                let mut s = sm.lock();
                s.machine = d.snapshot.into_machine();
                s.last_applied = d.meta.last_log_id;
                s.membership = d.meta.last_membership;
                let held = s.machine.held_bytes();
                s.cadence.reset(held);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sm.snapshot_path = Some(path);
        Ok(sm)
    }

    /// Keeps `snapshot` on disk (temporary file, fsync, rename), if this member keeps
    /// its snapshots there.
    // openraft's own error type, as its traits require.
    #[allow(clippy::result_large_err)]
    fn keep(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: &GroupSnapshot,
    ) -> StorageResult<()> {
        let Some(path) = &self.snapshot_path else {
            return Ok(());
        };
        let failed = |e: &dyn std::fmt::Display| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Snapshot(Some(meta.signature())),
                openraft::ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        };
        // Encoded straight into the file (the same bytes `rmp_serde::to_vec` makes).
        let write = || {
            #[cfg(test)]
            if let Some(h) = &self.hold {
                h.pass();
            }
            crate::cluster::log_store::write_atomic_with(path, |f| {
                rmp_serde::encode::write(f, &OnDiskRef { meta, snapshot })
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
        };
        let written = match &self.guard {
            Some(g) => g.write(write).map(|w| w.is_some()),
            None => write().map(|()| true),
        };
        match written {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::debug!(path = %path.display(), "quorum queue group deleted: its snapshot is not kept");
                Ok(())
            }
            Err(e) => Err(failed(&e)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the queue as applied here (the leader reads what it sends from it).
    pub fn read<T>(&self, f: impl FnOnce(&QueueMachine<StoredMessage>) -> T) -> T {
        f(&self.lock().machine)
    }

    /// Keeps the checkouts the applied entries make to consumers of `node` (this
    /// member's node) for [`Self::take_checkouts`]; no other node's are kept.
    pub fn keep_checkouts_of(&self, node: NodeId) {
        self.lock().node = Some(node);
    }

    /// The receiving end of this member's "a snapshot is due" signal (see
    /// `group/cadence.rs`), for [`run_snapshots`] to ask the member's Raft for one.
    pub fn snapshots_due(&self) -> tokio::sync::mpsc::Receiver<()> {
        self.lock().cadence.subscribe()
    }

    /// The checkouts to this node's consumers applied since the last call, in order,
    /// and reads the queue under the same lock (the leader reads what it sends).
    pub fn take_checkouts<T>(
        &self,
        f: impl FnOnce(Vec<(ConsumerKey, u64)>, &QueueMachine<StoredMessage>) -> T,
    ) -> T {
        let mut s = self.lock();
        let taken = std::mem::take(&mut s.checkouts);
        f(taken, &s.machine)
    }

    /// How many times openraft asked for the snapshot to send a member behind the
    /// purged log, and how many times the queue was captured to answer (the last
    /// capture is sent again while it is good: `group/lagging.rs`); a test reads them.
    pub fn lagging_counts(&self) -> (u64, u64) {
        self.lock().lagging.counts()
    }

    /// The messages that died applying entries since the last call, in order, each
    /// with the term of the entry it died in (kept once [`Self::keep_checkouts_of`]
    /// named this member's node).
    pub fn take_dead(&self) -> Vec<(u64, StoredMessage, DeadReason)> {
        std::mem::take(&mut self.lock().dead)
    }
}

type StorageResult<T> = Result<T, StorageError<NodeId>>;

impl GroupStateMachine {
    /// The queue as applied, with what it covers. `rebase`: it is the one openraft
    /// purges the log behind, so the cadence counts from it (and a member behind the
    /// purged log is sent it from then on). Else it is made to send to such a member,
    /// and kept to send again. The messages are shared, not copied: the lock (which
    /// applying entries takes) is held for the walk of the queue's maps only.
    fn capture(&self, rebase: bool) -> (SnapshotMeta<NodeId, BasicNode>, GroupSnapshot) {
        let started = std::time::Instant::now();
        let mut s = self.lock();
        let meta = SnapshotMeta {
            last_log_id: s.last_applied,
            last_membership: s.membership.clone(),
            snapshot_id: format!("q-{}", s.last_applied.map_or(0, |l| l.index)),
        };
        let machine = Arc::new(s.machine.clone());
        let replaced = if rebase {
            let held = s.machine.held_bytes();
            s.cadence.reset(held);
            s.lagging.built(&meta, &machine)
        } else {
            s.lagging.captured(meta.clone(), machine.clone(), started)
        };
        let held_us = started.elapsed().as_micros() as u64;
        drop(s);
        drop(replaced);
        tracing::debug!(
            snapshot = %meta.snapshot_id,
            rebase,
            us = held_us,
            "quorum queue group: queue captured for a snapshot"
        );
        (meta, GroupSnapshot { machine })
    }

    /// Keeps `snapshot` on disk on a blocking thread: encoding and writing a large
    /// queue takes seconds (100k messages on a debug build), and on one of the few
    /// runtime threads, which also answer the group's heartbeats, it stalled a member
    /// until the others voted it out.
    // openraft's own error type, as its traits require (the blocking write's closure).
    #[allow(clippy::result_large_err)]
    async fn keep_off_runtime(
        &self,
        meta: SnapshotMeta<NodeId, BasicNode>,
        snapshot: GroupSnapshot,
    ) -> StorageResult<(SnapshotMeta<NodeId, BasicNode>, GroupSnapshot)> {
        let this = self.clone();
        let started = std::time::Instant::now();
        let kept = tokio::task::spawn_blocking(move || {
            this.keep(&meta, &snapshot).map(|()| (meta, snapshot))
        })
        .await
        .map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Snapshot(None),
                openraft::ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        })??;
        tracing::debug!(
            snapshot = %kept.0.snapshot_id,
            messages = kept.1.machine.ready_len() + kept.1.machine.checked_out_len(),
            bytes = kept.1.machine.held_bytes(),
            ms = started.elapsed().as_millis() as u64,
            "quorum queue group snapshot kept on disk"
        );
        Ok(kept)
    }
}

impl RaftSnapshotBuilder<QueueTypes> for GroupStateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<QueueTypes>> {
        // On disk before openraft purges the log behind it. openraft runs this in a
        // task of its own: applying entries goes on meanwhile.
        // The capture clones the queue's maps under the lock (0.1-0.2 s with 200k
        // messages on a loaded machine): not on a runtime worker's time.
        let (meta, snapshot) = crate::cluster::stall::blocking(|| self.capture(true));
        let (meta, snapshot) = self.keep_off_runtime(meta, snapshot).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(snapshot),
        })
    }
}

impl RaftStateMachine<QueueTypes> for GroupStateMachine {
    type SnapshotBuilder = GroupStateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let s = self.lock();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<GroupResponse>>
    where
        I: IntoIterator<Item = Entry<QueueTypes>> + Send,
        I::IntoIter: Send,
    {
        let mut s = self.lock();
        let mut answers = Vec::new();
        for entry in entries {
            let normal = match &entry.payload {
                EntryPayload::Normal(c) => Some(c),
                _ => None,
            };
            s.cadence.applied(normal);
            let response = match entry.payload {
                EntryPayload::Blank => GroupResponse::default(),
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                    GroupResponse::default()
                }
                EntryPayload::Normal(command) => {
                    let a = s.machine.apply(command);
                    if let Some(node) = s.node {
                        let mine = a.checkouts.iter().filter(|(c, _)| c.node == node);
                        s.checkouts.extend(mine);
                        let term = entry.log_id.leader_id.term;
                        let dead = a.dead.iter().map(|(m, why)| (term, m.clone(), *why));
                        s.dead.extend(dead);
                    }
                    GroupResponse {
                        enqueued: a.enqueued,
                        dead: a.dead,
                        purged: a.purged,
                    }
                }
            };
            s.last_applied = Some(entry.log_id);
            answers.push(response);
        }
        let held = s.machine.held_bytes();
        s.cadence.check(held);
        let expired = if s.lagging.keeps() {
            s.lagging.expire(std::time::Instant::now())
        } else {
            None
        };
        drop(s);
        // Freed outside the lock: a large queue's maps take a while.
        drop(expired);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<GroupSnapshot>> {
        Ok(Box::new(GroupSnapshot {
            machine: Arc::new(QueueMachine::new(self.limits.clone())),
        }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<GroupSnapshot>,
    ) -> StorageResult<()> {
        // Kept before it replaces the queue, as the log is purged behind it.
        let (_, snapshot) = self.keep_off_runtime(meta.clone(), *snapshot).await?;
        // Checkouts of the state replaced are no longer this node's to send, nor its
        // dead messages its to dead-letter (a member that installs a snapshot does not
        // lead).
        let machine = snapshot.into_machine();
        let mut s = self.lock();
        s.checkouts.clear();
        s.dead.clear();
        let old = std::mem::replace(&mut s.machine, machine);
        s.last_applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        let held = s.machine.held_bytes();
        s.cadence.reset(held);
        let forgotten = s.lagging.forget();
        drop(s);
        drop((old, forgotten));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<QueueTypes>>> {
        // For a follower behind the purged log: the queue as applied now, sent, not
        // written. openraft asks for it on the task that applies entries, so writing
        // it here (as this did) held back every commit of the group's leader while the
        // whole queue was encoded and fsynced, seconds with hundreds of megabytes
        // queued. The one on disk stays the last built (openraft purges nothing behind
        // this one), and the cadence goes on counting from it. openraft asks again at
        // each try while the member is down: the last capture is sent again while it
        // is good (`group/lagging.rs`), so the queue is captured once, not each time.
        let reused = self.lock().lagging.reuse(std::time::Instant::now());
        let (meta, snapshot) = match reused {
            Some((meta, machine)) => {
                tracing::debug!(snapshot = %meta.snapshot_id, "quorum queue group: last capture sent again");
                (meta, GroupSnapshot { machine })
            }
            None => self.capture(false),
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(snapshot),
        }))
    }
}

#[cfg(test)]
#[path = "group_tests.rs"]
pub(super) mod tests;

#[cfg(test)]
#[path = "group_hold_tests.rs"]
mod hold_tests;

#[cfg(test)]
#[path = "group_probe_tests.rs"]
mod probe_tests;
