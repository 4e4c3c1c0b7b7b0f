//! The leader's side of a consume session ([`super::consume_wire`]): a follower's
//! consumers and gets served from this node's queue actor through its ordinary
//! consumer interface (the same `Consume`, `Get`, settle and release a local client
//! uses), as one owner. So whatever the queue does for a local consumer (prefetch,
//! delivery order, the commit before a delivery, the redelivery marks) it does for a
//! remote one, and the session's end gives back what it held.

use super::consume_wire::{
    Down, How, Open, Refused, Spec, Up, WireDelivery, FORWARDED_ARG, HELD_ARG, SILENT_LIMIT,
};
use super::group::StoredMessage;
use super::wire::Groups;
use crate::broker::messages::{ConsumerSpec, Delivery, Get, LookupQueue, OwnerId, Settlement};
use crate::broker::queue::QueueHandle;
use crate::broker::BrokerHandle;
use crate::cluster::rpc::{read_frame, write_frame, Reply};
use crate::cluster::transport::Conn;
use crate::cluster::NodeId;
use crate::embed::Consumer;
use crate::error::BrokerError;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Frames queued for the follower at most (a consumer waits beyond it).
const DOWN_QUEUE: usize = 64;
/// Deliveries in one frame at most.
const BATCH: usize = 256;

/// What a session needs of this node.
pub struct Here {
    /// This node's id.
    pub id: NodeId,
    /// The broker the queue actors run in.
    pub broker: BrokerHandle,
    /// This node's group members (who leads).
    pub groups: Arc<Groups>,
    /// For a session of a classic queue (`Open::classic`): whether this node is the
    /// queue's home (only the home serves it).
    pub classic_home: bool,
}

fn settlement(how: How) -> Settlement {
    match how {
        How::Ack => Settlement::Ack,
        How::Requeue => Settlement::Requeue,
        How::Discard => Settlement::Discard,
        How::Unsent => Settlement::Unsent,
    }
}

/// The wire form of a delivery.
pub fn wire(d: &Delivery) -> WireDelivery {
    WireDelivery {
        id: d.id,
        redelivered: d.redelivered,
        delivery_count: d.delivery_count,
        message: StoredMessage::from(&*d.message),
    }
}

fn leader(here: &Here, group: super::wire::GroupId) -> Option<NodeId> {
    here.groups
        .get(group)
        .and_then(|r| r.metrics().borrow().current_leader)
}

/// True while this node serves the session's queue: it leads the group, or (a
/// classic queue) it is the queue's home, which never changes.
fn leads(here: &Here, open: &Open) -> bool {
    if open.classic {
        return here.classic_home;
    }
    leader(here, open.group) == Some(here.id)
}

/// Checks that this node leads `open.group` (or is the classic queue's home) and
/// finds the queue.
async fn open_queue(here: &Here, open: &Open, owner: OwnerId) -> Result<QueueHandle, Refused> {
    if open.classic && !here.classic_home {
        // Never served through a second node (this one's stand-in would forward it).
        return Err(Refused::Failed(BrokerError::new(
            crate::error::ErrorCode::NotFound,
            format!(
                "queue '{}' in vhost '{}' does not live on node {}",
                open.queue, open.vhost, here.id
            ),
        )));
    }
    let leader = leader(here, open.group);
    if !open.classic && leader != Some(here.id) {
        return Err(Refused::NotLeader(leader));
    }
    let registry = here.broker.registry(&open.vhost).map_err(Refused::Failed)?;
    registry
        .send(LookupQueue {
            name: open.queue.clone(),
            owner,
        })
        .await
        .map_err(|e| Refused::Failed(e.into()))?
        .map_err(Refused::Failed)
}

