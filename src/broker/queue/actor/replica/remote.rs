//! Consumers and gets on a node that does not lead the queue's group: forwarded to
//! the leader through one consume session per owner
//! ([`crate::cluster::quorum::session_follower`]), which follows the leadership on its
//! own. The queue actor only routes its owners' consumes, gets, settlements, credit,
//! cancels and departures to their session, and, when this node stops leading, hands
//! its own consumers over to sessions instead of cancelling them (an exclusive one
//! stays exclusive there, or is cancelled by the leader's refusal, with its reason).
//! A session whose orders channel is full makes this actor wait ([`Held`]).
//!
//! A classic queue's stand-in (a node that is not its home) routes its consumers and
//! gets the same way, through sessions opened at the home ([`Served::Home`]): the
//! same code, with no local consumers and a home that never moves.

use super::*;
use crate::cluster::quorum::consume_wire::{Spec, FORWARDED_ARG};
use crate::cluster::quorum::session_follower::{
    CancelDone, FollowerSession, Held, LocalConsumer, Served,
};

/// A consumer served through a session (for the queue's counts and listings).
struct RemoteConsumer {
    id: u64,
    tag: Arc<str>,
    prefetch: u32,
    auto_ack: bool,
    exclusive: bool,
    /// Its `x-priority` (a stand-in's home honours it; a quorum queue has none).
    priority: i64,
    cancelled: Option<Recipient<ConsumerCancelled>>,
}

/// One owner's session and consumers.
struct OwnerSession {
    session: FollowerSession,
    consumers: Vec<RemoteConsumer>,
    /// Its auto-ack consumers cancelled lately (the last [`CANCELLED_CREDIT`]): the
    /// credit of deliveries its client's connection still writes after the cancel
    /// goes to the session, which acks them as written then.
    cancelled: VecDeque<u64>,
}

/// Cancelled auto-ack consumers per owner whose transport credit still reaches the
/// session. Their credit comes back within the time their connection takes to write
/// what was ahead of the cancel's answer; one of an older cancel arriving later is
/// dropped, and what it would have acked is given back, marked, when the owner goes.
const CANCELLED_CREDIT: usize = 32;

/// The owners served through a session, by owner.
#[derive(Default)]
pub(in crate::broker::queue::actor) struct Remotes {
    owners: HashMap<OwnerId, OwnerSession>,
    /// Ids of this node's consumers made by a follower's consume session: when this
    /// node stops leading they are cancelled (their session opens again at the new
    /// leader), never forwarded a second time.
    forwarded: HashSet<u64>,
}

impl Remotes {
    /// Settles `ids` of `owner` given through its session (the others are not its).
    pub(in crate::broker::queue::actor) fn settle(
        &mut self,
        owner: OwnerId,
        ids: &[u64],
        s: Settlement,
    ) {
        if let Some(o) = self.owners.get_mut(&owner) {
            o.session.settle(ids, s);
        }
    }

    /// Transport credit of consumer `id`, if it is served through a session.
    pub(in crate::broker::queue::actor) fn credit(&mut self, id: u64, amount: u32) {
        if let Some(o) = self
            .owners
            .values_mut()
            .find(|o| o.consumers.iter().any(|c| c.id == id) || o.cancelled.contains(&id))
        {
            o.session.credit(id, amount);
        }
    }

    /// The owner's prefetch changed (`basic.qos`): its forwarded consumers take it.
    pub(in crate::broker::queue::actor) fn prefetch(&mut self, owner: OwnerId, prefetch: u32) {
        if let Some(o) = self.owners.get_mut(&owner) {
            o.consumers.iter_mut().for_each(|c| c.prefetch = prefetch);
            o.session.prefetch(prefetch);
        }
    }

    /// Cancels `owner`'s consumer `tag` if it is served through its session, which
    /// tells `done` once it hands that consumer nothing more (so the client's
    /// cancel-ok comes behind every delivery made to it); else `done` is handed back.
    pub(in crate::broker::queue::actor) fn cancel(
        &mut self,
        owner: OwnerId,
        tag: &str,
        done: Option<CancelDone>,
    ) -> Option<CancelDone> {
        let Some(o) = self.owners.get_mut(&owner) else {
            return done;
        };
        let Some(at) = o.consumers.iter().position(|c| &*c.tag == tag) else {
            return done;
        };
        let c = o.consumers.remove(at);
        if c.auto_ack {
            if o.cancelled.len() == CANCELLED_CREDIT {
                o.cancelled.pop_front();
            }
            o.cancelled.push_back(c.id);
        }
        o.session.cancel(c.tag, done);
        None
    }

