//! The follower's side of a consume session ([`super::consume_wire`]): one task per
//! queue and owner on a node that does not lead the queue's group. It holds the
//! owner's consumers (their tags, options and the credit their client can take) and
//! keeps a session open at whichever node leads: when the session breaks (the
//! leader died), or the leader's queue cancels its consumers (it stopped leading),
//! or this node learns of another leader, it opens a new session there and attaches
//! every consumer again, without the client noticing more than redeliveries.
//!
//! Delivery ids: each delivery handed to the client gets an id of this node (above
//! [`LOCAL_IDS`], apart from any message id), mapped to the leader's id for the
//! session it came through. A session's end forgets its map: the leader it came from
//! gives back what it held (or the next leader returns it at its takeover), so the
//! message comes again, marked redelivered, under a new id; a settlement of an old id
//! settles nothing (see docs/CLUSTERING.md, "Consumers on any node").
//!
//! Auto-ack: the leader's queue would count an auto-ack delivery acked as soon as it
//! handed it to the session, and one still on its way when the session breaks or the
//! client's consumer goes would be lost. So the session asks the leader for deliveries
//! with acks, and acks each one itself once the client's connection wrote it out (its
//! transport credit came back, `written`): what no client was sent goes back to the
//! queue, as RabbitMQ never drops a no-ack delivery before it is on the socket.

use super::consume_wire::{Down, How, Open, Refused, Spec, Up, WireDelivery, ALIVE_EVERY};
use super::runtime::QueueGroup;
use crate::broker::messages::{ConsumerCancelled, Credit, Deliver, Delivery, OwnerId};
use crate::broker::queue::QueueHandle;
use crate::cluster::rpc::{read_frame, write_frame, Reply, Rpc};
use crate::cluster::transport::Conn;
use crate::cluster::NodeId;
use crate::error::{BrokerError, ErrorCode};
use actix::Recipient;
use orders::Order;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};

mod frames;
mod orders;
mod served;
mod stale;
mod written;

pub use orders::{FollowerSession, Held};
pub use served::Served;

/// Delivery ids handed out by follower sessions start here (message ids stay below).
pub const LOCAL_IDS: u64 = 1 << 62;
static NEXT_LOCAL: AtomicU64 = AtomicU64::new(LOCAL_IDS);

/// How often a session checks that its node still leads the group.
const CHECK_LEADER: Duration = Duration::from_millis(250);
/// The longest pause between two attempts to open a session.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How long a get waits for a session before it is answered with an error.
const GET_WAIT: Duration = Duration::from_secs(10);
/// How long opening a session may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one frame may take to write: a leader that reads nothing for that long
/// (frozen, cut off with its socket's buffers full) is given up, so the session
/// goes on taking the queue actor's orders (which waits while they are full) and
/// moves to the next leader.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// The answer to a get.
pub type GetAnswer = oneshot::Sender<Result<Option<(Delivery, u64)>, BrokerError>>;

/// Told once a session took a consumer's cancel (the queue's `Control::Cancel` answer).
pub type CancelDone = oneshot::Sender<()>;

/// A consumer of the owner, as the follower's queue actor hands it over.
pub struct LocalConsumer {
    /// The queue actor's id of it (what its transport credit names).
    pub id: u64,
    /// Its tag.
    pub tag: Arc<str>,
    /// Its options.
    pub spec: Spec,
    /// Deliveries its client can take now (the transport window).
    pub window: u32,
    /// Deliveries made to it before it came to the session (a consumer of this node
    /// while it led) whose transport credit is still out: their credit comes to the
    /// session, and acks nothing at the leader.
    pub unwritten: u32,
    /// Deliveries made to it before it came to the session (by this node while it
    /// led) that its client holds unsettled, by the ids its client knows: counted at
    /// the leader against its prefetch until settled (`stale`).
    pub held: Vec<u64>,
    /// Where deliveries go.
    pub deliver: Recipient<Deliver>,
    /// Where a cancel by the broker goes.
    pub cancelled: Option<Recipient<ConsumerCancelled>>,
    /// Told once the leader attached it ([`Down::Attached`]) or why it could not:
    /// a classic stand-in answers its client's consume of a stream only then, so
    /// that the consumer's start (`next`, `last`) is fixed before the client goes on
    /// (`None`: answered at once, the consumer attached whenever the session is).
    pub attached: Option<oneshot::Sender<Result<(), BrokerError>>>,
}

