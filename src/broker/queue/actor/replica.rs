//! The queue actor's replicated side: a quorum queue in a cluster, whose messages are
//! the applied state of its Raft group ([`QueueGroup`]) instead of a [`QueueState`].
//! One branch per actor message, as for a stream; the classic path is unchanged.
//!
//! - A publish on any node goes through the group's publisher (batched, forwarded to
//!   the leader); its answer, and with it the publisher's confirm, comes once the
//!   entry is committed: a majority of the members has it on disk. A message that
//!   reject-publish refuses is nacked.
//! - Consumers are served on the leader's node (a consume elsewhere goes to the leader
//!   through a consume session: `remote`). A consumer is registered in the group's
//!   machine with its credit (`Consume`, committed); from then on the machine checks
//!   messages out to it as it applies publishes and settlements, and this actor sends
//!   what its member's apply checked out to this node's consumers: **a delivery needs
//!   no commit of its own**, yet nothing is sent that is not committed, and every
//!   member knows every checkout. Acks, nacks and rejects are `Settle` (committed
//!   before they count), a cancel is `Cancel`, an owner gone is `Return` of its
//!   consumers; on becoming leader this node returns every earlier checkout (`Return`,
//!   to be redelivered marked).
//! - The consumer interface (what a local consumer, or a forwarded one, is to this
//!   actor): a registration with a prefetch, a `Deliver` recipient with a transport
//!   window (checkouts beyond it, or beyond the prefetch, wait here), an owner whose
//!   settlements name message ids, and a cancel recipient. The machine holds more
//!   for a consumer than its prefetch, so that a client's ack frees its slot at once
//!   while the `Settle` commits (`credit`).
//! - The leader's commands are written in order, everything waiting making the next
//!   entry, up to [`MAX_INFLIGHT`] entries in flight (the takeover's `Return` alone).
//! - When this node stops leading, its consumers go on at the new leader through
//!   consume sessions, and what they held is the new leader's to return.
//! - A `basic.get` takes the first ready message alive on the leader's clock, in an
//!   entry after a `Clock` of that clock (`expiry`); `x-expires` is the leader's
//!   countdown of the queue's uses, its delete committed through the definitions log
//!   (`lease`).
//! - Limits a policy changed after the declare are written into the group's log by
//!   its leader (`limits`).
//! - Dead messages are dead-lettered at most once by the node whose leadership wrote
//!   the entry they died in (`dead`), or with at-least-once dead-lettering kept in the
//!   machine and republished with confirms by whoever leads (`dlx`).

use super::*;
use crate::broker::messages::Settlement;
use crate::cluster::quorum::group::{wall_ms, GroupResponse, StoredMessage};
use crate::cluster::quorum::machine::{Command, ConsumerKey, Limits, Settle as How};
use crate::cluster::quorum::runtime::QueueGroup;
use crate::cluster::quorum::session_follower::CancelDone;
use crate::message::Message;
use std::collections::{BTreeSet, VecDeque};
use tokio::sync::oneshot;

mod command;
mod credit;
mod dead;
mod deliver;
mod dlx;
mod done;
mod expiry;
mod extra;
mod get;
mod lease;
mod limits;
mod remote;
mod serve;

pub(super) use remote::Remotes;

/// Most leader entries in flight at once: an ack need not wait for the entry before
/// it to commit (they are proposed in order; see `QueueGroup::write`).
const MAX_INFLIGHT: usize = 8;

/// A consumer served on this node (the leader's).
struct Consumer {
    id: u64,
    tag: Arc<str>,
    owner: OwnerId,
    handle: ConsumerHandle,
    /// Its client's prefetch: most deliveries sent and not settled by the client
    /// (`unacked`); 0: unlimited. The machine's credit is more (`credit`).
    prefetch: u32,
    auto_ack: bool,
    /// Refuses every other consumer while attached.
    exclusive: bool,
    /// Transport credit left, of `window_size`.
    window: u32,
    window_size: u32,
    /// Delivered, not settled by its client (a settlement counts here at once, not
    /// at its commit); `stale` included.
    unacked: usize,
    /// Of `unacked`: deliveries of an earlier leader's session that its follower's
    /// client still holds (told with its consume, released as the client settles
    /// them): counted against its prefetch only, they name no checkout here.
    stale: usize,
    /// Checked out to it by the machine, not sent yet (its transport window or its
    /// prefetch is full): at most the machine's credit beyond what its client holds.
    waiting: VecDeque<Picked>,
    /// Made by a consume session for a consumer of another node: that node and its
    /// id there (registered with it: single active consumer on that node's listing).
    origin: Option<ConsumerKey>,
    /// Registered with the extra credit (`credit::registered`): its client settles
    /// and the next messages are checked out ahead of the commits.
    boosted: bool,
    /// `Settle` commands of its client's settlements written and not answered yet.
    settling: usize,
    /// Its client's last settlement (or its registration): the extra goes back once
    /// it has been idle `credit::GIVE_BACK_AFTER` since, unless wanted sooner.
    settled_at: Instant,
}