    /// The owner went: its session ends, and the leader gives back what it held.
    pub(in crate::broker::queue::actor) fn release(&mut self, owner: OwnerId) {
        self.owners.remove(&owner);
    }

    /// Consumer `id` went (cancelled, or its owner did): no longer one to skip.
    pub(super) fn forget_forwarded(&mut self, id: u64) {
        self.forwarded.remove(&id);
    }

    /// Consumer `id` of this node was made by a follower's consume session.
    pub(super) fn mark_forwarded(&mut self, id: u64) {
        self.forwarded.insert(id);
    }

    /// True when `publisher` has a consumer with acks served through its session (a
    /// stand-in forwarding its publishes tells the home: see `Enqueue::own_acks`).
    pub(in crate::broker::queue::actor) fn acks_from(&self, publisher: Option<OwnerId>) -> bool {
        publisher
            .and_then(|p| self.owners.get(&p))
            .is_some_and(|o| o.consumers.iter().any(|c| !c.auto_ack))
    }

    pub(in crate::broker::queue::actor) fn count(&self) -> usize {
        self.owners.values().map(|o| o.consumers.len()).sum()
    }

    /// An exclusive consumer is served through a session here.
    fn has_exclusive(&self) -> bool {
        self.owners
            .values()
            .any(|o| o.consumers.iter().any(|c| c.exclusive))
    }

    /// The orders that found their session's channel full.
    fn take_held(&mut self) -> Vec<Held> {
        self.owners
            .values_mut()
            .filter_map(|o| o.session.take_held())
            .collect()
    }

    fn has_tag(&self, owner: OwnerId, tag: &str) -> bool {
        self.owners
            .get(&owner)
            .is_some_and(|o| o.consumers.iter().any(|c| &*c.tag == tag))
    }
}

impl QueueActor {
    /// The refusal, on a node that does not lead the group, of what only the leader
    /// does here (a purge; a consume session's consumer arriving after a change).
    pub(in crate::broker::queue::actor) fn not_leader(&self) -> BrokerError {
        let r = self.replica.as_ref().expect("a replicated queue");
        let q = format!("queue '{}' in vhost '{}'", self.name, self.vhost);
        let message = match r.group.leader() {
            Some(l) => format!(
                "{q} is a quorum queue led by {}: this is done on that node",
                r.group.describe(l)
            ),
            None => format!(
                "{q} is a quorum queue with no leader known on this node (an election, or this node is not one of its members {:?}): this is done on its leader",
                r.group.member_ids()
            ),
        };
        BrokerError::new(ErrorCode::NotAllowed, message)
    }

    /// The owners served through sessions: a replicated queue's, or a classic
    /// stand-in's.
    pub(in crate::broker::queue::actor) fn remotes(&mut self) -> &mut Remotes {
        match self.replica.as_mut() {
            Some(r) => &mut r.remote,
            None => &mut self.standin,
        }
    }

    /// What the sessions open to: the group's leader, or the classic queue's home.
    fn served(&self) -> Served {
        match (&self.replica, &self.remote) {
            (Some(r), _) => Served::Group(r.group.clone()),
            (None, Some(home)) => Served::Home(home.clone()),
            (None, None) => unreachable!("sessions serve a replicated queue or a stand-in"),
        }
    }

    /// The refusal of a consume a session made, reaching a node that does not serve
    /// the queue (never forwarded a second time).
    fn not_served(&self) -> BrokerError {
        match &self.remote {
            Some(home) => BrokerError::new(
                ErrorCode::NotAllowed,
                format!(
                    "queue '{}' in vhost '{}' {}: a forwarded consumer is not forwarded again",
                    self.name,
                    self.vhost,
                    home.describe()
                ),
            ),
            None => self.not_leader(),
        }
    }

    fn session_of(&mut self, owner: OwnerId) -> &mut OwnerSession {
        let (vhost, name, handle) = (
            self.vhost.clone(),
            self.name.clone(),
            self.handle.clone().expect("queue handle set in started"),
        );
        let served = self.served();
        self.remotes()
            .owners
            .entry(owner)
            .or_insert_with(|| OwnerSession {
                session: FollowerSession::start(served, &vhost, &name, handle, owner),
                consumers: Vec::new(),
                cancelled: VecDeque::new(),
            })
    }

