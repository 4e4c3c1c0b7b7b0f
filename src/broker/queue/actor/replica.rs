//! The queue actor's replicated side: a quorum queue in a cluster, whose messages are
//! the applied state of its Raft group ([`QueueGroup`]) instead of a [`QueueState`].
//! One branch per actor message, as for a stream; the classic path is unchanged.
//!
//! - A publish on any node goes through the group's publisher (batched, forwarded to
//!   the leader); its answer, and with it the publisher's confirm, comes once the
//!   entry is committed: a majority of the members has it on disk. A message that
//!   reject-publish refuses is nacked.
//! - Consumers are served on the leader's node only (a consume elsewhere is refused
//!   with NOT_ALLOWED naming the leader). Every command the leader makes is committed
//!   before it acts on it: `Deliver` before a message is sent, so a new leader knows
//!   what was handed out; `Settle` on ack, nack and reject; `Return` when a consumer's
//!   owner goes, and when this node becomes leader (every checkout of an earlier
//!   leader comes back, to be redelivered marked).
//! - The leader's commands are written one at a time, in order (consecutive
//!   settlements of one kind make one entry), so deliveries leave in queue order.
//! - When this node stops leading, its consumers are cancelled (the client is told)
//!   and what they held is the new leader's to return.

use super::*;
use crate::broker::messages::Settlement;
use crate::cluster::quorum::group::{GroupResponse, StoredMessage};
use crate::cluster::quorum::machine::{Command, ConsumerKey, Settle as How};
use crate::cluster::quorum::runtime::QueueGroup;
use crate::message::Message;
use std::collections::{BTreeSet, VecDeque};
use tokio::sync::oneshot;

mod remote;
mod serve;

/// Most messages one dispatch pass hands out (over every consumer).
const REPLICA_CHUNK: usize = 1000;

/// A consumer served on this node (the leader's).
struct Consumer {
    id: u64,
    tag: Arc<str>,
    owner: OwnerId,
    handle: ConsumerHandle,
    /// 0: unlimited.
    prefetch: u32,
    auto_ack: bool,
    /// Transport credit left.
    window: u32,
    /// Delivered, not settled.
    unacked: usize,
    /// Picked for a `Deliver` not committed yet.
    inflight: usize,
}

impl Consumer {
    fn credit(&self) -> usize {
        let taken = self.unacked + self.inflight;
        let by_prefetch = match self.prefetch {
            0 => usize::MAX,
            p => (p as usize).saturating_sub(taken),
        };
        by_prefetch.min((self.window as usize).saturating_sub(self.inflight))
    }
}

/// A message picked for a delivery: its id, the message, its earlier deliveries.
type Picked = (u64, Arc<Message>, u32);

/// One of the leader's commands, waiting or in flight.
enum Cmd {
    Deliver {
        consumer: u64,
        picked: Vec<Picked>,
    },
    Get {
        consumer: u64,
        owner: OwnerId,
        auto_ack: bool,
        picked: Picked,
        answer: oneshot::Sender<Result<Option<(Delivery, u64)>, BrokerError>>,
    },
    Settle {
        ids: Vec<u64>,
        how: How,
    },
    /// `None`: this node took over, every checkout comes back.
    Return(Option<ConsumerKey>),
    Purge(oneshot::Sender<Result<u64, BrokerError>>),
}

/// A delivery handed out here and not settled.
struct Out {
    consumer: u64,
    owner: OwnerId,
}

/// The replicated body of a queue actor.
pub(crate) struct Replica {
    group: Arc<QueueGroup>,
    consumers: Vec<Consumer>,
    next_consumer: u64,
    out: HashMap<u64, Out>,
    /// Ids in a `Deliver` or `Get` not committed yet.
    pending: HashSet<u64>,
    cmds: VecDeque<Cmd>,
    busy: bool,
    /// This node leads and has returned the checkouts of earlier leaders.
    serving: bool,
    taking_over: bool,
    /// The term the last takeover was made in: a later term while this node still
    /// leads means another leader may have led in between (and returned or handed
    /// out checkouts), so this node takes over again.
    term: u64,
    /// Owners served through a consume session at the leader (this node does not
    /// lead, or stopped leading with their consumers attached).
    remote: remote::Remotes,
}

impl Replica {
    pub(crate) fn new(group: Arc<QueueGroup>) -> Box<Replica> {
        Box::new(Replica {
            group,
            consumers: Vec::new(),
            next_consumer: 1,
            out: HashMap::new(),
            pending: HashSet::new(),
            cmds: VecDeque::new(),
            busy: false,
            serving: false,
            taking_over: false,
            term: 0,
            remote: remote::Remotes::default(),
        })
    }

    fn key(&self, consumer: u64) -> ConsumerKey {
        ConsumerKey {
            node: self.group.node_id(),
            consumer,
        }
    }