/// A message to send: its id, the message, its earlier deliveries.
type Picked = (u64, Arc<Message>, u32);

/// One of the leader's commands, waiting or in flight.
enum Cmd {
    /// Registers (or changes the credit of) a consumer served here.
    Consume {
        consumer: u64,
        credit: u32,
        origin: Option<ConsumerKey>,
        /// The consumer's first registration (false: a change of its credit, by
        /// `basic.qos` or the extra credit, of a consumer already registered).
        first: bool,
    },
    Cancel(u64),
    Get {
        consumer: u64,
        owner: OwnerId,
        auto_ack: bool,
        picked: Picked,
        answer: oneshot::Sender<Result<Option<(Delivery, u64)>, BrokerError>>,
        /// Earlier gets of the same `basic.get` whose message was gone when they
        /// applied (see `done`).
        tries: u32,
    },
    Settle {
        ids: Vec<u64>,
        how: How,
        /// The consumers whose client's settlements these are (their `settling`).
        by: Vec<u64>,
    },
    /// `None`: this node took over, every checkout comes back.
    Return(Option<ConsumerKey>),
    Purge(oneshot::Sender<Result<u64, BrokerError>>),
    /// The leader's wall clock (ms since the Unix epoch): the head's TTL has passed.
    Clock(u64),
    /// A consumer's extra given back unsent (`extra`); `then` are told once committed
    /// (a `basic.get` that found nothing ready looks again).
    GiveBack {
        ids: Vec<u64>,
        then: Vec<oneshot::Sender<()>>,
    },
    /// At-least-once: these kept dead messages were dead-lettered (confirmed) or
    /// dropped for good (`dlx`).
    DeadSettled(Vec<u64>),
    /// The limits a policy change (definitions entry `at`) gave the queue (`limits`).
    SetLimits {
        at: u64,
        limits: Limits,
    },
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
    /// Ids in a `Get` not committed yet.
    pending: HashSet<u64>,
    /// Consumers cancelled here whose `Cancel` has not committed: a checkout to one
    /// of them is given back unsent (one to a consumer returned whole is not: its
    /// `Return` gives it back).
    cancelled: HashSet<u64>,
    cmds: VecDeque<Cmd>,
    /// Leader entries written and not answered yet.
    inflight: usize,
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
    /// The head's deadline the leader's expiry timer is armed for (with the timer),
    /// or fired for (without: its `Clock` is on its way to commit).
    expiry: Option<(u64, Option<SpawnHandle>)>,
    /// The `x-expires` countdown, when the queue has one (see `lease`).
    lease: Option<lease::Lease>,
    /// The timer for the earliest give-back of an idle consumer's extra, and when it
    /// is due (see `extra`).
    give_back: Option<(Instant, SpawnHandle)>,
    /// The registry, told when the queue is unused for its `x-expires`.
    unused: Recipient<crate::broker::messages::QueueUnused>,
    /// The leader's republishes of the dead messages the machine keeps, with
    /// at-least-once dead-lettering (`dlx`).
    dlx: dlx::Republisher,
    /// The definitions entry whose limits this node last wrote into the group's log
    /// while leading (0: none, or the write failed or was dropped): written once
    /// per change (`limits`).
    limits_written: u64,
    /// The limits may have changed (a policy change applied here, a takeover, a
    /// `SetLimits` answered): the next dispatch looks (`limits`), not every one.
    limits_check: bool,
    /// The group's limits as this node's member applied them when last looked at
    /// (`limits_check`): what the leader's writes and republishes go by, read here
    /// rather than under the machine's lock at every entry.
    limits: Limits,
    /// The `limits_at` of this node's member when last looked at (on each
    /// [`GroupChanged`], throttled): a member that is not the leader learns of a
    /// `SetLimits` only by applying it, and must follow it (`x-expires`).
    limits_seen_at: u64,
}