/// Serves one session on `conn` until the follower closes it or it breaks; `id` is
/// the opening frame's, answered first.
pub async fn serve(mut conn: Conn, id: u64, open: Open, here: Here) -> std::io::Result<()> {
    let owner = here.broker.new_owner();
    let queue = match open_queue(&here, &open, owner).await {
        Ok(q) => q,
        Err(refused) => {
            tracing::debug!(queue = %open.queue, from = open.from, ?refused, "consume session refused");
            return write_frame(&mut conn, id, &Reply::ConsumeSession(Err(refused))).await;
        }
    };
    write_frame(&mut conn, id, &Reply::ConsumeSession(Ok(()))).await?;
    tracing::info!(queue = %open.queue, vhost = %open.vhost, from = open.from, "consume session opened for a follower's consumers");
    let (mut rd, mut wr) = tokio::io::split(conn);
    let (down, mut to_send) = mpsc::channel::<Down>(DOWN_QUEUE);
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(frame) = to_send.recv().await {
            n += 1;
            if write_frame(&mut wr, n, &frame).await.is_err() {
                break;
            }
        }
    });
    let mut consumers: HashMap<String, Attached> = HashMap::new();
    // The gets asked of the queue and not answered yet: the release at the end waits
    // for them, or a get committed after it would hold its message for a gone owner.
    let mut gets = tokio::task::JoinSet::new();
    let result = loop {
        while gets.try_join_next().is_some() {}
        let frame = match tokio::time::timeout(SILENT_LIMIT, read_frame::<_, Up>(&mut rd)).await {
            Ok(Ok(Some((_, f)))) => f,
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(e)) => break Err(e),
            Err(_) => {
                tracing::warn!(queue = %open.queue, from = open.from, "consume session silent for {SILENT_LIMIT:?}: closed, what it held goes back");
                break Ok(());
            }
        };
        match frame {
            Up::Consume { spec, credit, held } => {
                let tag = spec.tag.clone();
                match attach(
                    &here,
                    &queue,
                    (owner, open.from),
                    (spec, held),
                    credit,
                    down.clone(),
                )
                .await
                {
                    Ok(a) => {
                        consumers.insert(tag.clone(), a);
                        // Not waited for here either (a stand-in's stream consume
                        // is answered once it comes).
                        let down = down.clone();
                        tokio::spawn(async move { down.send(Down::Attached { tag }).await });
                    }
                    // Refused; unless this node stopped leading meanwhile: then the
                    // follower opens the session again at the new leader.
                    Err(error) => {
                        let frame = if leads(&here, &open) {
                            Down::Refused { tag, error }
                        } else {
                            let reason = error.to_string();
                            Down::Cancelled { tag, reason }
                        };
                        // Not waited for here: this loop keeps reading.
                        let down = down.clone();
                        tokio::spawn(async move { down.send(frame).await });
                    }
                }
            }
            Up::Credit { tag, amount } => {
                if let Some(a) = consumers.get(&tag) {
                    a.credit.add_permits(amount as usize);
                }
            }
            Up::Cancel { tag } => {
                if let Some(a) = consumers.remove(&tag) {
                    let _ = a.stop.send(());
                }
            }
            Up::Settle { ids, how } => queue.settle(owner, ids, settlement(how)),
            // Through the queue's inbox, in order with this session's settlements.
            Up::Released { tag, n } => queue.unhold(owner, &tag, n),
            Up::Prefetch { prefetch } => queue.set_prefetch(owner, prefetch),
            Up::Alive => {}
            Up::Get { req, auto_ack } => {
                // Apart from this loop, which must keep reading (settlements and
                // credit) whatever the queue's commit or the way back take.
                let (queue, down) = (queue.clone(), down.clone());
                gets.spawn(async move {
                    let result = match queue.addr().send(Get { owner, auto_ack }).await {
                        Ok(r) => r.map(|got| got.map(|(d, left)| (wire(&d), left))),
                        Err(e) => Err(e.into()),
                    };
                    let result = Box::new(result);
                    // The way back is not waited for by the release.
                    tokio::spawn(async move { down.send(Down::Got { req, result }).await });
                });
            }
        }
    };
    // The follower went (or its owner did): what the session holds comes back, gets
    // still being answered included.
    for (_, a) in consumers.drain() {
        let _ = a.stop.send(());
    }
    while gets.join_next().await.is_some() {}
    queue.release(owner);
    drop(down);
    let _ = writer.await;
    tracing::info!(queue = %open.queue, from = open.from, "consume session closed");
    result
}