    /// A consume on a node that does not lead: served by the leader through the
    /// owner's session, with the client's arguments. A consume the leader refuses
    /// later (an exclusive consumer on another node) is cancelled with the leader's
    /// reason, and forgotten here; with `attached`, the leader's answer goes there
    /// instead (the caller answers the client only then).
    pub(in crate::broker::queue::actor) fn remote_consume(
        &mut self,
        msg: Consume,
        attached: Option<oneshot::Sender<Result<(), BrokerError>>>,
    ) -> Result<Arc<str>, BrokerError> {
        if msg.options.arguments.contains_key(FORWARDED_ARG) {
            // A session's consumer reached a node that no longer leads: the session
            // opens again at the leader, never through a second node.
            return Err(self.not_served());
        }
        let (name, vhost) = (self.name.clone(), self.vhost.clone());
        // A classic queue's home honours `x-priority`: refused here as it would be
        // there, before the client is answered.
        let priority = match self.replica {
            None => consumer_priority(&msg.options.arguments, &name)?,
            Some(_) => 0,
        };
        let local = self.replica.as_ref().map_or(0, |r| r.consumers.len());
        let id = match self.replica.as_mut() {
            Some(r) => {
                r.next_consumer += 1;
                r.next_consumer - 1
            }
            None => {
                self.tag_seq += 1;
                self.tag_seq
            }
        };
        let incarnation = self.incarnation;
        let remotes = self.remotes();
        if remotes.has_exclusive() {
            return Err(BrokerError::locked(format!(
                "queue '{name}' in vhost '{vhost}' has an exclusive consumer"
            )));
        }
        if msg.options.exclusive && (remotes.count() > 0 || local > 0) {
            return Err(BrokerError::locked(format!(
                "queue '{name}' in vhost '{vhost}' already has consumers: exclusive consume refused"
            )));
        }
        let tag: Arc<str> = if msg.options.tag.is_empty() {
            Arc::from(format!("amq.ctag-{incarnation}-{id}"))
        } else {
            Arc::from(msg.options.tag.as_str())
        };
        if remotes.has_tag(msg.owner, &tag) {
            return Err(BrokerError::not_allowed(format!(
                "consumer tag '{tag}' is already in use on queue '{name}'"
            )));
        }
        self.forward_consumer(
            msg.owner,
            LocalConsumer {
                id,
                tag: tag.clone(),
                spec: Spec {
                    tag: tag.to_string(),
                    prefetch: msg.options.prefetch,
                    auto_ack: msg.options.auto_ack,
                    exclusive: msg.options.exclusive,
                    local: id,
                    arguments: msg.options.arguments,
                },
                window: msg.window,
                unwritten: 0,
                held: Vec::new(),
                deliver: msg.deliver,
                cancelled: msg.cancelled,
                attached,
            },
            priority,
        );
        Ok(tag)
    }

    fn forward_consumer(&mut self, owner: OwnerId, c: LocalConsumer, priority: i64) {
        let o = self.session_of(owner);
        o.consumers.push(RemoteConsumer {
            id: c.id,
            tag: c.tag.clone(),
            prefetch: c.spec.prefetch,
            auto_ack: c.spec.auto_ack,
            exclusive: c.spec.exclusive,
            priority,
            cancelled: c.cancelled.clone(),
        });
        o.session.consume(c);
    }

