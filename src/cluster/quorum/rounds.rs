//! Commit rounds: every write through this node's member of a group (the leader's
//! own commands, this node's publishes, publishes forwarded from other nodes) goes
//! through one task that makes whatever is waiting **one entry**, with at most
//! [`MAX_ROUNDS`] entries proposed and not yet committed.
//!
//! Why: openraft's core appends and fsyncs one client write at a time, each its own
//! serial round on the leader's disk. Measured before this (docs/BENCHMARKS.md, "A
//! quiet machine again"), 82% of the leader's appends were a consumer's settlements,
//! a handful each, each an fsync of its own; the rate was bound by those serial
//! rounds, not by the CPU. Here the settlements made while a round commits, and the
//! publishes, share the next round: one append, one fsync, many writers answered.
//!
//! The entry is a [`Command::Batch`] of the writes in the order they came (one write
//! alone is written as it is), so each applies as if in its own entry, in the same
//! order; its answer is split back by what each write holds ([`Shape`]): the ids of
//! its publishes, the count of its purge (one purge per round, so the count is its
//! own).

use super::group::{GroupResponse, QueueTypes, StoredMessage};
use super::machine::{Command, Weighed};
use super::wire::{GroupWriteError, LEADER_WRITE_TIMEOUT};
use openraft::error::ClientWriteError;
use openraft::Raft;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most entries proposed and not committed at once: one being appended and fsynced
/// on the leader while the one before it is replicated and committed. More would
/// only queue in openraft's core, each a serial round again.
pub const MAX_ROUNDS: usize = 2;

/// Most writes in one entry (a bound on its size: a publish write holds up to
/// `publisher::MAX_BATCH` messages).
pub const MAX_PARTS: usize = 256;

/// Most bytes of messages in one entry beyond its first write (and in one publisher's
/// batch beyond its first message), as the queue accounts them. An entry goes to each
/// follower whole, in one cluster frame (`rpc::MAX_FRAME`, 256 MiB) and one append
/// that must be taken within the heartbeat's time to live (the log store's reads for
/// replication stop at `log_store::MAX_APPEND_BYTES`, 1 MiB, for that). Merged without
/// a bound, writes that each fit made an entry past the frame that no follower could be
/// sent: it never committed and held up every write behind it. A write larger than
/// this alone is its own entry.
pub const MAX_BYTES: usize = 4 << 20;

/// The answer to one write.
pub type Answer = Result<GroupResponse, GroupWriteError>;

type Part = (Command<StoredMessage>, oneshot::Sender<Answer>);

/// What a write's answer is made of, to split a round's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// Publishes it holds (its share of `enqueued`, in order).
    pub enqueued: usize,
    /// It holds a purge (the round's `purged` is its).
    pub purges: bool,
}

impl Shape {
    /// The shape of `command`.
    pub fn of(command: &Command<StoredMessage>) -> Shape {
        let mut s = Shape::default();
        s.add(command);
        s
    }

    fn add(&mut self, command: &Command<StoredMessage>) {
        if let Some(m) = command.publishes() {
            self.enqueued += m.len();
        }
        match command {
            Command::Purge => self.purges = true,
            Command::Batch(cs) => cs.iter().for_each(|c| self.add(c)),
            _ => {}
        }
    }
}

/// The writes of one round as one command, in their order: nested batches are
/// flattened (each command still applies as if in its own entry) and settlements
/// next to each other with the same outcome become one `Settle`, so a round carries
/// one list of ids per run of acks rather than a command per client frame. (The
/// machine checks out once after the merged settle instead of after each: the same
/// messages go out, to the same consumers when there is one.) A lone command stays
/// as it is.
pub fn combine(parts: Vec<Command<StoredMessage>>) -> Command<StoredMessage> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        push_flat(&mut out, p);
    }
    match out.len() {
        1 => out.pop().expect("one"),
        _ => Command::Batch(out),
    }
}

fn push_flat(out: &mut Vec<Command<StoredMessage>>, command: Command<StoredMessage>) {
    match command {
        Command::Batch(cs) => cs.into_iter().for_each(|c| push_flat(out, c)),
        Command::Settle { ids, how } => match out.last_mut() {
            Some(Command::Settle {
                ids: last,
                how: before,
            }) if *before == how => last.extend(ids),
            _ => out.push(Command::Settle { ids, how }),
        },
        other => out.push(other),
    }
}

/// Bytes `command` weighs against [`MAX_BYTES`]: its messages as the queue accounts
/// them (on the high side) and the ids it settles.
pub fn bytes_of(command: &Command<StoredMessage>) -> usize {
    if let Some(m) = command.publishes() {
        return m.iter().map(Weighed::accounted_len).sum();
    }
    match command {
        Command::Settle { ids, .. } => ids.len() * std::mem::size_of::<u64>(),
        Command::Batch(cs) => cs.iter().map(bytes_of).sum(),
        _ => 0,
    }
}

/// Settle commands and the ids they name in `command` (the stage times).
fn settles(command: &Command<StoredMessage>) -> (usize, usize) {
    match command {
        Command::Settle { ids, .. } => (1, ids.len()),
        Command::Batch(cs) => cs
            .iter()
            .map(settles)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
        _ => (0, 0),
    }
}