impl Replica {
    pub(crate) fn new(
        group: Arc<QueueGroup>,
        unused: Recipient<crate::broker::messages::QueueUnused>,
    ) -> Box<Replica> {
        let limits = group.limits();
        let lease = limits
            .expires
            .map(|ms| lease::Lease::new(ms, std::time::Instant::now()));
        Box::new(Replica {
            group,
            consumers: Vec::new(),
            next_consumer: 1,
            out: HashMap::new(),
            pending: HashSet::new(),
            cancelled: HashSet::new(),
            cmds: VecDeque::new(),
            inflight: 0,
            serving: false,
            taking_over: false,
            term: 0,
            remote: remote::Remotes::default(),
            expiry: None,
            lease,
            give_back: None,
            unused,
            dlx: dlx::Republisher::default(),
            limits_written: 0,
            limits_check: true,
            limits,
            limits_seen_at: 0,
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

    /// The message a `basic.get` takes: the first ready one that no get in flight
    /// names and whose deadline has not passed on this node's clock. One past its
    /// deadline is dead even if no `Clock` has expired it yet: it is never handed
    /// out, and the `Clock` written with the get expires it if it is at the head.
    fn pick_for_get(&self) -> Option<Picked> {
        let now = wall_ms();
        let pending = &self.pending;
        self.group
            .read(|q| {
                q.peek(usize::MAX)
                    .find(|m| !pending.contains(&m.id) && m.deadline.is_none_or(|d| d >= now))
                    .map(|m| (m.id, m.message.shared(), m.deliveries))
            })
            .flatten()
    }

    /// Settles `ids` of `owner` (those it holds): one `Settle` queued.
    fn settle(&mut self, owner: OwnerId, ids: &[u64], settlement: Settlement) {
        self.remote.settle(owner, ids, settlement);
        let mut mine = Vec::new();
        let mut by = Vec::new();
        for id in ids {
            if self.out.get(id).is_some_and(|o| o.owner == owner) {
                let o = self.out.remove(id).expect("checked");
                if let Some(c) = self.consumers.iter_mut().find(|c| c.id == o.consumer) {
                    c.unacked = c.unacked.saturating_sub(1);
                    if !by.contains(&c.id) {
                        by.push(c.id);
                    }
                }
                mine.push(*id);
            }
        }
        if mine.is_empty() {
            return;
        }
        // Its client settles: if it may run dry before this commit, the extra credit
        // (if not registered yet) commits with this settlement, before it, so what
        // the commit frees and the extra are checked out together.
        let now = Instant::now();
        for c in self.consumers.iter_mut().filter(|c| by.contains(&c.id)) {
            c.settling += 1;
            c.settled_at = now;
            if !c.boosted && credit::starved(c.prefetch, c.auto_ack, c.unacked, c.waiting.len()) {
                c.boosted = true;
                self.cmds.push_back(Cmd::Consume {
                    consumer: c.id,
                    credit: credit::registered(c.prefetch, true),
                    origin: c.origin,
                    first: false,
                });
            }
        }
        let how = match settlement {
            Settlement::Ack => How::Ack,
            Settlement::Requeue => How::Requeue,
            Settlement::Discard => How::Reject,
            Settlement::Unsent => How::Unsent,
        };
        self.cmds.push_back(Cmd::Settle { ids: mine, how, by });
    }

    /// Queues the `Return` of everything checked out to `consumer` (which it also
    /// unregisters).
    fn return_whole(&mut self, consumer: u64) {
        self.cancelled.remove(&consumer);
        let key = self.key(consumer);
        self.cmds.push_back(Cmd::Return(Some(key)));
    }

    /// Consumer `c` is being returned whole (`return_whole`): what was checked out
    /// to it and never sent (its extra credit, or beyond its transport window) goes
    /// back first as unsent, so it keeps its delivery count and is not marked
    /// redelivered (nor brought nearer `x-delivery-limit`) by a consumer that never
    /// had it. Its `Cancel` goes first: else the machine would check those messages
    /// out to it again at once.
    fn give_back_unsent(&mut self, c: &Consumer) {
        if c.waiting.is_empty() {
            return;
        }
        self.cmds.push_back(Cmd::Cancel(c.id));
        self.cmds.push_back(Cmd::Settle {
            ids: c.waiting.iter().map(|p| p.0).collect(),
            how: How::Unsent,
            by: Vec::new(),
        });
    }

    /// `owner` went: its consumers are dropped (and so unregistered), what it held
    /// comes back.
    fn release(&mut self, owner: OwnerId) -> bool {
        self.remote.release(owner);
        // What the applies checked out to its consumers and this actor has not taken
        // yet is taken now, so it goes back unsent too.
        self.take_checkouts();
        let before = self.consumers.len();
        let mut gone = BTreeSet::new();
        let (leaving, staying) = std::mem::take(&mut self.consumers)
            .into_iter()
            .partition::<Vec<Consumer>, _>(|c| c.owner == owner);
        self.consumers = staying;
        for c in &leaving {
            gone.insert(c.id);
            self.give_back_unsent(c);
        }
        self.out.retain(|_, o| {
            if o.owner == owner {
                gone.insert(o.consumer);
            }
            o.owner != owner
        });
        for k in gone {
            self.remote.forget_forwarded(k);
            self.return_whole(k);
        }
        self.consumers.len() != before
    }

    /// Cancels `owner`'s consumer `tag`; answers `done` back unless a session took it
    /// (a forwarded consumer's session tells it once it hands that consumer nothing
    /// more), for the caller to tell now.
    fn cancel(
        &mut self,
        owner: OwnerId,
        tag: &str,
        done: Option<CancelDone>,
    ) -> Option<CancelDone> {
        let done = self.remote.cancel(owner, tag, done);
        // Its deliveries stay with the owner (acked later, or back when it goes);
        // what was checked out to it and not sent goes back unsent.
        let Some(at) = self
            .consumers
            .iter()
            .position(|c| c.owner == owner && *c.tag == *tag)
        else {
            return done;
        };
        let c = self.consumers.remove(at);
        self.remote.forget_forwarded(c.id);
        self.cmds.push_back(Cmd::Cancel(c.id));
        self.cancelled.insert(c.id);
        let unsent: Vec<u64> = c.waiting.iter().map(|p| p.0).collect();
        if !unsent.is_empty() {
            self.cmds.push_back(Cmd::Settle {
                ids: unsent,
                how: How::Unsent,
                by: Vec::new(),
            });
        }
        done
    }

    /// Takes what the applied entries checked out to this node's consumers: queued
    /// to send when this node serves; dropped when it does not lead (a new leader
    /// returns them); left for later while it takes over.
    pub(super) fn take_checkouts(&mut self) {
        if self.taking_over || (!self.serving && self.leads()) {
            return;
        }
        let me = self.group.node_id();
        let serving = self.serving;
        let Some(taken) = self.group.take_checkouts(|list, q| {
            if !serving {
                return Vec::new();
            }
            list.into_iter()
                .filter_map(|(key, id)| {
                    let r = q.checked_out_to(id, key)?;
                    Some((key, (id, r.message.shared(), r.deliveries)))
                })
                .collect::<Vec<(ConsumerKey, Picked)>>()
        }) else {
            return;
        };
        let mut unsent = Vec::new();
        for (key, picked) in taken {
            match self
                .consumers
                .iter_mut()
                .find(|c| key.node == me && c.id == key.consumer)
            {
                Some(c) => c.waiting.push_back(picked),
                // Cancelled before its cancel applied: never sent.
                None if self.cancelled.contains(&key.consumer) => unsent.push(picked.0),
                // Returned whole (or of an earlier term): its `Return` gives it back.
                None => {}
            }
        }
        if !unsent.is_empty() {
            self.cmds.push_back(Cmd::Settle {
                ids: unsent,
                how: How::Unsent,
                by: Vec::new(),
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
        run: None,
    };
    crate::broker::queue::quorum::mark_redelivery(&mut d);
    d
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
            let r = self.replica();
            if let Some(at) = r.group.read(|q| q.limits_at()) {
                if at != r.limits_seen_at {
                    // A `SetLimits` applied here (on any member, leading or not).
                    r.limits_seen_at = at;
                    r.limits_check = true;
                }
            }
            self.replica_changed(ctx);
        }
    }
}