    /// A `basic.get` on a node that does not lead: pulled at the leader through the
    /// owner's session (an unacked one is the session's until settled).
    pub(in crate::broker::queue::actor) fn remote_get(
        &mut self,
        msg: Get,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Option<(Delivery, u64)>, BrokerError>> {
        let (tx, rx) = oneshot::channel();
        self.session_of(msg.owner).session.get(msg.auto_ack, tx);
        self.remote_wait(ctx);
        Box::pin(actix::fut::wrap_future::<_, Self>(async move {
            rx.await.unwrap_or_else(|_| {
                Err(BrokerError::internal(
                    "the consume session stopped before the get's answer",
                ))
            })
        }))
    }

    /// This node stopped leading: its consumers whose client is still there go on
    /// through sessions to the new leader (what they held is returned there and
    /// redelivered marked, while the new leader counts the deliveries their clients
    /// still hold against their prefetch), exclusive ones still exclusive (the new
    /// leader refuses one it cannot keep so, and its client is told why); the others
    /// are dropped. Empties `out`: nothing here settles a checkout any more.
    pub(in crate::broker::queue::actor) fn forward_own_consumers(&mut self) {
        let name = self.name.clone();
        let r = self.replica.as_mut().expect("a replicated queue");
        let own: Vec<Consumer> = r.consumers.drain(..).collect();
        let mut held: HashMap<u64, Vec<u64>> = HashMap::new();
        for (id, o) in r.out.drain() {
            held.entry(o.consumer).or_default().push(id);
        }
        for c in own {
            if r_forwarded(self, c.id) {
                if let Some(to) = &c.handle.cancelled {
                    to.do_send(ConsumerCancelled {
                        consumer_tag: c.tag.clone(),
                        reason: format!("quorum queue '{name}': this node no longer leads it"),
                    });
                }
                continue;
            }
            if !c.handle.deliver.connected() {
                continue;
            }
            // Credit out now comes back to this id, and is the session's from now on.
            let window = c.window;
            let unwritten = c.window_size.saturating_sub(c.window);
            self.forward_consumer(
                c.owner,
                LocalConsumer {
                    id: c.id,
                    tag: c.tag.clone(),
                    spec: Spec {
                        tag: c.tag.to_string(),
                        prefetch: c.prefetch,
                        auto_ack: c.auto_ack,
                        exclusive: c.exclusive,
                        local: c.id,
                        // A quorum queue's own consumer: no argument it honours.
                        arguments: crate::message::FieldTable::new(),
                    },
                    window,
                    unwritten,
                    held: held.remove(&c.id).unwrap_or_default(),
                    deliver: c.handle.deliver,
                    cancelled: c.handle.cancelled,
                    attached: None,
                },
                0,
            );
        }
    }

    /// Orders a session's channel had no room for are sent before this actor handles
    /// anything else: it waits until the session has taken them (see
    /// `session_follower/orders.rs`).
    pub(in crate::broker::queue::actor) fn remote_wait(&mut self, ctx: &mut Context<Self>) {
        if self.replica.is_none() && self.remote.is_none() {
            return;
        }
        for held in self.remotes().take_held() {
            ctx.wait(actix::fut::wrap_future::<_, Self>(held.send()));
        }
    }

    /// The queue was deleted: consumers served through sessions are told, and the
    /// sessions end.
    pub(in crate::broker::queue::actor) fn remote_delete(&mut self, reason: &str) {
        let name = self.name.clone();
        for (_, o) in self.remotes().owners.drain() {
            drop(o.session);
            for c in o.consumers {
                if let Some(to) = &c.cancelled {
                    to.do_send(ConsumerCancelled {
                        consumer_tag: c.tag.clone(),
                        reason: format!("queue '{name}' was deleted ({reason})"),
                    });
                }
            }
        }
    }

    /// Consumers served through sessions, for the listings. With a single active
    /// consumer, the one the group's machine serves is active: this node's member
    /// knows which, by the origin its session registered it with (on a node that is
    /// no member each shows active).
    pub(in crate::broker::queue::actor) fn remote_consumers(&self) -> Vec<ConsumerInfo> {
        let active = |id: u64| {
            let Some(r) = self.replica.as_ref() else {
                // A classic stand-in: its home knows (single active consumer).
                return true;
            };
            let origin = ConsumerKey {
                node: r.group.node_id(),
                consumer: id,
            };
            r.group.read(|q| q.origin_is_active(origin)).unwrap_or(true)
        };
        let active = &active;
        let remotes = match self.replica.as_ref() {
            Some(r) => &r.remote,
            None => &self.standin,
        };
        remotes
            .owners
            .iter()
            .flat_map(|(owner, o)| {
                o.consumers.iter().map(move |c| ConsumerInfo {
                    tag: c.tag.to_string(),
                    owner: *owner,
                    prefetch: c.prefetch,
                    ack_required: !c.auto_ack,
                    active: active(c.id),
                    priority: c.priority,
                })
            })
            .collect()
    }
}

/// Whether consumer `id` was made by a follower's session (forgotten once asked: it
/// is asked when the consumer leaves this node).
fn r_forwarded(actor: &mut QueueActor, id: u64) -> bool {
    let r = actor.replica.as_mut().expect("a replicated queue");
    r.remote.forwarded.remove(&id)
}