/// The round's answer split into each write's, by their `shapes` in order. What died
/// applying the entry goes with the first answer (no proposer reads it: the leader
/// dead-letters from its member's own record).
pub fn split(answer: GroupResponse, shapes: &[Shape]) -> Vec<GroupResponse> {
    let mut ids = answer.enqueued.into_iter();
    let mut dead = Some(answer.dead);
    shapes
        .iter()
        .map(|s| GroupResponse {
            enqueued: ids.by_ref().take(s.enqueued).collect(),
            dead: dead.take().unwrap_or_default(),
            purged: if s.purges { answer.purged } else { 0 },
        })
        .collect()
}

/// The round-making task of one member.
#[derive(Clone)]
pub struct Rounds {
    tx: mpsc::UnboundedSender<Part>,
}

impl Rounds {
    /// Starts the task for `raft` on the current tokio runtime; it ends once every
    /// handle is dropped and what was sent is proposed.
    pub fn start(group: u64, raft: Raft<QueueTypes>) -> Rounds {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(group, raft, rx));
        Rounds { tx }
    }

    /// Writes `command` in the next round: answered once its entry is committed and
    /// applied here, refused (`NotLeader`) when this member does not lead, failed
    /// after [`LEADER_WRITE_TIMEOUT`] (the entry may still commit later). Writes are
    /// proposed in the order of the calls.
    pub fn write(
        &self,
        command: Command<StoredMessage>,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send((command, tx)).is_ok();
        async move {
            if !sent {
                return Err(GroupWriteError::NotLeader(None));
            }
            // From the write, not from its round's proposal: a write that waited for
            // a slot behind rounds that do not commit is answered in time too.
            match tokio::time::timeout(LEADER_WRITE_TIMEOUT, rx).await {
                Err(_) => Err(not_committed()),
                Ok(answer) => answer.unwrap_or_else(|_| {
                    Err(GroupWriteError::Failed(
                        "its member stopped before the commit".into(),
                    ))
                }),
            }
        }
    }
}

fn not_committed() -> GroupWriteError {
    GroupWriteError::Failed(format!(
        "not committed within {LEADER_WRITE_TIMEOUT:?}: this node leads but a majority of the group does not answer it"
    ))
}

async fn run(group: u64, raft: Raft<QueueTypes>, mut rx: mpsc::UnboundedReceiver<Part>) {
    let slots = Arc::new(Semaphore::new(MAX_ROUNDS));
    // A write that could not join the round before it (a second purge, or one that
    // would have made its entry larger than MAX_BYTES).
    let mut next: Option<Part> = None;
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // While every slot is taken, the writes that come wait in the channel: they
        // make the next round together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut parts = vec![first];
        let mut purges = Shape::of(&parts[0].0).purges;
        let mut bytes = bytes_of(&parts[0].0);
        while parts.len() < MAX_PARTS {
            let Ok(p) = rx.try_recv() else { break };
            let s = Shape::of(&p.0);
            let b = bytes_of(&p.0);
            if (s.purges && purges) || bytes + b > MAX_BYTES {
                next = Some(p);
                break;
            }
            purges |= s.purges;
            bytes += b;
            parts.push(p);
        }
        let shapes: Vec<Shape> = parts.iter().map(|(c, _)| Shape::of(c)).collect();
        let (commands, answers): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let entry = combine(commands);
        let (settle_commands, settled) = settles(&entry);
        tracing::debug!(
            target: "actormq::cluster::stages",
            group,
            writes = shapes.len(),
            publishes = shapes.iter().map(|s| s.enqueued).sum::<usize>(),
            settle_commands,
            settled,
            "round proposed"
        );
        let proposed = std::time::Instant::now();
        let committed = match raft.client_write_ff(entry).await {
            Ok(c) => c,
            Err(e) => {
                let e = GroupWriteError::Failed(e.to_string());
                answers.into_iter().for_each(|a| {
                    let _ = a.send(Err(e.clone()));
                });
                continue;
            }
        };
        // Writes already waiting for the next round as this one goes (past
        // `MAX_PARTS`, or arrived while it was proposed): the stage times below.
        let (waiting, publishes) = (rx.len(), shapes.iter().map(|s| s.enqueued).sum::<usize>());
        tokio::spawn(async move {
            let _slot = slot;
            let result = match tokio::time::timeout(LEADER_WRITE_TIMEOUT, committed).await {
                Err(_) => Err(not_committed()),
                Ok(Ok(Ok(r))) => Ok(r.data),
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => {
                    Err(GroupWriteError::NotLeader(f.leader_node.map(|n| n.addr)))
                }
                Ok(Ok(Err(e))) => Err(GroupWriteError::Failed(e.to_string())),
                Ok(Err(_)) => Err(GroupWriteError::Failed(
                    "its member stopped before the commit".into(),
                )),
            };
            // The stage times: a round's whole latency, proposal to applied answer,
            // against the leader's fsync and the followers' round trips logged apart.
            tracing::debug!(
                target: "actormq::cluster::stages",
                group,
                publishes,
                settled,
                waiting,
                round_us = proposed.elapsed().as_micros() as u64,
                "round committed"
            );
            match result {
                Ok(r) => {
                    for (a, r) in answers.into_iter().zip(split(r, &shapes)) {
                        let _ = a.send(Ok(r));
                    }
                }
                Err(e) => answers.into_iter().for_each(|a| {
                    let _ = a.send(Err(e.clone()));
                }),
            }
        });
    }
}

#[cfg(test)]
#[path = "rounds_tests.rs"]
mod tests;