/// Why a session ended.
enum End {
    /// The owner went (the queue actor dropped its session).
    OwnerGone,
    /// Broken, refused, or the leader moved: open another.
    Again(Duration),
}

struct Task {
    served: Served,
    open: Open,
    handle: QueueHandle,
    /// The owner the session serves on this node (a refused consumer is cancelled
    /// in its name).
    owner: OwnerId,
    consumers: BTreeMap<Arc<str>, LocalConsumer>,
    /// This node's delivery ids → the leader's, and the consumer's (none for a get),
    /// for the session open now.
    map: HashMap<u64, (u64, Option<u64>)>,
    /// What each consumer's client holds that no open session maps.
    stale: stale::Stale,
    /// Gets sent in the session open now (auto-ack or not).
    gets: HashMap<u64, (bool, GetAnswer)>,
    /// Auto-ack deliveries handed to each consumer's client and not written out yet.
    written: written::Written,
    /// Gets waiting for a session, and since when.
    waiting: Vec<(bool, GetAnswer, tokio::time::Instant)>,
    next_req: u64,
    /// Round robin over the members while no leader is known.
    turn: usize,
}

impl Task {
    async fn run(mut self, mut orders: mpsc::Receiver<Order>) {
        let mut pause = Duration::ZERO;
        let mut hint: Option<NodeId> = None;
        loop {
            // A classic queue's session with nothing to serve (its consumers cancelled
            // when the home went down) opens again only when asked something.
            while self.served.is_home() && self.consumers.is_empty() && self.waiting.is_empty() {
                match orders.recv().await {
                    Some(o) => self.offline(o),
                    None => return,
                }
            }
            if !pause.is_zero() {
                let until = tokio::time::Instant::now() + pause;
                loop {
                    tokio::select! {
                        o = orders.recv() => match o {
                            Some(o) => self.offline(o),
                            None => return,
                        },
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
            }
            self.expire_gets();
            let target = hint
                .take()
                .or_else(|| self.served.leader())
                .unwrap_or_else(|| {
                    let ids: Vec<NodeId> = self.served.member_ids();
                    self.turn += 1;
                    ids.get(self.turn % ids.len().max(1))
                        .copied()
                        .unwrap_or_else(|| self.served.node_id())
                });
            let connecting = connect(self.served.clone(), self.open.clone(), target);
            tokio::pin!(connecting);
            // Orders are taken while the session opens (up to OPEN_TIMEOUT): the queue
            // actor waits for room in the orders channel, never that long.
            let opened = loop {
                tokio::select! {
                    r = &mut connecting => break r,
                    o = orders.recv() => match o {
                        Some(o) => self.offline(o),
                        None => return,
                    },
                }
            };
            match opened {
                Ok(conn) => {
                    tracing::debug!(queue = %self.open.queue, leader = target, "consume session open");
                    match self.session(conn, target, &mut orders).await {
                        End::OwnerGone => return,
                        End::Again(p) => pause = p,
                    }
                    if self.served.is_home() {
                        // The home went (or its queue): its consumers are told.
                        self.home_down("the connection to it broke");
                    }
                }
                Err(Refused::NotLeader(l)) => {
                    hint = l.filter(|l| *l != target);
                    pause = Duration::from_millis(50);
                }
                Err(Refused::Failed(e)) => {
                    tracing::debug!(queue = %self.open.queue, node = target, error = %e, "consume session not opened");
                    pause = (pause * 2).clamp(Duration::from_millis(100), MAX_PAUSE);
                    if self.served.is_home() {
                        self.home_down(e.message());
                    }
                }
            }
        }
    }

    /// A classic queue's home cannot serve the session (down, unreachable, or its
    /// queue gone): as RabbitMQ does when a classic queue's node goes down, each
    /// consumer is cancelled (`basic.cancel`) naming the home, and the gets waiting
    /// are answered with NOT_FOUND. A new consume opens a session again.
    fn home_down(&mut self, why: &str) {
        let home = self.served.leader().unwrap_or_default();
        let reason = format!(
            "queue '{}' in vhost '{}': its home node {home} is down or inaccessible ({why})",
            self.open.queue, self.open.vhost
        );
        if !self.consumers.is_empty() || !self.waiting.is_empty() {
            tracing::warn!(queue = %self.open.queue, vhost = %self.open.vhost, home, why, "consumers of a queue of another node cancelled: its home is down");
        }
        for (_, mut c) in std::mem::take(&mut self.consumers) {
            self.written.forget(c.id);
            self.stale.forget(c.id);
            if let Some(waiting) = c.attached.take() {
                // Not answered yet: the consume fails (its queue actor drops it then).
                let _ = waiting.send(Err(BrokerError::new(ErrorCode::NotFound, reason.clone())));
                continue;
            }
            // The queue actor forgets it first, as for a consumer the leader refuses.
            drop(self.handle.cancel(self.owner, &c.tag));
            if let Some(to) = &c.cancelled {
                to.do_send(ConsumerCancelled {
                    consumer_tag: c.tag.clone(),
                    reason: reason.clone(),
                });
            }
        }
        for (_, answer, _) in self.waiting.drain(..) {
            let _ = answer.send(Err(BrokerError::new(ErrorCode::NotFound, reason.clone())));
        }
    }

    /// Gets that found no session for [`GET_WAIT`] are answered with an error (as a
    /// publish with no leader is nacked after as long), rather than left hanging.
    fn expire_gets(&mut self) {
        let now = tokio::time::Instant::now();
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, _, since)| now.duration_since(*since) >= GET_WAIT);
        self.waiting = keep;
        for (_, answer, _) in late {
            let _ = answer.send(Err(BrokerError::new(
                ErrorCode::ResourceError,
                format!(
                    "{} '{}': no leader reachable within {GET_WAIT:?} for the get",
                    self.served.kind(),
                    self.open.queue
                ),
            )));
        }
    }