/// A follower's consumer attached here.
struct Attached {
    /// Deliveries the follower can take.
    credit: Arc<Semaphore>,
    /// Detaches it.
    stop: oneshot::Sender<()>,
}

/// Attaches the follower's consumer `spec` for `owner`, the session of follower node
/// `from`, its client holding `held` deliveries of an earlier session.
async fn attach(
    here: &Here,
    queue: &QueueHandle,
    (owner, from): (OwnerId, NodeId),
    (spec, held): (Spec, u32),
    credit: u32,
    down: mpsc::Sender<Down>,
) -> Result<Attached, BrokerError> {
    // The client's own arguments (priority, a stream's offset, ...), so that the
    // queue serves it as a local consumer; the session's markers are this node's.
    let mut arguments = spec.arguments;
    arguments.remove(HELD_ARG);
    // Where it comes from: the follower's node and its id there (see `Spec::local`).
    let origin = crate::cluster::quorum::consume_wire::origin_arg(from, spec.local);
    arguments.insert(FORWARDED_ARG.into(), origin);
    if held > 0 {
        // Counted against its prefetch by the queue from its registration on.
        arguments.insert(HELD_ARG.into(), i64::from(held).into());
    }
    let tag = spec.tag.clone();
    let options = ConsumerSpec {
        tag: spec.tag,
        prefetch: spec.prefetch,
        auto_ack: spec.auto_ack,
        exclusive: spec.exclusive,
        arguments,
    };
    let window = here.broker.context().consumer_window;
    let arbiter = here.broker.context().next_arbiter();
    let mut consumer = Consumer::start(queue.clone(), options, owner, window, &arbiter).await?;
    // What it has not handed to the pump when it goes never reached the follower.
    consumer.unread_unsent();
    let credit = Arc::new(Semaphore::new(credit as usize));
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(pump(consumer, tag, credit.clone(), stopped, down));
    Ok(Attached { credit, stop })
}

/// Moves deliveries from the queue to the follower while it has credit. Dropping
/// the consumer (stopped, or the session gone) cancels it; what it had not handed
/// out goes back to the queue.
async fn pump(
    mut consumer: Consumer,
    tag: String,
    credit: Arc<Semaphore>,
    mut stopped: oneshot::Receiver<()>,
    down: mpsc::Sender<Down>,
) {
    loop {
        let first = tokio::select! {
            _ = &mut stopped => return,
            permit = credit.acquire() => match permit {
                Ok(p) => {
                    p.forget();
                    tokio::select! {
                        _ = &mut stopped => {
                            credit.add_permits(1);
                            return;
                        }
                        r = consumer.next() => r,
                    }
                }
                Err(_) => return,
            },
        };
        let Some(first) = first else {
            let reason = consumer
                .cancelled()
                .unwrap_or("the consumer ended")
                .to_string();
            let _ = down.send(Down::Cancelled { tag, reason }).await;
            return;
        };
        let mut deliveries = vec![received(&first)];
        // What is ready now, within the credit, goes in the same frame.
        while deliveries.len() < BATCH {
            let Ok(p) = credit.try_acquire() else { break };
            match consumer.next().now_or_never() {
                Some(Some(r)) => {
                    p.forget();
                    deliveries.push(received(&r));
                }
                _ => break,
            }
        }
        let frame = Down::Deliver {
            tag: tag.clone(),
            deliveries,
        };
        if down.send(frame).await.is_err() {
            return;
        }
    }
}

fn received(r: &crate::embed::Received) -> WireDelivery {
    WireDelivery {
        id: r.id,
        redelivered: r.redelivered,
        delivery_count: r.delivery_count,
        message: StoredMessage::from(&*r.message),
    }
}
