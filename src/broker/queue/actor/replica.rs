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
        let before = self.consumers.len();
        self.consumers.retain(|c| c.owner != owner);
        self.give_back(|o| o.owner == owner);
        self.consumers.len() != before
    }

    fn cancel(&mut self, owner: OwnerId, tag: &str) {
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
    };
    crate::broker::queue::quorum::mark_redelivery(&mut d);
    d
}

impl QueueActor {
    fn replica(&mut self) -> &mut Replica {
        self.replica.as_mut().expect("a replicated queue")
    }

    /// Started: follows the group's leadership and applied entries (a task sends
    /// [`GroupChanged`] on each change, at most one every few milliseconds).
    pub(super) fn start_replica(&mut self, ctx: &mut Context<Self>) {
        let group = self.replica().group.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            let mut rx = loop {
                if !addr.connected() {
                    return;
                }
                if let Some(rx) = group.metrics() {
                    break rx;
                }
                // This node's member is not started yet (a restart), or this node is
                // no member at all.
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            loop {
                addr.do_send(GroupChanged);
                if rx.changed().await.is_err() || !addr.connected() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    /// The refusal of a consumer or a get on a node that does not lead the group.
    fn not_leader(&self) -> BrokerError {
        let r = self.replica.as_ref().expect("a replicated queue");
        let q = format!("queue '{}' in vhost '{}'", self.name, self.vhost);
        let message = match r.group.leader() {
            Some(l) => format!(
                "{q} is a quorum queue led by {}: consume from it on that node (consumers are not forwarded to the leader yet)",
                r.group.describe(l)
            ),
            None => format!(
                "{q} is a quorum queue with no leader known on this node (an election, or this node is not one of its members {:?}): consume from it on its leader",
                r.group.member_ids()
            ),
        };
        BrokerError::new(ErrorCode::NotAllowed, message)
    }

    /// A publish: the answer waits for the commit.
    pub(super) fn replica_enqueue(
        &mut self,
        msg: Enqueue,
    ) -> ResponseFuture<Result<Enqueued, BrokerError>> {
        let stored: Vec<StoredMessage> = msg
            .messages
            .iter()
            .map(|m| StoredMessage::from(&**m))
            .collect();
        let answers = self.replica().group.publish(stored);
        let full = BrokerError::new(
            ErrorCode::ResourceError,
            format!(
                "queue '{}' in vhost '{}' is full: message refused (x-overflow reject-publish)",
                self.name, self.vhost
            ),
        );
        Box::pin(async move {
            let mut answer = Enqueued::default();
            for (i, a) in answers.await.into_iter().enumerate() {
                let why = match a {
                    Ok(Some(_)) => continue,
                    Ok(None) => full.clone(),
                    Err(e) => e,
                };
                answer.refused.push(i as u32);
                answer.reason.get_or_insert(why);
            }
            Ok(answer)
        })
    }

    pub(super) fn replica_consume(
        &mut self,
        msg: Consume,
        ctx: &mut Context<Self>,
    ) -> Result<Arc<str>, BrokerError> {
        if !self.replica().leads() {
            return Err(self.not_leader());
        }
        let (name, vhost) = (self.name.clone(), self.vhost.clone());
        let r = self.replica();
        if msg.options.exclusive && !r.consumers.is_empty() {
            return Err(BrokerError::locked(format!(
                "queue '{name}' in vhost '{vhost}' already has consumers: exclusive consume refused"
            )));
        }
        let id = r.next_consumer;
        r.next_consumer += 1;
        let tag: Arc<str> = if msg.options.tag.is_empty() {
            Arc::from(format!("amq.ctag-{}-{id}", self.incarnation))
        } else {
            Arc::from(msg.options.tag.as_str())
        };
        let r = self.replica();
        if r.consumers
            .iter()
            .any(|c| c.owner == msg.owner && c.tag == tag)
        {
            return Err(BrokerError::not_allowed(format!(
                "consumer tag '{tag}' is already in use on queue '{name}'"
            )));
        }
        r.consumers.push(Consumer {
            id,
            tag: tag.clone(),
            owner: msg.owner,
            handle: ConsumerHandle {
                deliver: msg.deliver,
                cancelled: msg.cancelled,
            },
            prefetch: msg.options.prefetch,
            auto_ack: msg.options.auto_ack,
            window: msg.window,
            unacked: 0,
            inflight: 0,
        });
        self.replica_dispatch(ctx);
        Ok(tag)
    }

    /// A `basic.get` on the leader: the head, once its `Deliver` is committed.
    pub(super) fn replica_get(
        &mut self,
        msg: Get,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Option<(Delivery, u64)>, BrokerError>> {
        if !self.replica().leads() || !self.replica().serving {
            let e = self.not_leader();
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let r = self.replica();
        let pending = &r.pending;
        let head = r.group.read(|q| {
            q.peek(usize::MAX)
                .find(|m| !pending.contains(&m.id))
                .map(|m| (m.id, Arc::new(m.message.to_message()), m.deliveries))
        });
        let Some(Some(picked)) = head else {
            return Box::pin(actix::fut::ready(Ok(None)));
        };
        let consumer = r.next_consumer;
        r.next_consumer += 1;
        r.pending.insert(picked.0);
        let (tx, rx) = oneshot::channel();
        r.cmds.push_back(Cmd::Get {
            consumer,
            owner: msg.owner,
            auto_ack: msg.auto_ack,
            picked,
            answer: tx,
        });
        self.replica_pump(ctx);
        Box::pin(actix::fut::wrap_future::<_, Self>(async move {
            rx.await.unwrap_or_else(|_| {
                Err(BrokerError::internal(
                    "quorum queue: the get was not committed",
                ))
            })
        }))
    }

    pub(super) fn replica_purge(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<u64, BrokerError>> {
        if !self.replica().leads() {
            let e = self.not_leader();
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let (tx, rx) = oneshot::channel();
        self.replica().cmds.push_back(Cmd::Purge(tx));
        self.replica_pump(ctx);
        Box::pin(actix::fut::wrap_future::<_, Self>(async move {
            rx.await.unwrap_or_else(|_| {
                Err(BrokerError::internal(
                    "quorum queue: the purge was not committed",
                ))
            })
        }))
    }

    pub(super) fn replica_settle(&mut self, owner: OwnerId, ids: &[u64], s: Settlement) {
        self.replica().settle(owner, ids, s);
    }

    pub(super) fn replica_credit(&mut self, consumer: u64, amount: u32) {
        if let Some(c) = self
            .replica()
            .consumers
            .iter_mut()
            .find(|c| c.id == consumer)
        {
            c.window = c.window.saturating_add(amount);
        }
    }

    pub(super) fn replica_release(&mut self, owner: OwnerId) {
        self.replica().release(owner);
    }

    pub(super) fn replica_cancel(&mut self, owner: OwnerId, tag: &str) {
        self.replica().cancel(owner, tag);
    }

    /// Applies the inbox (settlements, credit, cancels, releases).
    pub(super) fn replica_drain_inbox(&mut self) -> bool {
        let items = self.inbox.take();
        if items.is_empty() {
            return false;
        }
        let r = self.replica();
        for item in items {
            match item {
                Control::Settle {
                    owner,
                    ids,
                    settlement,
                } => r.settle(owner, &ids, settlement),
                Control::Credit { consumer, amount } => {
                    if let Some(c) = r.consumers.iter_mut().find(|c| c.id == consumer) {
                        c.window = c.window.saturating_add(amount);
                    }
                }
                Control::Prefetch { owner, prefetch } => r
                    .consumers
                    .iter_mut()
                    .filter(|c| c.owner == owner)
                    .for_each(|c| c.prefetch = prefetch),
                Control::Cancel { owner, tag, done } => {
                    r.cancel(owner, &tag);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Control::Release(owner) => {
                    r.release(owner);
                }
            }
        }
        true
    }

    /// Picks what consumers can take and writes the next command.
    pub(super) fn replica_dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        self.replica().pick();
        self.replica_pump(ctx);
    }

    /// Leadership or the applied queue changed.
    pub(super) fn replica_changed(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        let name = self.name.clone();
        let r = self.replica();
        let term = r.group.term();
        // Leading again in a later term, with the change in between unseen (the
        // metrics are coalesced): what this node served is stale.
        let stale = r.leads() && (r.serving || r.taking_over) && term != r.term;
        if r.leads() && !stale {
            if !r.serving && !r.taking_over {
                // Every checkout of an earlier leader (or of this node's own consumers
                // of an earlier term) comes back, marked, before anything is served.
                tracing::info!(queue = %name, group = r.group.id(), "quorum queue: this node leads its group; returning earlier checkouts");
                r.taking_over = true;
                r.term = term;
                r.cmds.push_front(Cmd::Return(None));
            }
        } else if r.serving || r.taking_over || !r.consumers.is_empty() {
            tracing::info!(queue = %name, group = r.group.id(), leader = ?r.group.leader(), "quorum queue: this node no longer leads its group; its consumers are cancelled");
            r.serving = false;
            r.out.clear();
            r.cmds.retain(|c| matches!(c, Cmd::Return(None)));
            r.pending.clear();
            let leader = r.group.leader().map(|l| r.group.describe(l));
            for c in r.consumers.drain(..) {
                if let Some(to) = &c.handle.cancelled {
                    to.do_send(ConsumerCancelled {
                        consumer_tag: c.tag.clone(),
                        reason: format!(
                            "quorum queue '{name}': this node no longer leads it (leader: {})",
                            leader.as_deref().unwrap_or("unknown")
                        ),
                    });
                }
            }
        }
        self.replica_dispatch(ctx);
    }

    /// Writes the next command, if none is in flight.
    fn replica_pump(&mut self, ctx: &mut Context<Self>) {
        let r = self.replica();
        if r.busy {
            return;
        }
        if r.cmds.is_empty() {
            return;
        }
        // Everything waiting makes one entry: one commit per round trip, whatever
        // the number of deliveries and settlements.
        let cmds: Vec<Cmd> = r.cmds.drain(..).collect();
        let mut commands: Vec<Command<StoredMessage>> = cmds.iter().map(|c| r.command(c)).collect();
        let command = match commands.len() {
            1 => commands.pop().expect("one"),
            _ => Command::Batch(commands),
        };
        r.busy = true;
        let write = r.group.write(command);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(write).map(move |result, act, ctx| {
                act.replica().busy = false;
                if let Err(e) = &result {
                    tracing::warn!(queue = %act.name, error = %e, "quorum queue: the leader's commands were not committed");
                }
                if !act.deleted {
                    for cmd in cmds {
                        act.replica_done(cmd, result.clone());
                    }
                    // A takeover's end (or a term that moved meanwhile) is seen now,
                    // not at the group's next change.
                    act.replica_changed(ctx);
                }
            }),
        );
    }
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

impl QueueActor {
    /// A command was committed (or not).
    fn replica_done(&mut self, cmd: Cmd, result: Result<GroupResponse, BrokerError>) {
        let handle = self.handle.clone();
        let r = self.replica();
        match cmd {
            Cmd::Return(None) => {
                r.taking_over = false;
                r.serving = result.is_ok() && r.leads() && r.group.term() == r.term;
            }
            Cmd::Return(Some(_)) | Cmd::Settle { .. } => {}
            Cmd::Purge(tx) => {
                let _ = tx.send(result.map(|g| g.purged));
            }
            Cmd::Get {
                consumer,
                owner,
                auto_ack,
                picked,
                answer,
            } => {
                r.pending.remove(&picked.0);
                let key = r.key(consumer);
                let held =
                    result.is_ok() && r.group.read(|q| q.holder(picked.0)) == Some(Some(key));
                if !held {
                    let _ = answer.send(Ok(None));
                    return;
                }
                let left = r.group.read(|q| q.ready_len() as u64).unwrap_or(0);
                if auto_ack {
                    r.cmds.push_back(Cmd::Settle {
                        ids: vec![picked.0],
                        how: How::Ack,
                    });
                } else {
                    r.out.insert(picked.0, Out { consumer, owner });
                }
                let _ = answer.send(Ok(Some((delivery(picked), left))));
            }
            Cmd::Deliver { consumer, picked } => {
                let asked = picked.len();
                for p in &picked {
                    r.pending.remove(&p.0);
                }
                let key = r.key(consumer);
                let held: Vec<Picked> = match result {
                    Ok(_) => picked
                        .into_iter()
                        .filter(|p| r.group.read(|q| q.holder(p.0)) == Some(Some(key)))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let Some(at) = r.consumers.iter().position(|c| c.id == consumer) else {
                    if !held.is_empty() {
                        // Cancelled meanwhile: what it was given goes back.
                        r.cmds.push_back(Cmd::Return(Some(key)));
                    }
                    return;
                };
                let c = &mut r.consumers[at];
                c.inflight = c.inflight.saturating_sub(asked);
                if held.is_empty() {
                    return;
                }
                if !c.handle.deliver.connected() {
                    r.consumers.remove(at);
                    r.cmds.push_back(Cmd::Return(Some(key)));
                    r.give_back(|o| o.consumer == consumer);
                    return;
                }
                let ids: Vec<u64> = held.iter().map(|p| p.0).collect();
                let n = held.len() as u32;
                c.window = c.window.saturating_sub(n);
                let (tag, deliver, auto_ack, owner) =
                    (c.tag.clone(), c.handle.deliver.clone(), c.auto_ack, c.owner);
                if auto_ack {
                    r.cmds.push_back(Cmd::Settle { ids, how: How::Ack });
                } else {
                    c.unacked += ids.len();
                    for id in ids {
                        r.out.insert(id, Out { consumer, owner });
                    }
                }
                // do_send: prefetch and the transport window bound what is in flight.
                deliver.do_send(Deliver {
                    consumer_tag: tag,
                    queue: handle.clone().expect("queue handle set in started"),
                    deliveries: held.into_iter().map(delivery).collect(),
                    credit: Credit {
                        queue: handle,
                        consumer,
                        amount: n,
                    },
                });
            }
        }
    }

    /// Counts from the group's applied queue (zero on a node that is no member).
    pub(super) fn replica_stats(&mut self) -> QueueStats {
        let r = self.replica();
        let (ready, unacked) = r
            .group
            .read(|q| (q.ready_len() as u64, q.checked_out_len() as u64))
            .unwrap_or((0, 0));
        QueueStats {
            ready,
            unacked,
            consumers: r.consumers.len() as u32,
            bytes: 0,
            delayed: 0,
            counts: Default::default(),
        }
    }

    pub(super) fn replica_consumers(&self) -> Vec<ConsumerInfo> {
        let r = self.replica.as_ref().expect("a replicated queue");
        r.consumers
            .iter()
            .map(|c| ConsumerInfo {
                tag: c.tag.to_string(),
                owner: c.owner,
                prefetch: c.prefetch,
                ack_required: !c.auto_ack,
                active: true,
                priority: 0,
            })
            .collect()
    }

    /// The queue was deleted: its consumers are told; answers the ready count.
    pub(super) fn replica_delete(&mut self, reason: &str) -> u64 {
        let name = self.name.clone();
        let r = self.replica();
        for c in r.consumers.drain(..) {
            if let Some(to) = &c.handle.cancelled {
                to.do_send(ConsumerCancelled {
                    consumer_tag: c.tag.clone(),
                    reason: format!("queue '{name}' was deleted ({reason})"),
                });
            }
        }
        r.group.read(|q| q.ready_len() as u64).unwrap_or(0)
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