    fn leads(&self) -> bool {
        self.group.leader() == Some(self.group.node_id())
    }

    /// Settles `ids` of `owner` (those it holds): one `Settle` queued.
    fn settle(&mut self, owner: OwnerId, ids: &[u64], settlement: Settlement) {
        self.remote.settle(owner, ids, settlement);
        let mut mine = Vec::new();
        for id in ids {
            if self.out.get(id).is_some_and(|o| o.owner == owner) {
                let o = self.out.remove(id).expect("checked");
                if let Some(c) = self.consumers.iter_mut().find(|c| c.id == o.consumer) {
                    c.unacked = c.unacked.saturating_sub(1);
                }
                mine.push(*id);
            }
        }
        if mine.is_empty() {
            return;
        }
        let how = match settlement {
            Settlement::Ack => How::Ack,
            Settlement::Requeue => How::Requeue,
            Settlement::Discard => How::Reject,
        };
        self.cmds.push_back(Cmd::Settle { ids: mine, how });
    }

    /// Gives back what the deliveries of `consumers` hold (their owner went).
    fn give_back(&mut self, gone: impl Fn(&Out) -> bool) {
        let mut keys = BTreeSet::new();
        self.out.retain(|_, o| {
            let g = gone(o);
            if g {
                keys.insert(o.consumer);
            }
            !g
        });
        for k in keys {
            let key = self.key(k);
            self.cmds.push_back(Cmd::Return(Some(key)));
        }
    }

    /// `owner` went: its consumers are dropped, what it held comes back.
    fn release(&mut self, owner: OwnerId) -> bool {
        self.remote.release(owner);
        let before = self.consumers.len();
        self.consumers.retain(|c| c.owner != owner);
        self.give_back(|o| o.owner == owner);
        self.consumers.len() != before
    }

    fn cancel(&mut self, owner: OwnerId, tag: &str) {
        self.remote.cancel(owner, tag);
        // Its deliveries stay with the owner (acked later, or back when it goes).
        self.consumers
            .retain(|c| !(c.owner == owner && *c.tag == *tag));
    }

    /// Picks ready messages for the consumers with credit: one `Deliver` each.
    fn pick(&mut self) {
        if !self.serving || self.consumers.is_empty() {
            return;
        }
        let want: usize = self
            .consumers
            .iter()
            .map(Consumer::credit)
            .fold(0usize, |a, c| a.saturating_add(c))
            .min(REPLICA_CHUNK);
        if want == 0 {
            return;
        }
        let pending = &self.pending;
        let Some(ready) = self.group.read(|q| {
            q.peek(usize::MAX)
                .filter(|r| !pending.contains(&r.id))
                .take(want)
                .map(|r| (r.id, Arc::new(r.message.to_message()), r.deliveries))
                .collect::<Vec<Picked>>()
        }) else {
            return;
        };
        let mut ready = ready.into_iter();
        for c in self.consumers.iter_mut() {
            let n = c.credit();
            if n == 0 {
                continue;
            }
            let picked: Vec<Picked> = ready.by_ref().take(n).collect();
            if picked.is_empty() {
                break;
            }
            c.inflight += picked.len();
            for (id, _, _) in &picked {
                self.pending.insert(*id);
            }
            self.cmds.push_back(Cmd::Deliver {
                consumer: c.id,
                picked,
            });
        }
    }
}

fn delivery((id, message, earlier): Picked) -> Delivery {
    let mut d = Delivery {
        id,
        redelivered: earlier > 0,
        delivery_count: earlier + 1,
        message,
        stored: None,
    };
    crate::broker::queue::quorum::mark_redelivery(&mut d);
    d
}

impl Replica {
    fn command(&self, cmd: &Cmd) -> Command<StoredMessage> {
        let r = self;
        match cmd {
            Cmd::Deliver { consumer, picked } => Command::Deliver {
                to: r.key(*consumer),
                ids: picked.iter().map(|p| p.0).collect(),
            },
            Cmd::Get {
                consumer, picked, ..
            } => Command::Deliver {
                to: r.key(*consumer),
                ids: vec![picked.0],
            },
            Cmd::Settle { ids, how } => Command::Settle {
                ids: ids.clone(),
                how: *how,
            },
            Cmd::Return(None) => Command::Return {
                keep_node: None,
                consumer: None,
            },
            Cmd::Return(Some(key)) => Command::Return {
                keep_node: None,
                consumer: Some(*key),
            },
            Cmd::Purge(_) => Command::Purge,
        }
    }
}

/// The group's leadership or applied entries changed (sent by the task that follows
/// its metrics).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct GroupChanged;

impl Handler<GroupChanged> for QueueActor {
    type Result = ();

    fn handle(&mut self, _msg: GroupChanged, ctx: &mut Self::Context) {
        if self.replica.is_some() {
            self.replica_drain_inbox();
            self.replica_changed(ctx);
        }
    }
}