    /// An order while no session is open.
    fn offline(&mut self, o: Order) {
        match o {
            Order::Consume(mut c) => {
                if c.spec.auto_ack {
                    self.written.skip(c.id, c.unwritten);
                }
                self.stale.add(c.id, std::mem::take(&mut c.held));
                self.consumers.insert(c.tag.clone(), c);
            }
            Order::Cancel(tag, done) => {
                if let Some(c) = self.consumers.remove(&tag) {
                    self.written.forget(c.id);
                    self.stale.forget(c.id);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            // Ids of a session that ended: its leader gave them back; those its
            // client held no longer count against its prefetch at the next one.
            Order::Settle(ids, _) => {
                self.stale.settled(&ids);
            }
            Order::Credit(id, n) => {
                // Written deliveries of an ended session: nothing to ack.
                self.written.take(id, n);
                if let Some(c) = self.consumers.values_mut().find(|c| c.id == id) {
                    c.window = c.window.saturating_add(n);
                }
            }
            Order::Prefetch(p) => self
                .consumers
                .values_mut()
                .for_each(|c| c.spec.prefetch = p),
            Order::Get(auto_ack, answer) => {
                self.waiting
                    .push((auto_ack, answer, tokio::time::Instant::now()))
            }
        }
    }

    /// Runs one session until it ends.
    async fn session(
        &mut self,
        conn: Conn,
        target: NodeId,
        orders: &mut mpsc::Receiver<Order>,
    ) -> End {
        let (rd, mut wr) = tokio::io::split(conn);
        let (frames_tx, mut frames) = mpsc::channel::<Down>(16);
        let reader = tokio::spawn(read_down(rd, frames_tx));
        let end = self.serve(&mut wr, &mut frames, target, orders).await;
        reader.abort();
        // What the leader gave through this session, it gets back: forget the ids
        // (auto-ack ones included: their credit acks nothing now). Those a consumer's
        // client holds are stale: the next leader counts them against its prefetch.
        for (local, (_, consumer)) in self.map.drain() {
            let live = consumer.filter(|c| self.consumers.values().any(|l| l.id == *c));
            if let Some(c) = live {
                self.stale.add(c, [local]);
            }
        }
        self.written.session_ended();
        let mut pending: Vec<(u64, (bool, GetAnswer))> = self.gets.drain().collect();
        pending.sort_by_key(|(req, _)| *req);
        // Asked again in the next session (a delivery made for one is returned).
        let now = tokio::time::Instant::now();
        self.waiting
            .extend(pending.into_iter().map(|(_, (a, g))| (a, g, now)));
        end
    }

    async fn serve(
        &mut self,
        wr: &mut WriteHalf<Conn>,
        frames: &mut mpsc::Receiver<Down>,
        target: NodeId,
        orders: &mut mpsc::Receiver<Order>,
    ) -> End {
        let broken = End::Again(Duration::from_millis(100));
        let mut n = 0u64;
        let mut next = || {
            n += 1;
            n
        };
        let reopen: Vec<Up> = self
            .consumers
            .values()
            .map(|c| Up::Consume {
                spec: written::wire_spec(&c.spec),
                credit: c.window,
                held: self.stale.count(c.id),
            })
            .collect();
        for frame in reopen {
            if !write(wr, next(), &frame).await {
                return broken;
            }
        }
        for (auto_ack, answer, _) in std::mem::take(&mut self.waiting) {
            let req = self.next_req;
            self.next_req += 1;
            self.gets.insert(req, (auto_ack, answer));
            // Asked with an ack: an auto-ack one is acked once handed over.
            let get = Up::Get {
                req,
                auto_ack: false,
            };
            if !write(wr, next(), &get).await {
                return broken;
            }
        }
        let mut tick = tokio::time::interval(CHECK_LEADER);
        let mut last_alive = tokio::time::Instant::now();
        let mut out = Vec::new();
        loop {
            tokio::select! {
                o = orders.recv() => match o {
                    None => return End::OwnerGone,
                    Some(o) => self.online(o, &mut out),
                },
                f = frames.recv() => match f {
                    None => return broken,
                    Some(Down::Cancelled { tag, reason }) => {
                        tracing::info!(queue = %self.open.queue, tag, leader = target, %reason, "quorum queue: the leader's side cancelled a forwarded consumer; reopening the session");
                        return End::Again(Duration::from_millis(50));
                    }
                    Some(f) => self.down(f, &mut out),
                },
                _ = tick.tick() => {
                    if self.served.leader().is_some_and(|l| l != target) {
                        return End::Again(Duration::ZERO);
                    }
                    if last_alive.elapsed() >= ALIVE_EVERY {
                        last_alive = tokio::time::Instant::now();
                        out.push(Up::Alive);
                    }
                }
            }
            for frame in out.drain(..) {
                if !write(wr, next(), &frame).await {
                    return broken;
                }
            }
        }
    }
}

/// Writes one frame within [`WRITE_LIMIT`]: false if the session is to be given up.
async fn write(wr: &mut WriteHalf<Conn>, n: u64, frame: &Up) -> bool {
    match tokio::time::timeout(WRITE_LIMIT, write_frame(wr, n, frame)).await {
        Ok(r) => r.is_ok(),
        Err(_) => {
            tracing::warn!("quorum queue: a consume session's leader read nothing for {WRITE_LIMIT:?}; opening the session again");
            false
        }
    }
}

/// Opens a session for `open` at `target` (a free function: the task takes orders
/// while it runs).
async fn connect(served: Served, open: Open, target: NodeId) -> Result<Conn, Refused> {
    let failed = |what: String| Refused::Failed(BrokerError::internal(what));
    let Some(addr) = served.addr_of(target) else {
        return Err(failed(format!("node {target} is no member of the group")));
    };
    let transport = served.transport();
    let rpc = Rpc::ConsumeSession(open);
    let opening = async {
        let mut conn = transport.connect(&addr).await?;
        write_frame(&mut conn, 1, &rpc).await?;
        match read_frame::<_, Reply>(&mut conn).await? {
            Some((_, Reply::ConsumeSession(r))) => Ok((conn, r)),
            other => Err(std::io::Error::other(format!(
                "unexpected answer {other:?}"
            ))),
        }
    };
    match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Ok(Ok((conn, Ok(())))) => Ok(conn),
        Ok(Ok((_, Err(refused)))) => Err(refused),
        Ok(Err(e)) => Err(failed(format!("{addr}: {e}"))),
        Err(_) => Err(failed(format!("{addr}: no answer within {OPEN_TIMEOUT:?}"))),
    }
}

async fn read_down(mut rd: ReadHalf<Conn>, to: mpsc::Sender<Down>) {
    while let Ok(Some((_, f))) = read_frame::<_, Down>(&mut rd).await {
        if to.send(f).await.is_err() {
            return;
        }
    }
}
